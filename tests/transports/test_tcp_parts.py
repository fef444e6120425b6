"""The smaller parts of the socket transport: socket plumbing (:mod:`gossip.transports._sockets`),
the UDP side (:mod:`gossip.transports.tcp.udp`) and the transport's stream hand-off."""

from __future__ import annotations

import errno
import queue
import socket
import threading

import pytest

from gossip.errors import (
    AddressError,
    ClusterClosed,
    MessageTooLarge,
    SendError,
    SendQueueFull,
    TransportError,
)
from gossip.address import plain_ip
from gossip.transports._sockets import Waker, close_quietly, set_buffer, shutdown, wait_fd
from gossip.transports.base import Incoming, StreamConn
from gossip.transports.socket import SocketTransport
from gossip.transports.tcp.udp import UdpSocket

pytestmark = pytest.mark.integration

WAIT = 5.0


def test_the_waker_wakes_and_drains() -> None:
    waker = Waker()
    try:
        for _ in range(3):
            waker.wake()
        wait_fd(waker.r, write=False, timeout=WAIT)
        assert waker.r.recv(16) == b"\0\0\0"
        waker.wake()
        waker.drain()
        with pytest.raises(BlockingIOError):
            waker.r.recv(1)  # drained
    finally:
        waker.close()
    waker.wake()  # closed: never raises
    waker.drain()


def test_socket_helpers_never_raise_on_what_is_gone() -> None:
    shutdown(None)
    close_quietly(None)
    a, b = socket.socketpair()
    b.close()
    shutdown(a)  # the peer is gone: no error
    a.close()
    shutdown(a)
    close_quietly(a)
    with pytest.raises(OSError) as info:
        wait_fd(a, write=True, timeout=0.1)
    assert info.value.errno == errno.EBADF


def test_a_buffer_size_asked_for_is_granted_or_capped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        default = set_buffer(s, socket.SO_RCVBUF, 0)  # 0 keeps the system's
        assert default > 0
        assert set_buffer(s, socket.SO_RCVBUF, 256 * 1024) >= 256 * 1024  # Linux doubles it


@pytest.mark.parametrize("ip, plain", [("::ffff:127.0.0.1", "127.0.0.1"), ("fe80::1%lo", "fe80::1"),
                                       ("127.0.0.2", "127.0.0.2"), ("", "")])
def test_admission_counts_know_an_ip_one_way(ip: str, plain: str) -> None:
    assert plain_ip(ip) == plain


class _Full:
    """A UDP socket whose send buffer is full, or broken."""

    def __init__(self, exc: OSError) -> None:
        self.exc = exc

    def sendto(self, data: bytes, addr: object) -> int:
        raise self.exc


def test_a_datagram_is_refused_by_reason_and_counted() -> None:
    counts: dict[str, int] = {}
    closed = [False]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        udp = UdpSocket(s, name="u", max_udp_size=100, emit=lambda b: None,
                        count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n),
                        stop=threading.Event(), is_closed=lambda: closed[0])
        with pytest.raises(MessageTooLarge):
            udp.send("127.0.0.1:9", "127.0.0.1", 9, bytes(101))
        udp.sock = _Full(BlockingIOError(errno.EAGAIN, "full"))  # type: ignore[assignment]
        with pytest.raises(SendQueueFull, match="UDP send buffer is full"):
            udp.send("127.0.0.1:9", "127.0.0.1", 9, b"x")
        udp.sock = _Full(OSError(errno.EPERM, "refused"))  # type: ignore[assignment]
        with pytest.raises(SendError):
            udp.send("127.0.0.1:9", "127.0.0.1", 9, b"x")
        closed[0] = True
        with pytest.raises(ClusterClosed):
            udp.send("127.0.0.1:9", "127.0.0.1", 9, b"x")
    assert counts == {"udp_too_large": 1, "udp_send_buffer_full": 1, "send_errors": 2}


