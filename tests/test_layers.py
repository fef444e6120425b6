"""The import direction of DESIGN.md, checked on every module's syntax tree."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "gossip"

FORBIDDEN = {
    "protocol": {"threading", "socket", "select", "selectors", "asyncio", "time", "gossip.engine", "gossip.transports",
                 "gossip.packet", "gossip.security", "gossip.sim", "gossip.cluster"},
    "sim": {"threading", "socket", "select", "selectors", "asyncio", "gossip.engine", "gossip.transports",
            "gossip.cluster"},
    # Pure data may guard itself with a Lock (threading.Lock/local) but never start a thread.
    "pure": {"socket", "select", "selectors", "asyncio", "gossip.engine", "gossip.transports",
             "gossip.cluster", "gossip.protocol"},
}
PURE = ["errors.py", "counters.py", "config.py", "node.py", "hlc.py", "metadata.py", "messages.py", "wire.py", "codecs",
        "compression.py", "security.py", "packet.py", "address.py", "announce.py", "tags.py"]


def modules(sub: str) -> list[pathlib.Path]:
    p = ROOT / sub
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


def imported(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    pkg = "gossip." + ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rstrip(".").split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
    return names


def violations(path: pathlib.Path, forbidden: set[str]) -> list[str]:
    return sorted(n for n in imported(path) if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", modules("protocol"), ids=str)
def test_protocol_core_is_sans_io(path: pathlib.Path) -> None:
    assert violations(path, FORBIDDEN["protocol"]) == []
    src = path.read_text()
    for call in ("random.random(", "random.choice(", "random.shuffle(", "random.randint(", "random.sample(",
                 "time.time(", "time.monotonic(", "uuid4(", "os.urandom("):
        assert call not in src, f"{path.name} calls {call}"


@pytest.mark.parametrize("path", modules("sim"), ids=str)
def test_simulator_never_touches_threads_sockets_or_engine(path: pathlib.Path) -> None:
    assert violations(path, FORBIDDEN["sim"]) == []


@pytest.mark.parametrize("path", [p for name in PURE for p in modules(name)], ids=str)
def test_pure_data_layer_does_no_io(path: pathlib.Path) -> None:
    assert violations(path, FORBIDDEN["pure"]) == []
    assert "Thread(" not in path.read_text(), f"{path.name} starts a thread"


# ---------------------------------------------------------------------------------- the engine's rooms


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("gossip", *parts))


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports (``from pkg import
    name`` counts as importing ``pkg.name`` when that is a module)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in paths]
                found = subs or [mod]
            else:
                continue
            for dep in found:
                while dep and dep not in paths:
                    dep = dep.rpartition(".")[0]
                if dep and dep != name:
                    deps.add(dep)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph[v]:
                out.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


ENGINE_ROOMS = ("gossip.engine", "gossip.streams", "gossip.cli", "gossip.sim", "gossip.cluster")


def test_no_import_circle_runs_through_the_engine_streams_cli_simulator_or_facade() -> None:
    assert [c for c in circles(import_graph())
            if any(m == r or m.startswith(r + ".") for m in c for r in ENGINE_ROOMS)] == []


def test_the_facade_imports_no_transport() -> None:
    # The keyring, the codec and the transport come from gossip.engine.wiring.
    assert violations(ROOT / "cluster.py", {"gossip.transports"}) == []


@pytest.mark.parametrize("path", modules("engine"), ids=str)
def test_the_engine_never_imports_the_facade_and_no_part_takes_its_owner(path: pathlib.Path) -> None:
    assert violations(path, {"gossip.cluster", "gossip.cli", "gossip.sim", "gossip.groups",
                             "gossip.leader"}) == []
    if path.name not in ("__init__.py", "engine.py"):
        # A part is given callables or narrow objects: it never imports the Engine...
        assert "gossip.engine.engine" not in imported(path)
        assert not (_module_name(path) != "gossip.engine" and "gossip.engine" in imported(path))
    # ...and nothing in the engine hands a whole object of its own to another: X(self).
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            args = [*node.args, *(k.value for k in node.keywords)]
            assert not any(isinstance(a, ast.Name) and a.id == "self" for a in args), \
                f"{path.name}:{node.lineno} hands `self` to {ast.unparse(node.func)}"


@pytest.mark.parametrize("path", modules("cli"), ids=str)
def test_the_command_line_uses_the_public_layers_only(path: pathlib.Path) -> None:
    assert violations(path, {"gossip.engine", "gossip.transports", "gossip.workers",
                             "gossip.security"}) == []


def test_no_import_circle_in_the_package() -> None:
    # Imports under TYPE_CHECKING count: a circle a type checker needs is still a circle a
    # reader has to untangle.
    assert circles(import_graph()) == []


# One concern per module, and a module a reader can hold in mind (DESIGN.md: rooms). config.py
# is one table of documented fields: one concern, however long.
# config.py is one table of documented fields; cluster.py is the facade, whose one concern is the
# public API: each method is a few lines of delegation under the docstring users read (the logic
# lives in the engine and the layers below).
LONG_MODULES_ALLOWED = {"config.py", "cluster.py"}


@pytest.mark.parametrize("path", [p for p in ROOT.rglob("*.py")
                                  if str(p.relative_to(ROOT)) not in LONG_MODULES_ALLOWED], ids=str)
def test_modules_stay_readable(path: pathlib.Path) -> None:
    assert len(path.read_text().splitlines()) <= 800


# ---------------------------------------------------------------------------------- memberlist's wire

MEMBERLIST_PURE = [p for p in modules("memberlist") if p.name not in ("transport.py", "serf.py")]


@pytest.mark.parametrize("path", MEMBERLIST_PURE, ids=str)
def test_memberlists_codec_and_profile_are_pure_data(path: pathlib.Path) -> None:
    """The wire profile encodes and decodes (the core's messages among them): no I/O, no
    engine, no facade; its transport alone touches sockets, and Serf sits above the Cluster."""
    assert violations(path, FORBIDDEN["pure"] - {"gossip.protocol"} | {"time"}) == []
    assert "Thread(" not in path.read_text()


@pytest.mark.parametrize("path", [ROOT / "memberlist" / "transport.py", ROOT / "memberlist" / "serf.py"], ids=str)
def test_memberlists_transport_and_serf_never_take_the_engine_or_the_facade(path: pathlib.Path) -> None:
    assert violations(path, {"gossip.engine", "gossip.cluster", "gossip.protocol"}) == []
