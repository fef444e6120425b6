"""MultiTransport, driven with in-memory fake sides: routing by scheme, sides made on first
use, the merged counters, and the dial-only sender thread's queue, errors and back-off."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gossip.errors import AddressError, ClusterClosed, SendError, TransportError
from gossip.testing import wait_until
from gossip.transports import multi
from gossip.transports.base import Incoming, StreamConn, Transport
from gossip.transports.multi import MultiTransport

WS = "ws://127.0.0.1:1/gossip"
IP = "127.0.0.1:9"


class FakeSide:
    """A transport that records what it is asked to do."""

    def __init__(self, addr: str = "", kind: str = "fake") -> None:
        self.local_addr = addr
        self.kind = kind
        self.sent: list[tuple[str, bytes, bool, float | None]] = []
        self.callbacks: tuple[Any, Any] | None = None
        self.closed = False
        self.fail: BaseException | None = None
        self.fail_start: BaseException | None = None
        self.fail_close = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    @property
    def stats(self) -> dict[str, int]:
        return {"frames": 2, "label": "x"}  # type: ignore[dict-item]  # a non-int is skipped

    def link_kind(self, addr: str, reliable: bool) -> str:
        return self.kind

    def start(self, on_packets: Any, on_stream: Any = None) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.callbacks = (on_packets, on_stream)

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10.0)
        if self.fail is not None:
            raise self.fail
        self.sent.append((addr, data, reliable, timeout))

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        return b"re:" + data

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        return f"stream to {addr}"  # type: ignore[return-value]

    def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise RuntimeError("close failed")


def on_packets(batch: list[Incoming]) -> None:
    pass


def on_stream(conn: StreamConn) -> None:
    pass


def test_fake_side_is_a_transport() -> None:
    assert isinstance(FakeSide(), Transport)


def test_each_send_goes_by_its_destinations_scheme() -> None:
    sock, ws = FakeSide("127.0.0.1:7946", "udp"), FakeSide(WS)
    with MultiTransport(socket=sock, websocket=ws, name="m") as m:
        m.start(on_packets, on_stream)
        assert sock.callbacks == ws.callbacks == (on_packets, on_stream)
        m.send(IP, b"a")
        m.send(WS, b"b", reliable=True, timeout=1.0)
        assert sock.sent == [(IP, b"a", False, None)] and ws.sent == [(WS, b"b", True, 1.0)]
        assert m.request(WS, b"q", 1.0) == b"re:q"
        assert m.dial_stream(IP, 1.0) == f"stream to {IP}"  # type: ignore[comparison-overlap]
        assert m.local_addr == "127.0.0.1:7946" and m.socket is sock and m.websocket is ws
        assert m.link_kind(WS, False) == "ws" and m.link_kind(IP, False) == "udp"
        stats = m.stats
        assert stats["frames"] == 4 and "label" not in stats and stats["tcp_out_queued"] == 0
        assert "socket=FakeSide websocket=FakeSide" in repr(m)
        with pytest.raises(TransportError, match="already started"):
            m.start(on_packets)
    assert sock.closed and ws.closed


def test_a_side_given_as_a_factory_is_made_and_started_on_first_use() -> None:
    made: list[FakeSide] = []

    def factory() -> Transport:
        made.append(FakeSide())
        return made[-1]

    m = MultiTransport(socket=FakeSide("127.0.0.1:7946"), websocket=factory)
    assert "websocket=lazy" in repr(m) and m.websocket is None
    with pytest.raises(ClusterClosed, match="not started"):
        m.send(WS, b"x")
    m.start(on_packets, on_stream)
    try:
        assert made == []                                  # nothing made until it is needed
        m.send(WS, b"1")
        m.send(WS, b"2")
        assert len(made) == 1 and made[0].callbacks == (on_packets, on_stream)
        assert [d for _a, d, _r, _t in made[0].sent] == [b"1", b"2"]
    finally:
        m.close()
    assert made[0].closed
    m.close()                                              # idempotent
    with pytest.raises(ClusterClosed):
        m.start(on_packets)


def test_a_lazy_side_cannot_be_made_once_closed() -> None:
    m = MultiTransport(socket=FakeSide("127.0.0.1:7946"), websocket=FakeSide)
    m.start(on_packets)
    m.close()
    with pytest.raises(ClusterClosed, match="is closed"):
        m.send(WS, b"x")


def test_a_scheme_without_a_side_is_an_address_error() -> None:
    with MultiTransport(socket=FakeSide("127.0.0.1:7946")) as m:
        m.start(on_packets)
        with pytest.raises(AddressError, match="WebSocket URLs"):
            m.send(WS, b"x")
    with MultiTransport(websocket=FakeSide(WS)) as m:
        m.start(on_packets)
        with pytest.raises(AddressError, match="ip:port"):
            m.request(IP, b"x", 1.0)
        assert m.local_addr == WS
        assert m.link_kind(IP, True) == "tcp" and m.link_kind(IP, False) == "udp"
        assert "socket=-" in repr(m)


def test_the_advertised_address_is_the_listening_sides() -> None:
    unbound = FakeSide("")
    assert MultiTransport(socket=unbound, websocket=FakeSide(WS)).local_addr == WS
    dial_only = MultiTransport(socket=FakeSide("127.0.0.1:5"), websocket=FakeSide(WS),
                               socket_dial_only=True)
    assert dial_only.local_addr == WS and dial_only.link_kind(IP, False) == "tcp"
    assert MultiTransport(socket=FakeSide("")).local_addr == ""
    assert "no listener" in repr(MultiTransport())


def test_a_side_that_fails_to_start_closes_the_router() -> None:
    sock, ws = FakeSide("127.0.0.1:7946"), FakeSide(WS)
    ws.fail_start = TransportError("cannot bind")
    m = MultiTransport(socket=sock, websocket=ws)
    with pytest.raises(TransportError, match="cannot bind"):
        m.start(on_packets)
    assert sock.closed and ws.closed
    with pytest.raises(ClusterClosed):
        m.start(on_packets)


def test_one_side_failing_to_close_does_not_keep_the_other_open() -> None:
    sock, ws = FakeSide("127.0.0.1:7946"), FakeSide(WS)
    sock.fail_close = True
    m = MultiTransport(socket=sock, websocket=ws)
    m.start(on_packets)
    m.close()
    assert sock.closed and ws.closed


@pytest.fixture
def dial_only() -> Iterator[tuple[MultiTransport, FakeSide]]:
    sock = FakeSide("")
    m = MultiTransport(socket=sock, websocket=FakeSide(WS), socket_dial_only=True, name="d")
    m.start(on_packets)
    yield m, sock
    if sock.gate is not None:
        sock.gate.set()
    m.close()


def test_dial_only_best_effort_sends_go_through_the_sender_thread(
        dial_only: tuple[MultiTransport, FakeSide]) -> None:
    m, sock = dial_only
    assert any(t.name == "gossip-d-tcp-out" for t in threading.enumerate())
    m.send(IP, b"datagram")
    wait_until(lambda: sock.sent, 5.0, "the queued packet sent")
    assert sock.sent == [(IP, b"datagram", True, 0)]      # a frame, never a wait for a dial
    m.send(IP, b"frame", reliable=True, timeout=2.0)      # reliable: sent by the caller
    assert sock.sent[-1] == (IP, b"frame", True, 2.0)
    assert m.stats["tcp_out_queued"] == 1


def test_a_failed_dial_backs_off_and_drops_what_is_queued_for_that_address(
        dial_only: tuple[MultiTransport, FakeSide], monkeypatch: pytest.MonkeyPatch) -> None:
    m, sock = dial_only
    monkeypatch.setattr(multi, "_BACKOFF", 3600.0)
    sock.fail = SendError("connection refused")
    sock.gate = threading.Event()
    m.send(IP, b"1")
    assert sock.entered.wait(5.0)                        # the sender is dialing, held
    m.send(IP, b"2")                                     # queued behind it: no failure yet
    sock.gate.set()
    wait_until(lambda: m.stats["tcp_out_dropped"] == 1, 5.0, "the queued packet dropped")
    assert m.stats["tcp_out_errors"] == 1
    m.send(IP, b"3")                                     # within the back-off: dropped at once
    assert m.stats["tcp_out_dropped"] == 2 and m.stats["tcp_out_queued"] == 2
    assert sock.sent == []


def test_an_unexpected_error_is_counted_and_the_sender_goes_on(
        dial_only: tuple[MultiTransport, FakeSide]) -> None:
    m, sock = dial_only
    sock.fail = RuntimeError("bug in a custom transport")
    m.send(IP, b"1")
    wait_until(lambda: m.stats["tcp_out_errors"] == 1, 5.0, "the error counted")
    sock.fail = None
    m.send(IP, b"2")                                     # no back-off for a bug
    wait_until(lambda: sock.sent, 5.0, "the next packet sent")


def test_a_full_sender_queue_drops_and_a_closed_router_refuses(
        dial_only: tuple[MultiTransport, FakeSide], monkeypatch: pytest.MonkeyPatch) -> None:
    m, sock = dial_only
    monkeypatch.setattr(multi, "_QUEUE_MAX", 0)
    m.send(IP, b"x")
    assert m.stats["tcp_out_dropped"] == 1 and m.stats["tcp_out_queued"] == 0
    m.close()
    with pytest.raises(ClusterClosed):
        m.send(IP, b"y")


def test_the_sender_stops_when_its_side_is_closed(dial_only: tuple[MultiTransport, FakeSide]) -> None:
    m, sock = dial_only
    sock.fail = ClusterClosed("side closed")
    m.send(IP, b"x")
    wait_until(lambda: not any(t.name == "gossip-d-tcp-out" for t in threading.enumerate()),
               5.0, "the sender thread gone")
    assert m.stats["tcp_out_errors"] == 0


def test_a_lazy_dial_only_socket_side_starts_the_sender_on_first_use() -> None:
    sock = FakeSide("")
    m = MultiTransport(socket=lambda: sock, websocket=FakeSide(WS), socket_dial_only=True, name="l")
    m.start(on_packets)
    try:
        assert not any(t.name == "gossip-l-tcp-out" for t in threading.enumerate())
        m.send(IP, b"x")
        wait_until(lambda: sock.sent, 5.0, "the packet sent")
        assert any(t.name == "gossip-l-tcp-out" for t in threading.enumerate())
    finally:
        m.close()
