"""Node-to-node streams: :class:`Stream`, a binary file-like object over one stream connection.

A stream is opened with :meth:`gossip.Cluster.open_stream` and handed to the handler registered
with :meth:`gossip.Cluster.handle_stream_func` on the other node. It is a subclass of
:class:`io.RawIOBase`, so ``shutil.copyfileobj``, ``io.BufferedReader(stream)`` and
``stream.read()`` to the end work as with any binary file; typed messages go through
:meth:`Stream.write_msg` and :meth:`Stream.read_msg`, as ``type u16 | length u32 | payload``
in the byte stream, as in paularlott/gossip.

Its frames are sealed by :mod:`gossip.streams.sealing`, after the opening of
:mod:`gossip.streams.handshake` (which the engine's stream pool drives).

This module imports the errors, the codecs, compression, the node snapshot and the transport
interface; it never touches a socket (any :class:`~gossip.transports.base.StreamConn` carries
it) nor the engine.
"""

from __future__ import annotations

import io
import logging
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, TypeVar

from ..codecs import Codec
from ..compression import Compressor, Lz4Compressor, SnappyCompressor
from ..errors import (
    ClusterClosed,
    CompressionError,
    ConfigError,
    DecodeError,
    GossipError,
    GossipTimeout,
    LocalProtocolError,
    PacketTooLarge,
    RemoteHandlerError,
    TransportError,
)
from ..handlers import check_user_type
from ..transports.base import StreamConn
from .handshake import MAX_REASON
from .sealing import (
    FRAME_OVERHEAD,
    KIND_ABORT,
    KIND_DATA,
    KIND_DATA_LZ4,
    KIND_DATA_SNAPPY,
    KIND_END,
    KIND_HELLO,
    Opener,
    Sealer,
    StreamKeys,
)

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["Stream", "MSG_HEADER_SIZE"]

logger = logging.getLogger("gossip.stream")

T = TypeVar("T")

MSG_HEADER_SIZE: Final = 6
"""Bytes in front of a typed message: type u16, length u32."""

_MSG_HEADER = struct.Struct(">HI")
_WRITE_FRAME = 1024 * 1024  # writes are cut into frames of at most this much
_CLOSE_LINGER = 2.0  # longest close() waits to write the end marker before cutting
_DRAIN_LIMIT = 64 * 1024 * 1024  # most bytes close() reads and discards


class _CounterSink(Protocol):
    """Where a stream counts its bytes (the engine's counters)."""

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        ...


