"""A framed TCP connection's write path (:class:`gossip.transports.tcp.conn.FrameConn`), on a
socketpair, with no I/O thread: the connection is given callables, and the test plays the I/O
loop where the connection asks for it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from gossip.errors import ClusterClosed, MessageTooLarge, SendError, SendQueueFull
from gossip.transports.base import Deadline
from gossip.transports.tcp.conn import KIND_IN, KIND_OUT, ConnContext, FrameConn
from gossip.transports.tcp.frames import PREAMBLE_FRAMES, encode_frame, parse_frames


class Owner:
    """What a transport gives a connection, recorded."""

    def __init__(self, conn_buffer: int = 1 << 20, max_rejected: int = 3) -> None:
        self.counts: dict[str, int] = {}
        self.watched: list[FrameConn] = []
        self.dropped: list[FrameConn] = []
        self.trusted: list[object] = []
        self.closed = False
        self.ctx = ConnContext(
            name="t", conn_buffer=conn_buffer, io_timeout=0.2, max_frame_size=64 * 1024,
            max_rejected=max_rejected, count=self.count, is_closed=lambda: self.closed,
            watch=self.watched.append, drop=self.drop, trust=self.trusted.append)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def drop(self, conn: FrameConn) -> None:
        self.dropped.append(conn)
        conn.discard_queued()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def read_frames(sock: socket.socket, expect: int) -> list[bytes]:
    buf = bytearray()
    frames: list[bytes] = []
    sock.settimeout(5.0)
    while len(frames) < expect:
        buf += sock.recv(1 << 20)
        got, used, bad = parse_frames(buf, 1 << 30)
        assert bad == -1
        frames += got
        del buf[:used]
    return frames


def test_a_lone_frame_is_written_by_the_sender_with_the_preamble_first(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    owner = Owner()
    conn = FrameConn(owner.ctx, a, "127.0.0.1:1", "127.0.0.1", KIND_OUT, PREAMBLE_FRAMES)
    conn.send_frame(b"hello")
    b.settimeout(5.0)
    assert b.recv(100) == PREAMBLE_FRAMES + encode_frame(b"hello")
    assert owner.watched == []  # written at once: the I/O loop was not needed
    assert owner.counts["tcp_sent"] == 1 and not conn.writing


def test_what_the_socket_does_not_take_is_finished_later_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    owner = Owner(conn_buffer=64 << 20)
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_OUT)
    frames = [bytes([i]) * 50_000 for i in range(40)]  # far more than the kernel buffers hold
    for f in frames:
        conn.queue(encode_frame(f), Deadline(1.0), "send")
    assert conn.want_write and owner.watched  # it asked the I/O loop to finish

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(read_frames(b, len(frames))))
    reader.start()
    while conn.writing:  # the I/O loop: on writability, flush again
        conn.flush(True)
    reader.join(10.0)
    assert got == frames
    assert conn.wbytes == 0 and not conn.wlens


def test_a_writer_waits_for_room_then_gives_up_queueing_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    owner = Owner(conn_buffer=1000)
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_OUT)
    with conn.cond:
        conn.writing = True  # another thread owns the flush and is stuck: nothing drains
    conn.queue(encode_frame(b"x" * 900), Deadline(1.0), "send")
    queued = conn.wbytes
    with pytest.raises(SendQueueFull):
        conn.send_frame(b"y" * 500, timeout=0.05)
    assert conn.wbytes == queued  # the refused frame was not queued
    assert owner.counts["tcp_send_waits"] == 1 and owner.counts["tcp_buffer_full"] == 1


def test_a_waiting_writer_is_let_in_once_the_peer_reads(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    owner = Owner(conn_buffer=1000)
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_OUT)
    with conn.cond:
        conn.writing = True
    conn.queue(encode_frame(b"x" * 900), Deadline(1.0), "send")
    done = threading.Event()

    def second() -> None:
        conn.send_frame(b"y" * 500, timeout=5.0)
        done.set()

    writer = threading.Thread(target=second)
    writer.start()
    assert not done.wait(0.05)  # it waits for room
    conn.flush(True)  # the stuck flush goes on: the buffer drains, the writer gets in
    writer.join(5.0)
    assert done.is_set()
    while conn.writing:
        conn.flush(True)
    assert read_frames(b, 2) == [b"x" * 900, b"y" * 500]


def test_frames_queued_on_a_connection_that_breaks_are_counted_lost(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    owner = Owner()
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_OUT)
    with conn.cond:
        conn.writing = True
    for _ in range(3):
        conn.queue(encode_frame(b"z"), Deadline(1.0), "send")
    conn.discard_queued()
    assert owner.counts["tcp_frames_lost"] == 3
    with pytest.raises(SendError):
        conn.send_frame(b"after")


def test_limits_and_a_closed_transport_are_refused_before_anything_is_queued(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    owner = Owner()
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_OUT)
    with pytest.raises(MessageTooLarge):
        conn.send_frame(b"x" * (64 * 1024 + 1))
    owner.closed = True
    with pytest.raises(ClusterClosed):
        conn.send_frame(b"x")
    assert conn.wbytes == 0


def test_trust_and_refused_frames_are_reported_to_the_owner(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    owner = Owner(max_rejected=3)
    conn = FrameConn(owner.ctx, a, "peer", "127.0.0.1", KIND_IN)
    ticket = object()
    conn.ticket = ticket  # type: ignore[assignment]
    assert not conn.trusted
    conn.mark_trusted()
    conn.mark_trusted()
    assert conn.trusted and owner.trusted == [ticket]  # once
    conn.mark_rejected()
    conn.mark_rejected()
    assert owner.dropped == []
    conn.mark_rejected()
    assert owner.dropped == [conn] and owner.counts["tcp_rejected_frames_closed"] == 1
