"""Node-to-node streams: :class:`Stream`, a binary file-like object over one stream connection.

A stream is opened with :meth:`gossip.Cluster.open_stream` and handed to the handler registered
with :meth:`gossip.Cluster.handle_stream_func` on the other node. It is a subclass of
:class:`io.RawIOBase`, so ``shutil.copyfileobj``, ``io.BufferedReader(stream)`` and
``stream.read()`` to the end work as with any binary file; typed messages go through
:meth:`Stream.write_msg` and :meth:`Stream.read_msg`.

Opening (every message a whole frame on a connection dedicated to the stream)::

    client                                               server
    OPEN   packet: type, client salt, key id, payload ──►
                                                     ◄── ACCEPT packet: status, client salt,
                                                                        server salt (or why not)
    HELLO  frame (the first sealed frame)           ──►   the handler starts once it opens

OPEN and ACCEPT are ordinary packets of :mod:`gossip.packet` (sealed with the keyring, cluster
label bound in), of types :attr:`~gossip.wire.MessageType.STREAM_OPEN` and
:attr:`~gossip.wire.MessageType.STREAM_OPEN_ACK`. ACCEPT echoes the client's salt, so an old
answer cannot be replayed into a new opening; HELLO proves to the server that the client knows
the stream's keys, so a replayed OPEN never starts a handler.

Framing. With a key, each direction has its own AES-GCM key, derived with HKDF-SHA256 from the
key that sealed the OPEN (named by its key id), both salts and the cluster label, and the
nonce is that direction's frame counter, never sent. Every frame is::

    kind (1 byte, also authenticated) | ciphertext | GCM tag (16 bytes)

so a replayed, reordered, duplicated, dropped or altered frame fails authentication. A sealed
END frame closes a direction: a connection that ends without it (the peer died, or someone cut
the stream) raises on read and never reads as a clean end. The derived keys live with the
stream, so rotating the keyring while a stream is open does not disturb it. Without a key the
framing is the same, in plaintext (``kind | body``).

Kinds: HELLO (empty), DATA, DATA_LZ4 (an lz4 block with its size in front, used for frames of
at least ``compress_min_size`` bytes when it is smaller), END (empty) and ABORT (a reason, sent
when a handler raised or :meth:`Stream.abort` was called).

Typed messages (:meth:`Stream.write_msg`) are ``type u16 | length u32 | payload`` in the byte
stream, as in paularlott/gossip.

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

from .codecs import Codec
from .compression import Compressor, Lz4Compressor
from .errors import (
    AuthenticationError,
    ClusterClosed,
    DecodeError,
    GossipError,
    GossipTimeout,
    LocalProtocolError,
    PacketTooLarge,
    RemoteHandlerError,
    TransportError,
)
from .handlers import check_user_type
from .transports.base import StreamConn

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .node import Node

__all__ = [
    "Stream",
    "StreamKeys",
    "OpenRequest",
    "Accept",
    "derive_stream_keys",
    "key_id",
    "encode_open",
    "decode_open",
    "encode_accept",
    "decode_accept",
    "STATUS_ACCEPTED",
    "STATUS_NO_HANDLER",
    "STATUS_BUSY",
    "STATUS_UNKNOWN_KEY",
    "STATUS_CLOSING",
    "SALT_SIZE",
    "KEY_ID_SIZE",
    "FRAME_OVERHEAD",
    "MSG_HEADER_SIZE",
]

logger = logging.getLogger("gossip.stream")

T = TypeVar("T")

SALT_SIZE: Final = 16
"""Bytes of each side's random salt exchanged at open."""
KEY_ID_SIZE: Final = 8
"""Bytes of the key id naming the keyring key a stream's keys derive from."""
_TAG_SIZE: Final = 16
FRAME_OVERHEAD: Final = 1 + _TAG_SIZE
"""Most bytes framing adds to a frame's body (kind byte and GCM tag)."""
MSG_HEADER_SIZE: Final = 6
"""Bytes in front of a typed message: type u16, length u32."""

