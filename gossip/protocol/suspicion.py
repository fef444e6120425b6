"""Lifeguard's dynamic suspicion timeout (LHA-Suspicion) as pure functions and a small record.

A suspicion starts with the longest timeout, ``max``, and shrinks toward ``min`` as independent
confirmations (other members suspecting the same node) arrive:

    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

where ``k`` is the number of confirmations expected (memberlist: ``suspicion_mult - 2``, and 0
when the cluster is too small to provide them, in which case the timeout is ``min``).

:func:`new_suspicion` sizes one for a cluster of ``n`` members from the configuration.
:class:`Suspicions` runs them in a core: the merge rule for ``suspect`` news (start a
suspicion, or count an independent confirmation), the rule for a suspicion seen in a peer's
full state (hearsay: it may start one, never confirm one), one pending timer per suspected
member, and the death verdict when it fires. It works on any member table that offers what
:class:`SuspectTable` lists (the core's :class:`~.membership.MemberTable`), and writes to the
outbox it is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from ..config import Config
from ..messages import Dead, Suspect, Update
from ..node import NodeID, NodeState
from .outbox import T_SUSPICION, Outbox

__all__ = ["remaining_suspicion_time", "suspicion_timeouts", "Suspicion", "new_suspicion", "Suspicions",
           "Suspected", "SuspectTable", "SuspicionWatcher"]

ALIVE, SUSPECT, DEAD = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD


def suspicion_timeouts(
    n: int, probe_interval: float, suspicion_mult: int, max_timeout_mult: int
) -> tuple[float, float]:
    """Return ``(min, max)`` suspicion timeouts for a cluster of ``n`` members.

    ``min = suspicion_mult * max(1, log10(n)) * probe_interval`` and ``max = max_timeout_mult * min``.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    low = suspicion_mult * node_scale * probe_interval
    return low, max_timeout_mult * low


def remaining_suspicion_time(n: int, k: int, elapsed: float, low: float, high: float) -> float:
    """Return how long a suspicion with ``n`` of ``k`` confirmations has left after ``elapsed``.

    The result may be negative (the suspicion is overdue).
    """
    if k < 1:
        timeout = low
    else:
        frac = math.log(n + 1.0) / math.log(k + 1.0)
        timeout = max(low, high - (high - low) * frac)
    return timeout - elapsed


@dataclasses.dataclass(slots=True)
class Suspicion:
    """One running suspicion of a member.

    Attributes:
        incarnation: the incarnation the member is suspected at.
        start: when the suspicion started.
        k: confirmations expected.
        low, high: the minimum and maximum timeouts.
        accuser: the member whose suspicion started it (does not count as a confirmation).
        confirmers: members that confirmed independently.
        hearsay: started from a peer's full state, which says the member is suspected but
            not by whom: ``accuser`` is that peer until the first accusation heard takes its
            place (see :meth:`Suspicions.on_hearsay`).
    """

    incarnation: int
    start: float
    k: int
    low: float
    high: float
    accuser: NodeID
    confirmers: set[NodeID] = dataclasses.field(default_factory=set)
    hearsay: bool = False

    def deadline(self) -> float:
        """Return the time at which the member is to be declared dead."""
        return self.start + remaining_suspicion_time(len(self.confirmers), self.k, 0.0, self.low, self.high)

    def confirm(self, sender: NodeID) -> bool:
        """Record a confirmation from ``sender``; return True if it is new and counts.

        A suspicion started on hearsay takes the first accusation as its accuser instead: it
        does not count (see :meth:`Suspicions.on_hearsay`).
        """
        if self.hearsay:
            self.hearsay = False
            self.accuser = sender
            return False
        if self.k < 1 or sender == self.accuser or sender in self.confirmers:
            return False
        if len(self.confirmers) >= self.k:
            return False
        self.confirmers.add(sender)
        return True


