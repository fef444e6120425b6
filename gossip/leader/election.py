"""Leader election as a pure state machine: given ``now`` and the membership, who leads.

Theory of operation
-------------------

Every node runs one :class:`Election`. Its host feeds it ``tick(now, members)`` every
``check_interval`` and after each membership change, and ``receive(now, sender, message,
members)`` for each :class:`Heartbeat` or :class:`Ack` that arrives. ``members`` is the local
node's view of the cluster, itself included, as :class:`Peer` records (id, state, eligible). The
core answers through :meth:`Election.actions_to_perform`: :class:`Heartbeat` (send it to every
known member that has not left), :class:`SendAck` (answer that leader) and :class:`Notify` (tell
the application). It never reads a clock, never sleeps and draws no random numbers, so the
threaded host (:class:`gossip.leader.LeaderElection`) and the simulator (``python -m gossip.sim
--scenario leader``) run the same logic.

The rules:

* **Quorum against the known membership.** ``known`` counts the eligible members that are
  alive, suspect, or dead but not yet forgotten; members that left gracefully do not count.
  paularlott/gossip measures the quorum against the nodes it currently sees, which always
  passes, so both sides of a partition elect. Here a quorum is :func:`quorum` of ``known``.
* **Standing.** A node stands (elects itself) only when it sees a quorum of eligible members
  alive and has no leader. It waits ``leader_timeout`` counted from the latest of: the last
  heartbeat it accepted, the moment it (re)gained that quorum, and the moment its failure
  detector saw the silent leader go (suspect, dead, left, no longer eligible, or retired). A
  heartbeat meanwhile cancels the wait. So a crashed leader is replaced ``leader_timeout`` after
  it is detected, and a node whose view merely flickers (a heal merging two views) hears the
  real leader before it could stand. While the detector still sees the silent leader alive
  (its heartbeats are being lost, or a partition is forming), the wait is :data:`SILENT_LEADER_FACTOR`
  times longer: on the minority side of a fresh partition the detector has removed the quorum
  long before. The smallest id stands first: each alive eligible member with a smaller id adds
  one ``check_interval`` (the silent leader does not count), so if it does not lead, the next
  one does an interval later.
* **Leading takes acknowledgements.** A leader heartbeats every ``check_interval`` and every
  follower that accepts a heartbeat acknowledges it. A leader keeps leading only while, besides
  itself, enough eligible members acknowledged within ``leader_timeout`` to make a quorum of the
  known membership (and it still sees that many alive or suspect). A new leader, and one whose
  quorum grows (members joined), has ``leader_timeout`` to collect them. So the leader of a minority
  side steps down ``leader_timeout`` after a split, whatever its failure detector believes; and
  as its view is evidently stale, it does not stand again for ``SILENT_LEADER_FACTOR`` times
  ``leader_timeout``, by when the detector has caught up.
* **Terms only grow.** A node that stands takes the highest term it has seen plus one. A
  heartbeat of a lower term is ignored (and not acknowledged); a leader that sees a higher term
  steps down. Two leaders of one term (concurrent elections) resolve to the smaller node id.
* **Following.** A heartbeat is accepted from an eligible member that has not left, even one
  the local view holds dead (after a heal, heartbeats arrive before the views merge). Its sender
  is the leader while its heartbeats are fresher than ``leader_timeout``. A leader that steps
  down says so (``resign``), and its followers drop it at once; one whose election stops says it
  will not stand again (``retire``), so nobody waits for the failure detector.

Events follow every change: ``STEPPED_DOWN`` then ``LOST`` when leadership ends, then
``BECAME_LEADER`` and ``ELECTED`` when it starts; a move from one leader straight to another is
one ``ELECTED``.

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, Union

from ..errors import ConfigError
from ..groups import Criteria
from ..node import NodeID, NodeState
from ..wire import MAX_MSG_TYPE, RESERVED_MSGS_START

__all__ = [
    "LeaderEvent",
    "ELECTED",
    "LOST",
    "BECAME_LEADER",
    "STEPPED_DOWN",
    "LeaderConfig",
    "Peer",
    "Heartbeat",
    "Ack",
    "Message",
    "SendAck",
    "Notify",
    "Action",
    "encode_message",
    "decode_message",
    "SILENT_LEADER_FACTOR",
    "Election",
    "quorum",
]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
_KNOWN = (ALIVE, SUSPECT, DEAD)
_REACHABLE = (ALIVE, SUSPECT)

_EPSILON = 1e-6  # ticks a whole number of intervals apart must not miss a deadline by rounding

SILENT_LEADER_FACTOR = 10
"""How many times ``leader_timeout`` a node waits before standing against a silent leader that its
failure detector still sees alive (normally the detector suspects a crashed leader much sooner)."""


class LeaderEvent(enum.IntEnum):
    """What happened to the leadership, as the local node sees it (paularlott's numbers)."""

    ELECTED = 0
    """A (new) leader is known; the event's node is the leader."""
    LOST = 1
    """There is no leader any more; the event's node is the leader that was lost."""
    BECAME_LEADER = 2
    """The local node became the leader."""
    STEPPED_DOWN = 3
    """The local node is no longer the leader."""

    def __str__(self) -> str:
        return _EVENT_NAMES[self]


_EVENT_NAMES = {
    LeaderEvent.ELECTED: "Leader Elected",
    LeaderEvent.LOST: "Leader Lost",
    LeaderEvent.BECAME_LEADER: "Became Leader",
    LeaderEvent.STEPPED_DOWN: "Stepped Down",
}

ELECTED = LeaderEvent.ELECTED
"""Alias of :attr:`LeaderEvent.ELECTED`."""
LOST = LeaderEvent.LOST
"""Alias of :attr:`LeaderEvent.LOST`."""
BECAME_LEADER = LeaderEvent.BECAME_LEADER
"""Alias of :attr:`LeaderEvent.BECAME_LEADER`."""
STEPPED_DOWN = LeaderEvent.STEPPED_DOWN
"""Alias of :attr:`LeaderEvent.STEPPED_DOWN`."""


def quorum(n: int, percentage: float) -> int:
    """Return how many votes a quorum of ``n`` members needs: ``ceil(n * percentage / 100)``.

    At least 1 when ``n > 0``; 0 when ``n == 0``. Computed exactly (``quorum(100, 57) == 57``).
    """
    if n <= 0:
        return 0
    return max(1, math.ceil(Fraction(n) * Fraction(str(percentage)) / 100))


@dataclasses.dataclass(frozen=True)
class LeaderConfig:
    """Settings of a leader election (paularlott's names and defaults, in float seconds).

    Attributes:
        check_interval: how often each node checks the leadership and the leader heartbeats.
        leader_timeout: a leader silent this long is gone; also how long a node waits, after
            starting or regaining quorum, for a heartbeat before it stands itself.
        heartbeat_msg_type: the message type of heartbeats (64..65535; 65 by default, in the
            range reserved for add-on packages).
        quorum_percentage: the share of the known membership (alive, suspect or dead but not
            forgotten) that must be alive for anyone to lead; above 50, so two sides of a
            partition can never both have it.
        metadata_criteria: only nodes matching these criteria (see :class:`gossip.NodeGroup`)
            may lead, and only they count for the quorum; None means every node.

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """

    check_interval: float = 1.0
    leader_timeout: float = 3.0
    heartbeat_msg_type: int = RESERVED_MSGS_START + 1
    quorum_percentage: float = 51
    metadata_criteria: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value!r}")
            return float(value)

        if number("check_interval") <= 0:
            raise ConfigError("check_interval", f"must be > 0, got {self.check_interval!r}")
        if number("leader_timeout") <= self.check_interval:
            raise ConfigError("leader_timeout", f"must be greater than check_interval "
                              f"({self.check_interval!r}), or followers give up on the leader "
                              f"between two heartbeats; got {self.leader_timeout!r}")
        mt = self.heartbeat_msg_type
        if isinstance(mt, bool) or not isinstance(mt, int) or not RESERVED_MSGS_START <= mt <= MAX_MSG_TYPE:
            raise ConfigError("heartbeat_msg_type", f"must be an int in {RESERVED_MSGS_START}.."
                              f"{MAX_MSG_TYPE}, got {mt!r}")
        pct = number("quorum_percentage")
        if not 50 < pct <= 100:
            raise ConfigError("quorum_percentage", f"must be in (50, 100] so that two sides of a "
                              f"partition cannot both have a quorum, got {self.quorum_percentage!r}")
        if self.metadata_criteria is not None:
            try:
                Criteria(self.metadata_criteria)
            except (TypeError, ValueError) as exc:
                raise ConfigError("metadata_criteria", str(exc)) from exc

    def criteria(self) -> Criteria | None:
        """Return the compiled :attr:`metadata_criteria` (None if every node is eligible)."""
        return None if self.metadata_criteria is None else Criteria(self.metadata_criteria)


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """One member as the election sees it: its id, its state in the local view, and whether it
    matches the election's criteria."""

    id: NodeID
    state: NodeState
    eligible: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """A leader's heartbeat, sent to every known member that has not left.

    Attributes:
        term: the leader's term.
        resign: the sender no longer leads (it lost its quorum, or stops).
        retire: the sender's election stops: it will not stand again.
    """

    term: int
    resign: bool = False
    retire: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """A follower's acknowledgement of a heartbeat of ``term``."""

    term: int


