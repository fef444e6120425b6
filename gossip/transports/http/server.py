"""The listening side of the HTTP transport: one POST, its frames to the engine, the replies back.

:class:`Exchanges` judges one request, whoever carried it: the transport's own listener
(:class:`Listener`) or a host's WSGI or ASGI server (:mod:`gossip.transports.http.hosted`).
In order, and each refusal counted under ``http_<reason>``:

1. the method (POST, else 405) and the path (``path``, else 404);
2. a browser's request (an ``Origin`` not allowed, or a cross-site ``Sec-Fetch-Site``): 403;
3. the body's length, judged BEFORE a byte of it is read: a ``Content-Length`` is required (a
   chunked body is refused with 411) and must be at most the frame limit (the smaller
   pre-authentication limit for a connection not trusted yet): 413;
4. with a bearer token, the request's proof (:mod:`.frames`): 401, and a replayed nonce too;
5. the frames (length-prefixed): a malformed body is 400.

The frames then reach the engine as one batch, each carrying an :class:`Exchange` as its
connection. What the engine sends back on it while the request is open (an ack, a join or
push/pull reply, the answer to a request) is the response body. The response is written as
soon as the engine has handled every frame (it says so with :meth:`Exchange.handled`), or at
once for a request once its reply is there, and at the latest after the wait the client asked
for, capped at ``reply_wait``. A frame sent on a finished exchange is refused (counted
``http_late_replies``).

:class:`Listener` is a bounded threaded server: one accept thread (``http-accept``), one thread
per admitted connection (``http-<n>``), and a sweep thread (``http-sweep``) that cuts a
request not read whole within ``frame_timeout`` (a slow-loris trickle) and a connection not
trusted within ``preauth_timeout``. Connections are admitted by
:class:`~gossip.transports._admission.Admission` (in all, per source, reserved for members,
untrusted per source) before any thread exists for them. While the engine pauses a connection
(its queues are full), the connection reads no further request: a client's POSTs then wait in
its own queue, bounded, and its reliable sends are paced.

This module imports nothing from :mod:`gossip` but the errors and the transports.
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from gossip.errors import SendError, SendQueueFull
from gossip.transports.http import frames as http_frames
from gossip.transports._admission import Admission, Ticket
from gossip.transports._sockets import close_quietly, shutdown
from gossip.transports.base import Incoming, OnPackets
from gossip.transports.limits import ConnectionLimits

__all__ = ["Exchange", "Exchanges", "Listener", "Response", "CONTENT_TYPE", "REASONS"]

_log = logging.getLogger("gossip.transports.http")

CONTENT_TYPE = "application/x-gossip-frames"
"""The media type of request and response bodies."""

_MAX_LINE = 8192
_MAX_HEADERS = 64
_SWEEP = 0.1
_JOIN = 5.0

Response = tuple[int, list[tuple[str, str]], bytes, bool]
"""``(status, headers, body, close)``: what to answer, and whether to close the connection."""


class Exchange:
    """The connection the frames of one POST carry: what the engine sends on it is the response.

    Args:
        peer: the client's address.
        frames: how many frames the request carried (how many :meth:`handled` calls end it).
        max_bytes: reply bytes held at most (more are refused with ``SendQueueFull``).
        on_trusted: called when the engine accepted a frame of it.
        on_rejected: called when the engine refused one.
        count: the transport's counter.
        on_pause: called with True when the engine asks the connection to stop reading (its
            queues are full), with False when it may read again.
    """

    def __init__(self, peer: str, frames: int, max_bytes: int, on_trusted: Callable[[], None],
                 on_rejected: Callable[[], None], count: Callable[[str], None],
                 on_pause: Callable[[bool], None] = lambda paused: None) -> None:
        self._peer = peer
        self._pending = frames
        self._max_bytes = max_bytes
        self._bytes = 0
        self._frames: list[bytes] = []
        self._cv = threading.Condition(threading.Lock())
        self._over = False
        self._on_trusted = on_trusted
        self._on_rejected = on_rejected
        self._count = count
        self._on_pause = on_pause

    @property
    def peer(self) -> str:
        """The client's address."""
        return self._peer

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Add a frame to the response (never waits).

        Raises:
            SendError: the response was already written.
            SendQueueFull: the response holds ``max_bytes`` already.
        """
        with self._cv:
            if self._over:
                self._count("late_replies")
                raise SendError(f"the HTTP exchange with {self._peer} is over")
            if self._bytes + len(data) > self._max_bytes:
                raise SendQueueFull(f"the HTTP response to {self._peer} is full")
            self._frames.append(bytes(data))
            self._bytes += len(data)
            self._cv.notify_all()

    def handled(self) -> None:
        """The engine is done with one of the request's frames."""
        with self._cv:
            self._pending -= 1
            if self._pending <= 0:
                self._cv.notify_all()

    def pause_reading(self) -> None:
        """The engine's queues are full: the connection reads no further request until
        :meth:`resume_reading` (this one's body was read whole already)."""
        self._on_pause(True)

    def resume_reading(self) -> None:
        """The connection may read its next request."""
        self._on_pause(False)

    def mark_trusted(self) -> None:
        """The engine accepted a frame: the connection that carried it is trusted."""
        self._on_trusted()

    def mark_rejected(self) -> None:
        """The engine refused a frame (it will not handle it)."""
        self._on_rejected()

    def close(self) -> None:
        """End the exchange: later frames are refused."""
        with self._cv:
            self._over = True
            self._cv.notify_all()

    def wait(self, timeout: float, request: bool) -> list[bytes]:
        """Wait for the engine to handle every frame (for a request, for its first reply), at
        most ``timeout`` seconds; end the exchange and return the frames sent on it."""
        end = time.monotonic() + timeout
        with self._cv:
            while not self._over and self._pending > 0 and not (request and self._frames):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            self._over = True
            return self._frames


