"""What the protocol core asks its host to do: small frozen records, drained once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Union

from ..messages import Message
from ..node import NodeID, NodeState
from .flap import MemberFlapping
from .partition import PartitionHealed, PartitionSuspected

__all__ = ["Send", "MemberEvent", "JoinResult", "MemberRefused", "Trace", "TraceValue", "Action", "EVENT_STATE",
           "EVENT_METADATA", "EVENT_REMOVED", "EVENT_CONFLICT", "JOIN_NO_ANSWER"]

EVENT_STATE = "state"
EVENT_METADATA = "metadata"
EVENT_REMOVED = "removed"
EVENT_CONFLICT = "conflict"


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to transport address ``addr``.

    ``reliable`` asks for TCP (a full-state exchange, a TCP fallback ping, a join); otherwise
    best-effort UDP is fine (the host still switches to TCP above the UDP size limit).

    ``reply`` marks an answer to the message being received (an ack of a ping that came over
    a connection, a join reply, a push/pull reply): the host sends it back on the connection
    the request came in on, and never dials ``addr`` for it, so a request naming an address
    that does not answer cannot make the host wait (and a joiner behind NAT gets its answer).
    """

    addr: str
    msg: Message
    reliable: bool = False
    reply: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class MemberEvent:
    """Something happened to a member, as the local node sees it.

    ``kind`` is ``"state"`` (``state`` differs from ``prev``), ``"metadata"`` (new metadata),
    ``"removed"`` (the member was forgotten) or ``"conflict"`` (another address claimed its id;
    ``conflict_addr`` says which).
    """

    kind: str
    node: NodeID
    addr: str
    state: NodeState
    prev: NodeState
    incarnation: int
    meta: Mapping[str, Any]
    meta_stamp: int
    pv: int
    av: str
    at: float
    conflict_addr: str = ""
    tags: frozenset[str] = frozenset()


JOIN_NO_ANSWER = "no answer within join_timeout"
"""The reason of a :class:`JoinResult` whose join got no answer in time (the host may say more)."""


@dataclasses.dataclass(frozen=True, slots=True)
class JoinResult:
    """The answer (or its absence) to a join sent to ``addr``."""

    addr: str
    accepted: bool
    reason: str = ""
    node: NodeID | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class MemberRefused:
    """A member was refused because it speaks no protocol version we speak (on memberlist's
    wire: its ``Vsn`` range does not overlap versions 2..5). Told once per member.

    Attributes:
        node: the member.
        addr: its address.
        reason: why, in words.
        at: when (the host's clock; wall-clock time for a Cluster).
    """

    node: NodeID
    addr: str
    reason: str
    at: float

    def shifted(self, offset: float) -> MemberRefused:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        return f"member {self.node.short}@{self.addr} refused: {self.reason}"


TraceValue = Union[str, int, float, bool]
"""The value of a :class:`Trace` attribute (what a span attribute may hold)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Trace:
    """A finished step of the protocol, for tracing: produced only when ``Config.tracing`` is
    set (the host turns it into a span; :mod:`gossip.engine.tracing`).

    The core records a step once it is over, with its start and end on the host's clock, so
    the host never holds a step open: a probe from its ping to its ack or the end of its round,
    an indirect probe (a child) from the direct ping's timeout, a suspicion from its first
    accusation to its refutation or verdict, a push/pull from its request to its reply or
    timeout, a refutation at the instant it happens.

    Attributes:
        name: the step (``gossip.probe``, ``gossip.probe.indirect``, ``gossip.suspicion``,
            ``gossip.refutation``, ``gossip.push_pull``).
        start: when it began (the host's clock).
        end: when it ended.
        attrs: its attributes, ``gossip.*`` names.
        events: ``(name, at, attrs)`` moments within it (a suspicion's confirmations).
        children: steps within it (a probe's indirect probe).
    """

    name: str
    start: float
    end: float
    attrs: Mapping[str, TraceValue]
    events: tuple[tuple[str, float, Mapping[str, TraceValue]], ...] = ()
    children: tuple[Trace, ...] = ()


Action = Union[Send, MemberEvent, JoinResult, MemberFlapping, PartitionSuspected, PartitionHealed,
               MemberRefused, Trace]
