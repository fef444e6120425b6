"""The shape of :mod:`gossip.transports`, checked on every module's syntax tree.

Each file holds one concern a reader can keep in mind; transports move bytes and import nothing
above them; no import runs in a circle; the socket transport never loads WebSocket code; and the
WebSocket transport drives websockets through its documented sans-I/O layer, never by
subclassing (and overriding the internals of) websockets' own connection classes.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "gossip" / "transports"
MODULES = sorted(ROOT.rglob("*.py"))
MAX_LINES = 800
# What a transport may import from gossip: the errors, the lock-free counters, the lazy-import
# helper, and the transports themselves.
ALLOWED = ("gossip.errors", "gossip.counters", "gossip._lazy", "gossip.address", "gossip.transports")


def _name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import, relative ones resolved, type-only ones included."""
    tree = ast.parse(path.read_text())
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names]))
    return found


def _internal_edges(path: pathlib.Path) -> set[str]:
    """The gossip.transports modules ``path`` imports (``from pkg import mod`` counts as mod)."""
    known = {_name(p) for p in MODULES}
    edges: set[str] = set()
    for module, names in _imports(path):
        if not module.startswith("gossip.transports"):
            continue
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
        edges.update(subs or [module])
    edges.discard(_name(path))
    return edges


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_is_short_enough_to_hold_in_mind(path: pathlib.Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_transports_import_nothing_above_them(path: pathlib.Path) -> None:
    above = [m for m, _ in _imports(path) if m.startswith("gossip") and not m.startswith(ALLOWED)]
    assert above == []


def test_no_import_circle_among_the_transports() -> None:
    graph = {_name(p): _internal_edges(p) for p in MODULES}
    # A package's __init__ re-exports its modules; a module importing its own package's face
    # would be a circle too, so nothing is left out.
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circle.extend(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
                return True
            if nxt not in state and visit(nxt, trail + [node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if node not in state and visit(node, []):
            break
    assert circle == []


@pytest.mark.parametrize("path", sorted((ROOT / "tcp").rglob("*.py")) + [ROOT / "socket.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_socket_transport_loads_no_websocket_code(path: pathlib.Path) -> None:
    loaded = [m for m, _ in _imports(path)
              if m.split(".")[0] in ("websockets", "ssl") or m.startswith("gossip.transports.websocket")]
    assert loaded == []


@pytest.mark.parametrize("path", sorted((ROOT / "websocket").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_websocket_code_subclasses_nothing_of_websockets(path: pathlib.Path) -> None:
    from_websockets = {alias for module, names in _imports(path)
                       if module.split(".")[0] == "websockets" for alias in names}
    tree = ast.parse(path.read_text())
    subclassed = [(node.name, ast.unparse(base)) for node in ast.walk(tree)
                  if isinstance(node, ast.ClassDef) for base in node.bases
                  if ast.unparse(base).split(".")[0] in from_websockets | {"websockets"}]
    assert subclassed == []
    # Nothing of websockets' threaded implementation is imported but its public server
    # connection, which hosts hand us (HostLink drives it through its public methods).
    threaded = [(m, n) for m, n in _imports(path) if m.startswith("websockets.sync")
                and n != ["ServerConnection"]]
    assert threaded == []
