"""The threaded HTTP server the agent serves its API with (:class:`HttpServer`)."""

from __future__ import annotations

import io
import itertools
import logging
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from ..address import Address
from ..counters import Counters
from ..errors import (
    AddressError,
    TransportError,
)

from .app import MAX_BODY, ApiApp
from .types import WSGIApp

__all__ = ["HttpServer", "parse_listen_addr"]

logger = logging.getLogger("gossip.http")


def parse_listen_addr(text: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port``; port 0 picks a free one) for a listening socket.

    Raises:
        AddressError: the text is not an IP or host name with a port.
    """
    if text.startswith(("http://", "https://")):
        text = urllib.parse.urlsplit(text).netloc
    addr = Address.parse(text, default_port=0, allow_zero_port=True)
    if addr.kind not in ("ip", "host"):
        raise AddressError(f"invalid listen address {text!r}: expected host:port")
    if ":" not in text.strip().rstrip("]") and not text.strip().startswith("["):
        raise AddressError(f"invalid listen address {text!r}: no port (write host:port, port 0 "
                           "for any free one)")
    return addr.host, addr.port


class _Handler(ServerHandler):
    def log_exception(self, exc_info: Any) -> None:
        logger.error("bug: the HTTP application raised", exc_info=exc_info)


class _RequestHandler(WSGIRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # each read and write, besides the deadline

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def handle(self) -> None:
        # wsgiref's own handle(), with a handler that logs instead of printing tracebacks, and
        # the whole request (body included) read before the application runs, within the
        # server's read deadline.
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "bad Content-Length")
            return
        if length > MAX_BODY:
            self.send_error(413, f"the body is {length} bytes; at most {MAX_BODY}")
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            return                                      # the client left (or ran out of time)
        self.server.request_read(self.request)
        handler = _Handler(io.BytesIO(body), self.wfile, self.get_stderr(),  # type: ignore[arg-type]
                           self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[arg-type]


_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n"
         b'{"error":"the agent serves as many connections as it may (http_max_connections)"}\n')


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], family: int, name: str, read_timeout: float,
                 max_connections: int, counters: Counters) -> None:
        self.address_family = family
        self._name = name
        self._ids = itertools.count(1)
        self._threads_lock = threading.Lock()
        self.request_threads: set[threading.Thread] = set()
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.counters = counters
        self._reading: dict[Any, float] = {}           # connections still sending their request
        super().__init__(addr, _RequestHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)   # wsgiref's would do a reverse DNS look-up
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True,
                             name=f"gossip-http-{self._name}-{next(self._ids)}")
        with self._threads_lock:
            busy = len(self.request_threads) >= self.max_connections
            if not busy:
                self.request_threads.add(t)
                self._reading[request] = time.monotonic() + self.read_timeout
        if busy:
            self.counters.inc("http.refused_busy")
            try:
                request.setblocking(False)
                request.send(_BUSY)                    # a fresh socket's buffer takes it whole
            except OSError:
                pass
            self.shutdown_request(request)
            return
        t.start()

    def request_read(self, request: Any) -> None:
        """The request on this connection arrived whole: its read deadline no longer applies."""
        with self._threads_lock:
            self._reading.pop(request, None)

    def service_actions(self) -> None:
        # Runs on the serving thread between polls: cut connections still sending their
        # request past the deadline (a trickle of bytes resets no timer).
        now = time.monotonic()
        with self._threads_lock:
            late = [r for r, deadline in self._reading.items() if deadline <= now]
            for r in late:
                del self._reading[r]
        for r in late:
            self.counters.inc("http.read_timeouts")
            try:
                r.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._threads_lock:
                self.request_threads.discard(threading.current_thread())
                self._reading.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("! HTTP request from %s failed", client_address, exc_info=True)


class HttpServer:
    """Serves a WSGI application on ``host:port`` from background threads.

    Each connection gets a thread, at most ``max_connections`` at once (more are answered 503
    and closed at once), and must send its whole request within ``read_timeout`` seconds.

    Args:
        application: the WSGI application (see :func:`app`).
        addr: ``host:port`` to listen on; port 0 picks a free port.
        on_stop: called first by :meth:`stop`, to end long responses (``ApiApp.close``).
        read_timeout: the deadline of a request, from connection to its last body byte (and of
            each read and write after it).
        max_connections: connections served at once, event streams included.
        counters: where refusals are counted (``http.refused_busy``, ``http.read_timeouts``);
            an :class:`ApiApp`'s own by default, if ``application`` is one.

    Raises:
        AddressError: ``addr`` is malformed.
    """

    def __init__(self, application: WSGIApp, addr: str, on_stop: Callable[[], None] | None = None, *,
                 read_timeout: float = 10.0, max_connections: int = 64,
                 counters: Counters | None = None) -> None:
        self.application = application
        self.host, self.port = parse_listen_addr(addr)
        self.on_stop = on_stop
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        if counters is None:
            counters = application.counters if isinstance(application, ApiApp) else Counters()
        self.counters = counters
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The bound ``host:port`` (the real port if 0 was asked); ``""`` before :meth:`start`."""
        if self._server is None:
            return ""
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        """``http://`` + :attr:`address`."""
        return f"http://{self.address}"

    def start(self) -> None:
        """Bind and start serving (a second call does nothing).

        Raises:
            TransportError: the address cannot be bound (in use, not local...).
        """
        if self._server is not None:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            server = _Server((str(sockaddr[0]), int(sockaddr[1])), family, str(self.port),
                             self.read_timeout, self.max_connections, self.counters)
        except OSError as exc:
            raise TransportError(f"cannot listen for HTTP on {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}") from exc
        server.set_app(self.application)
        server._name = str(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"gossip-http-{server._name}", daemon=True)
        self._thread.start()
        logger.info("HTTP API on %s", self.url)

    def stop(self, timeout: float = 3.0) -> None:
        """End long responses, stop serving, join every thread and close the socket (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        server = self._server
        if server is None:
            return
        end = time.monotonic() + timeout
        if self.on_stop is not None:
            self.on_stop()
        server.shutdown()
        if self._thread is not None:
            self._thread.join(max(0.0, end - time.monotonic()))
        with server._threads_lock:
            threads = list(server.request_threads)
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        server.server_close()
        left = [t.name for t in threads if t.is_alive()]
        if left:
            logger.warning("HTTP threads still running after stop(): %s", ", ".join(left))
