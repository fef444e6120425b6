"""One TCP connection carrying frames, and its write path.

A :class:`FrameConn` owns its socket's write side: a buffer of queued frames, the lock that
guards it, and the flush. A writer appends its frame; if no other thread is writing, it writes
the buffer itself at once with a non-blocking ``send`` (no thread hand-off in the common case),
and frames queued meanwhile by other threads leave together in one system call. Frames that
follow each other closely (a sender's loop) are left to the I/O thread instead, which writes
them many to a system call. What the socket does not take is finished by the I/O thread when
the socket becomes writable (:meth:`FrameConn.flush` with ``on_io_thread=True``). A writer
whose frame does not fit in the buffer (``conn_buffer_size``) waits, up to its timeout, for
the peer to read: that is the back-pressure that paces a sender whose peer is slower, instead
of dropping what it accepted. Frames lost because a connection broke with them still buffered
are counted (``tcp_frames_lost``).

The read side's state (the bytes not yet parsed, when a partial frame began, whether the
preamble came) is kept here and used by the I/O loop alone (:mod:`.io_loop`).

A connection is given what it needs from its transport as a :class:`ConnContext` (the limits,
a counter, and three callables: ask the I/O loop to look at it again, drop it, trust its
admission ticket); it never holds the transport.

This module imports nothing from :mod:`gossip` but the errors, the counters' callables and
:mod:`gossip.transports`' base, admission and socket helpers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gossip.errors import ClusterClosed, GossipTimeout, MessageTooLarge, SendError, SendQueueFull
from gossip.transports._admission import DialSlot, Ticket
from gossip.transports._sockets import wait_fd
from gossip.transports.base import Deadline
from gossip.transports.tcp.frames import HEADER

__all__ = ["FrameConn", "ConnContext", "KIND_IN", "KIND_OUT", "KIND_REQ"]

_log = logging.getLogger("gossip.transports.socket")

KIND_IN: Final = "in"
"""Accepted; registered with the I/O loop's selector."""
KIND_OUT: Final = "out"
"""Dialed by a reliable send; pooled and registered."""
KIND_REQ: Final = "req"
"""Dialed by a request; never registered, owned by the requesting thread."""

WRITE_CHUNK: Final = 1024 * 1024  # at most this much is joined into one send() call
CORK_WINDOW: Final = 0.00005  # a frame queued this soon after the previous one waits for the I/O thread


@dataclass(frozen=True, slots=True)
class ConnContext:
    """What a :class:`FrameConn` is given by its transport.

    Attributes:
        name: the node's name, for logs.
        conn_buffer: bytes queued before writers wait (``conn_buffer_size``).
        io_timeout: the default wait of :meth:`FrameConn.send_frame` for room.
        max_frame_size: the largest frame sent.
        max_rejected: refused frames that close a connection (``max_rejected_frames``).
        count: ``count(name, n)`` adds to a transport counter.
        is_closed: True once the transport is closed.
        watch: asks the I/O loop to recompute what it watches on a connection (a pause, a
            resume, a write left unfinished).
        drop: closes a connection (the transport forgets it and closes it safely).
        trust: takes a ticket out of the untrusted admission counts.
    """

    name: str
    conn_buffer: int
    io_timeout: float
    max_frame_size: int
    max_rejected: int
    count: Callable[[str, int], None]
    is_closed: Callable[[], bool]
    watch: Callable[[FrameConn], None]
    drop: Callable[[FrameConn], None]
    trust: Callable[[Ticket], None]


