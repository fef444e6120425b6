"""The protocol's own messages as immutable records, and their plain (codec-ready) forms.

Membership updates (:class:`Alive`, :class:`Suspect`, :class:`Dead`) travel piggybacked on
probes and acks and in gossip rounds; the other messages drive probing, joining and push/pull.
:func:`to_wire` turns a message into ``(MessageType, plain value)`` made of lists, ints, str and
bytes, which any codec can carry; :func:`from_wire` checks such a value field by field and raises
:class:`~gossip.errors.DecodeError` for anything malformed: nothing else escapes.

Pure data: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Union

import msgpack

from .errors import DecodeError
from .node import PROTOCOL_VERSION, NodeID, NodeState
from .tags import MAX_TAG_LENGTH, MAX_TAGS, NO_TAGS, TAG_PATTERN, check_tag, tags_size
from .wire import MessageType

__all__ = [
    "Alive", "Suspect", "Dead", "Forget", "Update", "MemberState",
    "Ping", "Ack", "PingReq", "Nack", "Gossip", "Join", "JoinReply", "PushPull", "PushPullReply",
    "Message", "to_wire", "from_wire", "update_size", "encode_update", "metadata_size", "EMPTY_META",
    "MAX_INCARNATION", "MAX_STATES", "MAX_UPDATES", "MAX_META_KEY_LENGTH", "MAX_META_STRING",
    "NO_TAGS", "MAX_TAGS", "MAX_TAG_LENGTH", "TAG_PATTERN", "tags_size", "check_tag",
]


class _EmptyMeta(Mapping[str, Any]):
    """An immutable, hashable empty mapping (a safe default)."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


EMPTY_META: Mapping[str, Any] = _EmptyMeta()

class _Record:
    """An immutable record with value equality, the base of every message below.

    Each subclass lists its fields in ``__slots__`` and sets them in ``__init__``; equality,
    hashing and ``repr`` come from here (a frozen dataclass would generate them per class:
    about 13 KiB more per class, and its code generation is most of this module's import time).
    """

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")


_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_I64 = -(1 << 63)

MAX_INCARNATION = _U32
"""The largest incarnation the wire carries (u32). The core never produces a larger one."""
MAX_STATES = 1_048_576
"""Default cap on the member states one push/pull, join or join reply may carry (memberlist's)."""
MAX_UPDATES = 4096
"""Cap on the membership updates one ping, ack or gossip message may carry."""
MAX_META_KEY_LENGTH = 255
"""Longest metadata key accepted from a peer, in characters (as for local writes)."""
MAX_META_STRING = 65536
"""Longest metadata string value accepted at decode, in characters (the core then applies
``Config.max_metadata_size`` to the whole map)."""


class Alive(_Record):
    """``node`` is alive at ``incarnation``, reachable at ``addr``, with this metadata and tags.

    ``tags`` travel with the metadata: both are ordered by ``meta_stamp``.
    """

    __slots__ = ("node", "incarnation", "addr", "meta", "meta_stamp", "pv", "av", "tags")

    node: NodeID
    incarnation: int
    addr: str
    meta: Mapping[str, Any]
    meta_stamp: int
    pv: int
    av: str
    tags: frozenset[str]

    def __init__(
        self,
        node: NodeID,
        incarnation: int,
        addr: str,
        meta: Mapping[str, Any] = EMPTY_META,
        meta_stamp: int = 0,
        pv: int = PROTOCOL_VERSION,
        av: str = "",
        tags: frozenset[str] = NO_TAGS,
    ) -> None:
        init = object.__setattr__
        init(self, "node", node)
        init(self, "incarnation", incarnation)
        init(self, "addr", addr)
        init(self, "meta", meta)
        init(self, "meta_stamp", meta_stamp)
        init(self, "pv", pv)
        init(self, "av", av)
        init(self, "tags", tags)


class Suspect(_Record):
    """``sender`` suspects ``node`` (at ``incarnation``) of having failed."""

    __slots__ = ("node", "incarnation", "sender")

    node: NodeID
    incarnation: int
    sender: NodeID

    def __init__(self, node: NodeID, incarnation: int, sender: NodeID) -> None:
        init = object.__setattr__
        init(self, "node", node)
        init(self, "incarnation", incarnation)
        init(self, "sender", sender)


