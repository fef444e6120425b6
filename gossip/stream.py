"""The former home of node-to-node streams, kept so that ``gossip.stream`` imports keep working.

Everything here lives in :mod:`gossip.streams` (``handshake``, ``sealing``, ``stream``); the
stream class is also :class:`gossip.Stream`.
"""

from __future__ import annotations

from .streams import (
    FRAME_OVERHEAD,
    KEY_ID_SIZE,
    MSG_HEADER_SIZE,
    SALT_SIZE,
    STATUS_ACCEPTED,
    STATUS_BUSY,
    STATUS_CLOSING,
    STATUS_NO_HANDLER,
    STATUS_UNKNOWN_KEY,
    Accept,
    OpenRequest,
    Stream,
    StreamKeys,
    decode_accept,
    decode_open,
    derive_stream_keys,
    encode_accept,
    encode_open,
    key_id,
)

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
