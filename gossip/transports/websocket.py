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
  writer's half-close is the text message :data:`END_OF_STREAM`.

It is built on websockets' threaded implementation: each connection is a
:class:`websockets.sync.client.ClientConnection` or :class:`websockets.sync.server.ServerConnection`
(subclassed, as their ``create_connection`` hook intends) whose reader thread parses frames and
hands them straight to the engine, one batch per socket read, without websockets' message queue.
Writes never block the thread that asks for them: a frame is queued in the connection's bounded
buffer and the connection's own writer thread encodes and writes everything queued in one
system call, so a peer that does not read slows only its own writer, and the senders wait for
room up to their timeout (then :class:`~gossip.errors.SendQueueFull`), as on TCP. The writer
frames binary messages itself (RFC 6455 section 5.2; no extension is ever negotiated on these
connections), which spares websockets' serializer its copies of the payload, and hands a plain
socket header and payload together in one ``sendmsg``. Reading can be
paused per connection: the reader thread then stops before its next read.

Threads, every one named ``gossip-<node>-ws-...`` and joined by :meth:`WebSocketTransport.close`:
``ws-accept`` (the listener, if any), ``ws-sweep`` (handshake, idle and keepalive deadlines),
and per connection ``ws-<n>`` (dial or TLS accept, then writes) and ``ws-<n>-read``. Accepted
connections are counted before any thread exists for them: at most ``max_connections`` (and
``max_connections_per_source`` per remote IP), and at most
``preauth_buffer_limit // preauth_max_frame_size`` that have not delivered a frame the engine
accepted, so that a flood of half-finished handshakes costs neither unbounded threads nor memory.

Security: when a bearer token is set, every dial sends ``Authorization: Bearer <token>`` and
every accepted handshake must carry it (compared in constant time); a refusal is an HTTP 401
whose body says why, and is counted (``ws_auth_refused``). Plain ``ws://`` to a host that is
not on loopback is refused unless ``allow_insecure`` is set; ``wss://`` verifies the server's
certificate by default. Before a connection delivered a frame the engine accepted, its messages
may be at most ``preauth_max_frame_size`` bytes; afterwards ``max_frame_size``. Text messages,
oversized messages, malformed frames and half-finished handshakes are counted and dropped.

Embedding in a host's own server, without a listener of ours:

- :meth:`WebSocketTransport.serve_connection` serves one connection accepted by the host's
  ``websockets.sync`` server (:meth:`gossip.Cluster.websocket_handler` uses it);
- :class:`HostedConnection` lets any other WebSocket implementation carry a gossip connection
  (the ASGI bridge :mod:`gossip.contrib.asgi` is built on it): the host feeds received messages
  in, takes the messages to send out, and says when the connection ended.

This module moves bytes only; it imports nothing from :mod:`gossip` but the errors and
:mod:`gossip.transports.base`.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import logging
import os
import select
import selectors
import socket
import ssl
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from websockets.client import ClientProtocol
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
)
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import CLIENT, OPEN, Event
from websockets.server import ServerProtocol
from websockets.sync.client import ClientConnection
from websockets.sync.server import ServerConnection
from websockets.uri import WebSocketURI, parse_uri
from websockets.utils import apply_mask

try:  # the C version websockets ships (the pure Python one above is its fallback)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - platforms without the extension
    pass

from gossip.errors import (
    AddressError,
    ClusterClosed,
    ConnectError,
    GossipError,
    GossipTimeout,
    MessageTooLarge,
    SendError,
    SendQueueFull,
    TransportError,
)
from gossip.transports import _wsauth as wsauth
from gossip.transports._admission import Admission, DialBudget, DialSlot, MemberCheck, Ticket
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

__all__ = [
    "WebSocketTransport",
    "HostedConnection",
    "Refusal",
    "END_OF_STREAM",
    "CHANNEL_HEADER",
    "is_websocket_url",
    "websocket_url",
    "server_tls_context",
    "client_tls_context",
]

_log = logging.getLogger("gossip.transports.websocket")
_wslog = logging.getLogger("gossip.transports.websocket.protocol")

END_OF_STREAM: Final = "gossip:end-of-stream"
"""The text message that ends the writing side of a stream (its half-close)."""
CHANNEL_HEADER: Final = "Gossip-Channel"
"""Handshake header naming what a connection carries: ``frames`` (the default) or ``stream``."""
_FRAMES: Final = "frames"
_STREAM: Final = "stream"
_REQUEST: Final = "request"  # a dialed connection dedicated to request(); frames to the peer

_CONNECTING, _OPEN, _CLOSED = "connecting", "open", "closed"

_TICK = 0.25  # the sweeper's period: bounds how late handshake, idle and ping deadlines act
_JOIN_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 1.0  # how long a graceful close waits for the peer's close frame
_FLUSH_TIMEOUT = 0.5  # how long close() lets connections write what is queued
_WRITE_CHUNK = 1024 * 1024  # small writes are joined into one system call up to this much
_BIG_WRITE = 64 * 1024  # writes at least this large go out alone (no copy into a join)
_GROUP = 256 * 1024  # the writer releases buffer room after each group of this many bytes
_REQUEST_IDLE_PER_ADDR = 4
_REDIAL_BACKOFF = 1.0  # best-effort sends do not redial a URL whose dial failed this recently
_FAILED_MAX = 4096
_DRAIN = 64  # messages a host-served connection takes at once after a blocking receive
_USER_AGENT = "gossip"
_REQUEST_LINE_MAX = 8192  # an accepted connection's request line must fit in this much

class Refusal:
    """Why a handshake was refused: an HTTP status, a reason for the body, and headers.

    Attributes:
        status: the HTTP status (401 no or bad proof of the token, or the token's challenge;
            403 a browser's origin or streams not accepted; 404 wrong path; 400 bad channel;
            503 shutting down or too many connections).
        reason: a one-line explanation, sent as the response body.
        headers: response headers to send with it (a 401's ``WWW-Authenticate``).
    """

    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers or []

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.reason!r})"


# ---------------------------------------------------------------------------------- helpers


def websocket_url(host: str, port: int, path: str = "/gossip", secure: bool = False) -> str:
    """Build the URL a listener on ``host:port`` serves (IPv6 bracketed).

    An unspecified host (``0.0.0.0``, ``::``) becomes ``127.0.0.1``: right on loopback; set an
    advertise address on real networks.
    """
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    hostport = format_addr(host, port) if _is_ip(host) else f"{host}:{port}"
    return f"{'wss' if secure else 'ws'}://{hostport}{path}"


