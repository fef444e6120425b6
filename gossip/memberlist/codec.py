"""memberlist's messages, byte for byte (its ``net.go`` and ``util.go``).

A message is one type byte, then a msgpack body: a map keyed by the Go field names, in the
legacy raw-string family, fields sorted by name as Go's codec writes them (Go's ``[]byte`` and ``string`` both travel as msgpack *raw*; we
encode with ``use_bin_type=False`` and decode with ``raw=True``, names decoded one by one).
Fields marked ``omitempty`` in Go are left out when empty. A user message is its type byte and
the payload; a compound message is ``7 | count u8 | lengths u16... | messages``; a checksummed
one ``12 | CRC32 u32 | message``; a compressed one ``9 | {Algo: 0, Buf: lzw bytes}``.

Decoding trusts nothing: a malformed body raises :class:`~gossip.errors.DecodeError`, field by
field; unknown fields are ignored as Go ignores them. Sizes are bounded: see :data:`MAX_STATES`,
:data:`MAX_USER_MSG`, :data:`MAX_DECOMPRESSED`. Pure data; no I/O.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple, Union

import msgpack

from ..errors import CompressionError, DecodeError, LocalProtocolError, PacketTooLarge
from . import lzw

__all__ = [
    "MsgType", "NodeStateType", "Ping", "IndirectPing", "Ack", "Nack", "Suspect", "Alive", "Dead",
    "PushNodeState", "PushPull", "User", "Err", "Message", "encode", "decode", "compound",
    "split_compound", "with_crc", "compress", "unpack", "StreamReader", "read_stream",
    "MAX_STATES", "MAX_USER_MSG", "MAX_DECOMPRESSED", "MAX_PUSH_STATE", "META_MAX_SIZE",
]


class MsgType(IntEnum):
    """memberlist's message types."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13


