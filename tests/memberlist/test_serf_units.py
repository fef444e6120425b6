"""Serf's messages and its Lamport clocks, without a Serf agent; two Serf members of this
library exchange user events and intents in one process."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest

from gossip import Cluster
from gossip.config import Config
from gossip.errors import ConfigError, LocalProtocolError
from gossip.memberlist import serf as sf
from gossip.memberlist.identity import name_to_id
from gossip.node import Node, NodeState
from gossip.metadata import MetadataReader
from tests.integration import wait_until


def node(name: str, state: NodeState = NodeState.ALIVE) -> Node:
    return Node(name_to_id(name), "127.0.0.1:1", state, 1, MetadataReader(), name=name)


def test_messages_are_serfs_byte_for_byte() -> None:
    # Go's codec writes the fields sorted by name, raw strings
    assert sf.encode_join(5, "py1") == b"\x01" + bytes.fromhex("82a54c54696d6505a44e6f6465a3707931")
    assert sf.decode(sf.encode_leave(7, "x")) == (sf.LEAVE, {"LTime": 7, "Node": b"x"})
    kind, f = sf.decode(sf.encode_event(3, "deploy", b"v1"))  # type: ignore[misc]
    assert kind == sf.USER_EVENT and f == {"CC": False, "LTime": 3, "Name": b"deploy", "Payload": b"v1"}
    for bad in (b"", b"\x04\x80", b"\x03\xc1", b"\x03\x01", b"\x03" + msgpack.packb({"LTime": -1}),
                b"\x03" + msgpack.packb({"Name": "x"})):
        assert sf.decode(bad) is None


def test_clocks_intents_and_events() -> None:
    sent: list[tuple[str, bytes]] = []
    members = [node("me"), node("a"), node("b")]

    def send(n: Node, data: bytes) -> None:
        if n.name == "b":
            raise OSError("gone")
        sent.append((n.name, data))

    s = sf.Serf("me", send, lambda: members)
    got: list[tuple[str, bytes]] = []
    s.add_handler(lambda name, payload: got.append((name, payload)))
    s.add_handler(lambda name, payload: 1 / 0)  # a failing handler is logged, not raised
    s.on_message(sf.encode_join(10, "a"))
    assert s.clock.time() == 11
    s.on_state(node("a"), NodeState.UNKNOWN)
    s.on_state(node("a"), NodeState.SUSPECT)   # greeted once
    s.on_state(node("c", NodeState.DEAD), NodeState.ALIVE)
    assert sent == [("a", sf.encode_join(12, "me"))]
    s.leaving()
    assert sent[-1] == ("a", sf.encode_leave(13, "me"))
    s.on_message(sf.encode_event(4, "deploy", b"v1"))
    s.on_message(sf.encode_event(4, "deploy", b"v1"))  # a duplicate
    s.on_message(sf.encode_event(5, "bad", b"") [:1] + msgpack.packb({"LTime": 5, "Name": 3}))
    s.on_message(b"\x09junk")
    assert got == [("deploy", b"v1")] and s.received == 1 and s.event_clock.time() == 6
    s.event("go", b"x")
    assert sent[-1] == ("a", sf.encode_event(7, "go", b"x"))
    with pytest.raises(LocalProtocolError):
        s.event("big", b"x" * 10000)
    s.clock.witness(3)
    assert s.clock.time() == 13


@pytest.fixture
def pair() -> Iterator[tuple[Cluster, Cluster]]:
    cs = [Cluster(Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name=n, serf=True,
                         health_check_interval=0.3, ping_timeout=0.15)) for n in ("s1", "s2")]
    yield cs[0], cs[1]
    for c in cs:
        c.stop(leave=False)


def test_two_serf_members_of_ours(pair: tuple[Cluster, Cluster]) -> None:
    a, b = pair
    a.local_metadata().set_string("role", "web")
    got: list[tuple[str, bytes]] = []
    b.handle_serf_event_func(lambda name, payload: got.append((name, payload)))
    a.start()
    b.start()
    b.join([a.local_node().address])
    wait_until(lambda: (n := b.get_node(name_to_id("s1"))) is not None and n.state is NodeState.ALIVE
               and n.metadata.get_string("role") == "web", 10, "the tags")
    a.serf_event("hello", b"world")
    wait_until(lambda: got == [("hello", b"world")], 10, "the event")
    a.leave()
    wait_until(lambda: (n := b.get_node(name_to_id("s1"))) is not None and n.state is NodeState.LEFT,
               10, "the leave")
    with pytest.raises(ConfigError, match="serf"):
        Cluster(Config(bind_addr="127.0.0.1:0")).serf_event("x")
