"""Every Python example of the documentation runs as written.

:func:`code_blocks` reads the fenced blocks of any markdown file (the README today, the pages
of a docs site later: add them to :data:`DOCUMENTS`). Each ``python`` block runs in a fresh
namespace that already holds what the prose around the examples speaks of: ``gossip``, a
started ``cluster`` on loopback that another member has joined, that member as ``node`` (its
``Cluster`` as ``peer``), and its id as ``node_id``. A block that defines ``test_*`` functions is a pytest file and runs as
one. A block that cannot run here (it needs other hosts, a certificate, a fixed port) says why
in an HTML comment on the line before its fence::

    <!-- not run: joins hosts on a network -->

A block that needs an optional extra (``xchacha``, ``snappy``) says so the same way, and is
skipped, saying why, where that extra is not installed (the ``test`` extra installs them)::

    <!-- needs: xchacha -->
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

import gossip

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")
_NEEDS = re.compile(r"^<!--\s*needs:\s*(\w+)\s*-->\s*$")


def _extra_installed(name: str) -> bool:
    """Whether the optional extra ``name`` is installed (an unknown name is a typo: it fails)."""
    from gossip.compression import snappy_available
    from gossip.security import cipher_available

    return {"xchacha": lambda: cipher_available("xchacha20-poly1305"),
            "snappy": snappy_available,
            # the extra is the API; the manual's examples also use the SDK (the test extra)
            "otel": lambda: importlib.util.find_spec("opentelemetry.sdk") is not None}[name]()


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    path: Path
    line: int            # the line of the opening fence, from 1
    lang: str
    code: str
    not_run: str         # why it does not run here ("" if it runs)
    needs: str = ""      # the optional extra it needs ("" if none)

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Return the fenced code blocks of a markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        note = _NOT_RUN.match(lines[start - 1]) if start > 0 else None
        needs = _NEEDS.match(lines[start - 1]) if start > 0 else None
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", note.group(1) if note else "",
                            needs.group(1) if needs else ""))
        i += 1
    return blocks


def python_blocks() -> list[object]:
    return list(_python_blocks())


def _python_blocks() -> Iterator[object]:
    for path in DOCUMENTS:
        for block in code_blocks(path):
            if block.lang in ("python", "py"):
                marks = [pytest.mark.skip(reason=f"not run: {block.not_run}")] if block.not_run else []
                if block.needs and not _extra_installed(block.needs):
                    marks.append(pytest.mark.skip(
                        reason=f"needs the {block.needs} extra, not installed here "
                               f"(pip install 'gossip-cluster[{block.needs}]')"))
                yield pytest.param(block, id=block.name, marks=marks)


def test_the_parser_finds_blocks_and_their_notes(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    doc.write_text("# t\n\n```python\nx = 1\n```\n\n<!-- not run: needs a network -->\n"
                   "```python\njoin()\n```\n\n````sh\n```\nnested\n````\n\n<!-- needs: snappy -->\n"
                   "```python\ny = 2\n```\n")
    blocks = code_blocks(doc)
    assert [(b.line, b.lang, b.not_run, b.needs) for b in blocks] == [
        (3, "python", "", ""), (8, "python", "needs a network", ""), (12, "sh", "", ""),
        (18, "python", "", "snappy")]
    assert blocks[0].code == "x = 1\n" and blocks[2].code == "```\nnested\n"


def test_the_readme_is_a_front_door_with_an_example_that_runs() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 150
    blocks = [b for b in code_blocks(readme) if b.lang == "python" and not b.not_run]
    assert blocks and len(blocks[0].code.strip().splitlines()) <= 20


def test_the_manual_has_python_examples_that_run() -> None:
    pages = [p for p in DOCUMENTS if p.parent.name == "docs"]
    blocks = [b for p in pages for b in code_blocks(p) if b.lang in ("python", "py")]
    assert len(pages) >= 12 and sum(not b.not_run for b in blocks) >= 20


@pytest.fixture
def members() -> Iterator[tuple[gossip.Cluster, gossip.Cluster]]:
    a = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
    b = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
    try:
        a.start()
        b.start()
        assert b.join(a.address, timeout=10.0) == 1
        gossip.testing.wait_until(lambda: a.num_alive_nodes() == 2, timeout=10, what="two members")
        yield a, b
    finally:
        b.stop(timeout=3.0)
        a.stop(timeout=3.0)


@pytest.mark.parametrize("block", python_blocks())
def test_a_python_example_runs(block: Block, members: tuple[gossip.Cluster, gossip.Cluster],
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if re.search(r"^def test_", block.code, re.M):
        test_file = tmp_path / f"test_example_{block.line}.py"
        test_file.write_text(block.code)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(test_file)], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env=env)
        assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr}"
        return
    cluster, peer = members
    module = types.ModuleType(f"example_{block.path.stem.replace('-', '_')}_{block.line}")
    module.__dict__.update({"gossip": gossip, "cluster": cluster, "peer": peer,
                            "node": peer.local_node(), "node_id": peer.local_node().id})
    namespace = module.__dict__
    code = compile(block.code, f"{block.name}", "exec")
    monkeypatch.setitem(sys.modules, module.__name__, module)     # dataclasses look their module up
    exec(code, namespace)
    for value in list(namespace.values()):
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.startswith("gossip.") and _takes_no_arguments(close):
            close()             # apps, groups: what the example opened


def _takes_no_arguments(fn: object) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()      # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def environment_examples() -> list[object]:
    """Inline examples of GOSSIP_* variables (`GOSSIP_A=1 GOSSIP_B=2`) in the documents."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"`((?:GOSSIP_\w+=[^\s`]+\s*)+)`", text):
            found.append(pytest.param(m.group(1), id=f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}"))
    return found


@pytest.mark.parametrize("example", environment_examples())
def test_an_environment_example_makes_a_valid_config(example: str) -> None:
    key = "00" * 32
    environ = dict(word.split("=", 1) for word in example.split())
    environ = {k: key if v.startswith("$") else v for k, v in environ.items()}   # a key from keygen
    gossip.Config.from_env(environ=environ, strict=True).validate()


def _parser(module: str) -> Any:
    """The argument parser of ``gossip`` (``gossip.cli``) or of ``gossip.sim``."""
    import importlib

    for name in (module, f"{module}.main", f"{module}.__main__"):
        try:
            found = getattr(importlib.import_module(name), "build_parser", None)
        except ImportError:
            continue
        if found is not None:
            return found()
    raise AssertionError(f"no build_parser in {module}")


def command_lines() -> list[object]:
    """Each ``gossip ...``, ``python -m gossip ...`` and ``python -m gossip.sim ...`` line of
    the documents' sh blocks."""
    found = []
    for path in DOCUMENTS:
        for block in code_blocks(path):
            if block.lang not in ("sh", "bash", "console"):
                continue
            for n, line in enumerate(block.code.replace("\\\n", " ").splitlines()):
                line = line.strip()
                if re.match(r"(gossip|python -m gossip(\.sim)?)(\s|$)", line):
                    found.append(pytest.param(line, id=f"{block.name}+{n}"))
    return found


@pytest.mark.parametrize("line", command_lines())
def test_a_documented_command_line_parses(line: str) -> None:
    words = shlex.split(line, comments=True)
    if words[:3] == ["python", "-m", "gossip.sim"]:
        parser, argv = _parser("gossip.sim"), words[3:]
    else:
        parser, argv = _parser("gossip.cli"), words[3:] if words[0] == "python" else words[1:]
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"{line!r} does not parse (exit {e.code})") from None


def test_the_agent_toml_example_makes_a_valid_config() -> None:
    import tomllib

    (toml,) = [b for b in code_blocks(ROOT / "docs" / "operating.md") if b.lang == "toml"]
    data = tomllib.loads(toml.code)
    assert data["agent"]["join"] and data["metadata"]["role"] == "worker"
    fields = {k: str(v) for k, v in data.items() if k != "preset" and not isinstance(v, dict)}
    base = getattr(gossip.Config, data["preset"])()
    cfg = gossip.Config.from_env(prefix="", environ=fields, base=base, strict=True)   # as the agent reads it
    cfg.insecure = True                     # the example's key file is not on this machine
    cfg.validate()
