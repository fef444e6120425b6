"""The opening of a stream: the OPEN and ACCEPT packets, and the key id an OPEN names.

Opening (every message a whole frame on a connection dedicated to the stream)::

    client                                               server
    OPEN   packet: type, client salt, key id, payload ──►
                                                     ◄── ACCEPT packet: status, client salt,
                                                                        server salt (or why not)
    HELLO  frame (the first sealed frame)           ──►   the handler starts once it opens

OPEN and ACCEPT are ordinary packets of :mod:`gossip.packet` (sealed with the keyring, cluster
label bound in), of types :attr:`~gossip.wire.MessageType.STREAM_OPEN` and
:attr:`~gossip.wire.MessageType.STREAM_OPEN_ACK`; this module encodes and decodes their
bodies. ACCEPT echoes the client's salt, so an old answer cannot be replayed into a new
opening; HELLO (:mod:`gossip.streams.sealing`) proves to the server that the client knows the
stream's keys, so a replayed OPEN never starts a handler.

This module imports the errors alone.
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import DecodeError

__all__ = [
    "OpenRequest",
    "Accept",
    "encode_open",
    "decode_open",
    "encode_accept",
    "decode_accept",
    "key_id",
    "STATUS_ACCEPTED",
    "STATUS_NO_HANDLER",
    "STATUS_BUSY",
    "STATUS_UNKNOWN_KEY",
    "STATUS_CLOSING",
    "SALT_SIZE",
    "KEY_ID_SIZE",
    "MAX_REASON",
]

SALT_SIZE: Final = 16
"""Bytes of each side's random salt exchanged at open."""
KEY_ID_SIZE: Final = 8
"""Bytes of the key id naming the keyring key a stream's keys derive from."""
MAX_REASON: Final = 1024
"""Most bytes of the reason a refusal (ACCEPT) or an abort carries."""

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
    text = reason.encode("utf-8", "replace")[:MAX_REASON]
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
    if len(text) > MAX_REASON:
        raise DecodeError(f"stream ACCEPT reason of {len(text)} bytes is over {MAX_REASON}")
    return Accept(status, csalt, ssalt, bytes(text).decode("utf-8", "replace"))


def key_id(key: bytes) -> bytes:
    """Return the non-secret id of a keyring key that an OPEN names (HMAC-SHA256, truncated)."""
    import hashlib  # here: hashlib and hmac load OpenSSL, which a node without streams skips
    import hmac

    return hmac.new(key, b"gossip stream key id", hashlib.sha256).digest()[:KEY_ID_SIZE]
