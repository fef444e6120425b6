"""UDP datagrams, length-prefixed TCP frames and TCP streams on one ``ip:port``.

:class:`SocketTransport` binds a UDP socket and a TCP listener on the same address (IPv4 or
IPv6) and runs exactly two threads, each owned by one part:

- ``gossip-<name>-udp-reader`` (:class:`~.udp.UdpSocket`) drains the UDP socket on every wake-up
  and hands each burst of datagrams to ``on_packets`` in one call;
- ``gossip-<name>-tcp-io`` (:class:`~.io_loop.IoLoop`) runs one selector over the listener,
  every accepted connection and every pooled outgoing connection: it reads, emits every whole
  frame of one read as one batch, and finishes writes the socket could not take at once.

The wire (a preamble per connection, then length-prefixed frames) is :mod:`.frames`. Each
framed connection (:class:`~.conn.FrameConn`) owns its write path: a writer queues its frame
and, if nobody else is writing, writes at once; a writer whose frame does not fit in the
connection's buffer waits for the peer to read, up to its timeout. A request is one exchange on
a connection dedicated to it (:mod:`.requests`), and a stream a connection of its own that
leaves the selector (:class:`~.stream.StreamSocket`), handed to ``on_stream``.

The bounds against hostile peers (accepted connections, untrusted ones, pre-authentication
frames and bytes, deadlines, refused frames, dial budgets) are the
:class:`~gossip.transports.limits.ConnectionLimits` the transport is given, counted in
:mod:`gossip.transports._admission` like the WebSocket transport's.

This module moves bytes only; it imports nothing from :mod:`gossip` but the errors, the counters
and :mod:`gossip.transports`.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any, Final

from gossip.counters import Counters
from gossip.errors import ClusterClosed, ConnectError, MessageTooLarge, SendError, TransportError
from gossip.transports._admission import DialSlot, MemberCheck, Ticket
from gossip.transports._sockets import DialHook, ListenHook, close_quietly, dial_socket, listen_socket, shutdown
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
from gossip.transports.limits import ConnectionLimits
from gossip.transports.tcp.conn import KIND_OUT, FrameConn
from gossip.transports.tcp.frames import HEADER, PREAMBLE_FRAMES, PREAMBLE_STREAM
from gossip.transports.tcp.io_loop import IoLoop
from gossip.transports.tcp.requests import Requests, SocketRequestLine
from gossip.transports.tcp.stream import StreamSocket
from gossip.transports.tcp.udp import ADDR_CACHE_MAX, UDP_RECV_SIZE, UdpSocket

__all__ = ["SocketTransport"]

_log = logging.getLogger("gossip.transports.socket")

_BIND_ATTEMPTS: Final = 10
_JOIN_TIMEOUT: Final = 5.0
_MiB = 1024 * 1024

COUNTERS: Final = (
    "udp_received", "udp_sent", "udp_too_large", "udp_send_buffer_full", "udp_kernel_drops",
    "udp_rcvbuf", "udp_sndbuf", "tcp_received", "tcp_sent", "tcp_accepts", "tcp_rejected",
    "tcp_rejected_per_source", "tcp_rejected_reserved_for_members", "tcp_untrusted_refused",
    "tcp_untrusted_per_source_refused", "tcp_preauth_timeouts", "tcp_preauth_buffer_evicted",
    "tcp_rejected_frames_closed", "tcp_dial_refused_members", "tcp_dial_refused_member_host",
    "tcp_dial_refused_others", "tcp_dial_refused_other_host", "tcp_dials", "tcp_bad_frames",
    "tcp_bad_preamble", "tcp_preauth_refused", "tcp_frame_timeouts", "tcp_idle_closed",
    "tcp_frames_lost", "tcp_buffer_full", "tcp_send_waits", "tcp_paused", "requests",
    "streams_dialed", "streams_accepted", "streams_refused", "send_errors", "callback_errors",
    "reader_errors",
)
"""Every counter :attr:`SocketTransport.stats` shows (zero until it counts)."""


class SocketTransport:
    """UDP + TCP transport bound on one ``ip:port``; see the module docstring.

    Args:
        bind_addr: ``"ip:port"`` or ``"[v6]:port"`` to bind; port 0 picks a port free for
            both UDP and TCP.
        limits: the bounds shared with the WebSocket transport (frame sizes, timeouts, buffer,
            admission of connections, dial budgets); defaults if None.
        member_check: ``member_check(host)`` tells whether ``host`` is a known member's
            (see :mod:`gossip.transports._admission`); None: accepted sources are strangers,
            dialed hosts members.
        advertise_addr: the address peers should use, if not the bound one.
        udp: False (force-reliable) opens no UDP socket; best-effort sends then use TCP.
        max_udp_size: largest datagram :meth:`send` accepts (bigger: :class:`MessageTooLarge`).
        name: node name used in thread names (``gossip-<name>-udp-reader``) and logs.
        recv_buffer_size: ``SO_RCVBUF`` asked for the UDP socket (0 keeps the system
            default).
        send_buffer_size: ``SO_SNDBUF`` asked for the UDP socket (0 keeps the system default).
        listen: False binds nothing at all (no TCP listener, no UDP socket): the transport only
            dials, and best-effort sends travel as TCP frames (a node that listens on WebSocket
            only reaches UDP/TCP peers this way).
        dialer: makes the socket of every TCP dial (``Config.dialer``; see
            :data:`~gossip.transports._sockets.DialHook`); None dials directly.
        listener: makes the TCP listener and the UDP socket (``Config.listener``; see
            :data:`~gossip.transports._sockets.ListenHook`); None binds directly.
        **overrides: fields of :class:`ConnectionLimits` (``idle_timeout=...``), applied to
            ``limits``.

    Raises:
        ValueError: a setting is out of range (the message names it).
        TypeError: an override is not a field of :class:`ConnectionLimits`.
        AddressError: ``bind_addr`` or ``advertise_addr`` is not an ``ip:port`` literal.
    """

    def __init__(
        self,
        bind_addr: str,
        *,
        limits: ConnectionLimits | None = None,
        member_check: MemberCheck | None = None,
        advertise_addr: str = "",
        udp: bool = True,
        max_udp_size: int = 1400,
        name: str = "node",
        recv_buffer_size: int = 4 * _MiB,
        send_buffer_size: int = 1 * _MiB,
        listen: bool = True,
        dialer: DialHook | None = None,
        listener: ListenHook | None = None,
        **overrides: Any,
    ) -> None:
        self._bind_ip, self._bind_port, self._family = split_host_port(bind_addr)
        self._dialer = dialer
        self._listener = listener
        if advertise_addr:
            split_host_port(advertise_addr)  # validate early
        if max_udp_size <= 0 or max_udp_size > UDP_RECV_SIZE:
            raise ValueError(f"max_udp_size must be in 1..{UDP_RECV_SIZE}, got {max_udp_size}")
        self.limits = limits = (limits or ConnectionLimits()).replace(**overrides)
        self._listen = listen
        self._use_udp = udp and listen
        self._advertise = advertise_addr
        self.max_udp_size = max_udp_size
        self.max_frame_size = limits.max_frame_size
        self.max_stream_frame_size = limits.max_stream_frame_size
        self._name = name
        self._rcvbuf_ask = recv_buffer_size
        self._sndbuf_ask = send_buffer_size
        self._admission = limits.measured_admission(member_check)
        self._dials = limits.dial_budget(member_check)
        self._counters = Counters()
        self._lock = threading.Lock()  # guards the flags and the table of streams
        self._started = False
        self._closed = False
        self._stop = threading.Event()
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._local_addr = ""
        self._udp: UdpSocket | None = None
        self._threads: list[threading.Thread] = []
        self._streams: dict[StreamSocket, None] = {}
        self._addrs: dict[str, tuple[str, int, str, str]] = {}  # send address -> parsed
        self._loop = IoLoop(
            name=name, limits=limits, admission=self._admission, dials=self._dials,
            count=self._counters.inc, emit=self._emit, accept_stream=self._accepted_stream,
            sweep_more=self._sweep_requests, is_closed=self._is_closed, stop=self._stop)
        self._requests = Requests(
            self._loop.ctx, idle_timeout=limits.idle_timeout, dial=self._dial,
            take_slot=self._dial_slot, release_slot=self._dials.release,
            release=self._loop.release, wake=self._loop.wake)

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
        out = dict.fromkeys(COUNTERS, 0)
        out.update(self._counters.snapshot())
        udp = self._udp
        if udp is not None:
            out["udp_kernel_drops"] = udp.kernel_drops
            out["udp_rcvbuf"], out["udp_sndbuf"] = udp.buffers
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
            self._threads.append(self._loop.thread())
            if self._udp is not None:
                self._threads.append(self._udp.start_thread())
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
        udp = self._udp
        if not reliable and udp is not None:
            udp.send(key, udp_ip, port, data)
        else:
            self._send_reliable(key, ip, port, data, timeout)

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
        return self._requests.request(ip, port, key, data, timeout)

    def request_line(self, addr: str, data: bytes) -> SocketRequestLine | None:
        """Lend an idle request connection to ``addr`` for one exchange whose request is
        ``data``, without blocking; None when none is idle (:meth:`prepare_request_line`
        dials one). The borrower drives the exchange (see :class:`SocketRequestLine`).

        Raises:
            MessageTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        parsed = self._addrs.get(addr)
        if parsed is None:
            parsed = self._parse(addr)
        key = parsed[3]
        self._check_frame(key, data)
        return self._requests.lend(key, data)

    def prepare_request_line(self, addr: str, timeout: float) -> bool:
        """Dial a request connection to ``addr`` and keep it idle, unless one is idle
        already (blocks up to ``timeout``: for a worker thread); True (this transport lends
        request connections).

        Raises:
            ConnectError, AddressError, ClusterClosed: the dial failed.
        """
        self._check_open()
        parsed = self._addrs.get(addr)
        if parsed is None:
            parsed = self._parse(addr)
        ip, port, _udp_ip, key = parsed
        self._requests.prepare(ip, port, key, timeout)
        return True

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
        stream = StreamSocket(sock, key, ip, self.max_stream_frame_size,
                              on_closed=self._stream_closed, trust=self._admission.trust,
                              slot=slot, greeting=PREAMBLE_STREAM)
        with self._lock:
            if self._closed:
                sock.close()
                self._dials.release(slot)
                raise ClusterClosed(f"transport {self._name} is closed")
            self._streams[stream] = None
        self._counters.inc("streams_dialed")
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
            streams = list(self._streams)
        active, idle = self._requests.shut()
        conns = self._loop.connections() + active + idle
        self._stop.set()
        # Shut everything down first: this fails blocked writers and readers fast.
        listener, udp = self._loop.listener, self._udp
        shutdown(listener)
        if udp is not None:
            shutdown(udp.sock)
        for conn in conns:
            conn.fail_writers()
            shutdown(conn.sock)
        for stream in streams:
            stream.close()
        for waker in (self._loop.waker, udp.waker if udp is not None else None):
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
        for conn in dict.fromkeys(self._loop.finish() + idle):
            conn.discard_queued()
            conn.closed = True
            self._loop.release(conn)
        for stream in streams:
            close_quietly(stream.sock)
        close_quietly(listener)
        if udp is not None:
            close_quietly(udp.sock)
        for waker in (self._loop.waker, udp.waker if udp is not None else None):
            if waker is not None:
                waker.close()
        _log.debug("%s = closed", self._name)

    def __enter__(self) -> SocketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        accepted, out = self._loop.counts()
        with self._lock:
            state = "closed" if self._closed else ("started" if self._started else "new")
            return (
                f"<SocketTransport {self._name} {self._local_addr or 'unbound'} {state} "
                f"accepted={accepted} out={out} streams={len(self._streams)}>"
            )

    # ------------------------------------------------------------------ binding

    def _bind(self) -> None:
        """Bind TCP, then UDP on the same port (retrying when port 0 collides)."""
        attempts = _BIND_ATTEMPTS if self._bind_port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            tcp: socket.socket | None = None
            udp: socket.socket | None = None
            try:
                tcp = listen_socket(self._listener, "tcp", self._family, self._bind_ip, self._bind_port)
                port = tcp.getsockname()[1]
                if self._use_udp:
                    udp = listen_socket(self._listener, "udp", self._family, self._bind_ip, port)
                    udp.setblocking(False)
                tcp.listen(512)
                tcp.setblocking(False)
            except OSError as exc:
                close_quietly(tcp)
                close_quietly(udp)
                last = exc
                if exc.errno == errno.EADDRINUSE:
                    continue
                break
            assert tcp is not None
            self._loop.listener = tcp
            self._local_addr = format_addr(self._bind_ip, port)
            if udp is not None:
                self._udp = UdpSocket(udp, name=self._name, max_udp_size=self.max_udp_size,
                                      count=self._counters.inc, emit=self._emit, stop=self._stop,
                                      is_closed=self._is_closed)
                self._udp.set_buffers(self._rcvbuf_ask, self._sndbuf_ask)
            return
        where = format_addr(self._bind_ip, self._bind_port)
        raise TransportError(f"cannot bind {where}: {last}") from last

    # ------------------------------------------------------------------ sending

    def _is_closed(self) -> bool:
        return self._closed

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

    def _parse(self, addr: str) -> tuple[str, int, str, str]:
        """Parse a send address once (``ip, port, ip for UDP, key``); later sends to it find it
        in a small cache."""
        ip, port, family = split_host_port(addr)
        udp_ip = ip
        if self._family == socket.AF_INET6 and family == socket.AF_INET:
            udp_ip = "::ffff:" + ip  # a dual-stack IPv6 socket reaches IPv4 peers this way
        parsed = (ip, port, udp_ip, format_addr(ip, port))
        if len(self._addrs) >= ADDR_CACHE_MAX:
            self._addrs.clear()
        self._addrs[addr] = parsed
        return parsed

    def _send_reliable(
        self, key: str, ip: str, port: int, data: bytes, timeout: float | None
    ) -> None:
        self._check_frame(key, data)
        frame = HEADER.pack(len(data)) + data
        deadline = Deadline(self.limits.io_timeout if timeout is None else timeout)
        what = f"send to {key}"
        for attempt in range(2):
            conn = self._pooled(key, ip, port)
            try:
                conn.queue(frame, deadline, what)
                return
            except SendError:
                # The pooled connection was found broken before our frame was queued: redial.
                self._counters.inc("send_errors")
                if attempt or self._closed:
                    raise
                _log.debug("%s ! %s found the connection closed, redialing once", self._name, what)

    def _pooled(self, key: str, ip: str, port: int) -> FrameConn:
        """Return the pooled outgoing connection to ``key``, dialing one if needed."""
        conn = self._loop.pooled(key)
        if conn is not None:
            return conn
        slot = self._dial_slot(key)
        try:
            sock = self._dial(ip, port, key, Deadline(self.limits.dial_timeout))
        except BaseException:
            self._dials.release(slot)
            raise
        new = FrameConn(self._loop.ctx, sock, key, ip, KIND_OUT, PREAMBLE_FRAMES)
        new.slot = slot
        conn = self._loop.add_pooled(new)
        if conn is not new:
            # closed meanwhile, or another thread dialed concurrently (keep theirs)
            sock.close()
            self._dials.release(slot)
            if conn is None:
                raise ClusterClosed(f"transport {self._name} is closed")
        return conn

    def _dial_slot(self, key: str) -> DialSlot:
        return self._dials.take(key, lambda why: self._counters.inc(f"tcp_{why}"))

    def _dial(self, ip: str, port: int, key: str, deadline: Deadline) -> socket.socket:
        """Connect to ``ip:port``; the caller sends the connection's preamble with its first
        bytes (one segment, one wake-up of the peer, instead of two)."""
        left = deadline.remaining(f"connect to {key}")
        dial_timeout = self.limits.dial_timeout
        timeout = dial_timeout if left is None else min(dial_timeout, left)
        self._counters.inc("tcp_dials")
        # ``ip`` is a literal: connect directly (``socket.create_connection`` would look it up
        # with ``getaddrinfo``, which loads the idna codec, about 0.4 MiB, for a str host).
        with map_errors({OSError: ConnectError}, key, "connect to"):
            sock = dial_socket(self._dialer, ip, port, timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            if self._dialer is None:
                sock.close()
                raise ConnectError(f"connect to {key}: {exc}") from exc
            # a hook's socket (a Unix socket, a tunnel) may not take TCP options
        try:
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"connect to {key}: {exc}") from exc
        _log.debug("%s = dialed %s", self._name, key)
        return sock

    # ------------------------------------------------------------------ what the parts call

    def _emit(self, batch: list[Incoming]) -> None:
        callback = self._on_packets
        if callback is None:
            return
        try:
            callback(batch)
        except Exception:
            self._counters.inc("callback_errors")
            _log.error("%s ! on_packets raised", self._name, exc_info=True)

    def _sweep_requests(self, now: float) -> float | None:
        return self._requests.sweep(now)

    def _accepted_stream(self, sock: socket.socket, peer: str, ip: str, leftover: bytes,
                         ticket: Ticket | None) -> None:
        """Hand an accepted stream connection to ``on_stream`` (I/O thread)."""
        stream = StreamSocket(sock, peer, ip, self.max_stream_frame_size,
                              on_closed=self._stream_closed, trust=self._admission.trust,
                              leftover=leftover, accepted=True,
                              preauth_max_frame_size=self.limits.preauth_frame, ticket=ticket)
        callback = self._on_stream
        with self._lock:
            if callback is None or self._closed:
                callback = None
            else:
                self._streams[stream] = None
        if callback is None:
            self._counters.inc("streams_refused")
            if ticket is not None:
                self._admission.release(ticket)
            shutdown(sock)
            close_quietly(sock)
            return
        self._counters.inc("streams_accepted")
        try:
            callback(stream)
        except Exception:
            self._counters.inc("callback_errors")
            _log.error("%s ! on_stream raised", self._name, exc_info=True)
            stream.close()

    def _stream_closed(self, stream: StreamSocket) -> None:
        with self._lock:
            self._streams.pop(stream, None)
        if stream.ticket is not None:
            self._admission.release(stream.ticket)
        self._dials.release(stream.slot)
        close_quietly(stream.sock)
