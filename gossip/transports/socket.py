"""UDP datagrams, length-prefixed TCP frames and TCP streams on one ``ip:port``.

:class:`SocketTransport` binds a UDP socket and a TCP listener on the same address (IPv4 or
IPv6) and runs exactly two threads:

- ``gossip-<name>-udp-reader`` drains the UDP socket on every wake-up (up to a burst of
  datagrams per system call round) and hands the whole burst to ``on_packets`` in one call. The
  socket's buffers are enlarged (``recv_buffer_size``, ``send_buffer_size``; the kernel caps
  them, and :attr:`SocketTransport.stats` shows what was granted), and on Linux the kernel's
  own count of datagrams dropped for want of buffer space (``SO_RXQ_OVFL``) is read with the
  datagrams, so a loss in the kernel is counted like any other (``udp_kernel_drops``).
- ``gossip-<name>-tcp-io`` runs one :mod:`selectors` loop over the listener, every accepted
  connection and every pooled outgoing connection. It reads non-blockingly into a
  per-connection buffer and emits every whole frame of one read as one batch (a frame is a
  4-byte big-endian length, then the data), and it finishes writes that the socket could not
  take at once.

Every TCP connection starts with a 4-byte preamble naming what it carries: frames (pooled and
request connections) or one stream (:meth:`SocketTransport.dial_stream`). An accepted stream
connection leaves the selector and is handed to ``on_stream``.

Writes are buffered per connection (:class:`_Conn`). A writer appends its frame; if no other
thread is writing, it writes the buffer itself at once with a non-blocking ``send`` (no thread
hand-off in the common case), and frames queued meanwhile by other threads leave together in one
system call. What the socket does not take is finished by the I/O thread when the socket becomes
writable. A writer whose frame does not fit in the connection's buffer (``conn_buffer_size``)
waits, up to its timeout, for the peer to read: that is the back-pressure that paces a sender
whose peer is slower, instead of dropping what it accepted. Frames lost because a connection
broke with them still buffered are counted (``tcp_frames_lost``).

Reading can be paused per connection (:meth:`_Conn.pause_reading`): the I/O thread then stops
reading it, the kernel buffers fill, and the peer's writers wait in turn.

Limits against hostile peers, all counted when they act, kept in
:class:`gossip.transports._admission.Admission` (shared with the WebSocket transport): at most
``max_connections`` accepted connections, of which ``reserved_for_members`` only the hosts of
known members may take, and ``max_connections_per_source`` per remote IP. A connection is
*untrusted* until the engine accepted one of its frames (:meth:`_Conn.mark_trusted`); until
then it may announce frames of at most ``preauth_max_frame_size`` bytes, at most
``max_untrusted_per_source`` such connections per remote IP are held (members' hosts
excepted), and it must become trusted within ``preauth_timeout``. The bytes untrusted connections hold
are bounded per remote IP (``preauth_buffer_per_source``) and in all
(``preauth_buffer_limit``): past either, the connection that holds the most is closed. A
connection whose frames the engine refused ``max_rejected_frames`` times
(:meth:`_Conn.mark_rejected`) is closed. A frame (or the preamble) must arrive whole within
``frame_timeout`` of its first byte, however slowly its bytes trickle in; idle connections are
closed after ``idle_timeout``, idle request connections included. Dials to members' hosts and
to any other hosts have separate budgets, each capped per host
(:class:`~gossip.transports._admission.DialBudget`).

``request()`` uses connections that are *not* registered with the selector: the calling thread
writes the request and reads the single reply itself, against one deadline, so a reply is never
mistaken for an unsolicited frame. After a clean exchange the connection goes back to a small
per-address idle pool.

This module moves bytes only; it imports nothing from :mod:`gossip` but the errors and
:mod:`gossip.transports.base`.
"""

from __future__ import annotations

import errno
import logging
import select
import selectors
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from gossip.counters import Counters
from gossip.transports._admission import Admission, DialBudget, DialSlot, MemberCheck, Ticket
from gossip.errors import (
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    MessageTooLarge,
    PacketTooLarge,
    SendError,
    SendQueueFull,
    TransportError,
)
from gossip.transports.base import (
    Deadline,
    Incoming,
    OnPackets,
    OnStream,
    StreamConn,
    format_addr,
    map_errors,
    split_host_port,
)

__all__ = ["SocketTransport", "FRAME_HEADER_SIZE", "PREAMBLE_FRAMES", "PREAMBLE_STREAM"]

_log = logging.getLogger("gossip.transports.socket")

FRAME_HEADER_SIZE: Final = 4
"""Size of the big-endian length prefix of a TCP frame."""
PREAMBLE_FRAMES: Final = b"\xc5G\x01F"
"""First bytes of a connection that carries frames (pooled and request connections)."""
PREAMBLE_STREAM: Final = b"\xc5G\x01S"
"""First bytes of a connection dedicated to one stream."""
_PREAMBLE_SIZE = 4
_HEADER = struct.Struct(">I")
_READ_CHUNK = 256 * 1024
_STREAM_READ_AHEAD = 1024 * 1024  # a stream's read buffer, once grown for large frames
_WRITE_CHUNK = 1024 * 1024  # at most this much is joined into one send() call
_CORK_WINDOW = 0.00005  # a frame queued this soon after the previous one waits for the I/O thread
_UDP_RECV_SIZE = 65535
_UDP_BURST = 256  # datagrams read per wake-up before the loop looks at its stop flag again
_REQUEST_IDLE_PER_ADDR = 4
_PEEK_AFTER = 1.0  # an idle request connection unused this long is checked before reuse
_BIND_ATTEMPTS = 10
_TICK = 0.5  # the I/O loop's longest sleep: bounds how late idle and frame deadlines act
_JOIN_TIMEOUT = 5.0
_ADDR_CACHE_MAX = 4096
# SO_RXQ_OVFL (Linux 2.6.33+): the kernel reports, with each datagram, how many it dropped.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40) if sys.platform.startswith("linux") else None
_OVFL_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0

_LISTENER = "listener"
_WAKE = "wake"
_KIND_IN = "in"  # accepted; registered with the selector
_KIND_OUT = "out"  # dialed by send(reliable=True); pooled and registered
_KIND_REQ = "req"  # dialed by request(); never registered, owned by the caller


class _PeerClosed(SendError):
    """The peer closed a connection before sending any reply byte (a stale pooled conn)."""


def _wait_fd(sock: socket.socket, write: bool, timeout: float | None) -> None:
    """Block until ``sock`` is writable (or readable) or ``timeout`` passes."""
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, "socket is closed")
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
    else:  # pragma: no cover - platforms without poll()
        if write:
            select.select([], [fd], [fd], timeout)
        else:
            select.select([fd], [], [fd], timeout)


def _shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _set_buffer(sock: socket.socket, option: int, size: int) -> int:
    """Ask for a socket buffer of ``size`` bytes; return what the kernel granted."""
    if size > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:  # pragma: no cover - every platform we run on answers this
        return 0


