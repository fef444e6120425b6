"""The socket transport's wire: a preamble per connection, then length-prefixed frames.

Every TCP connection starts with a 4-byte preamble naming what it carries: frames
(:data:`PREAMBLE_FRAMES`, pooled and request connections) or one stream
(:data:`PREAMBLE_STREAM`). A frame is a 4-byte big-endian length, then that many bytes; a
length of 0 is malformed.

Pure functions over bytes, no sockets: :func:`encode_frame`, :func:`parse_frames` (every whole
frame in a buffer, against a size limit) and :func:`read_preamble`.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["FRAME_HEADER_SIZE", "PREAMBLE_FRAMES", "PREAMBLE_STREAM", "PREAMBLE_SIZE", "HEADER",
           "FRAMES", "STREAM", "encode_frame", "parse_frames", "read_preamble"]

FRAME_HEADER_SIZE: Final = 4
"""Size of the big-endian length prefix of a TCP frame."""
PREAMBLE_FRAMES: Final = b"\xc5G\x01F"
"""First bytes of a connection that carries frames (pooled and request connections)."""
PREAMBLE_STREAM: Final = b"\xc5G\x01S"
"""First bytes of a connection dedicated to one stream."""
PREAMBLE_SIZE: Final = 4
"""Size of a connection's preamble."""
HEADER: Final = struct.Struct(">I")
"""The frame length prefix."""

FRAMES: Final = "frames"
"""What :func:`read_preamble` returns for :data:`PREAMBLE_FRAMES`."""
STREAM: Final = "stream"
"""What :func:`read_preamble` returns for :data:`PREAMBLE_STREAM`."""


def encode_frame(data: bytes) -> bytes:
    """Return ``data`` with its length prefix."""
    return HEADER.pack(len(data)) + data


def parse_frames(buf: bytes | bytearray, limit: int) -> tuple[list[bytes], int, int]:
    """Return ``(frames, consumed, bad)``: every whole frame at the start of ``buf`` (copied out),
    the bytes they took, and the announced length of the first malformed frame (0 or over
    ``limit``), or -1 when there is none.

    Parsing stops at the first malformed frame: the frames before it are returned, and the
    connection is then to be closed. A partial frame at the end is left for the next call.
    """
    n = len(buf)
    off = 0
    frames: list[bytes] = []
    unpack = HEADER.unpack_from
    view = memoryview(buf)
    try:
        while n - off >= FRAME_HEADER_SIZE:
            (size,) = unpack(buf, off)
            if size == 0 or size > limit:
                return frames, off, size
            end = off + FRAME_HEADER_SIZE + size
            if end > n:
                break
            frames.append(bytes(view[off + FRAME_HEADER_SIZE:end]))
            off = end
    finally:
        view.release()
    return frames, off, -1


def read_preamble(buf: bytes | bytearray) -> str | None:
    """Return what a connection whose first bytes are ``buf`` carries (:data:`FRAMES` or
    :data:`STREAM`), ``""`` if fewer than :data:`PREAMBLE_SIZE` bytes came yet, or None for a
    preamble that is neither."""
    if len(buf) < PREAMBLE_SIZE:
        return ""
    head = bytes(buf[:PREAMBLE_SIZE])
    if head == PREAMBLE_FRAMES:
        return FRAMES
    if head == PREAMBLE_STREAM:
        return STREAM
    return None
