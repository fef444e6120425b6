"""Node-to-node streams: the opening handshake, the sealed framing, and the :class:`Stream`.

=================================  ==============================================================
module                             owns
=================================  ==============================================================
:mod:`.handshake`                  the OPEN and ACCEPT packets' bodies, their statuses, key ids
:mod:`.sealing`                    each direction's derived keys and its frames, sealed in order
:mod:`.stream`                     :class:`Stream`, the file object (reads, writes, typed messages)
=================================  ==============================================================

The engine's stream pool (:mod:`gossip.engine.stream_pool`) drives the opening and hands the
open :class:`Stream` to the handler. A node that never streams never loads this package.

This package imports the errors, the codecs, compression, the node snapshot and the transport
interface; never the engine.
"""

from __future__ import annotations

from .handshake import (
    KEY_ID_SIZE,
    SALT_SIZE,
    STATUS_ACCEPTED,
    STATUS_BUSY,
    STATUS_CLOSING,
    STATUS_NO_HANDLER,
    STATUS_UNKNOWN_KEY,
    Accept,
    OpenRequest,
    decode_accept,
    decode_open,
    encode_accept,
    encode_open,
    key_id,
)
from .sealing import FRAME_OVERHEAD, StreamKeys, derive_stream_keys
from .stream import MSG_HEADER_SIZE, Stream

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
