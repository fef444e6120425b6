"""The socket transport's documented import path: UDP datagrams, TCP frames and TCP streams.

The transport lives in :mod:`gossip.transports.tcp` (one module per part); this module keeps
``gossip.transports.socket.SocketTransport`` and the wire's constants where users and tools
import them from.
"""

from __future__ import annotations

from gossip.transports.tcp import FRAME_HEADER_SIZE, PREAMBLE_FRAMES, PREAMBLE_STREAM, SocketTransport

__all__ = ["SocketTransport", "FRAME_HEADER_SIZE", "PREAMBLE_FRAMES", "PREAMBLE_STREAM"]
