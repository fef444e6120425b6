"""Suspicion provenance: who accused a member, who confirmed, and how each suspicion ended.

For every member the core keeps a bounded history of its last suspicion episodes (at most
``Config.suspicion_history_size``, the oldest dropped first). An episode records:

* the first accuser, when, at which incarnation, and how the accusation reached this node
  (:data:`VIA`): this node's own failed probe, the accuser itself, gossip relayed by another
  member, or a full-state exchange;
* the suspicion timeout in force when it started;
* each confirmation that counted (Lifeguard's independent suspicions, at most the ``k`` the
  dynamic timeout expects, so an episode holds at most ``k`` of them): from whom, when, how it
  arrived, the timeout in force when it arrived and the one it shortened the suspicion to;
* how it ended: refuted at incarnation ``i``, declared dead at ``t`` (by this node's timer or by
  another member's verdict), or left; and, for a member declared dead, when it came back.

A member declared dead without having been suspected here first (a death verdict gossiped by
another member) gets an episode too, opened and closed at once, naming who declared it.

Times are the host's clock (the simulator's virtual seconds, the engine's monotonic clock;
:meth:`Explanation.shifted` moves them to another clock, such as wall-clock time).

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable

from ..node import NodeID, NodeState

__all__ = ["VIA", "OUTCOMES", "Confirmation", "SuspicionEpisode", "Explanation", "ProvenanceBook"]

VIA = ("probe", "direct", "gossip", "sync")
"""How an accusation reached this node: ``probe`` (this node's own probe failed), ``direct``
(from the accuser itself), ``gossip`` (relayed by another member, ``relayed_by``) or ``sync``
(a push/pull or join state exchange in which the peer, ``relayed_by``, held the member suspect
or dead)."""

OUTCOMES = ("open", "refuted", "dead", "left")
"""How an episode ended: still ``open``, ``refuted`` by the member at a higher incarnation,
declared ``dead``, or the member ``left``."""


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """One independent confirmation of a suspicion.

    Attributes:
        node: the member that confirmed (suspected the same member itself).
        at: when the confirmation reached this node.
        via: how it arrived (one of :data:`VIA`).
        relayed_by: the member that passed it on, when it came by gossip or a state exchange.
        timeout: the suspicion timeout (seconds from the episode's start) in force when it came.
        new_timeout: the timeout it shortened the suspicion to.
    """

    node: NodeID
    at: float
    via: str
    relayed_by: NodeID | None
    timeout: float
    new_timeout: float

    def shifted(self, offset: float) -> Confirmation:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)


@dataclasses.dataclass(frozen=True)
class SuspicionEpisode:
    """One suspicion of a member, from its first accusation to its end.

    Attributes:
        accuser: the member whose accusation started it (this node's id for its own probe).
        started_at: when it started here.
        incarnation: the incarnation the member was suspected at.
        via: how the accusation reached this node (one of :data:`VIA`).
        relayed_by: the member that passed the accusation on (gossip or state exchange).
        timeout: the suspicion timeout when it started (seconds from ``started_at``).
        expected: confirmations that would bring the timeout down to its minimum (Lifeguard's k).
        confirmations: the confirmations that counted, in order (at most ``expected``).
        outcome: one of :data:`OUTCOMES`.
        ended_at: when it ended (None while open).
        refuted_incarnation: the incarnation the member refuted at (outcome ``refuted``).
        declared_by: who declared the member dead (outcome ``dead``): this node's id when its
            own suspicion timer ran out, else the member whose verdict arrived.
        by_timeout: True when this node's suspicion timer ran out (outcome ``dead``).
        returned_at: when a member declared dead came back alive (None if it has not).
        returned_incarnation: the incarnation it came back at.
    """

    accuser: NodeID
    started_at: float
    incarnation: int
    via: str
    relayed_by: NodeID | None
    timeout: float
    expected: int
    confirmations: tuple[Confirmation, ...] = ()
    outcome: str = "open"
    ended_at: float | None = None
    refuted_incarnation: int | None = None
    declared_by: NodeID | None = None
    by_timeout: bool = False
    returned_at: float | None = None
    returned_incarnation: int | None = None

    def shifted(self, offset: float) -> SuspicionEpisode:
        """Return a copy with every time moved by ``offset`` seconds."""
        return dataclasses.replace(
            self, started_at=self.started_at + offset,
            confirmations=tuple(c.shifted(offset) for c in self.confirmations),
            ended_at=None if self.ended_at is None else self.ended_at + offset,
            returned_at=None if self.returned_at is None else self.returned_at + offset)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why a member is in the state it is: what :meth:`gossip.Cluster.explain` returns.

    Attributes:
        node: the member.
        address: its address.
        state: its state as this node holds it now.
        incarnation: its incarnation as this node knows it.
        local: True for this node itself (it is never suspected by itself).
        episodes: its last suspicion episodes, oldest first (at most ``history_size``).
        history_size: the bound of ``episodes`` (``Config.suspicion_history_size``).
        flap_score: its state changes within the last ``flap_window`` seconds.
        flap_window: the sliding window of ``flap_score``, seconds.
        flapping: True while ``flap_score`` is at or above ``Config.flap_threshold``.
        damped: True while damping holds it suspect for users (``Config.flap_damping``).
        at: when this explanation was taken.
    """

    node: NodeID
    address: str
    state: NodeState
    incarnation: int
    local: bool
    episodes: tuple[SuspicionEpisode, ...]
    history_size: int
    flap_score: int
    flap_window: float
    flapping: bool
    damped: bool
    at: float

    def shifted(self, offset: float) -> Explanation:
        """Return a copy with every time moved by ``offset`` seconds (e.g. to wall-clock time)."""
        return dataclasses.replace(self, at=self.at + offset,
                                   episodes=tuple(e.shifted(offset) for e in self.episodes))

    @property
    def last(self) -> SuspicionEpisode | None:
        """The most recent episode, None if the member was never suspected here."""
        return self.episodes[-1] if self.episodes else None


class _Episode:
    """The mutable record behind a :class:`SuspicionEpisode` while it is being written."""

    __slots__ = ("accuser", "started_at", "incarnation", "via", "relayed_by", "timeout",
                 "expected", "confirmations", "outcome", "ended_at", "refuted_incarnation",
                 "declared_by", "by_timeout", "returned_at", "returned_incarnation")

    def __init__(self, accuser: NodeID, at: float, incarnation: int, via: str,
                 relayed_by: NodeID | None, timeout: float, expected: int) -> None:
        self.accuser = accuser
        self.started_at = at
        self.incarnation = incarnation
        self.via = via
        self.relayed_by = relayed_by
        self.timeout = timeout
        self.expected = expected
        self.confirmations: list[Confirmation] = []
        self.outcome = "open"
        self.ended_at: float | None = None
        self.refuted_incarnation: int | None = None
        self.declared_by: NodeID | None = None
        self.by_timeout = False
        self.returned_at: float | None = None
        self.returned_incarnation: int | None = None

    def freeze(self) -> SuspicionEpisode:
        return SuspicionEpisode(
            self.accuser, self.started_at, self.incarnation, self.via, self.relayed_by,
            self.timeout, self.expected, tuple(self.confirmations), self.outcome, self.ended_at,
            self.refuted_incarnation, self.declared_by, self.by_timeout, self.returned_at,
            self.returned_incarnation)


class ProvenanceBook:
    """The suspicion episodes of every member (owned by the protocol core).

    Args:
        history_size: episodes kept per member; older ones are dropped.

    Members are added on their first suspicion and dropped by :meth:`forget` when the core
    forgets the member, so the book never holds more members than the core's table.

    :attr:`on_close`, when set, is called with the member and the episode each time an
    episode ends (refuted, dead or left): the core's tracing records the suspicion then.
    """

    __slots__ = ("history_size", "_episodes", "on_close")

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        self._episodes: dict[NodeID, collections.deque[_Episode]] = {}
        self.on_close: Callable[[NodeID, SuspicionEpisode], None] | None = None

    def _open(self, node: NodeID) -> _Episode | None:
        eps = self._episodes.get(node)
        if eps and eps[-1].outcome == "open":
            return eps[-1]
        return None

    def suspected(self, node: NodeID, at: float, accuser: NodeID, incarnation: int, via: str,
                  relayed_by: NodeID | None, timeout: float, expected: int) -> None:
        """Open an episode (closing a still open one as refuted at ``incarnation``)."""
        self.refuted(node, at, incarnation)
        eps = self._episodes.get(node)
        if eps is None:
            eps = self._episodes[node] = collections.deque(maxlen=self.history_size)
        eps.append(_Episode(accuser, at, incarnation, via, relayed_by, timeout, expected))

    def confirmed(self, node: NodeID, at: float, confirmer: NodeID, via: str,
                  relayed_by: NodeID | None, new_timeout: float) -> None:
        """Record a confirmation that counted; the timeout in force is the last one recorded."""
        ep = self._open(node)
        if ep is None:
            return
        before = ep.confirmations[-1].new_timeout if ep.confirmations else ep.timeout
        ep.confirmations.append(Confirmation(confirmer, at, via, relayed_by, before, new_timeout))

    def refuted(self, node: NodeID, at: float, incarnation: int) -> None:
        """Close the open episode (if any): the member refuted at ``incarnation``."""
        ep = self._open(node)
        if ep is not None:
            ep.outcome, ep.ended_at, ep.refuted_incarnation = "refuted", at, incarnation
            if self.on_close is not None:
                self.on_close(node, ep.freeze())

    def dead(self, node: NodeID, at: float, incarnation: int, declared_by: NodeID, by_timeout: bool,
             left: bool, via: str, relayed_by: NodeID | None) -> None:
        """Close the open episode: declared dead (or left). With no open episode, a death verdict
        gets one of its own, opened and closed at once."""
        ep = self._open(node)
        if ep is None:
            if left:
                return  # a graceful leave of a member nobody suspected is no suspicion
            self.suspected(node, at, declared_by, incarnation, via, relayed_by, 0.0, 0)
            ep = self._open(node)
            assert ep is not None
        ep.outcome = "left" if left else "dead"
        ep.ended_at = at
        if not left:
            ep.declared_by, ep.by_timeout = declared_by, by_timeout
        if self.on_close is not None:
            self.on_close(node, ep.freeze())

    def returned(self, node: NodeID, at: float, incarnation: int) -> None:
        """A member held dead is alive again: note it on its last episode."""
        eps = self._episodes.get(node)
        if eps and eps[-1].outcome == "dead" and eps[-1].returned_at is None:
            eps[-1].returned_at, eps[-1].returned_incarnation = at, incarnation

    def forget(self, node: NodeID) -> None:
        """Drop a member's history (the core forgot the member)."""
        self._episodes.pop(node, None)

    def episodes(self, node: NodeID) -> tuple[SuspicionEpisode, ...]:
        """Return the member's episodes, oldest first."""
        return tuple(e.freeze() for e in self._episodes.get(node, ()))

    def members(self) -> Iterable[NodeID]:
        """The members with a history."""
        return self._episodes.keys()

    def __len__(self) -> int:
        return len(self._episodes)