Message = Union[Heartbeat, Ack]
"""What election nodes send each other."""


def encode_message(msg: Message) -> dict[str, Any]:
    """Return ``msg`` as a codec-friendly mapping."""
    if isinstance(msg, Ack):
        return {"kind": "ack", "term": msg.term}
    return {"kind": "heartbeat", "term": msg.term, "resign": msg.resign, "retire": msg.retire}


def decode_message(value: Any) -> Message:
    """Rebuild a message from :func:`encode_message`'s mapping.

    Raises:
        ValueError: ``value`` is not a well-formed election message.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"an election message is a mapping, got {type(value).__name__}")
    kind, term = value.get("kind"), value.get("term")
    if isinstance(term, bool) or not isinstance(term, int) or not 0 <= term < 1 << 63:
        raise ValueError(f"election message term must be an int in 0..2**63-1, got {term!r}")
    if kind == "ack":
        return Ack(term)
    if kind != "heartbeat":
        raise ValueError(f"election message kind must be 'heartbeat' or 'ack', got {kind!r}")
    resign, retire = value.get("resign", False), value.get("retire", False)
    if not isinstance(resign, bool) or not isinstance(retire, bool):
        raise ValueError(f"heartbeat resign and retire must be bools, got {resign!r}, {retire!r}")
    return Heartbeat(term, resign, retire)


@dataclasses.dataclass(frozen=True, slots=True)
class SendAck:
    """Send :class:`Ack` of ``term`` to the leader ``node``."""

    node: NodeID
    term: int


@dataclasses.dataclass(frozen=True, slots=True)
class Notify:
    """Tell the application ``event``; ``node`` is the leader it is about."""

    event: LeaderEvent
    node: NodeID


Action = Union[Heartbeat, SendAck, Notify]
"""What :meth:`Election.actions_to_perform` returns (a :class:`Heartbeat` goes to everyone)."""


class _Survey:
    """One pass over the membership: counts, and the records of the few nodes of interest."""

    __slots__ = ("known", "alive", "reachable", "smaller", "acked", "me", "found")

    def __init__(self, me: NodeID, members: Iterable[Peer], interest: set[NodeID],
                 skip: NodeID | None, acks: Mapping[NodeID, float], fresh: float) -> None:
        self.known = 0       # eligible, alive or suspect or dead
        self.alive = 0       # eligible and alive
        self.reachable = 0   # eligible and alive or suspect
        self.smaller = 0     # eligible, alive, a smaller id than ours (``skip`` not counted)
        self.acked = 0       # eligible peers that acknowledged since ``fresh``
        self.me: Peer | None = None
        self.found: dict[NodeID, Peer] = {}
        for p in members:
            if p.id == me:
                self.me = p
            elif p.id in interest:
                self.found[p.id] = p
            if not p.eligible:
                continue
            state = p.state
            if state is ALIVE:
                self.known += 1
                self.alive += 1
                self.reachable += 1
                if p.id < me and p.id != skip:
                    self.smaller += 1
            elif state is SUSPECT:
                self.known += 1
                self.reachable += 1
            elif state is DEAD:
                self.known += 1
            elif state is LEAVING:
                continue
            if acks and p.id != me and acks.get(p.id, -math.inf) >= fresh:
                self.acked += 1


class Election:
    """One node's leader election state machine.

    Args:
        node_id: the local node.
        config: the election settings (the timings and the quorum are read here; the host
            applies the criteria when it builds the :class:`Peer` records).
        now: the host's current time (monotonic seconds): the node waits ``leader_timeout``
            from here for a heartbeat before it stands.
    """

    def __init__(self, node_id: NodeID, config: LeaderConfig, now: float) -> None:
        self.id = node_id
        self.config = config
        self._interval = float(config.check_interval)
        self._timeout = float(config.leader_timeout)
        self._pct = config.quorum_percentage
        self._term = 0
        self._leading = False
        self._ack_grace_until = -math.inf
        self._need = 0
        self._acks: dict[NodeID, float] = {}
        self._leader: NodeID | None = None
        self._heard: NodeID | None = None
        self._heard_at = -math.inf
        self._silent_since = now
        self._quorum_since: float | None = None
        self._next_heartbeat = math.inf
        self._gone: NodeID | None = None
        self._gone_retired = False
        self._down_since: float | None = None  # since when the last leader looks gone
        self._hold_off_until = -math.inf
        self._stopped = False
        self._actions: list[Action] = []
        self.stats: dict[str, int] = {}
        """Counters: elections, step-downs by reason, heartbeats ignored by reason."""

    # ------------------------------------------------------------------ queries

    @property
    def is_leader(self) -> bool:
        """True if the local node leads (as of the last input)."""
        return self._leading

    @property
    def leader(self) -> NodeID | None:
        """The valid leader as of the last input (the local node's id when it leads), or None."""
        return self._leader

    @property
    def term(self) -> int:
        """The highest term this node has seen or started."""
        return self._term

    def actions_to_perform(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------ inputs

    def tick(self, now: float, members: Iterable[Peer]) -> None:
        """Re-check the leadership: call every ``check_interval`` and after membership changes.

        A leader also emits its :class:`Heartbeat` here when one is due.
        """
        if self._stopped:
            return
        was_leading, old = self._leading, self._leader
        self._evaluate(now, self._survey(now, members))
        self._publish(was_leading, old)

    def receive(self, now: float, sender: NodeID, message: Message, members: Iterable[Peer]) -> None:
        """Handle a :class:`Heartbeat` or an :class:`Ack` from ``sender``.

        An :class:`Ack` is only recorded (the next :meth:`tick` weighs it), so for one
        ``members`` need only hold the sender's record: a leader of N members receives N acks per
        ``check_interval``, and each costs O(1).
        """
        if self._stopped or sender == self.id:
            return
        if isinstance(message, Ack):
            if self._leading and message.term == self._term:
                for peer in members:
                    if peer.id == sender:
                        if peer.eligible and peer.state is not LEAVING:
                            self._acks[sender] = now
                        break
            return
        was_leading, old = self._leading, self._leader
        s = self._survey(now, members, sender)
        p = s.found.get(sender)
        if p is None or not p.eligible or p.state is LEAVING:
            self._count("ignored_not_eligible")
        elif message.resign:
            if sender == self._heard:
                self._heard = None
                self._gone, self._gone_retired = sender, message.retire
                if message.retire:
                    self._down_since = now
        elif message.term < self._term:
            self._count("ignored_stale_term")
        elif message.term == self._term and not self._wins_tie(now, sender):
            self._count("ignored_outranked")
        else:
            if self._leading:
                self._count("stepped_down_for_heartbeat")
                self._leading = False
                self._next_heartbeat = math.inf
            self._term = message.term
            if sender != self._heard:
                self._down_since = None
            self._heard, self._heard_at = sender, now
            self._silent_since = now
            self._gone = None
            self._actions.append(SendAck(sender, message.term))
        self._evaluate(now, s)
        self._publish(was_leading, old)

    def stop(self, now: float) -> None:
        """Stop for good: a leader resigns and retires (a :class:`Heartbeat` saying so, then
        ``STEPPED_DOWN``); later inputs are ignored."""
        if self._stopped:
            return
        self._stopped = True
        if self._leading:
            self._actions.append(Heartbeat(self._term, resign=True, retire=True))
            self._actions.append(Notify(STEPPED_DOWN, self.id))
        self._leading = False
        self._leader = None

    # ------------------------------------------------------------------ internals

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _survey(self, now: float, members: Iterable[Peer], sender: NodeID | None = None) -> _Survey:
        interest = {x for x in (self._heard, self._gone, sender) if x is not None}
        return _Survey(self.id, members, interest, self._gone,
                       self._acks if self._leading else {}, now - self._timeout)

    def _wins_tie(self, now: float, sender: NodeID) -> bool:
        """A heartbeat of our own term: does ``sender`` beat whoever leads it for us?"""
        if self._leading:
            return sender < self.id
        heard = self._heard
        if heard is None or heard == sender or now - self._heard_at > self._timeout:
            return True
        return sender < heard

    def _step_down(self, now: float, reason: str, hold_off: bool = False) -> None:
        self._count(reason)
        if hold_off:
            self._hold_off_until = now + SILENT_LEADER_FACTOR * self._timeout
        self._leading = False
        self._leader = None
        self._next_heartbeat = math.inf
        self._silent_since = now
        self._acks.clear()
        self._actions.append(Heartbeat(self._term, resign=True))

    def _evaluate(self, now: float, s: _Survey) -> None:
        need = quorum(s.known, self._pct)
        standing_quorum = s.known > 0 and s.alive >= need
        if standing_quorum:
            if self._quorum_since is None:
                self._quorum_since = now
        else:
            self._quorum_since = None
        me = s.me
        can_lead = me is not None and me.eligible and me.state is ALIVE

        if self._leading:
            if need > self._need:
                # More members to hear from (a join): give them a leader_timeout to answer.
                self._ack_grace_until = now + self._timeout
            self._need = need
            if not can_lead:
                self._step_down(now, "stepped_down_ineligible")
            elif s.reachable < need:
                self._step_down(now, "stepped_down_no_quorum_seen")
            elif now > self._ack_grace_until and s.acked + 1 < need:
                # Our view shows a quorum that does not answer: it is stale (a partition the
                # failure detector has not caught up with). Do not stand again until it has.
                self._step_down(now, "stepped_down_no_quorum_acked", hold_off=True)
            else:
                self._leader = self.id
                if len(self._acks) > 2 * s.known + 8:  # forget acks of members long gone
                    fresh = now - self._timeout
                    self._acks = {k: t for k, t in self._acks.items() if t >= fresh}
        else:
            self._leader = self._follow(now, s, standing_quorum and can_lead)

        if self._leading and now >= self._next_heartbeat:
            self._actions.append(Heartbeat(self._term))
            self._next_heartbeat = now + self._interval

    def _follow(self, now: float, s: _Survey, may_stand: bool) -> NodeID | None:
        """Not leading: return the valid leader, standing ourselves when the time has come."""
        heard = self._heard
        if heard is not None and now - self._heard_at > self._timeout:
            self._heard = None
            self._gone, self._gone_retired = heard, False
        last = self._heard if self._heard is not None else self._gone
        if last is not None:
            # Does the last leader look gone to the failure detector (or to itself)?
            p = s.found.get(last)
            down = (p is None or p.state is not ALIVE or not p.eligible
                    or (last == self._gone and self._gone_retired))
            if not down:
                self._down_since = None
            elif self._down_since is None:
                self._down_since = now
        if self._heard is not None:
            p = s.found.get(self._heard)
            if p is not None and p.eligible and p.state is not LEAVING:
                return self._heard
        if not may_stand or self._quorum_since is None or now < self._hold_off_until:
            return None
        start = max(self._silent_since, self._quorum_since)
        if self._gone is not None:
            if self._down_since is None:
                # A silent leader the detector still sees alive: lost heartbeats or a partition.
                start += (SILENT_LEADER_FACTOR - 1) * self._timeout
            else:
                start = max(start, self._down_since)
        if now + _EPSILON < start + self._timeout + s.smaller * self._interval:
            return None
        self._term += 1
        self._leading = True
        self._ack_grace_until = now + self._timeout
        self._need = quorum(s.known, self._pct)
        self._acks.clear()
        self._next_heartbeat = now
        self._gone = None
        self._down_since = None
        self._count("elections")
        return self.id

    def _publish(self, was_leading: bool, old: NodeID | None) -> None:
        new = self._leader
        if was_leading and not self._leading:
            self._actions.append(Notify(STEPPED_DOWN, self.id))
        if old is not None and new is None:
            self._actions.append(Notify(LOST, old))
        if self._leading and not was_leading:
            self._actions.append(Notify(BECAME_LEADER, self.id))
        if new is not None and new != old:
            self._actions.append(Notify(ELECTED, new))

    def __repr__(self) -> str:
        role = "leader" if self._leading else f"following {self._leader.short}" if self._leader else "no leader"
        return f"<Election {self.id.short} term {self._term}: {role}>"
