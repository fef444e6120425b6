"""Wire format: message-type numbers, header layout, flags and size budgets.

Every packet starts with an 8-byte *clear prefix*, then the *inner part*. All integers are
big-endian::

    clear prefix (8 bytes, never encrypted)
    offset size field
    0      1    magic 0xC5                     wrong -> VersionMismatch
    1      1    wire version (1)               other -> VersionMismatch
    2      1    flags: bit0 COMPRESSED, bit1 ENCRYPTED, bit2 XCHACHA (with ENCRYPTED: sealed
                with XChaCha20-Poly1305, else AES-GCM), bit3 SNAPPY (with COMPRESSED: a Snappy
                block, else lz4), bit4 TAGGED; other bits, or bit2/bit3 alone -> DecodeError
    3      1    codec id                       unknown -> DecodeError
    4      4    label tag u32                  not ours -> LabelMismatch

    inner part, plain (31-byte header + payload)
    offset size field
    0      2    message type u16
    2      16   sender node id
    18     8    message id u64 (an HLC timestamp)
    26     1    ttl u8
    27     4    payload length u32 (as stored: compressed if the flag is set)
    31     n    payload (exactly n bytes)

    TAGGED (a broadcast only members holding the tag handle and relay): the header is followed
    by the tag, ``1 byte L (1..64) | L bytes of ASCII`` (:func:`gossip.tags.check_tag`), and
    then by the payload; the payload length counts the payload alone. Sealed with the rest
    when the packet is encrypted. Only members that advertise the tag are sent such a packet,
    and a node that predates tags advertises none, so it never receives one (it would refuse
    the unknown flag).

    inner part, ENCRYPTED: the sender id in clear, then the rest of the header and the payload
    sealed as nonce(12) | ciphertext | tag(16) under the sender's own key (derived from the
    keyring key and the sender id: :func:`gossip.security.sender_key`), with AAD = prefix
    (8 bytes) + label (UTF-8). Altering the sender id changes the key: authentication fails.
    With XChaCha20-Poly1305 (flag bit2) the nonce is 24 bytes, so the offsets below from 28
    on move by 12. A packet sealed with the other cipher than ours is refused as
    ``CipherMismatch`` before any decryption is tried.
    offset size field
    0      16   sender node id (clear)
    16     12   nonce
    28     2    message type u16      (sealed from here)
    30     8    message id u64
    38     1    ttl u8
    39     4    payload length u32
    43     n    payload (after the tag when TAGGED, as above)
    43+n   16   GCM tag

Message types: 0..63 are the protocol's own (:class:`MessageType`), 64..127 are for add-on
packages built on the library (the leader election uses 65), 128..65535 belong to the
application (:data:`USER_MSG` and up). Numbers are never reused.

This module imports nothing from :mod:`gossip` but :mod:`gossip.errors` and
:mod:`gossip.security` (for the sealing overhead constant).
"""

from __future__ import annotations

import struct
from enum import IntEnum

from gossip.errors import LocalProtocolError
from gossip.security import OVERHEAD as _SEAL_OVERHEAD

__all__ = [
    "MessageType",
    "RESERVED_MSGS_START",
    "USER_MSG",
    "MAX_MSG_TYPE",
    "MAGIC",
    "WIRE_VERSION",
    "FLAG_COMPRESSED",
    "FLAG_ENCRYPTED",
    "FLAG_XCHACHA",
    "FLAG_SNAPPY",
    "FLAG_TAGGED",
    "KNOWN_FLAGS",
    "TransportType",
    "is_reliable",
    "NODE_ID_SIZE",
    "MAX_TTL",
    "MAX_MSG_ID",
    "MAX_DATAGRAM_PAYLOAD",
    "PREFIX_SIZE",
    "INNER_HEADER_SIZE",
    "HEADER_OVERHEAD",
    "ENCRYPTED_OVERHEAD",
    "PREFIX_STRUCT",
    "INNER_HEADER_STRUCT",
    "PLAIN_HEADER_STRUCT",
    "SEALED_HEADER_STRUCT",
    "SEALED_HEADER_SIZE",
    "is_internal",
    "is_reserved",
    "is_user",
    "type_name",
]


class MessageType(IntEnum):
    """Internal message types. Explicit numbers, never reused; new ones take the next free
    number below :data:`RESERVED_MSGS_START`."""

    REPLY = 0
    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    JOIN = 5
    JOIN_REPLY = 6
    PUSH_PULL = 7
    PUSH_PULL_REPLY = 8
    GOSSIP = 9
    # 10 was USER_GOSSIP, never used: retired, never to be reused.
    STREAM_OPEN_ACK = 11
    REPLY_ERROR = 12
    STREAM_OPEN = 13


class TransportType(IntEnum):
    """How a message travels (paularlott's ``TransportBestEffort`` / ``TransportReliable``):
    the ``transport=`` argument of :meth:`gossip.Cluster.send_to` and the other sends.

    ``BEST_EFFORT``: a UDP datagram when it fits ``udp_max_packet_size``, else a frame on a
    connection (the MTU rule); a WebSocket node sends it on its connection. ``RELIABLE``: always
    a frame on a reliable connection (TCP or WebSocket), as the ``*_reliable`` methods send.
    """

    BEST_EFFORT = 0
    RELIABLE = 1