class Dead(_Record):
    """``sender`` declares ``node`` dead at ``incarnation``; ``sender == node`` means it left."""

    __slots__ = ("node", "incarnation", "sender")

    node: NodeID
    incarnation: int
    sender: NodeID

    def __init__(self, node: NodeID, incarnation: int, sender: NodeID) -> None:
        init = object.__setattr__
        init(self, "node", node)
        init(self, "incarnation", incarnation)
        init(self, "sender", sender)

    @property
    def left(self) -> bool:
        """True when the node announced its own graceful leave."""
        return self.sender == self.node


class Forget(_Record):
    """``sender`` forgets ``node``, dead or left at ``incarnation``: every member drops its record
    at once (an operator's word that the node will not come back).

    A member that holds ``node`` alive or suspect refuses it: a live member is never forgotten.
    """

    __slots__ = ("node", "incarnation", "sender")

    node: NodeID
    incarnation: int
    sender: NodeID

    def __init__(self, node: NodeID, incarnation: int, sender: NodeID) -> None:
        init = object.__setattr__
        init(self, "node", node)
        init(self, "incarnation", incarnation)
        init(self, "sender", sender)


Update = Union[Alive, Suspect, Dead, Forget]


class MemberState(_Record):
    """One member's full state, as exchanged by join and push/pull."""

    __slots__ = ("node", "addr", "state", "incarnation", "meta", "meta_stamp", "pv", "av", "tags")

    node: NodeID
    addr: str
    state: NodeState
    incarnation: int
    meta: Mapping[str, Any]
    meta_stamp: int
    pv: int
    av: str
    tags: frozenset[str]

    def __init__(
        self,
        node: NodeID,
        addr: str,
        state: NodeState,
        incarnation: int,
        meta: Mapping[str, Any] = EMPTY_META,
        meta_stamp: int = 0,
        pv: int = PROTOCOL_VERSION,
        av: str = "",
        tags: frozenset[str] = NO_TAGS,
    ) -> None:
        init = object.__setattr__
        init(self, "node", node)
        init(self, "addr", addr)
        init(self, "state", state)
        init(self, "incarnation", incarnation)
        init(self, "meta", meta)
        init(self, "meta_stamp", meta_stamp)
        init(self, "pv", pv)
        init(self, "av", av)
        init(self, "tags", tags)


class Ping(_Record):
    """Direct probe of ``target``. ``suspect_inc`` >= 0 tells the target it is suspected (buddy)."""

    __slots__ = ("seq", "target", "source_addr", "updates", "suspect_inc")

    seq: int
    target: NodeID
    source_addr: str
    updates: tuple[Update, ...]
    suspect_inc: int

    def __init__(
        self,
        seq: int,
        target: NodeID,
        source_addr: str,
        updates: tuple[Update, ...] = (),
        suspect_inc: int = -1,
    ) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "target", target)
        init(self, "source_addr", source_addr)
        init(self, "updates", updates)
        init(self, "suspect_inc", suspect_inc)


class Ack(_Record):
    """Answer to :class:`Ping` ``seq`` (also relayed by ping-req helpers)."""

    __slots__ = ("seq", "updates")

    seq: int
    updates: tuple[Update, ...]

    def __init__(self, seq: int, updates: tuple[Update, ...] = ()) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "updates", updates)


class PingReq(_Record):
    """Ask a helper to ping ``target`` on our behalf and relay the ack (or a nack).

    ``timeout`` is how long the requester still waits for an answer, in seconds (its probe
    interval minus its ack timeout, both stretched by its health score); the helper sends its
    nack well within it. 0 means unknown (a peer that does not send it): the helper assumes its
    own configuration.
    """

    __slots__ = ("seq", "target", "target_addr", "source_addr", "nack", "timeout")

    seq: int
    target: NodeID
    target_addr: str
    source_addr: str
    nack: bool
    timeout: float

    def __init__(
        self,
        seq: int,
        target: NodeID,
        target_addr: str,
        source_addr: str,
        nack: bool = True,
        timeout: float = 0.0,
    ) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "target", target)
        init(self, "target_addr", target_addr)
        init(self, "source_addr", source_addr)
        init(self, "nack", nack)
        init(self, "timeout", timeout)