class Exchanges:
    """Judge requests and run their exchanges (see the module docstring).

    Args:
        path: the URL path served.
        limits: the frame limits and ``max_rejected_frames``.
        bearer_token: the shared secret; empty: requests carry no proof.
        reply_wait: the longest a response waits for the engine.
        auth_window: how far a request's time may be from ours (seconds).
        max_frames: frames one body may carry.
        allowed_origins: browser origins allowed (normally none).
        count: the transport's counter (``count(reason)``).
    """

    def __init__(self, *, path: str, limits: ConnectionLimits, bearer_token: str, reply_wait: float,
                 auth_window: float, max_frames: int, allowed_origins: tuple[str, ...],
                 count: Callable[[str], None]) -> None:
        self.path = path
        self.limits = limits
        self.token = bearer_token
        self.reply_wait = reply_wait
        self.auth_window = auth_window
        self.max_frames = max_frames
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)
        self._count = count
        self._replays = http_frames.ReplayCache(65536)
        self._replay_lock = threading.Lock()
        self._open: set[Exchange] = set()
        self._closed = False
        self.on_packets: OnPackets | None = None

    def close(self) -> None:
        """Stop serving: every exchange waiting for the engine answers at once (idempotent)."""
        with self._replay_lock:
            self._closed = True
            self.on_packets = None
            open_now = list(self._open)
        for exchange in open_now:
            exchange.close()

    def refuse(self, status: int, reason: str, why: str) -> Response:
        """Count ``reason`` and return the refusal (the connection is then closed)."""
        self._count(reason)
        return status, [("Content-Type", "text/plain")], why.encode() + b"\n", True

    def serve(self, method: str, path: str, headers: Mapping[str, str], read_body: Callable[[int], bytes],
              peer: str, trusted: bool, on_trusted: Callable[[], None] = lambda: None,
              on_rejected: Callable[[], None] = lambda: None,
              on_pause: Callable[[bool], None] = lambda paused: None) -> Response:
        """Answer one request; ``headers`` has lower-case names, ``read_body(n)`` reads the body.

        ``path`` is ``""`` for a request a host's server routed here (its path is not judged);
        ``trusted`` says whether the connection is (a host's connections never are, so their
        bodies are bounded by the pre-authentication frame limit). Never raises for what the
        request holds: every refusal is a response.
        """
        if path and path.split("?", 1)[0] != self.path:  # "": a host's server routed it here
            return self.refuse(404, "refused_path", "not a gossip path")
        if method != "POST":
            return self.refuse(405, "refused_method", "gossip takes POST only")
        origin = headers.get("origin", "")
        if (origin and origin.lower().rstrip("/") not in self.allowed_origins) or (
                not origin and headers.get("sec-fetch-site", "") == "cross-site"):
            return self.refuse(403, "origin_refused", "browsers may not speak gossip to this node")
        if "transfer-encoding" in headers:
            return self.refuse(411, "refused_chunked", "a Content-Length is required")
        text = headers.get("content-length", "")
        if not text.isdigit() or len(text) > 12:
            return self.refuse(411, "refused_no_length", "a Content-Length is required")
        length = int(text)
        frame = self.limits.max_frame_size if trusted else self.limits.preauth_frame
        if length > frame + http_frames.FRAME_HEADER_SIZE:
            return self.refuse(413, "refused_too_large",
                               f"a body of {length} bytes is over the limit of {frame}")
        body = read_body(length)
        if len(body) != length:
            return self.refuse(400, "refused_truncated", "the body ended early")
        request_mac = ""
        if self.token:
            checked = http_frames.check_request_auth(self.token, headers.get("gossip-auth", ""),
                                                     time.time(), self.auth_window, body)
            if isinstance(checked, str):
                return self.refuse(401, "auth_refused", f"the bearer token's proof is {checked}")
            nonce, request_mac = checked
            with self._replay_lock:
                verdict = self._replays.add(nonce, time.time() + 2 * self.auth_window, time.time())
            if verdict:
                return self.refuse(401, "auth_replayed" if verdict == "replayed" else "auth_busy",
                                   f"the request's nonce is {verdict}")
            on_trusted()
            trusted = True
        try:
            frames = http_frames.unpack_frames(body, frame, self.max_frames)
        except ValueError as exc:
            return self.refuse(400, "bad_bodies", f"malformed body: {exc}")
        on_packets = self.on_packets
        if on_packets is None:
            return self.refuse(503, "refused_not_running", "gossip is not running")
        self._count("requests")
        replies: list[bytes] = []
        if frames:
            exchange = Exchange(peer, len(frames), self.limits.conn_buffer_size, on_trusted,
                                on_rejected, self._count, on_pause)
            with self._replay_lock:
                if self._closed:
                    return self.refuse(503, "refused_not_running", "gossip is not running")
                self._open.add(exchange)
            try:
                now = time.monotonic()
                on_packets([Incoming(f, peer, True, exchange, now, "http") for f in frames])
                try:
                    wait = min(float(headers.get("gossip-wait", "0") or 0), self.reply_wait)
                except ValueError:
                    wait = 0.0
                replies = exchange.wait(max(0.0, wait), headers.get("gossip-exchange", "") == "request")
            finally:
                with self._replay_lock:
                    self._open.discard(exchange)
        out = http_frames.pack_frames(replies)
        extra = [("Content-Type", CONTENT_TYPE)]
        if self.token:
            extra.append(("Gossip-Auth", http_frames.response_auth(self.token, request_mac, 200, out)))
        return 200, extra, out, False


