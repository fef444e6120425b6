"""A node on memberlist's wire with real Go memberlist nodes (tests/memberlist/go/mlnode), on
loopback: join both ways, failure detection both ways, graceful leave, user messages both ways,
metadata changes, encryption, and a wrong key keeping the clusters apart. Skipped when Go or Debian's memberlist
package is missing (.ci/install-go-tools installs them)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import msgpack
import pytest

from gossip import Cluster
from gossip.config import Config
from gossip.memberlist.identity import name_to_id
from gossip.node import NodeState

from .gonode import GoNode, missing, mlnode_binary, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing()), reason=missing() or "ok")]

KEY = bytes(range(16))


@pytest.fixture(scope="module")
def binary() -> str:
    b = mlnode_binary()
    if b is None:
        pytest.skip("mlnode could not be built")
    return b


def py_node(name: str, key: bytes | None = None, **kw: object) -> Cluster:
    cfg = Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name=name,
                 health_check_interval=0.3, ping_timeout=0.15, encryption_key=key, **kw)  # type: ignore[arg-type]
    return Cluster(cfg)


def state_of(c: Cluster, name: str) -> NodeState | None:
    n = c.get_node(name_to_id(name))
    return n.state if n is not None else None


@pytest.fixture
def nodes() -> Iterator[list[object]]:
    made: list[object] = []
    yield made
    for n in made:
        if isinstance(n, GoNode):
            n.kill()
        else:
            assert isinstance(n, Cluster)
            n.stop(leave=False)


def test_join_user_messages_both_ways_and_graceful_leave(binary: str, nodes: list[object]) -> None:
    go = GoNode(binary, "go1", meta="hello")
    nodes.append(go)
    assert go.wait_ready()
    py = py_node("py1")
    nodes.append(py)
    got: list[bytes] = []
    py.handle_func(128, lambda node, pkt: got.append(pkt.unmarshal()))
    py.start()
    py.join([go.addr])
    assert wait_for(lambda: go.alive == ["go1", "py1"], 10), go.alive
    assert wait_for(lambda: state_of(py, "go1") is NodeState.ALIVE, 10)
    g = py.get_node(name_to_id("go1"))
    assert g is not None and g.address == go.addr
    # Go -> us, datagram and stream; us -> Go.
    go.command(cmd="send", to="py1", payload="over-udp")
    go.command(cmd="send", to="py1", payload="over-tcp", reliable=True)
    assert wait_for(lambda: sorted(got) == [b"over-tcp", b"over-udp"], 10), got
    py.send_to(g, 128, b"to-go")
    py.send_to_reliable(g, 128, b"to-go-tcp")
    assert wait_for(lambda: sorted(go.msgs) == ["to-go", "to-go-tcp"], 10), go.msgs
    # Our graceful leave: Go drops us at once (a dead message from ourselves).
    py.leave()
    assert wait_for(lambda: go.alive == ["go1"], 10), go.alive
    assert any(ev.get("node") == "py1" and ev.get("state") == "dead" for ev in go.lines)


def test_a_metadata_change_reaches_go_and_our_incarnation_settles(binary: str, nodes: list[object]) -> None:
    go = GoNode(binary, "go1")
    go2 = GoNode(binary, "go2", join=go.addr)
    nodes += [go, go2]
    assert go.wait_ready() and go2.wait_ready()
    py = py_node("py1")
    nodes.append(py)
    py.start()
    py.join([go.addr])
    assert wait_for(lambda: go2.alive == ["go1", "go2", "py1"], 10), go2.alive
    py.local_metadata().set_string("zone", "a")
    want = base64.b64encode(msgpack.packb({"zone": "a"})).decode()
    assert wait_for(lambda: any(ev.get("node") == "py1" and ev.get("meta") == want for ev in go2.lines), 10)
    settled = py.local_node().incarnation
    time.sleep(2.0)  # Go echoes our alive back: that must not start a refutation loop
    assert py.local_node().incarnation == settled <= 2


def test_go_leave_is_seen_as_left(binary: str, nodes: list[object]) -> None:
    go = GoNode(binary, "go1")
    nodes.append(go)
    assert go.wait_ready()
    py = py_node("py1")
    nodes.append(py)
    py.start()
    py.join([go.addr])
    assert wait_for(lambda: state_of(py, "go1") is NodeState.ALIVE, 10)
    assert wait_for(lambda: go.alive == ["go1", "py1"], 10), go.alive  # it gossips its leave to us
    go.command(cmd="leave")
    assert wait_for(lambda: state_of(py, "go1") is NodeState.LEFT, 10), state_of(py, "go1")


def test_crash_detection_both_ways(binary: str, nodes: list[object]) -> None:
    go = GoNode(binary, "go1")
    go2 = GoNode(binary, "go2")
    nodes += [go, go2]
    assert go.wait_ready() and go2.wait_ready()
    py = py_node("py1")
    nodes.append(py)
    py.start()
    py.join([go.addr, go2.addr])
    assert wait_for(lambda: go.alive == ["go1", "go2", "py1"] and go2.alive == go.alive, 15), (go.alive, go2.alive)
    # Go crashes: we declare it dead (its peer go2 agrees).
    go2.kill()
    assert wait_for(lambda: state_of(py, "go2") is NodeState.DEAD, 20), state_of(py, "go2")
    assert wait_for(lambda: go.alive == ["go1", "py1"], 20), go.alive
    # We crash (stop without leaving): Go declares us dead.
    py.stop(leave=False)
    assert wait_for(lambda: go.alive == ["go1"], 20), go.alive
    assert any(ev.get("node") == "py1" and ev.get("state") == "dead" for ev in go.lines)


def test_encrypted_cluster_and_a_wrong_key_kept_apart(binary: str, nodes: list[object]) -> None:
    go = GoNode(binary, "go1", key=base64.b64encode(KEY).decode())
    nodes.append(go)
    assert go.wait_ready()
    good = py_node("py-good", key=KEY)
    bad = py_node("py-bad", key=bytes(range(1, 17)))
    plain = py_node("py-plain")
    nodes += [good, bad, plain]
    for c in (good, bad, plain):
        c.start()
    good.join([go.addr])
    assert wait_for(lambda: go.alive == ["go1", "py-good"], 10), go.alive
    assert wait_for(lambda: state_of(good, "go1") is NodeState.ALIVE, 10)
    for c in (bad, plain):
        try:
            c.join([go.addr])
        except Exception:
            pass
    assert not wait_for(lambda: len(go.alive) > 2 or state_of(bad, "go1") is not None
                        or state_of(plain, "go1") is not None, 3)
    assert go.alive == ["go1", "py-good"]