def server_tls_context(cert_file: str, key_file: str = "") -> ssl.SSLContext:
    """Return a TLS server context from a PEM certificate chain and key (``key_file`` may be
    empty when the key is in ``cert_file``). It issues no TLS 1.3 session tickets (set
    ``num_tickets = 0`` on a context of your own too).

    Raises:
        ssl.SSLError, OSError: the files cannot be read or do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file or None)
    # No TLS 1.3 session tickets: a client would read them while its first write is under
    # way, and a TLS connection must not be read and written by two threads at that moment.
    # (Our dialers never resume sessions anyway.)
    ctx.num_tickets = 0
    return ctx


def client_tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Return a verifying TLS client context: the system's CAs, or only those in ``ca_file``.

    Raises:
        ssl.SSLError, OSError: ``ca_file`` cannot be read.
    """
    return ssl.create_default_context(cafile=ca_file or None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _plain_ip(ip: str) -> str:
    """An IP as the admission counts know it: IPv4-mapped IPv6 as IPv4, no zone."""
    if not ip:
        return ip
    return format_addr(ip, 0).rpartition(":")[0].strip("[]")


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shutdown(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reader_socket(sock: socket.socket) -> socket.socket:
    """The socket websockets' reader uses (see :class:`_Reads`)."""
    return cast(socket.socket, _Reads(sock, _GossipWs.recv_bufsize))


_HEAD_SHORT = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")
_JOIN_BELOW = 4096  # a frame this small goes out as one piece, header and payload joined
_IOV_MAX = 512


def _binary_frame(data: bytes | bytearray | memoryview, mask: bool) -> list[bytes | bytearray | memoryview]:
    """Encode one unfragmented binary message (RFC 6455, section 5.2), as header and payload.

    Used on our own connections, where no extension is negotiated: the same bytes as
    websockets' ``Frame.serialize``, without its copies of the payload into a ``BytesIO`` and
    out again, and with the payload left separate so a large one is never copied to be joined.
    """
    n = len(data)
    second = 0x80 if mask else 0
    if n < 126:
        head = _HEAD_SHORT.pack(0x82, second | n)
    elif n < 65536:
        head = _HEAD_16.pack(0x82, second | 126, n)
    else:
        head = _HEAD_64.pack(0x82, second | 127, n)
    payload: bytes | bytearray | memoryview = data
    if mask:
        key = os.urandom(4)
        head += key
        payload = apply_mask(data, key)
    if n < _JOIN_BELOW:
        return [head + payload]
    return [head, payload]


def _send_all(sock: socket.socket, chunks: list[bytes | bytearray | memoryview]) -> None:
    """Write ``chunks`` in order with as few system calls as possible, copying nothing.

    A plain socket gathers them (``sendmsg``); a TLS socket joins the small ones and writes
    the large ones alone (it cannot gather).
    """
    if isinstance(sock, ssl.SSLSocket):
        parts: list[bytes | bytearray | memoryview] = []
        size = 0
        for chunk in chunks:
            if len(chunk) >= _BIG_WRITE:
                # A large payload goes with what precedes it (its header): a TLS record of
                # its own for a few header bytes costs more than the copy.
                parts.append(chunk)
                sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
                parts, size = [], 0
                continue
            parts.append(chunk)
            size += len(chunk)
            if size >= _WRITE_CHUNK:
                sock.sendall(b"".join(parts))
                parts, size = [], 0
        if parts:
            sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
        return
    i = 0
    while i < len(chunks):
        batch = chunks[i:i + _IOV_MAX]
        sent = sock.sendmsg(batch)
        total = sum(len(c) for c in batch)
        if sent == total:
            i += len(batch)
            continue
        # A partial write (a signal, a full buffer): skip what went, resume inside a chunk.
        for chunk in batch:
            if sent >= len(chunk):
                sent -= len(chunk)
                i += 1
                continue
            chunks[i] = memoryview(chunk)[sent:]
            break


def _peer_close_reason(protocol: Any) -> str:
    """Describe the close frame the peer sent (``""`` if none)."""
    rcvd = protocol.close_rcvd
    if rcvd is None:
        return ""
    return f"closed by the peer ({int(rcvd.code)} {rcvd.reason})".replace(" )", ")")


def _size(item: bytes | bytearray | memoryview | str) -> int:
    return len(item)


class _Reads:
    """The socket websockets' reader reads from: each ``recv`` lands in one reused buffer.

    ``socket.recv(n)`` allocates ``n`` bytes and shrinks them to what arrived, and a TLS socket
    hands out at most one record (16 KiB) per read, so websockets' reader would go around its
    loop (a ``select``, the protocol lock, the parser) once per record. Here one call drains
    the records already there into the buffer and returns exactly what was read: fewer and
    smaller allocations (large short-lived ones cost page faults), fewer trips around the loop.
    Everything else is the socket's own.
    """

    __slots__ = ("_sock", "_buf", "_view", "_poll", "_tls")

    def __init__(self, sock: socket.socket, size: int) -> None:
        self._sock = sock
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._tls = isinstance(sock, ssl.SSLSocket) and hasattr(select, "poll")
        self._poll = select.poll() if self._tls else None
        if self._poll is not None:
            self._poll.register(sock.fileno(), select.POLLIN)

    def recv(self, n: int) -> memoryview:
        sock = self._sock
        view = self._view
        n = min(n, len(view))
        got = sock.recv_into(view, n)
        if self._tls and 0 < got < n:
            assert self._poll is not None
            poll = self._poll.poll
            ssl_sock = cast(ssl.SSLSocket, sock)
            while got < n and (ssl_sock.pending() or poll(0)):
                more = sock.recv_into(view[got:], n - got)
                if not more:
                    break  # the end of the stream: the next recv() reports it
                got += more
        # websockets copies what it is given into its parser's buffer at once, under its lock,
        # before it reads again: a view of ours saves a copy.
        return view[:got]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Pending:
    """An accepted connection waiting, without a thread, for its request line."""

    __slots__ = ("sock", "ip", "peer", "ticket", "since", "buf")

    def __init__(self, sock: socket.socket, ip: str, peer: str, ticket: Ticket) -> None:
        self.sock = sock
        self.ip = ip
        self.peer = peer
        self.ticket = ticket
        self.since = time.monotonic()
        self.buf = bytearray()


class _Waker:
    """A socketpair whose read end wakes the accept loop's selector."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def wake(self) -> None:
        try:
            self.w.send(b"\0")
        except OSError:
            pass

    def close(self) -> None:
        self.r.close()
        self.w.close()


# ---------------------------------------------------------------------------------- links


class _Link:
    """One gossip WebSocket connection, whoever performs its I/O; implements
    :class:`gossip.transports.base.Connection` for frame connections.

    Write side: ``pending`` holds admitted messages (bytes, or a text marker) not yet handed
    to the WebSocket, ``queued`` the bytes admitted and not yet written (pending and in
    flight); a sender waits on ``room`` while ``queued`` is over ``budget``. The flusher waits
    on ``wake``. Read side: frames go to the engine (``frames``), to the waiting requester
    (``request``) or to the stream's inbound queue (``stream``); ``paused`` (the engine's
    back-pressure) and ``flow_paused`` (a stream's inbound queue is full) stop reading.
    """

    def __init__(self, transport: WebSocketTransport, peer: str, kind: str, accepted: bool,
                 ip: str = "") -> None:
        self.t = transport
        self.lid = transport._next_id()
        self.peer_addr = peer
        self.kind = kind
        self.accepted = accepted
        self.ip = ip
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.room = threading.Condition(self.lock)
        self.readable = threading.Condition(self.lock)
        self.pending: deque[bytes | bytearray | memoryview | str] = deque()
        self.queued = 0
        self.budget = transport._conn_buffer
        self.state = _CONNECTING
        self.closing = False
        self.final = False
        self.error = ""
        self.ready = threading.Event()
        self.trusted = not accepted
        self.ticket: Ticket | None = None  # accepted: its place in the admission counts
        self.slot: DialSlot | None = None  # dialed: its place in the dial budget
        self.rejected = 0  # frames the engine refused
        self.paused = False
        self.flow_paused = False
        now = time.monotonic()
        self.created = now
        self.opened_at = 0.0
        self.last_rx = now  # any frame received (pings and pongs included)
        self.last_frame = now  # a data message sent or received (idle timeout)
        self.ping_sent = 0.0
        self.max_out = transport.max_stream_frame_size if kind == _STREAM else transport.max_frame_size
        self.max_in = self.max_out if self.trusted else min(self.max_out, transport._preauth_frame)
        # request connections
        self.mailbox: deque[bytes] = deque()
        self.expect_reply = False
        self.unclean = False
        # stream connections
        self.inbound: deque[bytes] = deque()
        self.inbound_bytes = 0
        self.eof = False
        self.clean_end = False
        self.write_closed = False
        self.stream: _WsStream | None = None

    # ---------------------------------------------------------------- Connection interface

    @property
    def peer(self) -> str:
        """The remote address: the URL dialed, or ``"ip:port"`` of an accepted connection."""
        return self.peer_addr

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Queue one frame (one binary message) on this connection.

        Raises:
            MessageTooLarge: ``data`` is over the frame size limit.
            SendQueueFull: the connection's buffer stayed full for ``timeout`` seconds
                (``None``: the transport's ``io_timeout``; ``0``: do not wait).
            SendError: the connection is closed or broken.
            ClusterClosed: the transport is closed.
        """
        t = self.t
        if t._closed:
            raise ClusterClosed(f"transport {t.name} is closed")
        if len(data) > self.max_out:
            raise MessageTooLarge(
                f"frame to {self.peer_addr} is {len(data)} bytes, over the limit {self.max_out}")
        self.put(data, Deadline(t._io_timeout if timeout is None else timeout),
                 f"send to {self.peer_addr}")

    def pause_reading(self) -> None:
        """Stop reading this connection before its next read (back-pressure)."""
        with self.lock:
            if self.paused:
                return
            self.paused = True
        self.t._count("ws_paused")

    def resume_reading(self) -> None:
        """Read this connection again (idempotent; safe from any thread)."""
        with self.lock:
            if not self.paused:
                return
            self.paused = False
            self.readable.notify_all()
        self._kick()

    def mark_trusted(self) -> None:
        """The engine accepted a frame from this connection: lift the pre-authentication limits."""
        if not self.trusted:
            self.trusted = True
            self.max_in = self.max_out
            self.t._trusted(self)
            self._raise_limit()

    def mark_rejected(self) -> None:
        """The engine refused a frame from this connection (too many close it)."""
        self.t._rejected(self)

    def close(self) -> None:
        """Close this connection gracefully (idempotent): queued frames go first."""
        self.request_close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.lid} {self.kind} {self.peer_addr} {self.state}"
                f"{' paused' if self.paused else ''} queued={self.queued}>")

    # ---------------------------------------------------------------- writing

    def put(self, item: bytes | bytearray | memoryview | str, deadline: Deadline, what: str) -> None:
        """Admit one message into the buffer, waiting for room up to ``deadline``.

        Raises:
            SendQueueFull: no room before the deadline (nothing was queued).
            SendError: the connection is closed or closing.
        """
        n = _size(item)
        with self.lock:
            while True:
                if self.state is _CLOSED or self.closing:
                    why = f" ({self.error})" if self.error else ""
                    raise SendError(f"{what}: connection closed{why}")
                if not self.queued or self.queued + n <= self.budget:
                    break
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    left = 0.0
                if left is not None and left <= 0:
                    self.t._count("ws_buffer_full")
                    raise SendQueueFull(
                        f"{what}: {self.queued} bytes already queued for a peer that is not "
                        f"reading fast enough (connection buffer {self.budget} bytes)")
                self.room.wait(left)
            self.pending.append(item)
            self.queued += n
            self.wake.notify()
        self.t._count("ws_sent")
        self._kick()

    def take(self) -> tuple[list[bytes | bytearray | memoryview | str], int]:
        """Take every pending message (lock held by the caller); return them and their size."""
        assert self.lock.locked()
        items = list(self.pending)
        self.pending.clear()
        return items, sum(_size(i) for i in items)

    def written(self, n: int) -> None:
        """``n`` admitted bytes reached the socket: make room for the senders."""
        if not n:
            return
        with self.lock:
            self.queued = max(0, self.queued - n)
            self.last_frame = time.monotonic()
            self.room.notify_all()

    def request_close(self, final: bool = False) -> None:
        """Ask for a graceful close: what is queued is written, then a close frame.

        ``final`` (the transport is closing) does not wait for the peer's close frame.
        """
        with self.lock:
            if final:
                self.final = True
            if self.closing or self.state is _CLOSED:
                self.wake.notify_all()
                return
            self.closing = True
            self.wake.notify_all()
            self.readable.notify_all()
            self.room.notify_all()
        self._kick()

    def mark_closed(self, reason: str) -> bool:
        """Mark the connection closed and wake every waiter; return False if it already was."""
        with self.lock:
            if self.state is _CLOSED:
                return False
            self.state = _CLOSED
            self.error = self.error or reason
            lost = sum(1 for i in self.pending if not isinstance(i, str))
            self.pending.clear()
            self.queued = 0
            self.wake.notify_all()
            self.room.notify_all()
            self.readable.notify_all()
        self.ready.set()
        if lost:
            self.t._count("ws_frames_lost", lost)
            _log.debug("%s ! %d queued frames to %s lost with the connection", self.t.name,
                       lost, self.peer_addr)
        self.t._link_closed(self)
        self._kick()
        return True

    def _kick(self) -> None:
        """Wake the flusher (links whose flusher waits on ``wake`` need nothing more)."""

    def _raise_limit(self) -> None:
        """Apply ``max_in`` to the WebSocket parser (links that parse themselves)."""

    def abort(self, reason: str) -> None:
        """Close at once, without a closing handshake."""
        self.mark_closed(reason)

    # ---------------------------------------------------------------- reading

    def opened(self) -> None:
        """The handshake succeeded: the connection carries traffic from now on."""
        with self.lock:
            if self.state is not _CONNECTING:
                return
            self.state = _OPEN
            self.opened_at = time.monotonic()
            self.wake.notify_all()
        self.ready.set()
        self._kick()
        if self.accepted and self.kind == _STREAM:
            self.t._accept_stream(self)

    def reading_blocked(self) -> bool:
        """True while the engine paused this connection or a stream's inbound queue is full."""
        return self.paused or self.flow_paused

    def deliver(self, msgs: list[bytes]) -> None:
        """Hand received binary messages to what rides on this connection."""
        now = time.monotonic()
        self.last_rx = self.last_frame = now
        kind = self.kind
        t = self.t
        if kind == _FRAMES:
            peer = self.peer_addr
            t._count("ws_received", len(msgs))
            t._emit([Incoming(m, peer, True, self, now, "ws") for m in msgs])
            if self.paused:
                t._count("ws_paused_reads")
            return
        if kind == _REQUEST:
            with self.lock:
                for m in msgs:
                    if self.expect_reply and not self.mailbox:
                        self.mailbox.append(m)
                    else:
                        self.unclean = True
                self.readable.notify_all()
            t._count("ws_received", len(msgs))
            return
        with self.lock:
            if self.eof:
                t._count("ws_protocol_errors")  # data after the end of the stream
                return
            for m in msgs:
                self.inbound.append(m)
                self.inbound_bytes += len(m)
            if self.inbound_bytes > self.budget:
                self.flow_paused = True
            self.readable.notify_all()
        t._count("ws_received", len(msgs))

    def deliver_text(self, text: str) -> None:
        """Handle a received text message: a stream's end marker, else counted and dropped."""
        self.last_rx = time.monotonic()
        if self.kind == _STREAM and text == END_OF_STREAM:
            with self.lock:
                self.eof = True
                self.readable.notify_all()
            return
        self.t._count("ws_text_dropped")
        _log.debug("%s ! text message from %s dropped", self.t.name, self.peer_addr)