KIND_HELLO: Final = 1
KIND_DATA: Final = 2
KIND_DATA_LZ4: Final = 3
KIND_END: Final = 4
KIND_ABORT: Final = 5
_KINDS = frozenset((KIND_HELLO, KIND_DATA, KIND_DATA_LZ4, KIND_END, KIND_ABORT))
_AAD = {kind: b"gossip-stream-v1" + bytes([kind]) for kind in _KINDS}

_NONCE = struct.Struct(">4xQ")
_MSG_HEADER = struct.Struct(">HI")
_MAX_REASON = 1024
_WRITE_FRAME = 1024 * 1024  # writes are cut into frames of at most this much
_CLOSE_LINGER = 2.0  # longest close() waits to write the end marker before cutting
_DRAIN_LIMIT = 64 * 1024 * 1024  # most bytes close() reads and discards

_INFO_C2S = b"gossip stream v1 client to server|"
_INFO_S2C = b"gossip stream v1 server to client|"


STATUS_ACCEPTED: Final = 0
"""ACCEPT status: the stream is open."""
STATUS_NO_HANDLER: Final = 1
"""ACCEPT status: no stream handler is registered for the type."""
STATUS_BUSY: Final = 2
"""ACCEPT status: the peer's stream pool is full (``max_concurrent_streams``)."""
STATUS_UNKNOWN_KEY: Final = 3
"""ACCEPT status: the key the opener named is not installed on the peer."""
STATUS_CLOSING: Final = 4
"""ACCEPT status: the peer is stopping."""

_OPEN_VERSION = 1
_OPEN = struct.Struct(">BH16s8s")  # version, msg type, client salt, key id; then the payload
_ACCEPT = struct.Struct(">BB16s16s")  # version, status, client salt echo, server salt; reason


class OpenRequest:
    """A decoded OPEN: the stream's message type, the client's salt and key id, the payload."""

    __slots__ = ("msg_type", "client_salt", "key_id", "payload")

    def __init__(self, msg_type: int, client_salt: bytes, key_id: bytes, payload: bytes) -> None:
        self.msg_type = msg_type
        self.client_salt = client_salt
        self.key_id = key_id
        self.payload = payload


class Accept:
    """A decoded ACCEPT: the status, the echoed client salt, the server's salt, a reason."""

    __slots__ = ("status", "client_salt", "server_salt", "reason")

    def __init__(self, status: int, client_salt: bytes, server_salt: bytes, reason: str) -> None:
        self.status = status
        self.client_salt = client_salt
        self.server_salt = server_salt
        self.reason = reason


def encode_open(msg_type: int, client_salt: bytes, key: bytes, payload: bytes) -> bytes:
    """Return the body of an OPEN packet (``key`` is the key id; zeros without a key)."""
    return _OPEN.pack(_OPEN_VERSION, msg_type, client_salt, key) + payload


def decode_open(data: bytes) -> OpenRequest:
    """Parse the body of an OPEN packet.

    Raises:
        DecodeError: too short, or another version.
    """
    if len(data) < _OPEN.size:
        raise DecodeError(f"stream OPEN of {len(data)} bytes is shorter than {_OPEN.size}")
    version, msg_type, salt, kid = _OPEN.unpack_from(data)
    if version != _OPEN_VERSION:
        raise DecodeError(f"stream OPEN of version {version}, expected {_OPEN_VERSION}")
    return OpenRequest(msg_type, salt, kid, bytes(data[_OPEN.size:]))


def encode_accept(status: int, client_salt: bytes, server_salt: bytes, reason: str = "") -> bytes:
    """Return the body of an ACCEPT packet."""
    text = reason.encode("utf-8", "replace")[:_MAX_REASON]
    return _ACCEPT.pack(_OPEN_VERSION, status, client_salt, server_salt) + text


