"""Transports: move packets (bytes) between addresses.

- :mod:`gossip.transports.base`: the :class:`Transport` / :class:`Connection` protocols,
  :class:`Incoming`, :func:`map_errors`;
- :mod:`gossip.transports.limits`: :class:`~gossip.transports.limits.ConnectionLimits`, the
  bounds the socket and WebSocket transports share (one default, one check, one meaning);
- :mod:`gossip.transports.socket`: :class:`SocketTransport` (UDP + length-prefixed TCP; its
  parts are in :mod:`gossip.transports.tcp`);
- :mod:`gossip.transports.websocket`: :class:`WebSocketTransport` (ws:// and wss://, on
  websockets' sans-I/O protocol over our own sockets and threads);
- :mod:`gossip.transports.http.transport`: :class:`HTTPTransport` (http:// and https://,
  POSTs of frame batches; its listener in :mod:`gossip.transports.http.server`, its WSGI and
  ASGI applications in :mod:`gossip.transports.http.hosted`);
- :mod:`gossip.transports.multi`: :class:`MultiTransport`, which routes each send by the
  destination's scheme (mixed clusters of socket, WebSocket and HTTP nodes);
- :mod:`gossip.transports.memory`: :class:`MemoryNetwork` / :class:`MemoryTransport`
  (in-process, with fault hooks, for tests).

Below them, shared by both socket-based transports: :mod:`gossip.transports._admission`
(connection counts and dial budgets) and :mod:`gossip.transports._sockets` (socket plumbing).
Transports never import the protocol core, the packet pipeline or the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossip._lazy import lazy_getattr
from gossip.transports.base import (
    Connection,
    Deadline,
    ErrorMapping,
    Incoming,
    OnPackets,
    OnStream,
    StreamConn,
    Transport,
    format_addr,
    map_errors,
    split_host_port,
)

if TYPE_CHECKING:
    from gossip.transports.memory import (
        MemoryConnection,
        MemoryNetwork,
        MemoryStreamConn,
        MemoryTransport,
    )
    from gossip.transports.multi import MultiTransport
    from gossip.transports.socket import SocketTransport
    from gossip.transports.http.transport import HTTPTransport
    from gossip.transports.websocket import WebSocketTransport

_LAZY = {
    "MemoryConnection": "gossip.transports.memory",
    "MemoryNetwork": "gossip.transports.memory",
    "MemoryStreamConn": "gossip.transports.memory",
    "MemoryTransport": "gossip.transports.memory",
    "SocketTransport": "gossip.transports.socket",
    "WebSocketTransport": "gossip.transports.websocket",
    "HTTPTransport": "gossip.transports.http.transport",
    "MultiTransport": "gossip.transports.multi",
}

# The transport implementations are imported on first use (they pull in sockets and selectors).
__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "Connection",
    "Deadline",
    "ErrorMapping",
    "Incoming",
    "OnPackets",
    "OnStream",
    "StreamConn",
    "Transport",
    "format_addr",
    "map_errors",
    "split_host_port",
    "MemoryConnection",
    "MemoryNetwork",
    "MemoryStreamConn",
    "MemoryTransport",
    "SocketTransport",
    "WebSocketTransport",
    "HTTPTransport",
    "MultiTransport",
]
