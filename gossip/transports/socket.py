"""UDP datagrams and length-prefixed TCP frames on one ``ip:port``.

:class:`SocketTransport` binds a UDP socket and a TCP listener on the same address (IPv4 or
IPv6) and runs exactly two reader threads:

- ``gossip-<name>-udp-reader`` receives datagrams and hands each to ``on_packet``;
- ``gossip-<name>-tcp-reader`` runs one :mod:`selectors` loop over the listener, every
  accepted connection and every *pooled outgoing* connection, reads non-blockingly into a
  per-connection buffer and emits whole frames (4-byte big-endian length, then the data).

Writes happen on the caller's thread (the engine's send workers), under a per-connection
lock, with a deadline. All connection sockets are non-blocking; a write that would block waits
for writability with ``poll`` on the writing thread. The fd stays registered for *reads* in
the reader's selector meanwhile: a TCP socket is full duplex, the reader only ever calls
``recv`` and writers only ever call ``send``, so the two never touch the same kernel buffer
and need no common lock. What does need care is closing: a socket registered with the selector
is only ever closed by the reader thread (other threads mark it closed, ``shutdown()`` it -- which
also fails a blocked writer fast -- and queue it), so the selector never watches a closed or
reused file descriptor.

``request()`` uses connections that are *not* registered with the selector: the calling
thread writes the request and reads the single reply itself, against one deadline. This is
the simplest correct design: no reply slot or hand-off between threads is needed, and a reply
can never be mistaken for an unsolicited frame. After a clean exchange the connection goes
back to a small per-address idle pool, so repeated requests reuse connections.

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
import threading
import time
from collections.abc import Callable
from typing import Final

from gossip.errors import (
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    PacketTooLarge,
    SendError,
    TransportError,
)
from gossip.transports.base import (
    Deadline,
    Incoming,
    format_addr,
    map_errors,
    split_host_port,
)

__all__ = ["SocketTransport", "MAX_ACCEPTED_CONNECTIONS", "FRAME_HEADER_SIZE"]

_log = logging.getLogger("gossip.transports.socket")

FRAME_HEADER_SIZE: Final = 4
"""Size of the big-endian length prefix of a TCP frame."""
MAX_ACCEPTED_CONNECTIONS: Final = 1024
"""Accepted connections beyond this many are closed at once (and counted)."""
_HEADER = struct.Struct(">I")
_READ_CHUNK = 256 * 1024
_UDP_RECV_SIZE = 65535
_REQUEST_IDLE_PER_ADDR = 4
_BIND_ATTEMPTS = 10
_TICK = 2.0  # the reader's select timeout; bounds how late the idle sweep runs (close() wakes it at once)
_JOIN_TIMEOUT = 5.0

_LISTENER = "listener"
_WAKE = "wake"
_KIND_IN = "in"  # accepted; registered with the TCP selector
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


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Conn:
    """A TCP connection handle; implements :class:`gossip.transports.base.Connection`."""

    __slots__ = ("_transport", "sock", "key", "kind", "lock", "buf", "last_active", "closed")

    def __init__(
        self, transport: SocketTransport, sock: socket.socket, key: str, kind: str
    ) -> None:
        self._transport = transport
        self.sock = sock
        self.key = key  # "ip:port" of the peer (for dialed ones, the address dialed)
        self.kind = kind
        self.lock = threading.Lock()  # serialises writes (and the final close)
        self.buf = bytearray()  # reader-thread-only receive buffer
        self.last_active = time.monotonic()
        self.closed = False

    @property
    def peer(self) -> str:
        """The remote ``"ip:port"`` of this connection."""
        return self.key

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Write one length-prefixed frame on this connection.

        Raises:
            PacketTooLarge: ``data`` is longer than the transport's ``max_frame_size``.
            SendError: the connection is closed or broken (it is then dropped).
            GossipTimeout: the write did not finish within ``timeout``
                (default: the transport's ``io_timeout``); the connection is dropped.
            ClusterClosed: the transport is closed.
        """
        self._transport._send_on(self, data, timeout)

    def close(self) -> None:
        """Close this connection (idempotent)."""
        self._transport._drop(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<_Conn {self.kind} {self.key} {state}>"


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
        max_udp_size: largest datagram :meth:`send` accepts (bigger: :class:`PacketTooLarge`).
        max_frame_size: largest TCP frame sent or accepted; a bigger incoming length prefix
            closes that connection.
        dial_timeout: seconds allowed to establish a TCP connection.
        io_timeout: default seconds allowed for one frame write.
        name: node name used in thread names (``gossip-<name>-udp-reader``) and logs.
        idle_timeout: pooled and accepted connections idle this long are closed.

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
        dial_timeout: float = 2.0,
        io_timeout: float = 2.0,
        name: str = "node",
        idle_timeout: float = 60.0,
    ) -> None:
        self._bind_ip, self._bind_port, self._family = split_host_port(bind_addr)
        if advertise_addr:
            split_host_port(advertise_addr)  # validate early
        if max_udp_size <= 0 or max_udp_size > _UDP_RECV_SIZE:
            raise ValueError(f"max_udp_size must be in 1..{_UDP_RECV_SIZE}, got {max_udp_size}")
        if max_frame_size <= 0 or max_frame_size >= 1 << 32:
            raise ValueError(f"max_frame_size must be in 1..2**32-1, got {max_frame_size}")
        for label, value in (
            ("dial_timeout", dial_timeout),
            ("io_timeout", io_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        self._advertise = advertise_addr
        self._use_udp = udp
        self.max_udp_size = max_udp_size
        self.max_frame_size = max_frame_size
        self._dial_timeout = dial_timeout
        self._io_timeout = io_timeout
        self._name = name
        self._idle_timeout = idle_timeout

        self._lock = threading.Lock()  # guards every table below and the flags
        self._started = False
        self._closed = False
        self._readers_done = False
        self._stop = threading.Event()
        self._on_packet: Callable[[Incoming], None] | None = None
        self._local_addr = ""
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._tcp_waker: _Waker | None = None
        self._udp_waker: _Waker | None = None
        self._threads: list[threading.Thread] = []
        self._accepted: dict[_Conn, None] = {}
        self._out: dict[str, _Conn] = {}
        self._pending_add: list[_Conn] = []  # dialed conns the reader must register
        self._to_close: list[_Conn] = []  # registered conns the reader must close
        self._req_idle: dict[str, list[_Conn]] = {}
        self._req_active: dict[_Conn, None] = {}
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "udp_received",
                "udp_sent",
                "udp_too_large",
                "tcp_received",
                "tcp_sent",
                "tcp_accepts",
                "tcp_rejected",
                "tcp_dials",
                "tcp_bad_frames",
                "tcp_idle_closed",
                "requests",
                "send_errors",
                "callback_errors",
                "reader_errors",
            ),
            0,
        )

    # ------------------------------------------------------------------ public API

    @property
    def local_addr(self) -> str:
        """The bound ``"ip:port"`` (the real port if 0 was asked); ``""`` before :meth:`start`."""
        return self._local_addr

    @property
    def advertise_addr(self) -> str:
        """The address to advertise to peers: ``advertise_addr`` if given, else :attr:`local_addr`."""
        return self._advertise or self._local_addr

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (``udp_received``, ``tcp_dials``, ``tcp_bad_frames``...)."""
        with self._stats_lock:
            return dict(self._stats)

    def start(self, on_packet: Callable[[Incoming], None]) -> None:
        """Bind UDP and TCP on the bind address and start the reader threads.

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
        self._on_packet = on_packet
        try:
            self._bind()
            self._tcp_waker = _Waker()
            sel = selectors.DefaultSelector()
            assert self._listener is not None
            sel.register(self._listener, selectors.EVENT_READ, _LISTENER)
            sel.register(self._tcp_waker.r, selectors.EVENT_READ, _WAKE)
            self._threads.append(
                threading.Thread(
                    target=self._tcp_loop,
                    args=(sel,),
                    name=f"gossip-{self._name}-tcp-reader",
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

        ``reliable=False`` sends one UDP datagram (or a TCP frame when the transport was made
        with ``udp=False``); ``reliable=True`` writes one frame on the pooled persistent TCP
        connection to ``addr``, dialing it if needed. On a write error the connection is
        dropped and redialed once.

        Raises:
            PacketTooLarge: a datagram over ``max_udp_size`` (the engine should use TCP) or a
                frame over ``max_frame_size``.
            ConnectError: ``addr`` could not be dialed.
            SendError: the bytes could not be written.
            GossipTimeout: the write did not finish within ``timeout`` (default ``io_timeout``).
            AddressError: ``addr`` is not an ``ip:port`` literal.
            ClusterClosed: the transport is closed or not started.
        """
        self._check_open()
        ip, port, family = split_host_port(addr)
        key = format_addr(ip, port)
        if not reliable and self._udp is not None:
            self._send_udp(key, ip, port, family, data)
        else:
            self._send_reliable(key, ip, port, data, timeout)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Write ``data`` as one frame to ``addr`` and return the single reply frame.

        The exchange uses a connection dedicated to it (from a small idle pool per address,
        or freshly dialed); the connection returns to the pool only after a clean exchange.
        A pooled connection the peer has closed meanwhile is replaced by a new dial once.

        Raises:
            GossipTimeout: no whole reply within ``timeout`` seconds.
            ConnectError, SendError, PacketTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        ip, port, _family = split_host_port(addr)
        key = format_addr(ip, port)
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
                sock = self._dial(ip, port, key, deadline)
                conn = _Conn(self, sock, key, _KIND_REQ)
            with self._lock:
                if self._closed:
                    self._close_sock(conn)
                    raise ClusterClosed(f"{what}: transport {self._name} is closed")
                self._req_active[conn] = None
            clean = False
            try:
                try:
                    self._write(conn, frame, deadline, what)
                except SendError as exc:
                    # a write failing on a reused connection means the peer closed it
                    raise _PeerClosed(str(exc)) from exc
                reply, clean = self._read_reply(conn, deadline, what)
                return reply
            except _PeerClosed:
                if reused and not retried and not self._closed:
                    retried = True
                    continue
                self._count("send_errors")
                raise
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

    def close(self) -> None:
        """Close every socket and join both reader threads (idempotent).

        Afterwards :meth:`send` and :meth:`request` raise :class:`ClusterClosed`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = self._all_conns_locked()
        self._stop.set()
        # Shut everything down first: this fails blocked writers and readers fast.
        for sock in (self._listener, self._udp):
            if sock is not None:
                _shutdown(sock)
        for conn in conns:
            conn.closed = True
            _shutdown(conn.sock)
        for waker in (self._tcp_waker, self._udp_waker):
            if waker is not None:
                waker.wake()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        stragglers = [t.name for t in self._threads if t.is_alive()]
        if stragglers:
            _log.warning("%s ! reader threads did not stop: %s", self._name, stragglers)
        with self._lock:
            self._readers_done = True
            conns = self._all_conns_locked(active=False)
            self._accepted.clear()
            self._out.clear()
            self._pending_add.clear()
            self._to_close.clear()
            self._req_idle.clear()
        for conn in conns:
            conn.closed = True
            self._close_sock(conn)
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
                f"accepted={len(self._accepted)} out={len(self._out)}>"
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
                tcp.listen(128)
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
            raise PacketTooLarge(
                f"frame to {key} is {len(data)} bytes, over max_frame_size {self.max_frame_size}"
            )

    def _send_udp(self, key: str, ip: str, port: int, family: int, data: bytes) -> None:
        if len(data) > self.max_udp_size:
            self._count("udp_too_large")
            raise PacketTooLarge(
                f"datagram to {key} is {len(data)} bytes, over max_udp_size {self.max_udp_size}"
            )
        udp = self._udp
        assert udp is not None
        if self._family == socket.AF_INET6 and family == socket.AF_INET:
            ip = "::ffff:" + ip  # a dual-stack IPv6 socket reaches IPv4 peers this way
        try:
            with map_errors({OSError: SendError}, key, "send to"):
                udp.sendto(data, (ip, port))
        except SendError:
            self._count("send_errors")
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed") from None
            raise
        self._count("udp_sent")

    def _send_reliable(
        self, key: str, ip: str, port: int, data: bytes, timeout: float | None
    ) -> None:
        self._check_frame(key, data)
        frame = _HEADER.pack(len(data)) + data
        deadline = Deadline(self._io_timeout if timeout is None else timeout)
        what = f"send to {key}"
        for attempt in range(2):
            conn = self._pooled(key, ip, port, deadline)
            try:
                self._write(conn, frame, deadline, what)
                return
            except SendError:
                self._count("send_errors")
                if attempt or self._closed:
                    raise
                _log.debug("%s ! %s failed, redialing once", self._name, what)

    def _send_on(self, conn: _Conn, data: bytes, timeout: float | None) -> None:
        """Write one frame on a given connection (Connection.send_frame)."""
        if self._closed:
            raise ClusterClosed(f"transport {self._name} is closed")
        self._check_frame(conn.key, data)
        frame = _HEADER.pack(len(data)) + data
        deadline = Deadline(self._io_timeout if timeout is None else timeout)
        try:
            self._write(conn, frame, deadline, f"send to {conn.key}")
        except SendError:
            self._count("send_errors")
            raise

    def _pooled(self, key: str, ip: str, port: int, deadline: Deadline) -> _Conn:
        """Return the pooled outgoing connection to ``key``, dialing one if needed."""
        with self._lock:
            conn = self._out.get(key)
            if conn is not None and not conn.closed:
                return conn
        sock = self._dial(ip, port, key, deadline)
        new = _Conn(self, sock, key, _KIND_OUT)
        with self._lock:
            if self._closed:
                sock.close()
                raise ClusterClosed(f"transport {self._name} is closed")
            conn = self._out.get(key)
            if conn is not None and not conn.closed:
                # another thread dialed concurrently; keep theirs
                sock.close()
                return conn
            self._out[key] = new
            self._pending_add.append(new)
        if self._tcp_waker is not None:
            self._tcp_waker.wake()
        return new

    def _dial(self, ip: str, port: int, key: str, deadline: Deadline) -> socket.socket:
        left = deadline.remaining(f"connect to {key}")
        timeout = self._dial_timeout if left is None else min(self._dial_timeout, left)
        self._count("tcp_dials")
        with map_errors({OSError: ConnectError}, key, "connect to"):
            sock = socket.create_connection((ip, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"connect to {key}: {exc}") from exc
        _log.debug("%s = dialed %s", self._name, key)
        return sock

    def _write(self, conn: _Conn, frame: bytes, deadline: Deadline, what: str) -> None:
        """Write all of ``frame`` under the connection's lock within ``deadline``.

        Any failure, including a timeout after a partial write, drops the connection: the
        stream can no longer be framed.
        """
        left = deadline.remaining(what)
        if not conn.lock.acquire(timeout=-1 if left is None else left):
            raise GossipTimeout(f"{what}: timed out waiting for the connection")
        try:
            if conn.closed:
                raise SendError(f"{what}: connection closed")
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
                self._drop(conn)
                raise
            except (OSError, ValueError) as exc:
                self._drop(conn)
                raise SendError(f"{what}: {exc}") from exc
            conn.last_active = time.monotonic()
        finally:
            conn.lock.release()
        self._count("tcp_sent")

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
            alive = now - conn.last_active < self._idle_timeout
            if alive:
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

    def _drop(self, conn: _Conn) -> None:
        """Mark ``conn`` closed and get it closed safely (see the module docstring)."""
        with self._lock:
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
            already = conn.closed
            conn.closed = True
            queue = conn.kind != _KIND_REQ and not self._readers_done
            if queue and not already:
                self._to_close.append(conn)
        _shutdown(conn.sock)
        if conn.kind == _KIND_REQ:
            return  # request() closes its own connection in its finally clause
        if queue:
            if self._tcp_waker is not None and not already:
                self._tcp_waker.wake()
        else:
            self._close_sock(conn)

    def _close_sock(self, conn: _Conn) -> None:
        """Close the socket, waiting briefly for a writer (already failed by shutdown)."""
        _shutdown(conn.sock)
        got = conn.lock.acquire(timeout=self._io_timeout)
        try:
            conn.sock.close()
        finally:
            if got:
                conn.lock.release()

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
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    def _emit(self, incoming: Incoming) -> None:
        callback = self._on_packet
        if callback is None:
            return
        try:
            callback(incoming)
        except Exception:
            self._count("callback_errors")
            _log.error("%s ! on_packet raised", self._name, exc_info=True)

    def _udp_loop(self, sel: selectors.BaseSelector) -> None:
        udp = self._udp
        waker = self._udp_waker
        assert udp is not None and waker is not None
        try:
            while not self._stop.is_set():
                try:
                    events = sel.select(timeout=_TICK)
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

    def _read_udp(self, udp: socket.socket) -> None:
        for _ in range(64):  # drain a burst, then let the loop check the stop flag
            try:
                data, src = udp.recvfrom(_UDP_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if self._stop.is_set():
                    return
                # e.g. ECONNREFUSED from an earlier ICMP error; keep reading
                self._count("reader_errors")
                _log.debug("%s ! udp recvfrom failed", self._name, exc_info=True)
                continue
            self._count("udp_received")
            self._emit(Incoming(data, format_addr(src[0], src[1]), False, None, time.monotonic()))

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
                    for key, _mask in events:
                        if self._stop.is_set():
                            break
                        if key.data == _LISTENER:
                            self._accept(sel)
                        elif key.data == _WAKE:
                            waker.drain()
                        else:
                            self._read_conn(sel, key.data, now)
                    if now >= next_sweep:
                        next_sweep = now + _TICK
                        self._sweep_idle(sel, now)
                except Exception:
                    if self._stop.is_set():
                        break
                    self._count("reader_errors")
                    _log.debug("%s ! tcp reader error", self._name, exc_info=True)
        finally:
            sel.close()

    def _apply_pending(self, sel: selectors.BaseSelector) -> None:
        with self._lock:
            adds, self._pending_add = self._pending_add, []
            closes, self._to_close = self._to_close, []
        for conn in adds:
            if conn.closed:
                closes.append(conn)
                continue
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        for conn in closes:
            self._close_registered(sel, conn)

    def _close_registered(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        """Unregister and close a connection (reader thread only)."""
        with self._lock:
            conn.closed = True
            self._accepted.pop(conn, None)
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._close_sock(conn)

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
            peer = format_addr(src[0], src[1])
            with self._lock:
                full = len(self._accepted) >= MAX_ACCEPTED_CONNECTIONS
            if full:
                self._count("tcp_rejected")
                _log.debug("%s ! rejecting %s: too many connections", self._name, peer)
                sock.close()
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()
                continue
            conn = _Conn(self, sock, peer, _KIND_IN)
            with self._lock:
                self._accepted[conn] = None
            sel.register(sock, selectors.EVENT_READ, conn)
            self._count("tcp_accepts")

    def _read_conn(self, sel: selectors.BaseSelector, conn: _Conn, now: float) -> None:
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
        buf = conn.buf
        buf += chunk
        while len(buf) >= FRAME_HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buf)
            if size == 0 or size > self.max_frame_size:
                self._count("tcp_bad_frames")
                _log.debug(
                    "%s ! bad frame length %d from %s; closing", self._name, size, conn.key
                )
                self._close_registered(sel, conn)
                return
            end = FRAME_HEADER_SIZE + size
            if len(buf) < end:
                return
            data = bytes(buf[FRAME_HEADER_SIZE:end])
            del buf[:end]
            self._count("tcp_received")
            self._emit(Incoming(data, conn.key, True, conn, now))

    def _sweep_idle(self, sel: selectors.BaseSelector, now: float) -> None:
        limit = now - self._idle_timeout
        with self._lock:
            idle = [c for c in self._accepted if c.last_active < limit]
            idle += [c for c in self._out.values() if c.last_active < limit]
        for conn in idle:
            self._count("tcp_idle_closed")
            self._close_registered(sel, conn)