class Nack(_Record):
    """A ping-req helper could not reach the target in time (Lifeguard)."""

    __slots__ = ("seq",)

    seq: int

    def __init__(self, seq: int) -> None:
        object.__setattr__(self, "seq", seq)


class Gossip(_Record):
    """A protocol gossip round: a batch of membership updates."""

    __slots__ = ("updates",)

    updates: tuple[Update, ...]

    def __init__(self, updates: tuple[Update, ...]) -> None:
        object.__setattr__(self, "updates", updates)


class Join(_Record):
    """Join request carrying the joiner's own state and versions."""

    __slots__ = ("seq", "source_addr", "states", "pv", "av")

    seq: int
    source_addr: str
    states: tuple[MemberState, ...]
    pv: int
    av: str

    def __init__(
        self,
        seq: int,
        source_addr: str,
        states: tuple[MemberState, ...],
        pv: int = PROTOCOL_VERSION,
        av: str = "",
    ) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "source_addr", source_addr)
        init(self, "states", states)
        init(self, "pv", pv)
        init(self, "av", av)


class JoinReply(_Record):
    """Answer to :class:`Join`: accepted with the full state, or refused with a reason."""

    __slots__ = ("seq", "accepted", "reason", "states")

    seq: int
    accepted: bool
    reason: str
    states: tuple[MemberState, ...]

    def __init__(
        self,
        seq: int,
        accepted: bool,
        reason: str,
        states: tuple[MemberState, ...] = (),
    ) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "accepted", accepted)
        init(self, "reason", reason)
        init(self, "states", states)


class PushPull(_Record):
    """Anti-entropy: our full state; the receiver merges it and answers with its own."""

    __slots__ = ("seq", "source_addr", "states", "join")

    seq: int
    source_addr: str
    states: tuple[MemberState, ...]
    join: bool

    def __init__(
        self,
        seq: int,
        source_addr: str,
        states: tuple[MemberState, ...],
        join: bool = False,
    ) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "source_addr", source_addr)
        init(self, "states", states)
        init(self, "join", join)


class PushPullReply(_Record):
    """Answer to :class:`PushPull` with the responder's full state."""

    __slots__ = ("seq", "states")

    seq: int
    states: tuple[MemberState, ...]

    def __init__(self, seq: int, states: tuple[MemberState, ...]) -> None:
        init = object.__setattr__
        init(self, "seq", seq)
        init(self, "states", states)


Message = Union[Ping, Ack, PingReq, Nack, Gossip, Join, JoinReply, PushPull, PushPullReply]

# -- encoding -------------------------------------------------------------------------------------

_ALIVE, _SUSPECT, _DEAD, _FORGET = 0, 1, 2, 3

# Tags ride as an optional last field of an alive update and of a member state: a member
# without tags is encoded exactly as before tags existed (8 fields), so peers of the same wire
# version that predate tags read it; a member's tags (a 9th field, a sorted list) are read only
# by peers that know them (an older peer refuses that message as malformed: see docs).


def encode_update(u: Update) -> list[Any]:
    """Return the plain list form of a membership update."""
    if type(u) is Alive:
        out = [_ALIVE, u.node.bytes, u.incarnation, u.addr, dict(u.meta), u.meta_stamp, u.pv, u.av]
        if u.tags:
            out.append(sorted(u.tags))
        return out
    if type(u) is Suspect:
        return [_SUSPECT, u.node.bytes, u.incarnation, u.sender.bytes]
    if type(u) is Forget:
        return [_FORGET, u.node.bytes, u.incarnation, u.sender.bytes]
    assert type(u) is Dead
    return [_DEAD, u.node.bytes, u.incarnation, u.sender.bytes]


def _int_size(v: int) -> int:
    """Return the msgpack size of the integer ``v`` (its smallest encoding)."""
    if v >= 0:
        return 1 if v < 0x80 else 2 if v <= 0xFF else 3 if v <= 0xFFFF else 5 if v <= 0xFFFFFFFF else 9
    return 1 if v >= -32 else 2 if v >= -0x80 else 3 if v >= -0x8000 else 5 if v >= -0x80000000 else 9


def _str_size(text: str) -> int:
    """Return the msgpack size of the string ``text``."""
    n = len(text) if text.isascii() else len(text.encode("utf-8"))
    return n + (1 if n < 32 else 2 if n <= 0xFF else 3 if n <= 0xFFFF else 5)