def decode_accept(data: bytes) -> Accept:
    """Parse the body of an ACCEPT packet.

    Raises:
        DecodeError: too short, another version, or a reason over 1 KiB.
    """
    if len(data) < _ACCEPT.size:
        raise DecodeError(f"stream ACCEPT of {len(data)} bytes is shorter than {_ACCEPT.size}")
    version, status, csalt, ssalt = _ACCEPT.unpack_from(data)
    if version != _OPEN_VERSION:
        raise DecodeError(f"stream ACCEPT of version {version}, expected {_OPEN_VERSION}")
    text = data[_ACCEPT.size:]
    if len(text) > _MAX_REASON:
        raise DecodeError(f"stream ACCEPT reason of {len(text)} bytes is over {_MAX_REASON}")
    return Accept(status, csalt, ssalt, bytes(text).decode("utf-8", "replace"))


class _CounterSink(Protocol):
    """Where a stream counts its bytes (the engine's counters)."""

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        ...


def key_id(key: bytes) -> bytes:
    """Return the non-secret id of a keyring key that an OPEN names (HMAC-SHA256, truncated)."""
    import hashlib  # here: hashlib and hmac load OpenSSL, which a node without streams skips
    import hmac

    return hmac.new(key, b"gossip stream key id", hashlib.sha256).digest()[:KEY_ID_SIZE]


class StreamKeys:
    """The two AES-GCM keys of one stream: client to server, and server to client."""

    __slots__ = ("client_to_server", "server_to_client")

    def __init__(self, client_to_server: bytes, server_to_client: bytes) -> None:
        self.client_to_server = client_to_server
        self.server_to_client = server_to_client

    def __repr__(self) -> str:
        return "StreamKeys(<secret>)"


def derive_stream_keys(key: bytes, client_salt: bytes, server_salt: bytes,
                       label: bytes) -> StreamKeys:
    """Derive a stream's per-direction keys with HKDF-SHA256 (RFC 5869).

    Args:
        key: the keyring key that sealed the OPEN (16, 24 or 32 bytes); the derived keys have
            the same length.
        client_salt, server_salt: the random salts both sides sent at open.
        label: the cluster label (UTF-8), bound into both keys.
    """
    import hashlib
    import hmac

    prk = hmac.new(client_salt + server_salt, key, hashlib.sha256).digest()
    n = len(key)

    def expand(info: bytes) -> bytes:
        return hmac.new(prk, info + label + b"\x01", hashlib.sha256).digest()[:n]

    return StreamKeys(expand(_INFO_C2S), expand(_INFO_S2C))


