"""Leader election as a pure state machine: given ``now`` and the membership, who leads.

Theory of operation
-------------------

Every node runs one :class:`Election`. Its host feeds it ``tick(now, members)`` every
``check_interval``, after each membership change and at :meth:`Election.next_deadline`, and
``receive(now, sender, message, members)`` for each :class:`Heartbeat` or :class:`Ack` that
arrives. ``members`` is the local node's view of the cluster, itself included, as :class:`Peer`
records (id, state, eligible). The core answers through :meth:`Election.actions_to_perform`:
:class:`Heartbeat` (send it to every known member that has not left), :class:`SendAck` (answer
that leader) and :class:`Notify` (tell the application). It never reads a clock, never sleeps
and draws no random numbers, so the threaded host (:class:`gossip.leader.LeaderElection`) and
the simulator (``python -m gossip.sim --scenario leader``) run the same logic.

The rules:

* **Quorum against the largest membership confirmed.** The quorum's base is every eligible
  member this node has seen alive, plus those its view holds suspect or dead, less the members
  that left gracefully, that stopped matching the criteria, or that the operator removed
  (:meth:`Election.remove_members`); or :attr:`LeaderConfig.expected_members` if that is larger.
  Members the failure detector *forgets* (``dead_node_retention_period``) stay in the base: on
  the small side of a long partition the other side is forgotten, and it must not become a
  majority of what is left. A quorum is :func:`quorum` of the base. paularlott/gossip measures
  it against the nodes it currently sees, which always passes, so both sides of a partition
  elect. (Members that join one side during a partition count on that side only: enough of
  them there can give it a quorum the other side does not know it lacks. Grow the cluster while
  it is whole, or set ``expected_members``.)
* **A lease, from acknowledgements.** A node that stands becomes a *candidate* of a new term:
  it heartbeats every ``check_interval`` and every follower that accepts a heartbeat
  acknowledges it. It *leads* (:attr:`Election.is_leader`) only while it holds a lease: a quorum
  (itself included) acknowledged heartbeats it sent at most :attr:`LeaderConfig.lease` ago. The
  lease counts from when the heartbeat was *sent*, so it ends before any acknowledging follower
  could acknowledge someone else (next rule). A leader whose lease lapses (acknowledgements lost,
  a split, a quorum that grew) is a candidate again in the same term, and leads again as soon as
  a quorum answers; a candidate that gets no quorum within ``leader_timeout + check_interval``
  resigns, and as its view is evidently stale it does not stand again for
  :data:`SILENT_LEADER_FACTOR` times ``leader_timeout``, by when its failure detector has caught
  up. A leader that sees fewer eligible members alive or suspect than a quorum resigns at once.
* **A follower's promise.** A follower that acknowledged a heartbeat of leader L acknowledges no
  other sender for ``leader_timeout`` after it (it ignores them), unless L resigns its current
  term. Any two quorums share a member, so a new leader's quorum completes only after the old
  leader's lease is over: never two leaders at the same instant. This needs the clocks of the
  nodes to run at rates that differ by at most :attr:`LeaderConfig.max_clock_drift_rate` (the lease
  is ``leader_timeout * (1 - drift) / (1 + drift)``); it needs no synchronised clocks, as every
  duration is measured on one node's monotonic clock. A node restarted under the same node id
  forgets its promise: give a restarted node a new id (the default) or start its election only
  ``leader_timeout`` after the old process ended.
* **Standing.** A node stands only when it sees a quorum of eligible members alive and follows
  no leader (and so has no promise). It waits ``leader_timeout`` counted from the latest of: the
  last heartbeat it accepted, the moment it (re)gained that quorum, and the moment its failure
  detector saw the silent leader go (suspect, dead, left, no longer eligible, or retired). A
  heartbeat meanwhile cancels the wait. While the detector still sees the silent leader alive
  (its heartbeats are being lost, or a partition is forming), the wait is
  :data:`SILENT_LEADER_FACTOR` times longer. The smallest id stands first: each alive eligible
  member with a smaller id adds one ``check_interval`` (the silent leader does not count).
* **Terms only grow, and stay in range.** A node's term is the highest term of a leader it
  followed or was. A node that stands proposes a term above every term it has seen or proposed;
  the term becomes its own only once it leads, so a cut-off minority that stands again and
  again does not outrank the leader it meets after the heal. A follower acknowledges a candidate
  only above every leader it knows of, and a leader only at or above it; a leader that holds a
  lease ignores candidates; a candidate yields to a leader of its term or above, and to a
  candidate of a higher term (of the same term, to the smaller node id). Heartbeats may raise
  the term by at most :attr:`LeaderConfig.max_term_jump` per ``leader_timeout``: a heartbeat
  further ahead raises it by what is left and is not followed (a fresh node catches up with a
  high term over a few windows; a forged term near the top of the range cannot end elections
  for good). Terms never pass :data:`MAX_TERM`, the largest the wire carries.
* **Following.** A heartbeat is accepted from an eligible member that has not left, even one
  the local view holds dead (after a heal, heartbeats arrive before the views merge). Its sender
  is the leader while its heartbeats are fresher than ``leader_timeout`` and say it leads (a
  candidate's say it does not yet). A leader that steps down says so (``resign``, for its current
  term only; an old resign is ignored), and its followers drop it at once; one whose election
  stops says it will not stand again (``retire``), so nobody waits for the failure detector.

Authentication is the host's: on a cluster with an encryption key, :class:`LeaderElection`
accepts election messages only from sealed packets whose sender is the member the message names.
Without a key, any host that can reach a node can forge heartbeats and acknowledgements: the
election is then not safe, and the host says so when it starts.

Events follow every change: ``STEPPED_DOWN`` then ``LOST`` when leadership ends, then
``BECAME_LEADER`` and ``ELECTED`` when it starts; a move from one leader straight to another is
one ``ELECTED``.

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..node import NodeID, NodeState

from .config import (
    BECAME_LEADER, ELECTED, LOST, SILENT_LEADER_FACTOR, STEPPED_DOWN, LeaderConfig, LeaderEvent, quorum,
)
from .messages import (
    MAX_TERM, Ack, Action, Heartbeat, Message, Notify, Peer, SendAck, decode_message, encode_message,
)

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
    "MAX_TERM",
    "Election",
    "quorum",
]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING

_EPSILON = 1e-6  # ticks a whole number of intervals apart must not miss a deadline by rounding

class _Survey:
    """One pass over the membership: counts, the records of the few nodes of interest, and the
    quorum's base brought up to date (members seen alive join it; members that left or stopped
    matching the criteria leave it)."""

    __slots__ = ("base", "alive", "reachable", "smaller", "missing", "evicted", "me", "found")

    def __init__(self, me: NodeID, members: Iterable[Peer], interest: set[NodeID], skip: NodeID | None,
                 remembered: dict[NodeID, None], limit: int) -> None:
        self.alive = 0       # eligible and alive
        self.reachable = 0   # eligible and alive or suspect
        self.smaller = 0     # eligible, alive, a smaller id than ours (``skip`` not counted)
        self.me: Peer | None = None
        self.found: dict[NodeID, Peer] = {}
        extra = 0            # eligible, suspect or dead, never seen alive
        known = 0            # eligible, alive or suspect or dead
        seen = 0             # remembered members present in the view
        evicted = 0
        for p in members:
            pid = p.id
            if pid == me:
                self.me = p
            elif pid in interest:
                self.found[pid] = p
            state = p.state
            if not p.eligible or state is LEAVING:
                remembered.pop(pid, None)
                continue
            if state is ALIVE:
                known += 1
                self.alive += 1
                self.reachable += 1
                if pid < me and pid != skip:
                    self.smaller += 1
                if pid in remembered:
                    seen += 1
                else:
                    if len(remembered) >= limit:
                        del remembered[next(iter(remembered))]
                        evicted += 1
                    remembered[pid] = None
                    seen += 1
                continue
            if state is SUSPECT:
                self.reachable += 1
            elif state is not DEAD:
                continue
            known += 1
            if pid in remembered:
                seen += 1
            else:
                extra += 1
        # (never below the membership in view, even when the bound made us drop some)
        self.base = max(len(remembered) + extra, known)
        self.missing = max(0, len(remembered) - seen)   # remembered, no longer in the view
        self.evicted = evicted


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
        self._lease_len = config.lease
        self._pct = config.quorum_percentage
        self._expected = config.expected_members or 0
        self._jump = config.max_term_jump
        self._limit = config.max_remembered
        self._term = 0                    # the highest term of a leader we followed or were
        self._proposed = 0                # the highest term we stood in
        self._standing_term = 0           # the term we stand in (candidate or leader)
        self._standing = False            # candidate or leader of self._standing_term
        self._leading = False             # holds a lease
        self._lease_until = -math.inf
        self._candidate_since = -math.inf
        self._need = 0
        self._base = 0
        self._missing = 0
        self._seq = 0
        self._sent: dict[int, float] = {}            # our recent heartbeats: seq -> sent at
        self._acks: dict[NodeID, float] = {}         # acker -> when we sent what it last acked
        self._remembered: dict[NodeID, None] = {}    # the quorum's base: confirmed members
        self._climb_until = -math.inf
        self._climbed = 0
        self._leader: NodeID | None = None
        self._heard: NodeID | None = None
        self._heard_at = -math.inf
        self._heard_leads = False
        self._heard_term = 0
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
        """True if the local node held a lease as of the last input (see :meth:`leads`)."""
        return self._leading

    def leads(self, now: float) -> bool:
        """Return True if the local node leads at ``now``: it holds a lease that has not run out
        (between inputs, a lease may run out before the core hears of it)."""
        return self._leading and now < self._lease_until

    @property
    def lease_until(self) -> float:
        """When the current lease runs out (``-inf`` when not leading, ``inf`` for a quorum of one)."""
        return self._lease_until if self._leading else -math.inf

    def next_deadline(self) -> float:
        """When the host must call :meth:`tick` at the latest, besides every ``check_interval``:
        the end of the lease, so that leadership ends on time (``inf`` when not leading)."""
        return self._lease_until if self._leading else math.inf

    @property
    def leader(self) -> NodeID | None:
        """The valid leader as of the last input (the local node's id when it leads), or None."""
        return self._leader

    @property
    def term(self) -> int:
        """The highest term this node has seen or started."""
        return self._term

    @property
    def candidacy(self) -> int | None:
        """The term this node stands in (as a candidate or the leader), or None."""
        return self._standing_term if self._standing else None

    @property
    def quorum_base(self) -> int:
        """The number of members the quorum was last measured against."""
        return max(self._base, self._expected)

    @property
    def sees_quorum(self) -> bool:
        """True if, as of the last input, this node saw a quorum of eligible members alive."""
        return self._quorum_since is not None

    @property
    def missing(self) -> int:
        """Members of the quorum's base that the membership no longer holds (forgotten)."""
        return self._missing

    def remembered(self) -> list[NodeID]:
        """Return the members confirmed alive that the quorum's base holds (forgotten ones too)."""
        return list(self._remembered)

    def actions_to_perform(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------ inputs

    def tick(self, now: float, members: Iterable[Peer]) -> None:
        """Re-check the leadership: call every ``check_interval``, after membership changes and
        at :meth:`next_deadline`.

        A leader or candidate also emits its :class:`Heartbeat` here when one is due.
        """
        if self._stopped:
            return
        was_leading, old = self._leading, self._leader
        self._evaluate(now, self._survey(members))
        self._publish(was_leading, old)

    def receive(self, now: float, sender: NodeID, message: Message, members: Iterable[Peer]) -> None:
        """Handle a :class:`Heartbeat` or an :class:`Ack` from ``sender``.

        For an :class:`Ack`, ``members`` need only hold the sender's record: a leader of N
        members receives N acks per ``check_interval``, and each costs O(1) (a candidate's
        last missing one costs O(quorum) to take the lease at once).
        """
        if self._stopped or sender == self.id:
            return
        if isinstance(message, Ack):
            self._on_ack(now, sender, message, members)
            return
        was_leading, old = self._leading, self._leader
        if message.leader is not None and message.leader != sender:
            self._count("ignored_wrong_leader")
            return
        s = self._survey(members, sender)
        p = s.found.get(sender)
        if p is None or not p.eligible or p.state is LEAVING:
            self._count("ignored_not_eligible")
        elif message.resign:
            if sender == self._heard and message.term == self._heard_term:
                self._heard = None
                self._heard_at = -math.inf
                self._gone, self._gone_retired = sender, message.retire
                if message.retire:
                    self._down_since = now
            else:
                self._count("ignored_resign")
        elif self._accepts(now, sender, message) and (message.candidate or self._climb(now, message.term)):
            if self._standing:
                if self._leading:
                    self._count("stepped_down_for_heartbeat")
                self._abandon()
            if sender != self._heard:
                self._down_since = None
            self._heard, self._heard_at = sender, now
            self._heard_leads, self._heard_term = not message.candidate, message.term
            self._silent_since = now
            self._gone = None
            self._actions.append(SendAck(sender, message.term, message.seq))
        self._evaluate(now, s)
        self._publish(was_leading, old)

    def remove_members(self, ids: Iterable[NodeID]) -> int:
        """Drop members from the quorum's base (they are gone for good); return how many were
        held. A member the membership still shows alive, suspect or dead counts all the same,
        and one seen alive again joins the base again."""
        n = 0
        for node in ids:
            if node in self._remembered:
                del self._remembered[node]
                n += 1
        return n

    def stop(self, now: float) -> None:
        """Stop for good: a leader or candidate resigns and retires (a :class:`Heartbeat` saying
        so, then ``STEPPED_DOWN`` if it led); later inputs are ignored."""
        if self._stopped:
            return
        self._stopped = True
        if self._standing:
            self._actions.append(Heartbeat(self._standing_term, resign=True, retire=True, leader=self.id))
        if self._leading:
            self._actions.append(Notify(STEPPED_DOWN, self.id))
        self._standing = self._leading = False
        self._lease_until = -math.inf
        self._leader = None

    # ------------------------------------------------------------------ internals

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def _survey(self, members: Iterable[Peer], sender: NodeID | None = None) -> _Survey:
        interest = {x for x in (self._heard, self._gone, sender) if x is not None}
        s = _Survey(self.id, members, interest, self._gone, self._remembered, self._limit)
        if s.evicted:
            self._count("quorum_members_evicted", s.evicted)
        self._base, self._missing = s.base, s.missing
        return s

    def _accepts(self, now: float, sender: NodeID, hb: Heartbeat) -> bool:
        """May we follow (and acknowledge) this heartbeat? Counts the reason when not."""
        t = hb.term
        if self._standing:
            if self._leading and hb.candidate:
                self._count("ignored_leading")        # we hold a lease: no candidate can win
                return False
            mine = self._standing_term
            if t > mine or (t == mine and sender < self.id):
                return True
            if not self._leading and not hb.candidate and t >= self._term:
                return True                           # a candidate yields to a known leader
            self._count("ignored_outranked" if t == mine else "ignored_stale_term")
            return False
        if sender == self._heard:
            ok = t >= self._term
        elif self._heard is not None and now < self._heard_at + self._timeout:
            self._count("ignored_promised")           # we acknowledged another within leader_timeout
            return False
        else:
            # A candidate must stand above every leader we know of; a leader at least at its term.
            ok = t > self._term if hb.candidate else t >= self._term
        if not ok:
            self._count("ignored_stale_term")
        return ok

    def _climb(self, now: float, term: int) -> bool:
        """Take ``term`` if the allowance of this ``leader_timeout`` window covers the rise;
        otherwise climb by what is left and return False."""
        rise = term - self._term
        if rise <= 0:
            return True
        if now >= self._climb_until:
            self._climb_until, self._climbed = now + self._timeout, 0
        left = self._jump - self._climbed
        if rise <= left:
            self._climbed += rise
            self._term = term
            return True
        if left > 0:
            if self._standing:
                self._resign(now, "stepped_down_for_term")
            self._climbed = self._jump
            self._term = min(MAX_TERM, self._term + left)
        self._count("ignored_term_jump")
        return False

    def _on_ack(self, now: float, sender: NodeID, message: Ack, members: Iterable[Peer]) -> None:
        if not self._standing or message.term != self._standing_term:
            return
        sent = self._sent.get(message.seq)
        if sent is None:
            self._count("acks_unknown_seq")
            return
        for peer in members:
            if peer.id == sender:
                if peer.eligible and peer.state is not LEAVING:
                    if sent > self._acks.get(sender, -math.inf):
                        self._acks[sender] = sent
                    if sender not in self._remembered and len(self._remembered) < self._limit:
                        self._remembered[sender] = None   # an acknowledger is confirmed alive
                break
        if not self._leading and sender in self._acks:
            lease = self._lease()
            if lease > now:
                # The last acknowledgement the quorum lacked: lead at once, not at the next tick.
                was_leading, old = self._leading, self._leader
                self._leading, self._lease_until, self._leader = True, lease, self.id
                self._term = max(self._term, self._standing_term)
                self._publish(was_leading, old)
                self._beat(now, on_schedule=False)   # tell the followers at once that we lead

    def _lease(self) -> float:
        """When the lease that the acknowledgements received so far give runs out."""
        need = self._need
        if need <= 1:
            return math.inf
        remembered = self._remembered
        times = sorted((t for p, t in self._acks.items() if p in remembered), reverse=True)
        if len(times) < need - 1:
            return -math.inf
        return times[need - 2] + self._lease_len

    def _abandon(self) -> None:
        """Stop leading or standing (a higher or winning heartbeat came; no resign)."""
        self._standing = self._leading = False
        self._lease_until = -math.inf
        self._next_heartbeat = math.inf
        self._acks.clear()
        self._sent.clear()

    def _resign(self, now: float, reason: str, hold_off: bool = False) -> None:
        self._count(reason)
        if hold_off:
            self._hold_off_until = now + SILENT_LEADER_FACTOR * self._timeout
        self._abandon()
        self._leader = None
        self._silent_since = now
        self._actions.append(Heartbeat(self._standing_term, resign=True, leader=self.id))

    def _evaluate(self, now: float, s: _Survey) -> None:
        need = quorum(max(s.base, self._expected), self._pct)
        standing_quorum = need > 0 and s.alive >= need
        if standing_quorum:
            if self._quorum_since is None:
                self._quorum_since = now
        else:
            self._quorum_since = None
        me = s.me
        can_lead = me is not None and me.eligible and me.state is ALIVE

        if not self._standing:
            self._leader = self._follow(now, s, standing_quorum and can_lead)
        if self._standing:
            self._need = need
            if not can_lead:
                self._resign(now, "stepped_down_ineligible")
            elif s.reachable < need:
                self._resign(now, "stepped_down_no_quorum_seen")
            else:
                self._hold_lease(now)

        if self._standing and now + _EPSILON >= self._next_heartbeat:
            self._beat(now)

    def _beat(self, now: float, on_schedule: bool = True) -> None:
        """Send a heartbeat now (and, ``on_schedule``, the next one an interval later)."""
        self._seq += 1
        self._sent[self._seq] = now
        if len(self._sent) > 2 * self._timeout / self._interval + 4:
            horizon = now - self._lease_len
            self._sent = {k: t for k, t in self._sent.items() if t >= horizon}
        self._actions.append(Heartbeat(self._standing_term, seq=self._seq, candidate=not self._leading,
                                       leader=self.id))
        if on_schedule:
            self._next_heartbeat = now + self._interval

    def _hold_lease(self, now: float) -> None:
        """Standing: lead while the acknowledgements give a lease; as a candidate, give up if
        none comes soon enough."""
        if self._acks and len(self._acks) > 2 * self._base + 8:   # forget acks of members long gone
            horizon = now - self._lease_len
            self._acks = {k: t for k, t in self._acks.items() if t >= horizon}
        lease = self._lease()
        if lease > now:
            self._leading, self._lease_until = True, lease
            self._term = max(self._term, self._standing_term)
            self._leader = self.id
            return
        if self._leading:
            self._count("lease_lapsed")
            self._leading, self._lease_until = False, -math.inf
            self._candidate_since = now
        self._leader = None
        if now - self._candidate_since > self._timeout + self._interval:
            # A view that shows a quorum that does not answer is stale (a partition the failure
            # detector has not caught up with): do not stand again until it has.
            self._resign(now, "stepped_down_no_quorum_acked", hold_off=True)

    def _follow(self, now: float, s: _Survey, may_stand: bool) -> NodeID | None:
        """Not standing: return the valid leader, standing ourselves when the time has come."""
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
            if p is not None and p.eligible and p.state is not LEAVING and self._heard_leads:
                return self._heard
            return None
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
        top = max(self._term, self._proposed)
        if top >= MAX_TERM:
            self._count("term_exhausted")
            return None
        self._proposed = self._standing_term = top + 1
        self._standing = True
        self._candidate_since = now
        self._acks.clear()
        self._sent.clear()
        self._next_heartbeat = now
        self._gone = None
        self._down_since = None
        self._count("elections")
        return None

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
        role = ("leader" if self._leading else "candidate" if self._standing
                else f"following {self._leader.short}" if self._leader else "no leader")
        return f"<Election {self.id.short} term {self._term}: {role}>"
