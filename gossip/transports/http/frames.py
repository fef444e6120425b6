"""The bytes of the HTTP transport: frame batches in bodies, and the bearer token's proofs.

A request or response body is a batch of frames, each a 4-byte big-endian length and the
frame; an empty body carries none. :func:`unpack_frames` never trusts the body: a truncated
frame, a zero or oversized length, or more frames than allowed raise :class:`ValueError`.

With a bearer token, the token itself never travels. A request carries
``Gossip-Auth: <unix time>.<nonce>.<mac>``, the HMAC-SHA256 under the token of the time, the
nonce and the body (not the path, which a proxy may rewrite); the response carries ``Gossip-Auth: <mac>``, the HMAC of the
request's MAC, the status and the response body, so the client knows the answer came from a
holder of the token too. :class:`ReplayCache` remembers the nonces of the accepted requests
while their time is within the window (bounded; when full of live nonces, it refuses).

This module imports nothing from :mod:`gossip`; it is pure bytes and arithmetic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["pack_frames", "unpack_frames", "request_auth", "check_request_auth",
           "response_auth", "check_response_auth", "ReplayCache", "FRAME_HEADER_SIZE"]

_LEN = struct.Struct(">I")
FRAME_HEADER_SIZE = _LEN.size
"""Bytes ahead of each frame in a body."""

_REQUEST_LABEL = b"gossip-http-request\x00"
_RESPONSE_LABEL = b"gossip-http-response\x00"


def pack_frames(frames: Iterable[bytes]) -> bytes:
    """Return the body carrying ``frames`` (each prefixed by its length)."""
    out = bytearray()
    for frame in frames:
        out += _LEN.pack(len(frame))
        out += frame
    return bytes(out)


def unpack_frames(body: bytes, max_frame: int, max_frames: int) -> list[bytes]:
    """Split a body into its frames.

    Raises:
        ValueError: the body is malformed (truncated, a zero-length or oversized frame, or
            more than ``max_frames`` frames); the message says which.
    """
    frames: list[bytes] = []
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < FRAME_HEADER_SIZE:
            raise ValueError("truncated frame length")
        (size,) = _LEN.unpack_from(view, pos)
        pos += FRAME_HEADER_SIZE
        if size == 0:
            raise ValueError("empty frame")
        if size > max_frame:
            raise ValueError(f"frame of {size} bytes over the limit of {max_frame}")
        if end - pos < size:
            raise ValueError(f"truncated frame ({end - pos} of {size} bytes)")
        if len(frames) >= max_frames:
            raise ValueError(f"more than {max_frames} frames in one body")
        frames.append(bytes(view[pos:pos + size]))
        pos += size
    return frames


def _mac(token: str, label: bytes, *parts: bytes) -> str:
    mac = hmac.new(token.encode("utf-8"), label + b"\x00".join(parts), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")


def request_auth(token: str, now: float, body: bytes) -> str:
    """Return the ``Gossip-Auth`` value of a request (a fresh nonce each call)."""
    ts = str(int(now))
    nonce = base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
    return f"{ts}.{nonce}.{_mac(token, _REQUEST_LABEL, ts.encode(), nonce.encode(), body)}"


def check_request_auth(token: str, value: str, now: float, window: float,
                       body: bytes) -> tuple[str, str] | str:
    """Check a request's ``Gossip-Auth`` value; return ``(nonce, mac)``, or why it fails.

    The reasons: ``"missing"``, ``"malformed"``, ``"stale"`` (its time is more than
    ``window`` seconds away from ``now``), ``"wrong"`` (the MAC does not match).
    """
    if not value:
        return "missing"
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12 or not 8 <= len(parts[1]) <= 32:
        return "malformed"
    ts, nonce, given = parts
    if abs(now - int(ts)) > window:
        return "stale"
    expected = _mac(token, _REQUEST_LABEL, ts.encode(), nonce.encode(), body)
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace")):
        return "wrong"
    return nonce, given


def response_auth(token: str, request_mac: str, status: int, body: bytes) -> str:
    """Return the ``Gossip-Auth`` value of the response to a request whose MAC was ``request_mac``."""
    return _mac(token, _RESPONSE_LABEL, request_mac.encode("ascii"), str(status).encode(), body)


def check_response_auth(token: str, request_mac: str, status: int, body: bytes, value: str) -> bool:
    """True if a response's ``Gossip-Auth`` value proves the token (see :func:`response_auth`)."""
    expected = response_auth(token, request_mac, status, body)
    return hmac.compare_digest(expected.encode("ascii"), value.encode("ascii", "replace"))


class ReplayCache:
    """The nonces of accepted requests, each kept until its time leaves the window.

    Args:
        max_size: nonces held at most; when that many are live, new requests are refused.

    Not thread-safe: the caller holds a lock.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, expires: float, now: float) -> str:
        """Remember ``nonce`` until ``expires``; return ``""``, ``"replayed"`` or ``"full"``."""
        seen = self._seen
        while seen:
            first, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[first]
        if nonce in seen:
            return "replayed"
        if len(seen) >= self.max_size:
            return "full"
        seen[nonce] = expires
        return ""
