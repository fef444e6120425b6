"""HTTP transport: gossip frames as POST bodies to ``http://`` and ``https://`` URLs.

For a node that only an HTTP proxy can reach (paularlott/gossip's HTTP transport, v0.8). Every
packet travels as a POST to the peer's URL (its ``http_path``, ``/gossip`` by default); the
body is a batch of length-prefixed frames (:mod:`.frames`), and the response body
carries what the peer's engine answered on that request (an ack, a join or push/pull reply,
the reply to a request). There is no UDP: best-effort and reliable packets both travel as
POSTs.

Sending, :class:`HTTPTransport` keeps per peer URL:

- a bounded queue (``conn_buffer_size`` bytes) drained by one sender thread
  (``gossip-<node>-http-out-<n>``, ended after ``idle_timeout`` unused) that POSTs what is
  queued in one body (up to ``max_frame_size`` bytes) on its keep-alive connection; a
  reliable send waits for room up to its timeout, a best-effort one never waits
  (:class:`~gossip.errors.SendQueueFull`);
- up to ``pool_size`` idle keep-alive connections for :meth:`HTTPTransport.request`, whose
  single reply is the response body.

A response's frames reach the engine like received packets, on a connection whose
``send_frame`` POSTs back to the peer. A peer that cannot be reached is not dialed again for
a second (its queued frames are dropped and counted, as lost datagrams are).

Listening, the transport's own server (:mod:`.server`) or a host's WSGI/ASGI server
(:mod:`.hosted`) hands each POST to the same judge, :class:`~.server.Exchanges`.

Streams are not carried over HTTP: :meth:`HTTPTransport.dial_stream` raises
:class:`~gossip.errors.StreamRefused`.

Security: with a bearer token, each request and each response prove it with an HMAC
(:mod:`.frames`); the token itself never travels. Plain ``http://`` to a host that is not
on loopback is refused unless ``allow_insecure`` is set; ``https://`` verifies the server's
certificate by default. Counters are named ``http_*``.

This module imports nothing from :mod:`gossip` but the errors and the transports.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque

from gossip.address import is_http_url, is_loopback
from gossip.errors import (
    AddressError,
    ClusterClosed,
    ConnectError,
    GossipError,
    GossipTimeout,
    MessageTooLarge,
    SendError,
    SendQueueFull,
    StreamRefused,
    TransportError,
)
from gossip.transports.http import frames as http_frames
from gossip.transports._admission import MemberCheck
from gossip.transports._sockets import DialHook, ListenHook, dial_socket, listen_socket
from gossip.transports.base import Incoming, OnPackets, OnStream, StreamConn, split_host_port
from gossip.transports.http.server import CONTENT_TYPE, Exchanges, Listener
from gossip.transports.limits import ConnectionLimits

__all__ = ["HTTPTransport", "is_http_url"]

_log = logging.getLogger("gossip.transports.http")

_BACKOFF = 1.0
_JOIN = 5.0


class _Target:
    """A peer URL, parsed once."""

    __slots__ = ("url", "https", "host", "port", "path")

    def __init__(self, url: str, allow_insecure: bool) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise AddressError(f"invalid HTTP peer URL {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host or "@" in parts.netloc:
            raise AddressError(f"invalid HTTP peer URL {url!r}: expected http(s)://host[:port]/path")
        if scheme == "http" and not allow_insecure and not is_loopback(host):
            raise AddressError(f"refusing plain http:// to {host}, which is not loopback: use "
                               "https://, or set allow_insecure_http=True")
        self.url = url
        self.https = scheme == "https"
        self.host = host
        self.port = port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Peer:
    """The send queue of one peer URL, its sender thread and its idle request connections."""

    def __init__(self, target: _Target) -> None:
        self.target = target
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.cv = threading.Condition(threading.Lock())
        self.sender: threading.Thread | None = None
        self.idle: list[http.client.HTTPConnection] = []
        self.ready: http.client.HTTPConnection | None = None   # dialed by a sender, for the thread
        self.connected = False   # the sender thread's last POST went through
        self.active: http.client.HTTPConnection | None = None   # the sender's POST under way
        self.failed_at = 0.0


class _Back:
    """The connection a response's frames carry: an answer to them is a new POST to the peer."""

    def __init__(self, transport: HTTPTransport, url: str) -> None:
        self._transport = transport
        self._url = url

    @property
    def peer(self) -> str:
        """The peer's URL."""
        return self._url

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """POST ``data`` to the peer (queued, as a reliable send)."""
        self._transport.send(self._url, data, True, timeout)

    def pause_reading(self) -> None:
        """Nothing to pause: a response is read whole."""

    def resume_reading(self) -> None:
        """Nothing to resume."""

    def mark_trusted(self) -> None:
        """Nothing to lift: this node chose to dial the peer."""

    def mark_rejected(self) -> None:
        """Nothing to close: the response is over."""

    def close(self) -> None:
        """Nothing to close."""