def new_suspicion(config: Config, n: int, incarnation: int, now: float, accuser: NodeID) -> Suspicion:
    """Return a suspicion started at ``now`` by ``accuser`` in a cluster of ``n`` members.

    Its timeouts come from :func:`suspicion_timeouts`, capped at ``suspect_retention_period``;
    it expects ``suspicion_mult - 2`` confirmations with Lifeguard, none without it or when
    the cluster is too small to provide them.
    """
    low, high = suspicion_timeouts(n, config.health_check_interval, config.suspicion_mult,
                                   config.suspicion_max_timeout_mult)
    cap = config.suspect_retention_period
    low, high = min(low, cap), min(high, cap)
    k = config.suspicion_mult - 2
    if not config.lifeguard_enabled or n - 2 < k:
        k = 0
    return Suspicion(incarnation, now, k, low, high, accuser)


class Suspected(Protocol):
    """What :class:`Suspicions` reads and writes of a member record."""

    node: NodeID
    state: NodeState
    incarnation: int
    suspicion: Suspicion | None
    timer_at: float   # when the pending suspicion timer of this member fires (inf: none)


M = TypeVar("M", bound=Suspected)
M_contra = TypeVar("M_contra", bound=Suspected, contravariant=True)


class SuspectTable(Protocol[M]):
    """What :class:`Suspicions` uses of the member table."""

    @property
    def members(self) -> Mapping[NodeID, M]:
        """Every member by id."""

    def num_members(self) -> int:
        """The alive and suspect members, this node included."""

    def set_state(self, now: float, m: M, state: NodeState) -> None:
        """Move ``m`` to ``state``."""

    def jump_refused(self, claimed: int, known: int, accusation: bool) -> bool:
        """True (counted) if a claim runs too far ahead of what is known."""

    def invalidate(self, m: M) -> None:
        """The record of ``m`` in the full state changed."""


class SuspicionWatcher(Protocol[M_contra]):
    """What :class:`Suspicions` tells as suspicions run (:class:`~.insight.Insight`)."""

    def suspected(self, now: float, m: M_contra, s: Suspect) -> None:
        """A suspicion of ``m`` started."""

    def confirmed(self, now: float, m: M_contra, s: Suspect) -> None:
        """An independent confirmation of ``m``'s suspicion counted."""

    def dead(self, now: float, m: M_contra, d: Dead | None) -> None:
        """``m`` is declared dead (``d`` None: by this node's own timer)."""


