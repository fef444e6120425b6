"""The packet pipeline: codec + compression + encryption + header, in one pure, thread-safe object.

:class:`PacketCodec` turns ``(msg_type, sender, msg_id, ttl, payload)`` into wire bytes and wire
bytes back into a :class:`Packet`; the layout is documented in :mod:`gossip.wire`. Encoding:

1. the payload is encoded with the codec (:meth:`PacketCodec.encode`) or given already encoded
   (:meth:`PacketCodec.encode_raw`, for relays that only change the ttl);
2. it is compressed (lz4, or Snappy) if a compressor is set, it is at least
   ``compress_min_size`` bytes, and compression actually makes it smaller (``FLAG_COMPRESSED``,
   with ``FLAG_SNAPPY`` for Snappy: a receiver reads either, whatever its own compressor);
3. the inner header is prepended; if the keyring has keys, the inner part but the sender id
   is sealed with the sender's key derived from the primary key, and the clear prefix + label
   as associated data (``FLAG_ENCRYPTED``, with ``FLAG_XCHACHA`` for XChaCha20-Poly1305):
   every node seals under a key of its own.

Decoding trusts nothing. It checks, in this order: the total size (``max_packet_size``), the clear
prefix (magic, version, flags, codec id, label tag, cipher), the encryption policy, authenticity, the
inner header, the exact payload length, then decompresses within ``max_packet_size``. For *any*
input bytes, the only exceptions :meth:`PacketCodec.decode` raises are
:class:`~gossip.errors.RemoteProtocolError` subclasses. The payload stays codec-encoded in the
:class:`Packet` until :meth:`Packet.unmarshal` (so relays and dropped packets never pay for it).

This module composes :mod:`gossip.wire`, :mod:`gossip.codecs`, :mod:`gossip.compression` and
:mod:`gossip.security`; it never touches sockets, threads or clocks.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from gossip.codecs import DEFAULT_CODEC, Codec, get_codec
from gossip.compression import Compressor, Lz4Compressor, SnappyCompressor
from gossip.errors import (
    CipherMismatch,
    CompressionError,
    ConfigError,
    DecodeError,
    EncryptionError,
    GossipError,
    LabelMismatch,
    LocalProtocolError,
    MessageTooLarge,
    PacketTooLarge,
    VersionMismatch,
)
from gossip.security import AES_GCM, OVERHEAD as _AES_SEAL_OVERHEAD, XCHACHA20_POLY1305, Keyring, label_tag
from gossip.tags import MAX_TAG_LENGTH, check_tag
from gossip.wire import (
    ENCRYPTED_OVERHEAD,
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FLAG_SNAPPY,
    FLAG_TAGGED,
    FLAG_XCHACHA,
    HEADER_OVERHEAD,
    INNER_HEADER_STRUCT,
    KNOWN_FLAGS,
    MAGIC,
    MAX_MSG_ID,
    MAX_MSG_TYPE,
    MAX_TTL,
    NODE_ID_SIZE,
    PLAIN_HEADER_STRUCT,
    PREFIX_SIZE,
    PREFIX_STRUCT,
    SEALED_HEADER_SIZE,
    SEALED_HEADER_STRUCT,
    WIRE_VERSION,
)

__all__ = ["Packet", "PacketCodec", "DEFAULT_MAX_PACKET_SIZE", "DEFAULT_COMPRESS_MIN_SIZE"]

logger = logging.getLogger("gossip.packet")

T = TypeVar("T")

DEFAULT_MAX_PACKET_SIZE: Final = 4 * 1024 * 1024
"""Default cap on wire bytes and on a decompressed payload."""
DEFAULT_COMPRESS_MIN_SIZE: Final = 256
"""Default payload size from which compression is attempted."""

_PLAIN_PACK = PLAIN_HEADER_STRUCT.pack
_PLAIN_UNPACK_FROM = PLAIN_HEADER_STRUCT.unpack_from
_INNER_PACK = INNER_HEADER_STRUCT.pack
_INNER_UNPACK_FROM = INNER_HEADER_STRUCT.unpack_from
_PREFIX_PACK = PREFIX_STRUCT.pack
_PREFIX_UNPACK_FROM = PREFIX_STRUCT.unpack_from
_SEALED_PACK = SEALED_HEADER_STRUCT.pack
_SEALED_UNPACK_FROM = SEALED_HEADER_STRUCT.unpack_from
_SENDER_END = PREFIX_SIZE + NODE_ID_SIZE
_PLAIN_HEADER_SIZE = HEADER_OVERHEAD


class _DefaultCompressor:
    """Sentinel type for "use lz4" in :class:`PacketCodec`'s signature."""

    def __repr__(self) -> str:
        return "<lz4>"