class HTTPTransport:
    """Gossip frames over HTTP POSTs (see the module docstring).

    Args:
        bind_addr: ``ip:port`` of the node's own listener (port 0 picks one); ``""`` for none
            (the node only dials, or its host's server serves it, :mod:`.hosted`).
        path: the URL path gossip POSTs go to.
        limits: the bounds shared with the other transports.
        member_check: tells which hosts are members' (admission of connections).
        advertise_addr: the URL to advertise instead of the listener's.
        name: the node's name (threads, logs).
        server_ssl: TLS of the listener (it then serves ``https://``).
        client_ssl: TLS for ``https://`` peers; None verifies against the system's authorities.
        bearer_token: the shared secret that requests and responses prove (empty: none).
        allow_insecure: permit ``http://`` to hosts that are not on loopback.
        reply_wait: the longest this node holds a response open for its engine's answer.
        pool_size: idle keep-alive request connections kept per peer.
        auth_window: how far a request's time may be from this node's clock (bearer token).
        max_frames_per_body: frames one POST may carry.
        allowed_origins: browser origins whose requests are served (normally none).
        dialer: the dial hook (:data:`gossip.transports._sockets.DialHook`).
        listener: the listen hook, asked for kind ``"http"``.
    """

    def __init__(self, bind_addr: str = "", *, path: str = "/gossip",
                 limits: ConnectionLimits | None = None, member_check: MemberCheck | None = None,
                 advertise_addr: str = "", name: str = "node",
                 server_ssl: ssl.SSLContext | None = None, client_ssl: ssl.SSLContext | None = None,
                 bearer_token: str = "", allow_insecure: bool = False, reply_wait: float = 10.0,
                 pool_size: int = 4, auth_window: float = 60.0, max_frames_per_body: int = 1024,
                 allowed_origins: tuple[str, ...] = (), dialer: DialHook | None = None,
                 listener: ListenHook | None = None) -> None:
        self._bind = bind_addr
        self.path = path
        self.limits = limits or ConnectionLimits()
        self._member_check = member_check
        self._advertise = advertise_addr
        self._name = name
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._token = bearer_token
        self._allow_insecure = allow_insecure
        self._reply_wait = reply_wait
        self._pool_size = pool_size
        self._max_frames = max_frames_per_body
        self._dialer = dialer
        self._listen_hook = listener
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}
        self._senders: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._on_packets: OnPackets | None = None
        self._started = False
        self._closed = False
        self._listener: Listener | None = None
        self._local = ""
        self.exchanges = Exchanges(path=path, limits=self.limits, bearer_token=bearer_token,
                                   reply_wait=reply_wait, auth_window=auth_window,
                                   max_frames=max_frames_per_body, allowed_origins=allowed_origins,
                                   count=self._count)

    # ------------------------------------------------------------------ interface

    @property
    def local_addr(self) -> str:
        """The advertised URL, else the listener's (``""`` for a node without a listener)."""
        return self._advertise or self._local

    @property
    def stats(self) -> dict[str, int]:
        """The counters, each named ``http_<what>``."""
        with self._stats_lock:
            out = {f"http_{k}": v for k, v in self._stats.items()}
        listener = self._listener
        out["http_connections"] = listener.connections if listener is not None else 0
        return out

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Every packet of this transport is a POST: ``http``."""
        return "http"

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Start the listener, if the transport has one (streams are never accepted).

        Raises:
            TransportError: the listener could not bind.
            ClusterClosed: the transport was closed.
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"HTTP transport {self._name} is closed")
            if self._started:
                raise TransportError(f"HTTP transport {self._name} is already started")
            self._started = True
            self._on_packets = on_packets
        if self._bind:
            try:
                host, port, family = split_host_port(self._bind)
                sock = listen_socket(self._listen_hook, "http", family, host, port)
                sock.listen(128)
            except (OSError, GossipError) as exc:
                raise TransportError(f"cannot listen on {self._bind} for HTTP: {exc}") from exc
            bound = sock.getsockname()
            shown = f"[{bound[0]}]:{bound[1]}" if ":" in str(bound[0]) else f"{bound[0]}:{bound[1]}"
            self._local = f"{'https' if self._server_ssl else 'http'}://{shown}{self.path}"
            admission = self.limits.reserved_admission(self._member_check)
            self._listener = Listener(sock, self.exchanges, admission, self.limits, self._server_ssl,
                                      self._name, self._count)
            self._listener.start()
        self.exchanges.on_packets = on_packets

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        """Queue one frame for a POST to ``addr``; see :meth:`~gossip.transports.base.Transport.send`.

        Raises:
            MessageTooLarge: ``data`` is over ``max_frame_size``.
            SendQueueFull: the peer's queue is full (a best-effort send never waits; a
                reliable one waits up to ``timeout``).
            ConnectError: the peer could not be reached in the last second.
            AddressError: ``addr`` is not an HTTP URL this node may dial.
            ClusterClosed: the transport is closed.
        """
        if len(data) > self.limits.max_frame_size:
            raise MessageTooLarge(f"a frame of {len(data)} bytes is over the limit of "
                                  f"{self.limits.max_frame_size} (to {addr})")
        peer = self._peer(addr)
        if peer.failed_at and time.monotonic() - peer.failed_at < _BACKOFF:
            self._count("dropped_peer_down")
            raise ConnectError(f"HTTP peer {addr} was unreachable less than {_BACKOFF:.0f}s ago")
        if reliable and peer.sender is None and not peer.connected and peer.ready is None:
            # The first reliable send to a peer dials it here, as TCP does, so that a refused
            # connection or certificate is the sender's error (a best-effort one never waits).
            try:
                dialed: http.client.HTTPConnection | None = self._connect(peer.target, self.limits.dial_timeout)
            except ConnectError:
                peer.failed_at = time.monotonic()
                raise
            with peer.cv:
                if peer.ready is None:
                    peer.ready, dialed = dialed, None
            if dialed is not None:
                dialed.close()
        wait = timeout if reliable else 0.0
        end = None if wait is None else time.monotonic() + wait
        limit = self.limits.conn_buffer_size
        with peer.cv:
            while peer.queued and peer.queued + len(data) > limit:
                left = None if end is None else end - time.monotonic()
                if self._closed:
                    raise ClusterClosed(f"HTTP transport {self._name} is closed")
                if left is not None and left <= 0:
                    self._count("dropped_queue_full")
                    raise SendQueueFull(f"the HTTP queue to {addr} is full")
                peer.cv.wait(left)
            peer.queue.append(bytes(data))
            peer.queued += len(data)
            peer.cv.notify_all()
            if peer.sender is None:
                self._start_sender(peer)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """POST one frame to ``addr`` and return the reply in the response.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            ConnectError, SendError, MessageTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        if len(data) > self.limits.max_frame_size:
            raise MessageTooLarge(f"a request of {len(data)} bytes is over the limit of "
                                  f"{self.limits.max_frame_size} (to {addr})")
        peer = self._peer(addr)
        with peer.cv:
            conn = peer.idle.pop() if peer.idle else None
        deadline = time.monotonic() + timeout
        try:
            frames, conn = self._post(peer, conn, [data], request=True, wait=timeout, deadline=deadline)
        except GossipTimeout:
            raise
        except GossipError:
            self._count("request_errors")
            raise
        if conn is not None:
            with peer.cv:
                if len(peer.idle) < self._pool_size and not self._closed:
                    peer.idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()
        if not frames:
            raise GossipTimeout(f"no reply from {addr} within {timeout:.3g}s")
        self._deliver(addr, frames[1:])
        return frames[0]

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Streams are not carried over HTTP.

        Raises:
            StreamRefused: always (its reason says why).
        """
        self._count("streams_refused")
        raise StreamRefused(f"cannot open a stream to {addr}: the HTTP transport carries no "
                            "streams (use a WebSocket or TCP address for streams)",
                            "streams are not carried over HTTP")

    def close(self) -> None:
        """Stop the listener and the senders, close every connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            peers = list(self._peers.values())
            senders = list(self._senders)
        self.exchanges.close()
        if self._listener is not None:
            self._listener.close()
        for peer in peers:
            with peer.cv:
                peer.queue.clear()
                peer.queued = 0
                idle, peer.idle = peer.idle, []
                peer.cv.notify_all()
            for conn in idle:
                conn.close()
            if peer.ready is not None:
                peer.ready.close()
                peer.ready = None
            active = peer.active
            if active is not None and active.sock is not None:
                try:
                    active.sock.shutdown(socket.SHUT_RDWR)   # a POST waiting for its answer ends now
                except OSError:
                    pass
        me = threading.current_thread()
        for t in senders:
            if t is not me:
                t.join(_JOIN)

    def __enter__(self) -> HTTPTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HTTPTransport {self._name} {self.local_addr or 'dial only'}>"

    # ------------------------------------------------------------------ sending

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    def _peer(self, addr: str) -> _Peer:
        peer = self._peers.get(addr)
        if peer is not None:
            return peer
        target = _Target(addr, self._allow_insecure)
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"HTTP transport {self._name} is closed")
            if not self._started:
                raise ClusterClosed(f"HTTP transport {self._name} is not started")
            peer = self._peers.get(addr)
            if peer is None:
                if len(self._peers) >= self.limits.max_member_dials:
                    self._forget_idle_peers()
                if len(self._peers) >= self.limits.max_member_dials:
                    self._count("dial_refused")
                    raise ConnectError(f"cannot dial {addr}: {len(self._peers)} HTTP peers held already")
                peer = self._peers[addr] = _Peer(target)
        return peer

    def _forget_idle_peers(self) -> None:
        """Drop peers with no sender and nothing queued (the lock is held)."""
        for addr, peer in list(self._peers.items()):
            if peer.sender is None and not peer.queue:
                for conn in peer.idle:
                    conn.close()
                del self._peers[addr]

    def _start_sender(self, peer: _Peer) -> None:
        """Start the peer's sender thread (``peer.cv`` is held)."""
        thread = threading.Thread(target=self._send_loop, args=(peer,), daemon=True,
                                  name=f"gossip-{self._name}-http-out-{next(self._ids)}")
        peer.sender = thread
        with self._lock:
            if self._closed:
                peer.sender = None
                raise ClusterClosed(f"HTTP transport {self._name} is closed")
            self._senders.add(thread)
        thread.start()

    def _send_loop(self, peer: _Peer) -> None:
        conn: http.client.HTTPConnection | None = None
        idle = self.limits.idle_timeout
        budget = self.limits.max_frame_size
        try:
            while True:
                with peer.cv:
                    end = time.monotonic() + idle
                    while not peer.queue and not self._closed:
                        left = end - time.monotonic()
                        if left <= 0:
                            peer.sender = None
                            return
                        peer.cv.wait(left)
                    if self._closed:
                        peer.sender = None
                        return
                    batch = [peer.queue.popleft()]
                    size = len(batch[0])
                    while peer.queue and len(batch) < self._max_frames and size + len(peer.queue[0]) <= budget:
                        frame = peer.queue.popleft()
                        batch.append(frame)
                        size += len(frame)
                    peer.queued -= size
                    peer.cv.notify_all()
                    if conn is None:
                        conn, peer.ready = peer.ready, None
                try:
                    frames, conn = self._post(peer, conn, batch, request=False, wait=self._reply_wait,
                                              deadline=None, track=True)
                except ClusterClosed:
                    return
                except GossipError as exc:
                    conn = None
                    peer.connected = False
                    self._count("frames_lost", len(batch))
                    self._count("send_errors")
                    _log.debug("%s ! POST to %s failed: %s", self._name, peer.target.url, exc)
                    if isinstance(exc, ConnectError):
                        with peer.cv:
                            peer.failed_at = time.monotonic()
                            self._count("frames_lost", len(peer.queue))
                            peer.queue.clear()
                            peer.queued = 0
                            peer.cv.notify_all()
                    continue
                peer.failed_at = 0.0
                peer.connected = conn is not None
                self._count("frames_sent", len(batch))
                self._deliver(peer.target.url, frames)
        finally:
            peer.connected = False
            if conn is not None:
                conn.close()
            with self._lock:
                self._senders.discard(threading.current_thread())

    def _connect(self, target: _Target, timeout: float) -> http.client.HTTPConnection:
        dialer = self._dialer
        try:
            if dialer is not None:
                sock = dial_socket(dialer, target.host, target.port, timeout)
            else:
                sock = socket.create_connection((target.host, target.port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.https:
                ctx = self._client_ssl or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=target.host)
        except OSError as exc:
            self._count("dial_errors")
            raise ConnectError(f"cannot connect to {target.url}: {exc}") from exc
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        conn.sock = sock
        return conn

    def _post(self, peer: _Peer, conn: http.client.HTTPConnection | None, frames: list[bytes],
              request: bool, wait: float, deadline: float | None,
              track: bool = False) -> tuple[list[bytes], http.client.HTTPConnection | None]:
        """POST ``frames`` and return the response's frames and the connection to keep (or None);
        ``track``: the connection is the peer's sender's (close() cuts it)."""
        if self._closed:
            raise ClusterClosed(f"HTTP transport {self._name} is closed")
        target = peer.target
        body = http_frames.pack_frames(frames)
        headers = {"Content-Type": CONTENT_TYPE, "Gossip-Wait": f"{max(0.0, wait):.3f}"}
        if request:
            headers["Gossip-Exchange"] = "request"
        auth = ""
        if self._token:
            auth = http_frames.request_auth(self._token, time.time(), body)
            headers["Gossip-Auth"] = auth
        io = self.limits.io_timeout + max(0.0, wait)
        for attempt in (0, 1):
            fresh = conn is None
            if conn is None:
                conn = self._connect(target, self.limits.dial_timeout)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    conn.close()
                    raise GossipTimeout(f"no reply from {target.url}: timed out")
                io = left + self.limits.io_timeout
            assert conn.sock is not None
            conn.sock.settimeout(io)
            if track:
                peer.active = conn
                if self._closed:
                    conn.close()
                    raise ClusterClosed(f"HTTP transport {self._name} is closed")
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                resp = conn.getresponse()
                status = resp.status
                length = resp.getheader("Content-Length", "")
                if not length.isdigit() or int(length) > self.limits.max_frame_size * 2:
                    conn.close()
                    self._count("bad_responses")
                    raise SendError(f"{target.url} answered without a bounded Content-Length")
                data = resp.read(int(length))
                proof = resp.getheader("Gossip-Auth", "")
                keep = not resp.will_close
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                conn = None
                if fresh or attempt:  # a kept connection the server had closed: dial again once
                    raise SendError(f"POST to {target.url} failed: {exc}") from exc
                continue
            except TimeoutError as exc:
                conn.close()
                raise GossipTimeout(f"POST to {target.url}: timed out") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if self._closed:
                    raise ClusterClosed(f"HTTP transport {self._name} is closed") from exc
                raise SendError(f"POST to {target.url} failed: {exc}") from exc
            finally:
                if track:
                    peer.active = None
            break
        else:  # pragma: no cover - the loop always breaks or raises
            raise SendError(f"POST to {target.url} failed")
        if not keep:
            conn.close()
        kept = conn if keep else None
        if status != 200:
            if kept is not None:
                kept.close()
            self._count(f"refused_{status}")
            reason = data[:200].decode("utf-8", "replace").strip()
            raise SendError(f"{target.url} refused the POST: {status} {reason}")
        if self._token and not http_frames.check_response_auth(self._token, auth.rpartition(".")[2],
                                                               200, data, proof):
            if kept is not None:
                kept.close()
            self._count("auth_refused_by_peer")
            raise SendError(f"{target.url} did not prove the bearer token: not a member")
        try:
            replies = http_frames.unpack_frames(data, self.limits.max_frame_size, self._max_frames)
        except ValueError as exc:
            if kept is not None:
                kept.close()
            self._count("bad_responses")
            raise SendError(f"{target.url} answered a malformed body: {exc}") from exc
        return replies, kept

    def _deliver(self, url: str, frames: list[bytes]) -> None:
        on_packets = self._on_packets
        if not frames or on_packets is None or self._closed:
            return
        back = _Back(self, url)
        now = time.monotonic()
        self._count("replies_received", len(frames))
        on_packets([Incoming(f, url, True, back, now, "http") for f in frames])

