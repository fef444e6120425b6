"""A transport that routes by address: UDP/TCP for ``ip:port``, WebSocket for ``ws(s)://`` URLs,
HTTP for ``http(s)://`` URLs.

:class:`MultiTransport` implements the transport interface over three transports, so that one
cluster can mix nodes that listen on UDP/TCP with nodes that listen on WebSocket only, or on
HTTP only (for example behind a reverse proxy that passes nothing else): every node can dial every
scheme, and each packet goes by the scheme of its destination, which is the address that
member advertises. A node listens only on what it advertises: the *listening* side is started
with the node; the other side only dials, and is created and started on first use (a cluster
of socket nodes never starts a WebSocket thread).

A node that listens on WebSocket only reaches ``ip:port`` peers through a socket transport
that binds nothing (:class:`~gossip.transports.socket.SocketTransport` with ``listen=False``):
its best-effort packets travel as TCP frames. Those are handed to one sender thread
(``gossip-<node>-tcp-out``) through a bounded queue, because the first send to a peer dials it,
and a dial must never hold up the thread that sends probes; an address whose dial just failed
is not dialed again for a second (its packets are dropped and counted, as a lost datagram is).

Received packets go straight from each transport to the engine's callbacks. :attr:`stats`
merges the transports' counters (the WebSocket ones are named ``ws_*``, the HTTP ones ``http_*``) with this
router's own (``tcp_out_*``).

This module imports nothing from :mod:`gossip` but the errors and the transports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from gossip.errors import AddressError, ClusterClosed, GossipError, TransportError
from gossip.address import is_http_url
from gossip.transports.base import (
    OnPackets,
    OnStream,
    RequestLine,
    StreamConn,
    Transport,
    is_websocket_url,
)

__all__ = ["MultiTransport", "Side"]

_log = logging.getLogger("gossip.transports.multi")

Side = Transport | Callable[[], Transport] | None
"""One side of a :class:`MultiTransport`: a transport (started with the router), a factory
called on first use (started then), or None (that scheme cannot be reached)."""

_QUEUE_MAX = 4096
_BACKOFF = 1.0
_JOIN_TIMEOUT = 5.0


class MultiTransport:
    """Route each send to the socket or the WebSocket transport by the destination's scheme.

    Args:
        socket: the UDP/TCP side.
        websocket: the WebSocket side.
        http: the HTTP side (:mod:`gossip.transports.http.transport`).
        socket_dial_only: the socket side binds nothing (``listen=False``): best-effort sends
            to ``ip:port`` peers go through the sender thread (see the module docstring).
        name: node name used in thread names and logs.

    Each side is a transport (started by :meth:`start`), a factory (called and started on
    first use) or None. The advertised address (:attr:`local_addr`) is that of the side that
    listens: the socket side if it is a transport that listens, else the WebSocket side, else
    the HTTP side.
    """

    def __init__(self, *, socket: Side = None, websocket: Side = None, http: Side = None,
                 socket_dial_only: bool = False, name: str = "node") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._sides: dict[str, Transport | None] = {}
        self._factories: dict[str, Callable[[], Transport]] = {}
        for key, side in (("socket", socket), ("websocket", websocket), ("http", http)):
            if side is None:
                self._sides[key] = None
            elif isinstance(side, Transport):
                self._sides[key] = side
            else:
                self._sides[key] = None
                self._factories[key] = side
        self._eager = [k for k in ("socket", "websocket", "http") if self._sides[k] is not None]
        self._dial_only = socket_dial_only
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._started = False
        self._closed = False
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queue_cv = threading.Condition(threading.Lock())
        self._failed: dict[str, float] = {}
        self._sender: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {"tcp_out_queued": 0, "tcp_out_dropped": 0,
                                       "tcp_out_errors": 0}

    # ------------------------------------------------------------------ sides

    @property
    def socket(self) -> Transport | None:
        """The socket side, if it was created."""
        return self._sides["socket"]

    @property
    def websocket(self) -> Transport | None:
        """The WebSocket side, if it was created."""
        return self._sides["websocket"]

    @property
    def http(self) -> Transport | None:
        """The HTTP side, if it was created."""
        return self._sides["http"]

    def _side(self, key: str, addr: str) -> Transport:
        side = self._sides[key]
        if side is not None:
            return side
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed")
            if not self._started:
                raise ClusterClosed(f"transport {self._name} is not started")
            side = self._sides[key]
            if side is not None:
                return side
            factory = self._factories.get(key)
            if factory is None:
                what = {"websocket": "WebSocket URLs", "http": "HTTP URLs"}.get(key, "ip:port addresses")
                raise AddressError(f"cannot reach {addr!r}: this node has no transport for {what}")
            side = factory()
            assert self._on_packets is not None
            side.start(self._on_packets, self._on_stream)
            self._sides[key] = side
            if key == "socket" and self._dial_only:
                self._start_sender()
        _log.debug("%s = started the %s side on first use", self._name, key)
        return side

    def _route(self, addr: str) -> tuple[str, Transport]:
        key = "websocket" if is_websocket_url(addr) else "http" if is_http_url(addr) else "socket"
        return key, self._side(key, addr)

    # ------------------------------------------------------------------ Transport interface

    @property
    def local_addr(self) -> str:
        """The listening side's address (``ip:port``, a ``ws(s)://`` or ``http(s)://`` URL);
        ``""`` if none."""
        for key in self._eager:
            side = self._sides[key]
            if side is None:
                continue
            if key == "socket" and self._dial_only:
                continue
            addr = side.local_addr
            if addr:
                return addr
        return ""

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Name the link a packet to ``addr`` takes (``udp``, ``tcp``, ``ws``, ``http``)."""
        if is_websocket_url(addr):
            return "ws"
        if is_http_url(addr):
            return "http"
        if self._dial_only:
            return "tcp"
        side = self._sides["socket"]
        if side is None:
            return "tcp" if reliable else "udp"
        return side.link_kind(addr, reliable)

    @property
    def stats(self) -> dict[str, int]:
        """Every side's counters merged, plus ``tcp_out_*`` (the dial-only sender)."""
        out: dict[str, int] = {}
        for side in self._sides.values():
            if side is not None:
                for k, v in side.stats.items():
                    if isinstance(v, int):
                        out[k] = out.get(k, 0) + v
        with self._stats_lock:
            out.update(self._stats)
        return out

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Start the sides given as transports (the listening ones).

        Raises:
            TransportError: a listener could not bind.
            ClusterClosed: the router was closed.
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed")
            if self._started:
                raise TransportError(f"transport {self._name} is already started")
            self._on_packets = on_packets
            self._on_stream = on_stream
            self._started = True
        try:
            for key in self._eager:
                side = self._sides[key]
                assert side is not None
                side.start(on_packets, on_stream)
            if self._dial_only and self._sides["socket"] is not None:
                self._start_sender()
        except BaseException:
            self.close()
            raise

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        """Send to ``addr`` over the transport its scheme names; see :meth:`Transport.send`."""
        key, side = self._route(addr)
        if key == "socket" and self._dial_only and not reliable:
            self._hand_off(addr, data)
            return
        side.send(addr, data, reliable, timeout)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Exchange one request and its reply with ``addr``; see :meth:`Transport.request`."""
        return self._route(addr)[1].request(addr, data, timeout)

    def request_line(self, addr: str, data: bytes) -> RequestLine | None:
        """Borrow an idle request connection to ``addr`` from its side, without blocking
        (None: none idle, or the side lends none); see :class:`RequestLine`."""
        lend = getattr(self._route(addr)[1], "request_line", None)
        line: RequestLine | None = None if lend is None else lend(addr, data)
        return line

    def prepare_request_line(self, addr: str, timeout: float) -> bool:
        """Have ``addr``'s side dial a request connection for the next borrower (blocks);
        False when that side lends none."""
        prepare = getattr(self._route(addr)[1], "prepare_request_line", None)
        return prepare is not None and bool(prepare(addr, timeout))

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Open a stream connection to ``addr``; see :meth:`Transport.dial_stream`."""
        return self._route(addr)[1].dial_stream(addr, timeout)

    def close(self) -> None:
        """Close every side and join the sender thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sides = [s for s in self._sides.values() if s is not None]
        with self._queue_cv:
            self._queue.clear()
            self._queue_cv.notify_all()
        for side in sides:
            try:
                side.close()
            except Exception:  # one broken side must not keep the other open
                _log.error("%s ! closing a transport failed", self._name, exc_info=True)
        sender = self._sender
        if sender is not None and sender is not threading.current_thread():
            sender.join(_JOIN_TIMEOUT)

    def __enter__(self) -> MultiTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parts = [f"{k}={type(v).__name__ if v is not None else ('lazy' if k in self._factories else '-')}"
                 for k, v in self._sides.items()]
        return f"<MultiTransport {self._name} {self.local_addr or 'no listener'} {' '.join(parts)}>"

    # ------------------------------------------------------------------ dial-only socket sends

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name=f"gossip-{self._name}-tcp-out",
                                            daemon=True)
            self._sender.start()

    def _hand_off(self, addr: str, data: bytes) -> None:
        failed = self._failed.get(addr)
        if failed is not None and time.monotonic() - failed < _BACKOFF:
            self._count("tcp_out_dropped")
            return
        with self._queue_cv:
            if self._closed:
                raise ClusterClosed(f"transport {self._name} is closed")
            if len(self._queue) >= _QUEUE_MAX:
                self._count("tcp_out_dropped")
                return
            self._queue.append((addr, data))
            self._queue_cv.notify()
        self._count("tcp_out_queued")

    def _send_loop(self) -> None:
        while True:
            with self._queue_cv:
                while not self._queue and not self._closed:
                    self._queue_cv.wait()
                if self._closed:
                    return
                addr, data = self._queue.popleft()
            side = self._sides["socket"]
            if side is None:
                continue
            failed = self._failed.get(addr)
            if failed is not None and time.monotonic() - failed < _BACKOFF:
                self._count("tcp_out_dropped")
                continue
            try:
                side.send(addr, data, True, 0)
            except ClusterClosed:
                return
            except GossipError as exc:
                self._count("tcp_out_errors")
                if len(self._failed) > _QUEUE_MAX:
                    self._failed.clear()
                self._failed[addr] = time.monotonic()
                _log.debug("%s ! best-effort send to %s failed: %s", self._name, addr, exc)
            except Exception:
                self._count("tcp_out_errors")
                _log.error("%s ! best-effort send to %s failed", self._name, addr, exc_info=True)
            else:
                self._failed.pop(addr, None)