def test_streams_are_refused_without_a_stream_callback_and_a_failing_callback_is_counted() -> None:
    refusing = SocketTransport("127.0.0.1:0", name="nostreams")
    failing = SocketTransport("127.0.0.1:0", name="failing")
    dialer = SocketTransport("127.0.0.1:0", name="dialer")

    def broken(stream: StreamConn) -> None:
        raise RuntimeError("a bug in the stream handler")

    refusing.start(lambda batch: None)
    failing.start(lambda batch: None, broken)
    dialer.start(lambda batch: None)
    try:
        for target in (refusing, failing):
            s = dialer.dial_stream(target.local_addr, WAIT)
            s.send_frame(b"hello")
            try:  # the other side closes it (the counters moved before)
                assert s.recv_frame(WAIT) is None
            except TransportError:
                pass  # or resets it
            s.close()
        assert refusing.stats["streams_refused"] == 1
        assert failing.stats["callback_errors"] == 1 and failing.stats["streams_accepted"] == 1
        assert "nostreams" in repr(refusing) and "started" in repr(refusing)
    finally:
        for t in (refusing, failing, dialer):
            t.close()
    with pytest.raises(ClusterClosed):
        dialer.dial_stream(refusing.local_addr, WAIT)
    assert "closed" in repr(dialer)


def test_a_failing_packet_callback_is_counted_and_reading_goes_on() -> None:
    got: queue.Queue[Incoming] = queue.Queue()
    calls = [0]

    def flaky(batch: list[Incoming]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug in the engine")
        for p in batch:
            got.put(p)

    a, b = SocketTransport("127.0.0.1:0", name="a"), SocketTransport("127.0.0.1:0", name="b")
    b.start(flaky)
    a.start(lambda batch: None)
    try:
        a.send(b.local_addr, b"lost to the bug")
        a.send(b.local_addr, b"delivered", reliable=True)
        seen = [got.get(timeout=WAIT).data]
        while b"delivered" not in seen:
            seen.append(got.get(timeout=WAIT).data)
        assert b.stats["callback_errors"] == 1
    finally:
        a.close()
        b.close()


def test_settings_and_the_lifecycle_of_the_socket_transport() -> None:
    with pytest.raises(ValueError, match="max_udp_size"):
        SocketTransport("127.0.0.1:0", max_udp_size=0)
    with pytest.raises(AddressError):
        SocketTransport("127.0.0.1:0", advertise_addr="not an address")
    t = SocketTransport("127.0.0.1:0", name="life", advertise_addr="127.0.0.9:7946")
    with pytest.raises(ClusterClosed, match="not started"):
        t.send("127.0.0.1:9", b"x")
    with t:
        t.start(lambda batch: None)
        assert t.advertise_addr == "127.0.0.9:7946" and t.local_addr.startswith("127.0.0.1:")
        with pytest.raises(TransportError, match="already started"):
            t.start(lambda batch: None)
    with pytest.raises(ClusterClosed):
        t.send("127.0.0.1:9", b"x")


class _Flaky:
    """A UDP socket whose reads fail as an ICMP error makes them fail, then run dry."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failures = 2

    def recvmsg_into(self, buffers: object, ancsize: int) -> object:
        return self.recvfrom_into(buffers)

    def recvfrom_into(self, view: object) -> object:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "port unreachable")
        raise BlockingIOError(errno.EAGAIN, "dry")


def test_a_failing_datagram_read_is_counted_and_reading_goes_on() -> None:
    counts: dict[str, int] = {}
    batches: list[list[Incoming]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        udp = UdpSocket(s, name="u", max_udp_size=100, emit=batches.append,
                        count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n),
                        stop=threading.Event(), is_closed=lambda: False)
        udp.sock = _Flaky(s)  # type: ignore[assignment]
        udp.read_burst()
    assert counts == {"reader_errors": 2} and batches == []