def update_size(u: Update) -> int:
    """Return the encoded size of an update in bytes (msgpack), for packet budgets.

    Counted field by field (the size :func:`encode_update` packs to, without packing it): an
    array header, the kind, 16-byte ids, integers and strings at their msgpack sizes, and the
    metadata map packed (one byte when empty)."""
    kind = type(u)
    if kind is Alive:
        a: Alive = u  # type: ignore[assignment]
        if type(a.incarnation) is int and type(a.meta_stamp) is int and type(a.pv) is int \
                and type(a.addr) is str and type(a.av) is str:
            meta = 1 if not a.meta else len(msgpack.packb(dict(a.meta), use_bin_type=True))
            return (2 + 18 + _int_size(a.incarnation) + _str_size(a.addr) + meta + _int_size(a.meta_stamp)
                    + _int_size(a.pv) + _str_size(a.av))
    elif type(u.incarnation) is int:
        return 2 + 18 + _int_size(u.incarnation) + 18
    return len(msgpack.packb(encode_update(u), use_bin_type=True))


def metadata_size(meta: Mapping[str, Any]) -> int:
    """Return the encoded size of a metadata map in bytes (msgpack), as local writes measure it."""
    if not meta:
        return 1
    return len(msgpack.packb(dict(meta), use_bin_type=True))


def _encode_state(s: MemberState) -> list[Any]:
    out = [s.node.bytes, s.addr, int(s.state), s.incarnation, dict(s.meta), s.meta_stamp, s.pv, s.av]
    if s.tags:
        out.append(sorted(s.tags))
    return out


def to_wire(msg: Message) -> tuple[MessageType, list[Any]]:
    """Return the message type and the plain value a codec encodes."""
    t = type(msg)
    if t is Ping:
        assert isinstance(msg, Ping)
        return MessageType.PING, [msg.seq, msg.target.bytes, msg.source_addr,
                                  [encode_update(u) for u in msg.updates], msg.suspect_inc]
    if t is Ack:
        assert isinstance(msg, Ack)
        return MessageType.ACK, [msg.seq, [encode_update(u) for u in msg.updates]]
    if t is PingReq:
        assert isinstance(msg, PingReq)
        return MessageType.PING_REQ, [msg.seq, msg.target.bytes, msg.target_addr, msg.source_addr, msg.nack,
                                      min(max(0, round(msg.timeout * 1000)), _U32)]
    if t is Nack:
        assert isinstance(msg, Nack)
        return MessageType.NACK, [msg.seq]
    if t is Gossip:
        assert isinstance(msg, Gossip)
        return MessageType.GOSSIP, [[encode_update(u) for u in msg.updates]]
    if t is Join:
        assert isinstance(msg, Join)
        return MessageType.JOIN, [msg.seq, msg.source_addr, [_encode_state(s) for s in msg.states], msg.pv, msg.av]
    if t is JoinReply:
        assert isinstance(msg, JoinReply)
        return MessageType.JOIN_REPLY, [msg.seq, msg.accepted, msg.reason, [_encode_state(s) for s in msg.states]]
    if t is PushPull:
        assert isinstance(msg, PushPull)
        return MessageType.PUSH_PULL, [msg.seq, msg.source_addr, [_encode_state(s) for s in msg.states], msg.join]
    if t is PushPullReply:
        assert isinstance(msg, PushPullReply)
        return MessageType.PUSH_PULL_REPLY, [msg.seq, [_encode_state(s) for s in msg.states]]
    raise TypeError(f"not a protocol message: {msg!r}")


# -- decoding (trusts nothing) ------------------------------------------------------------------


def _brief(value: Any) -> str:
    """Describe a received value for an error message in bounded time, whatever its size.

    A container is named by its type and length, never printed: the repr of a hostile list of
    millions of items would cost far more than decoding it did.
    """
    t = type(value)
    if t is list or t is dict or t is tuple:
        return f"a {t.__name__} of {len(value)} items"
    if t is str or t is bytes:
        text = repr(value[:60])
    elif t is int or t is float or t is bool or value is None:
        text = repr(value)
    else:
        return f"a {t.__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(what: str, value: Any) -> DecodeError:
    return DecodeError(f"bad {what}: {_brief(value)}")


