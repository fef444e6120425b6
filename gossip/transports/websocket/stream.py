"""A WebSocket connection dedicated to one stream (:class:`WsStream`).

Frames are binary messages; :meth:`WsStream.close_write` sends the text message
:data:`~.link.END_OF_STREAM`, after which the peer's :meth:`WsStream.recv_frame` returns
``None``. The stream reads and writes through its :class:`~.link.Link`'s buffers.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

from gossip.errors import GossipError, GossipTimeout, MessageTooLarge, SendError, SendQueueFull, TransportError
from gossip.transports.base import Deadline
from gossip.transports.websocket.link import CLOSED, END_OF_STREAM, Link

__all__ = ["WsStream"]


class WsStream:
    """A WebSocket connection dedicated to one stream; implements :class:`StreamConn`.

    Frames are binary messages; :meth:`close_write` sends the text message
    :data:`END_OF_STREAM`, after which the peer's :meth:`recv_frame` returns ``None``.
    """

    def __init__(self, link: Link) -> None:
        self._link = link
        self.max_frame_size = link.max_out
        self._closed = False
        link.stream = self

    @property
    def peer(self) -> str:
        """The remote address (the URL dialed, or ``ip:port`` of an accepted connection)."""
        return self._link.peer_addr

    def mark_trusted(self) -> None:
        """The stream layer authenticated the opening: lift the pre-authentication frame limit."""
        self._link.mark_trusted()

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Write one frame; see :meth:`StreamConn.send_frame`.

        Raises:
            MessageTooLarge: ``data`` is over :attr:`max_frame_size`.
            GossipTimeout: the peer did not read for ``timeout`` seconds (the stream is closed).
            SendError: the stream is closed for writing or broken.
        """
        link = self._link
        n = len(data)
        if n > self.max_frame_size:
            raise MessageTooLarge(
                f"stream frame to {link.peer_addr} is {n} bytes, over the limit {self.max_frame_size}")
        what = f"stream write to {link.peer_addr}"
        if self._closed or link.write_closed:
            raise SendError(f"{what}: the stream is closed for writing")
        item = data if isinstance(data, bytes) else bytes(data)
        try:
            link.put(item, Deadline(timeout), what)
        except SendQueueFull as exc:
            self.close()
            raise GossipTimeout(f"{what}: the peer did not read within {timeout}s") from exc

    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        """Return the next frame, or ``None`` after the peer's half-close (or clean close).

        Raises:
            GossipTimeout: no frame within ``timeout`` (the stream stays usable).
            TransportError: the connection broke or was closed.
        """
        link = self._link
        deadline = Deadline(timeout)
        what = f"stream read from {link.peer_addr}"
        resume = False
        with link.lock:
            while True:
                if self._closed:
                    raise TransportError(f"{what}: the stream is closed")
                if link.inbound:
                    frame = link.inbound.popleft()
                    link.inbound_bytes -= len(frame)
                    if link.flow_paused and link.inbound_bytes <= link.budget // 4:
                        link.flow_paused = False
                        link.readable.notify_all()
                        resume = True
                    break
                if link.eof:
                    return None
                if link.state is CLOSED:
                    if link.clean_end:
                        return None
                    raise TransportError(f"{what}: {link.error or 'the connection broke'}")
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    raise
                link.readable.wait(left)
        if resume:
            link.kick()
        return frame

    def close_write(self) -> None:
        """Half-close: the peer reads the rest, then the end of the stream."""
        link = self._link
        if self._closed or link.write_closed:
            return
        link.write_closed = True
        try:
            link.put(END_OF_STREAM, Deadline(link.env.limits.io_timeout), f"close of stream to {link.peer_addr}")
        except GossipError:
            link.abort("the end of the stream could not be sent")

    def close(self) -> None:
        """Close both sides (idempotent): blocked calls fail at once; queued frames still go."""
        if self._closed:
            return
        self._closed = True
        link = self._link
        if not link.write_closed:
            link.write_closed = True
            try:
                link.put(END_OF_STREAM, Deadline(0), "stream close")
            except GossipError:
                pass
        with link.lock:
            link.readable.notify_all()
            link.room.notify_all()
        link.request_close()

    def __repr__(self) -> str:
        return f"<WebSocket stream {self._link.peer_addr} {'closed' if self._closed else 'open'}>"
