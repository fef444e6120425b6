"""The WebSocket listener: accepted connections wait without a thread for their request line.

:class:`Listener` runs ``gossip-<node>-ws-accept``. Each accepted connection is counted in the
admission counts first (a refusal closes it at once), then waits in the selector, with no
thread, until its request line (or, over TLS, its first bytes) has arrived within
``handshake_timeout`` (else it is closed and counted ``ws_handshake_timeouts``); only then is it
handed over (``on_ready``) to become a connection with threads of its own. So a flood of
half-finished handshakes costs neither threads nor unbounded memory.

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from gossip.transports._admission import Ticket
from gossip.address import plain_ip
from gossip.transports._sockets import Waker, close_quietly, shutdown
from gossip.transports.base import format_addr
from gossip.transports.websocket.admission import Refusal

__all__ = ["Listener", "Pending"]

_log = logging.getLogger("gossip.transports.websocket")

REQUEST_LINE_MAX: Final = 8192  # an accepted connection's request line must fit in this much
_TICK = 0.25
_ACCEPT_BURST = 64


class Pending:
    """An accepted connection waiting, without a thread, for its request line."""

    __slots__ = ("sock", "ip", "peer", "ticket", "since", "buf")

    def __init__(self, sock: socket.socket, ip: str, peer: str, ticket: Ticket) -> None:
        self.sock = sock
        self.ip = ip
        self.peer = peer
        self.ticket = ticket
        self.since = time.monotonic()
        self.buf = bytearray()


class Listener:
    """The accept loop of a WebSocket transport; see the module docstring.

    Args:
        sock: the listening socket (non-blocking).
        name: the node's name, for the thread and logs.
        tls: True for ``wss://`` (the first bytes are a TLS hello, not a request line).
        handshake_timeout: seconds a connection may wait for its request line.
        admit: counts a new connection from an IP, or refuses it.
        release: gives an admission ticket back.
        on_ready: takes a connection whose request line came (blocking socket, the bytes read).
        count: ``count(name, n)`` adds to a transport counter.
        stop: set when the transport closes.
    """

    def __init__(self, sock: socket.socket, *, name: str, tls: bool, handshake_timeout: float,
                 admit: Callable[[str], Ticket | Refusal], release: Callable[[Ticket], None],
                 on_ready: Callable[[Pending], None], count: Callable[[str, int], None],
                 stop: threading.Event) -> None:
        self.sock = sock
        self._name = name
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._admit = admit
        self._release = release
        self._on_ready = on_ready
        self._count = count
        self._stop = stop
        self.waker = Waker()
        self._pending: dict[socket.socket, Pending] = {}  # the accept thread's only

    def thread(self) -> threading.Thread:
        """Return the (unstarted) accept thread."""
        return threading.Thread(target=self.run, name=f"gossip-{self._name}-ws-accept", daemon=True)

    def close(self) -> None:
        """Close the listening socket and the waker (after the thread ended)."""
        close_quietly(self.sock)
        self.waker.close()

    def run(self) -> None:
        """The accept thread's loop, until the stop event is set."""
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "listener")
        sel.register(self.waker.r, selectors.EVENT_READ, "wake")
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
                        self._accept(sel)
                    elif isinstance(key.data, Pending):
                        self._readable(sel, key.data)
                self._deadlines(sel, time.monotonic())
        except Exception:
            if not self._stop.is_set():
                _log.error("%s ! websocket accept loop failed", self._name, exc_info=True)
        finally:
            for pend in list(self._pending.values()):
                self._drop(sel, pend)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        """Admit new connections; each waits in the selector until its request line came."""
        for _ in range(_ACCEPT_BURST):
            try:
                sock, src = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._stop.is_set():
                    _log.debug("%s ! accept failed", self._name, exc_info=True)
                return
            ip = plain_ip(src[0])
            peer = format_addr(src[0], src[1])
            ticket = self._admit(ip)
            if isinstance(ticket, Refusal):
                _log.debug("%s ! refusing %s: %s", self._name, peer, ticket.reason)
                sock.close()
                continue
            pend = Pending(sock, ip, peer, ticket)
            ticket.owner = pend
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(sock, selectors.EVENT_READ, pend)
            except (OSError, ValueError):
                self._release(ticket)
                sock.close()
                continue
            self._pending[sock] = pend

    def _readable(self, sel: selectors.BaseSelector, pend: Pending) -> None:
        """A connection waiting for its request line can be read."""
        if not self._tls:
            try:
                data = pend.sock.recv(REQUEST_LINE_MAX - len(pend.buf))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._count("ws_handshake_failed", 1)
                self._drop(sel, pend)
                return
            pend.buf += data
            if b"\n" not in pend.buf:
                if len(pend.buf) >= REQUEST_LINE_MAX:
                    self._count("ws_handshake_failed", 1)
                    _log.debug("%s ! %s: no request line in %d bytes", self._name, pend.peer,
                               len(pend.buf))
                    self._drop(sel, pend)
                return
        self._pending.pop(pend.sock, None)
        try:
            sel.unregister(pend.sock)
            pend.sock.setblocking(True)
        except (OSError, KeyError, ValueError):
            self._release(pend.ticket)
            pend.sock.close()
            return
        self._on_ready(pend)

    def _deadlines(self, sel: selectors.BaseSelector, now: float) -> None:
        """Close connections whose request line did not come within the handshake timeout."""
        limit = now - self._handshake_timeout
        for pend in [p for p in self._pending.values() if p.since < limit]:
            self._count("ws_handshake_timeouts", 1)
            _log.debug("%s ! %s: no request line within %.1fs", self._name, pend.peer,
                       self._handshake_timeout)
            self._drop(sel, pend)

    def _drop(self, sel: selectors.BaseSelector, pend: Pending) -> None:
        self._pending.pop(pend.sock, None)
        try:
            sel.unregister(pend.sock)
        except (KeyError, ValueError):
            pass
        self._release(pend.ticket)
        shutdown(pend.sock)
        pend.sock.close()