class NodeStateType(IntEnum):
    """A member's state in a push/pull."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


META_MAX_SIZE = 512
"""The largest ``Meta`` (memberlist's ``MetaMaxSize``)."""
MAX_PUSH_STATE = 20 * 1024 * 1024
"""The largest push/pull state (memberlist's ``maxPushStateBytes``)."""
MAX_STATES = 1_048_576
"""The most node states one push/pull may announce."""
MAX_USER_MSG = 20 * 1024 * 1024
"""The largest user message over a stream."""
MAX_DECOMPRESSED = 40 * 1024 * 1024
"""The most bytes a compressed message may expand to."""
_MAX_NAME = 512  # bytes of a node name
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class Ping(NamedTuple):
    """``ping``: probe ``node``; answer to ``source`` (addr, port) if given."""

    seq: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


class IndirectPing(NamedTuple):
    """``indirectPingReq``: ping ``node`` at ``target:port`` for the source."""

    seq: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


class Ack(NamedTuple):
    """``ackResp``."""

    seq: int
    payload: bytes = b""


class Nack(NamedTuple):
    """``nackResp``."""

    seq: int


class Suspect(NamedTuple):
    """``suspect``: ``sender`` suspects ``node``."""

    incarnation: int
    node: str
    sender: str


class Alive(NamedTuple):
    """``alive``: ``node`` lives at ``addr:port``; ``vsn`` is its 6 version bytes."""

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes | None  # None: Go's nil slice (msgpack nil); b"": an empty one
    vsn: bytes


class Dead(NamedTuple):
    """``dead``: ``sender`` declares ``node`` dead (``sender == node``: it left)."""

    incarnation: int
    node: str
    sender: str


class PushNodeState(NamedTuple):
    """``pushNodeState``: one member in a push/pull."""

    name: str
    addr: bytes
    port: int
    meta: bytes | None  # None: Go's nil slice
    incarnation: int
    state: int
    vsn: bytes


class PushPull(NamedTuple):
    """A push/pull: its header's ``Join`` flag, the node states and the user state."""

    join: bool
    states: tuple[PushNodeState, ...]
    user_state: bytes = b""


class User(NamedTuple):
    """A user message: opaque bytes."""

    payload: bytes


class Err(NamedTuple):
    """``errResp``: a stream peer's error."""

    error: str


Message = Union[Ping, IndirectPing, Ack, Nack, Suspect, Alive, Dead, PushPull, User, Err]


# -------------------------------------------------------------------------- encode

def _pack(value: dict[str, Any]) -> bytes:
    # Go's codec writes a struct's fields sorted by name: so do we, byte for byte.
    return msgpack.packb(dict(sorted(value.items())), use_bin_type=False)  # type: ignore[no-any-return]


def _source(d: dict[str, Any], addr: bytes, port: int, node: str) -> dict[str, Any]:
    if addr:
        d["SourceAddr"] = addr
    if port:
        d["SourcePort"] = port
    if node:
        d["SourceNode"] = node
    return d


def _state(s: PushNodeState) -> dict[str, Any]:
    return {"Name": s.name, "Addr": s.addr, "Port": s.port, "Meta": s.meta,
            "Incarnation": s.incarnation, "State": s.state, "Vsn": s.vsn}


def encode(msg: Message) -> bytes:
    """Return the wire bytes of one message (type byte + body), as memberlist writes them.

    Raises:
        LocalProtocolError: a field is out of its Go type's range.
    """
    try:
        return _encode(msg)
    except (OverflowError, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from exc


def _encode(msg: Message) -> bytes:
    t = type(msg)
    if t is Ping:
        assert isinstance(msg, Ping)
        body = _source({"SeqNo": msg.seq, "Node": msg.node}, msg.source_addr, msg.source_port,
                       msg.source_node)
        return b"\x00" + _pack(body)
    if t is IndirectPing:
        assert isinstance(msg, IndirectPing)
        body = _source({"SeqNo": msg.seq, "Target": msg.target, "Port": msg.port,
                        "Node": msg.node, "Nack": msg.nack},
                       msg.source_addr, msg.source_port, msg.source_node)
        return b"\x01" + _pack(body)
    if t is Ack:
        assert isinstance(msg, Ack)
        return b"\x02" + _pack({"SeqNo": msg.seq, "Payload": msg.payload or None})
    if t is Nack:
        assert isinstance(msg, Nack)
        return b"\x0b" + _pack({"SeqNo": msg.seq})
    if t is Suspect or t is Dead:
        assert isinstance(msg, (Suspect, Dead))
        kind = b"\x03" if t is Suspect else b"\x05"
        return kind + _pack({"Incarnation": msg.incarnation, "Node": msg.node, "From": msg.sender})
    if t is Alive:
        assert isinstance(msg, Alive)
        return b"\x04" + _pack({"Incarnation": msg.incarnation, "Node": msg.node, "Addr": msg.addr,
                                "Port": msg.port, "Meta": msg.meta, "Vsn": msg.vsn})
    if t is PushPull:
        assert isinstance(msg, PushPull)
        parts = [b"\x06", _pack({"Nodes": len(msg.states), "UserStateLen": len(msg.user_state),
                                 "Join": msg.join})]
        parts += [_pack(_state(s)) for s in msg.states]
        parts.append(msg.user_state)
        return b"".join(parts)
    if t is User:
        assert isinstance(msg, User)
        return b"\x08" + msg.payload
    if t is Err:
        assert isinstance(msg, Err)
        return b"\x0d" + _pack({"Error": msg.error})
    raise TypeError(f"not a memberlist message: {msg!r}")


def user_stream(payload: bytes) -> bytes:
    """A user message as memberlist sends it over a stream: ``8 | {UserMsgLen} | payload``."""
    return b"\x08" + _pack({"UserMsgLen": len(payload)}) + payload


def compound(parts: list[bytes]) -> bytes:
    """Pack up to 255 messages of up to 65535 bytes each into one compound message."""
    if len(parts) > 255:
        raise LocalProtocolError(f"a compound message holds at most 255 parts, got {len(parts)}")
    if any(len(p) > _U16 for p in parts):
        raise LocalProtocolError("a compound part is at most 65535 bytes")
    return (bytes((MsgType.COMPOUND, len(parts))) + struct.pack(f">{len(parts)}H", *map(len, parts))
            + b"".join(parts))


def with_crc(data: bytes) -> bytes:
    """Prefix ``data`` with ``12 | CRC32-IEEE(data)``."""
    return b"\x0c" + struct.pack(">I", zlib.crc32(data)) + data


def compress(data: bytes) -> bytes:
    """Return ``data`` as a compress message (LZW)."""
    return b"\x09" + _pack({"Algo": 0, "Buf": lzw.compress(data)})


# -------------------------------------------------------------------------- decode

class _Body:
    """A decoded msgpack map with its raw keys decoded, read field by field."""

    __slots__ = ("what", "d")

    def __init__(self, what: str, value: Any) -> None:
        if type(value) is not dict:
            raise DecodeError(f"bad {what}: not a map")
        d: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is bytes:
                try:
                    d[k.decode("utf-8")] = v
                except UnicodeDecodeError:
                    continue
            elif type(k) is str:
                d[k] = v
        self.what = what
        self.d = d

    def _bad(self, name: str) -> DecodeError:
        return DecodeError(f"bad {self.what}.{name}")

    def uint(self, name: str, hi: int, default: int | None = 0) -> int:
        v = self.d.get(name)
        if v is None:
            if default is None:
                raise self._bad(name)
            return default
        if type(v) is not int or not 0 <= v <= hi:
            raise self._bad(name)
        return v

    def raw(self, name: str, max_len: int) -> bytes:
        v = self.d.get(name)
        if v is None:
            return b""
        if type(v) is str:
            v = v.encode("utf-8")
        if type(v) is not bytes or len(v) > max_len:
            raise self._bad(name)
        return v

    def raw_or_nil(self, name: str, max_len: int) -> bytes | None:
        return None if self.d.get(name) is None else self.raw(name, max_len)

    def text(self, name: str, max_len: int = _MAX_NAME) -> str:
        try:
            return self.raw(name, max_len).decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad(name) from None

    def flag(self, name: str) -> bool:
        v = self.d.get(name)
        if v is None:
            return False
        if type(v) is not bool:
            raise self._bad(name)
        return v

    def vsn(self, name: str) -> bytes:
        v = self.d.get(name)
        if type(v) is list and len(v) <= 6 and all(type(x) is int and 0 <= x <= 255 for x in v):
            v = bytes(v)
        if v is None:
            v = b""
        if type(v) is not bytes or len(v) not in (0, 6):
            raise self._bad(name)
        return v


def _unpack_one(data: bytes, what: str) -> _Body:
    try:
        value = msgpack.unpackb(data, raw=True, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"bad {what}: {type(exc).__name__}") from None
    return _Body(what, value)


def _ping(b: _Body) -> Ping:
    return Ping(b.uint("SeqNo", _U32), b.text("Node"), b.raw("SourceAddr", 16),
                b.uint("SourcePort", _U16), b.text("SourceNode"))


def _indirect(b: _Body) -> IndirectPing:
    return IndirectPing(b.uint("SeqNo", _U32), b.raw("Target", 16), b.uint("Port", _U16),
                        b.text("Node"), b.flag("Nack"), b.raw("SourceAddr", 16),
                        b.uint("SourcePort", _U16), b.text("SourceNode"))


def _alive(b: _Body) -> Alive:
    return Alive(b.uint("Incarnation", _U32), b.text("Node"), b.raw("Addr", 16),
                 b.uint("Port", _U16), b.raw_or_nil("Meta", META_MAX_SIZE), b.vsn("Vsn"))


def _node_state(b: _Body) -> PushNodeState:
    return PushNodeState(b.text("Name"), b.raw("Addr", 16), b.uint("Port", _U16),
                         b.raw_or_nil("Meta", META_MAX_SIZE), b.uint("Incarnation", _U32),
                         b.uint("State", 255), b.vsn("Vsn"))


_BODIES: dict[int, tuple[str, Callable[[_Body], Message]]] = {
    MsgType.PING: ("ping", _ping),
    MsgType.INDIRECT_PING: ("indirect ping", _indirect),
    MsgType.ACK: ("ack", lambda b: Ack(b.uint("SeqNo", _U32), b.raw("Payload", 65535))),
    MsgType.NACK: ("nack", lambda b: Nack(b.uint("SeqNo", _U32))),
    MsgType.SUSPECT: ("suspect", lambda b: Suspect(b.uint("Incarnation", _U32), b.text("Node"),
                                                   b.text("From"))),
    MsgType.ALIVE: ("alive", _alive),
    MsgType.DEAD: ("dead", lambda b: Dead(b.uint("Incarnation", _U32), b.text("Node"),
                                          b.text("From"))),
    MsgType.ERR: ("err", lambda b: Err(b.text("Error", 65535))),
}


def decode(data: bytes, max_states: int = MAX_STATES) -> Message:
    """Return the one message in ``data`` (type byte + body; not compound, CRC or compressed:
    :func:`unpack` removes those).

    Raises:
        DecodeError: an unknown type or a malformed body.
    """
    if not data:
        raise DecodeError("empty message")
    t = data[0]
    if t == MsgType.USER:
        return User(data[1:])
    if t == MsgType.PUSH_PULL:
        return read_stream(StreamReader(data), max_states=max_states)[0]
    entry = _BODIES.get(t)
    if entry is None:
        raise DecodeError(f"unknown memberlist message type {t}")
    what, build = entry
    return build(_unpack_one(data[1:], what))


def split_compound(data: bytes) -> list[bytes]:
    """Return the parts of a compound message's body (after the type byte); a truncated last
    part is dropped, as memberlist drops it.

    Raises:
        DecodeError: the count or the lengths are truncated.
    """
    if not data:
        raise DecodeError("missing compound length byte")
    n = data[0]
    if len(data) < 1 + 2 * n:
        raise DecodeError("truncated compound length slice")
    lengths = struct.unpack_from(f">{n}H", data, 1)
    pos = 1 + 2 * n
    parts = []
    for size in lengths:
        if pos + size > len(data):
            break
        parts.append(data[pos:pos + size])
        pos += size
    return parts


def _decompress_body(body: bytes, limit: int) -> bytes:
    b = _unpack_one(body, "compress")
    algo = b.uint("Algo", 255)
    if algo != 0:
        raise CompressionError(f"cannot decompress unknown algorithm {algo}")
    return lzw.decompress(b.raw("Buf", limit), limit)


def unpack(data: bytes, limit: int = MAX_DECOMPRESSED, depth: int = 0) -> list[bytes]:
    """Return the messages a (decrypted, unlabelled) datagram carries: CRC checked, compressed
    messages expanded (to at most ``limit`` bytes), compound messages split.

    Raises:
        DecodeError: a bad CRC, a malformed compound or compress message, nesting deeper than 4.
    """
    if depth > 4:
        raise DecodeError("messages nested too deep")
    if not data:
        raise DecodeError("empty packet")
    t = data[0]
    if t == MsgType.HAS_CRC:
        if len(data) < 5:
            raise DecodeError("truncated CRC header")
        if zlib.crc32(data[5:]) != struct.unpack_from(">I", data, 1)[0]:
            raise DecodeError("CRC mismatch")
        return unpack(data[5:], limit, depth + 1)
    if t == MsgType.COMPRESS:
        return unpack(_decompress_body(data[1:], limit), limit, depth + 1)
    if t == MsgType.COMPOUND:
        out: list[bytes] = []
        for part in split_compound(data[1:]):
            out.extend(unpack(part, limit, depth + 1))
        return out
    return [data]


# -------------------------------------------------------------------------- streams

class StreamReader:
    """Reads a stream message from bytes already received, or from ``more(n)``, a callable
    that returns up to ``n`` further bytes (``b""`` at the end).

    Raises:
        DecodeError: the stream ends early, or the message is larger than ``limit``.
    """

    def __init__(self, data: bytes = b"", more: Callable[[int], bytes] | None = None,
                 limit: int = MAX_PUSH_STATE + 1024) -> None:
        self._buf = bytearray(data)
        self._pos = 0
        self._more = more
        self._limit = limit
        self._taken = 0

    def _fill(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            if self._more is None:
                raise DecodeError("the stream ends early")
            chunk = self._more(max(n - (len(self._buf) - self._pos), 65536))
            if not chunk:
                raise DecodeError("the stream ends early")
            self._buf += chunk
            if len(self._buf) > self._limit:
                raise PacketTooLarge(f"stream message over {self._limit} bytes")

    def read(self, n: int) -> bytes:
        """Return exactly ``n`` bytes."""
        self._fill(n)
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def unpack(self, what: str) -> _Body:
        """Return the next msgpack value (a map) of the stream."""
        while True:
            unpacker = msgpack.Unpacker(raw=True, strict_map_key=False,
                                        max_buffer_size=self._limit)
            unpacker.feed(bytes(self._buf[self._pos:]))
            try:
                value = unpacker.unpack()
            except msgpack.OutOfData:
                self._fill(len(self._buf) - self._pos + 1)
                continue
            except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
                raise DecodeError(f"bad {what}: {type(exc).__name__}") from None
            self._pos += unpacker.tell()
            return _Body(what, value)

    def unread(self, n: int) -> None:
        """Step back ``n`` bytes just read."""
        self._pos = max(0, self._pos - n)

    def rest(self) -> bytes:
        """Return the bytes received but not read yet."""
        return bytes(self._buf[self._pos:])


def read_stream(r: StreamReader, max_states: int = MAX_STATES,
                limit: int = MAX_DECOMPRESSED) -> tuple[Message, int]:
    """Read one plain stream message (after any label and decryption): push/pull, ping, ack,
    user message (``8 | {UserMsgLen} | payload``) or err, possibly compressed. Returns the
    message and its type.

    Raises:
        DecodeError: malformed, over its bounds, or a type a stream does not carry.
    """
    t = r.read(1)[0]
    if t == MsgType.COMPRESS:
        plain = _decompress_body_stream(r, limit)
        return read_stream(StreamReader(plain, limit=limit), max_states, limit)
    if t == MsgType.PUSH_PULL:
        h = r.unpack("push/pull header")
        n = h.uint("Nodes", max_states)
        user_len = h.uint("UserStateLen", MAX_PUSH_STATE)
        join = h.flag("Join")
        states = tuple(_node_state(r.unpack("push node state")) for _ in range(n))
        return PushPull(join, states, r.read(user_len) if user_len else b""), t
    if t == MsgType.USER:
        h = r.unpack("user message header")
        return User(r.read(h.uint("UserMsgLen", MAX_USER_MSG))), t
    entry = _BODIES.get(t)
    if entry is None or t in (MsgType.SUSPECT, MsgType.ALIVE, MsgType.DEAD):
        raise DecodeError(f"memberlist message type {t} does not travel on a stream")
    what, build = entry
    return build(r.unpack(what)), t


def _decompress_body_stream(r: StreamReader, limit: int) -> bytes:
    b = r.unpack("compress")
    algo = b.uint("Algo", 255)
    if algo != 0:
        raise CompressionError(f"cannot decompress unknown algorithm {algo}")
    return lzw.decompress(b.raw("Buf", MAX_PUSH_STATE), limit)
