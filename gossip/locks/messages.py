"""What the lock service's nodes send each other, and how it is checked on arrival.

Pure data: fencing tokens, ballots, replicated records and the messages of the three roles
(client, leader, replica), each with a codec-friendly form (a mapping of short keys; node ids
as 32 hex digits, never bytes, so the JSON codec carries them too). :func:`decode_message`
trusts nothing: every field is type- and range-checked and bounded, and anything else raises
``ValueError`` (the host counts and drops it).

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Union

from ..node import NodeID

__all__ = [
    "FencingToken",
    "Ballot",
    "ZERO_BALLOT",
    "ZERO_TOKEN",
    "Record",
    "Acquire",
    "Renew",
    "Release",
    "Query",
    "Reply",
    "Wake",
    "Prepare",
    "Promise",
    "Accept",
    "Accepted",
    "Reject",
    "Message",
    "STATUSES",
    "MAX_NAME_LENGTH",
    "MAX_TTL",
    "MAX_RECORDS",
    "MAX_INT",
    "encode_message",
    "decode_message",
]

MAX_NAME_LENGTH = 256
"""The longest lock name, in characters (names are non-empty strings)."""

MAX_TTL = 86400.0
"""The longest lease any message may carry, in seconds (``LockConfig.max_ttl`` is the policy)."""

MAX_RECORDS = 65536
"""The most records (or sequence numbers) one message may carry."""

MAX_INT = (1 << 63) - 1
"""The largest term, counter, round, sequence or request number a message carries."""

_HEX_ID = re.compile(r"[0-9a-f]{32}")


class FencingToken(NamedTuple):
    """The fencing token of one lease: ``(term, counter)``, compared as a tuple.

    Every grant of a lock gets a token greater than every token granted before for that lock,
    under any leader. Pass it with every write the lease protects; the storage remembers the
    highest token it has seen and refuses writes that carry a lower one, so a holder that
    paused past its lease (a GC pause, a partition) cannot overwrite the work of the holder
    that came after it.
    """

    term: int
    counter: int

    def __str__(self) -> str:
        return f"{self.term}.{self.counter}"


class Ballot(NamedTuple):
    """A leader's claim on the replicas: ``(term, round, node)``, unique per leader.

    ``term`` is the election term the leader won, ``round`` separates its attempts within one
    term, and ``node`` (the leader's id in hex) breaks ties between two leaders of one term.
    """

    term: int
    round: int
    node: str


ZERO_BALLOT = Ballot(0, 0, "")
"""Below every real ballot."""

ZERO_TOKEN = FencingToken(0, 0)
"""Below every real token."""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """The replicated state of one lock name.

    Attributes:
        name: the lock's name.
        token: the fencing token of its last grant.
        holder: who the lease was granted to (None once released).
        ttl: the lease's length in seconds (how long a new leader waits it out).
        released: the lease ended (released, or expired at the leader that wrote this).
        ballot: the ballot of the leader that wrote this version.
        seq: that leader's write number; ``(ballot, seq)`` orders the versions of a name.
    """

    name: str
    token: FencingToken
    holder: NodeID | None
    ttl: float
    released: bool
    ballot: Ballot
    seq: int

    @property
    def version(self) -> tuple[Ballot, int]:
        """``(ballot, seq)``: the newer version of a name has the larger one."""
        return (self.ballot, self.seq)


# ---------------------------------------------------------------------- client -> leader

@dataclasses.dataclass(frozen=True, slots=True)
class Acquire:
    """Ask the leader for a lease on ``name`` for ``ttl`` seconds (request number ``req``).

    ``first`` is the first request number of this acquisition (it is sent again under new
    numbers until answered): a lease the sender already holds from one of these requests is
    the one it asks for; a lease from an earlier acquisition is over (the sender moved on).
    """

    req: int
    name: str
    ttl: float
    first: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Renew:
    """Ask the leader to extend the lease ``token`` on ``name`` to ``ttl`` seconds from now."""

    req: int
    name: str
    token: FencingToken
    ttl: float


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """End a lease on ``name``: the one of ``token`` granted by request ``last`` (not a later
    acquire of the same lease); or, with no token, whatever the sender was granted by its
    requests ``first`` to ``last`` (an acquire given up on)."""

    req: int
    name: str
    token: FencingToken | None = None
    first: int = 0
    last: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """Ask the leader who holds ``name``."""

    req: int
    name: str


STATUSES = frozenset({"granted", "renewed", "released", "busy", "lost", "retry", "not_leader", "holder",
                      "refused"})
"""What a :class:`Reply` may say."""


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """The leader's answer to request ``req``.

    ``status`` is one of :data:`STATUSES`: ``granted``/``renewed`` (with ``token`` and
    ``ttl``), ``released``, ``busy`` (held by another; try again within ``retry`` s),
    ``lost`` (the lease is over), ``retry`` (the leader is not ready), ``not_leader``
    (``leader`` names the one to ask, if known), ``holder`` (``holder``, ``token`` and the
    ``ttl`` left, or no holder) or ``refused`` (``reason``).
    """

    req: int
    status: str
    token: FencingToken | None = None
    ttl: float = 0.0
    holder: NodeID | None = None
    retry: float = 0.0
    leader: NodeID | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Wake:
    """The lock ``name`` the receiver waits for is free: ask again now."""

    name: str


# ---------------------------------------------------------------------- leader <-> replicas

@dataclasses.dataclass(frozen=True, slots=True)
class Prepare:
    """A new leader asks the replicas to follow ``ballot`` and to send what they hold."""

    ballot: Ballot


@dataclasses.dataclass(frozen=True, slots=True)
class Promise:
    """A replica follows ``ballot`` from now on; here is every record it holds and the highest
    token it ever accepted."""

    ballot: Ballot
    high: FencingToken
    records: tuple[Record, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Accept:
    """The leader of ``ballot`` asks the replicas to store these records."""

    ballot: Ballot
    records: tuple[Record, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """A replica stored the writes ``seqs`` of ``ballot``."""

    ballot: Ballot
    seqs: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    """A replica refuses ``ballot``: it follows ``promised``, a higher one."""

    ballot: Ballot
    promised: Ballot


Message = Union[Acquire, Renew, Release, Query, Reply, Wake, Prepare, Promise, Accept, Accepted, Reject]
"""Everything lock nodes send each other."""


# ---------------------------------------------------------------------- encoding

def _ballot(b: Ballot) -> list[Any]:
    return [b.term, b.round, b.node]


def _token(t: FencingToken) -> list[int]:
    return [t.term, t.counter]


def _record(r: Record) -> list[Any]:
    return [r.name, _token(r.token), r.holder.hex if r.holder is not None else "", r.ttl, r.released,
            _ballot(r.ballot), r.seq]


def encode_message(msg: Message) -> dict[str, Any]:
    """Return ``msg`` as a codec-friendly mapping (see :func:`decode_message`)."""
    if isinstance(msg, Acquire):
        return {"k": "acq", "q": msg.req, "n": msg.name, "t": msg.ttl, "a": msg.first}
    if isinstance(msg, Renew):
        return {"k": "ren", "q": msg.req, "n": msg.name, "f": _token(msg.token), "t": msg.ttl}
    if isinstance(msg, Release):
        out: dict[str, Any] = {"k": "rel", "q": msg.req, "n": msg.name}
        if msg.token is not None:
            out["f"] = _token(msg.token)
        out["a"], out["b"] = msg.first, msg.last
        return out
    if isinstance(msg, Query):
        return {"k": "who", "q": msg.req, "n": msg.name}
    if isinstance(msg, Reply):
        out = {"k": "rep", "q": msg.req, "s": msg.status}
        if msg.token is not None:
            out["f"] = _token(msg.token)
        if msg.ttl:
            out["t"] = msg.ttl
        if msg.holder is not None:
            out["h"] = msg.holder.hex
        if msg.retry:
            out["r"] = msg.retry
        if msg.leader is not None:
            out["l"] = msg.leader.hex
        if msg.reason:
            out["why"] = msg.reason
        return out
    if isinstance(msg, Wake):
        return {"k": "wake", "n": msg.name}
    if isinstance(msg, Prepare):
        return {"k": "prep", "b": _ballot(msg.ballot)}
    if isinstance(msg, Promise):
        return {"k": "prom", "b": _ballot(msg.ballot), "hi": _token(msg.high),
                "rs": [_record(r) for r in msg.records]}
    if isinstance(msg, Accept):
        return {"k": "acc", "b": _ballot(msg.ballot), "rs": [_record(r) for r in msg.records]}
    if isinstance(msg, Accepted):
        return {"k": "ok", "b": _ballot(msg.ballot), "ss": list(msg.seqs)}
    return {"k": "rej", "b": _ballot(msg.ballot), "p": _ballot(msg.promised)}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ValueError(f"lock message {what} must be an int in 0..2**63-1, got {value!r:.40}")
    return value


def _seconds(value: Any, what: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"lock message {what} must be a finite number, got {value!r:.40}")
    if not (0 < value if positive else 0 <= value) or value > MAX_TTL:
        raise ValueError(f"lock message {what} must be in {'(0' if positive else '[0'}, {MAX_TTL:g}], "
                         f"got {value!r}")
    return float(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"lock name must be a string of 1..{MAX_NAME_LENGTH} characters, got {value!r:.60}")
    return value


def _node(value: Any, what: str) -> NodeID:
    if not isinstance(value, str) or not _HEX_ID.fullmatch(value):
        raise ValueError(f"lock message {what} must be 32 lowercase hex digits, got {value!r:.60}")
    return NodeID(hex=value)


def _seq(value: Any, what: str, n: int) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"lock message {what} must be a list of {n}, got {value!r:.60}")
    return value


def _decode_token(value: Any) -> FencingToken:
    v = _seq(value, "token", 2)
    return FencingToken(_int(v[0], "token term"), _int(v[1], "token counter"))


def _decode_ballot(value: Any) -> Ballot:
    v = _seq(value, "ballot", 3)
    node = v[2]
    if node != "" and (not isinstance(node, str) or not _HEX_ID.fullmatch(node)):
        raise ValueError(f"ballot node must be 32 lowercase hex digits, got {node!r:.60}")
    return Ballot(_int(v[0], "ballot term"), _int(v[1], "ballot round"), node)


def _decode_record(value: Any) -> Record:
    v = _seq(value, "record", 7)
    holder = None if v[2] == "" else _node(v[2], "record holder")
    released = v[4]
    if not isinstance(released, bool):
        raise ValueError(f"record released must be a bool, got {released!r:.20}")
    return Record(_name(v[0]), _decode_token(v[1]), holder, _seconds(v[3], "record ttl"), released,
                  _decode_ballot(v[5]), _int(v[6], "record seq"))


def _records(value: Any) -> tuple[Record, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_RECORDS:
        raise ValueError(f"lock message records must be a list of at most {MAX_RECORDS}")
    return tuple(_decode_record(r) for r in value)


def decode_message(value: Any) -> Message:
    """Rebuild a message from :func:`encode_message`'s mapping.

    Raises:
        ValueError: ``value`` is not a well-formed lock message (the text says what is wrong).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"a lock message is a mapping, got {type(value).__name__}")
    kind = value.get("k")
    if kind == "acq":
        return Acquire(_int(value.get("q"), "req"), _name(value.get("n")), _seconds(value.get("t"), "ttl"),
                       _int(value.get("a", 0), "first"))
    if kind == "ren":
        return Renew(_int(value.get("q"), "req"), _name(value.get("n")), _decode_token(value.get("f")),
                     _seconds(value.get("t"), "ttl"))
    if kind == "rel":
        token = value.get("f")
        return Release(_int(value.get("q"), "req"), _name(value.get("n")),
                       None if token is None else _decode_token(token),
                       _int(value.get("a", 0), "first"), _int(value.get("b", 0), "last"))
    if kind == "who":
        return Query(_int(value.get("q"), "req"), _name(value.get("n")))
    if kind == "rep":
        status = value.get("s")
        if status not in STATUSES:
            raise ValueError(f"lock reply status must be one of {sorted(STATUSES)}, got {status!r:.40}")
        token = value.get("f")
        holder, leader, reason = value.get("h"), value.get("l"), value.get("why", "")
        if not isinstance(reason, str) or len(reason) > 200:
            raise ValueError("lock reply reason must be a string of at most 200 characters")
        return Reply(_int(value.get("q"), "req"), status, None if token is None else _decode_token(token),
                     _seconds(value.get("t", 0.0), "ttl", positive=False),
                     None if holder is None else _node(holder, "holder"),
                     _seconds(value.get("r", 0.0), "retry", positive=False),
                     None if leader is None else _node(leader, "leader"), reason)
    if kind == "wake":
        return Wake(_name(value.get("n")))
    if kind == "prep":
        return Prepare(_decode_ballot(value.get("b")))
    if kind == "prom":
        return Promise(_decode_ballot(value.get("b")), _decode_token(value.get("hi")), _records(value.get("rs")))
    if kind == "acc":
        return Accept(_decode_ballot(value.get("b")), _records(value.get("rs")))
    if kind == "ok":
        seqs = value.get("ss")
        if not isinstance(seqs, (list, tuple)) or len(seqs) > MAX_RECORDS:
            raise ValueError(f"accepted seqs must be a list of at most {MAX_RECORDS}")
        return Accepted(_decode_ballot(value.get("b")), tuple(_int(s, "seq") for s in seqs))
    if kind == "rej":
        return Reject(_decode_ballot(value.get("b")), _decode_ballot(value.get("p")))
    raise ValueError(f"unknown lock message kind {kind!r:.40}")
