"""Request/reply exchanges of the socket transport (:mod:`gossip.transports.tcp.requests`) against
a peer that misbehaves on purpose: a raw TCP server on loopback answers each request as told."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gossip.errors import ClusterClosed, GossipTimeout, SendError
from gossip.testing import wait_until
from gossip.transports.socket import SocketTransport
from gossip.transports.tcp import io_loop
from gossip.transports.tcp import requests as requests_mod
from gossip.transports.tcp.frames import PREAMBLE_FRAMES, encode_frame, parse_frames
from gossip.transports.tcp.requests import SocketRequestLine

pytestmark = pytest.mark.integration

Answer = Callable[[socket.socket, bytes], bool]
"""``answer(conn, request) -> keep``: reply (or not) on ``conn``; False closes it."""


class Peer:
    """A raw TCP server answering every request frame with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="test-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        greeted = False
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                if not greeted:
                    if len(buf) < 4:
                        continue
                    assert bytes(buf[:4]) == PREAMBLE_FRAMES
                    del buf[:4]
                    greeted = True
                frames, used, _bad = parse_frames(buf, 1 << 20)
                del buf[:used]
                for frame in frames:
                    if not self.answer(conn, frame):
                        conn.close()
                        return
        except OSError:
            return

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        for c in self.conns:
            c.close()
        self._thread.join(5.0)


@pytest.fixture
def transport() -> Iterator[SocketTransport]:
    t = SocketTransport("127.0.0.1:0", name="req")
    t.start(lambda batch: None)
    yield t
    t.close()


def echo(conn: socket.socket, frame: bytes) -> bool:
    conn.sendall(encode_frame(b"re:" + frame))
    return True


def answer_then_reset(conn: socket.socket, frame: bytes) -> bool:
    conn.sendall(encode_frame(b"re:" + frame))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return False  # closed with a reset right after answering


