"""Multicast announcements: what a node sends to say "I am here, join me", and their checks.

Layout (network byte order)::

    magic "GSPA" (4) | version (1) | flags (1) | tag (8) | node id (16) | sent at, ms (8)
    | label length (1) | label (UTF-8) | address length (1) | address (UTF-8)
    | MAC (16, when flag KEYED)

* The **tag** says which cluster the sender belongs to: a keyed BLAKE2s of the cluster label
  under the cluster's key (or, without a key, a plain BLAKE2s of the label). A receiver that
  holds none of the keys the tag was made with cannot match it; nothing in the announcement
  reveals the key.
* With a key, the whole announcement is **authenticated**: a keyed BLAKE2s MAC (a key of its
  own, derived from the cluster key) over every byte before it. A stranger cannot make a keyed
  node join an address of its choosing, and an announcement older than ``max_age`` (or from
  further in the future) is refused, so a recorded one cannot be replayed for long.
* Without a key, nothing is authenticated: the receiver only joins the address an announcement
  names if its host is the one the datagram came from (:class:`gossip.engine.discovery`).

:func:`decode` refuses with :class:`AnnouncementRefused`, whose ``reason`` is one short word
(``malformed``, ``version``, ``label``, ``cluster``, ``unauthenticated``, ``stale``), counted by
the receiver.

This module imports only :mod:`gossip.errors` and the standard library.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

from .errors import DecodeError

try:  # blake2s without hashlib, which loads OpenSSL for nothing here
    from _blake2 import blake2s as _blake2s
except ImportError:  # pragma: no cover - every CPython build has _blake2
    from hashlib import blake2s as _blake2s

__all__ = ["Announcement", "AnnouncementRefused", "encode", "decode", "cluster_tag", "MAX_SIZE"]

MAGIC = b"GSPA"
VERSION = 1
KEYED = 0x01
MAC_SIZE = 16
TAG_SIZE = 8
_HEAD = struct.Struct("!4sBB8s16sQ")
MAX_SIZE = _HEAD.size + 1 + 255 + 1 + 255 + MAC_SIZE
"""The largest announcement: longer datagrams are refused unread."""


class AnnouncementRefused(DecodeError):
    """An announcement was refused; :attr:`reason` says why in one word."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"announcement refused ({reason}): {detail}")


@dataclasses.dataclass(frozen=True)
class Announcement:
    """A decoded announcement.

    Attributes:
        node: the sender's node id (16 bytes).
        addr: the address it asks to be joined at.
        sent_at: when it was sent (the sender's wall clock, seconds).
        keyed: True if it was authenticated with a cluster key.
    """

    node: bytes
    addr: str
    sent_at: float
    keyed: bool


def cluster_tag(label: str, key: bytes | None) -> bytes:
    """Return the 8-byte tag of a cluster: its label, under its key if it has one."""
    data = label.encode("utf-8")
    if key:
        return _blake2s(data, digest_size=TAG_SIZE, key=key, person=b"gsp-tag").digest()
    return _blake2s(data, digest_size=TAG_SIZE, person=b"gsp-tag").digest()


def _mac(key: bytes, body: bytes) -> bytes:
    mac_key = _blake2s(key, person=b"gsp-mkey").digest()  # never the cluster key itself
    return _blake2s(body, digest_size=MAC_SIZE, key=mac_key, person=b"gsp-mac").digest()


def encode(node: bytes, addr: str, sent_at: float, label: str, key: bytes | None) -> bytes:
    """Return the announcement of ``node`` at ``addr`` (authenticated if ``key`` is given).

    Raises:
        ValueError: the address or label is longer than 255 bytes, or the id not 16 bytes.
    """
    a, lab = addr.encode("utf-8"), label.encode("utf-8")
    if len(a) > 255 or len(lab) > 255 or len(node) != 16:
        raise ValueError("announcement: address and label must be at most 255 bytes, id 16")
    flags = KEYED if key else 0
    body = (_HEAD.pack(MAGIC, VERSION, flags, cluster_tag(label, key), node,
                       max(0, int(sent_at * 1000)))
            + bytes([len(lab)]) + lab + bytes([len(a)]) + a)
    return body + _mac(key, body) if key else body


def decode(data: bytes, label: str, keys: Sequence[bytes], now: float, max_age: float) -> Announcement:
    """Check and decode an announcement for a node of cluster ``label`` holding ``keys``.

    A node with keys accepts only announcements authenticated under one of them; a node
    without accepts only unkeyed ones of its label.

    Raises:
        AnnouncementRefused: malformed, another version, another label or cluster, not
            authentic, or sent more than ``max_age`` seconds from ``now``.
    """
    if len(data) < _HEAD.size + 2 or len(data) > MAX_SIZE:
        raise AnnouncementRefused("malformed", f"{len(data)} bytes")
    magic, version, flags, tag, node, sent_ms = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise AnnouncementRefused("malformed", "not an announcement")
    if version != VERSION:
        raise AnnouncementRefused("version", f"version {version}")
    i = _HEAD.size
    n = data[i]
    lab = data[i + 1:i + 1 + n]
    i += 1 + n
    if i >= len(data):
        raise AnnouncementRefused("malformed", "truncated")
    n = data[i]
    raw_addr = data[i + 1:i + 1 + n]
    end = i + 1 + n
    keyed = bool(flags & KEYED)
    if len(raw_addr) != n or len(data) != end + (MAC_SIZE if keyed else 0):
        raise AnnouncementRefused("malformed", "truncated or trailing bytes")
    try:
        their_label, addr = lab.decode("utf-8"), raw_addr.decode("utf-8")
    except UnicodeDecodeError:
        raise AnnouncementRefused("malformed", "not UTF-8") from None
    if their_label != label:
        raise AnnouncementRefused("label", f"label {their_label!r}")
    if keys:
        if not keyed:
            raise AnnouncementRefused("unauthenticated", "not authenticated, and this cluster has a key")
        body, mac = data[:end], data[end:]
        for key in keys:
            if tag == cluster_tag(label, key):
                if _mac(key, body) != mac:
                    raise AnnouncementRefused("unauthenticated", "bad MAC")
                break
        else:
            raise AnnouncementRefused("cluster", "made under a key this node does not hold")
    elif keyed or tag != cluster_tag(label, None):
        raise AnnouncementRefused("cluster", "from a cluster with a key")
    sent_at = sent_ms / 1000.0
    if abs(now - sent_at) > max_age:
        raise AnnouncementRefused("stale", f"sent {now - sent_at:.0f}s ago")
    if not addr:
        raise AnnouncementRefused("malformed", "no address")
    return Announcement(node, addr, sent_at, keyed)
