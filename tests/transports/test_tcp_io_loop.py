"""The TCP I/O loop's frame clock (:class:`gossip.transports.tcp.io_loop.IoLoop`), on a
socketpair, with no I/O thread: the test plays the loop's thread, calling its read and sweep
with the time it chooses, so no assertion depends on how fast the host runs."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gossip.transports.base import Incoming
from gossip.transports.limits import ConnectionLimits
from gossip.transports.tcp.conn import KIND_OUT, FrameConn
from gossip.transports.tcp.frames import encode_frame
from gossip.transports.tcp.io_loop import IoLoop

FRAME_TIMEOUT = 10.0


class Loop:
    """An :class:`IoLoop` whose thread is the test, with one pooled connection registered."""

    def __init__(self, sock: socket.socket, idle_timeout: float = 3600.0) -> None:
        limits = ConnectionLimits(frame_timeout=FRAME_TIMEOUT, idle_timeout=idle_timeout)
        self.counts: dict[str, int] = {}
        self.frames: list[bytes] = []
        self.loop = IoLoop(
            name="t", limits=limits, admission=limits.measured_admission(None),
            dials=limits.dial_budget(None), count=self.count, emit=self.emit,
            accept_stream=lambda *args: None, sweep_more=lambda now: None,
            is_closed=lambda: False, stop=threading.Event())
        self.sel = selectors.DefaultSelector()
        sock.setblocking(False)
        self.conn = FrameConn(self.loop.ctx, sock, "127.0.0.1:1", "127.0.0.1", KIND_OUT)
        assert self.loop.add_pooled(self.conn) is self.conn
        self.loop._apply_pending(self.sel)

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def emit(self, batch: list[Incoming]) -> None:
        self.frames += [inc.data for inc in batch]

    def read(self, now: float) -> None:
        self.loop._read(self.sel, self.conn, now)

    def sweep(self, now: float) -> None:
        self.loop._sweep(self.sel, now)

    def close(self) -> None:
        self.loop._close_registered(self.sel, self.conn)
        self.sel.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, Loop]]:
    peer, ours = socket.socketpair()
    loop = Loop(ours)
    yield peer, loop
    loop.close()
    peer.close()


def test_a_busy_connection_whose_reads_end_mid_frame_is_never_cut(
        pair: tuple[socket.socket, Loop]) -> None:
    peer, loop = pair
    # 101-byte frames sent 150 bytes at a time: every read completes a frame and ends inside
    # the next one, for 100 reads; each frame arrives whole within a second of its first byte.
    stream = encode_frame(bytes(97)) * 150
    t0 = 1000.0
    for i in range(100):
        peer.sendall(stream[i * 150:(i + 1) * 150])
        now = t0 + i
        loop.read(now)
        assert loop.conn.rbuf, "the read was meant to end inside a frame"
        loop.sweep(now)
        assert not loop.conn.closed, f"cut after {i} s of frames arriving whole"
    assert loop.counts.get("tcp_frame_timeouts", 0) == 0
    assert len(loop.frames) == 100 * 150 // 101


def test_a_frame_that_does_not_complete_is_still_cut(pair: tuple[socket.socket, Loop]) -> None:
    peer, loop = pair
    frame = encode_frame(bytes(97))
    peer.sendall(frame + frame[:50])
    t0 = 1000.0
    loop.read(t0)
    for i in range(1, 10):  # a byte a second: the frame never completes
        peer.sendall(frame[50 + i - 1:50 + i])
        loop.read(t0 + i)
        loop.sweep(t0 + i)
        assert not loop.conn.closed
    loop.sweep(t0 + FRAME_TIMEOUT + 1)
    assert loop.conn.closed and loop.counts["tcp_frame_timeouts"] == 1


def test_the_time_a_connection_is_paused_does_not_count_against_its_frame(
        pair: tuple[socket.socket, Loop]) -> None:
    peer, loop = pair
    frame = encode_frame(bytes(97))
    peer.sendall(frame + frame[:50])
    t0 = time.monotonic()
    loop.read(t0)
    assert loop.conn.partial_since == t0
    # Our own lanes are full: the engine pauses the connection, for longer than the timeout.
    loop.conn.pause_reading()
    loop.loop._apply_pending(loop.sel)
    loop.sweep(t0 + 3 * FRAME_TIMEOUT)
    assert not loop.conn.closed
    # Reading again, the unfinished frame's clock starts again; the rest of it arrives.
    before = time.monotonic()
    loop.conn.resume_reading()
    loop.loop._apply_pending(loop.sel)
    assert loop.conn.partial_since >= before
    peer.sendall(frame[50:])
    loop.read(before)
    assert not loop.conn.rbuf and loop.frames == [bytes(97)] * 2
    assert loop.counts.get("tcp_frame_timeouts", 0) == 0


def test_a_paused_connection_is_not_idle_and_its_idle_clock_restarts_on_resume() -> None:
    # Paused by our own full lanes, a connection holds what its peer sent and we did not read
    # yet: closing it as idle would lose those frames. Once reading again, it is idle only
    # after a whole idle timeout with nothing read.
    peer, ours = socket.socketpair()
    loop = Loop(ours, idle_timeout=10.0)
    try:
        peer.sendall(encode_frame(bytes(97)))
        t0 = time.monotonic()
        loop.read(t0)
        loop.conn.pause_reading()
        loop.loop._apply_pending(loop.sel)
        peer.sendall(encode_frame(bytes(97)))          # waits in the kernel while we are paused
        loop.sweep(t0 + 60.0)
        assert not loop.conn.closed and loop.counts.get("tcp_idle_closed", 0) == 0
        before = time.monotonic()
        loop.conn.resume_reading()
        loop.loop._apply_pending(loop.sel)
        assert loop.conn.last_active >= before
        loop.sweep(before + 5.0)
        assert not loop.conn.closed
        loop.read(before + 5.0)
        assert loop.frames == [bytes(97)] * 2
        loop.sweep(loop.conn.last_active + 10.5)
        assert loop.conn.closed and loop.counts["tcp_idle_closed"] == 1
    finally:
        if not loop.conn.closed:
            loop.close()
        else:
            loop.sel.close()
        peer.close()