class _Conn:
    """A TCP connection carrying frames; implements :class:`gossip.transports.base.Connection`.

    Write side: ``wq`` holds queued bytes (whole frames, or the unwritten tail of a join),
    ``wbytes`` their total and ``wlens`` the length of each queued frame (to count what is lost
    if the connection breaks). ``writing`` is True while a thread or the I/O loop owns the
    flush. Read side (I/O thread only): ``rbuf`` holds bytes not yet parsed into frames.
    """

    __slots__ = (
        "_transport", "sock", "key", "ip", "kind", "cond", "wq", "wbytes", "wlens", "written",
        "writing", "want_write", "rbuf", "last_active", "closed", "paused", "events", "trusted",
        "partial_since", "greeted", "last_queued", "greeting", "ticket", "slot", "rejected",
        "accepted_at",
    )

    def __init__(
        self, transport: SocketTransport, sock: socket.socket, key: str, ip: str, kind: str
    ) -> None:
        self._transport = transport
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
        self.trusted = kind != _KIND_IN  # we dialed it: no pre-authentication limits
        self.partial_since = 0.0  # when the unfinished frame (or preamble) in rbuf began
        self.greeted = kind != _KIND_IN  # the preamble has been read
        self.last_queued = 0.0  # when the last frame was queued (for corking)
        self.greeting = b""  # the preamble, sent in front of the first frame (dialed conns)
        self.ticket: Ticket | None = None  # accepted: its place in the admission counts
        self.slot: DialSlot | None = None  # dialed: its place in the dial budget
        self.rejected = 0  # frames the engine refused
        self.accepted_at = self.last_active

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
        self._transport._send_on(self, data, timeout)

    def pause_reading(self) -> None:
        """Stop reading this connection (the I/O loop acts on it before its next read)."""
        if not self.paused:
            self.paused = True
            self._transport._request_update(self)

    def resume_reading(self) -> None:
        """Read this connection again, frames already buffered first."""
        if self.paused:
            self.paused = False
            self._transport._request_update(self)

    def mark_trusted(self) -> None:
        """The engine accepted a frame from this connection: lift the pre-authentication limits."""
        if not self.trusted:
            self._transport._trust(self)

    def mark_rejected(self) -> None:
        """The engine refused a frame from this connection (too many close it)."""
        self._transport._rejected(self)

    def close(self) -> None:
        """Close this connection (idempotent)."""
        self._transport._drop(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("paused" if self.paused else "open")
        return f"<_Conn {self.kind} {self.key} {state} queued={self.wbytes}>"


class _StreamSocket:
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
        self, transport: SocketTransport, sock: socket.socket, peer: str, ip: str,
        max_frame_size: int, leftover: bytes = b"", accepted: bool = False,
        preauth_max_frame_size: int = 0, ticket: Ticket | None = None,
        slot: DialSlot | None = None,
    ) -> None:
        self._transport = transport
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
        self.greeting = b""  # a dialed stream's preamble, sent in front of its first frame

    @property
    def peer(self) -> str:
        """The remote ``"ip:port"``."""
        return self._peer

    def mark_trusted(self) -> None:
        """Lift the pre-authentication frame limit: the stream's opening was authenticated."""
        self._limit = self.max_frame_size
        if self.ticket is not None:
            self._transport._admission.trust(self.ticket)

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
            header = _HEADER.pack(n)
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
            _wait_fd(sock, True, deadline.remaining(what))

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
                    (size,) = _HEADER.unpack_from(self._buf, start)
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
            grown = bytearray(max(need, min(4 * need, _STREAM_READ_AHEAD)))
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
                        _wait_fd(self.sock, False, deadline.remaining(what))
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
                _shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        """Close the connection at once (idempotent); blocked calls fail fast."""
        if self._closed:
            return
        self._closed = True
        _shutdown(self.sock)  # fails a blocked read or write at once
        # Close the descriptor only once no call is inside it, so that a number reused by a
        # new socket is never polled by a late reader or writer.
        got_r = self._rlock.acquire(timeout=_JOIN_TIMEOUT)
        got_w = self._wlock.acquire(timeout=_JOIN_TIMEOUT)
        try:
            self._transport._stream_closed(self)
        finally:
            if got_w:
                self._wlock.release()
            if got_r:
                self._rlock.release()

    def __repr__(self) -> str:
        return f"<_StreamSocket {self._peer} {'closed' if self._closed else 'open'}>"