def _list(value: Any, n: int, what: str) -> list[Any]:
    if type(value) is not list or len(value) != n:
        raise _fail(f"{what} (expected a list of {n})", value)
    return value


def _uint(value: Any, what: str, hi: int = _U64) -> int:
    if type(value) is not int or not 0 <= value <= hi:
        raise _fail(what, value)
    return value


def _str(value: Any, what: str, max_len: int = 1024) -> str:
    if type(value) is not str or len(value) > max_len:
        raise _fail(what, value)
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise _fail(what, value)
    return value


def _node(value: Any, what: str) -> NodeID:
    if type(value) is not bytes or len(value) != 16:
        raise _fail(what, value)
    return NodeID(bytes=value)


def _meta(value: Any) -> Mapping[str, Any]:
    """Check a peer's metadata map: the shape local writes produce and nothing else.

    Flat (depth 1), keys non-empty strings of at most :data:`MAX_META_KEY_LENGTH` characters,
    values ``str`` (at most :data:`MAX_META_STRING` characters), ``bool``, ``int`` in the
    int64..uint64 range or finite ``float``. Nested containers, bytes, None and anything else
    are refused: they would break later encodes (a 300-deep map breaks the JSON codec).
    """
    if type(value) is not dict:
        raise _fail("metadata", value)
    for k, v in value.items():
        if type(k) is not str or not 0 < len(k) <= MAX_META_KEY_LENGTH:
            raise _fail("metadata key", k)
        t = type(v)
        if t is str:
            if len(v) > MAX_META_STRING:
                raise _fail(f"metadata value of {k!r} (string too long)", len(v))
        elif t is int:
            if not _I64 <= v <= _U64:
                raise _fail(f"metadata value of {k!r}", v)
        elif t is float:
            if v != v or v in (math.inf, -math.inf):
                raise _fail(f"metadata value of {k!r}", v)
        elif t is not bool:
            raise _fail(f"metadata value of {k!r} (type {t.__name__})", v)
    return value


def _tags(value: Any) -> frozenset[str]:
    """Check a peer's tags: a list of at most :data:`MAX_TAGS` valid tags (:func:`check_tag`)."""
    if type(value) is not list or not 0 < len(value) <= MAX_TAGS:
        raise _fail("tag list", value)
    for t in value:
        if check_tag(t) is not None:
            raise _fail("tag", t)
    return frozenset(value)


def _optional_tags(value: list[Any], n: int, what: str) -> frozenset[str]:
    """Return the tags of a record of ``n`` fields that may carry them as field ``n + 1``."""
    if type(value) is not list or len(value) not in (n, n + 1):
        raise _fail(f"{what} (expected a list of {n} or {n + 1})", value)
    return _tags(value[n]) if len(value) > n else NO_TAGS


def _seq(value: Any) -> int:
    return _uint(value, "seq", _U32)


def _state(value: Any) -> NodeState:
    if type(value) is not int:
        raise _fail("node state", value)
    try:
        return NodeState(value)
    except ValueError:
        raise _fail("node state", value) from None


def decode_update(value: Any) -> Update:
    """Return the update whose plain form is ``value``.

    Raises:
        DecodeError: ``value`` is not a well-formed update.
    """
    if type(value) is not list or not value:
        raise _fail("update", value)
    kind = value[0]
    if kind == _ALIVE and type(kind) is int:
        tags = _optional_tags(value, 8, "alive update")
        return Alive(_node(value[1], "node id"), _uint(value[2], "incarnation", _U32),
                     _str(value[3], "address"), _meta(value[4]), _uint(value[5], "metadata stamp"),
                     _uint(value[6], "protocol version", 0xFFFF), _str(value[7], "application version", 255),
                     tags)
    if kind == _SUSPECT and type(kind) is int:
        _list(value, 4, "suspect update")
        return Suspect(_node(value[1], "node id"), _uint(value[2], "incarnation", _U32), _node(value[3], "sender id"))
    if kind == _DEAD and type(kind) is int:
        _list(value, 4, "dead update")
        return Dead(_node(value[1], "node id"), _uint(value[2], "incarnation", _U32), _node(value[3], "sender id"))
    if kind == _FORGET and type(kind) is int:
        _list(value, 4, "forget update")
        return Forget(_node(value[1], "node id"), _uint(value[2], "incarnation", _U32), _node(value[3], "sender id"))
    raise _fail("update kind", kind)