def is_reliable(transport: TransportType) -> bool:
    """Return whether ``transport`` asks for a reliable send.

    Raises:
        LocalProtocolError: ``transport`` is not a :class:`TransportType` (nor 0 or 1).
    """
    if transport is TransportType.BEST_EFFORT:
        return False
    if transport is TransportType.RELIABLE:
        return True
    try:
        return TransportType(transport) is TransportType.RELIABLE
    except (ValueError, TypeError):
        raise LocalProtocolError(
            "transport must be TransportType.BEST_EFFORT or TransportType.RELIABLE, "
            f"got {transport!r}") from None


RESERVED_MSGS_START = 64
"""The first type open to code outside the protocol: 64..127 for add-on packages."""
USER_MSG = 128
"""The first message type available to users."""
MAX_MSG_TYPE = 65535
"""The largest message type (u16)."""

MAGIC = 0xC5
"""First byte of every packet."""
WIRE_VERSION = 1
"""Second byte of every packet."""

FLAG_COMPRESSED = 0x01
"""The payload is compressed: an lz4 block (size-prefixed), or Snappy with :data:`FLAG_SNAPPY`."""
FLAG_ENCRYPTED = 0x02
"""The inner part is sealed: with AES-GCM, or XChaCha20-Poly1305 with :data:`FLAG_XCHACHA`."""
FLAG_XCHACHA = 0x04
"""With :data:`FLAG_ENCRYPTED`: sealed with XChaCha20-Poly1305 (24-byte nonce)."""
FLAG_SNAPPY = 0x08
"""With :data:`FLAG_COMPRESSED`: the payload is a Snappy block (its size as a varint)."""
FLAG_TAGGED = 0x10
"""A tag follows the inner header: only members holding it handle and relay the packet."""
KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_XCHACHA | FLAG_SNAPPY | FLAG_TAGGED
"""Every flag bit this version understands; any other bit is refused."""

NODE_ID_SIZE = 16
"""Bytes of a sender node id."""
MAX_TTL = 255
"""The largest ttl (u8)."""
MAX_MSG_ID = 2**64 - 1
"""The largest message id (u64)."""
MAX_DATAGRAM_PAYLOAD = 65536
"""The largest payload a datagram may carry once decompressed: a receiver refuses more
(:class:`~gossip.errors.PacketTooLarge`), so that a small compressed datagram can never expand
into a large allocation, and a sender sends a bigger payload over a connection instead, however
small it compresses."""

PREFIX_STRUCT = struct.Struct(">BBBBI")
"""magic, version, flags, codec id, label tag."""
INNER_HEADER_STRUCT = struct.Struct(">H16sQBI")
"""msg type, sender, msg id, ttl, payload length."""
PLAIN_HEADER_STRUCT = struct.Struct(">BBBBIH16sQBI")
"""Prefix and inner header back to back, as in an unencrypted packet."""
SEALED_HEADER_STRUCT = struct.Struct(">HQBI")
"""msg type, msg id, ttl, payload length: the inner header of an encrypted packet, whose
sender id travels in clear ahead of the sealed part."""

PREFIX_SIZE = PREFIX_STRUCT.size
"""Bytes of the clear prefix (8)."""
INNER_HEADER_SIZE = INNER_HEADER_STRUCT.size
"""Bytes of the inner header (31)."""
HEADER_OVERHEAD = PREFIX_SIZE + INNER_HEADER_SIZE
"""Bytes a plain packet adds to its payload (39)."""
ENCRYPTED_OVERHEAD = HEADER_OVERHEAD + _SEAL_OVERHEAD
"""Bytes an encrypted packet adds to its payload (67)."""
SEALED_HEADER_SIZE = SEALED_HEADER_STRUCT.size
"""Bytes of the sealed inner header of an encrypted packet (15)."""

assert PREFIX_SIZE == 8 and INNER_HEADER_SIZE == 31 and PLAIN_HEADER_STRUCT.size == 39
assert PREFIX_SIZE + NODE_ID_SIZE + SEALED_HEADER_SIZE + _SEAL_OVERHEAD == ENCRYPTED_OVERHEAD


def is_internal(msg_type: int) -> bool:
    """Return True for a type below the application's range (0..127: the protocol's and the
    add-on packages')."""
    return 0 <= msg_type < USER_MSG


def is_reserved(msg_type: int) -> bool:
    """Return True for a type of the add-on packages' range (64..127)."""
    return RESERVED_MSGS_START <= msg_type < USER_MSG


def is_user(msg_type: int) -> bool:
    """Return True for a type available to users (128..65535)."""
    return USER_MSG <= msg_type <= MAX_MSG_TYPE


def type_name(msg_type: int) -> str:
    """Return a readable name for logs: ``"PING"``, ``"user:300"``, ``"reserved:70"``."""
    try:
        return MessageType(msg_type).name
    except ValueError:
        if is_user(msg_type):
            return f"user:{msg_type}"
        if is_reserved(msg_type):
            return f"reserved:{msg_type}"
        return f"unknown:{msg_type}"