def _aead(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


Frame = bytes | bytearray | memoryview
"""A frame as a stream connection returns it (possibly a view valid until its next frame)."""


class _Sealer:
    """One direction's outgoing frames: kind, then the body, sealed under the frame counter.

    Frames are built in one buffer reused for every frame (grown to the largest one): the
    transport keeps no reference once ``send_frame`` returns, and fresh large allocations
    cost page faults on every frame.
    """

    __slots__ = ("_aead", "_counter", "_buf", "_tag")

    def __init__(self, key: bytes | None) -> None:
        self._aead = None if key is None else _aead(key)
        self._tag = 0 if key is None else _TAG_SIZE
        self._counter = 0
        self._buf = bytearray(256)

    def seal(self, kind: int, body: bytes | bytearray | memoryview) -> memoryview:
        """Return the frame of ``kind`` around ``body``; valid until the next call."""
        size = 1 + len(body) + self._tag
        buf = self._buf
        if len(buf) < size:
            buf = self._buf = bytearray(size)  # a new one: views of the last frame may live on
        out = memoryview(buf)[:size]
        buf[0] = kind
        aead = self._aead
        if aead is None:
            out[1:] = body
        else:
            nonce = _NONCE.pack(self._counter)
            self._counter += 1
            aead.encrypt_into(nonce, body, _AAD[kind], out[1:])
        return out


class _Opener:
    """One direction's incoming frames: checks the kind and authenticates under the counter.

    Sealed bodies are opened into one buffer reused for every frame (see :class:`_Sealer`).
    """

    __slots__ = ("_aead", "_counter", "overhead", "_peer", "_buf")

    def __init__(self, key: bytes | None, peer: str) -> None:
        self._aead = None if key is None else _aead(key)
        self._counter = 0
        self.overhead = 1 if key is None else FRAME_OVERHEAD
        self._peer = peer
        self._buf = bytearray(0)

    def kind(self, frame: Frame) -> int:
        """Return the frame's (not yet authenticated) kind after checking its size."""
        if len(frame) < self.overhead:
            raise DecodeError(f"stream frame of {len(frame)} bytes from {self._peer} is shorter "
                              f"than its framing ({self.overhead} bytes)")
        kind = frame[0]
        if kind not in _KINDS:
            raise DecodeError(f"stream frame from {self._peer} has unknown kind {kind}")
        return kind

    def _nonce(self) -> bytes:
        nonce = _NONCE.pack(self._counter)
        self._counter += 1
        return nonce

    def _failed(self) -> AuthenticationError:
        return AuthenticationError(
            f"stream frame {self._counter - 1} from {self._peer} failed authentication "
            "(tampered, replayed, reordered or dropped frames)")

    def open(self, kind: int, frame: Frame) -> memoryview:
        """Return the authentic body of ``frame`` (of ``kind``); valid until the next call."""
        aead = self._aead
        body = memoryview(frame)[1:]
        if aead is None:
            return body
        size = len(body) - _TAG_SIZE
        buf = self._buf
        if len(buf) < size:
            buf = self._buf = bytearray(size)  # a new one: views of the last body may live on
        out = memoryview(buf)[:size]
        try:
            aead.decrypt_into(self._nonce(), body, _AAD[kind], out)
        except Exception as exc:  # cryptography's InvalidTag
            raise self._failed() from exc
        return out

    def open_into(self, kind: int, frame: Frame, dest: memoryview) -> None:
        """Put the authentic body of ``frame`` into ``dest`` (exactly its size).

        On failure ``dest`` holds unauthenticated bytes; the caller raises, so they are never
        reported as read.
        """
        aead = self._aead
        body = memoryview(frame)[1:]
        if aead is None:
            dest[:] = body
            return
        try:
            aead.decrypt_into(self._nonce(), body, _AAD[kind], dest)
        except Exception as exc:  # cryptography's InvalidTag
            raise self._failed() from exc

    def body_size(self, frame: Frame) -> int:
        """Return the size of ``frame``'s body once opened."""
        return len(frame) - self.overhead


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
            compressor: lz4 for written frames (None: off until :meth:`enable_compression`).
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
        self._sealer = _Sealer(send_key)
        self._opener = _Opener(recv_key, self._peer)
        self._compressor = compressor
        self._decompressor: Compressor = compressor if compressor is not None else Lz4Compressor()
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
        """True if the stream's frames are sealed with AES-GCM."""
        return self._encrypted

    @property
    def compression(self) -> bool:
        """True if written frames are lz4-compressed when that makes them smaller."""
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
        check_user_type(msg_type)
        payload = self._codec.encode(obj)
        if len(payload) > self._max_msg:
            raise LocalProtocolError(
                f"stream message of {len(payload)} bytes is over the limit of {self._max_msg} "
                "bytes (tcp_max_packet_size)")
        self.write(_MSG_HEADER.pack(msg_type, len(payload)) + payload)

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
        got, length = _MSG_HEADER.unpack(header)
        if length > self._max_msg:
            self._break_read(PacketTooLarge(
                f"stream message from {self._peer} announces {length} bytes, over the limit "
                f"of {self._max_msg} bytes"))
        payload = self._read_exact(length, f"message of {length} bytes")
        assert payload is not None
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
                    text = (reason or "aborted").encode("utf-8", "replace")[:_MAX_REASON]
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
                kind, body = KIND_DATA_LZ4, packed
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
                elif kind == KIND_DATA_LZ4:
                    if opener.body_size(frame) > self._max_frame:
                        raise PacketTooLarge(
                            f"stream frame of {opener.body_size(frame)} bytes from {self._peer} "
                            f"is over the limit of {self._max_frame} bytes")
                    body = self._decompressor.decompress(
                        opener.open(kind, frame), self._max_frame)  # type: ignore[arg-type]
                elif kind == KIND_END:
                    opener.open(kind, frame)
                    self._eof = True
                    return 0
                elif kind == KIND_ABORT:
                    reason = bytes(opener.open(kind, frame)[:_MAX_REASON]).decode("utf-8", "replace")
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
