"""Tags and forget_node over real sockets on loopback, once each, through the public API."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from gossip import USER_MSG, Cluster, Config, Node, NodeAliveError, NodeState, Packet
from gossip.packet import PacketCodec

from . import wait_until

KEY = b"0123456789abcdef"
T = USER_MSG + 7


@contextlib.contextmanager
def cluster(tags: list[set[str]], **overrides: object) -> Iterator[list[Cluster]]:
    nodes: list[Cluster] = []
    try:
        for t in tags:
            c = Cluster(Config.local(bind_addr="127.0.0.1:0", tags=t, **overrides))
            c.start()
            if nodes:
                c.join(nodes[0].address, timeout=10.0)
            nodes.append(c)
        n = len(tags)
        wait_until(lambda: all(c.num_alive_nodes() == n for c in nodes), 20.0, f"{n} nodes see each other")
        yield nodes
    finally:
        for c in reversed(nodes):
            c.stop(timeout=3.0)


def test_only_tagged_nodes_receive_and_a_node_that_gains_the_tag_starts_receiving() -> None:
    with cluster([set(), {"gpu"}, set(), set()], encryption_key=KEY) as nodes:
        got: list[list[object]] = [[] for _ in nodes]
        lock = threading.Lock()
        for i, c in enumerate(nodes):
            def handler(sender: Node, packet: Packet, i: int = i) -> None:
                with lock:
                    got[i].append(packet.unmarshal())
            c.handle_func(T, handler)
        sender, gpu, plain, late = nodes
        ids = {c.local_node().id for c in nodes}
        assert gpu.local_node().has_tag("gpu") and not plain.local_node().has_tag("gpu")
        wait_until(lambda: [n.id for n in sender.nodes_by_tag("gpu")] == [gpu.local_node().id], 10.0,
                   "the sender sees the tagged node")
        sender.send_tagged("gpu", T, "first")
        wait_until(lambda: got[1] == ["first"], 10.0, "the tagged node got the first message")
        late.add_tag("gpu")
        assert late.local_node().tags == {"gpu"}
        wait_until(lambda: {n.id for n in sender.nodes_by_tag("gpu")} == {gpu.local_node().id, late.local_node().id},
                   10.0, "the sender sees the node that gained the tag")
        sender.send_tagged_reliable("gpu", T, "second")
        wait_until(lambda: got[1] == ["first", "second"] and got[3] == ["second"], 10.0,
                   "both tagged nodes got the second message")
        assert got[0] == [] and got[2] == []
        assert plain.stats().get("user.received", 0) == 0
        assert {n.id for n in gpu.nodes()} == ids


def test_a_tagged_packet_for_a_tag_not_held_is_neither_handled_nor_relayed() -> None:
    with cluster([set(), set()]) as nodes:
        a, b = nodes
        handled: list[object] = []
        b.handle_func(T, lambda sender, packet: handled.append(packet.unmarshal()))
        pkt = PacketCodec().encode(T, a.local_node().id.bytes, 1, 5, "for gpu nodes", tag="gpu")
        host, port = b.address.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(pkt, (host, int(port)))
        wait_until(lambda: b.stats().get("user.tag_not_held", 0) == 1, 10.0, "the packet refused")
        assert handled == [] and b.stats().get("user.relayed", 0) == 0


def test_forget_node_removes_a_dead_member_everywhere_and_refuses_a_live_one() -> None:
    with cluster([set(), set(), set()]) as nodes:
        a, b, c = nodes
        gone = c.local_node().id
        c._crash()
        wait_until(lambda: all((n := x.get_node(gone)) is not None and n.state is NodeState.DEAD
                               for x in (a, b)), 20.0, "c held dead")
        with pytest.raises(NodeAliveError):
            a.forget_node(b.local_node().id)
        with pytest.raises(NodeAliveError):
            a.forget_node(a.local_node().id)
        assert a.forget_node(gone.short) is True
        assert a.get_node(gone) is None
        wait_until(lambda: b.get_node(gone) is None, 10.0, "c forgotten by b too")
        assert a.forget_node(gone) is False
        assert b.stats()["core.members_forgotten"] == 1