def test_a_pooled_connection_the_peer_closed_is_replaced_by_one_new_dial(
        transport: SocketTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    closed_after_first = {"n": 0}

    def once_then_close(conn: socket.socket, frame: bytes) -> bool:
        conn.sendall(encode_frame(b"re:" + frame))
        closed_after_first["n"] += 1
        if closed_after_first["n"] == 1:
            conn.shutdown(socket.SHUT_RDWR)  # the idle connection dies in the pool
            return False
        return True

    peer = Peer(once_then_close)
    try:
        assert transport.request(peer.addr, b"1", 5.0) == b"re:1"
        assert transport._requests.idle_count() == 1
        monkeypatch.setattr(requests_mod, "PEEK_AFTER", 0.0)  # check every idle one before reuse
        assert transport.request(peer.addr, b"2", 5.0) == b"re:2"
        assert peer.accepted == 2 and transport.stats["tcp_dials"] == 2
    finally:
        peer.close()


def test_a_reused_connection_found_dead_on_write_is_redialed_once(transport: SocketTransport) -> None:
    peer = Peer(answer_then_reset)
    try:
        assert transport.request(peer.addr, b"a", 5.0) == b"re:a"
        # Taken from the pool at once (no peek): the write or the read finds it dead, and the
        # request goes out once more on a new connection.
        assert transport.request(peer.addr, b"b", 5.0) == b"re:b"
        assert peer.accepted == 2
    finally:
        peer.close()


@pytest.mark.parametrize("reply, error", [
    ((0).to_bytes(4, "big"), "bad reply frame length 0"),
    (encode_frame(b"whole reply")[:8], "in the middle of the reply"),
])
def test_a_malformed_or_cut_reply_is_an_error_and_the_connection_is_not_kept(
        transport: SocketTransport, reply: bytes, error: str) -> None:
    def bad(conn: socket.socket, frame: bytes) -> bool:
        conn.sendall(reply)
        return False

    peer = Peer(bad)
    try:
        with pytest.raises(SendError, match=error):
            transport.request(peer.addr, b"x", 5.0)
        assert transport._requests.idle_count() == 0
    finally:
        peer.close()


def test_no_reply_is_a_timeout(transport: SocketTransport) -> None:
    peer = Peer(lambda conn, frame: True)  # reads, never answers
    try:
        with pytest.raises(GossipTimeout):
            transport.request(peer.addr, b"x", 0.2)
        assert transport._requests.idle_count() == 0
    finally:
        peer.close()


def test_two_frames_for_one_request_leave_the_connection_out_of_the_pool(transport: SocketTransport) -> None:
    def twice(conn: socket.socket, frame: bytes) -> bool:
        conn.sendall(encode_frame(b"one") + encode_frame(b"two"))
        return True

    peer = Peer(twice)
    try:
        assert transport.request(peer.addr, b"x", 5.0) == b"one"
        assert transport._requests.idle_count() == 0  # what came after is not a reply to anything
    finally:
        peer.close()


def test_a_request_after_close_is_refused(transport: SocketTransport) -> None:
    peer = Peer(echo)
    try:
        transport.close()
        with pytest.raises(ClusterClosed):
            transport.request(peer.addr, b"x", 1.0)
    finally:
        peer.close()


class _RecordingSelector(selectors.DefaultSelector):
    """A selector that notes the timeout each ``select`` is called with, by thread name."""

    calls: list[tuple[str, float | None]] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        _RecordingSelector.calls.append((threading.current_thread().name, timeout))
        return super().select(timeout)


def test_an_idle_transport_sleeps_long_and_a_request_connection_going_idle_wakes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no connection, the I/O thread sleeps up to IDLE_WAIT, not a tick (an idle node's
    wake-ups); a request connection entering the idle pool wakes it, so its idle deadline still
    acts within a tick of ``idle_timeout``, not IDLE_WAIT later."""
    calls = _RecordingSelector.calls
    calls.clear()
    monkeypatch.setattr(selectors, "DefaultSelector", _RecordingSelector)
    t = SocketTransport("127.0.0.1:0", name="idle", idle_timeout=0.3)
    t.start(lambda batch: None)
    monkeypatch.undo()      # the transport has its selector; nothing else is recorded
    peer = Peer(echo)
    try:
        def longest() -> float:
            return max((s or 0.0) for name, s in list(calls) if name.endswith("-tcp-io"))

        wait_until(lambda: longest() > io_loop.TICK, timeout=10.0, what="a sleep longer than a tick")
        assert longest() <= io_loop.IDLE_WAIT
        assert t.request(peer.addr, b"1", 5.0) == b"re:1"
        assert t._requests.idle_count() == 1
        # well under IDLE_WAIT: the pool's first idle connection woke the loop
        wait_until(lambda: t._requests.idle_count() == 0, timeout=io_loop.IDLE_WAIT - 1.5,
                   what="the idle request connection closed")
        assert t.stats["tcp_idle_closed"] == 1
    finally:
        t.close()
        peer.close()


def test_the_loop_sleeps_until_the_earliest_deadline_once_quiet() -> None:
    nxt = io_loop.IoLoop._next_sweep
    assert nxt(100.0, None) == 100.0 + io_loop.IDLE_WAIT
    assert nxt(100.0, 101.0) == 101.0 + io_loop.TICK
    assert nxt(100.0, 99.0) == 100.0 + io_loop.TICK        # overdue: within a tick
    assert nxt(100.0, 200.0) == 100.0 + io_loop.IDLE_WAIT


def test_connections_held_open_do_not_make_the_quiet_loop_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's pooled and accepted connections wait for their idle deadline (a minute): once
    quiet, both sides' I/O threads sleep longer than a tick, and the connections stay open."""
    calls = _RecordingSelector.calls
    calls.clear()
    got: list[object] = []
    monkeypatch.setattr(selectors, "DefaultSelector", _RecordingSelector)
    a = SocketTransport("127.0.0.1:0", name="held-a")
    b = SocketTransport("127.0.0.1:0", name="held-b")
    a.start(lambda batch: None)
    b.start(got.extend)
    monkeypatch.undo()
    try:
        a.send(b.local_addr, b"frame", reliable=True)
        wait_until(lambda: len(got) == 1, timeout=10.0, what="the frame")
        assert a._loop.counts() == (0, 1) and b._loop.counts() == (1, 0)
        start = len(calls)

        def slept_long(side: str) -> bool:
            return any(name.endswith(f"{side}-tcp-io") and (s or 0.0) > io_loop.TICK
                       for name, s in list(calls)[start:])

        wait_until(lambda: slept_long("held-a") and slept_long("held-b"), timeout=10.0,
                   what="both loops sleeping longer than a tick")
        assert a._loop.counts() == (0, 1) and b._loop.counts() == (1, 0)
        assert a.stats["tcp_idle_closed"] == 0 and b.stats["tcp_idle_closed"] == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_fresh_connection_ended_before_any_reply_is_a_send_error_not_a_retry(
        transport: SocketTransport, how: str) -> None:
    def end(conn: socket.socket, frame: bytes) -> bool:
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return False                                  # closed, nothing answered

    peer = Peer(end)
    try:
        with pytest.raises(SendError, match="closed by peer|reset|Connection"):
            transport.request(peer.addr, b"x", 5.0)
        assert peer.accepted == 1, "a connection that never answered is not dialed again"
        assert transport.stats["send_errors"] == 1 and transport._requests.idle_count() == 0
    finally:
        peer.close()


# ---------------------------------------------------------------------- lent request lines


def drive(line: SocketRequestLine, timeout: float = 10.0) -> bytes:
    """Drive ``line`` as an event loop does: write while the socket is writable, then read
    whenever it is readable, until the reply is whole (bounded by ``timeout``)."""
    sel = selectors.DefaultSelector()
    try:
        writing = not line.flush()
        sel.register(line.fileno(), selectors.EVENT_WRITE if writing else selectors.EVENT_READ)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0, "the exchange did not end in time"
            if not sel.select(left):
                continue
            if writing:
                if line.flush():
                    writing = False
                    sel.modify(line.fileno(), selectors.EVENT_READ)
                continue
            reply = line.read()
            if reply is not None:
                return reply
    finally:
        sel.close()


def test_a_line_is_lent_only_when_an_idle_connection_is_there_and_prepare_dials_one(
        transport: SocketTransport) -> None:
    peer = Peer(echo)
    try:
        assert transport.request_line(peer.addr, b"x") is None  # nothing idle: never dials
        assert transport.stats.get("tcp_dials", 0) == 0
        assert transport.prepare_request_line(peer.addr, 5.0) is True
        assert transport.prepare_request_line(peer.addr, 5.0) is True  # one is idle: no dial
        assert transport.stats["tcp_dials"] == 1 and transport._requests.idle_count() == 1
        for i in range(3):
            line = transport.request_line(peer.addr, b"%d" % i)
            assert line is not None and transport._requests.idle_count() == 0
            assert drive(line) == b"re:%d" % i   # the first carries the preamble (Peer checks it)
            line.release()
            line.release()  # twice changes nothing
            assert transport._requests.idle_count() == 1
        assert peer.accepted == 1 and transport.stats["tcp_dials"] == 1
        # A blocking request takes the same idle connection.
        assert transport.request(peer.addr, b"b", 5.0) == b"re:b" and peer.accepted == 1
    finally:
        peer.close()


def test_a_request_larger_than_the_socket_takes_at_once_is_written_as_it_becomes_writable(
        transport: SocketTransport) -> None:
    peer = Peer(lambda conn, frame: bool(conn.sendall(encode_frame(b"%d" % len(frame)))) or True)
    try:
        transport.prepare_request_line(peer.addr, 5.0)
        big = bytes(900_000)
        line = transport.request_line(peer.addr, big)
        assert line is not None
        line._conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert not line.flush() and not line.written  # the socket took a part
        assert drive(line) == b"900000" and line.written
        line.release()
        assert transport._requests.idle_count() == 1
    finally:
        peer.close()


@pytest.mark.parametrize("reply, error, counter", [
    ((0).to_bytes(4, "big"), "bad reply frame length 0", "tcp_bad_frames"),
    (encode_frame(b"whole reply")[:8], "in the middle of the reply", "send_errors"),
])
def test_a_malformed_or_cut_reply_on_a_line_is_an_error_and_the_connection_is_not_kept(
        transport: SocketTransport, reply: bytes, error: str, counter: str) -> None:
    def bad(conn: socket.socket, frame: bytes) -> bool:
        conn.sendall(reply)
        return False

    peer = Peer(bad)
    try:
        transport.prepare_request_line(peer.addr, 5.0)
        line = transport.request_line(peer.addr, b"x")
        assert line is not None
        with pytest.raises(SendError, match=error):
            drive(line)
        assert not line.retry  # a reply began: the request reached the peer
        line.release()
        assert transport._requests.idle_count() == 0 and line.fileno() == -1
        assert transport.stats[counter] == 1
    finally:
        peer.close()


def test_a_line_on_an_idle_connection_the_peer_reset_fails_as_a_retry_uncounted(
        transport: SocketTransport) -> None:
    peer = Peer(answer_then_reset)
    try:
        transport.prepare_request_line(peer.addr, 5.0)
        first = transport.request_line(peer.addr, b"a")
        assert first is not None and first.retry  # until a reply byte comes
        assert drive(first) == b"re:a" and not first.retry
        first.release()
        stale = transport.request_line(peer.addr, b"b")
        assert stale is not None and stale.retry
        with pytest.raises(SendError):
            drive(stale)
        assert stale.retry, "nothing of a reply was read: the request may go another way"
        stale.release(False)
        assert transport.stats.get("send_errors", 0) == 0
    finally:
        peer.close()


def test_a_line_whose_transport_closes_ends_with_cluster_closed(transport: SocketTransport) -> None:
    peer = Peer(lambda conn, frame: True)  # reads, never answers
    try:
        transport.prepare_request_line(peer.addr, 5.0)
        line = transport.request_line(peer.addr, b"x")
        assert line is not None and line.flush()
        fd = line.fileno()
        transport.close()  # shuts the lent connection down; its borrower closes it
        with pytest.raises(ClusterClosed):
            drive(line)
        line.release(False)
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the release, not before
        with pytest.raises(ClusterClosed):
            transport.request_line(peer.addr, b"y")
        with pytest.raises(ClusterClosed):
            transport.prepare_request_line(peer.addr, 1.0)
    finally:
        peer.close()