_LZ4: Final = _DefaultCompressor()


class Packet:
    """A decoded packet (read-only by convention: the receive path builds one per packet, so it
    is a plain slotted class, which is several times cheaper to build than a frozen dataclass).

    Attributes:
        msg_type: the message type (see :mod:`gossip.wire`).
        sender: the sender's 16-byte node id.
        msg_id: the message id (an HLC timestamp).
        ttl: hops left.
        payload: the payload, decrypted and decompressed but still codec-encoded.
        codec: the codec the sender used (named in the header).
        compressed: the payload travelled compressed.
        encrypted: the packet travelled encrypted.
        size: the number of wire bytes.
        tag: the tag of a tagged broadcast (only members holding it handle and relay it), or
            None.
    """

    __slots__ = ("msg_type", "sender", "msg_id", "ttl", "payload", "codec", "compressed",
                 "encrypted", "size", "tag")

    def __init__(self, msg_type: int, sender: bytes, msg_id: int, ttl: int, payload: bytes,
                 codec: Codec, compressed: bool, encrypted: bool, size: int,
                 tag: str | None = None) -> None:
        self.msg_type = msg_type
        self.sender = sender
        self.msg_id = msg_id
        self.ttl = ttl
        self.payload = payload
        self.codec = codec
        self.compressed = compressed
        self.encrypted = encrypted
        self.size = size
        self.tag = tag

    def __repr__(self) -> str:
        tag = "" if self.tag is None else f", tag={self.tag!r}"
        return (f"Packet(msg_type={self.msg_type}, sender={self.sender.hex()}, "
                f"msg_id={self.msg_id}, ttl={self.ttl}, payload={len(self.payload)} bytes, "
                f"codec={self.codec.name!r}, compressed={self.compressed}, "
                f"encrypted={self.encrypted}, size={self.size}{tag})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def unmarshal(self, target: type[T] | None = None) -> Any:
        """Decode the payload with the packet's codec, as plain values or as *target*.

        Args:
            target: a dataclass or typed container to rebuild (see
                :func:`gossip.codecs.from_builtin`); ``None`` for plain values.

        Raises:
            DecodeError: the payload is malformed or does not fit *target*.
            LocalProtocolError: *target* has type hints that cannot be resolved.
        """
        try:
            if target is None:
                return self.codec.decode(self.payload)
            return self.codec.decode_as(self.payload, target)
        except GossipError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise DecodeError(
                f"cannot decode a {self.codec.name} payload: {type(exc).__name__}: {exc}"
            ) from exc


class PacketCodec:
    """Encode and decode packets; immutable configuration, safe to share between threads.

    Args:
        codec: the payload codec for encoding (a :class:`~gossip.codecs.Codec`); defaults to
            msgpack. Decoding uses whichever registered codec the header names.
        keyring: the keys (and cipher: AES-GCM or XChaCha20-Poly1305). When it holds keys,
            every packet is encrypted with the primary; packets sealed with the other cipher
            are refused (:class:`~gossip.errors.CipherMismatch`).
        label: the cluster label; packets of another label are refused (:class:`LabelMismatch`)
            and, when encrypting, the label is authenticated too.
        compressor: payload compressor, ``None`` to never compress. Defaults to
            :class:`Lz4Compressor`. Compressed packets from peers are decoded whatever this is:
            Snappy ones (``FLAG_SNAPPY``) with :class:`~gossip.compression.SnappyCompressor`
            (when cramjam is installed), the others with this compressor unless it is Snappy,
            else lz4.
        compress_min_size: payloads smaller than this are never compressed.
        max_packet_size: the largest packet accepted or produced, and the largest
            decompressed payload accepted.
        require_encryption: refuse plain packets. Defaults to ``bool(keyring)``.
        encrypt: seal the packets we build. Defaults to ``bool(keyring)``; False with a keyring
            sends plain packets while still opening encrypted ones (with
            ``require_encryption=False``: the first step of moving a plain cluster to
            encryption, memberlist's GossipVerifyOutgoing=false).

    Raises:
        ConfigError: a size is out of range, or encryption is required without a keyring.
    """

    __slots__ = (
        "_codec",
        "_codec_id",
        "_keyring",
        "_label",
        "_label_bytes",
        "_tag",
        "_compressor",
        "_decompressor",
        "_snappy",
        "_compress_flag",
        "_cipher_flag",
        "_cipher",
        "_compress_min_size",
        "_max_packet_size",
        "_require_encryption",
        "_encrypt",
        "_prefixes",
        "_sealing",
    )

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        keyring: Keyring | None = None,
        label: str = "",
        compressor: Compressor | _DefaultCompressor | None = _LZ4,
        compress_min_size: int = DEFAULT_COMPRESS_MIN_SIZE,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        require_encryption: bool | None = None,
        encrypt: bool | None = None,
    ) -> None:
        if compress_min_size < 0:
            raise ConfigError("compress_min_size", f"must be >= 0, got {compress_min_size}")
        if max_packet_size < ENCRYPTED_OVERHEAD:
            raise ConfigError(
                "max_packet_size", f"must be >= {ENCRYPTED_OVERHEAD}, got {max_packet_size}"
            )
        if require_encryption is None:
            require_encryption = bool(keyring)
        if require_encryption and keyring is None:
            raise ConfigError("encryption_key", "encryption is required but no keyring is given")
        if encrypt is None:
            encrypt = bool(keyring)
        if encrypt and keyring is None:
            raise ConfigError("encryption_key", "encrypting is asked for but no keyring is given")
        try:
            label_bytes = label.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError("label", f"label is not encodable as UTF-8: {exc}") from exc
        self._codec: Codec = DEFAULT_CODEC if codec is None else codec
        self._codec_id = self._codec.codec_id
        self._keyring = keyring
        self._label = label
        self._label_bytes = label_bytes
        self._tag = label_tag(label)
        if isinstance(compressor, _DefaultCompressor):
            compressor = Lz4Compressor()
        self._compressor: Compressor | None = compressor
        is_snappy = compressor is not None and getattr(compressor, "name", "") == "snappy"
        # FLAG_COMPRESSED alone: lz4 (or a custom compressor); with FLAG_SNAPPY: Snappy.
        self._decompressor: Compressor = (
            compressor if compressor is not None and not is_snappy else Lz4Compressor())
        self._snappy: Compressor | None = compressor if is_snappy else None
        self._compress_flag = FLAG_COMPRESSED | (FLAG_SNAPPY if is_snappy else 0)
        self._cipher = keyring.cipher if keyring is not None else AES_GCM
        self._cipher_flag = FLAG_XCHACHA if self._cipher == XCHACHA20_POLY1305 else 0
        self._compress_min_size = compress_min_size
        self._max_packet_size = max_packet_size
        self._require_encryption = require_encryption
        self._encrypt = encrypt
        # Clear prefix bytes -> (flags, codec, aad); filled on first sight of each valid prefix
        # (at most 8 flag combinations x 255 codec ids), so decoding looks the prefix up once.
        self._prefixes: dict[bytes, tuple[int, Codec, bytes]] = {}
        # flags -> (prefix, aad) for sealing with our codec.
        self._sealing: dict[int, tuple[bytes, bytes]] = {}
        cf = self._compress_flag
        for flags in (FLAG_ENCRYPTED, FLAG_ENCRYPTED | cf, FLAG_ENCRYPTED | FLAG_TAGGED,
                      FLAG_ENCRYPTED | cf | FLAG_TAGGED):
            prefix = _PREFIX_PACK(MAGIC, WIRE_VERSION, flags | self._cipher_flag, self._codec_id,
                                  self._tag)
            self._sealing[flags] = (prefix, prefix + label_bytes)

    def __repr__(self) -> str:
        return (
            f"PacketCodec(codec={self._codec.name!r}, label={self._label!r}, "
            f"encrypted={self._encrypt}, compressor={self._compressor!r}, "
            f"max_packet_size={self._max_packet_size})"
        )

    @property
    def codec(self) -> Codec:
        """The codec used for encoding."""
        return self._codec

    @property
    def keyring(self) -> Keyring | None:
        """The keyring, if any."""
        return self._keyring

    @property
    def label(self) -> str:
        """The cluster label."""
        return self._label

    @property
    def encrypts(self) -> bool:
        """True if the packets we build are sealed."""
        return self._encrypt

    @property
    def requires_encryption(self) -> bool:
        """True if plain packets are refused."""
        return self._require_encryption

    @property
    def max_packet_size(self) -> int:
        """The largest packet accepted or produced."""
        return self._max_packet_size

    @property
    def overhead(self) -> int:
        """Bytes a packet currently adds to its (possibly compressed) payload."""
        if not self._encrypt:
            return HEADER_OVERHEAD
        keyring = self._keyring
        return ENCRYPTED_OVERHEAD - _AES_SEAL_OVERHEAD + (
            keyring.overhead if keyring is not None else _AES_SEAL_OVERHEAD)

    # ---------------------------------------------------------------------------------- encode

    def encode(self, msg_type: int, sender: bytes, msg_id: int, ttl: int, payload: Any,
               tag: str | None = None) -> bytes:
        """Encode *payload* with the codec and build a packet (tagged if ``tag`` is given).

        Raises:
            LocalProtocolError: an argument is out of range or the payload cannot be encoded.
            MessageTooLarge: the packet, or its payload, would exceed ``max_packet_size``.
        """
        return self.encode_raw(msg_type, sender, msg_id, ttl, self._codec.encode(payload), tag)

    def encode_raw(
        self, msg_type: int, sender: bytes, msg_id: int, ttl: int, payload: bytes,
        tag: str | None = None,
    ) -> bytes:
        """Build a packet around an already codec-encoded payload.

        Args:
            msg_type: 0..65535.
            sender: exactly 16 bytes.
            msg_id: 0..2**64-1.
            ttl: 0..255.
            payload: codec-encoded bytes (encoded with this codec: the header names it).
            tag: the tag of a tagged broadcast (:func:`gossip.tags.check_tag`), or None.

        Raises:
            LocalProtocolError: an argument is out of range, or ``tag`` is not a valid tag.
            MessageTooLarge: the packet would exceed ``max_packet_size``, or its payload
                would, once decompressed (a receiver refuses either, so it is never built).
        """
        if type(sender) is not bytes or len(sender) != NODE_ID_SIZE:
            _check_args(msg_type, sender, msg_id, ttl)
            sender = bytes(sender)
        flags = 0
        size = len(payload)
        if size > self._max_packet_size:
            # However small it compresses, a receiver decompresses within max_packet_size only.
            raise MessageTooLarge(
                f"payload of {size} bytes exceeds max_packet_size ({self._max_packet_size}) "
                "(a receiver refuses it even compressed)"
            )
        compressor = self._compressor
        if compressor is not None and size >= self._compress_min_size:
            compressed = compressor.compress(payload)
            if len(compressed) < size:
                payload = compressed
                size = len(compressed)
                flags = self._compress_flag
        if tag is not None:
            why = check_tag(tag)
            if why is not None:
                raise LocalProtocolError(why)
            flags |= FLAG_TAGGED
            raw_tag = tag.encode("ascii")
            payload = bytes((len(raw_tag),)) + raw_tag + payload
        keyring = self._keyring
        try:
            if self._encrypt and keyring:
                prefix, aad = self._sealing[flags | FLAG_ENCRYPTED]
                inner = _SEALED_PACK(msg_type, msg_id, ttl, size) + payload
                data = prefix + sender + keyring.seal(inner, aad, sender)
            else:
                data = (
                    _PLAIN_PACK(
                        MAGIC, WIRE_VERSION, flags, self._codec_id, self._tag,
                        msg_type, sender, msg_id, ttl, size,
                    )
                    + payload
                )
        except struct.error as exc:
            _check_args(msg_type, sender, msg_id, ttl)
            raise LocalProtocolError(f"cannot pack the packet header: {exc}") from exc
        if len(data) > self._max_packet_size:
            raise MessageTooLarge(
                f"packet of {len(data)} bytes exceeds max_packet_size ({self._max_packet_size})"
            )
        return data

    # ---------------------------------------------------------------------------------- decode

    def decode(self, data: bytes, max_payload: int | None = None,
               type_limits: Mapping[int, int] | None = None) -> Packet:
        """Parse and verify wire bytes.

        ``max_payload`` lowers the limit on the decompressed payload for this packet: the
        receive path passes the datagram limit for datagrams, so that a small compressed
        datagram can never expand into a large allocation (a datagram stays a datagram).
        ``type_limits`` lowers it further for some message types (``{type: bytes}``): the
        receive path caps the protocol messages that are never larger than a datagram. Both
        are checked against the sizes the header and the compressed block claim, before any
        payload byte is copied or decompressed, so a refusal costs the same whatever the claim.

        Raises:
            PacketTooLarge: the packet, or its decompressed payload, exceeds
                ``max_packet_size``.
            VersionMismatch: wrong magic byte or wire version.
            DecodeError: truncated, trailing bytes, unknown flags or codec id, corrupt
                compression (:class:`~gossip.errors.CompressionError`).
            LabelMismatch: the packet belongs to a cluster with another label.
            EncryptionError: plain while encryption is required, or encrypted while we have
                no keys; :class:`~gossip.errors.AuthenticationError` if no key opens it.
        """
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if n > self._max_packet_size:
            raise PacketTooLarge(f"packet of {n} bytes exceeds max_packet_size ({self._max_packet_size})")
        if n < PREFIX_SIZE:
            raise DecodeError(f"truncated packet: {n} bytes, the prefix alone is {PREFIX_SIZE}")
        entry = self._prefixes.get(data[:PREFIX_SIZE])
        if entry is None:
            entry = self._check_prefix(data)
        flags, codec, aad = entry
        if flags & FLAG_ENCRYPTED:
            keyring = self._keyring
            if not keyring:
                raise EncryptionError("received an encrypted packet but no encryption key is set")
            if n < _SENDER_END:
                raise DecodeError(f"truncated packet: {n} bytes, the sender id ends at {_SENDER_END}")
            sender = data[PREFIX_SIZE:_SENDER_END]
            inner = keyring.open(data[_SENDER_END:], aad, sender)
            start = SEALED_HEADER_SIZE
            if len(inner) < start:
                raise DecodeError(
                    f"truncated packet: {len(inner)} inner bytes, the header alone is {start}"
                )
            msg_type, msg_id, ttl, length = _SEALED_UNPACK_FROM(inner, 0)
        else:
            if self._require_encryption:
                raise EncryptionError("received a plain packet but encryption is required")
            inner = data
            start = _PLAIN_HEADER_SIZE
            if n < start:
                raise DecodeError(f"truncated packet: {n} bytes, the header alone is {start}")
            msg_type, sender, msg_id, ttl, length = _INNER_UNPACK_FROM(inner, PREFIX_SIZE)
        tag = None
        if flags & FLAG_TAGGED:
            tag, start = _read_tag(inner, start)
        have = len(inner) - start
        if have != length:
            if have < length:
                raise DecodeError(f"truncated packet: payload length {length}, only {have} bytes")
            raise DecodeError(f"trailing bytes: payload length {length}, {have} bytes follow")
        limit = self._max_packet_size
        if max_payload is not None and max_payload < limit:
            limit = max_payload
        if type_limits is not None:
            cap = type_limits.get(msg_type)
            if cap is not None and cap < limit:
                limit = cap
                if length > cap:
                    raise PacketTooLarge(
                        f"payload of {length} bytes exceeds the {cap} bytes of message type {msg_type}")
        payload = inner[start:]
        if flags & FLAG_COMPRESSED:
            if flags & FLAG_SNAPPY:
                payload = self._snappy_decompressor().decompress(payload, limit)
            else:
                payload = self._decompressor.decompress(payload, limit)
        return Packet(
            msg_type,
            sender,
            msg_id,
            ttl,
            payload,
            codec,
            bool(flags & FLAG_COMPRESSED),
            bool(flags & FLAG_ENCRYPTED),
            n,
            tag,
        )

    def _snappy_decompressor(self) -> Compressor:
        """The Snappy decompressor, made on the first Snappy packet from a node that does not
        compress with Snappy itself (a benign race: two threads may each make one)."""
        snappy = self._snappy
        if snappy is None:
            try:
                snappy = self._snappy = SnappyCompressor()
            except ConfigError:
                raise CompressionError(
                    "a Snappy-compressed packet, but Snappy is not installed here "
                    "(pip install 'gossip-cluster[snappy]')") from None
        return snappy

    def decode_all(self, data: bytes, src: str = "", max_payload: int | None = None,
                   type_limits: Mapping[int, int] | None = None) -> list[Packet]:
        """Return the packets in ``data``: one on this wire (see :meth:`decode`); a wire
        profile that bundles messages returns several (``src``: where it came from)."""
        return [self.decode(data, max_payload, type_limits)]

    def _check_prefix(self, data: bytes) -> tuple[int, Codec, bytes]:
        """Validate a clear prefix not seen before; remember it if it is acceptable."""
        magic, version, flags, codec_id, tag = _PREFIX_UNPACK_FROM(data, 0)
        if magic != MAGIC:
            raise VersionMismatch(f"bad magic byte 0x{magic:02x}, expected 0x{MAGIC:02x}")
        if version != WIRE_VERSION:
            raise VersionMismatch(f"unsupported wire version {version}, expected {WIRE_VERSION}")
        if flags & ~KNOWN_FLAGS:
            raise DecodeError(f"unknown flags 0x{flags & ~KNOWN_FLAGS & 0xFF:02x} (flags byte 0x{flags:02x})")
        if flags & FLAG_XCHACHA and not flags & FLAG_ENCRYPTED:
            raise DecodeError(f"flag XCHACHA without ENCRYPTED (flags byte 0x{flags:02x})")
        if flags & FLAG_SNAPPY and not flags & FLAG_COMPRESSED:
            raise DecodeError(f"flag SNAPPY without COMPRESSED (flags byte 0x{flags:02x})")
        codec = get_codec(codec_id)  # DecodeError if unknown
        if tag != self._tag:
            raise LabelMismatch(
                f"packet label tag 0x{tag:08x} is not ours (0x{self._tag:08x}, "
                f"label {self._label!r})"
            )
        if flags & FLAG_ENCRYPTED and self._keyring and (flags & FLAG_XCHACHA) != self._cipher_flag:
            theirs = XCHACHA20_POLY1305 if flags & FLAG_XCHACHA else AES_GCM
            raise CipherMismatch(
                f"packet sealed with {theirs}, this node uses {self._cipher} (Config.cipher)")
        prefix = data[:PREFIX_SIZE]
        entry = (flags, codec, prefix + self._label_bytes)
        self._prefixes[prefix] = entry
        return entry