def _updates(value: Any) -> tuple[Update, ...]:
    if type(value) is not list or len(value) > MAX_UPDATES:
        raise _fail("update list", value)
    return tuple(decode_update(v) for v in value)


def _decode_state(value: Any) -> MemberState:
    tags = _optional_tags(value, 8, "member state")
    v = value
    return MemberState(_node(v[0], "node id"), _str(v[1], "address"), _state(v[2]),
                       _uint(v[3], "incarnation", _U32), _meta(v[4]), _uint(v[5], "metadata stamp"),
                       _uint(v[6], "protocol version", 0xFFFF), _str(v[7], "application version", 255),
                       tags)


def _states(value: Any, max_states: int) -> tuple[MemberState, ...]:
    if type(value) is not list or len(value) > max_states:
        raise _fail(f"state list (at most {max_states} states)", value)
    return tuple(_decode_state(v) for v in value)


def _suspect_inc(value: Any) -> int:
    # -1 means "not a buddy ping"; anything else is an incarnation and fits the wire's u32.
    if type(value) is not int or not -1 <= value <= MAX_INCARNATION:
        raise _fail("suspect incarnation", value)
    return value


def from_wire(msg_type: int, value: Any, max_states: int = MAX_STATES) -> Message:
    """Return the message of type ``msg_type`` whose plain form is ``value``.

    Every field is checked against its wire range: incarnations are u32
    (:data:`MAX_INCARNATION`), a ping's ``suspect_inc`` is -1 or an incarnation, metadata has
    the flat shape of local writes (see :func:`_meta`), lists are bounded (``max_states``
    member states, :data:`MAX_UPDATES` updates). A host that knows its ``Config.max_members``
    may pass a smaller ``max_states`` so that a hostile full-state message is refused before it
    is built.

    Raises:
        DecodeError: unknown type, or a value of the wrong shape or range.
    """
    if msg_type == MessageType.PING:
        v = _list(value, 5, "ping")
        return Ping(_seq(v[0]), _node(v[1], "target id"), _str(v[2], "source address"),
                    _updates(v[3]), _suspect_inc(v[4]))
    if msg_type == MessageType.ACK:
        v = _list(value, 2, "ack")
        return Ack(_seq(v[0]), _updates(v[1]))
    if msg_type == MessageType.PING_REQ:
        # Six fields; five from a peer that does not carry its timeout.
        v = value if type(value) is list and len(value) == 5 else _list(value, 6, "ping-req")
        timeout = _uint(v[5], "ping-req timeout (ms)", _U32) / 1000 if len(v) == 6 else 0.0
        return PingReq(_seq(v[0]), _node(v[1], "target id"), _str(v[2], "target address"),
                       _str(v[3], "source address"), _bool(v[4], "nack flag"), timeout)
    if msg_type == MessageType.NACK:
        v = _list(value, 1, "nack")
        return Nack(_seq(v[0]))
    if msg_type == MessageType.GOSSIP:
        v = _list(value, 1, "gossip")
        return Gossip(_updates(v[0]))
    if msg_type == MessageType.JOIN:
        v = _list(value, 5, "join")
        return Join(_seq(v[0]), _str(v[1], "source address"), _states(v[2], max_states),
                    _uint(v[3], "protocol version", 0xFFFF), _str(v[4], "application version", 255))
    if msg_type == MessageType.JOIN_REPLY:
        v = _list(value, 4, "join reply")
        return JoinReply(_seq(v[0]), _bool(v[1], "accepted flag"), _str(v[2], "reason"), _states(v[3], max_states))
    if msg_type == MessageType.PUSH_PULL:
        v = _list(value, 4, "push/pull")
        return PushPull(_seq(v[0]), _str(v[1], "source address"), _states(v[2], max_states),
                        _bool(v[3], "join flag"))
    if msg_type == MessageType.PUSH_PULL_REPLY:
        v = _list(value, 2, "push/pull reply")
        return PushPullReply(_seq(v[0]), _states(v[1], max_states))
    raise DecodeError(f"unknown protocol message type {msg_type}")