class Suspicions(Generic[M]):
    """The running suspicions of one core (the records live on the members themselves).

    Args:
        config: the protocol's configuration.
        out: where timers and counters go.
        node_id: this node's id (the sender of its own death verdicts).
        table: the member table.
        watcher: told of every suspicion, confirmation and verdict.
        announce: queues an update for dissemination (``announce(now, update)``).
        accused: called with ``(now, incarnation)`` when the suspect is this node itself.
    """

    def __init__(self, config: Config, out: Outbox, node_id: NodeID, table: SuspectTable[M],
                 watcher: SuspicionWatcher[M], announce: Callable[[float, Update], None],
                 accused: Callable[[float, int], None]) -> None:
        self.config = config
        self.out = out
        self.id = node_id
        self.table = table
        self.members = table.members
        self.watcher = watcher
        self._announce = announce
        self._accused = accused

    def on_suspect(self, now: float, s: Suspect) -> None:
        """Merge ``suspect(s.node, s.incarnation)`` (SWIM section 4.2): it wins over alive at
        an incarnation up to its own; on a suspect member it is an independent confirmation
        (Lifeguard), or, at a higher incarnation, a new suspicion."""
        if s.node == self.id:
            self._accused(now, s.incarnation)
            return
        m = self._accusable(s)
        if m is None:
            return
        if m.state is SUSPECT:
            if s.incarnation > m.incarnation:
                # The member refuted (raised its incarnation) after we suspected it and we missed
                # its alive message (a newer update about it replaced that one in the gossip
                # queues). Our suspicion is void; this one is new. memberlist only confirms the
                # old suspicion here and can declare a member dead that has long refuted it.
                m.incarnation = s.incarnation
                self.start(now, m, s.sender)
                self.watcher.suspected(now, m, s)   # insight: the old one ends refuted
                self.table.invalidate(m)
                self._announce(now, s)
                return
            susp = m.suspicion
            if susp is None:
                return
            hearsay = susp.hearsay
            if susp.confirm(s.sender):
                self.arm(m)
                self._announce(now, s)
                self.watcher.confirmed(now, m, s)
            elif hearsay and not susp.hearsay:
                # The first accusation of a suspicion we only had from a full state: it is
                # the accuser, not a confirmation, and goes on as it would have, heard first.
                self._announce(now, s)
            return
        m.incarnation = s.incarnation
        self.start(now, m, s.sender)
        self.watcher.suspected(now, m, s)
        self.out.count("suspicions_started")
        self.table.set_state(now, m, SUSPECT)
        self._announce(now, s)

    def on_hearsay(self, now: float, s: Suspect) -> None:
        """Merge a suspicion that a peer's full state shows (push/pull, a join's answer):
        ``s.node`` held suspect at ``s.incarnation`` by ``s.sender``.

        The peer holding a suspicion does not mean that its own probe failed: most often it
        heard the accusation by gossip, like everyone else. Lifeguard shortens a suspicion by
        *independent* confirmations only, so this one confirms nothing. If we hold the member
        alive (or suspect at a lower incarnation), it starts a suspicion here, at the longest
        timeout, whose accuser is not known yet: the first accusation that reaches us takes
        that place, and only the ones after it confirm (:meth:`Suspicion.confirm`). It is not
        gossiped on: passed on in the peer's name, it would count as the peer's confirmation
        wherever the member was suspected already. (memberlist confirms in its own name
        here, as if it had probed the member.)
        """
        m = self._accusable(s)
        if m is None:
            return
        if m.state is SUSPECT and s.incarnation == m.incarnation:
            self.out.count("hearsay_not_confirmed")
            return
        was = m.state
        m.incarnation = s.incarnation
        self.start(now, m, s.sender, hearsay=True)
        self.watcher.suspected(now, m, s)
        if was is ALIVE:
            self.out.count("suspicions_started")
            self.table.set_state(now, m, SUSPECT)
        else:
            self.table.invalidate(m)   # a new suspicion at a higher incarnation replaces ours

    def _accusable(self, s: Suspect) -> M | None:
        """Return the member ``s`` accuses if the accusation may apply: held alive or suspect,
        at an incarnation up to ``s``'s, and no refused jump of it."""
        m = self.members.get(s.node)
        if m is None or s.incarnation < m.incarnation:
            return None
        if m.state is not ALIVE and m.state is not SUSPECT:
            return None
        if self.table.jump_refused(s.incarnation, m.incarnation, True):
            return None
        return m

    def start(self, now: float, m: M, accuser: NodeID, hearsay: bool = False) -> None:
        """Start a new suspicion of ``m`` (replacing any), accused by ``accuser`` (on
        ``hearsay``: see :meth:`on_hearsay`)."""
        m.suspicion = new_suspicion(self.config, self.table.num_members(), m.incarnation, now, accuser)
        m.suspicion.hearsay = hearsay
        self.arm(m)

    def arm(self, m: M) -> None:
        """Make sure a timer fires at the suspicion's deadline: one pending timer per member,
        whatever the number of suspicions and confirmations a flood of accusations brings."""
        assert m.suspicion is not None
        deadline = m.suspicion.deadline()
        if deadline < m.timer_at:
            m.timer_at = deadline
            self.out.schedule(deadline, T_SUSPICION, m.node)

    def fire(self, now: float, node: NodeID, when: float) -> None:
        """The suspicion timer of ``node`` set for ``when`` fired: declare it dead if its
        suspicion has run out."""
        m = self.members.get(node)
        if m is None or when != m.timer_at:
            return  # superseded by an earlier timer, or the member was forgotten
        m.timer_at = math.inf
        if m.state is not SUSPECT or m.suspicion is None:
            return
        deadline = m.suspicion.deadline()
        if deadline > now + 1e-9:
            self.arm(m)   # the suspicion was replaced by a later one
            return
        if m.suspicion.k > 0 and len(m.suspicion.confirmers) < m.suspicion.k:
            self.out.count("degraded_timeout")
        m.suspicion = None
        d = Dead(m.node, m.incarnation, self.id)
        self.out.count("suspicions_confirmed")
        self.watcher.dead(now, m, None)   # insight: by our timer
        self.table.set_state(now, m, DEAD)
        self._announce(now, d)
