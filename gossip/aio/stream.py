""":class:`AsyncStream`: a node-to-node stream for coroutines.

The stream's blocking reads and writes run on the stream's own engine threads
(:class:`~gossip.streams.pump.StreamPump`); the loop only ever takes data already read, or
awaits a future those threads complete. A read returns at once while read-ahead data is there
(up to 2 MiB are read ahead); a write returns at once while less than 2 MiB wait to be written,
and otherwise waits, without blocking the loop, until half of them went out.

This module imports the stream pump and the errors.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import DecodeError
from ..streams.pump import MSG_HEADER_SIZE
from ._futures import wait, wait_maybe

if TYPE_CHECKING:
    from ..node import Node
    from ..streams.pump import StreamPump

__all__ = ["AsyncStream"]

T = TypeVar("T")

_CHUNK = 1024 * 1024  # what iterating or reading to the end takes at a time


class AsyncStream:
    """A two-way byte stream between two nodes, for coroutines.

    Made by :meth:`gossip.aio.Cluster.open_stream` (the caller's end) and handed to a
    coroutine stream handler registered with :meth:`gossip.aio.Cluster.handle_stream_func`
    (the peer's end); not built directly.

    Reading returns what the peer wrote, in order, then ``b""`` once the peer closed its
    writing side; the errors are those of :class:`gossip.Stream` (a read that times out after
    ``stream_timeout`` raises :class:`~gossip.errors.GossipTimeout` and the stream stays
    usable). ``async with`` closes it at the end of the block, or aborts it if the block
    raised; ``async for chunk in stream`` yields what arrives until the end.

    Attributes:
        remote_node: the node at the other end (on the accepting side, in state ``UNKNOWN``
            when the opener is not a known member).
        msg_type: the message type the stream was opened with.
    """

    def __init__(self, pump: StreamPump, loop: asyncio.AbstractEventLoop) -> None:
        self._pump = pump
        self._loop = loop
        stream = pump.stream
        self.remote_node: Node | None = stream.remote_node
        self.msg_type = stream.msg_type

    @property
    def peer(self) -> str:
        """The transport address of the other end of the connection."""
        return self._pump.stream.peer

    @property
    def encrypted(self) -> bool:
        """True if the stream's frames are sealed with AES-GCM."""
        return self._pump.stream.encrypted

    @property
    def closed(self) -> bool:
        """True once the stream was closed or aborted."""
        return self._pump.finished

    def __repr__(self) -> str:
        return f"<AsyncStream type {self.msg_type} {self.peer} " \
               f"{'closed' if self.closed else 'open'}>"

    # ------------------------------------------------------------------ reading

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (to the end of the stream if ``n`` is negative).

        Returns ``b""`` only at the end of the stream.

        Raises:
            GossipTimeout: nothing arrived within ``stream_timeout``.
            TransportError: the connection broke or ended without the peer's end marker.
            AuthenticationError: a frame is not authentic.
            RemoteHandlerError: the peer aborted the stream.
            ClusterClosed: the cluster was stopped.
            ValueError: the stream is closed.
        """
        if n < 0:
            parts = []
            while chunk := await self.read(_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if n == 0:
            return b""
        data = self._pump.read_nowait(n)
        if data is not None:
            return data
        return await wait(self._pump.read_future(n))

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: the stream ended first (``partial`` holds what came).
            GossipError: as :meth:`read` raises (a timeout, a broken connection, an abort).
        """
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk that arrived (up to 1 MiB); the end of the stream stops iteration."""
        chunk = await self.read(_CHUNK)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    # ------------------------------------------------------------------ writing

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, waiting (without blocking the loop) while the peer does not
        read.

        Raises:
            GossipTimeout: a frame could not be written within ``stream_timeout`` (the stream is
                then unusable).
            SendError: the connection is broken.
            ClusterClosed: the cluster was stopped.
            ValueError: the stream is closed, or closed for writing.
        """
        await wait_maybe(self._pump.write_nowait(data if type(data) is bytes else bytes(data)))

    async def close_write(self) -> None:
        """End the writing side once what was written went out: the peer reads the rest, then
        ``b""``. Reading goes on. Idempotent.

        Raises:
            GossipError: as :meth:`write` raises (a timeout, a broken connection, a stop).
            ValueError: the stream is closed.
        """
        await wait(self._pump.close_write_nowait())

    # ------------------------------------------------------------------ typed messages

    async def write_msg(self, msg_type: int, obj: Any) -> None:
        """Write one typed message, as :meth:`gossip.Stream.write_msg`.

        Raises:
            LocalProtocolError: ``msg_type`` is internal, ``obj`` cannot be encoded, or the
                message is over ``tcp_max_packet_size`` bytes.
            GossipError: as :meth:`write` raises (a timeout, a broken connection, a stop).
            ValueError: the stream is closed, or closed for writing.
        """
        await self.write(self._pump.pack_msg(msg_type, obj))

    async def read_msg(self, msg_type: int, cls: type[T] | None = None) -> Any:
        """Read one typed message of ``msg_type`` and decode it (as ``cls`` if given), as
        :meth:`gossip.Stream.read_msg`.

        Raises:
            EOFError: the stream ended cleanly before a message began.
            DecodeError: the message is of another type, ends early, or does not decode.
            PacketTooLarge: the message announces more than ``tcp_max_packet_size`` bytes.
            GossipError: as :meth:`read` raises (a timeout, a broken connection, an abort).
        """
        try:
            header = await self.readexactly(MSG_HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise EOFError(f"stream from {self.peer} ended: no message of type "
                               f"{msg_type}") from None
            raise DecodeError(f"the stream from {self.peer} ended inside a message header") \
                from None
        got, length = self._pump.msg_header(header)
        try:
            payload = await self.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:
            raise DecodeError(f"the stream from {self.peer} ended inside a message of {length} "
                              f"bytes ({len(exc.partial)} came)") from None
        return self._pump.unpack_msg(msg_type, got, payload, cls)

    # ------------------------------------------------------------------ ending

    async def aclose(self) -> None:
        """Close the stream once what was written went out (idempotent; never raises for a
        broken connection), as :meth:`gossip.Stream.close`."""
        await wait(self._pump.close_nowait())

    async def abort(self, reason: str = "") -> None:
        """End the stream at once, discarding what waits to be written: the peer's reads raise
        :class:`~gossip.errors.RemoteHandlerError` with ``reason``. Idempotent; never raises."""
        await wait(self._pump.abort_nowait(reason))

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is not None:
            reason = f"{exc_type.__name__}: {exc}" if exc is not None else exc_type.__name__
            await asyncio.shield(asyncio.wrap_future(self._pump.abort_nowait(reason)))
        else:
            await self.aclose()
