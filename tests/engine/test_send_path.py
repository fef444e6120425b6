"""The send path (gossip.engine.outgoing) given a stand-in transport: requests lent to an event
loop (Outgoing.request_line, UserMessages.request_start: when a line is lent, when one is
dialed for the next request, what a transport that lends none costs), and protocol answers and
datagrams that cannot go (each counted)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

import gossip
from gossip.config import Config
from gossip.counters import Counters
from gossip.engine.deadlines import Deadlines
from gossip.engine.outgoing import Outgoing
from gossip.engine.replies import Replies
from gossip.engine.user_messages import UserMessages
from gossip.errors import ClusterClosed, ConnectError, SendError, SendQueueFull
from gossip.hlc import HLC
from gossip.messages import Ack
from gossip.metadata import MetadataReader
from gossip.node import Node, NodeID, NodeState
from gossip.packet import PacketCodec
from gossip.protocol import Send
from gossip.testing import wait_until
from gossip.transports.base import Incoming

ME = NodeID(int=1)
PEER = NodeID(int=0xA)
ADDR = "127.0.0.2:7001"
MT = gossip.USER_MSG + 42


class Line:
    """A lent line (the engine only hands it on)."""

    def __init__(self, addr: str, data: bytes) -> None:
        self.addr, self.data = addr, data


class Lender:
    """A transport that lends a line when ``idle`` holds the address; ``prepare`` answers as
    ``lends`` says, or raises ``fails``."""

    def __init__(self, lends: bool = True, fails: Exception | None = None) -> None:
        self.idle: set[str] = set()
        self.lends = lends
        self.fails = fails
        self.lent: list[Line] = []
        self.prepared: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def request_line(self, addr: str, data: bytes) -> Line | None:
        if addr not in self.idle:
            return None
        line = Line(addr, data)
        self.lent.append(line)
        return line

    def prepare_request_line(self, addr: str, timeout: float) -> bool:
        assert self.gate.wait(10.0)
        self.prepared.append(addr)
        if self.fails is not None:
            raise self.fails
        if self.lends:
            self.idle.add(addr)
        return self.lends

    def link_kind(self, addr: str, reliable: bool) -> str:
        return "tcp"

    def send(self, addr: str, data: bytes, reliable: bool = False,
             timeout: float | None = None) -> None:
        raise SendError("no pooled sends in these tests")


def outgoing(transport: Any) -> tuple[Outgoing, Counters]:
    counters = Counters()
    out = Outgoing(Config.local(), PacketCodec(), ME.bytes, HLC(), counters,
                   logging.getLogger("gossip.test"), lambda addr, why: None, "gossip-test")
    out.start(transport)
    return out, counters


def test_no_idle_line_has_one_dialed_for_the_next_request() -> None:
    lender = Lender()
    out, _ = outgoing(lender)
    try:
        lender.gate.clear()  # hold the dial, to ask again while it runs
        assert out.request_line(ADDR, b"one") is None
        assert out.request_line(ADDR, b"two") is None  # one dial per address at a time
        lender.gate.set()
        wait_until(lambda: ADDR in lender.idle, timeout=10.0, what="the line dialed")
        assert lender.prepared == [ADDR]
        line = out.request_line(ADDR, b"three")
        assert isinstance(line, Line) and line.data == b"three"
    finally:
        out.stop(5.0)


def test_an_address_the_transport_lends_none_to_is_not_asked_again() -> None:
    lender = Lender(lends=False)
    out, _ = outgoing(lender)
    try:
        assert out.request_line(ADDR, b"x") is None
        wait_until(lambda: ADDR in out._no_lines, timeout=10.0, what="the refusal noted")
        assert out.request_line(ADDR, b"y") is None
        assert lender.prepared == [ADDR]  # not dialed again
    finally:
        out.stop(5.0)


def test_a_transport_without_lines_lends_none_and_dials_nothing() -> None:
    class Plain:
        def link_kind(self, addr: str, reliable: bool) -> str:
            return "memory"

    out, _ = outgoing(Plain())
    try:
        assert out.request_line(ADDR, b"x") is None
        assert out.queued == 0 and out.unsent == 0
    finally:
        out.stop(5.0)


def test_a_failed_dial_is_counted_and_the_next_request_tries_again() -> None:
    lender = Lender(fails=ConnectError("nobody there"))
    out, counters = outgoing(lender)
    try:
        assert out.request_line(ADDR, b"x") is None
        wait_until(lambda: counters.get("send_errors.ConnectError") == 1, timeout=10.0,
                   what="the failed dial counted")
        wait_until(lambda: ADDR not in out._preparing, timeout=10.0, what="the dial over")
        assert ADDR not in out._no_lines
        assert out.request_line(ADDR, b"y") is None
        wait_until(lambda: len(lender.prepared) == 2, timeout=10.0, what="a second dial")
    finally:
        out.stop(5.0)


def test_no_line_is_lent_once_the_send_path_stops() -> None:
    out, _ = outgoing(Lender())
    out.stop(5.0)
    with pytest.raises(ClusterClosed):
        out.request_line(ADDR, b"x")


class Members:
    def fan_out_addrs(self, exclude: Any, tag: str | None = None) -> list[str]:
        return []

    def alive_count(self) -> int:
        return 2

    def state_of(self, node_id: NodeID) -> NodeState | None:
        return NodeState.ALIVE


def messages(out: Outgoing, counters: Counters, replies: Replies | None) -> UserMessages:
    return UserMessages(out, Config.local(), PacketCodec(), ME, HLC(), Members(),
                        lambda now, sender, msg_id: None, counters, replies)


def test_request_start_lends_a_line_with_the_encoded_request_or_sends_it_the_pooled_way() -> None:
    lender = Lender()
    out, counters = outgoing(lender)
    deadlines = Deadlines(Counters(), logging.getLogger("gossip.test"), "gossip-test")
    replies = Replies(deadlines, counters)
    user = messages(out, counters, replies)
    peer = Node(PEER, ADDR, NodeState.ALIVE, 1, MetadataReader())
    try:
        first = user.request_start(peer, MT, {"q": 1}, 5.0)
        assert not isinstance(first, Line)  # none idle: the pooled way, a reply waiter
        first.cancel()
        wait_until(lambda: ADDR in lender.idle, timeout=10.0, what="the line dialed")
        second = user.request_start(peer, MT, {"q": 2}, 5.0)
        assert isinstance(second, Line)
        pkt = PacketCodec().decode(second.data)
        assert (pkt.msg_type, pkt.ttl, pkt.unmarshal()) == (MT, 0, {"q": 2})
        assert counters.get("user.requests_lent") == 1 and counters.get("user.requests") == 2
        assert len(replies) == 0
        with pytest.raises(gossip.LocalProtocolError):
            user.request_start(peer, 3, None, 5.0)  # an internal type
    finally:
        out.stop(5.0)
        deadlines.close()
        assert deadlines.join(time.monotonic() + 5.0) == []


def test_request_start_needs_the_reply_table() -> None:
    out, counters = outgoing(Lender())
    try:
        user = messages(out, counters, None)
        peer = Node(PEER, ADDR, NodeState.ALIVE, 1, MetadataReader())
        with pytest.raises(ClusterClosed):
            user.request_start(peer, MT, None, 5.0)
    finally:
        out.stop(5.0)


# ---------------------------------------------------------------------- protocol sends


class Conn:
    """A connection a request came in on: answers go back on it (or it refuses them)."""

    def __init__(self, fails: Exception | None = None) -> None:
        self.fails = fails
        self.frames: list[bytes] = []
        self.peer = "127.0.0.3:7002"

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        if self.fails is not None:
            raise self.fails
        self.frames.append(data)


class Datagrams(Lender):
    """A transport whose datagrams fail as ``refuse`` says."""

    def __init__(self, refuse: Exception | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.datagrams: list[tuple[str, bytes]] = []

    def send(self, addr: str, data: bytes, reliable: bool = False,
             timeout: float | None = None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.datagrams.append((addr, data))


def ack(reply: bool, reliable: bool = False) -> Send:
    return Send(ADDR, Ack(7), reliable=reliable, reply=reply)


def incoming(conn: Conn | None) -> Incoming:
    return Incoming(b"", "127.0.0.3:7002", conn is not None, conn, 0.0, "tcp")  # type: ignore[arg-type]


@pytest.mark.parametrize("fails, counter", [
    (None, "packets_out.tcp.ack"),
    (SendQueueFull("full"), "dropped.reply_buffer_full"),
    (SendError("broken"), "send_errors.SendError"),
])
def test_an_answer_goes_back_on_its_connection_or_is_counted(
        fails: Exception | None, counter: str) -> None:
    out, counters = outgoing(Datagrams())
    try:
        conn = Conn(fails)
        out.protocol(ack(reply=True), incoming(conn))
        assert counters.get(counter) == 1
        assert len(conn.frames) == (1 if fails is None else 0)
        out.protocol(ack(reply=True), incoming(None))  # came as a datagram: nowhere to answer
        assert counters.get("dropped.reply_without_connection") == 1
    finally:
        out.stop(5.0)


@pytest.mark.parametrize("refuse, counter", [
    (None, "packets_out.tcp.ack"),
    (SendQueueFull("full"), "dropped.udp_send_buffer_full"),
    (SendError("unreachable"), "send_errors.SendError"),
])
def test_a_datagram_goes_at_once_or_is_counted(refuse: Exception | None, counter: str) -> None:
    transport = Datagrams(refuse)
    out, counters = outgoing(transport)
    try:
        out.protocol(ack(reply=False), None)
        assert counters.get(counter) == 1
        assert len(transport.datagrams) == (1 if refuse is None else 0)
        out.stop(5.0)
        out.protocol(ack(reply=False), None)  # stopped: nothing is sent, nothing counted
        assert counters.get(counter) == 1
    finally:
        out.stop(5.0)