class _Waker:
    """A socketpair whose read end wakes a selector loop."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def wake(self) -> None:
        try:
            self.w.send(b"\0")
        except OSError:  # buffer full (already awake) or closed
            pass

    def drain(self) -> None:
        try:
            while self.r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.r.close()
        self.w.close()


class SocketTransport:
    """UDP + TCP transport bound on one ``ip:port``; see the module docstring.

    Args:
        bind_addr: ``"ip:port"`` or ``"[v6]:port"`` to bind; port 0 picks a port free for
            both UDP and TCP.
        advertise_addr: the address peers should use, if not the bound one.
        udp: False (force-reliable) opens no UDP socket; best-effort sends then use TCP.
        max_udp_size: largest datagram :meth:`send` accepts (bigger: :class:`MessageTooLarge`).
        max_frame_size: largest TCP frame sent or accepted; a bigger incoming length prefix
            closes that connection.
        max_stream_frame_size: largest frame on a stream connection.
        dial_timeout: seconds allowed to establish a TCP connection.
        io_timeout: default seconds a reliable send waits for room in a full buffer.
        name: node name used in thread names (``gossip-<name>-udp-reader``) and logs.
        idle_timeout: pooled, accepted and idle request connections unused this long are closed.
        conn_buffer_size: bytes queued per connection before writers wait for the peer.
        recv_buffer_size, send_buffer_size: ``SO_RCVBUF``/``SO_SNDBUF`` asked for the UDP
            socket (0 keeps the system default).
        max_connections: accepted connections beyond this many are closed at once.
        max_connections_per_source: accepted connections per remote IP beyond this many are
            closed at once.
        preauth_max_frame_size: the largest frame an accepted connection may announce before
            the engine has accepted one of its frames.
        preauth_buffer_limit: bytes all such connections together may hold buffered.
        frame_timeout: seconds within which a frame must arrive whole once it has begun.
        listen: False binds nothing at all (no TCP listener, no UDP socket): the transport only
            dials, and best-effort sends travel as TCP frames (a node that listens on WebSocket
            only reaches UDP/TCP peers this way).
        preauth_timeout: an accepted connection must become trusted within this long.
        max_rejected_frames: an accepted or pooled connection is closed once the engine
            refused this many of its frames.
        max_untrusted_per_source: untrusted accepted connections per remote IP (members'
            hosts excepted).
        preauth_buffer_per_source: bytes the untrusted connections of one remote IP may hold.
        reserved_for_members: of ``max_connections``, slots only members' hosts may take.
        max_member_dials, max_member_dials_per_host: connections dialed to members' hosts, in
            all and per host.
        max_other_dials, max_other_dials_per_host: connections dialed to other hosts, in all
            and per host.
        member_check: ``member_check(host)`` tells whether ``host`` is a known member's
            (see :mod:`gossip.transports._admission`); None: accepted sources are strangers,
            dialed hosts members.

    Attributes are read through :attr:`local_addr`, :attr:`advertise_addr` and :attr:`stats`.
    """

    def __init__(
        self,
        bind_addr: str,
        *,
        advertise_addr: str = "",
        udp: bool = True,
        max_udp_size: int = 1400,
        max_frame_size: int = 4 * 1024 * 1024,
        max_stream_frame_size: int = 8 * 1024 * 1024,
        dial_timeout: float = 2.0,
        io_timeout: float = 2.0,
        name: str = "node",
        idle_timeout: float = 60.0,
        conn_buffer_size: int = 4 * 1024 * 1024,
        recv_buffer_size: int = 4 * 1024 * 1024,
        send_buffer_size: int = 1024 * 1024,
        max_connections: int = 1024,
        max_connections_per_source: int = 64,
        preauth_max_frame_size: int = 1024 * 1024,
        preauth_buffer_limit: int = 64 * 1024 * 1024,
        frame_timeout: float = 10.0,
        listen: bool = True,
        preauth_timeout: float = 10.0,
        max_rejected_frames: int = 16,
        max_untrusted_per_source: int = 8,
        preauth_buffer_per_source: int = 8 * 1024 * 1024,
        reserved_for_members: int = 0,
        max_member_dials: int = 1024,
        max_member_dials_per_host: int = 256,
        max_other_dials: int = 64,
        max_other_dials_per_host: int = 4,
        member_check: MemberCheck | None = None,
    ) -> None:
        self._bind_ip, self._bind_port, self._family = split_host_port(bind_addr)
        self._listen = listen
        udp = udp and listen
        if advertise_addr:
            split_host_port(advertise_addr)  # validate early
        if max_udp_size <= 0 or max_udp_size > _UDP_RECV_SIZE:
            raise ValueError(f"max_udp_size must be in 1..{_UDP_RECV_SIZE}, got {max_udp_size}")
        for label, size in (("max_frame_size", max_frame_size),
                            ("max_stream_frame_size", max_stream_frame_size)):
            if size <= 0 or size >= 1 << 32:
                raise ValueError(f"{label} must be in 1..2**32-1, got {size}")
        for label, value in (
            ("dial_timeout", dial_timeout),
            ("io_timeout", io_timeout),
            ("idle_timeout", idle_timeout),
            ("frame_timeout", frame_timeout),
            ("preauth_timeout", preauth_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        for label, count in (("conn_buffer_size", conn_buffer_size),
                             ("max_connections", max_connections),
                             ("max_connections_per_source", max_connections_per_source),
                             ("preauth_max_frame_size", preauth_max_frame_size),
                             ("preauth_buffer_limit", preauth_buffer_limit),
                             ("max_rejected_frames", max_rejected_frames)):
            if count < 1:
                raise ValueError(f"{label} must be >= 1, got {count}")
        self._advertise = advertise_addr
        self._use_udp = udp
        self.max_udp_size = max_udp_size
        self.max_frame_size = max_frame_size
        self.max_stream_frame_size = max_stream_frame_size
        self._dial_timeout = dial_timeout
        self._io_timeout = io_timeout
        self._name = name
        self._idle_timeout = idle_timeout
        self._conn_buffer = conn_buffer_size
        self._rcvbuf_ask = recv_buffer_size
        self._sndbuf_ask = send_buffer_size
        self._preauth_frame = min(preauth_max_frame_size, max_frame_size)
        self._frame_timeout = frame_timeout
        self._preauth_timeout = preauth_timeout
        self._max_rejected = max_rejected_frames
        self._admission = Admission(
            max_connections=max_connections, max_per_source=max_connections_per_source,
            reserved_for_members=reserved_for_members,
            max_untrusted_per_source=max_untrusted_per_source,
            preauth_bytes=preauth_buffer_limit,
            preauth_bytes_per_source=min(preauth_buffer_per_source, preauth_buffer_limit),
            is_member=member_check)
        self._dials = DialBudget(
            max_members=max_member_dials, max_per_member_host=max_member_dials_per_host,
            max_others=max_other_dials, max_per_other_host=max_other_dials_per_host,
            is_member=member_check)

        self._lock = threading.Lock()  # guards every table below and the flags
        self._started = False
        self._closed = False
        self._readers_done = False
        self._stop = threading.Event()
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._local_addr = ""
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._tcp_waker: _Waker | None = None
        self._udp_waker: _Waker | None = None
        self._threads: list[threading.Thread] = []
        self._accepted: dict[_Conn, None] = {}
        self._out: dict[str, _Conn] = {}
        self._pending_add: list[_Conn] = []  # dialed conns the I/O loop must register
        self._pending_update: list[_Conn] = []  # conns whose read/write interest changed
        self._to_close: list[_Conn] = []  # registered conns the I/O loop must close
        self._req_idle: dict[str, list[_Conn]] = {}
        self._req_active: dict[_Conn, None] = {}
        self._streams: dict[_StreamSocket, None] = {}
        self._addr_cache: dict[tuple[Any, ...], str] = {}
        self._udp_view = memoryview(bytearray(_UDP_RECV_SIZE))  # the UDP reader's only
        self._kernel_drops = 0
        self._buffers = (0, 0)  # SO_RCVBUF, SO_SNDBUF granted to the UDP socket
        self._counters = Counters()
        self._counter_names = (
                "udp_received",
                "udp_sent",
                "udp_too_large",
                "udp_send_buffer_full",
                "udp_kernel_drops",
                "udp_rcvbuf",
                "udp_sndbuf",
                "tcp_received",
                "tcp_sent",
                "tcp_accepts",
                "tcp_rejected",
                "tcp_rejected_per_source",
                "tcp_rejected_reserved_for_members",
                "tcp_untrusted_refused",
                "tcp_untrusted_per_source_refused",
                "tcp_preauth_timeouts",
                "tcp_preauth_buffer_evicted",
                "tcp_rejected_frames_closed",
                "tcp_dial_refused_members",
                "tcp_dial_refused_member_host",
                "tcp_dial_refused_others",
                "tcp_dial_refused_other_host",
                "tcp_dials",
                "tcp_bad_frames",
                "tcp_bad_preamble",
                "tcp_preauth_refused",
                "tcp_frame_timeouts",
                "tcp_idle_closed",
                "tcp_frames_lost",
                "tcp_buffer_full",
                "tcp_send_waits",
                "tcp_paused",
                "requests",
                "streams_dialed",
                "streams_accepted",
                "streams_refused",
                "send_errors",
                "callback_errors",
                "reader_errors",
            )
        self._addrs: dict[str, tuple[str, int, str, str]] = {}  # send address -> parsed

    # ------------------------------------------------------------------ public API

    @property
    def local_addr(self) -> str:
        """The bound ``"ip:port"`` (the real port if 0 was asked); ``""`` before :meth:`start`."""
        return self._local_addr

    @property
    def advertise_addr(self) -> str:
        """The address to advertise to peers: ``advertise_addr`` if given, else :attr:`local_addr`."""
        return self._advertise or self._local_addr

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Name the link a packet takes, for the engine's counters: ``"tcp"`` or ``"udp"``."""
        return "tcp" if reliable or self._udp is None else "udp"

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (``udp_received``, ``tcp_dials``, ``udp_kernel_drops``...).

        ``udp_rcvbuf`` and ``udp_sndbuf`` are the buffer sizes the kernel granted (Linux reports
        twice the usable size); ``udp_kernel_drops`` is the kernel's count of datagrams it
        dropped on this socket (Linux only; 0 elsewhere).
        """
        out = dict.fromkeys(self._counter_names, 0)
        out.update(self._counters.snapshot())
        out["udp_kernel_drops"] = self._kernel_drops
        out["udp_rcvbuf"], out["udp_sndbuf"] = self._buffers
        return out

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Bind UDP and TCP on the bind address and start the two threads.

        Raises:
            TransportError: the address could not be bound.
            ClusterClosed: the transport was closed.
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed")
            if self._started:
                raise TransportError(f"transport {self._name} is already started")
            self._started = True
        self._on_packets = on_packets
        self._on_stream = on_stream
        try:
            if self._listen:
                self._bind()
            self._tcp_waker = _Waker()
            sel = selectors.DefaultSelector()
            if self._listener is not None:
                sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
            sel.register(self._tcp_waker.r, selectors.EVENT_READ, _WAKE)
            self._threads.append(
                threading.Thread(
                    target=self._tcp_loop,
                    args=(sel,),
                    name=f"gossip-{self._name}-tcp-io",
                    daemon=True,
                )
            )
            if self._udp is not None:
                self._udp_waker = _Waker()
                usel = selectors.DefaultSelector()
                usel.register(self._udp, selectors.EVENT_READ, "udp")
                usel.register(self._udp_waker.r, selectors.EVENT_READ, _WAKE)
                self._threads.append(
                    threading.Thread(
                        target=self._udp_loop,
                        args=(usel,),
                        name=f"gossip-{self._name}-udp-reader",
                        daemon=True,
                    )
                )
        except BaseException:
            self.close()
            raise
        for thread in self._threads:
            thread.start()
        _log.debug("%s = listening on %s (udp=%s)", self._name, self._local_addr, self._use_udp)

    def send(
        self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None
    ) -> None:
        """Send one packet to ``addr``.

        ``reliable=False`` writes one UDP datagram (or queues a TCP frame when the transport was
        made with ``udp=False``); ``reliable=True`` queues one frame on the pooled persistent TCP
        connection to ``addr``, dialing it if needed, and waits up to ``timeout`` (default
        ``io_timeout``) for room while that connection's buffer is full.

        Raises:
            MessageTooLarge: a datagram over ``max_udp_size`` (the engine should use TCP) or a
                frame over ``max_frame_size``.
            ConnectError: ``addr`` could not be dialed.
            SendQueueFull: no room within ``timeout`` (nothing was queued), or the UDP
                socket's send buffer is full.
            SendError: the connection broke.
            AddressError: ``addr`` is not an ``ip:port`` literal.
            ClusterClosed: the transport is closed or not started.
        """
        self._check_open()
        parsed = self._addrs.get(addr)
        if parsed is None:
            parsed = self._parse(addr)
        ip, port, udp_ip, key = parsed
        if not reliable and self._udp is not None:
            self._send_udp(key, udp_ip, port, data)
        else:
            self._send_reliable(key, ip, port, data, timeout)

    def _parse(self, addr: str) -> tuple[str, int, str, str]:
        """Parse a send address once (``ip, port, ip for UDP, key``); later sends to it find it
        in a small cache."""
        ip, port, family = split_host_port(addr)
        udp_ip = ip
        if self._family == socket.AF_INET6 and family == socket.AF_INET:
            udp_ip = "::ffff:" + ip  # a dual-stack IPv6 socket reaches IPv4 peers this way
        parsed = (ip, port, udp_ip, format_addr(ip, port))
        if len(self._addrs) >= _ADDR_CACHE_MAX:
            self._addrs.clear()
        self._addrs[addr] = parsed
        return parsed

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Write ``data`` as one frame to ``addr`` and return the single reply frame.

        The exchange uses a connection dedicated to it (from a small idle pool per address,
        or freshly dialed); the connection returns to the pool only after a clean exchange.
        A pooled connection the peer has closed meanwhile is replaced by a new dial once.

        Raises:
            GossipTimeout: no whole reply within ``timeout`` seconds.
            ConnectError, SendError, MessageTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        parsed = self._addrs.get(addr)
        if parsed is None:
            parsed = self._parse(addr)
        ip, port, _udp_ip, key = parsed
        self._check_frame(key, data)
        frame = _HEADER.pack(len(data)) + data
        deadline = Deadline(timeout)
        what = f"request to {key}"
        self._count("requests")
        retried = False
        while True:
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                slot = self._dial_slot(key)
                try:
                    sock = self._dial(ip, port, key, deadline)
                except BaseException:
                    self._dials.release(slot)
                    raise
                conn = _Conn(self, sock, key, ip, _KIND_REQ)
                conn.slot = slot
                conn.greeting = PREAMBLE_FRAMES
            with self._lock:
                if self._closed:
                    conn.closed = True
                    self._close_sock(conn)
                    raise ClusterClosed(f"{what}: transport {self._name} is closed")
                self._req_active[conn] = None
            clean = False
            try:
                try:
                    self._write_direct(conn, frame, deadline, what)
                except SendError as exc:
                    # a write failing on a reused connection means the peer closed it
                    raise _PeerClosed(str(exc)) from exc
                reply, clean = self._read_reply(conn, deadline, what)
                return reply
            except _PeerClosed as exc:
                if reused and not retried and not self._closed:
                    retried = True
                    continue
                self._count("send_errors")
                raise SendError(str(exc)) from exc  # the public type, not the private marker
            finally:
                with self._lock:
                    self._req_active.pop(conn, None)
                    keep = (
                        clean
                        and not self._closed
                        and len(self._req_idle.get(key, ())) < _REQUEST_IDLE_PER_ADDR
                    )
                    if keep:
                        conn.last_active = time.monotonic()
                        self._req_idle.setdefault(key, []).append(conn)
                if not keep:
                    conn.closed = True
                    self._close_sock(conn)

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Dial a connection dedicated to one stream (see :class:`StreamConn`).

        Raises:
            ConnectError: ``addr`` could not be dialed within ``timeout``.
            AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        ip, port, _family = split_host_port(addr)
        key = format_addr(ip, port)
        slot = self._dial_slot(key)
        try:
            sock = self._dial(ip, port, key, Deadline(timeout))
        except BaseException:
            self._dials.release(slot)
            raise
        stream = _StreamSocket(self, sock, key, ip, self.max_stream_frame_size, slot=slot)
        stream.greeting = PREAMBLE_STREAM
        with self._lock:
            if self._closed:
                sock.close()
                self._dials.release(slot)
                raise ClusterClosed(f"transport {self._name} is closed")
            self._streams[stream] = None
        self._count("streams_dialed")
        return stream

    def close(self) -> None:
        """Close every socket and join both threads (idempotent).

        Afterwards :meth:`send`, :meth:`request` and :meth:`dial_stream` raise
        :class:`ClusterClosed`; open streams fail at their next read or write.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = self._all_conns_locked()
            streams = list(self._streams)
        self._stop.set()
        # Shut everything down first: this fails blocked writers and readers fast.
        for sock in (self._listener, self._udp):
            if sock is not None:
                _shutdown(sock)
        for conn in conns:
            with conn.cond:
                conn.closed = True
                conn.cond.notify_all()
            _shutdown(conn.sock)
        for stream in streams:
            stream.close()
        for waker in (self._tcp_waker, self._udp_waker):
            if waker is not None:
                waker.wake()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        me = threading.current_thread()
        for thread in self._threads:
            if thread.ident is not None and thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        stragglers = [t.name for t in self._threads if t.is_alive() and t is not me]
        if stragglers:
            _log.warning("%s ! threads did not stop: %s", self._name, stragglers)
        with self._lock:
            self._readers_done = True
            conns = self._all_conns_locked(active=False)
            self._accepted.clear()
            self._out.clear()
            self._pending_add.clear()
            self._pending_update.clear()
            self._to_close.clear()
            self._req_idle.clear()
        for conn in conns:
            self._count_lost(conn)
            conn.closed = True
            self._close_sock(conn)
        for stream in streams:
            try:
                stream.sock.close()
            except OSError:  # pragma: no cover - close() of a socket does not fail here
                pass
        for sock in (self._listener, self._udp):
            if sock is not None:
                sock.close()
        for waker in (self._tcp_waker, self._udp_waker):
            if waker is not None:
                waker.close()
        _log.debug("%s = closed", self._name)

    def __enter__(self) -> SocketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self._closed else ("started" if self._started else "new")
            return (
                f"<SocketTransport {self._name} {self._local_addr or 'unbound'} {state} "
                f"accepted={len(self._accepted)} out={len(self._out)} streams={len(self._streams)}>"
            )

    # ------------------------------------------------------------------ binding

    def _bind(self) -> None:
        """Bind TCP, then UDP on the same port (retrying when port 0 collides)."""
        attempts = _BIND_ATTEMPTS if self._bind_port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            tcp = socket.socket(self._family, socket.SOCK_STREAM)
            udp: socket.socket | None = None
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self._bind_ip, self._bind_port))
                port = tcp.getsockname()[1]
                if self._use_udp:
                    udp = socket.socket(self._family, socket.SOCK_DGRAM)
                    udp.bind((self._bind_ip, port))
                    udp.setblocking(False)
                tcp.listen(512)
                tcp.setblocking(False)
            except OSError as exc:
                tcp.close()
                if udp is not None:
                    udp.close()
                last = exc
                if exc.errno == errno.EADDRINUSE:
                    continue
                break
            self._listener, self._udp = tcp, udp
            self._local_addr = format_addr(self._bind_ip, port)
            if udp is not None:
                self._buffers = (_set_buffer(udp, socket.SO_RCVBUF, self._rcvbuf_ask),
                                 _set_buffer(udp, socket.SO_SNDBUF, self._sndbuf_ask))
                if _SO_RXQ_OVFL is not None:
                    try:
                        udp.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
                    except OSError:  # pragma: no cover - kernels older than 2.6.33
                        pass
            return
        where = format_addr(self._bind_ip, self._bind_port)
        raise TransportError(f"cannot bind {where}: {last}") from last

    # ------------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterClosed(f"transport {self._name} is closed")
        if not self._started:
            raise ClusterClosed(f"transport {self._name} is not started")

    def _check_frame(self, key: str, data: bytes) -> None:
        if len(data) > self.max_frame_size:
            raise MessageTooLarge(
                f"frame to {key} is {len(data)} bytes, over max_frame_size {self.max_frame_size}"
            )

    def _send_udp(self, key: str, ip: str, port: int, data: bytes) -> None:
        if len(data) > self.max_udp_size:
            self._count("udp_too_large")
            raise MessageTooLarge(
                f"datagram to {key} is {len(data)} bytes, over max_udp_size {self.max_udp_size}"
            )
        udp = self._udp
        assert udp is not None
        try:
            udp.sendto(data, (ip, port))
        except (BlockingIOError, InterruptedError):
            self._count("udp_send_buffer_full")
            raise SendQueueFull(f"send to {key}: the UDP send buffer is full") from None
        except OSError as exc:
            self._count("send_errors")
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed") from None
            raise SendError(f"send to {key}: {exc}") from exc
        self._count("udp_sent")

    def _send_reliable(
        self, key: str, ip: str, port: int, data: bytes, timeout: float | None
    ) -> None:
        self._check_frame(key, data)
        frame = _HEADER.pack(len(data)) + data
        deadline = Deadline(self._io_timeout if timeout is None else timeout)
        what = f"send to {key}"
        for attempt in range(2):
            conn = self._pooled(key, ip, port)
            try:
                self._queue(conn, frame, deadline, what)
                return
            except SendError:
                # The pooled connection was found broken before our frame was queued: redial.
                self._count("send_errors")
                if attempt or self._closed:
                    raise
                _log.debug("%s ! %s found the connection closed, redialing once", self._name, what)

    def _send_on(self, conn: _Conn, data: bytes, timeout: float | None) -> None:
        """Queue one frame on a given connection (Connection.send_frame)."""
        if self._closed:
            raise ClusterClosed(f"transport {self._name} is closed")
        self._check_frame(conn.key, data)
        frame = _HEADER.pack(len(data)) + data
        deadline = Deadline(self._io_timeout if timeout is None else timeout)
        try:
            self._queue(conn, frame, deadline, f"send to {conn.key}")
        except SendError:
            self._count("send_errors")
            raise

    def _queue(self, conn: _Conn, frame: bytes, deadline: Deadline, what: str) -> None:
        """Append ``frame`` to the connection's buffer and write it if nobody else is writing.

        Waits (up to ``deadline``) while the buffer is over its limit; a frame larger than the
        limit is queued alone once the buffer is empty.

        Raises:
            SendQueueFull: no room before the deadline (the frame was not queued).
            SendError: the connection is closed.
        """
        n = len(frame)
        waited = False
        with conn.cond:
            while True:
                if conn.closed:
                    raise SendError(f"{what}: connection closed")
                if not conn.wbytes or conn.wbytes + n <= self._conn_buffer:
                    break
                if not waited:
                    waited = True
                    self._count("tcp_send_waits")  # a writer paced by a slower reader
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    left = 0.0
                if left is not None and left <= 0:
                    self._count("tcp_buffer_full")
                    raise SendQueueFull(
                        f"{what}: {conn.wbytes} bytes already queued for a peer that is not "
                        f"reading fast enough (connection buffer {self._conn_buffer} bytes)")
                conn.cond.wait(left)
            if conn.greeting:
                frame = conn.greeting + frame
                n = len(frame)
                conn.greeting = b""
            conn.wq.append(frame)
            conn.wlens.append(n)
            conn.wbytes += n
            now = time.monotonic()
            flush = defer = False
            if not conn.writing:  # else the thread (or the I/O loop) writing takes it along
                conn.writing = True
                if now - conn.last_queued < _CORK_WINDOW:
                    # Frames follow each other closely (a sender's loop): let the I/O thread
                    # write them, many to a system call, while this thread goes on queueing.
                    conn.want_write = defer = True
                else:
                    flush = True  # a lone frame leaves at once, with no hand-off
            conn.last_queued = now
        self._count("tcp_sent")
        if flush:
            self._flush(conn, False)
        elif defer:
            self._request_update(conn)

    def _flush(self, conn: _Conn, on_io_thread: bool) -> None:
        """Write the connection's buffer; the caller owns the flush (``writing`` is set).

        What the socket does not take is left to the I/O loop (``want_write``).
        """
        sock = conn.sock
        while True:
            with conn.cond:
                if conn.closed:
                    conn.writing = False
                    conn.cond.notify_all()
                    return
                if not conn.wq:
                    conn.writing = False
                    if conn.want_write:
                        conn.want_write = False
                        if not on_io_thread:
                            self._request_update(conn)
                    conn.cond.notify_all()
                    return
                if len(conn.wq) == 1:
                    data: bytes | memoryview = conn.wq.popleft()
                else:
                    parts = []
                    size = 0
                    while conn.wq and size < _WRITE_CHUNK:
                        part = conn.wq.popleft()
                        parts.append(part)
                        size += len(part)
                    data = b"".join(parts)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (OSError, ValueError) as exc:
                _log.debug("%s ! write to %s failed: %s", self._name, conn.key, exc)
                with conn.cond:
                    conn.wq.appendleft(data)  # counted as lost by _drop
                self._drop(conn)
                return
            with conn.cond:
                if conn.closed:  # dropped meanwhile: what was queued is already counted lost
                    conn.writing = False
                    conn.cond.notify_all()
                    return
                conn.wbytes -= sent
                self._written_locked(conn, sent)
                conn.last_active = time.monotonic()
                if sent < len(data):
                    conn.wq.appendleft(memoryview(data)[sent:])
                    if not conn.want_write:
                        conn.want_write = True
                        if not on_io_thread:
                            self._request_update(conn)
                    conn.cond.notify_all()
                    return  # writing stays True: the I/O loop finishes on writability
                conn.cond.notify_all()

    @staticmethod
    def _written_locked(conn: _Conn, sent: int) -> None:
        """Retire the frame lengths covered by ``sent`` more written bytes."""
        lens = conn.wlens
        done = conn.written + sent
        while lens and done >= lens[0]:
            done -= lens.popleft()
        conn.written = done

    def _write_direct(self, conn: _Conn, frame: bytes, deadline: Deadline, what: str) -> None:
        """Write all of ``frame`` on an unregistered (request) connection within ``deadline``."""
        if conn.greeting:
            frame = conn.greeting + frame
            conn.greeting = b""
        view = memoryview(frame)
        try:
            while view:
                try:
                    sent = conn.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent:
                    view = view[sent:]
                    continue
                _wait_fd(conn.sock, True, deadline.remaining(what))
        except GossipTimeout:
            raise
        except (OSError, ValueError) as exc:
            raise SendError(f"{what}: {exc}") from exc
        conn.last_active = time.monotonic()
        self._count("tcp_sent")

    def _pooled(self, key: str, ip: str, port: int) -> _Conn:
        """Return the pooled outgoing connection to ``key``, dialing one if needed."""
        with self._lock:
            conn = self._out.get(key)
            if conn is not None and not conn.closed:
                return conn
        slot = self._dial_slot(key)
        try:
            sock = self._dial(ip, port, key, Deadline(self._dial_timeout))
        except BaseException:
            self._dials.release(slot)
            raise
        new = _Conn(self, sock, key, ip, _KIND_OUT)
        new.slot = slot
        new.greeting = PREAMBLE_FRAMES
        with self._lock:
            if self._closed:
                sock.close()
                self._dials.release(slot)
                raise ClusterClosed(f"transport {self._name} is closed")
            conn = self._out.get(key)
            if conn is not None and not conn.closed:
                # another thread dialed concurrently; keep theirs
                sock.close()
                self._dials.release(slot)
                return conn
            self._out[key] = new
            self._pending_add.append(new)
        if self._tcp_waker is not None:
            self._tcp_waker.wake()
        return new

    def _dial_slot(self, key: str) -> DialSlot:
        """Take a place in the dial budget for a connection to ``key``.

        Raises:
            ConnectError: the budget for ``key``'s host (member or not) is spent (counted).
        """
        slot = self._dials.acquire(key)
        if isinstance(slot, str):
            self._count(f"tcp_{slot}")
            members, others = self._dials.counts()
            raise ConnectError(
                f"connect to {key}: too many connections dialed ({slot.replace('_', ' ')}; "
                f"{members} to members, {others} to other hosts)")
        return slot

    def _dial(self, ip: str, port: int, key: str, deadline: Deadline) -> socket.socket:
        """Connect to ``ip:port``; the caller sends the connection's preamble with its first
        bytes (one segment, one wake-up of the peer, instead of two)."""
        left = deadline.remaining(f"connect to {key}")
        timeout = self._dial_timeout if left is None else min(self._dial_timeout, left)
        self._count("tcp_dials")
        # ``ip`` is a literal: connect directly (``socket.create_connection`` would look it up
        # with ``getaddrinfo``, which loads the idna codec, about 0.4 MiB, for a str host).
        with map_errors({OSError: ConnectError}, key, "connect to"):
            sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                                 socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect((ip, port))
            except BaseException:
                sock.close()
                raise
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"connect to {key}: {exc}") from exc
        _log.debug("%s = dialed %s", self._name, key)
        return sock

    def _read_reply(self, conn: _Conn, deadline: Deadline, what: str) -> tuple[bytes, bool]:
        """Read one frame from a request connection; return ``(frame, clean)``.

        ``clean`` is False when more bytes than the one frame arrived (the connection must
        then not be reused).
        """
        buf = bytearray()
        while True:
            if len(buf) >= FRAME_HEADER_SIZE:
                (size,) = _HEADER.unpack_from(buf)
                if size == 0 or size > self.max_frame_size:
                    self._count("tcp_bad_frames")
                    raise SendError(f"{what}: bad reply frame length {size}")
                end = FRAME_HEADER_SIZE + size
                if len(buf) >= end:
                    return bytes(buf[FRAME_HEADER_SIZE:end]), len(buf) == end
            try:
                chunk = conn.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                try:
                    _wait_fd(conn.sock, False, deadline.remaining(what))
                except GossipTimeout:  # a TimeoutError, hence an OSError: keep it as is
                    raise
                except (OSError, ValueError) as exc:
                    raise SendError(f"{what}: {exc}") from exc
                continue
            except (OSError, ValueError) as exc:
                if self._closed:
                    raise ClusterClosed(f"{what}: transport {self._name} is closed") from exc
                if not buf:
                    raise _PeerClosed(f"{what}: {exc}") from exc
                raise SendError(f"{what}: {exc}") from exc
            if not chunk:
                if self._closed:
                    raise ClusterClosed(f"{what}: transport {self._name} is closed")
                if not buf:
                    raise _PeerClosed(f"{what}: connection closed by peer")
                raise SendError(f"{what}: connection closed in the middle of the reply")
            buf += chunk

    def _take_idle(self, key: str) -> _Conn | None:
        """Pop a live idle request connection to ``key``, closing stale ones."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._req_idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
                if not idle:
                    del self._req_idle[key]
            idle_for = now - conn.last_active
            alive = idle_for < self._idle_timeout
            if alive and idle_for > _PEEK_AFTER:
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
            self._close_sock(conn)

    # ------------------------------------------------------------------ connection bookkeeping

    def _request_update(self, conn: _Conn) -> None:
        """Ask the I/O loop to recompute what it watches on ``conn`` (pause, resume, write)."""
        with self._lock:
            if self._readers_done:
                return
            self._pending_update.append(conn)
        if self._tcp_waker is not None:
            self._tcp_waker.wake()

    def _trust(self, conn: _Conn) -> None:
        conn.trusted = True
        if conn.ticket is not None:
            self._admission.trust(conn.ticket)

    def _rejected(self, conn: _Conn) -> None:
        """The engine refused a frame of ``conn``: close it once it has had too many."""
        conn.rejected += 1
        if conn.rejected == self._max_rejected and not conn.closed:
            self._count("tcp_rejected_frames_closed")
            _log.debug("%s ! %s: %d frames refused; closing", self._name, conn.key, conn.rejected)
            self._drop(conn)

    def _count_lost(self, conn: _Conn) -> None:
        """Count the frames still queued on a connection that is going away."""
        with conn.cond:
            lost = len(conn.wlens)
            conn.wlens.clear()
            conn.wq.clear()
            conn.wbytes = 0
            conn.written = 0
            conn.writing = False
            conn.closed = True
            conn.cond.notify_all()
        if lost:
            self._count("tcp_frames_lost", lost)
            _log.debug("%s ! %d queued frames to %s lost with the connection", self._name,
                       lost, conn.key)

    def _drop(self, conn: _Conn) -> None:
        """Mark ``conn`` closed and get it closed safely.

        A socket registered with the selector is only ever closed by the I/O thread (other
        threads mark it closed, ``shutdown()`` it, which also fails a blocked writer fast, and
        queue it), so the selector never watches a closed or reused file descriptor.
        """
        with self._lock:
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
            already = conn.closed
            queue = conn.kind != _KIND_REQ and not self._readers_done
            if queue and not already:
                self._to_close.append(conn)
        self._count_lost(conn)
        _shutdown(conn.sock)
        if conn.kind == _KIND_REQ:
            return  # request() closes its own connection in its finally clause
        if queue:
            if self._tcp_waker is not None and not already:
                self._tcp_waker.wake()
        else:
            self._close_sock(conn)

    def _close_sock(self, conn: _Conn) -> None:
        """Close the socket (its writers were already failed by shutdown) and give its place
        in the admission counts or the dial budget back."""
        if conn.ticket is not None:
            self._admission.release(conn.ticket)
        self._dials.release(conn.slot)
        _shutdown(conn.sock)
        try:
            conn.sock.close()
        except OSError:  # pragma: no cover - close() of a socket does not fail here
            pass

    def _stream_closed(self, stream: _StreamSocket) -> None:
        with self._lock:
            self._streams.pop(stream, None)
        if stream.ticket is not None:
            self._admission.release(stream.ticket)
        self._dials.release(stream.slot)
        try:
            stream.sock.close()
        except OSError:  # pragma: no cover - close() of a socket does not fail here
            pass

    def _all_conns_locked(self, active: bool = True) -> list[_Conn]:
        """Every connection the transport knows; ``active=False`` leaves out the request
        connections in use (their caller closes them, so we only shut them down)."""
        assert self._lock.locked()
        conns: dict[_Conn, None] = dict(self._accepted)
        conns.update(dict.fromkeys(self._out.values()))
        conns.update(dict.fromkeys(self._pending_add))
        conns.update(dict.fromkeys(self._to_close))
        if active:
            conns.update(self._req_active)
        for idle in self._req_idle.values():
            conns.update(dict.fromkeys(idle))
        return list(conns)

    # ------------------------------------------------------------------ readers

    def _count(self, key: str, n: int = 1) -> None:
        self._counters.inc(key, n)

    def _emit(self, batch: list[Incoming]) -> None:
        callback = self._on_packets
        if callback is None:
            return
        try:
            callback(batch)
        except Exception:
            self._count("callback_errors")
            _log.error("%s ! on_packets raised", self._name, exc_info=True)

    def _udp_loop(self, sel: selectors.BaseSelector) -> None:
        udp = self._udp
        waker = self._udp_waker
        assert udp is not None and waker is not None
        try:
            while not self._stop.is_set():
                try:
                    events = sel.select(timeout=_TICK * 4)
                    for key, _mask in events:
                        if key.data == _WAKE:
                            waker.drain()
                            continue
                        self._read_udp(udp)
                except Exception:
                    if self._stop.is_set():
                        break
                    self._count("reader_errors")
                    _log.debug("%s ! udp reader error", self._name, exc_info=True)
        finally:
            sel.close()

    def _udp_src(self, src: tuple[str, int]) -> str:
        """Return ``src`` as text, from a small cache (formatting costs more than a lookup)."""
        cache = self._addr_cache
        text = cache.get(src)
        if text is None:
            if len(cache) >= _ADDR_CACHE_MAX:
                cache.clear()
            text = cache[src] = format_addr(src[0], src[1])
        return text

    def _read_udp(self, udp: socket.socket) -> None:
        """Read what the socket holds (one burst) and hand it over in one call."""
        # Datagrams land in one reused buffer and are copied out at their size: receiving into
        # a fresh 64 KiB object per datagram and shrinking it fragments the heap (it grew by
        # megabytes under a flood).
        batch: list[Incoming] = []
        now = time.monotonic()
        view = self._udp_view
        recvfrom_into = udp.recvfrom_into
        src_text = self._udp_src
        first = _SO_RXQ_OVFL is not None
        for _ in range(_UDP_BURST):
            try:
                if first:
                    # recvmsg once per burst brings the kernel's cumulative drop counter along.
                    first = False
                    n, anc, _flags, src = udp.recvmsg_into((view,), _OVFL_SPACE)
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                            self._kernel_drops = int.from_bytes(value[:4], sys.byteorder)
                else:
                    n, src = recvfrom_into(view)
                data = bytes(view[:n])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if self._stop.is_set():
                    break
                # e.g. ECONNREFUSED from an earlier ICMP error; keep reading
                self._count("reader_errors")
                _log.debug("%s ! udp recvfrom failed", self._name, exc_info=True)
                continue
            batch.append(Incoming(data, src_text(src), False, None, now, "udp"))
        if batch:
            self._count("udp_received", len(batch))
            self._emit(batch)

    def _tcp_loop(self, sel: selectors.BaseSelector) -> None:
        waker = self._tcp_waker
        assert waker is not None
        next_sweep = time.monotonic() + _TICK
        try:
            while not self._stop.is_set():
                try:
                    self._apply_pending(sel)
                    events = sel.select(timeout=_TICK)
                    now = time.monotonic()
                    for key, mask in events:
                        if self._stop.is_set():
                            break
                        data = key.data
                        if data == _LISTENER:
                            self._accept(sel)
                        elif data == _WAKE:
                            waker.drain()
                        else:
                            if mask & selectors.EVENT_WRITE:
                                self._on_writable(sel, data)
                            if mask & selectors.EVENT_READ and not data.closed:
                                self._read_conn(sel, data, now)
                    if now >= next_sweep:
                        next_sweep = now + _TICK
                        self._sweep(sel, now)
                except Exception:
                    if self._stop.is_set():
                        break
                    self._count("reader_errors")
                    _log.debug("%s ! tcp I/O loop error", self._name, exc_info=True)
        finally:
            sel.close()

    def _apply_pending(self, sel: selectors.BaseSelector) -> None:
        with self._lock:
            adds, self._pending_add = self._pending_add, []
            updates, self._pending_update = self._pending_update, []
            closes, self._to_close = self._to_close, []
        for conn in adds:
            if conn.closed:
                closes.append(conn)
                continue
            self._set_events(sel, conn)
        for conn in updates:
            if not conn.closed:
                self._set_events(sel, conn)
                if not conn.paused and conn.rbuf:
                    # Frames that arrived before the pause are delivered first.
                    self._parse_frames(sel, conn, time.monotonic())
        for conn in closes:
            self._close_registered(sel, conn)

    def _set_events(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        """Watch ``conn`` for what it needs now: reads unless paused, writes while flushing."""
        want = (0 if conn.paused else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.want_write else 0)
        have = conn.events
        if want == have:
            return
        try:
            if not want:
                sel.unregister(conn.sock)
            elif not have:
                sel.register(conn.sock, want, conn)
            else:
                sel.modify(conn.sock, want, conn)
        except (KeyError, ValueError, OSError):
            self._close_registered(sel, conn)
            return
        conn.events = want

    def _close_registered(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        """Unregister and close a connection (I/O thread only)."""
        with self._lock:
            conn.closed = True
            self._accepted.pop(conn, None)
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
        conn.rbuf = bytearray()
        self._unregister(sel, conn)
        self._count_lost(conn)
        self._close_sock(conn)

    @staticmethod
    def _unregister(sel: selectors.BaseSelector, conn: _Conn) -> None:
        """Stop watching ``conn`` (I/O thread only)."""
        if conn.events:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.events = 0

    def _on_writable(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        if conn.closed:
            return
        self._flush(conn, True)
        if not conn.closed and not conn.want_write:
            self._set_events(sel, conn)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        listener = self._listener
        assert listener is not None
        for _ in range(64):
            try:
                sock, src = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._stop.is_set():
                    self._count("reader_errors")
                    _log.debug("%s ! accept failed", self._name, exc_info=True)
                return
            ip = format_addr(src[0], 0).rpartition(":")[0].strip("[]")  # IPv4-mapped: plain
            peer = format_addr(src[0], src[1])
            conn = _Conn(self, sock, peer, ip, _KIND_IN)
            ticket = self._admission.admit(ip, conn)
            if isinstance(ticket, str):
                self._count(f"tcp_{ticket}")
                _log.debug("%s ! rejecting %s: too many connections (%s)", self._name, peer, ticket)
                sock.close()
                continue
            conn.ticket = ticket
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                self._close_sock(conn)
                continue
            with self._lock:
                self._accepted[conn] = None
            self._set_events(sel, conn)
            self._count("tcp_accepts")

    def _account(self, sel: selectors.BaseSelector, conn: _Conn) -> bool:
        """Tell the admission counts what ``conn`` holds buffered now (I/O thread); close the
        connections that hold the most of a budget it overfills. Return False if ``conn``
        itself was closed."""
        ticket = conn.ticket
        if ticket is None or ticket.trusted:
            return True
        victims = self._admission.hold(ticket, len(conn.rbuf))
        for victim in victims:
            self._count("tcp_preauth_buffer_evicted")
            _log.debug("%s ! %s holds the most of the pre-authentication budget; closing",
                       self._name, victim.key)
            self._close_registered(sel, victim)
        return conn not in victims

    def _read_conn(self, sel: selectors.BaseSelector, conn: _Conn, now: float) -> None:
        if conn.paused:
            self._set_events(sel, conn)
            return
        try:
            chunk = conn.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            self._close_registered(sel, conn)
            return
        if not chunk:
            self._close_registered(sel, conn)
            return
        conn.last_active = now
        conn.rbuf += chunk
        if not conn.trusted and not self._account(sel, conn):
            return
        if not conn.greeted:
            if len(conn.rbuf) < _PREAMBLE_SIZE:
                conn.partial_since = conn.partial_since or now
                return
            preamble = bytes(conn.rbuf[:_PREAMBLE_SIZE])
            if preamble == PREAMBLE_STREAM:
                self._accept_stream(sel, conn)
                return
            if preamble != PREAMBLE_FRAMES:
                self._count("tcp_bad_preamble")
                _log.debug("%s ! %s: bad connection preamble %r; closing", self._name,
                           conn.key, preamble)
                self._close_registered(sel, conn)
                return
            del conn.rbuf[:_PREAMBLE_SIZE]
            conn.greeted = True
            conn.partial_since = 0.0
        self._parse_frames(sel, conn, now)

    def _parse_frames(self, sel: selectors.BaseSelector, conn: _Conn, now: float) -> None:
        """Emit every whole frame in the connection's buffer as one batch."""
        buf = conn.rbuf
        n = len(buf)
        off = 0
        batch: list[Incoming] = []
        limit = self.max_frame_size if conn.trusted else self._preauth_frame
        unpack = _HEADER.unpack_from
        key = conn.key
        view = memoryview(buf)
        try:
            while n - off >= FRAME_HEADER_SIZE:
                (size,) = unpack(buf, off)
                if size == 0 or size > limit:
                    self._count("tcp_bad_frames" if size == 0 or size > self.max_frame_size
                                else "tcp_preauth_refused")
                    _log.debug("%s ! bad frame length %d from %s (limit %d); closing",
                               self._name, size, key, limit)
                    view.release()
                    self._close_registered(sel, conn)
                    return
                end = off + FRAME_HEADER_SIZE + size
                if end > n:
                    break
                batch.append(Incoming(bytes(view[off + FRAME_HEADER_SIZE:end]), key, True, conn,
                                      now, "tcp"))
                off = end
        finally:
            view.release()
        if off:
            del buf[:off]
        conn.partial_since = (conn.partial_since or now) if buf else 0.0
        if batch:
            self._count("tcp_received", len(batch))
            self._emit(batch)
            if conn.closed:
                return
            if conn.paused:
                self._count("tcp_paused")
                self._set_events(sel, conn)
        self._account(sel, conn)

    def _accept_stream(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        """Hand an accepted connection whose preamble says "stream" to ``on_stream``."""
        leftover = bytes(conn.rbuf[_PREAMBLE_SIZE:])
        conn.rbuf = bytearray()
        ticket = conn.ticket
        if ticket is not None:
            self._admission.hold(ticket, 0)  # the stream reads for itself, within its limit
        with self._lock:
            self._accepted.pop(conn, None)
        self._unregister(sel, conn)
        conn.ticket = None  # the connection's place in the counts moves to the stream
        stream = _StreamSocket(self, conn.sock, conn.key, conn.ip, self.max_stream_frame_size,
                               leftover, accepted=True,
                               preauth_max_frame_size=self._preauth_frame, ticket=ticket)
        callback = self._on_stream
        with self._lock:
            if callback is None or self._closed:
                callback = None
            else:
                self._streams[stream] = None
        if callback is None:
            self._count("streams_refused")
            conn.ticket = ticket
            self._close_sock(conn)
            return
        self._count("streams_accepted")
        try:
            callback(stream)
        except Exception:
            self._count("callback_errors")
            _log.error("%s ! on_stream raised", self._name, exc_info=True)
            stream.close()

    def _sweep(self, sel: selectors.BaseSelector, now: float) -> None:
        """Close idle connections, those whose frame has been arriving for too long, and
        accepted ones not trusted in time."""
        idle_limit = now - self._idle_timeout
        frame_limit = now - self._frame_timeout
        trust_limit = now - self._preauth_timeout
        with self._lock:
            conns = list(self._accepted) + list(self._out.values())
            stale_req: list[_Conn] = []
            for key in list(self._req_idle):
                idle = self._req_idle[key]
                keep = [c for c in idle if c.last_active >= idle_limit]
                stale_req += [c for c in idle if c.last_active < idle_limit]
                if keep:
                    self._req_idle[key] = keep
                else:
                    del self._req_idle[key]
        for conn in stale_req:
            self._count("tcp_idle_closed")
            conn.closed = True
            self._close_sock(conn)
        for conn in conns:
            if conn.closed:
                continue
            if not conn.trusted and conn.accepted_at < trust_limit:
                self._count("tcp_preauth_timeouts")
                _log.debug("%s ! %s: no frame accepted within %.1fs; closing", self._name,
                           conn.key, self._preauth_timeout)
                self._close_registered(sel, conn)
            elif conn.partial_since and conn.partial_since < frame_limit:
                self._count("tcp_frame_timeouts")
                _log.debug("%s ! %s: a frame did not arrive whole within %.1fs; closing",
                           self._name, conn.key, self._frame_timeout)
                self._close_registered(sel, conn)
            elif conn.last_active < idle_limit and not conn.writing:
                self._count("tcp_idle_closed")
                self._close_registered(sel, conn)
