"""A TCP connection dedicated to one stream (:class:`StreamSocket`).

A stream connection leaves the I/O loop as soon as its preamble says "stream" (or is dialed for
one): its own reader and writer threads use it directly, with blocking calls under timeouts.
It is given two callables by its transport: ``on_closed`` (the transport forgets it and gives
its admission ticket or dial slot back) and ``trust`` (the admission counts of a ticket).

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`'
base, admission and socket helpers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Final

from gossip.errors import GossipTimeout, MessageTooLarge, SendError, TransportError
from gossip.transports._admission import DialSlot, Ticket
from gossip.transports._sockets import shutdown, wait_fd
from gossip.transports.base import Deadline
from gossip.transports.tcp.frames import FRAME_HEADER_SIZE, HEADER

__all__ = ["StreamSocket"]

STREAM_READ_AHEAD: Final = 1024 * 1024  # a stream's read buffer, once grown for large frames
JOIN_TIMEOUT: Final = 5.0


class StreamSocket:
    """A TCP connection dedicated to one stream; implements :class:`StreamConn`.

    The socket is non-blocking; every call waits with ``poll`` against its own timeout, so one
    reader thread and one writer thread may use it at once.

    Reads go into one buffer owned by the connection and reused for every frame (grown to the
    largest frame seen, at most :attr:`max_frame_size`): a frame is read straight into it, small
    frames arrive many per ``recv_into``, and :meth:`recv_frame` returns a view of the frame in
    that buffer, valid until the next call. No frame costs an allocation, a copy or the page
    faults of fresh memory. A write sends the length prefix and the frame in one ``sendmsg``.
    """

    _INITIAL_BUFFER = 64 * 1024

    def __init__(
        self, sock: socket.socket, peer: str, ip: str, max_frame_size: int, *,
        on_closed: Callable[[StreamSocket], None], trust: Callable[[Ticket], None],
        leftover: bytes = b"", accepted: bool = False, preauth_max_frame_size: int = 0,
        ticket: Ticket | None = None, slot: DialSlot | None = None, greeting: bytes = b"",
    ) -> None:
        self._on_closed = on_closed
        self._trust = trust
        self.sock = sock
        self._peer = peer
        self.ip = ip
        self.accepted = accepted  # True for streams this transport accepted (per-source slot)
        self.ticket = ticket  # accepted: its place in the admission counts
        self.slot = slot  # dialed: its place in the dial budget
        self.max_frame_size = max_frame_size
        # An accepted stream may announce only small frames until the stream layer has
        # authenticated its opening (mark_trusted): a stranger cannot make us allocate much.
        self._limit = min(preauth_max_frame_size or max_frame_size, max_frame_size)
        self._buf = bytearray(max(self._INITIAL_BUFFER, len(leftover)))
        self._buf[:len(leftover)] = leftover
        self._start = 0  # first unread byte in _buf
        self._end = len(leftover)  # end of the bytes read into _buf
        self._rlock = threading.RLock()
        self._wlock = threading.RLock()
        self._closed = False
        self._write_closed = False
        self._eof = False
        self.greeting = greeting  # a dialed stream's preamble, sent in front of its first frame

    @property
    def peer(self) -> str:
        """The remote ``"ip:port"``."""
        return self._peer

    def mark_trusted(self) -> None:
        """Lift the pre-authentication frame limit: the stream's opening was authenticated."""
        self._limit = self.max_frame_size
        if self.ticket is not None:
            self._trust(self.ticket)

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Write one frame; see :meth:`StreamConn.send_frame`.

        Raises:
            MessageTooLarge: ``data`` is over :attr:`max_frame_size`.
            GossipTimeout: not written within ``timeout`` (the connection is closed).
            SendError: the connection is closed or broken.
        """
        n = len(data)
        if n > self.max_frame_size:
            raise MessageTooLarge(
                f"stream frame to {self._peer} is {n} bytes, over the limit {self.max_frame_size}")
        what = f"stream write to {self._peer}"
        with self._wlock:
            if self._closed or self._write_closed:
                raise SendError(f"{what}: the stream is closed for writing")
            sock = self.sock
            header = HEADER.pack(n)
            if self.greeting:
                header = self.greeting + header
                self.greeting = b""
            hn = len(header)
            try:
                try:
                    sent = sock.sendmsg((header, data))
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < hn + n:
                    deadline = Deadline(timeout)
                    if sent < hn:
                        self._write_all(memoryview(header)[sent:], deadline, what)
                        sent = hn
                    self._write_all(memoryview(data).cast("B")[sent - hn:], deadline, what)
            except GossipTimeout:
                self.close()
                raise
            except (OSError, ValueError) as exc:
                self.close()
                raise SendError(f"{what}: {exc}") from exc

    def _write_all(self, view: memoryview, deadline: Deadline, what: str) -> None:
        sock = self.sock
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent:
                view = view[sent:]
                continue
            if self._closed:
                raise SendError(f"{what}: the stream is closed")
            wait_fd(sock, True, deadline.remaining(what))

    def recv_frame(self, timeout: float | None = None) -> memoryview | None:
        """Return the next frame, ``None`` after the peer's clean half-close.

        The frame is a view into the connection's read buffer, valid until the next call.

        Raises:
            GossipTimeout: no whole frame within ``timeout`` (bytes read so far are kept).
            TransportError: the connection broke, was closed, or announced an oversized frame.
        """
        what = f"stream read from {self._peer}"
        deadline: Deadline | None = None
        with self._rlock:
            while True:
                start, have = self._start, self._end - self._start
                if have >= FRAME_HEADER_SIZE:
                    (size,) = HEADER.unpack_from(self._buf, start)
                    if size > self._limit:
                        self.close()
                        raise TransportError(
                            f"{what}: the peer announced a frame of {size} bytes, over the "
                            f"limit {self._limit}")
                    need = FRAME_HEADER_SIZE + size
                    if have >= need:
                        self._start = start + need
                        if self._start == self._end:
                            self._start = self._end = 0
                        return memoryview(self._buf)[start + FRAME_HEADER_SIZE:start + need]
                else:
                    need = FRAME_HEADER_SIZE
                if self._eof:
                    if have:
                        raise TransportError(f"{what}: the connection ended inside a frame")
                    return None
                self._make_room(need)
                if deadline is None:
                    deadline = Deadline(timeout)
                self._fill(deadline, what)

    def _make_room(self, need: int) -> None:
        """Make room in the buffer for a frame of ``need`` bytes from the unread start."""
        buf = self._buf
        start, end = self._start, self._end
        if start + need <= len(buf) and end < len(buf):
            return
        have = end - start
        if need <= len(buf):
            buf[:have] = buf[start:end]  # move the unread bytes (a partial frame) to the front
        else:
            # A new buffer (not a resize: views of the last frame may still be held).
            # Room for a few frames of this size too: one large read costs far less than
            # several small ones (and each read lets the peer's window move once).
            grown = bytearray(max(need, min(4 * need, STREAM_READ_AHEAD)))
            grown[:have] = buf[start:end]
            self._buf = grown
        self._start, self._end = 0, have

    def _fill(self, deadline: Deadline, what: str) -> None:
        """Read what the socket has into the free end of the buffer (waiting up to the deadline)."""
        view = memoryview(self._buf)
        try:
            while True:
                if self._closed:
                    raise TransportError(f"{what}: the stream is closed")
                try:
                    n = self.sock.recv_into(view[self._end:])
                except (BlockingIOError, InterruptedError):
                    try:
                        wait_fd(self.sock, False, deadline.remaining(what))
                    except GossipTimeout:
                        raise
                    except (OSError, ValueError) as exc:
                        raise TransportError(f"{what}: {exc}") from exc
                    continue
                except (OSError, ValueError) as exc:
                    raise TransportError(f"{what}: {exc}") from exc
                if not n:
                    self._eof = True
                else:
                    self._end += n
                return
        finally:
            view.release()

    def close_write(self) -> None:
        """Half-close: the peer reads the rest, then the end of the stream."""
        with self._wlock:
            if not self._write_closed and not self._closed:
                self._write_closed = True
                shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        """Close the connection at once (idempotent); blocked calls fail fast."""
        if self._closed:
            return
        self._closed = True
        shutdown(self.sock)  # fails a blocked read or write at once
        # Close the descriptor only once no call is inside it, so that a number reused by a
        # new socket is never polled by a late reader or writer.
        got_r = self._rlock.acquire(timeout=JOIN_TIMEOUT)
        got_w = self._wlock.acquire(timeout=JOIN_TIMEOUT)
        try:
            self._on_closed(self)
        finally:
            if got_w:
                self._wlock.release()
            if got_r:
                self._rlock.release()

    def __repr__(self) -> str:
        return f"<StreamSocket {self._peer} {'closed' if self._closed else 'open'}>"