class FrameConn:
    """A TCP connection carrying frames; implements :class:`gossip.transports.base.Connection`.

    Write side: ``wq`` holds queued bytes (whole frames, or the unwritten tail of a join),
    ``wbytes`` their total and ``wlens`` the length of each queued frame (to count what is lost
    if the connection breaks). ``writing`` is True while a thread or the I/O loop owns the
    flush. Read side (I/O thread only): ``rbuf`` holds bytes not yet parsed into frames.
    """

    __slots__ = (
        "ctx", "sock", "key", "ip", "kind", "cond", "wq", "wbytes", "wlens", "written",
        "writing", "want_write", "rbuf", "last_active", "closed", "paused", "events", "trusted",
        "partial_since", "greeted", "last_queued", "greeting", "ticket", "slot", "rejected",
        "accepted_at",
    )

    def __init__(self, ctx: ConnContext, sock: socket.socket, key: str, ip: str, kind: str,
                 greeting: bytes = b"") -> None:
        self.ctx = ctx
        self.sock = sock
        self.key = key  # "ip:port" of the peer (for dialed ones, the address dialed)
        self.ip = ip  # the peer's IP, for the per-source limit
        self.kind = kind
        self.cond = threading.Condition(threading.Lock())  # guards the write side
        self.wq: deque[bytes | memoryview] = deque()
        self.wbytes = 0
        self.wlens: deque[int] = deque()
        self.written = 0  # bytes of the first frame in wlens already written
        self.writing = False
        self.want_write = False  # the I/O loop is asked to finish the flush
        self.rbuf = bytearray()
        self.last_active = time.monotonic()
        self.closed = False
        self.paused = False
        self.events = 0  # the selector events currently registered (I/O thread only)
        self.trusted = kind != KIND_IN  # we dialed it: no pre-authentication limits
        self.partial_since = 0.0  # when the unfinished frame (or preamble) in rbuf began
        self.greeted = kind != KIND_IN  # the preamble has been read
        self.last_queued = 0.0  # when the last frame was queued (for corking)
        self.greeting = greeting  # the preamble, sent in front of the first frame (dialed conns)
        self.ticket: Ticket | None = None  # accepted: its place in the admission counts
        self.slot: DialSlot | None = None  # dialed: its place in the dial budget
        self.rejected = 0  # frames the engine refused
        self.accepted_at = self.last_active

    # ------------------------------------------------------------------ Connection interface

    @property
    def peer(self) -> str:
        """The remote ``"ip:port"`` of this connection."""
        return self.key

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Queue one length-prefixed frame on this connection; see :class:`Connection`.

        Raises:
            MessageTooLarge: ``data`` is longer than the transport's ``max_frame_size``.
            SendQueueFull: the connection's buffer stayed full for ``timeout`` seconds
                (``None``: the transport's ``io_timeout``; ``0``: do not wait).
            SendError: the connection is closed or broken.
            ClusterClosed: the transport is closed.
        """
        ctx = self.ctx
        if ctx.is_closed():
            raise ClusterClosed(f"transport {ctx.name} is closed")
        self.check_size(data)
        deadline = Deadline(ctx.io_timeout if timeout is None else timeout)
        try:
            self.queue(HEADER.pack(len(data)) + data, deadline, f"send to {self.key}")
        except SendError:
            ctx.count("send_errors", 1)
            raise

    def pause_reading(self) -> None:
        """Stop reading this connection (the I/O loop acts on it before its next read)."""
        if not self.paused:
            self.paused = True
            self.ctx.watch(self)

    def resume_reading(self) -> None:
        """Read this connection again, frames already buffered first (the I/O loop restarts
        its clocks: the time it was paused is neither idleness nor a trickle)."""
        if self.paused:
            self.paused = False
            self.ctx.watch(self)

    def mark_trusted(self) -> None:
        """The engine accepted a frame from this connection: lift the pre-authentication limits."""
        if not self.trusted:
            self.trusted = True
            if self.ticket is not None:
                self.ctx.trust(self.ticket)

    def mark_rejected(self) -> None:
        """The engine refused a frame from this connection (too many close it)."""
        self.rejected += 1
        ctx = self.ctx
        if self.rejected == ctx.max_rejected and not self.closed:
            ctx.count("tcp_rejected_frames_closed", 1)
            _log.debug("%s ! %s: %d frames refused; closing", ctx.name, self.key, self.rejected)
            ctx.drop(self)

    def close(self) -> None:
        """Close this connection (idempotent)."""
        self.ctx.drop(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("paused" if self.paused else "open")
        return f"<FrameConn {self.kind} {self.key} {state} queued={self.wbytes}>"

    # ------------------------------------------------------------------ the write path

    def check_size(self, data: bytes) -> None:
        """Raise :class:`MessageTooLarge` if ``data`` is over the frame size limit."""
        limit = self.ctx.max_frame_size
        if len(data) > limit:
            raise MessageTooLarge(
                f"frame to {self.key} is {len(data)} bytes, over max_frame_size {limit}")

    def queue(self, frame: bytes, deadline: Deadline, what: str) -> None:
        """Append ``frame`` (length prefix included) to the buffer and write it if nobody else
        is writing.

        Waits (up to ``deadline``) while the buffer is over its limit; a frame larger than the
        limit is queued alone once the buffer is empty.

        Raises:
            SendQueueFull: no room before the deadline (the frame was not queued).
            SendError: the connection is closed.
        """
        n = len(frame)
        waited = False
        ctx = self.ctx
        limit = ctx.conn_buffer
        with self.cond:
            while True:
                if self.closed:
                    raise SendError(f"{what}: connection closed")
                if not self.wbytes or self.wbytes + n <= limit:
                    break
                if not waited:
                    waited = True
                    ctx.count("tcp_send_waits", 1)  # a writer paced by a slower reader
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    left = 0.0
                if left is not None and left <= 0:
                    ctx.count("tcp_buffer_full", 1)
                    raise SendQueueFull(
                        f"{what}: {self.wbytes} bytes already queued for a peer that is not "
                        f"reading fast enough (connection buffer {limit} bytes)")
                self.cond.wait(left)
            if self.greeting:
                frame = self.greeting + frame
                n = len(frame)
                self.greeting = b""
            self.wq.append(frame)
            self.wlens.append(n)
            self.wbytes += n
            now = time.monotonic()
            flush = defer = False
            if not self.writing:  # else the thread (or the I/O loop) writing takes it along
                self.writing = True
                if now - self.last_queued < CORK_WINDOW:
                    # Frames follow each other closely (a sender's loop): let the I/O thread
                    # write them, many to a system call, while this thread goes on queueing.
                    self.want_write = defer = True
                else:
                    flush = True  # a lone frame leaves at once, with no hand-off
            self.last_queued = now
        ctx.count("tcp_sent", 1)
        if flush:
            self.flush(False)
        elif defer:
            ctx.watch(self)

    def flush(self, on_io_thread: bool) -> None:
        """Write the buffer; the caller owns the flush (``writing`` is set).

        What the socket does not take is left to the I/O loop (``want_write``).
        """
        sock = self.sock
        cond = self.cond
        while True:
            with cond:
                if self.closed:
                    self.writing = False
                    cond.notify_all()
                    return
                if not self.wq:
                    self.writing = False
                    if self.want_write:
                        self.want_write = False
                        if not on_io_thread:
                            self.ctx.watch(self)
                    cond.notify_all()
                    return
                if len(self.wq) == 1:
                    data: bytes | memoryview = self.wq.popleft()
                else:
                    parts = []
                    size = 0
                    while self.wq and size < WRITE_CHUNK:
                        part = self.wq.popleft()
                        parts.append(part)
                        size += len(part)
                    data = b"".join(parts)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (OSError, ValueError) as exc:
                _log.debug("%s ! write to %s failed: %s", self.ctx.name, self.key, exc)
                with cond:
                    self.wq.appendleft(data)  # counted as lost by the drop
                self.ctx.drop(self)
                return
            with cond:
                if self.closed:  # dropped meanwhile: what was queued is already counted lost
                    self.writing = False
                    cond.notify_all()
                    return
                self.wbytes -= sent
                self._written_locked(sent)
                self.last_active = time.monotonic()
                if sent < len(data):
                    self.wq.appendleft(memoryview(data)[sent:])
                    if not self.want_write:
                        self.want_write = True
                        if not on_io_thread:
                            self.ctx.watch(self)
                    cond.notify_all()
                    return  # writing stays True: the I/O loop finishes on writability
                cond.notify_all()
                if not self.wq and not self.want_write:
                    self.writing = False  # all written, nothing left: done, without a lock more
                    return

    def _written_locked(self, sent: int) -> None:
        """Retire the frame lengths covered by ``sent`` more written bytes."""
        lens = self.wlens
        done = self.written + sent
        while lens and done >= lens[0]:
            done -= lens.popleft()
        self.written = done

    def write_all(self, frame: bytes, deadline: Deadline, what: str) -> None:
        """Write all of ``frame`` now, within ``deadline`` (request connections, which are
        not registered with the I/O loop and are used by one thread at a time).

        Raises:
            GossipTimeout: not written in time.
            SendError: the write failed.
        """
        if self.greeting:
            frame = self.greeting + frame
            self.greeting = b""
        view = memoryview(frame)
        sock = self.sock
        try:
            while view:
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent:
                    view = view[sent:]
                    continue
                wait_fd(sock, True, deadline.remaining(what))
        except GossipTimeout:
            raise
        except (OSError, ValueError) as exc:
            raise SendError(f"{what}: {exc}") from exc
        self.last_active = time.monotonic()
        self.ctx.count("tcp_sent", 1)

    def discard_queued(self) -> None:
        """Forget what is queued, mark the connection closed and fail waiting writers; count
        the frames lost (``tcp_frames_lost``)."""
        with self.cond:
            lost = len(self.wlens)
            self.wlens.clear()
            self.wq.clear()
            self.wbytes = 0
            self.written = 0
            self.writing = False
            self.closed = True
            self.cond.notify_all()
        if lost:
            self.ctx.count("tcp_frames_lost", lost)
            _log.debug("%s ! %d queued frames to %s lost with the connection", self.ctx.name,
                       lost, self.key)

    def fail_writers(self) -> None:
        """Mark the connection closed and wake every waiting writer (the transport closes)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