class _Conn:
    """One accepted connection of the listener."""

    __slots__ = ("sock", "ticket", "peer", "read_deadline", "untrusted_until", "rejected", "closing",
                 "readable")

    def __init__(self, sock: socket.socket, ticket: Ticket, peer: str, untrusted_until: float) -> None:
        self.sock = sock
        self.ticket = ticket
        self.peer = peer
        self.read_deadline: float | None = None
        self.untrusted_until: float | None = untrusted_until
        self.rejected = 0
        self.closing = False
        self.readable = threading.Event()   # clear while the engine has paused the connection
        self.readable.set()


class _Cut(Exception):
    """The request cannot be read (closed, cut by the sweep, or malformed framing)."""


class Listener:
    """The transport's own HTTP server (see the module docstring).

    Args:
        sock: the bound listening socket.
        exchanges: who judges the requests.
        admission: the connection counts.
        limits: timeouts (``idle_timeout``, ``frame_timeout``, ``preauth_timeout``) and
            ``max_rejected_frames``.
        server_ssl: TLS of the listener (``https://``), or None.
        name: the node's name (thread names).
        count: the transport's counter.
    """

    def __init__(self, sock: socket.socket, exchanges: Exchanges, admission: Admission,
                 limits: ConnectionLimits, server_ssl: ssl.SSLContext | None, name: str,
                 count: Callable[[str], None]) -> None:
        self._sock = sock
        self._exchanges = exchanges
        self._admission = admission
        self._limits = limits
        self._ssl = server_ssl
        self._name = name
        self._count = count
        self._lock = threading.Lock()
        self._conns: dict[_Conn, threading.Thread] = {}
        self._closed = threading.Event()
        self._ids = itertools.count(1)
        self._threads = [threading.Thread(target=self._accept_loop, name=f"gossip-{name}-http-accept", daemon=True),
                         threading.Thread(target=self._sweep_loop, name=f"gossip-{name}-http-sweep", daemon=True)]

    @property
    def connections(self) -> int:
        """Accepted connections open now."""
        return len(self._conns)

    def start(self) -> None:
        """Start the accept and sweep threads."""
        for t in self._threads:
            t.start()

    def close(self) -> None:
        """Stop accepting, cut every connection and join every thread (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        shutdown(self._sock)
        close_quietly(self._sock)
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            conn.readable.set()
            shutdown(conn.sock)
        me = threading.current_thread()
        for t in [*self._threads, *conns.values()]:
            if t is not me and t.ident is not None:
                t.join(_JOIN)

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                sock, addr = self._sock.accept()
            except OSError:
                if self._closed.is_set():
                    return
                self._count("accept_errors")
                self._closed.wait(0.05)  # out of descriptors: let some close
                continue
            ip = str(addr[0])
            if ip.startswith("::ffff:"):
                ip = ip[7:]
            ticket = self._admission.admit(ip)
            if isinstance(ticket, str):
                self._count(ticket)
                close_quietly(sock)
                continue
            peer = f"[{ip}]:{addr[1]}" if ":" in ip else f"{ip}:{addr[1]}"
            conn = _Conn(sock, ticket, peer, time.monotonic() + self._limits.preauth_timeout)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name=f"gossip-{self._name}-http-{next(self._ids)}")
            with self._lock:
                if self._closed.is_set():
                    self._admission.release(ticket)
                    close_quietly(sock)
                    return
                self._conns[conn] = thread
                self._count("accepted")  # before its first request can be answered
                thread.start()   # under the lock: close() never sees a thread it cannot join

    def _sweep_loop(self) -> None:
        while not self._closed.wait(_SWEEP):
            now = time.monotonic()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                if conn.read_deadline is not None and now > conn.read_deadline:
                    self._count("frame_timeouts")
                    conn.read_deadline = None
                    shutdown(conn.sock)
                elif conn.untrusted_until is not None and now > conn.untrusted_until and not conn.ticket.trusted:
                    self._count("preauth_timeouts")
                    conn.untrusted_until = None
                    shutdown(conn.sock)

    def _serve(self, conn: _Conn) -> None:
        sock = conn.sock
        try:
            if self._ssl is not None:
                conn.read_deadline = time.monotonic() + self._limits.frame_timeout
                sock.settimeout(self._limits.frame_timeout)
                sock = conn.sock = self._ssl.wrap_socket(sock, server_side=True)
                conn.read_deadline = None
            reader = sock.makefile("rb")
            while not self._closed.is_set() and not conn.closing:
                if not conn.readable.is_set():
                    self._count("paused_waits")   # back-pressure: the engine's queues are full
                    conn.readable.wait()
                    continue
                sock.settimeout(self._limits.idle_timeout)
                if not reader.peek(1):
                    return  # the client closed its keep-alive connection
                conn.read_deadline = time.monotonic() + self._limits.frame_timeout
                sock.settimeout(self._limits.frame_timeout + _SWEEP * 5)  # the sweep cuts first
                if not self._one(conn, sock, reader):
                    return
        except TimeoutError:
            if conn.read_deadline is not None:
                conn.read_deadline = None
                self._count("frame_timeouts")
        except (OSError, _Cut, ValueError):
            pass
        except Exception:  # a bug must not leak the connection's slot
            self._count("errors")
            _log.exception("%s ! serving HTTP connection %s failed", self._name, conn.peer)
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            self._admission.release(conn.ticket)
            close_quietly(sock)

    def _one(self, conn: _Conn, sock: socket.socket, reader: Any) -> bool:
        """Read, judge and answer one request; False when the connection is to close."""
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise _Cut()
        parts = line.decode("latin-1").split()
        if len(line) > _MAX_LINE or len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._count("bad_requests")
            self._write(sock, (400, [], b"bad request line\n", True))
            return False
        method, path, version = parts
        headers: dict[str, str] = {}
        while True:
            h = reader.readline(_MAX_LINE + 1)
            if not h:
                raise _Cut()
            if h in (b"\r\n", b"\n"):
                break
            if len(h) > _MAX_LINE or len(headers) >= _MAX_HEADERS or b":" not in h:
                self._count("bad_requests")
                self._write(sock, (431, [], b"headers too large or malformed\n", True))
                return False
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()

        def trusted() -> None:
            if not conn.ticket.trusted:
                self._admission.trust(conn.ticket)
                conn.untrusted_until = None

        def rejected() -> None:
            conn.rejected += 1
            if conn.rejected >= self._limits.max_rejected_frames:
                self._count("rejected_frames_closed")
                conn.closing = True

        def read_body(n: int) -> bytes:
            data: bytes = reader.read(n)
            conn.read_deadline = None  # the request is read whole: the rest is ours to take
            return data

        def pause(paused: bool) -> None:
            if paused:
                conn.readable.clear()
            else:
                conn.readable.set()

        response = self._exchanges.serve(method, path, headers, read_body, conn.peer,
                                         conn.ticket.trusted, trusted, rejected, pause)
        conn.read_deadline = None
        keep = (not response[3] and not conn.closing and version == "HTTP/1.1"
                and headers.get("connection", "").lower() != "close")
        self._write(sock, response, keep)
        return keep

    def _write(self, sock: socket.socket, response: Response, keep: bool = False) -> None:
        status, headers, body, _ = response
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Length: {len(body)}",
                f"Connection: {'keep-alive' if keep else 'close'}"]
        head += [f"{k}: {v}" for k, v in headers]
        sock.settimeout(self._limits.io_timeout)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


REASONS: dict[int, str] = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
"""The reason phrases of the statuses the transport answers."""
