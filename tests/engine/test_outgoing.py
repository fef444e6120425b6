"""User messages (gossip.engine.user_messages.UserMessages) as the facade sends them, given a
stand-in for the send path and the member table: what goes to whom, with which ttl."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

import gossip
from gossip.config import Config
from gossip.counters import Counters
from gossip.engine.outgoing import broadcast_ttl
from gossip.engine.user_messages import UserMessages
from gossip.errors import ClusterClosed, LocalProtocolError, NodeUnavailable, SendError
from gossip.hlc import HLC
from gossip.metadata import MetadataReader
from gossip.node import Node, NodeID, NodeState
from gossip.packet import Packet, PacketCodec

ME = NodeID(int=1)
A, B, C = NodeID(int=0xA), NodeID(int=0xB), NodeID(int=0xC)
ADDR = {A: "127.0.0.2:7001", B: "127.0.0.3:7002", C: "127.0.0.4:7003"}
MT = gossip.USER_MSG + 41


class Out:
    """The send path: records each user send; refuses the addresses in ``failing``."""

    def __init__(self, codec: PacketCodec) -> None:
        self.codec = codec
        self.sent: list[tuple[str, Packet, bool]] = []
        self.failing: set[str] = set()
        self.requests: list[tuple[str, str, int, Any, float]] = []
        self.closed = False

    def user(self, addr: str, data: bytes, reliable: bool, payload_size: int) -> None:
        if self.closed:
            raise ClusterClosed("the cluster is stopped")
        if addr in self.failing:
            raise SendError(f"cannot reach {addr}")
        self.sent.append((addr, self.codec.decode(data), reliable))

    def user_nowait(self, addr: str, data: bytes, reliable: bool, payload_size: int) -> None:
        self.user(addr, data, reliable, payload_size)  # every packet goes (or fails) at once

    def request(self, addr: str, label: str, msg_type: int, payload: Any,
                response_type: type[Any] | None, timeout: float) -> Any:
        self.requests.append((addr, label, msg_type, payload, timeout))
        return "answer"


class Peers:
    def __init__(self) -> None:
        self.states: dict[NodeID, NodeState] = {A: NodeState.ALIVE, B: NodeState.DEAD}
        self.excluded: list[tuple[NodeID, ...]] = []

    def fan_out_addrs(self, exclude: Iterable[NodeID], tag: str | None = None) -> list[str]:
        self.excluded.append(tuple(exclude))
        return [ADDR[A], ADDR[C]]

    def alive_count(self) -> int:
        return 40

    def state_of(self, node_id: NodeID) -> NodeState | None:
        return self.states.get(node_id)


def rig(**config: Any) -> tuple[UserMessages, Out, Peers, list[tuple[float, bytes, int]], Counters]:
    codec = PacketCodec()
    out, peers, remembered, counters = Out(codec), Peers(), [], Counters()
    messages = UserMessages(out, Config.local(**config), codec, ME, HLC(), peers,  # type: ignore[arg-type]
                            lambda now, sender, msg_id: remembered.append((now, sender, msg_id)),
                            counters)
    return messages, out, peers, remembered, counters


def node(nid: NodeID, state: NodeState = NodeState.ALIVE) -> Node:
    return Node(nid, ADDR.get(nid, "127.0.0.1:7000"), state, 1, MetadataReader())


def test_a_broadcast_goes_to_the_fan_out_with_the_cluster_s_ttl_and_is_remembered() -> None:
    messages, out, peers, remembered, counters = rig()
    messages.broadcast(MT, {"k": 1}, reliable=True, exclude=(B,))
    assert [(addr, p.msg_type, p.ttl, p.sender, reliable) for addr, p, reliable in out.sent] == [
        (ADDR[A], MT, broadcast_ttl(40), ME.bytes, True),
        (ADDR[C], MT, broadcast_ttl(40), ME.bytes, True)]
    assert out.sent[0][1].unmarshal() == {"k": 1}
    assert peers.excluded == [(ME, B)]
    assert [(sender, msg_id) for _, sender, msg_id in remembered] == [(ME.bytes, out.sent[0][1].msg_id)]
    assert counters.snapshot()["user.broadcasts"] == 1 and counters.snapshot()["user.sent"] == 2


def test_a_direct_send_has_ttl_one_and_skips_this_node() -> None:
    messages, out, _, remembered, counters = rig()
    messages.send_direct([node(ME), node(A)], MT, "hi", reliable=False)
    assert [(addr, p.ttl) for addr, p, _ in out.sent] == [(ADDR[A], 1)]
    assert remembered == [] and counters.snapshot()["user.direct"] == 1


def test_a_best_effort_send_skips_nodes_known_dead_or_left_here() -> None:
    messages, out, peers, _, counters = rig()
    peers.states[C] = NodeState.LEAVING
    # B's snapshot says alive, but it is dead here; an unknown node goes by its snapshot.
    messages.send_direct([node(A), node(B), node(C), node(NodeID(int=0xD), NodeState.DEAD)], MT,
                         "hi", reliable=False)
    assert [addr for addr, _, _ in out.sent] == [ADDR[A]]
    stats = counters.snapshot()
    assert (stats["dropped.node_dead"], stats["dropped.node_left"]) == (2, 1)
    messages.send_direct([node(B)], MT, "hi", reliable=True)  # reliable sends try every node
    assert out.sent[-1][0] == ADDR[B]


def test_the_raise_policy_raises_for_a_gone_node_after_sending_to_the_others() -> None:
    messages, out, _, _, _ = rig(best_effort_full_policy="raise")
    with pytest.raises(NodeUnavailable, match="is dead"):
        messages.send_direct([node(B), node(A)], MT, "hi", reliable=False)
    assert [addr for addr, _, _ in out.sent] == [ADDR[A]]


def test_a_failed_send_is_raised_after_trying_every_address() -> None:
    messages, out, _, _, counters = rig()
    out.failing.add(ADDR[A])
    with pytest.raises(SendError):
        messages.broadcast(MT, "x", reliable=True)
    assert [addr for addr, _, _ in out.sent] == [ADDR[C]]
    assert counters.snapshot()["user.sent"] == 1


def test_internal_types_are_refused_before_anything_is_sent() -> None:
    messages, out, _, _, _ = rig()
    for send in (lambda: messages.broadcast(3, "x", False),
                 lambda: messages.send_direct([node(A)], 3, "x", False),
                 lambda: messages.request(node(A), 3, "x", None, 1.0)):
        with pytest.raises(LocalProtocolError):
            send()
    assert out.sent == [] and out.requests == []


def test_a_request_names_its_node_and_defaults_to_the_tcp_deadline() -> None:
    messages, out, _, _, _ = rig(tcp_deadline=3.5)
    assert messages.request(node(A), MT, "q", None, None) == "answer"
    assert out.requests == [(ADDR[A], f"{A.short}@{ADDR[A]}", MT, "q", 3.5)]


@pytest.mark.parametrize("nowait", [False, True])
def test_a_send_to_several_tries_them_all_and_raises_the_first_failure_after(nowait: bool) -> None:
    messages, out, _peers, _remembered, counters = rig()
    out.failing = {ADDR[A]}
    send = messages.send_direct_nowait if nowait else messages.send_direct
    with pytest.raises(SendError, match="cannot reach 127.0.0.2"):
        send([node(A), node(C)], MT, "x", True)
    assert [addr for addr, _p, _r in out.sent] == [ADDR[C]]  # C was still tried
    assert counters.get("user.sent") == 1


@pytest.mark.parametrize("nowait", [False, True])
def test_a_send_to_several_stops_at_once_when_the_cluster_closes(nowait: bool) -> None:
    messages, out, _peers, _remembered, _counters = rig()
    out.closed = True
    send = messages.send_direct_nowait if nowait else messages.send_direct
    with pytest.raises(ClusterClosed):
        send([node(A), node(C)], MT, "x", True)
    assert out.sent == []


def test_requests_without_blocking_need_the_reply_table() -> None:
    messages, *_ = rig()
    with pytest.raises(ClusterClosed):
        messages.request_nowait(node(A), MT, "x", 1.0)
