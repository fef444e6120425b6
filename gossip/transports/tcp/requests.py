"""Request/reply exchanges of the socket transport, each on a connection dedicated to it.

:class:`Requests` serves :meth:`SocketTransport.request`: the calling thread writes the request
and reads the single reply itself, against one deadline, on a connection that is *not*
registered with the I/O loop, so a reply is never mistaken for an unsolicited frame. After a
clean exchange the connection goes back to a small per-address idle pool; one idle for a while
is checked before reuse, one idle for ``idle_timeout`` is closed (:meth:`Requests.sweep`, called
by the I/O loop once per tick). A pooled connection the peer has closed meanwhile is replaced by
a new dial once.

A caller that must not block (an event loop) borrows an idle connection instead
(:meth:`Requests.lend`, None when none is idle) and drives the exchange itself through a
:class:`SocketRequestLine`: it writes and reads as the socket allows, watching its file
descriptor, and gives the connection back when the reply is whole. :meth:`Requests.prepare` dials one for
the idle pool (it blocks: a worker thread calls it), so that the next borrower finds it.

It is given the connection context, a dialer, the dial budget and a counter; it never holds the
transport.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from gossip.errors import ClusterClosed, GossipTimeout, SendError
from gossip.transports._admission import DialSlot
from gossip.transports._sockets import wait_fd
from gossip.transports.base import Deadline
from gossip.transports.tcp.conn import KIND_REQ, ConnContext, FrameConn
from gossip.transports.tcp.frames import FRAME_HEADER_SIZE, HEADER, PREAMBLE_FRAMES

__all__ = ["Requests", "SocketRequestLine"]

_READ_CHUNK = 256 * 1024
IDLE_PER_ADDR: Final = 4  # idle request connections kept per address
PEEK_AFTER: Final = 1.0  # an idle request connection unused this long is checked before reuse

Dial = Callable[[str, int, str, Deadline], socket.socket]
"""``dial(ip, port, key, deadline)``: a connected, non-blocking socket (or ConnectError)."""


class _PeerClosed(SendError):
    """The peer closed a connection before sending any reply byte (a stale pooled conn)."""


def _reply_in(buf: bytearray, limit: int, ctx: ConnContext,
              what: str) -> tuple[bytes, bool] | None:
    """The reply frame in ``buf`` and whether it is all of ``buf`` (None: not whole yet).

    Raises:
        SendError: the frame's length is 0 or over ``limit`` (counted ``tcp_bad_frames``).
    """
    if len(buf) < FRAME_HEADER_SIZE:
        return None
    (size,) = HEADER.unpack_from(buf)
    if size == 0 or size > limit:
        ctx.count("tcp_bad_frames", 1)
        raise SendError(f"{what}: bad reply frame length {size}")
    end = FRAME_HEADER_SIZE + size
    if len(buf) < end:
        return None
    return bytes(buf[FRAME_HEADER_SIZE:end]), len(buf) == end


class SocketRequestLine:
    """One exchange on a borrowed request connection, driven by a caller that never blocks
    (see :meth:`Requests.lend`).

    The caller writes with :meth:`flush` until it returns True (waiting for the socket to be
    writable between calls), then reads with :meth:`read` whenever the socket is readable,
    until it returns the reply; then, or when it gives up, it calls :meth:`release` once. Only
    one thread uses a line at a time.

    Attributes:
        what: names the exchange in error messages (``"request to ip:port"``).
        retry: True while a failure may mean that the peer closed the connection while it
            waited in the idle pool, before the request reached it: nothing of a reply has
            been read. The request may then be sent again another way (a blocking request
            dials once more in that case).
    """

    __slots__ = ("_owner", "_conn", "_frame", "_sent", "_buf", "_clean", "_done", "what",
                 "retry")

    def __init__(self, owner: Requests, conn: FrameConn, frame: bytes, what: str) -> None:
        self._owner = owner
        self._conn = conn
        if conn.greeting:
            frame = conn.greeting + frame
            conn.greeting = b""
        self.retry = True  # it waited in the idle pool, where the peer may have closed it
        self._frame = frame
        self._sent = 0
        self._buf = bytearray()
        self._clean = False
        self._done = False
        self.what = what

    def fileno(self) -> int:
        """The socket's file descriptor, to watch for readiness (-1 once released)."""
        return -1 if self._done else self._conn.sock.fileno()

    @property
    def written(self) -> bool:
        """True once the whole request has been written."""
        return self._sent == len(self._frame)

    def flush(self) -> bool:
        """Write as much of the request as the socket takes now; True once all is written.

        Raises:
            SendError: the connection broke (``retry`` says whether it was a stale one).
        """
        frame = self._frame
        sent = self._sent
        while sent < len(frame):
            try:
                n = self._conn.sock.send(memoryview(frame)[sent:])
            except (BlockingIOError, InterruptedError):
                break
            except (OSError, ValueError) as exc:
                raise self._failed(f"{self.what}: {exc}") from exc
            sent += n
        self._sent = sent
        if sent < len(frame):
            return False
        conn = self._conn
        conn.last_active = time.monotonic()
        conn.ctx.count("tcp_sent", 1)
        return True

    def read(self) -> bytes | None:
        """Read what the socket holds; return the reply frame once it is whole (None: not
        yet, or nothing to read now).

        Raises:
            SendError: the connection closed or broke before the whole reply, or the reply's
                frame length is malformed.
            ClusterClosed: the transport closed.
        """
        conn = self._conn
        ctx = conn.ctx
        buf = self._buf
        while True:
            try:
                chunk = conn.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return None
            except (OSError, ValueError) as exc:
                if ctx.is_closed():
                    raise ClusterClosed(f"{self.what}: transport {ctx.name} is closed") from exc
                raise self._failed(f"{self.what}: {exc}") from exc
            if not chunk:
                if ctx.is_closed():
                    raise ClusterClosed(f"{self.what}: transport {ctx.name} is closed")
                raise self._failed(f"{self.what}: connection closed by peer" if not buf else
                                   f"{self.what}: connection closed in the middle of the reply")
            buf += chunk
            self.retry = False
            whole = _reply_in(buf, ctx.max_frame_size, ctx, self.what)
            if whole is not None:
                reply, self._clean = whole
                return reply

    def _failed(self, message: str) -> SendError:
        if not self.retry:  # a stale idle connection is the borrower's to retry, not an error
            self._conn.ctx.count("send_errors", 1)
        return SendError(message)

    def release(self, clean: bool = True) -> None:
        """End the exchange (idempotent): the connection goes back to the idle pool if the
        reply was read whole and alone and ``clean`` is True, else it is closed."""
        if self._done:
            return
        self._done = True
        self._owner._give_back(self._conn, clean and self._clean)