def _read_tag(inner: bytes, start: int) -> tuple[str, int]:
    """Read the tag of a tagged packet at ``start``; return it and where the payload starts."""
    if len(inner) <= start:
        raise DecodeError("truncated packet: the tag of a tagged packet is missing")
    n = inner[start]
    end = start + 1 + n
    if not 0 < n <= MAX_TAG_LENGTH or len(inner) < end:
        raise DecodeError(f"bad tag length {n} in a tagged packet")
    try:
        tag = inner[start + 1:end].decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("a tag that is not ASCII in a tagged packet") from None
    why = check_tag(tag)
    if why is not None:
        raise DecodeError(f"bad tag in a tagged packet: {why}")
    return tag, end


def _check_args(msg_type: int, sender: bytes, msg_id: int, ttl: int) -> None:
    """Raise a LocalProtocolError naming the first bad header argument."""
    if not isinstance(msg_type, int) or not 0 <= msg_type <= MAX_MSG_TYPE:
        raise LocalProtocolError(f"msg_type must be an int in 0..{MAX_MSG_TYPE}, got {msg_type!r}")
    if not isinstance(sender, (bytes, bytearray)) or len(sender) != NODE_ID_SIZE:
        raise LocalProtocolError(
            f"sender must be {NODE_ID_SIZE} bytes, got {type(sender).__name__}"
            + (f" of {len(sender)}" if isinstance(sender, (bytes, bytearray)) else "")
        )
    if not isinstance(msg_id, int) or not 0 <= msg_id <= MAX_MSG_ID:
        raise LocalProtocolError(f"msg_id must be an int in 0..2**64-1, got {msg_id!r}")
    if not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise LocalProtocolError(f"ttl must be an int in 0..{MAX_TTL}, got {ttl!r}")
