"""The socket transport: UDP datagrams, length-prefixed TCP frames and TCP streams.

One concern per module, each part given what it needs (never the transport itself):

- :mod:`.frames`: the wire (a preamble per connection, length-prefixed frames), pure functions;
- :mod:`.conn`: :class:`~.conn.FrameConn`, a framed connection that owns its write path;
- :mod:`.udp`: the UDP socket and its reader thread;
- :mod:`.io_loop`: the selector thread over the listener and every framed connection;
- :mod:`.requests`: request/reply exchanges on dedicated connections;
- :mod:`.stream`: :class:`~.stream.StreamSocket`, a connection dedicated to one stream;
- :mod:`.transport`: :class:`SocketTransport`, which composes them.

:mod:`gossip.transports.socket` re-exports the public names (its documented import path).
"""

from __future__ import annotations

from gossip.transports.tcp.frames import FRAME_HEADER_SIZE, PREAMBLE_FRAMES, PREAMBLE_STREAM
from gossip.transports.tcp.transport import SocketTransport

__all__ = ["SocketTransport", "FRAME_HEADER_SIZE", "PREAMBLE_FRAMES", "PREAMBLE_STREAM"]
