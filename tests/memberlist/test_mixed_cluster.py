"""A mixed cluster on memberlist's wire: 3 Go memberlist nodes and 3 of ours, on loopback. All
six converge, user messages pass both ways, no member is declared dead while all live, and a
crash of either kind is seen by every survivor. Skipped without Go (.ci/install-go-tools)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gossip import Cluster
from gossip.config import Config
from gossip.memberlist.identity import name_to_id
from gossip.node import NodeState

from .gonode import GoNode, missing, mlnode_binary, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing()), reason=missing() or "ok")]

STEADY = 15.0  # seconds of a healthy cluster in which nobody may be declared dead


@pytest.fixture
def cluster() -> Iterator[tuple[list[GoNode], list[Cluster]]]:
    binary = mlnode_binary()
    if binary is None:
        pytest.skip("mlnode could not be built")
    gos: list[GoNode] = []
    pys: list[Cluster] = []
    try:
        gos.append(GoNode(binary, "go0"))
        assert gos[0].wait_ready()
        for i in (1, 2):
            gos.append(GoNode(binary, f"go{i}", join=gos[0].addr))
        for i in range(3):
            c = Cluster(Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name=f"py{i}",
                               health_check_interval=0.3, ping_timeout=0.15))
            c.start()
            pys.append(c)
        for g in gos:
            assert g.wait_ready()
        for c in pys:
            c.join([gos[0].addr])
        yield gos, pys
    finally:
        for g in gos:
            g.kill()
        for c in pys:
            c.stop(leave=False)


def py_alive(c: Cluster) -> list[str]:
    return sorted(n.name for n in c.nodes() if n.state in (NodeState.ALIVE, NodeState.SUSPECT))


def test_three_go_and_three_of_ours(cluster: tuple[list[GoNode], list[Cluster]]) -> None:
    gos, pys = cluster
    everyone = sorted([g.name for g in gos] + [c.config.name for c in pys])
    assert wait_for(lambda: all(g.alive == everyone for g in gos)
                    and all(py_alive(c) == everyone for c in pys), 20), (
        [g.alive for g in gos], [py_alive(c) for c in pys])
    # user messages both ways
    got: list[bytes] = []
    pys[1].handle_func(128, lambda n, pkt: got.append(pkt.unmarshal()))
    gos[2].command(cmd="send", to="py1", payload="go-to-py")
    target = pys[0].get_node(name_to_id("go1"))
    assert target is not None
    pys[0].send_to(target, 128, b"py-to-go")
    assert wait_for(lambda: got == [b"go-to-py"] and gos[1].msgs == ["py-to-go"], 10), (got, gos[1].msgs)
    # no false positives while everyone lives
    end = time.monotonic() + STEADY
    while time.monotonic() < end:
        assert all(g.alive == everyone for g in gos), [g.alive for g in gos]
        assert all(py_alive(c) == everyone for c in pys), [py_alive(c) for c in pys]
        time.sleep(0.1)
    assert not any(ev.get("state") == "dead" for g in gos for ev in g.lines)
    # a Go node crashes, then one of ours: every survivor sees each
    gos[2].kill()
    left = [n for n in everyone if n != "go2"]
    assert wait_for(lambda: all(g.alive == left for g in gos[:2]) and all(py_alive(c) == left for c in pys), 20), (
        [g.alive for g in gos[:2]], [py_alive(c) for c in pys])
    pys[2].stop(leave=False)
    left = [n for n in left if n != "py2"]
    assert wait_for(lambda: all(g.alive == left for g in gos[:2]) and all(py_alive(c) == left for c in pys[:2]), 20), (
        [g.alive for g in gos[:2]], [py_alive(c) for c in pys[:2]])
