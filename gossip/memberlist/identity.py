"""Names, addresses, versions and metadata on memberlist's wire.

**Names and ids.** memberlist names a member by a unique string; the protocol core by a
16-byte :class:`~gossip.node.NodeID`. The rule, for a name ``n``:

* if ``n`` is the canonical text of a UUID, its id is that UUID (our own nodes, named by
  their id, round-trip);
* otherwise its id is the first 16 bytes of ``SHA-256("gossip/memberlist-name/" + n)``,
  stamped as a UUID of version 8.

A :class:`NameTable` holds the names it met and refuses a second name that lands on an id
already taken (:class:`~gossip.errors.DecodeError`, counted by the receive path), so within a
node the mapping is injective by construction, never "almost surely".

**Versions.** memberlist's ``Vsn`` is 6 bytes: protocol min, max, current; delegate min,
max, current. We speak protocols 2 to 5 (:data:`PROTOCOL_MIN`, :data:`PROTOCOL_MAX`); a peer
whose range does not overlap ours is refused.

**Metadata.** ``Meta`` is at most 512 opaque bytes. A node's typed metadata travels in it as a
msgpack map of strings to scalars; Serf's tags as ``0xFF`` then a msgpack map of strings to
strings. Any other ``Meta`` (a Go program's own bytes) reaches the user base64-encoded under
the key :data:`OPAQUE_META_KEY` (:func:`opaque_meta` gives the bytes back).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import msgpack

from ..address import format_host_port
from ..errors import DecodeError, LocalProtocolError
from ..node import NodeID
from .codec import META_MAX_SIZE

__all__ = ["NameTable", "name_to_id", "PROTOCOL_MIN", "PROTOCOL_MAX", "PROTOCOL_CUR", "our_vsn",
           "compatible", "encode_meta", "decode_meta", "OPAQUE_META_KEY", "opaque_meta",
           "SERF_MAGIC", "split_addr", "join_addr"]

PROTOCOL_MIN = 2
"""The oldest memberlist protocol version we speak."""
PROTOCOL_MAX = 5
"""The newest memberlist protocol version we speak."""
PROTOCOL_CUR = 2
"""The version we announce as current (memberlist's default, ``ProtocolVersion2Compatible``)."""
SERF_MAGIC = 0xFF
"""The first byte of Serf's tags in ``Meta``."""
OPAQUE_META_KEY = "memberlist.meta"
"""The metadata key of a peer's opaque ``Meta`` (base64)."""
_SALT = b"gossip/memberlist-name/"
_MAX_NAMES = 1 << 20


def name_to_id(name: str) -> NodeID:
    """Return the id of the member named ``name`` (see the module docstring)."""
    try:
        u = uuid.UUID(name)
        if str(u) == name:
            return NodeID(int=u.int)
    except ValueError:
        pass
    h = bytearray(hashlib.sha256(_SALT + name.encode("utf-8")).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x80  # version 8
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    return NodeID(bytes=bytes(h))


class NameTable:
    """The names met on the wire and their ids, both ways; thread-safe.

    Raises (from :meth:`id_of`):
        DecodeError: a new name whose id is already another name's, or the table is full.
    """

    def __init__(self, own_name: str, max_names: int = _MAX_NAMES) -> None:
        self._by_id: dict[bytes, str] = {}
        self._by_name: dict[str, NodeID] = {}
        self._max = max_names
        self._lock = threading.Lock()
        self.own_id = self.id_of(own_name)
        self.own_name = own_name

    def id_of(self, name: str) -> NodeID:
        """Return the id of ``name``, remembering the pair."""
        nid = self._by_name.get(name)
        if nid is not None:
            return nid
        nid = name_to_id(name)
        with self._lock:
            other = self._by_id.get(nid.bytes)
            if other is not None and other != name:
                raise DecodeError(f"member name {name!r} maps to the id of {other!r}: refused")
            if len(self._by_name) >= self._max:
                raise DecodeError("too many member names")
            self._by_id[nid.bytes] = name
            self._by_name[name] = nid
        return nid

    def name_of(self, node: NodeID | bytes) -> str:
        """Return the name of ``node`` (its UUID text if it was never named)."""
        key = node if isinstance(node, bytes) else node.bytes
        name = self._by_id.get(key)
        if name is not None:
            return name
        return str(NodeID(bytes=key))

    def __len__(self) -> int:
        return len(self._by_name)


def our_vsn(serf: bool) -> bytes:
    """The 6 version bytes we announce (Serf's delegate range 2..5, current 4, with Serf)."""
    delegate = (2, 5, 4) if serf else (0, 0, 0)
    return bytes((PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CUR) + delegate)


def compatible(vsn: bytes) -> bool:
    """True if a peer announcing ``vsn`` speaks a protocol version we speak."""
    if len(vsn) != 6:
        return False
    pmin, pmax = vsn[0], vsn[1]
    return pmin <= PROTOCOL_MAX and pmax >= PROTOCOL_MIN and pmin <= pmax


def split_addr(addr: str) -> tuple[bytes, int]:
    """Return the packed IP and the port of ``ip:port`` / ``[v6]:port``.

    Raises:
        LocalProtocolError: not an IP literal with a port.
    """
    host, _, port = addr.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        p = int(port)
    except ValueError as exc:
        raise LocalProtocolError(f"not an ip:port address: {addr!r}") from exc
    if not 0 < p <= 0xFFFF:
        raise LocalProtocolError(f"bad port in {addr!r}")
    return ip.packed, p


def join_addr(ip: bytes, port: int) -> str:
    """Return ``ip:port`` for a packed IP of 4 or 16 bytes.

    Raises:
        DecodeError: the IP has another length or the port is 0.
    """
    if len(ip) not in (4, 16) or not port:
        raise DecodeError(f"bad member address ({len(ip)}-byte IP, port {port})")
    host = str(ipaddress.ip_address(ip))
    return format_host_port(host, port)


def encode_meta(meta: Mapping[str, Any], serf: bool) -> bytes:
    """Return ``Meta`` for a node's metadata (at most 512 bytes).

    Raises:
        LocalProtocolError: the encoding is over 512 bytes, or Serf tags are not strings.
    """
    if not meta:
        return b"\xff\x80" if serf else b""
    if OPAQUE_META_KEY in meta and len(meta) == 1:
        return opaque_meta(meta)
    if serf:
        tags = {str(k): v if isinstance(v, str) else str(v) for k, v in meta.items()}
        out = b"\xff" + msgpack.packb(tags, use_bin_type=False)
    else:
        out = msgpack.packb(dict(meta), use_bin_type=False)
    if len(out) > META_MAX_SIZE:
        raise LocalProtocolError(f"metadata encodes to {len(out)} bytes; memberlist's Meta holds "
                                 f"at most {META_MAX_SIZE}")
    return out  # type: ignore[no-any-return]


def _scalar(v: Any) -> Any:
    if type(v) is bytes:
        return v.decode("utf-8")
    if type(v) is float and not math.isfinite(v):
        raise ValueError("not finite")
    if type(v) in (str, int, bool, float):
        return v
    raise ValueError("not a scalar")


def decode_meta(meta: bytes) -> dict[str, Any]:
    """Return the metadata a peer's ``Meta`` carries (see the module docstring)."""
    if not meta:
        return {}
    try:
        body = meta[1:] if meta[0] == SERF_MAGIC else meta
        value = msgpack.unpackb(body, raw=True, strict_map_key=False)
        if type(value) is dict:
            out = {}
            for k, v in value.items():
                key = k.decode("utf-8") if type(k) is bytes else k
                if type(key) is not str or not key:
                    raise ValueError("bad key")
                out[key] = _scalar(v)
            return out
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            UnicodeDecodeError):
        pass
    return {OPAQUE_META_KEY: base64.b64encode(meta).decode("ascii")}


def opaque_meta(meta: Mapping[str, Any]) -> bytes:
    """Return the opaque ``Meta`` bytes a peer sent (empty when its metadata was decoded)."""
    value = meta.get(OPAQUE_META_KEY)
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""
