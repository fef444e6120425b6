"""Transports: move packets (bytes) between addresses.

- :mod:`gossip.transports.base`: the :class:`Transport` / :class:`Connection` protocols,
  :class:`Incoming`, :func:`map_errors`;
- :mod:`gossip.transports.socket`: :class:`SocketTransport` (UDP + length-prefixed TCP);
- :mod:`gossip.transports.memory`: :class:`MemoryNetwork` / :class:`MemoryTransport`
  (in-process, with fault hooks, for tests).

Transports never import the protocol core, the packet pipeline or the engine.
"""

from __future__ import annotations

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
from gossip.transports.memory import (
    MemoryConnection,
    MemoryNetwork,
    MemoryStreamConn,
    MemoryTransport,
)
from gossip.transports.socket import SocketTransport

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
]