class Requests:
    """Request connections of one socket transport; see the module docstring.

    Args:
        ctx: the context of the connections (limits, counter, closing).
        idle_timeout: idle connections unused this long are closed.
        dial: opens a connection (see :data:`Dial`).
        take_slot: takes a place in the dial budget for an address (or raises ConnectError).
        release: closes a connection's socket and gives its slot back.
        wake: called when a connection enters the idle pool while the I/O loop knows of no
            idle deadline (its last sweep found none), so that the loop, which sleeps long
            while it has nothing to sweep, learns of it.
    """

    def __init__(self, ctx: ConnContext, *, idle_timeout: float, dial: Dial,
                 take_slot: Callable[[str], DialSlot], release_slot: Callable[[DialSlot], None],
                 release: Callable[[FrameConn], None],
                 wake: Callable[[], None] = lambda: None) -> None:
        self._ctx = ctx
        self._wake = wake
        self._idle_timeout = idle_timeout
        self._dial = dial
        self._take_slot = take_slot
        self._release_slot = release_slot
        self._release = release
        self._lock = threading.Lock()  # guards the tables and the flag
        self._closed = False
        self._idle: dict[str, list[FrameConn]] = {}
        self._active: dict[FrameConn, None] = {}
        self._next_due: float | None = None  # the idle deadline the I/O loop sweeps by next

    def request(self, ip: str, port: int, key: str, data: bytes, timeout: float) -> bytes:
        """Write ``data`` as one frame to ``key`` and return the single reply frame.

        Raises:
            GossipTimeout: no whole reply within ``timeout`` seconds.
            ConnectError, SendError, ClusterClosed: the exchange failed.
        """
        ctx = self._ctx
        frame = HEADER.pack(len(data)) + data
        deadline = Deadline(timeout)
        what = f"request to {key}"
        ctx.count("requests", 1)
        retried = False
        while True:
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                slot = self._take_slot(key)
                try:
                    sock = self._dial(ip, port, key, deadline)
                except BaseException:
                    self._release_slot(slot)
                    raise
                conn = FrameConn(ctx, sock, key, ip, KIND_REQ, PREAMBLE_FRAMES)
                conn.slot = slot
            self._enter(conn, what)
            clean = False
            try:
                try:
                    conn.write_all(frame, deadline, what)
                except SendError as exc:
                    # a write failing on a reused connection means the peer closed it
                    raise _PeerClosed(str(exc)) from exc
                reply, clean = self._read_reply(conn, deadline, what)
                return reply
            except _PeerClosed as exc:
                if reused and not retried and not ctx.is_closed():
                    retried = True
                    continue
                ctx.count("send_errors", 1)
                raise SendError(str(exc)) from exc  # the public type, not the private marker
            finally:
                self._give_back(conn, clean)

    def _give_back(self, conn: FrameConn, clean: bool) -> None:
        """An exchange on ``conn`` ended: keep it idle if it was clean (and there is room),
        else close it."""
        key = conn.key
        wake = False
        with self._lock:
            self._active.pop(conn, None)
            keep = (clean and not self._closed
                    and len(self._idle.get(key, ())) < IDLE_PER_ADDR)
            if keep:
                conn.last_active = now = time.monotonic()
                self._idle.setdefault(key, []).append(conn)
                if self._next_due is None:
                    # The I/O loop knows of no idle deadline: tell it of this one. Otherwise it
                    # sweeps by the earlier one it knows, and learns of this one then (a
                    # connection lent and given back per request wakes no thread).
                    self._next_due = now + self._idle_timeout
                    wake = True
        if wake:
            self._wake()
        if not keep:
            conn.closed = True
            self._release(conn)

    def _enter(self, conn: FrameConn, what: str) -> None:
        """Count ``conn`` as in an exchange (ClusterClosed, and the connection closed, once
        the transport is closing)."""
        with self._lock:
            if self._closed:
                conn.closed = True
                self._release(conn)
                raise ClusterClosed(f"{what}: transport {self._ctx.name} is closed")
            self._active[conn] = None

    def lend(self, key: str, data: bytes) -> SocketRequestLine | None:
        """Lend an idle connection to ``key`` for one exchange whose request is ``data``,
        without blocking: None when no idle connection is held (see :meth:`prepare`).

        Raises:
            ClusterClosed: the transport is closing.
        """
        conn = self._take_idle(key)
        if conn is None:
            return None
        what = f"request to {key}"
        self._enter(conn, what)
        self._ctx.count("requests", 1)
        return SocketRequestLine(self, conn, HEADER.pack(len(data)) + data, what)

    def prepare(self, ip: str, port: int, key: str, timeout: float) -> None:
        """Dial a connection to ``key`` into the idle pool, unless one is idle there already
        (blocks up to ``timeout``: a worker thread calls it).

        Raises:
            ConnectError, ClusterClosed: the dial failed.
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self._ctx.name} is closed")
            if self._idle.get(key):
                return
        slot = self._take_slot(key)
        try:
            sock = self._dial(ip, port, key, Deadline(timeout))
        except BaseException:
            self._release_slot(slot)
            raise
        conn = FrameConn(self._ctx, sock, key, ip, KIND_REQ, PREAMBLE_FRAMES)
        conn.slot = slot
        self._enter(conn, f"request connection to {key}")
        self._give_back(conn, True)

    def _read_reply(self, conn: FrameConn, deadline: Deadline, what: str) -> tuple[bytes, bool]:
        """Read one frame from a request connection; return ``(frame, clean)``.

        ``clean`` is False when more bytes than the one frame arrived (the connection must
        then not be reused).
        """
        ctx = self._ctx
        limit = ctx.max_frame_size
        buf = bytearray()
        while True:
            whole = _reply_in(buf, limit, ctx, what)
            if whole is not None:
                return whole
            try:
                chunk = conn.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                try:
                    wait_fd(conn.sock, False, deadline.remaining(what))
                except GossipTimeout:  # a TimeoutError, hence an OSError: keep it as is
                    raise
                except (OSError, ValueError) as exc:
                    raise SendError(f"{what}: {exc}") from exc
                continue
            except (OSError, ValueError) as exc:
                if ctx.is_closed():
                    raise ClusterClosed(f"{what}: transport {ctx.name} is closed") from exc
                if not buf:
                    raise _PeerClosed(f"{what}: {exc}") from exc
                raise SendError(f"{what}: {exc}") from exc
            if not chunk:
                if ctx.is_closed():
                    raise ClusterClosed(f"{what}: transport {ctx.name} is closed")
                if not buf:
                    raise _PeerClosed(f"{what}: connection closed by peer")
                raise SendError(f"{what}: connection closed in the middle of the reply")
            buf += chunk

    def _take_idle(self, key: str) -> FrameConn | None:
        """Pop a live idle request connection to ``key``, closing stale ones."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
                if not idle:
                    del self._idle[key]
            idle_for = now - conn.last_active
            alive = idle_for < self._idle_timeout
            if alive and idle_for > PEEK_AFTER:
                # A connection used a moment ago is taken as it is (a closed one fails at once
                # and is replaced); one idle for longer is checked first.
                try:
                    # peek without blocking: b"" means the peer closed, data is unexpected
                    conn.sock.recv(1, socket.MSG_PEEK)
                    alive = False
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    alive = False
            if alive:
                return conn
            conn.closed = True
            self._release(conn)

    def sweep(self, now: float) -> float | None:
        """Close the idle connections unused for ``idle_timeout`` (counted ``tcp_idle_closed``);
        return when the next one left falls due (None: none is left)."""
        idle_limit = now - self._idle_timeout
        stale: list[FrameConn] = []
        oldest: float | None = None
        with self._lock:
            for key in list(self._idle):
                idle = self._idle[key]
                keep = [c for c in idle if c.last_active >= idle_limit]
                stale += [c for c in idle if c.last_active < idle_limit]
                if keep:
                    self._idle[key] = keep
                    first = min(c.last_active for c in keep)
                    oldest = first if oldest is None else min(oldest, first)
                else:
                    del self._idle[key]
            due = self._next_due = None if oldest is None else oldest + self._idle_timeout
        for conn in stale:
            self._ctx.count("tcp_idle_closed", 1)
            conn.closed = True
            self._release(conn)
        return due

    def idle_count(self) -> int:
        """Idle request connections held now."""
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def shut(self) -> tuple[list[FrameConn], list[FrameConn]]:
        """The transport closes: refuse new exchanges; return ``(active, idle)`` connections
        (the idle ones are forgotten; the active ones are closed by their requesters)."""
        with self._lock:
            self._closed = True
            active = list(self._active)
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        return active, idle
