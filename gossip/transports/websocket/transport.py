"""WebSocket transport: gossip frames and streams over ``ws://`` and ``wss://``.

:class:`WebSocketTransport` carries the same three kinds of traffic as the socket transport
(:mod:`gossip.transports.base`), each gossip frame one binary WebSocket message:

- *frames on pooled connections*: one persistent connection per peer URL, dialed on first use;
  best-effort and reliable packets both travel on it (there is no UDP here), and a received
  frame carries its connection so that the answer goes back on it;
- *requests*: :meth:`WebSocketTransport.request` writes one frame on a connection dedicated to
  the exchange (kept in a small idle pool per URL afterwards) and reads the single reply;
- *streams*: :meth:`WebSocketTransport.dial_stream` opens a connection dedicated to one stream
  (the handshake carries ``Gossip-Channel: stream``); frames are binary messages and the
  writer's half-close is the text message :data:`~.link.END_OF_STREAM`.

The parts, each given what it needs (never the transport): :mod:`.listener` (the accept thread),
:mod:`.admission` (which handshakes are let in), :mod:`.link` (a connection's state, buffers and
deadlines), :mod:`.connection` (our own sockets, on websockets' sans-I/O protocol),
:mod:`.hosted` (connections a host's server carries), :mod:`.requests` (request/reply
exchanges), :mod:`.stream` and :mod:`.framing`.

Threads, every one named ``gossip-<node>-ws-...`` and joined by :meth:`WebSocketTransport.close`:
``ws-accept`` (the listener, if any), ``ws-sweep`` (handshake, idle and keepalive deadlines),
and per connection ``ws-<n>`` (dial or accept, then writes) and ``ws-<n>-read``. Accepted
connections are counted before any thread exists for them; the bounds are the
:class:`~gossip.transports.limits.ConnectionLimits` shared with the socket transport.

Security: when a bearer token is set, every dial and every accepted handshake prove it with a
mutual challenge-response (:mod:`gossip.transports._wsauth`); a refusal is an HTTP 401 whose
body says why, and is counted (``ws_auth_refused``). Plain ``ws://`` to a host that is not on
loopback is refused unless ``allow_insecure`` is set; ``wss://`` verifies the server's
certificate by default. Before a connection delivered a frame the engine accepted, its messages
may be at most ``preauth_max_frame_size`` bytes; afterwards ``max_frame_size``. Text messages,
oversized messages, malformed frames and half-finished handshakes are counted and dropped.

Embedding in a host's own server, without a listener of ours:
:meth:`WebSocketTransport.serve_connection` serves one connection accepted by the host's
``websockets.sync`` server, and :meth:`WebSocketTransport.host_connection` makes a
:class:`~.hosted.HostedConnection` for any other WebSocket implementation.

This module moves bytes only; it imports nothing from :mod:`gossip` but the errors and
:mod:`gossip.transports`.
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.sync.server import ServerConnection
from websockets.uri import WebSocketURI

from gossip.errors import (
    AddressError,
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    MessageTooLarge,
    SendError,
    TransportError,
)
from gossip.transports._admission import DialSlot, MemberCheck, Ticket
from gossip.address import plain_ip
from gossip.transports._sockets import DialHook, ListenHook, close_quietly, listen_socket, shutdown
from gossip.transports.base import (
    Deadline,
    Incoming,
    OnPackets,
    OnStream,
    StreamConn,
    format_addr,
    is_websocket_url,
    split_host_port,
)
from gossip.transports.limits import ConnectionLimits
from gossip.transports.websocket.admission import FRAMES, REQUEST, STREAM, Refusal, Screen
from gossip.transports.websocket.connection import SocketEnv, SocketLink
from gossip.transports.websocket.endpoints import parse_peer_url, websocket_url
from gossip.transports.websocket.hosted import HostedConnection, HostLink
from gossip.transports.websocket.link import CLOSED, OPEN, Link, LinkEnv
from gossip.transports.websocket.listener import Listener, Pending
from gossip.transports.websocket.requests import Requests
from gossip.transports.websocket.stream import WsStream

__all__ = ["WebSocketTransport"]

_log = logging.getLogger("gossip.transports.websocket")

_TICK: Final = 0.25  # the sweeper's period: bounds how late handshake, idle and ping deadlines act
_JOIN_TIMEOUT: Final = 5.0
_FLUSH_TIMEOUT: Final = 0.5  # how long close() lets connections write what is queued
_REDIAL_BACKOFF: Final = 1.0  # best-effort sends do not redial a URL whose dial just failed
_FAILED_MAX: Final = 4096

COUNTERS: Final = (
    "ws_sent", "ws_received", "ws_accepts", "ws_dials", "ws_dial_failures",
    "ws_rejected", "ws_rejected_per_source", "ws_rejected_reserved_for_members",
    "ws_untrusted_refused", "ws_untrusted_per_source_refused", "ws_auth_refused",
    "ws_auth_challenges", "ws_server_unproven", "ws_origin_refused",
    "ws_rejected_frames_closed", "ws_dial_refused_members",
    "ws_dial_refused_member_host", "ws_dial_refused_others", "ws_dial_refused_other_host",
    "ws_not_found", "ws_handshake_failed", "ws_handshake_timeouts", "ws_preauth_timeouts",
    "ws_frame_timeouts", "ws_insecure_refused", "ws_text_dropped", "ws_too_large",
    "ws_protocol_errors", "ws_ping_timeouts", "ws_idle_closed", "ws_frames_lost",
    "ws_buffer_full", "ws_paused", "ws_requests", "ws_streams_dialed",
    "ws_streams_accepted", "ws_streams_refused", "ws_send_errors",
    "ws_callback_errors", "ws_writer_errors",
)
"""Every counter :attr:`WebSocketTransport.stats` shows (zero until it counts)."""


class WebSocketTransport:
    """Gossip over WebSocket (``ws://`` and ``wss://``); see the module docstring.

    Args:
        bind_addr: ``"ip:port"`` to listen on (port 0 picks one); ``""`` for none (dial only,
            or connections served by the host through :meth:`serve_connection` or
            :meth:`host_connection`).
        limits: the bounds shared with the socket transport (frame sizes, timeouts, buffer,
            admission of connections, dial budgets); defaults if None.
        member_check: ``member_check(host)`` tells whether ``host`` is a known member's (see
            :mod:`gossip.transports._admission`).
        path: the URL path of the listener (and of hosted connections).
        advertise_addr: the URL peers should use, if not the one derived from the bound address.
        name: node name used in thread names and logs.
        server_ssl: TLS context of the listener (``wss://``); None serves plain ``ws://``.
        client_ssl: TLS context for dialing ``wss://`` peers; None verifies against the
            system's certificate authorities.
        bearer_token: proved on every dial and required on every accepted connection, never
            sent (``""``: neither); see :mod:`gossip.transports._wsauth`.
        allow_insecure: permit plain ``ws://`` to hosts that are not on loopback.
        handshake_timeout: seconds allowed for a whole dial (TCP, TLS, WebSocket handshake),
            and for an accepted connection to complete its handshake.
        ping_interval: a connection silent this long is pinged, and dropped when it stays
            silent twice as long (0 disables).
        allowed_origins: ``Origin`` values whose handshakes are accepted; any other handshake
            that carries an ``Origin`` (a browser's) or ``Sec-Fetch-*`` header is refused.
        dialer: makes the TCP socket of every dial (``Config.dialer``; see
            :data:`~gossip.transports._sockets.DialHook`); None connects directly.
        listener: makes the listening socket (``Config.listener``, called with
            ``"websocket"``); None binds directly.
        **overrides: fields of :class:`ConnectionLimits` (``idle_timeout=...``), applied to
            ``limits``.

    Raises:
        ValueError: a setting is out of range (the message names it).
        TypeError: an override is not a field of :class:`ConnectionLimits`.
        AddressError: ``bind_addr`` is not ``ip:port``, or ``advertise_addr`` is not a URL.
    """

    def __init__(
        self,
        bind_addr: str = "",
        *,
        limits: ConnectionLimits | None = None,
        member_check: MemberCheck | None = None,
        path: str = "/gossip",
        advertise_addr: str = "",
        name: str = "node",
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        bearer_token: str = "",
        allow_insecure: bool = False,
        handshake_timeout: float = 5.0,
        ping_interval: float = 10.0,
        allowed_origins: list[str] | tuple[str, ...] = (),
        dialer: DialHook | None = None,
        listener: ListenHook | None = None,
        **overrides: Any,
    ) -> None:
        if bind_addr:
            self._bind_ip, self._bind_port, self._family = split_host_port(bind_addr)
        else:
            self._bind_ip, self._bind_port, self._family = "", 0, socket.AF_INET
        if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
            raise ValueError(f"path must start with '/' and hold no query or spaces, got {path!r}")
        if advertise_addr and not is_websocket_url(advertise_addr):
            raise AddressError(f"advertise address {advertise_addr!r} is not a ws:// or wss:// URL")
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, got {handshake_timeout}")
        if ping_interval < 0:
            raise ValueError(f"ping_interval must be >= 0, got {ping_interval}")
        self.limits = limits = (limits or ConnectionLimits()).replace(**overrides)
        self.path = path
        self.name = name
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.bearer_token = bearer_token
        self.allow_insecure = allow_insecure
        self.max_frame_size = limits.max_frame_size
        self.max_stream_frame_size = limits.max_stream_frame_size
        self._advertise = advertise_addr
        self._handshake_timeout = handshake_timeout
        self._admission = limits.reserved_admission(member_check)
        self._dials = limits.dial_budget(member_check)
        self._screen = Screen(path=path, bearer_token=bearer_token,
                              allowed_origins=allowed_origins,
                              nonce_lifetime=2 * handshake_timeout + 1.0, count=self._count,
                              streams_accepted=lambda: self._on_stream is not None)
        self._ids = itertools.count(1)
        self._env = LinkEnv(
            name=name, limits=limits, handshake_timeout=handshake_timeout,
            ping_interval=ping_interval, count=self._count, emit=self._emit,
            is_closed=lambda: self._closed, trust=self._admission.trust, closed=self._link_closed,
            done=self._link_done, accept_stream=self._accept_stream,
            next_id=lambda: next(self._ids))
        self._senv = SocketEnv(
            dial_timeout=limits.dial_timeout, server_ssl=server_ssl,
            client_ssl=self._client_context, bearer_token=bearer_token, screen=self._screen,
            dial_failed=self._dial_failed, dialer=dialer)
        self._listen_hook = listener

        self._lock = threading.Lock()  # guards the tables below and the flags
        self._started = False
        self._closed = False
        self._stop = threading.Event()
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._listener: Listener | None = None
        self._threads: list[threading.Thread] = []
        self._local_addr = ""
        self._links: dict[Link, None] = {}
        self._threaded: dict[SocketLink, None] = {}  # links whose threads close() joins
        self._host_threads: dict[threading.Thread, None] = {}
        self._out: dict[str, SocketLink] = {}
        self._requests = Requests(dial=self._dial_request_link, wait_open=self._wait_open,
                                  is_closed=lambda: self._closed)
        self._proved: weakref.WeakValueDictionary[int, Request] = weakref.WeakValueDictionary()
        self._failed: dict[str, tuple[float, str]] = {}
        self._client_default: ssl.SSLContext | None = None
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # ------------------------------------------------------------------ public API

    @property
    def local_addr(self) -> str:
        """The URL of the listener (``""`` without one, or before :meth:`start`)."""
        return self._local_addr

    @property
    def advertise_addr(self) -> str:
        """The URL to advertise: ``advertise_addr`` if given, else :attr:`local_addr`."""
        return self._advertise or self._local_addr

    @property
    def listening(self) -> bool:
        """True if this transport runs its own listener."""
        return self._listener is not None

    @property
    def bound_addr(self) -> str:
        """The listener's ``"ip:port"`` (``""`` without one)."""
        if self._listener is None:
            return ""
        return format_addr(self._bind_ip, self._listener.sock.getsockname()[1])

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Name the link a packet takes, for the engine's counters: always ``"ws"``."""
        return "ws"

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (``ws_sent``, ``ws_auth_refused``, ``ws_too_large``...)."""
        with self._stats_lock:
            out = dict(self._stats)
        with self._lock:
            out["ws_connections"] = len(self._links)
        return out

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Listen (if a bind address was given) and start the sweeper.

        Raises:
            TransportError: the address could not be bound.
            ClusterClosed: the transport was closed.
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            if self._started:
                raise TransportError(f"transport {self.name} is already started")
            self._started = True
        self._on_packets = on_packets
        self._on_stream = on_stream
        try:
            if self._bind_ip:
                self._bind()
                assert self._listener is not None
                self._threads.append(self._listener.thread())
            self._threads.append(threading.Thread(
                target=self._sweep_loop, name=f"gossip-{self.name}-ws-sweep", daemon=True))
        except BaseException:
            self.close()
            raise
        for thread in self._threads:
            thread.start()
        _log.debug("%s = websocket transport started (%s)", self.name,
                   self._local_addr or "no listener")

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        """Send one frame to the peer at URL ``addr`` on the pooled connection.

        A reliable send dials if needed (waiting for the handshake), then waits up to
        ``timeout`` (default ``io_timeout``) for room while the connection's buffer is full. A
        best-effort send never waits: a connection still being dialed takes the frame into
        its buffer, a full buffer raises :class:`SendQueueFull`, and a URL whose last dial
        failed less than a second ago is not dialed again (:class:`SendError`).

        Raises:
            MessageTooLarge: ``data`` is over ``max_frame_size``.
            ConnectError: the peer could not be reached (reliable), or plain ``ws://`` to a host
                not on loopback is refused.
            SendQueueFull: no room within ``timeout`` (nothing was queued).
            SendError: the connection broke, or (best-effort) the peer was unreachable just now.
            AddressError: ``addr`` is not a valid ``ws://``/``wss://`` URL.
            ClusterClosed: the transport is closed or not started.
        """
        self._check_open()
        if len(data) > self.max_frame_size:
            raise MessageTooLarge(
                f"frame to {addr} is {len(data)} bytes, over max_frame_size {self.max_frame_size}")
        what = f"send to {addr}"
        if not reliable:
            link = self._pooled(addr, False)
            link.put(data, Deadline(0), what)
            return
        deadline = Deadline(self.limits.io_timeout if timeout is None else timeout)
        for attempt in range(2):
            link = self._pooled(addr, True)
            self._wait_open(link, what)
            try:
                link.put(data, deadline, what)
                return
            except SendError:
                self._count("ws_send_errors")
                if attempt or self._closed:
                    raise

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Write ``data`` to ``addr`` on a connection dedicated to the exchange; return the reply.

        The connection comes from a small idle pool per URL (or is dialed) and returns to it
        after a clean exchange.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            ConnectError, SendError, MessageTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        if len(data) > self.max_frame_size:
            raise MessageTooLarge(
                f"frame to {addr} is {len(data)} bytes, over max_frame_size {self.max_frame_size}")
        self._count("ws_requests")
        return self._requests.request(addr, data, Deadline(timeout))

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Dial a WebSocket connection dedicated to one stream (see :class:`StreamConn`).

        Raises:
            ConnectError: ``addr`` could not be reached within ``timeout``.
            AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        uri = self._check_url(addr)
        link = SocketLink(self._env, self._senv, addr, STREAM, False, uri=uri)
        link.slot = self._dial_slot(addr)
        try:
            self._register(link)
        except BaseException:
            self._dials.release(link.slot)
            raise
        link.start()
        self._wait_open(link, f"open stream to {addr}", Deadline(timeout))
        self._count("ws_streams_dialed")
        return link.stream or WsStream(link)

    def close(self) -> None:
        """Close every connection and join every thread started (idempotent).

        Afterwards :meth:`send`, :meth:`request` and :meth:`dial_stream` raise
        :class:`ClusterClosed`; open streams fail at their next read or write.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = list(self._links)
            threaded = list(self._threaded)
            host_threads = list(self._host_threads)
        self._stop.set()
        listener = self._listener
        if listener is not None:
            shutdown(listener.sock)
            listener.waker.wake()
        # What is queued (a leave announcement...) is written first, for a short while.
        for link in links:
            link.request_close(final=True)
        me = threading.current_thread()
        flush_end = time.monotonic() + _FLUSH_TIMEOUT
        for link in threaded:
            if link.thread.ident is not None and link.thread is not me:
                link.thread.join(max(0.0, flush_end - time.monotonic()))
        for link in links:
            link.abort("the transport is closed")
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in self._threads + [x.thread for x in threaded] + host_threads:
            if thread.ident is not None and thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        stragglers = [t.name for t in self._threads + [x.thread for x in threaded] + host_threads
                      if t.is_alive() and t is not me]
        if stragglers:
            _log.warning("%s ! threads did not stop: %s", self.name, stragglers)
        if listener is not None:
            listener.close()
        _log.debug("%s = websocket transport closed", self.name)

    def __enter__(self) -> WebSocketTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self._closed else ("started" if self._started else "new")
            return (f"<WebSocketTransport {self.name} {self._local_addr or 'no listener'} {state} "
                    f"links={len(self._links)} out={len(self._out)}>")

    # ------------------------------------------------------------------ embedding

    def screen(self, path: str, headers: Mapping[str, str] | Any,
               request: Request | None = None) -> Refusal | None:
        """Decide whether an opening handshake for ``path`` with ``headers`` is acceptable.

        Checks the path, a browser's origin, the proof of the bearer token (its challenge is a
        401 :class:`Refusal` whose headers carry it) and the channel; every refusal is counted.
        Used by :meth:`gossip.Cluster.websocket_process_request`; our own listener and the ASGI
        bridge screen the same way. Pass the websockets ``request`` when the same request is
        served later by :meth:`serve_connection` (its proof is then not asked twice).

        Returns:
            None to accept, else the :class:`Refusal` to answer with.
        """
        _kind, refusal, proved = self._screen(path, headers)
        if refusal is None and proved and request is not None:
            self._proved[id(request)] = request
        return refusal

    def serve_connection(self, ws: ServerConnection) -> None:
        """Serve one connection accepted by the host's ``websockets.sync`` server until it ends.

        Runs on the host's connection handler thread. The handshake is checked again (path,
        token, channel, connection limits); a refused connection is closed with code 1008
        (policy violation) and the reason. The host's server decides the largest message it
        accepts (``max_size`` of ``websockets.sync.server.serve``: pass ``max_frame_size``).
        """
        if self._closed or not self._started:
            try:
                ws.close(CloseCode.TRY_AGAIN_LATER, "gossip is not running")
            except Exception:  # the connection may be gone already
                pass
            return
        request = ws.request
        path = request.path if request is not None else ""
        headers: Any = request.headers if request is not None else {}
        known = request is not None and self._proved.pop(id(request), None) is request
        kind, refusal, proved = self._screen(path, headers, known)
        try:
            remote = ws.remote_address
            ip, port = str(remote[0]), int(remote[1])
        except (OSError, TypeError, IndexError):
            ip, port = "", 0
        ip = plain_ip(ip)
        peer = format_addr(ip, port) if ip else "host-connection"
        admitted: Ticket | Refusal = refusal if refusal is not None else self._admit(ip)
        if isinstance(admitted, Refusal):
            try:
                ws.close(CloseCode.POLICY_VIOLATION, admitted.reason[:120])
            except Exception:
                pass
            return
        link = HostLink(self._env, ws, kind, peer, ip)
        if proved:
            link.trusted = True
            link.max_in = link.max_out
        self._register_accepted(link, admitted)
        with self._lock:
            self._host_threads[link.thread] = None
        try:
            link.serve()
        finally:
            with self._lock:
                self._host_threads.pop(link.thread, None)

    def host_connection(self, path: str, headers: Mapping[str, str] | Any, peer: tuple[str, int] | None,
                        wake: Callable[[], None]) -> HostedConnection | Refusal:
        """Accept a connection carried by another WebSocket implementation (ASGI...).

        Call it with the handshake's path and headers before accepting the upgrade; on a
        :class:`HostedConnection`, accept the upgrade and call its ``start()``; on a
        :class:`Refusal`, deny the upgrade with its status and reason. ``peer`` is the client's
        ``(ip, port)`` if known.
        """
        if self._closed or not self._started:
            return Refusal(503, "gossip is not running")
        kind, refusal, proved = self._screen(path, headers)
        ip, port = (plain_ip(str(peer[0])), int(peer[1])) if peer else ("", 0)
        admitted: Ticket | Refusal = refusal if refusal is not None else self._admit(ip)
        if isinstance(admitted, Refusal):
            return admitted
        link = HostedConnection(self._env, kind, format_addr(ip, port) if ip else "hosted-connection",
                                ip, wake)
        if proved:
            link.trusted = True
            link.max_in = link.max_out
        self._register_accepted(link, admitted)
        return link

    # ------------------------------------------------------------------ internals: checks

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterClosed(f"transport {self.name} is closed")
        if not self._started:
            raise ClusterClosed(f"transport {self.name} is not started")

    def _check_url(self, addr: str) -> WebSocketURI:
        """Parse a peer URL and apply the plain-``ws://`` policy (refusals counted)."""
        try:
            return parse_peer_url(addr, self.allow_insecure)
        except ConnectError:
            self._count("ws_insecure_refused")
            raise

    def _client_context(self) -> ssl.SSLContext:
        if self.client_ssl is not None:
            return self.client_ssl
        ctx = self._client_default
        if ctx is None:
            ctx = self._client_default = ssl.create_default_context()
        return ctx

    def _admit(self, ip: str) -> Ticket | Refusal:
        """Apply the accepted-connection limits to a new connection from ``ip`` (counted)."""
        if self._closed:
            return Refusal(503, "shutting down")
        ticket = self._admission.admit(ip)
        if isinstance(ticket, str):
            self._count(f"ws_{ticket}")
            return Refusal(503, "too many connections")
        return ticket

    # ------------------------------------------------------------------ internals: tables

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    def _emit(self, batch: list[Incoming]) -> None:
        callback = self._on_packets
        if callback is None:
            return
        try:
            callback(batch)
        except Exception:
            self._count("ws_callback_errors")
            _log.error("%s ! on_packets raised", self.name, exc_info=True)

    def _register(self, link: SocketLink) -> None:
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            self._links[link] = None
            self._threaded[link] = None

    def _register_accepted(self, link: Link, ticket: Ticket) -> None:
        """Track an accepted connection (``_admit`` gave it ``ticket``)."""
        link.ticket = ticket
        ticket.owner = link
        if link.trusted:
            self._admission.trust(ticket)
        with self._lock:
            self._links[link] = None
            if isinstance(link, SocketLink):
                self._threaded[link] = None
        self._count("ws_accepts")

    def _link_closed(self, link: Link) -> None:
        """A connection closed: forget it as a pooled or idle connection, release its slots."""
        with self._lock:
            if isinstance(link, SocketLink) and self._out.get(link.peer_addr) is link:
                del self._out[link.peer_addr]
            self._links.pop(link, None)
        self._requests.forget(link)
        if link.ticket is not None:
            self._admission.release(link.ticket)
        self._dials.release(link.slot)

    def _link_done(self, link: Link) -> None:
        """A connection's threads are finished: stop tracking them."""
        with self._lock:
            self._links.pop(link, None)
            if isinstance(link, SocketLink) and not self._closed:
                self._threaded.pop(link, None)

    def _dial_slot(self, addr: str) -> DialSlot:
        return self._dials.take(addr, lambda why: self._count(f"ws_{why}"))

    def _dial_failed(self, addr: str, reason: str) -> None:
        with self._lock:
            if len(self._failed) >= _FAILED_MAX:
                self._failed.clear()
            self._failed[addr] = (time.monotonic(), reason)

    def _pooled(self, addr: str, reliable: bool) -> SocketLink:
        """Return the pooled frame connection to ``addr``, dialing one if needed."""
        with self._lock:
            link = self._out.get(addr)
            if link is not None and link.state is not CLOSED and not link.closing:
                return link
            if not reliable:
                failed = self._failed.get(addr)
                if failed is not None and time.monotonic() - failed[0] < _REDIAL_BACKOFF:
                    raise SendError(f"send to {addr}: unreachable just now ({failed[1]})")
        uri = self._check_url(addr)
        slot = self._dial_slot(addr)  # outside the lock: it asks the engine about members
        with self._lock:
            if self._closed:
                self._dials.release(slot)
                raise ClusterClosed(f"transport {self.name} is closed")
            link = self._out.get(addr)
            if link is not None and link.state is not CLOSED and not link.closing:
                self._dials.release(slot)
                return link
            link = SocketLink(self._env, self._senv, addr, FRAMES, False, uri=uri)
            link.slot = slot
            self._out[addr] = link
            self._links[link] = None
            self._threaded[link] = None
            self._failed.pop(addr, None)
        link.start()
        return link

    def _wait_open(self, link: Link, what: str, deadline: Deadline | None = None) -> None:
        """Wait until ``link`` finished its handshake.

        Raises:
            ConnectError: the dial failed or did not finish in time.
        """
        if link.state is OPEN:
            return
        left = self._handshake_timeout + 0.5
        if deadline is not None:
            try:
                d = deadline.remaining(what)
            except GossipTimeout as exc:
                raise ConnectError(f"{what}: timed out") from exc
            if d is not None:
                left = min(left, d)
        if not link.ready.wait(left):
            link.abort("the handshake did not finish in time")
            raise ConnectError(f"{what}: the handshake did not finish within {left:.3g}s")
        if link.state is not OPEN:
            if self._closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            raise ConnectError(f"{what}: {link.error or 'connection closed'}")

    def _dial_request_link(self, addr: str) -> SocketLink:
        uri = self._check_url(addr)
        link = SocketLink(self._env, self._senv, addr, REQUEST, False, uri=uri)
        link.slot = self._dial_slot(addr)
        try:
            self._register(link)
        except BaseException:
            self._dials.release(link.slot)
            raise
        link.start()
        return link

    def _accept_stream(self, link: Link) -> None:
        """Hand an accepted stream connection to ``on_stream`` (called on its own thread)."""
        callback = self._on_stream
        stream = WsStream(link)
        if callback is None or self._closed:
            self._count("ws_streams_refused")
            link.abort("streams are not accepted")
            return
        self._count("ws_streams_accepted")
        try:
            callback(stream)
        except Exception:
            self._count("ws_callback_errors")
            _log.error("%s ! on_stream raised", self.name, exc_info=True)
            stream.close()

    # ------------------------------------------------------------------ internals: threads

    def _bind(self) -> None:
        sock: socket.socket | None = None
        try:
            sock = listen_socket(self._listen_hook, "websocket", self._family, self._bind_ip,
                                 self._bind_port)
            sock.listen(512)
            sock.setblocking(False)
        except OSError as exc:
            close_quietly(sock)
            where = format_addr(self._bind_ip, self._bind_port)
            raise TransportError(f"cannot bind {where}: {exc}") from exc
        self._listener = Listener(
            sock, name=self.name, tls=self.server_ssl is not None,
            handshake_timeout=self._handshake_timeout, admit=self._admit,
            release=self._admission.release, on_ready=self._on_ready, count=self._count,
            stop=self._stop)
        port = sock.getsockname()[1]
        self._local_addr = websocket_url(self._bind_ip, port, self.path, self.server_ssl is not None)

    def _on_ready(self, pend: Pending) -> None:
        """An accepted connection's request line came: it becomes a link with its threads."""
        link = SocketLink(self._env, self._senv, pend.peer, FRAMES, True, sock=pend.sock,
                          ip=pend.ip, prefix=bytes(pend.buf))
        link.created = pend.since
        self._register_accepted(link, pend.ticket)
        link.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(_TICK):
            try:
                self._sweep(time.monotonic())
            except Exception:
                _log.error("%s ! websocket sweep failed", self.name, exc_info=True)

    def _sweep(self, now: float) -> None:
        """Act on every link's deadlines."""
        with self._lock:
            links = list(self._links)
        idle_req = self._requests.idle()
        for link in links:
            link.tick(now, link in idle_req)