class Stream(io.RawIOBase):
    """A two-way byte stream between two nodes; a binary file-like object.

    Streams are made by :meth:`gossip.Cluster.open_stream` (the caller's end) and handed to the
    handler registered with :meth:`gossip.Cluster.handle_stream_func` (the peer's end); they
    are not built directly.

    Reading returns what the peer wrote, in order, then ``b""`` once the peer called
    :meth:`close_write` or :meth:`close`. A connection that ends in any other way (the peer
    died, the stream was cut) raises :class:`~gossip.errors.TransportError`; a frame that does
    not authenticate raises :class:`~gossip.errors.AuthenticationError`; the peer's
    :meth:`abort` (or its handler raising) raises :class:`~gossip.errors.RemoteHandlerError`.
    Read errors are sticky: later reads raise the same error.

    Writing blocks while the peer does not read (the connection's window is full), each wait
    bounded by the timeout (:meth:`settimeout`; a write that times out leaves the stream
    unusable, since a frame cut in half cannot be resumed). A write of any size is split into
    frames of at most ``stream_max_packet_size`` bytes. Memory stays bounded on both ends: a
    stream holds at most one frame in each direction.

    One thread may read while another writes. :meth:`close` (also at the end of a ``with``
    block) ends the writing side with a sealed end marker, waits briefly for the peer's end so
    no data in flight is lost, and closes the connection; a ``with`` block left by an exception
    aborts instead (see :meth:`abort`).

    Attributes:
        remote_node: the node at the other end (on the accepting side, in state ``UNKNOWN`` when
            the opener is not a known member).
        msg_type: the message type the stream was opened with.
    """

    def __init__(
        self,
        conn: StreamConn,
        *,
        client: bool,
        keys: StreamKeys | None,
        codec: Codec,
        msg_type: int,
        remote_node: Node | None = None,
        compressor: Compressor | None = None,
        compress_min_size: int = 256,
        max_frame_size: int = 8 * 1024 * 1024,
        max_msg_size: int = 4 * 1024 * 1024,
        timeout: float | None = None,
        counters: _CounterSink | None = None,
        on_close: Callable[[Stream], None] | None = None,
    ) -> None:
        """Wrap ``conn`` once the opening is done (the engine does this).

        Args:
            conn: the connection dedicated to this stream.
            client: True on the opening side (it decides which derived key seals).
            keys: the stream's derived keys, None for plaintext frames.
            codec: the codec of typed messages (the opener's).
            msg_type: the type the stream was opened with.
            remote_node: the node at the other end, if known.
            compressor: lz4 or Snappy for written frames (None: off until
                :meth:`enable_compression`, which then uses lz4).
            compress_min_size: frames smaller than this are never compressed.
            max_frame_size: the largest frame body written or accepted.
            max_msg_size: the largest typed message payload.
            timeout: the per-operation timeout (None: wait forever).
            counters: where ``streams.bytes_in`` / ``streams.bytes_out`` are counted.
            on_close: called once when the stream is closed, however that happens.
        """
        super().__init__()
        self._conn = conn
        self._peer = conn.peer
        self.remote_node = remote_node
        self.msg_type = msg_type
        self._client = client
        self._codec = codec
        if keys is None:
            send_key = recv_key = None
        elif client:
            send_key, recv_key = keys.client_to_server, keys.server_to_client
        else:
            send_key, recv_key = keys.server_to_client, keys.client_to_server
        self._encrypted = keys is not None
        cipher = keys.cipher if keys is not None else "aes-gcm"
        self._sealer = Sealer(send_key, cipher)
        self._opener = Opener(recv_key, self._peer, cipher)
        self._compressor = compressor
        snappy = compressor is not None and getattr(compressor, "name", "") == "snappy"
        # DATA_LZ4 frames: lz4 (or a custom compressor); DATA_SNAPPY frames: Snappy.
        self._decompressor: Compressor = (
            compressor if compressor is not None and not snappy else Lz4Compressor())
        self._snappy: Compressor | None = compressor if snappy else None
        self._compressed_kind = KIND_DATA_SNAPPY if snappy else KIND_DATA_LZ4
        self._compress = compressor is not None
        self._compress_min = compress_min_size
        # Largest body of a frame we accept: our limit, and what the connection can carry.
        self._max_frame = max(1, min(max_frame_size, conn.max_frame_size - FRAME_OVERHEAD))
        # Writes are cut into frames of this size: large enough that the per-frame cost is
        # small, small enough that both ends' buffers stay small (bench/stream_bench.py).
        self._write_frame = min(self._max_frame, _WRITE_FRAME)
        self._max_msg = max_msg_size
        self._timeout = timeout
        self._counters = counters
        self._on_close = on_close
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._state_lock = threading.Lock()
        # read side (under _rlock)
        self._pending: bytes | memoryview = b""  # data read but not yet taken
        self._pos = 0
        self._eof = False
        self._read_error: BaseException | None = None
        # write side (under _wlock)
        self._write_closed = False
        self._write_broken = False
        # lifecycle
        self._finished = False
        self._closed_by: type[GossipError] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def peer(self) -> str:
        """The transport address of the other end of the connection."""
        return self._peer

    @property
    def encrypted(self) -> bool:
        """True if the stream's frames are sealed (with the cluster's cipher)."""
        return self._encrypted

    @property
    def compression(self) -> bool:
        """True if written frames are compressed (lz4, or Snappy when the cluster's compressor
        is Snappy) when that makes them smaller."""
        return self._compress

    def __repr__(self) -> str:
        side = "to" if self._client else "from"
        state = "closed" if self.closed else "open"
        return f"<Stream type {self.msg_type} {side} {self._peer} {state}>"

    # ------------------------------------------------------------------ settings

    def settimeout(self, seconds: float | None) -> None:
        """Bound every blocking step of a read or write to ``seconds`` (``None``: wait forever).

        An expired read raises :class:`~gossip.errors.GossipTimeout` and the stream stays
        usable (except inside :meth:`read_msg`, where a message cut by the timeout breaks it);
        an expired write raises it too and leaves the stream unusable.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds is not None and seconds < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {seconds}")
        self._timeout = seconds

    def gettimeout(self) -> float | None:
        """Return the timeout set by :meth:`settimeout` (``None``: no timeout)."""
        return self._timeout

    def enable_compression(self) -> None:
        """lz4-compress written frames of at least ``compress_min_size`` bytes when it helps."""
        if self._compressor is None:
            self._compressor = self._decompressor
        self._compress = True

    def disable_compression(self) -> None:
        """Write frames uncompressed (the peer's compressed frames are still read)."""
        self._compress = False

    # ------------------------------------------------------------------ io.RawIOBase

    def readable(self) -> bool:
        """Return True: a stream can be read."""
        return True

    def writable(self) -> bool:
        """Return True: a stream can be written (until :meth:`close_write`)."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read up to ``len(buffer)`` bytes into ``buffer``; return how many (0 at the end).

        Raises:
            GossipTimeout: nothing arrived within the timeout.
            TransportError: the connection broke or ended without the peer's end marker.
            AuthenticationError: a frame is not authentic.
            RemoteHandlerError: the peer aborted the stream.
            DecodeError: a malformed frame.
            ClusterClosed: the cluster was stopped.
            ValueError: the stream is closed.
        """
        view = memoryview(buffer).cast("B")
        if self._finished:
            self._raise_closed()
        if not view:
            return 0
        with self._rlock:
            n = self._take_into(view)
            if n:
                return n
            if self._eof:
                return 0
            n = self._next_data(view)
            if n >= 0:
                return n
            return self._take_into(view)

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (to the end if ``size`` is negative or None).

        Returns ``b""`` only at the end of the stream. Raises as :meth:`readinto`.
        """
        if self._finished:
            self._raise_closed()
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        with self._rlock:
            if not self._remaining() and not self._eof:
                self._next_data(None)
            return self._take(size)

    def readall(self) -> bytes:
        """Read to the end of the stream (all of it is held in memory: use with care).

        Raises as :meth:`readinto`.
        """
        parts: list[bytes] = []
        while True:
            chunk = self.read(self._max_frame)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def write(self, data: Any) -> int:
        """Write all of ``data`` (any bytes-like object); return its length.

        Blocks while the peer does not read. Large writes are split into frames of at most
        ``stream_max_packet_size`` bytes.

        Raises:
            GossipTimeout: a frame could not be written within the timeout (the stream is then
                unusable).
            SendError: the connection is broken.
            ClusterClosed: the cluster was stopped.
            ValueError: the stream is closed, or closed for writing.
        """
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        n = len(view)
        if n == 0:
            self._check_writable()
            return 0
        with self._wlock:
            self._check_writable()
            step = self._write_frame
            if n <= step:
                self._send_data(view)
            else:
                for off in range(0, n, step):
                    self._send_data(view[off:off + step])
        counters = self._counters
        if counters is not None:
            counters.inc("streams.bytes_out", n)
        return n

    def flush(self) -> None:
        """Do nothing: every write is on its way when it returns."""

    # ------------------------------------------------------------------ typed messages

    def write_msg(self, msg_type: int, obj: Any) -> None:
        """Write one typed message: ``msg_type`` (64..65535) and ``obj`` encoded with the codec.

        Raises:
            LocalProtocolError: ``msg_type`` is internal, ``obj`` cannot be encoded, or the
                encoded message is over ``tcp_max_packet_size`` bytes.
            GossipTimeout, SendError, ClusterClosed, ValueError: as :meth:`write`.
        """
        self.write(self.pack_msg(msg_type, obj))

    def pack_msg(self, msg_type: int, obj: Any) -> bytes:
        """Return the bytes :meth:`write_msg` writes for ``obj``: its header and payload.

        Raises:
            LocalProtocolError: ``msg_type`` is internal, ``obj`` cannot be encoded, or the
                encoded message is over ``tcp_max_packet_size`` bytes.
        """
        check_user_type(msg_type)
        payload = self._codec.encode(obj)
        if len(payload) > self._max_msg:
            raise LocalProtocolError(
                f"stream message of {len(payload)} bytes is over the limit of {self._max_msg} "
                "bytes (tcp_max_packet_size)")
        return _MSG_HEADER.pack(msg_type, len(payload)) + payload

    def read_msg(self, msg_type: int, cls: type[T] | None = None) -> Any:
        """Read one typed message of ``msg_type`` and decode it (as ``cls`` if given).

        The whole message is read before its type is checked, so a mismatch leaves the stream
        at the next message.

        Raises:
            EOFError: the stream ended cleanly before a message began.
            DecodeError: the message is of another type, ends early, or does not decode (as
                ``cls``).
            PacketTooLarge: the message announces more than ``tcp_max_packet_size`` bytes.
            LocalProtocolError: ``msg_type`` is internal.
            GossipTimeout: as :meth:`readinto`, which also raises TransportError,
                AuthenticationError, RemoteHandlerError, ClusterClosed and ValueError.
        """
        check_user_type(msg_type)
        header = self._read_exact(MSG_HEADER_SIZE, "message header", allow_eof=True)
        if header is None:
            raise EOFError(f"stream from {self._peer} ended: no message of type {msg_type}")
        try:
            got, length = self.msg_header(header)
        except PacketTooLarge as exc:
            self._break_read(exc)
        payload = self._read_exact(length, f"message of {length} bytes")
        assert payload is not None
        return self.unpack_msg(msg_type, got, payload, cls)

    def msg_header(self, header: bytes) -> tuple[int, int]:
        """Return ``(message type, payload length)`` from a typed message's header.

        Raises:
            PacketTooLarge: the message announces more than ``tcp_max_packet_size`` bytes.
        """
        got, length = _MSG_HEADER.unpack(header)
        if length > self._max_msg:
            raise PacketTooLarge(
                f"stream message from {self._peer} announces {length} bytes, over the limit "
                f"of {self._max_msg} bytes")
        return got, length

    def unpack_msg(self, msg_type: int, got: int, payload: bytes, cls: type[T] | None) -> Any:
        """Decode the payload of a typed message of type ``got`` read for ``msg_type``.

        Raises:
            DecodeError: ``got`` is not ``msg_type``, or the payload does not decode (as
                ``cls``).
        """
        if got != msg_type:
            raise DecodeError(f"unexpected message type: expected {msg_type}, got {got}")
        try:
            if cls is None:
                return self._codec.decode(payload)
            return self._codec.decode_as(payload, cls)
        except GossipError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise DecodeError(f"cannot decode a stream message: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ ending

    def close_write(self) -> None:
        """End the writing side with a sealed end marker: the peer reads the rest, then ``b""``.

        Idempotent. Reading goes on until the peer ends its side too.

        Raises:
            GossipTimeout, SendError: the end marker could not be written.
            ClusterClosed: the cluster was stopped.
            ValueError: the stream is closed.
        """
        with self._wlock:
            if self._finished:
                self._raise_closed()
            if self._write_closed:
                return
            self._end_locked(self._timeout)

    def abort(self, reason: str = "") -> None:
        """End the stream at once, telling the peer it failed: its reads raise
        :class:`~gossip.errors.RemoteHandlerError` with ``reason``. Idempotent; never raises."""
        if self._finished:
            return
        linger = self._linger()
        if self._wlock.acquire(blocking=False):
            try:
                if not self._write_closed and not self._write_broken:
                    text = (reason or "aborted").encode("utf-8", "replace")[:MAX_REASON]
                    self._write_closed = True
                    try:
                        self._conn.send_frame(self._sealer.seal(KIND_ABORT, text), linger)
                        self._conn.close_write()
                    except GossipError:
                        self._write_broken = True
            finally:
                self._wlock.release()
        self._drain_if_free()
        self._finish()

    def _linger(self) -> float:
        return _CLOSE_LINGER if self._timeout is None else min(_CLOSE_LINGER, self._timeout)

    def _drain_if_free(self) -> None:
        if self._write_broken or not self._rlock.acquire(blocking=False):
            return
        try:
            self._drain()
        finally:
            self._rlock.release()

    def close(self) -> None:
        """End the writing side with the sealed end marker and close the connection.

        Idempotent, and never raises for a broken connection (a stream that cannot end cleanly
        is cut). It waits only for room to write the end marker (at most the timeout, and 2 s),
        never for the peer: data the peer sends afterwards is not read.
        """
        if self._finished:
            return
        linger = self._linger()
        # Only when no other thread is inside a write or a read: close() must never wait for
        # a blocked writer or reader (closing the connection is what unblocks them).
        if self._wlock.acquire(blocking=False):
            try:
                if not self._write_closed and not self._write_broken and self._closed_by is None:
                    try:
                        self._end_locked(linger)
                    except (GossipError, ValueError):
                        pass
            finally:
                self._wlock.release()
        self._drain_if_free()
        self._finish()

    def _end_locked(self, timeout: float | None) -> None:
        self._check_writable()
        self._write_closed = True
        self._send(self._sealer.seal(KIND_END, b""), timeout)
        self._conn.close_write()

    def _drain(self) -> None:
        """Read and discard what has arrived, without waiting.

        Closing a TCP connection with received bytes unread resets it, and a reset discards
        what we wrote that is still on its way (our end marker included); with nothing unread
        the connection ends with a normal FIN and everything written is delivered.
        """
        if self._eof or self._read_error is not None or self._finished:
            return
        seen = 0
        while seen < _DRAIN_LIMIT:
            try:
                frame = self._conn.recv_frame(0)
            except GossipError:
                return
            if frame is None or (frame and frame[0] in (KIND_END, KIND_ABORT)):
                return
            seen += len(frame)

    def _finish(self, by: type[GossipError] | None = None) -> None:
        with self._state_lock:
            if self._finished:
                return
            self._finished = True
            if by is not None:
                self._closed_by = by
        try:
            self._conn.close()
        except Exception:  # pragma: no cover - a transport's close() does not raise
            logger.debug("closing the connection of %r failed", self, exc_info=True)
        callback = self._on_close
        if callback is not None:
            try:
                callback(self)
            except Exception:  # pragma: no cover - the engine's callback does not raise
                logger.exception("stream close callback failed")
        super().close()

    def _shutdown(self) -> None:
        """Cut the stream because the cluster stops: later calls raise ClusterClosed."""
        self._finish(ClusterClosed)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self._finished:
            self.abort(f"{exc_type.__name__}: {exc}" if exc is not None else exc_type.__name__)
        else:
            self.close()

    def __del__(self) -> None:
        # A stream dropped without close() is cut (the peer reads an error, not a clean end).
        # A finaliser must never block on the network, nor take a lock its thread may hold:
        # the connection is closed and nothing else is called (a stream the engine still
        # tracks is referenced by it, so it is never collected here).
        try:
            if not self._finished:
                self._finished = True
                self._conn.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals: handshake

    def _send_hello(self, timeout: float | None) -> None:
        """Client: send the first sealed frame, proving we hold the stream's keys."""
        with self._wlock:
            self._send(self._sealer.seal(KIND_HELLO, b""), timeout)

    def _expect_hello(self, timeout: float | None) -> None:
        """Server: the first frame must be an authentic HELLO.

        Raises:
            GossipTimeout, TransportError, AuthenticationError, DecodeError.
        """
        with self._rlock:
            frame = self._conn.recv_frame(timeout)
            if frame is None:
                raise TransportError(f"stream from {self._peer} ended before its first frame")
            kind = self._opener.kind(frame)
            if kind != KIND_HELLO:
                raise DecodeError(f"stream from {self._peer} began with a frame of kind {kind}")
            self._opener.open(kind, frame)

    # ------------------------------------------------------------------ internals: writing

    def _check_writable(self) -> None:
        if self._finished:
            self._raise_closed()
        if self._write_closed:
            raise ValueError(f"write to the stream to {self._peer} after close_write()")
        if self._write_broken:
            raise ValueError(f"the stream to {self._peer} is broken by an earlier write error")

    def _raise_closed(self) -> NoReturn:
        if self._closed_by is not None:
            raise self._closed_by(f"the stream to {self._peer} was ended: the cluster stopped")
        raise ValueError("I/O operation on a closed stream")

    def _send_data(self, piece: memoryview) -> None:
        kind = KIND_DATA
        body: bytes | memoryview = piece
        compressor = self._compressor
        if self._compress and compressor is not None and len(piece) >= self._compress_min:
            packed = compressor.compress(piece)  # type: ignore[arg-type]
            if len(packed) < len(piece):
                kind, body = self._compressed_kind, packed
        self._send(self._sealer.seal(kind, body), self._timeout)

    def _send(self, frame: memoryview, timeout: float | None) -> None:
        try:
            self._conn.send_frame(frame, timeout)
        except GossipError:
            self._write_broken = True
            if self._finished:
                self._raise_closed()
            raise

    # ------------------------------------------------------------------ internals: reading

    def _remaining(self) -> int:
        return len(self._pending) - self._pos

    def _take_into(self, view: memoryview) -> int:
        left = len(self._pending) - self._pos
        if left <= 0:
            return 0
        n = min(left, len(view))
        pos = self._pos
        view[:n] = self._pending[pos:pos + n]
        self._advance(n)
        return n

    def _take(self, size: int) -> bytes:
        left = len(self._pending) - self._pos
        if left <= 0:
            return b""
        pending, pos = self._pending, self._pos
        if pos == 0 and size >= left and type(pending) is bytes:
            self._pending, self._pos = b"", 0
            return pending
        n = min(left, size)
        out = bytes(pending[pos:pos + n])
        self._advance(n)
        return out

    def _advance(self, n: int) -> None:
        self._pos += n
        if self._pos >= len(self._pending):
            self._pending, self._pos = b"", 0

    def _break_read(self, exc: BaseException) -> NoReturn:
        self._read_error = exc
        raise exc

    def _next_data(self, dest: memoryview | None) -> int:
        """Read frames until data arrives (under ``_rlock``, nothing pending).

        A data frame that fits in ``dest`` is opened straight into it and its size returned;
        otherwise its body becomes the pending data and -1 is returned. At the peer's end
        marker, 0 is returned (and the end is remembered).
        """
        if self._read_error is not None:
            raise self._read_error
        if self._finished:
            self._raise_closed()
        opener = self._opener
        body: bytes | memoryview
        while True:
            try:
                frame = self._conn.recv_frame(self._timeout)
            except GossipTimeout:
                raise
            except GossipError as exc:
                if self._finished:
                    self._raise_closed()
                self._break_read(exc)
            if frame is None:
                self._break_read(TransportError(
                    f"the stream from {self._peer} ended without its end marker (the peer "
                    "failed or the stream was cut short)"))
            try:
                kind = opener.kind(frame)
                if kind == KIND_DATA:
                    size = opener.body_size(frame)
                    if size > self._max_frame:
                        raise PacketTooLarge(
                            f"stream frame of {size} bytes from {self._peer} is over the limit "
                            f"of {self._max_frame} bytes (stream_max_packet_size)")
                    if size == 0:
                        opener.open(kind, frame)
                        continue
                    if dest is not None and len(dest) >= size:
                        opener.open_into(kind, frame, dest[:size])
                        self._count_in(size)
                        return size
                    body = opener.open(kind, frame)
                elif kind == KIND_DATA_LZ4 or kind == KIND_DATA_SNAPPY:
                    if opener.body_size(frame) > self._max_frame:
                        raise PacketTooLarge(
                            f"stream frame of {opener.body_size(frame)} bytes from {self._peer} "
                            f"is over the limit of {self._max_frame} bytes")
                    decompressor = (self._decompressor if kind == KIND_DATA_LZ4
                                    else self._snappy_decompressor())
                    body = decompressor.decompress(
                        opener.open(kind, frame), self._max_frame)  # type: ignore[arg-type]
                elif kind == KIND_END:
                    opener.open(kind, frame)
                    self._eof = True
                    return 0
                elif kind == KIND_ABORT:
                    reason = bytes(opener.open(kind, frame)[:MAX_REASON]).decode("utf-8", "replace")
                    raise RemoteHandlerError(
                        f"the stream from {self._peer} was aborted by the peer: {reason}", reason,
                        self.msg_type)
                else:
                    raise DecodeError(f"unexpected frame of kind {kind} in the stream from "
                                      f"{self._peer}")
            except GossipError as exc:
                self._break_read(exc)
            if not body:
                continue
            self._pending, self._pos = body, 0
            self._count_in(len(body))
            return -1

    def _snappy_decompressor(self) -> Compressor:
        snappy = self._snappy
        if snappy is None:
            try:
                snappy = self._snappy = SnappyCompressor()
            except ConfigError:
                raise CompressionError(
                    f"a Snappy-compressed frame from {self._peer}, but Snappy is not installed "
                    "here (pip install 'gossip-cluster[snappy]')") from None
        return snappy

    def _count_in(self, n: int) -> None:
        counters = self._counters
        if counters is not None:
            counters.inc("streams.bytes_in", n)

    def _read_exact(self, n: int, what: str, allow_eof: bool = False) -> bytes | None:
        """Read exactly ``n`` bytes; ``None`` if ``allow_eof`` and the stream ended first."""
        out = bytearray(n)
        view = memoryview(out)
        got = 0
        while got < n:
            try:
                k = self.readinto(view[got:])
            except GossipTimeout:
                if got:
                    with self._rlock:
                        self._read_error = DecodeError(
                            f"a {what} from {self._peer} was cut by a read timeout")
                raise
            if k == 0:
                if got == 0 and allow_eof:
                    return None
                raise DecodeError(f"the stream from {self._peer} ended inside a {what} "
                                  f"({got} of {n} bytes)")
            got += k
        return bytes(out)