"""Gossip WebSocket connections whose I/O a host's WebSocket server performs.

- :class:`HostLink`: a connection accepted by the host's ``websockets.sync`` server
  (:meth:`gossip.Cluster.websocket_handler`), driven through its public threaded API: the
  host's handler thread reads (:meth:`HostLink.serve`), our writer thread sends with the
  connection's own ``send``;
- :class:`HostedConnection`: a connection that any other WebSocket implementation carries (the
  ASGI bridge :mod:`gossip.contrib.asgi` is built on it): the host feeds received messages in,
  takes the messages to send out, and says when the connection ended.

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.server import ServerConnection

from gossip.transports._sockets import shutdown
from gossip.transports.websocket.link import CLOSED, OPEN, TICK, Link, LinkEnv

__all__ = ["HostLink", "HostedConnection"]

_log = logging.getLogger("gossip.transports.websocket")

JOIN_TIMEOUT: Final = 5.0
_DRAIN = 64  # messages a host-served connection takes at once after a blocking receive


class HostLink(Link):
    """A connection accepted by the host's own ``websockets.sync`` server.

    The host's handler thread reads (:meth:`serve`); our writer thread sends with the
    connection's own ``send`` (whose blocking write holds only that thread).
    """

    def __init__(self, env: LinkEnv, ws: ServerConnection, kind: str, peer: str, ip: str) -> None:
        super().__init__(env, peer, kind, True, ip)
        self.ws = ws
        self.thread = threading.Thread(target=self._write_loop,
                                       name=f"gossip-{env.name}-ws-{self.lid}", daemon=True)

    def serve(self) -> None:
        """Read until the connection ends (the host's handler thread)."""
        ws = self.ws
        self.opened()
        self.thread.start()
        try:
            while True:
                with self.lock:
                    while (self.paused or self.flow_paused) and self.state is OPEN:
                        self.readable.wait(TICK)
                    if self.state is CLOSED:
                        break
                try:
                    first = ws.recv(timeout=TICK)
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    rcvd = exc.rcvd
                    if rcvd is not None and rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                        self.clean_end = True
                    if rcvd is not None and rcvd.code == CloseCode.MESSAGE_TOO_BIG:
                        self.env.count("ws_too_large", 1)
                    sent = exc.sent
                    if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                        self.env.count("ws_too_large", 1)
                    elif sent is not None and sent.code == CloseCode.PROTOCOL_ERROR:
                        self.env.count("ws_protocol_errors", 1)
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
            shutdown(getattr(ws, "socket", None))
            if self.thread.ident is not None:
                self.thread.join(JOIN_TIMEOUT)
            self.env.done(self)

    def _write_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                with self.lock:
                    while self.state is OPEN and not self.pending and not self.closing:
                        self.wake.wait()
                    if self.state is not OPEN:
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
            self.env.count("ws_send_errors", 1)
            self.mark_closed(f"write failed: {exc}")

    def abort(self, reason: str) -> None:
        self.mark_closed(reason)
        shutdown(getattr(self.ws, "socket", None))


class HostedConnection(Link):
    """A gossip WebSocket connection whose I/O another WebSocket implementation performs.

    Made by :meth:`~gossip.transports.websocket.WebSocketTransport.host_connection` once the host accepted the upgrade.
    The host (for example :mod:`gossip.contrib.asgi`) then:

    - calls :meth:`feed` with each received message (``bytes`` for binary, ``str`` for text);
    - when ``wake`` is called (from any thread), calls :meth:`take_outgoing` and sends what it
      returns, then :meth:`sent`; and stops receiving while :attr:`reading_paused` is true;
    - closes its connection once :attr:`wants_close` is true (after sending what was taken),
      at once and without a closing handshake if :attr:`aborted` is true;
    - calls :meth:`ended` when the connection ends, whatever the reason.

    ``wake`` must not block: typically ``loop.call_soon_threadsafe(event.set)``.
    """

    def __init__(self, env: LinkEnv, kind: str, peer: str, ip: str,
                 wake: Callable[[], None]) -> None:
        super().__init__(env, peer, kind, True, ip)
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

    def kick(self) -> None:
        try:
            self._wake_host()
        except Exception:  # a closed event loop: the connection is ending anyway
            _log.debug("%s ! waking the host of %s failed", self.env.name, self.peer_addr,
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
            self.env.count("ws_too_large", 1)
            self.abort(f"message of {len(message)} bytes over the limit {self.max_in}")
            return
        self.deliver([bytes(message)])

    def take_outgoing(self) -> tuple[list[bytes | str], int]:
        """Return the messages to send now and their total size (pass it to :meth:`sent`)."""
        with self.lock:
            if self.state is not OPEN:
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
            return self.state is CLOSED or (self.closing and not self.pending)

    @property
    def is_closed(self) -> bool:
        """True once the connection ended or was aborted."""
        return self.state is CLOSED

    def ended(self, code: int | None = None, reason: str = "") -> None:
        """The host's connection ended (``code`` is the close code, if there was one)."""
        if code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            self.clean_end = True
        self.mark_closed(f"closed ({code} {reason})".strip() if code else "connection closed")
        self.env.done(self)
