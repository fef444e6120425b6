"""The WebSocket transport: gossip frames and streams over ``ws://`` and ``wss://``.

One concern per module, each part given what it needs (never the transport itself):

- :mod:`.transport`: :class:`WebSocketTransport`, the tables of connections and the sweeper;
- :mod:`.listener`: the accept thread (a connection gets threads once its request line came);
- :mod:`.admission`: which handshakes are let in (:class:`Refusal`);
- :mod:`.link`: one connection's state, buffers and deadlines, whoever performs its I/O;
- :mod:`.connection`: our own sockets, driven by websockets' documented sans-I/O protocol;
- :mod:`.hosted`: connections a host's server carries (:class:`HostedConnection`);
- :mod:`.requests`: request/reply exchanges on dedicated connections;
- :mod:`.stream`: a connection dedicated to one stream;
- :mod:`.framing`: binary frames out, reads in, gathered writes;
- :mod:`.endpoints`: URLs and TLS contexts;
- the bearer token's challenge-response is :mod:`gossip.transports._wsauth`.
"""

from __future__ import annotations

from gossip.transports.base import is_websocket_url
from gossip.transports.websocket.admission import CHANNEL_HEADER, Refusal
from gossip.transports.websocket.endpoints import client_tls_context, server_tls_context, websocket_url
from gossip.transports.websocket.hosted import HostedConnection
from gossip.transports.websocket.link import END_OF_STREAM
from gossip.transports.websocket.transport import WebSocketTransport

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
