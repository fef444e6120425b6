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
        "compression.py", "security.py", "packet.py", "address.py"]


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


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("gossip",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def import_circles(sub: str) -> list[list[str]]:
    """Return the import circles among the modules under ``sub`` (each a strongly connected
    group of two or more modules, or one that imports itself), imports under TYPE_CHECKING
    included: a circle a type checker needs is still a circle a reader has to untangle."""
    names = {module_name(p) for p in modules(sub)}
    graph = {module_name(p): {n for n in imported(p) if n in names} for p in modules(sub)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


@pytest.mark.parametrize("sub", ["protocol"])
def test_no_import_circles(sub: str) -> None:
    assert import_circles(sub) == []


@pytest.mark.parametrize("path", modules("protocol"), ids=str)
def test_protocol_modules_stay_readable(path: pathlib.Path) -> None:
    # One concern per module, and a module a reader can hold in mind (DESIGN.md: rooms).
    assert len(path.read_text().splitlines()) <= 800