class _ReadGate:
    """Stands in for websockets' read flow-control lock, which its reader thread enters before
    every socket read: here that moment delivers the frames of the previous read as one batch
    and waits while reading is paused."""

    __slots__ = ("link",)

    def __init__(self, link: _SyncLink) -> None:
        self.link = link

    def __enter__(self) -> None:
        self.link.before_read()

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Never blocks (websockets' message queue, whose flow control this replaces, is unused)."""
        return True

    def release(self) -> None:
        """Nothing to release."""


class _GossipWs:
    """What our client and server connections change in websockets' threaded connection.

    - ``send_data`` hands the protocol's output to the link's writer thread instead of writing
      it under the protocol lock (so neither a sender nor the reader ever blocks on a socket);
    - ``process_event`` takes binary and text messages straight to the link (no message queue);
    - ``recv_flow_control`` is the link's :class:`_ReadGate`;
    - ``close_socket`` shuts the socket down first, which also fails a blocked write at once.
    """

    recv_bufsize = 256 * 1024
    _gossip: _SyncLink
    _gate: _ReadGate
    _first_done: bool
    protocol: Any
    protocol_mutex: threading.Lock
    socket: socket.socket
    recv_events_thread: threading.Thread

    @property
    def recv_flow_control(self) -> Any:
        """The link's read gate (websockets' own lock is never used)."""
        return self._gate

    @recv_flow_control.setter
    def recv_flow_control(self, value: Any) -> None:
        pass  # websockets assigns its own lock in __init__; the gate stays

    def send_data(self) -> None:
        """Queue the protocol's output for the writer thread (protocol lock held)."""
        writes = self.protocol.data_to_send()
        if writes:
            link = self._gossip
            with link.lock:
                link.wire.extend(writes)
                link.wake.notify()

    def process_event(self, event: Event) -> None:
        """Handle one parsed event on the reader thread."""
        link = self._gossip
        if not self._first_done:
            self._first_done = True
            super().process_event(event)  # type: ignore[misc]
            link.handshake_event()
            return
        frame = cast(Frame, event)
        op = frame.opcode
        if op is BINARY or op is TEXT:
            data = frame.data
            if type(data) is not bytes:
                data = bytes(data)  # the reader hands unmasked payloads out as bytearrays
            if frame.fin:
                if op is BINARY:
                    link.batch.append(data)
                else:
                    link.text(data)
            else:
                link.frag = [data]
                link.frag_text = op is TEXT
        elif op is CONT:
            frag = link.frag
            if frag is None:  # the protocol refuses this; nothing to assemble
                return
            frag.append(bytes(frame.data))
            if frame.fin:
                link.frag = None
                data = b"".join(frag)
                if link.frag_text:
                    link.text(data)
                else:
                    link.batch.append(data)
        else:
            link.last_rx = time.monotonic()  # ping, pong, close: the peer is alive

    def recv_events(self) -> None:
        """Run websockets' reader loop (after the bytes read before this thread existed), then
        tell the link that reading ended."""
        link = self._gossip
        try:
            prefix, link.prefix = link.prefix, b""
            if prefix:
                with self.protocol_mutex:
                    self.protocol.receive_data(prefix)
                    events = self.protocol.events_received()
                    self.send_data()
                for event in events:
                    self.process_event(event)
            super().recv_events()  # type: ignore[misc]
        finally:
            link.reader_exited()

    def close_socket(self) -> None:
        """Shut the socket down (failing a blocked write at once), then close it."""
        _shutdown(self.socket)
        super().close_socket()  # type: ignore[misc]


class _ClientWs(_GossipWs, ClientConnection):
    def __init__(self, link: _SyncLink, sock: socket.socket, protocol: ClientProtocol) -> None:
        self._gossip = link
        link.ws = self  # before the reader thread starts: it may see the handshake at once
        self._gate = _ReadGate(link)
        self._first_done = False
        super().__init__(sock, protocol, ping_interval=None, ping_timeout=None,
                         close_timeout=_CLOSE_TIMEOUT, max_queue=None)
        self.pending_legacy_warning = False
        self.recv_events_thread.name = f"{link.thread.name}-read"


class _ServerWs(_GossipWs, ServerConnection):
    def __init__(self, link: _SyncLink, sock: socket.socket, protocol: ServerProtocol) -> None:
        self._gossip = link
        link.ws = self  # before the reader thread starts: it may see the handshake at once
        self._gate = _ReadGate(link)
        self._first_done = False
        super().__init__(sock, protocol, cast(Any, None), ping_interval=None, ping_timeout=None,
                         close_timeout=_CLOSE_TIMEOUT, max_queue=None)
        self.recv_events_thread.name = f"{link.thread.name}-read"


class _SyncLink(_Link):
    """A connection we dialed or accepted ourselves, on websockets' threaded connection."""

    def __init__(self, transport: WebSocketTransport, peer: str, kind: str, accepted: bool, *,
                 sock: socket.socket | None = None, ip: str = "", uri: WebSocketURI | None = None,
                 prefix: bytes = b"") -> None:
        super().__init__(transport, peer, kind, accepted, ip)
        self.sock = sock
        self.prefix = prefix  # bytes read from an accepted socket before its thread started
        self.uri = uri
        self.ws: _ClientWs | _ServerWs | None = None
        self.wire: deque[bytes | bytearray | memoryview] = deque()  # for the writer (under lock)
        self.batch: list[bytes] = []  # reader thread only
        self.frag: list[bytes] | None = None
        self.frag_text = False
        self.close_sent = 0.0
        self.refusal_counted = False
        # A dialed connection is not read before its handshake request is written: a TLS
        # connection must not be read and written at once while the handshake settles.
        self.request_sent = threading.Event()
        if accepted:
            self.request_sent.set()
        self.thread = threading.Thread(target=self._run, name=f"gossip-{transport.name}-ws-{self.lid}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    # ---------------------------------------------------------------- reader thread

    def before_read(self) -> None:
        """Deliver the previous read's messages, then wait while reading is paused."""
        if not self.request_sent.is_set():
            self.request_sent.wait(self.t._handshake_timeout)
        if self.state is _CONNECTING and self.accepted and not self.refusal_counted:
            ws = self.ws
            if ws is not None and ws.protocol.handshake_exc is not None:
                self.refusal_counted = True  # not an HTTP request we can answer
                self.t._count("ws_handshake_failed")
                _log.debug("%s ! bad handshake from %s: %s", self.t.name, self.peer_addr,
                           ws.protocol.handshake_exc)
                self.abort(f"bad handshake ({ws.protocol.handshake_exc})")
                return
        if self.batch:
            batch, self.batch = self.batch, []
            self.deliver(batch)
        if self.paused or self.flow_paused:
            with self.lock:
                while (self.paused or self.flow_paused) and self.state is _OPEN:
                    self.readable.wait(_TICK)

    def text(self, data: bytes) -> None:
        if self.batch:  # binary messages that came first are handled first
            batch, self.batch = self.batch, []
            self.deliver(batch)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = ""
        self.deliver_text(text)

    def handshake_event(self) -> None:
        ws = self.ws
        assert ws is not None
        if isinstance(ws, _ServerWs) and ws.request is not None:
            self._on_request(ws, ws.request)

    def _on_request(self, ws: _ServerWs, request: Request) -> None:
        """Answer the opening handshake of an accepted connection (reader thread)."""
        t = self.t
        kind, refusal, proved = t._screen(request.path, request.headers)
        protocol = ws.protocol
        with ws.protocol_mutex:
            if refusal is None:
                if kind == _STREAM:
                    # Small frames only until the stream layer authenticated the opening
                    # (mark_trusted), as on TCP.
                    self.max_out = t.max_stream_frame_size
                if proved:
                    self.trusted = True  # it proved it holds the cluster's token
                self.max_in = self.max_out if self.trusted else min(self.max_out, t._preauth_frame)
                protocol.max_message_size = self.max_in
                response = protocol.accept(request)
                if response.status_code == 101:
                    self.kind = kind
            else:
                response = protocol.reject(refusal.status, refusal.reason + "\n")
                for name, value in refusal.headers:
                    response.headers[name] = value
            ws.response = response
            protocol.send_response(response)
            ws.send_data()
        if response.status_code == 101:
            if self.trusted:
                t._trusted(self)
            self.opened()
            return
        self.refusal_counted = True
        if refusal is None:
            t._count("ws_handshake_failed")
            _log.debug("%s ! bad handshake from %s: %s", t.name, self.peer_addr,
                       protocol.handshake_exc)
        # The response and an end of stream are queued: the client closes, the reader ends.

    def reader_exited(self) -> None:
        """The reader thread ends: deliver the rest, find out why, and close."""
        if not self.accepted and self.state is _CONNECTING:
            return  # the dialing writer thread wakes up and reports why the handshake failed
        try:
            if self.batch:
                batch, self.batch = self.batch, []
                self.deliver(batch)
        finally:
            reason = "connection closed"
            ws = self.ws
            if ws is not None:
                proto = ws.protocol
                exc = proto.parser_exc
                if isinstance(exc, PayloadTooBig):
                    self.t._count("ws_too_large")
                    reason = f"message too large ({exc})"
                elif isinstance(exc, WsProtocolError):
                    self.t._count("ws_protocol_errors")
                    reason = f"protocol error ({exc})"
                if self.accepted and self.state is _CONNECTING and not self.refusal_counted \
                        and proto.handshake_exc is not None:
                    self.refusal_counted = True
                    self.t._count("ws_handshake_failed")
                    reason = f"bad handshake ({proto.handshake_exc})"
                rcvd = proto.close_rcvd
                if rcvd is not None:
                    if rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                        self.clean_end = True
                    reason = _peer_close_reason(proto)
            self.mark_closed(reason)

    def _raise_limit(self) -> None:
        ws = self.ws
        if ws is not None:
            with ws.protocol_mutex:
                ws.protocol.max_message_size = self.max_in

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        try:
            if self.accepted:
                self._open_accepted()
            else:
                self._open_dialed()
        except Exception as exc:  # every failure to open ends here (reported, then torn down)
            self._open_failed(exc)
            self._teardown()
            return
        try:
            self._write_loop()
        except Exception:
            self.t._count("ws_writer_errors")
            _log.error("%s ! writer of %s failed", self.t.name, self.peer_addr, exc_info=True)
        finally:
            self._teardown()

    def _connect(self, u: WebSocketURI, deadline: Deadline, what: str) -> socket.socket:
        """Open the TCP connection (and TLS) of a dial; it is :attr:`sock` until replaced."""
        t = self.t
        left = deadline.remaining(what)
        assert left is not None
        sock = socket.create_connection((u.host, u.port), timeout=min(t._dial_timeout, left))
        self.sock = sock
        if self.state is _CLOSED:
            raise ConnectError(f"{what}: the transport is closing")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if u.secure:
            ctx = t.client_ssl if t.client_ssl is not None else t._default_client_ssl()
            sock.settimeout(deadline.remaining(what))
            sock = ctx.wrap_socket(sock, server_hostname=u.host)
            self.sock = sock
        sock.settimeout(None)
        return sock

    def _challenge(self, u: WebSocketURI, deadline: Deadline, what: str, channel: str) -> str:
        """The first request of a dial with a bearer token: have the listener prove it holds
        the token, then return the ``Gossip-Auth`` value that proves we do.

        Nothing but a fresh random nonce goes out before the listener's proof is checked.

        Raises:
            ConnectError: the listener did not prove the token (counted ``ws_server_unproven``)
                or the connection failed.
            InvalidStatus: the listener answered neither 401 nor 101.
        """
        t = self.t
        token = t.bearer_token
        cnonce = wsauth.new_client_nonce()
        sock = self._connect(u, deadline, what)
        response: Response | None = None
        try:
            protocol = ClientProtocol(u, max_size=self.max_in, logger=_wslog)
            request = protocol.connect()
            request.headers["User-Agent"] = _USER_AGENT
            request.headers[wsauth.CHALLENGE_HEADER] = cnonce
            if channel == _STREAM:
                request.headers[CHANNEL_HEADER] = _STREAM
            protocol.send_request(request)
            sock.sendall(b"".join(protocol.data_to_send()))
            while response is None:
                sock.settimeout(deadline.remaining(what))
                data = sock.recv(65536)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for event in protocol.events_received():
                    if isinstance(event, Response):
                        response = event
                if response is None and (not data or protocol.handshake_exc is not None):
                    raise ConnectError(f"{what}: the connection closed during the handshake")
        finally:
            _shutdown(sock)
            sock.close()
            self.sock = None
        if response.status_code == 101:
            t._count("ws_server_unproven")
            raise ConnectError(
                f"{what}: the server accepted without proving it holds the bearer token (it has "
                "none, or it is not a node of this cluster)")
        if response.status_code != 401:
            raise InvalidStatus(response)
        challenge = wsauth.parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise InvalidStatus(response)
        snonce, proof = challenge
        if not wsauth.verify(wsauth.server_proof(token, cnonce, snonce), proof):
            t._count("ws_server_unproven")
            raise ConnectError(
                f"{what}: the server did not prove it holds the bearer token (another token, "
                "or not a node of this cluster); nothing was sent to it")
        return wsauth.auth_value(snonce, cnonce, wsauth.client_proof(token, cnonce, snonce, channel))

    def _open_dialed(self) -> None:
        t = self.t
        u = self.uri
        assert u is not None
        what = f"connect to {self.peer_addr}"
        deadline = Deadline(t._handshake_timeout)
        t._count("ws_dials")
        channel = _STREAM if self.kind == _STREAM else _FRAMES
        proof = self._challenge(u, deadline, what, channel) if t.bearer_token else ""
        if self.state is _CLOSED:
            raise ConnectError(f"{what}: the transport is closing")
        sock = self._connect(u, deadline, what)
        protocol = ClientProtocol(u, max_size=self.max_in, logger=_wslog)
        ws = _ClientWs(self, _reader_socket(sock), protocol)
        self.ws = ws
        request = protocol.connect()
        headers = request.headers
        headers["User-Agent"] = _USER_AGENT
        if proof:
            headers[wsauth.AUTH_HEADER] = proof
        if self.kind == _STREAM:
            headers[CHANNEL_HEADER] = _STREAM
        with ws.protocol_mutex:
            protocol.send_request(request)
            ws.send_data()
        try:
            self._flush_wire()
        finally:
            self.request_sent.set()
        if not ws.response_rcvd.wait(deadline.remaining(what)):
            raise GossipTimeout(f"{what}: no handshake response")
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if protocol.state is not OPEN:
            why = _peer_close_reason(protocol) or "the connection closed during the handshake"
            raise ConnectError(f"{what}: {why}")
        self.opened()

    def _open_accepted(self) -> None:
        t = self.t
        sock = self.sock
        assert sock is not None
        if t.server_ssl is not None:
            sock.settimeout(max(0.01, t._handshake_timeout - (time.monotonic() - self.created)))
            sock = t.server_ssl.wrap_socket(sock, server_side=True)
            self.sock = sock
            sock.settimeout(None)
        if self.state is _CLOSED:
            raise ConnectError("closed during the TLS handshake")
        self.ws = _ServerWs(self, _reader_socket(sock), ServerProtocol(max_size=self.max_in, logger=_wslog))
        # The reader thread answers the HTTP handshake (_on_request); the sweeper bounds it.

    def _open_failed(self, exc: Exception) -> None:
        t = self.t
        if self.accepted:
            t._count("ws_handshake_failed")
            reason = f"TLS handshake failed: {exc}" if isinstance(exc, ssl.SSLError) else str(exc)
            _log.debug("%s ! accepted connection from %s failed: %s", t.name, self.peer_addr, reason)
            self.abort(reason)
            return
        if isinstance(exc, InvalidStatus):
            body = exc.response.body.decode(errors="replace").strip()[:200]
            reason = f"refused with HTTP {exc.response.status_code}" + (f": {body}" if body else "")
        elif isinstance(exc, (socket.timeout, GossipTimeout)):
            reason = f"timed out ({exc})"
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS handshake failed: {exc}"
        elif isinstance(exc, (OSError, InvalidHandshake, GossipError)):
            reason = str(exc) or type(exc).__name__
        else:
            reason = f"{type(exc).__name__}: {exc}"
            _log.error("%s ! dialing %s failed unexpectedly", t.name, self.peer_addr, exc_info=True)
        t._count("ws_dial_failures")
        t._dial_failed(self.peer_addr, reason)
        _log.debug("%s ! connect to %s failed: %s", t.name, self.peer_addr, reason)
        self.abort(reason)

    def _write_loop(self) -> None:
        ws = self.ws
        assert ws is not None
        while True:
            msgs: list[bytes | bytearray | memoryview | str] = []
            n = 0
            graceful = False
            with self.lock:
                while True:
                    if self.state is _CLOSED:
                        return
                    if self.wire:
                        break
                    if self.state is _OPEN and (self.pending or (self.closing and not self.close_sent)):
                        break
                    if self.final and self.close_sent:
                        break
                    self.wake.wait()
                if self.state is _OPEN:
                    if self.pending:
                        msgs, n = self.take()
                    elif self.closing and not self.close_sent:
                        graceful = True
            # Groups of at most _GROUP bytes: each group's room goes back to the senders once
            # it is written, so they refill the buffer while the next group is being written.
            i, count = 0, len(msgs)
            while i < count:
                j, size = i, 0
                while j < count and (j == i or size < _GROUP):
                    size += _size(msgs[j])
                    j += 1
                if not self._encode(ws, msgs[i:j]):
                    with self.lock:
                        self.pending.extendleft(reversed(msgs[i:]))  # lost with the close
                    self.abort(_peer_close_reason(ws.protocol) or "the connection is closing")
                    return
                i = j
                try:
                    self._flush_wire()
                except OSError as exc:
                    self.t._count("ws_send_errors")
                    self.abort(f"write failed: {exc}")
                    return
                self.written(size)
                n -= size
            if graceful:
                with ws.protocol_mutex:
                    if ws.protocol.state is OPEN:
                        ws.protocol.send_close(CloseCode.GOING_AWAY if self.final
                                               else CloseCode.NORMAL_CLOSURE)
                        ws.send_data()
                self.close_sent = time.monotonic()
            try:
                self._flush_wire()
            except OSError as exc:
                self.t._count("ws_send_errors")
                self.abort(f"write failed: {exc}")
                return
            self.written(n)
            if self.final and self.close_sent:
                self.abort("the transport is closed")  # written: no need to wait for the peer
                return

    def _encode(self, ws: _ClientWs | _ServerWs, msgs: list[bytes | bytearray | memoryview | str]) -> bool:
        """Frame ``msgs`` into the wire queue behind what the protocol queued; False if the
        connection is no longer open."""
        with ws.protocol_mutex:
            proto = ws.protocol
            if proto.state is not OPEN:
                return False
            ws.send_data()  # what the protocol queued (a pong...) goes first
            encoded: list[bytes | bytearray | memoryview] = []
            mask = proto.side is CLIENT
            own = not proto.extensions  # none negotiated: frames are plain
            for m in msgs:
                if isinstance(m, str):
                    proto.send_text(m.encode())
                    encoded.extend(proto.data_to_send())
                elif own:
                    encoded.extend(_binary_frame(m, mask))
                else:  # pragma: no cover - we never negotiate an extension
                    proto.send_binary(m)
                    encoded.extend(proto.data_to_send())
            with self.lock:
                self.wire.extend(encoded)
        return True

    def _flush_wire(self) -> None:
        """Write everything queued for the socket (writer thread only)."""
        sock = self.sock
        assert sock is not None
        while True:
            with self.lock:
                if not self.wire:
                    return
                chunks = list(self.wire)
                self.wire.clear()
            start = 0
            for i, chunk in enumerate(chunks):
                if not chunk:  # the protocol's end of stream
                    if i > start:
                        _send_all(sock, chunks[start:i])
                    start = i + 1
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            if start < len(chunks):
                _send_all(sock, chunks[start:])

    def send_ping(self) -> None:
        """Queue a ping (sweeper thread); its pong, like any frame, proves the peer alive."""
        ws = self.ws
        if ws is None:
            return
        with ws.protocol_mutex:
            if ws.protocol.state is OPEN:
                ws.protocol.send_ping(b"gossip")
                ws.send_data()

    def abort(self, reason: str) -> None:
        """Close at once: shut the socket down, which fails blocked reads and writes.

        The reader thread then ends by itself and closes the socket (websockets' parser must
        not be told of the end while that thread may still be feeding it what it read).
        """
        self.mark_closed(reason)
        self.request_sent.set()
        _shutdown(self.sock)

    def _teardown(self) -> None:
        """Writer thread, at its end: everything is closed and the reader joined."""
        self.abort(self.error or "closed")
        ws = self.ws
        if ws is not None:
            if ws.recv_events_thread is not threading.current_thread():
                ws.recv_events_thread.join(_JOIN_TIMEOUT)
            ws.close_socket()  # idempotent; the reader has ended (or is stuck in a callback)
        elif self.sock is not None:
            try:
                self.sock.close()
            except OSError:  # pragma: no cover - close() of a socket does not fail here
                pass
        self.t._link_done(self)


class _HostLink(_Link):
    """A connection accepted by the host's own ``websockets.sync`` server.

    The host's handler thread reads (:meth:`serve`); our writer thread sends with the
    connection's own ``send`` (whose blocking write holds only that thread).
    """

    def __init__(self, transport: WebSocketTransport, ws: ServerConnection, kind: str, peer: str,
                 ip: str) -> None:
        super().__init__(transport, peer, kind, True, ip)
        self.ws = ws
        self.thread = threading.Thread(target=self._write_loop,
                                       name=f"gossip-{transport.name}-ws-{self.lid}", daemon=True)

    def serve(self) -> None:
        """Read until the connection ends (the host's handler thread)."""
        ws = self.ws
        self.opened()
        self.thread.start()
        try:
            while True:
                with self.lock:
                    while (self.paused or self.flow_paused) and self.state is _OPEN:
                        self.readable.wait(_TICK)
                    if self.state is _CLOSED:
                        break
                try:
                    first = ws.recv(timeout=_TICK)
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    rcvd = exc.rcvd
                    if rcvd is not None and rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                        self.clean_end = True
                    if rcvd is not None and rcvd.code == CloseCode.MESSAGE_TOO_BIG:
                        self.t._count("ws_too_large")
                    sent = exc.sent
                    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                        self.t._count("ws_too_large")
                    elif sent is not None and sent.code == CloseCode.PROTOCOL_ERROR:
                        self.t._count("ws_protocol_errors")
                    self.mark_closed(f"closed ({exc})")
                    break
                batch: list[bytes] = []
                item: bytes | str = first
                for _ in range(_DRAIN):
                    if isinstance(item, str):
                        if batch:
                            self.deliver(batch)
                            batch = []
                        self.deliver_text(item)
                    else:
                        batch.append(item)
                    try:
                        item = ws.recv(timeout=0)
                    except (TimeoutError, ConnectionClosed):
                        break
                if batch:
                    self.deliver(batch)
        finally:
            self.mark_closed(self.error or "connection closed")
            _shutdown(getattr(ws, "socket", None))
            if self.thread.ident is not None:
                self.thread.join(_JOIN_TIMEOUT)
            self.t._link_done(self)

    def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                with self.lock:
                    while self.state is _OPEN and not self.pending and not self.closing:
                        self.wake.wait()
                    if self.state is not _OPEN:
                        return
                    msgs, n = self.take()
                    closing = self.closing
                for m in msgs:
                    ws.send(m)  # a str goes as a text message (the end-of-stream marker)
                self.written(n)
                if closing:
                    with self.lock:
                        if self.pending:
                            continue
                    if self.final:  # the transport is closing: written is enough
                        self.abort("the transport is closed")
                    else:
                        ws.close(CloseCode.NORMAL_CLOSURE)
                    return
        except ConnectionClosed as exc:
            self.mark_closed(f"closed ({exc})")
        except Exception as exc:  # a write error of the host's connection
            self.t._count("ws_send_errors")
            self.mark_closed(f"write failed: {exc}")

    def abort(self, reason: str) -> None:
        self.mark_closed(reason)
        _shutdown(getattr(self.ws, "socket", None))


class HostedConnection(_Link):
    """A gossip WebSocket connection whose I/O another WebSocket implementation performs.

    Made by :meth:`WebSocketTransport.host_connection` once the host accepted the upgrade.
    The host (for example :mod:`gossip.contrib.asgi`) then:

    - calls :meth:`feed` with each received message (``bytes`` for binary, ``str`` for text);
    - when ``wake`` is called (from any thread), calls :meth:`take_outgoing` and sends what it
      returns, then :meth:`sent`; and stops receiving while :attr:`reading_paused` is true;
    - closes its connection once :attr:`wants_close` is true (after sending what was taken),
      at once and without a closing handshake if :attr:`aborted` is true;
    - calls :meth:`ended` when the connection ends, whatever the reason.

    ``wake`` must not block: typically ``loop.call_soon_threadsafe(event.set)``.
    """

    def __init__(self, transport: WebSocketTransport, kind: str, peer: str, ip: str,
                 wake: Callable[[], None]) -> None:
        super().__init__(transport, peer, kind, True, ip)
        self._wake_host = wake
        self._aborted = False

    def abort(self, reason: str) -> None:
        """Drop the connection at once (see :attr:`aborted`)."""
        self._aborted = True
        super().abort(reason)

    @property
    def aborted(self) -> bool:
        """True once the node dropped the connection (a deadline, too many refused frames, the
        transport closing): the host should end it without a closing handshake, so that what
        it buffered for it is freed at once."""
        return self._aborted

    def _kick(self) -> None:
        try:
            self._wake_host()
        except Exception:  # a closed event loop: the connection is ending anyway
            _log.debug("%s ! waking the host of %s failed", self.t.name, self.peer_addr,
                       exc_info=True)

    def start(self) -> None:
        """The host accepted the WebSocket upgrade: traffic may flow."""
        self.opened()

    def feed(self, message: bytes | str) -> None:
        """Hand one received message to the engine (the host's receiving side).

        A binary message over the size limit closes the connection (counted ``ws_too_large``).
        """
        if isinstance(message, str):
            self.deliver_text(message)
            return
        if len(message) > self.max_in:
            self.t._count("ws_too_large")
            self.abort(f"message of {len(message)} bytes over the limit {self.max_in}")
            return
        self.deliver([bytes(message)])

    def take_outgoing(self) -> tuple[list[bytes | str], int]:
        """Return the messages to send now and their total size (pass it to :meth:`sent`)."""
        with self.lock:
            if self.state is not _OPEN:
                return [], 0
            items, n = self.take()
        out: list[bytes | str] = [i if isinstance(i, (bytes, str)) else bytes(i) for i in items]
        return out, n

    def sent(self, n: int) -> None:
        """The host wrote ``n`` bytes taken with :meth:`take_outgoing`."""
        self.written(n)

    @property
    def reading_paused(self) -> bool:
        """True while the host should not receive (back-pressure)."""
        return self.paused or self.flow_paused

    @property
    def wants_close(self) -> bool:
        """True once the connection should be closed (nothing more will be queued)."""
        with self.lock:
            return self.state is _CLOSED or (self.closing and not self.pending)

    @property
    def is_closed(self) -> bool:
        """True once the connection ended or was aborted."""
        return self.state is _CLOSED

    def ended(self, code: int | None = None, reason: str = "") -> None:
        """The host's connection ended (``code`` is the close code, if there was one)."""
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            self.clean_end = True
        self.mark_closed(f"closed ({code} {reason})".strip() if code else "connection closed")
        self.t._link_done(self)


# ---------------------------------------------------------------------------------- streams


class _WsStream:
    """A WebSocket connection dedicated to one stream; implements :class:`StreamConn`.

    Frames are binary messages; :meth:`close_write` sends the text message
    :data:`END_OF_STREAM`, after which the peer's :meth:`recv_frame` returns ``None``.
    """

    def __init__(self, link: _Link) -> None:
        self._link = link
        self.max_frame_size = link.max_out
        self._closed = False
        link.stream = self

    @property
    def peer(self) -> str:
        """The remote address (the URL dialed, or ``ip:port`` of an accepted connection)."""
        return self._link.peer_addr

    def mark_trusted(self) -> None:
        """The stream layer authenticated the opening: lift the pre-authentication frame limit."""
        self._link.mark_trusted()

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Write one frame; see :meth:`StreamConn.send_frame`.

        Raises:
            MessageTooLarge: ``data`` is over :attr:`max_frame_size`.
            GossipTimeout: the peer did not read for ``timeout`` seconds (the stream is closed).
            SendError: the stream is closed for writing or broken.
        """
        link = self._link
        n = len(data)
        if n > self.max_frame_size:
            raise MessageTooLarge(
                f"stream frame to {link.peer_addr} is {n} bytes, over the limit {self.max_frame_size}")
        what = f"stream write to {link.peer_addr}"
        if self._closed or link.write_closed:
            raise SendError(f"{what}: the stream is closed for writing")
        item = data if isinstance(data, bytes) else bytes(data)
        try:
            link.put(item, Deadline(timeout), what)
        except SendQueueFull as exc:
            self.close()
            raise GossipTimeout(f"{what}: the peer did not read within {timeout}s") from exc

    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        """Return the next frame, or ``None`` after the peer's half-close (or clean close).

        Raises:
            GossipTimeout: no frame within ``timeout`` (the stream stays usable).
            TransportError: the connection broke or was closed.
        """
        link = self._link
        deadline = Deadline(timeout)
        what = f"stream read from {link.peer_addr}"
        resume = False
        with link.lock:
            while True:
                if self._closed:
                    raise TransportError(f"{what}: the stream is closed")
                if link.inbound:
                    frame = link.inbound.popleft()
                    link.inbound_bytes -= len(frame)
                    if link.flow_paused and link.inbound_bytes <= link.budget // 4:
                        link.flow_paused = False
                        link.readable.notify_all()
                        resume = True
                    break
                if link.eof:
                    return None
                if link.state is _CLOSED:
                    if link.clean_end:
                        return None
                    raise TransportError(f"{what}: {link.error or 'the connection broke'}")
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    raise
                link.readable.wait(left)
        if resume:
            link._kick()
        return frame

    def close_write(self) -> None:
        """Half-close: the peer reads the rest, then the end of the stream."""
        link = self._link
        if self._closed or link.write_closed:
            return
        link.write_closed = True
        try:
            link.put(END_OF_STREAM, Deadline(link.t._io_timeout), f"close of stream to {link.peer_addr}")
        except GossipError:
            link.abort("the end of the stream could not be sent")

    def close(self) -> None:
        """Close both sides (idempotent): blocked calls fail at once; queued frames still go."""
        if self._closed:
            return
        self._closed = True
        link = self._link
        if not link.write_closed:
            link.write_closed = True
            try:
                link.put(END_OF_STREAM, Deadline(0), "stream close")
            except GossipError:
                pass
        with link.lock:
            link.readable.notify_all()
            link.room.notify_all()
        link.request_close()

    def __repr__(self) -> str:
        return f"<WebSocket stream {self._link.peer_addr} {'closed' if self._closed else 'open'}>"


# ---------------------------------------------------------------------------------- transport


class WebSocketTransport:
    """Gossip over WebSocket (``ws://`` and ``wss://``); see the module docstring.

    Args:
        bind_addr: ``"ip:port"`` to listen on (port 0 picks one); ``""`` for none (dial only,
            or connections served by the host through :meth:`serve_connection` or
            :meth:`host_connection`).
        path: the URL path of the listener (and of hosted connections).
        advertise_addr: the URL peers should use, if not the one derived from the bound address.
        name: node name used in thread names and logs.
        server_ssl: TLS context of the listener (``wss://``); None serves plain ``ws://``.
        client_ssl: TLS context for dialing ``wss://`` peers; None verifies against the
            system's certificate authorities.
        bearer_token: proved on every dial and required on every accepted connection, never
            sent (``""``: neither); see :mod:`gossip.transports._wsauth`.
        allow_insecure: permit plain ``ws://`` to hosts that are not on loopback.
        max_frame_size: largest frame (message) sent or accepted on frame connections.
        max_stream_frame_size: largest frame on a stream connection.
        dial_timeout: seconds allowed for the TCP connect of a dial.
        handshake_timeout: seconds allowed for a whole dial (TCP, TLS, WebSocket handshake),
            and for an accepted connection to complete its handshake.
        io_timeout: default seconds a reliable send waits for room in a full buffer.
        idle_timeout: connections without a frame for this long are closed.
        conn_buffer_size: bytes queued per connection before senders wait for the peer.
        max_connections: accepted connections held at once (more are closed at once).
        max_connections_per_source: accepted connections held at once per remote IP.
        preauth_max_frame_size: the largest message an accepted connection may send before the
            engine accepted one of its frames (or it proved the bearer token).
        preauth_buffer_limit: bounds the connections not yet trusted (handshakes under way
            included) to ``preauth_buffer_limit // preauth_max_frame_size`` (their worst-case
            buffering), members' hosts excepted.
        preauth_timeout: an accepted connection must become trusted (deliver a frame the engine
            accepts, or prove the bearer token) within this long of its arrival.
        frame_timeout: the older name of ``preauth_timeout`` (used if given).
        ping_interval: a connection silent this long is pinged, and dropped when it stays
            silent twice as long (0 disables).
        max_rejected_frames: a connection is closed once the engine refused this many of its
            frames.
        max_untrusted_per_source: connections not yet trusted per remote IP (members' hosts
            excepted).
        reserved_for_members: of ``max_connections``, slots only members' hosts may take.
        max_member_dials, max_member_dials_per_host: connections dialed to members' hosts, in
            all and per host.
        max_other_dials, max_other_dials_per_host: connections dialed to other hosts.
        member_check: ``member_check(host)`` tells whether ``host`` is a known member's (see
            :mod:`gossip.transports._admission`).
        allowed_origins: ``Origin`` values whose handshakes are accepted; any other handshake
            that carries an ``Origin`` (a browser's) or ``Sec-Fetch-*`` header is refused.
    """

    def __init__(
        self,
        bind_addr: str = "",
        *,
        path: str = "/gossip",
        advertise_addr: str = "",
        name: str = "node",
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        bearer_token: str = "",
        allow_insecure: bool = False,
        max_frame_size: int = 4 * 1024 * 1024,
        max_stream_frame_size: int = 8 * 1024 * 1024,
        dial_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        io_timeout: float = 2.0,
        idle_timeout: float = 60.0,
        conn_buffer_size: int = 4 * 1024 * 1024,
        max_connections: int = 1024,
        max_connections_per_source: int = 64,
        preauth_max_frame_size: int = 1024 * 1024,
        preauth_buffer_limit: int = 64 * 1024 * 1024,
        frame_timeout: float | None = None,
        ping_interval: float = 10.0,
        preauth_timeout: float = 10.0,
        max_rejected_frames: int = 16,
        max_untrusted_per_source: int = 8,
        reserved_for_members: int = 0,
        max_member_dials: int = 1024,
        max_member_dials_per_host: int = 256,
        max_other_dials: int = 64,
        max_other_dials_per_host: int = 4,
        member_check: MemberCheck | None = None,
        allowed_origins: list[str] | tuple[str, ...] = (),
    ) -> None:
        if frame_timeout is not None:
            preauth_timeout = frame_timeout
        if bind_addr:
            self._bind_ip, self._bind_port, self._family = split_host_port(bind_addr)
        else:
            self._bind_ip, self._bind_port, self._family = "", 0, socket.AF_INET
        if not path.startswith("/") or any(c in path for c in "?# \t\r\n"):
            raise ValueError(f"path must start with '/' and hold no query or spaces, got {path!r}")
        if advertise_addr and not is_websocket_url(advertise_addr):
            raise AddressError(f"advertise address {advertise_addr!r} is not a ws:// or wss:// URL")
        for label, size in (("max_frame_size", max_frame_size),
                            ("max_stream_frame_size", max_stream_frame_size),
                            ("conn_buffer_size", conn_buffer_size),
                            ("max_connections", max_connections),
                            ("max_connections_per_source", max_connections_per_source),
                            ("preauth_max_frame_size", preauth_max_frame_size),
                            ("preauth_buffer_limit", preauth_buffer_limit),
                            ("max_rejected_frames", max_rejected_frames)):
            if size < 1:
                raise ValueError(f"{label} must be >= 1, got {size}")
        for label, value in (("dial_timeout", dial_timeout), ("handshake_timeout", handshake_timeout),
                             ("io_timeout", io_timeout), ("idle_timeout", idle_timeout),
                             ("preauth_timeout", preauth_timeout)):
            if value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        if ping_interval < 0:
            raise ValueError(f"ping_interval must be >= 0, got {ping_interval}")
        self.path = path
        self.name = name
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.bearer_token = bearer_token
        self.allow_insecure = allow_insecure
        self.max_frame_size = max_frame_size
        self.max_stream_frame_size = max_stream_frame_size
        self._advertise = advertise_addr
        self._dial_timeout = dial_timeout
        self._handshake_timeout = handshake_timeout
        self._io_timeout = io_timeout
        self._idle_timeout = idle_timeout
        self._conn_buffer = conn_buffer_size
        self._preauth_frame = min(preauth_max_frame_size, max_frame_size)
        self._preauth_timeout = preauth_timeout
        self._ping_interval = ping_interval
        self._max_rejected = max_rejected_frames
        self._origins = frozenset(o.strip().lower() for o in allowed_origins)
        self._admission = Admission(
            max_connections=max_connections, max_per_source=max_connections_per_source,
            reserved_for_members=reserved_for_members,
            max_untrusted=max(1, preauth_buffer_limit // self._preauth_frame),
            max_untrusted_per_source=max_untrusted_per_source, is_member=member_check)
        self._dials = DialBudget(
            max_members=max_member_dials, max_per_member_host=max_member_dials_per_host,
            max_others=max_other_dials, max_per_other_host=max_other_dials_per_host,
            is_member=member_check)
        self._nonces = wsauth.ServerNonces(2 * handshake_timeout + 1.0)

        self._lock = threading.Lock()  # guards the tables below and the flags
        self._ids = itertools.count(1)
        self._started = False
        self._closed = False
        self._stop = threading.Event()
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._listener: socket.socket | None = None
        self._waker: _Waker | None = None
        self._threads: list[threading.Thread] = []
        self._local_addr = ""
        self._links: dict[_Link, None] = {}
        self._threaded: dict[_SyncLink, None] = {}  # links whose threads close() joins
        self._host_threads: dict[threading.Thread, None] = {}
        self._out: dict[str, _SyncLink] = {}
        self._req_idle: dict[str, list[_SyncLink]] = {}
        self._pending: dict[socket.socket, _Pending] = {}  # accept thread only
        self._proved: weakref.WeakValueDictionary[int, Request] = weakref.WeakValueDictionary()
        self._failed: dict[str, tuple[float, str]] = {}
        self._client_default: ssl.SSLContext | None = None
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "ws_sent", "ws_received", "ws_accepts", "ws_dials", "ws_dial_failures",
                "ws_rejected", "ws_rejected_per_source", "ws_rejected_reserved_for_members",
                "ws_untrusted_refused", "ws_untrusted_per_source_refused", "ws_auth_refused",
                "ws_auth_challenges", "ws_server_unproven", "ws_origin_refused",
                "ws_rejected_frames_closed", "ws_dial_refused_members",
                "ws_dial_refused_member_host", "ws_dial_refused_others",
                "ws_dial_refused_other_host",
                "ws_not_found", "ws_handshake_failed", "ws_handshake_timeouts",
                "ws_frame_timeouts", "ws_insecure_refused", "ws_text_dropped", "ws_too_large",
                "ws_protocol_errors", "ws_ping_timeouts", "ws_idle_closed", "ws_frames_lost",
                "ws_buffer_full", "ws_paused", "ws_requests", "ws_streams_dialed",
                "ws_streams_accepted", "ws_streams_refused", "ws_send_errors",
                "ws_callback_errors", "ws_writer_errors",
            ),
            0,
        )

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
                self._waker = _Waker()
                self._threads.append(threading.Thread(
                    target=self._accept_loop, name=f"gossip-{self.name}-ws-accept", daemon=True))
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
        deadline = Deadline(self._io_timeout if timeout is None else timeout)
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
        what = f"request to {addr}"
        deadline = Deadline(timeout)
        self._count("ws_requests")
        for attempt in range(2):
            link, reused = self._request_link(addr)
            clean = False
            try:
                self._wait_open(link, what, deadline)
                with link.lock:
                    link.mailbox.clear()
                    link.expect_reply = True
                    link.unclean = False
                try:
                    link.put(data, deadline, what)
                except SendError:
                    if reused and not attempt:
                        continue
                    raise
                with link.lock:
                    while not link.mailbox:
                        if link.state is _CLOSED:
                            if reused and not attempt:
                                break
                            raise SendError(f"{what}: connection closed before the reply "
                                            f"({link.error})")
                        left = deadline.remaining(what)
                        link.readable.wait(left)
                    if not link.mailbox:
                        continue  # a reused connection died before answering: dial once more
                    reply = link.mailbox.popleft()
                    link.expect_reply = False
                    clean = not link.unclean and link.state is _OPEN
                return reply
            finally:
                self._release_request_link(addr, link, clean)
        raise SendError(f"{what}: no connection")  # pragma: no cover - the loop returns or raises

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Dial a WebSocket connection dedicated to one stream (see :class:`StreamConn`).

        Raises:
            ConnectError: ``addr`` could not be reached within ``timeout``.
            AddressError, ClusterClosed: as :meth:`send`.
        """
        self._check_open()
        uri = self._check_url(addr)
        link = _SyncLink(self, addr, _STREAM, False, uri=uri)
        link.slot = self._dial_slot(addr)
        try:
            self._register(link)
        except BaseException:
            self._dials.release(link.slot)
            raise
        link.start()
        self._wait_open(link, f"open stream to {addr}", Deadline(timeout))
        self._count("ws_streams_dialed")
        return link.stream or _WsStream(link)

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
        _shutdown(self._listener)
        if self._waker is not None:
            self._waker.wake()
        # What is queued (a leave announcement...) is written first, for a short while.
        for link in links:
            link.request_close(final=True)
        flush_end = time.monotonic() + _FLUSH_TIMEOUT
        for link in threaded:
            if link.thread.ident is not None and link.thread is not threading.current_thread():
                link.thread.join(max(0.0, flush_end - time.monotonic()))
        for link in links:
            link.abort("the transport is closed")
        deadline = time.monotonic() + _JOIN_TIMEOUT
        me = threading.current_thread()
        for thread in self._threads:
            if thread.ident is not None and thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        for link in threaded:
            if link.thread.ident is not None and link.thread is not me:
                link.thread.join(max(0.0, deadline - time.monotonic()))
        for thread in host_threads:
            if thread.ident is not None and thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))
        stragglers = [t.name for t in self._threads + [x.thread for x in threaded] + host_threads
                      if t.is_alive() and t is not me]
        if stragglers:
            _log.warning("%s ! threads did not stop: %s", self.name, stragglers)
        if self._listener is not None:
            self._listener.close()
        if self._waker is not None:
            self._waker.close()
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
        ip = _plain_ip(ip)
        peer = format_addr(ip, port) if ip else "host-connection"
        admitted: Ticket | Refusal = refusal if refusal is not None else self._admit(ip)
        if isinstance(admitted, Refusal):
            try:
                ws.close(CloseCode.POLICY_VIOLATION, admitted.reason[:120])
            except Exception:
                pass
            return
        link = _HostLink(self, ws, kind, peer, ip)
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
        ip, port = (_plain_ip(str(peer[0])), int(peer[1])) if peer else ("", 0)
        admitted: Ticket | Refusal = refusal if refusal is not None else self._admit(ip)
        if isinstance(admitted, Refusal):
            return admitted
        link = HostedConnection(self, kind, format_addr(ip, port) if ip else "hosted-connection", ip, wake)
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
        """Parse a peer URL and apply the plain-``ws://`` policy.

        Raises:
            AddressError: not a valid ``ws://`` / ``wss://`` URL.
            ConnectError: plain ``ws://`` to a host not on loopback without ``allow_insecure``.
        """
        try:
            uri = parse_uri(addr)
        except (InvalidURI, ValueError) as exc:
            raise AddressError(f"invalid WebSocket URL {addr!r}: {exc}") from None
        if uri.user_info is not None:
            raise AddressError(f"invalid WebSocket URL {addr!r}: user info is not allowed")
        if not uri.secure and not self.allow_insecure and not _is_loopback(uri.host):
            self._count("ws_insecure_refused")
            raise ConnectError(
                f"connect to {addr}: plain ws:// to {uri.host}, which is not on loopback, is "
                f"refused (use wss://, or set allow_insecure_websockets)")
        return uri

    def _default_client_ssl(self) -> ssl.SSLContext:
        ctx = self._client_default
        if ctx is None:
            ctx = self._client_default = ssl.create_default_context()
        return ctx

    def _screen(self, path: str, headers: Mapping[str, str] | Any,
                known_proved: bool = False) -> tuple[str, Refusal | None, bool]:
        """Return ``(channel, refusal, proved)`` for a handshake's path and headers (counted).

        ``proved`` is True when the dialer proved the bearer token (``known_proved``: it did,
        in an earlier screening of this very request, and its nonce is used up). A header that
        matters given twice is a 400.
        """
        try:
            return self._screen_request(path, headers, known_proved)
        except MultipleValuesError as exc:
            self._count("ws_handshake_failed")
            return _FRAMES, Refusal(400, f"Bad Request: the header {exc} is repeated"), False

    def _screen_request(self, path: str, headers: Mapping[str, str] | Any,
                        known_proved: bool) -> tuple[str, Refusal | None, bool]:
        base = path.split("?", 1)[0]
        if base != self.path:
            self._count("ws_not_found")
            return _FRAMES, Refusal(404, f"Not Found: gossip listens on {self.path}"), False
        origin = headers.get("Origin")
        if origin is not None or headers.get("Sec-Fetch-Site") is not None \
                or headers.get("Sec-Fetch-Mode") is not None:
            # A browser's handshake: a web page must not speak gossip to a node.
            if origin is None or origin.strip().lower() not in self._origins:
                self._count("ws_origin_refused")
                shown = (origin or "none")[:80]
                return _FRAMES, Refusal(403, f"Forbidden: a handshake from origin {shown!r} is "
                                             "refused (not in websocket_allowed_origins)"), False
        channel = (headers.get(CHANNEL_HEADER) or _FRAMES).strip().lower()
        kind = _STREAM if channel == _STREAM else _FRAMES
        token = self.bearer_token
        if token and not known_proved:
            refusal = self._check_proof(token, headers, channel)
            if refusal is not None:
                return kind, refusal, False
        proved = bool(token)
        if channel == _STREAM:
            if self._on_stream is None:
                self._count("ws_streams_refused")
                return _STREAM, Refusal(403, "streams are not accepted here"), proved
            return _STREAM, None, proved
        if channel != _FRAMES:
            self._count("ws_handshake_failed")
            return _FRAMES, Refusal(400, f"unknown {CHANNEL_HEADER} {channel[:40]!r}"), proved
        return _FRAMES, None, proved

    def _check_proof(self, token: str, headers: Mapping[str, str] | Any,
                     channel: str) -> Refusal | None:
        """Check the dialer's proof of the token, or answer its challenge (a 401 either way)."""
        auth = headers.get(wsauth.AUTH_HEADER)
        if auth is not None:
            parsed = wsauth.parse_auth(auth)
            why = "malformed proof"
            if parsed is not None:
                snonce, cnonce, proof = parsed
                if not wsauth.verify(wsauth.client_proof(token, cnonce, snonce, channel), proof):
                    why = "wrong proof of the bearer token"
                else:
                    why = self._nonces.accept(snonce)
                    if not why:
                        return None
            self._count("ws_auth_refused")
            return Refusal(401, f"Unauthorized: {why}",
                           [("WWW-Authenticate", wsauth.challenge_value())])
        cnonce = (headers.get(wsauth.CHALLENGE_HEADER) or "").strip()
        if not wsauth.valid_client_nonce(cnonce):
            self._count("ws_auth_refused")
            return Refusal(401, "Unauthorized: this node requires proof of the bearer token",
                           [("WWW-Authenticate", wsauth.challenge_value())])
        # The dialer's first request: prove we hold the token, and challenge it.
        self._count("ws_auth_challenges")
        snonce = self._nonces.issue()
        value = wsauth.challenge_value(snonce, wsauth.server_proof(token, cnonce, snonce))
        return Refusal(401, "Unauthorized: prove the bearer token", [("WWW-Authenticate", value)])

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

    def _next_id(self) -> int:
        return next(self._ids)

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

    def _register(self, link: _SyncLink) -> None:
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            self._links[link] = None
            self._threaded[link] = None

    def _register_accepted(self, link: _Link, ticket: Ticket) -> None:
        """Track an accepted connection (``_admit`` gave it ``ticket``)."""
        link.ticket = ticket
        ticket.owner = link
        if link.trusted:
            self._admission.trust(ticket)
        with self._lock:
            self._links[link] = None
            if isinstance(link, _SyncLink):
                self._threaded[link] = None
        self._count("ws_accepts")

    def _trusted(self, link: _Link) -> None:
        if link.ticket is not None:
            self._admission.trust(link.ticket)

    def _rejected(self, link: _Link) -> None:
        """The engine refused a frame of ``link``: close it once it has had too many."""
        link.rejected += 1
        if link.rejected == self._max_rejected:
            self._count("ws_rejected_frames_closed")
            _log.debug("%s ! %s: %d frames refused; closing", self.name, link.peer_addr,
                       link.rejected)
            link.abort(f"{link.rejected} frames refused")

    def _link_closed(self, link: _Link) -> None:
        """A connection closed: forget it as a pooled or idle connection, release its slots."""
        with self._lock:
            if isinstance(link, _SyncLink) and self._out.get(link.peer_addr) is link:
                del self._out[link.peer_addr]
            idle = self._req_idle.get(link.peer_addr)
            if idle and link in idle:
                idle.remove(link)
                if not idle:
                    del self._req_idle[link.peer_addr]
            self._links.pop(link, None)
        if link.ticket is not None:
            self._admission.release(link.ticket)
        self._dials.release(link.slot)

    def _link_done(self, link: _Link) -> None:
        """A connection's threads are finished: stop tracking them."""
        with self._lock:
            self._links.pop(link, None)
            if isinstance(link, _SyncLink) and not self._closed:
                self._threaded.pop(link, None)

    def _dial_slot(self, addr: str) -> DialSlot:
        """Take a place in the dial budget for a connection to ``addr``.

        Raises:
            ConnectError: the budget for ``addr``'s host (member or not) is spent (counted).
        """
        slot = self._dials.acquire(addr)
        if isinstance(slot, str):
            self._count(f"ws_{slot}")
            members, others = self._dials.counts()
            raise ConnectError(
                f"connect to {addr}: too many connections dialed ({slot.replace('_', ' ')}; "
                f"{members} to members, {others} to other hosts)")
        return slot

    def _dial_failed(self, addr: str, reason: str) -> None:
        with self._lock:
            if len(self._failed) >= _FAILED_MAX:
                self._failed.clear()
            self._failed[addr] = (time.monotonic(), reason)

    def _pooled(self, addr: str, reliable: bool) -> _SyncLink:
        """Return the pooled frame connection to ``addr``, dialing one if needed."""
        with self._lock:
            link = self._out.get(addr)
            if link is not None and link.state is not _CLOSED and not link.closing:
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
            if link is not None and link.state is not _CLOSED and not link.closing:
                self._dials.release(slot)
                return link
            link = _SyncLink(self, addr, _FRAMES, False, uri=uri)
            link.slot = slot
            self._out[addr] = link
            self._links[link] = None
            self._threaded[link] = None
            self._failed.pop(addr, None)
        link.start()
        return link

    def _wait_open(self, link: _Link, what: str, deadline: Deadline | None = None) -> None:
        """Wait until ``link`` finished its handshake.

        Raises:
            ConnectError: the dial failed or did not finish in time.
        """
        if link.state is _OPEN:
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
        if link.state is not _OPEN:
            if self._closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            raise ConnectError(f"{what}: {link.error or 'connection closed'}")

    def _request_link(self, addr: str) -> tuple[_SyncLink, bool]:
        with self._lock:
            idle = self._req_idle.get(addr)
            while idle:
                link = idle.pop()
                if not idle:
                    del self._req_idle[addr]
                if link.state is _OPEN and not link.closing:
                    return link, True
                idle = self._req_idle.get(addr)
        uri = self._check_url(addr)
        link = _SyncLink(self, addr, _REQUEST, False, uri=uri)
        link.slot = self._dial_slot(addr)
        try:
            self._register(link)
        except BaseException:
            self._dials.release(link.slot)
            raise
        link.start()
        return link, False

    def _release_request_link(self, addr: str, link: _SyncLink, clean: bool) -> None:
        with self._lock:
            keep = (clean and not self._closed and link.state is _OPEN
                    and len(self._req_idle.get(addr, ())) < _REQUEST_IDLE_PER_ADDR)
            if keep:
                link.expect_reply = False
                self._req_idle.setdefault(addr, []).append(link)
        if not keep:
            link.abort("request connection released")

    def _accept_stream(self, link: _Link) -> None:
        """Hand an accepted stream connection to ``on_stream`` (called on its reader thread)."""
        callback = self._on_stream
        stream = _WsStream(link)
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
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind_ip, self._bind_port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = format_addr(self._bind_ip, self._bind_port)
            raise TransportError(f"cannot bind {where}: {exc}") from exc
        self._listener = sock
        port = sock.getsockname()[1]
        self._local_addr = websocket_url(self._bind_ip, port, self.path, self.server_ssl is not None)

    @property
    def bound_addr(self) -> str:
        """The listener's ``"ip:port"`` (``""`` without one)."""
        if self._listener is None:
            return ""
        return format_addr(self._bind_ip, self._listener.getsockname()[1])

    def _accept_loop(self) -> None:
        listener, waker = self._listener, self._waker
        assert listener is not None and waker is not None
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, "listener")
        sel.register(waker.r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                try:
                    events = sel.select(timeout=_TICK)
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                for key, _mask in events:
                    if key.data == "listener":
                        self._accept(sel, listener)
                    elif isinstance(key.data, _Pending):
                        self._pending_readable(sel, key.data)
                self._pending_deadlines(sel, time.monotonic())
        except Exception:
            if not self._stop.is_set():
                _log.error("%s ! websocket accept loop failed", self.name, exc_info=True)
        finally:
            for pend in list(self._pending.values()):
                self._drop_pending(sel, pend)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, listener: socket.socket) -> None:
        """Admit new connections; each waits in the selector, with no thread, until its
        request line (or, over TLS, its first bytes) has arrived."""
        for _ in range(64):
            try:
                sock, src = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._stop.is_set():
                    _log.debug("%s ! accept failed", self.name, exc_info=True)
                return
            ip = _plain_ip(src[0])
            peer = format_addr(src[0], src[1])
            ticket = self._admit(ip)
            if isinstance(ticket, Refusal):
                _log.debug("%s ! refusing %s: %s", self.name, peer, ticket.reason)
                sock.close()
                continue
            pend = _Pending(sock, ip, peer, ticket)
            ticket.owner = pend
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(sock, selectors.EVENT_READ, pend)
            except (OSError, ValueError):
                self._admission.release(ticket)
                sock.close()
                continue
            self._pending[sock] = pend

    def _pending_readable(self, sel: selectors.BaseSelector, pend: _Pending) -> None:
        """A connection waiting for its request line can be read (accept thread)."""
        if self.server_ssl is None:
            try:
                data = pend.sock.recv(_REQUEST_LINE_MAX - len(pend.buf))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._count("ws_handshake_failed")
                self._drop_pending(sel, pend)
                return
            pend.buf += data
            if b"\n" not in pend.buf:
                if len(pend.buf) >= _REQUEST_LINE_MAX:
                    self._count("ws_handshake_failed")
                    _log.debug("%s ! %s: no request line in %d bytes", self.name, pend.peer,
                               len(pend.buf))
                    self._drop_pending(sel, pend)
                return
        self._pending.pop(pend.sock, None)
        try:
            sel.unregister(pend.sock)
            pend.sock.setblocking(True)
        except (OSError, KeyError, ValueError):
            self._admission.release(pend.ticket)
            pend.sock.close()
            return
        link = _SyncLink(self, pend.peer, _FRAMES, True, sock=pend.sock, ip=pend.ip,
                         prefix=bytes(pend.buf))
        link.created = pend.since
        self._register_accepted(link, pend.ticket)
        link.start()

    def _pending_deadlines(self, sel: selectors.BaseSelector, now: float) -> None:
        """Close connections whose request line did not come within the handshake timeout."""
        limit = now - self._handshake_timeout
        for pend in [p for p in self._pending.values() if p.since < limit]:
            self._count("ws_handshake_timeouts")
            _log.debug("%s ! %s: no request line within %.1fs", self.name, pend.peer,
                       self._handshake_timeout)
            self._drop_pending(sel, pend)

    def _drop_pending(self, sel: selectors.BaseSelector, pend: _Pending) -> None:
        self._pending.pop(pend.sock, None)
        try:
            sel.unregister(pend.sock)
        except (KeyError, ValueError):
            pass
        self._admission.release(pend.ticket)
        _shutdown(pend.sock)
        pend.sock.close()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(_TICK):
            try:
                self._sweep(time.monotonic())
            except Exception:
                _log.error("%s ! websocket sweep failed", self.name, exc_info=True)

    def _sweep(self, now: float) -> None:
        """Act on handshake, first-frame, idle, close and keepalive deadlines."""
        with self._lock:
            links = list(self._links)
            idle_req = {link for idle in self._req_idle.values() for link in idle}
        ping = self._ping_interval
        for link in links:
            state = link.state
            if state is _CLOSED:
                continue
            if state is _CONNECTING:
                if now - link.created > self._handshake_timeout + (0.5 if not link.accepted else 0):
                    if link.accepted and not getattr(link, "refusal_counted", False):
                        self._count("ws_handshake_timeouts")
                    link.abort("the handshake did not finish in time")
                continue
            if isinstance(link, _SyncLink) and link.close_sent and now - link.close_sent > _CLOSE_TIMEOUT:
                link.abort("no close frame from the peer")
                continue
            if link.accepted and not link.trusted and now - link.created > self._preauth_timeout:
                # Frames the engine refused do not count: only an accepted one trusts a link.
                self._count("ws_frame_timeouts")
                link.abort("no frame accepted within the pre-authentication timeout")
                continue
            busy = link.queued or (link.kind == _REQUEST and link.expect_reply)
            if link.kind != _STREAM and not busy and not link.closing \
                    and now - link.last_frame > self._idle_timeout and (
                        link.kind != _REQUEST or link in idle_req):
                self._count("ws_idle_closed")
                link.request_close()
                continue
            if ping and isinstance(link, _SyncLink):
                silent = now - link.last_rx
                if silent > 2 * ping and link.ping_sent > link.last_rx:
                    self._count("ws_ping_timeouts")
                    link.abort(f"no frame or pong for {silent:.1f}s")
                elif silent > ping and now - link.ping_sent > ping:
                    link.ping_sent = now
                    link.send_ping()

