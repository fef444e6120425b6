"""What the core learns about its members beyond their state: provenance, flaps, partitions.

:class:`Insight` watches the core's parts: the member table tells it of every state change,
addition and removal; the suspicions and the merge rules of every accusation, confirmation,
refutation and verdict (its methods are their watcher hooks). It composes

* :class:`~.provenance.ProvenanceBook`: who accused each member, who confirmed, how it ended;
* :class:`~.flap.FlapTracker`: flap scores, :class:`~.flap.MemberFlapping`, and damping;
* :class:`~.partition.PartitionDetector`: :class:`~.partition.PartitionSuspected` and
  :class:`~.partition.PartitionHealed`.

Its events are actions like the core's own (drained with ``actions_to_perform()``), written to
the core's outbox right after the state change that caused them. Hosts deliver them to users
in that order: the engine on its event thread (``Cluster.handle_cluster_event_func``), the simulator to its
``on_cluster_event`` observer.

Pure logic: no clock, no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from ..config import Config
from ..joining import JoinAttemptFailed, JoinSucceeded
from ..messages import Dead, Suspect
from ..node import NodeID, NodeState
from .actions import EVENT_STATE, MemberEvent, MemberRefused, Trace, TraceValue
from .flap import FlapTracker, MemberFlapping
from .membership import LocalNode, Member
from .outbox import T_INSIGHT, Outbox
from .partition import PartitionDetector, PartitionHealed, PartitionSuspected
from .provenance import Explanation, ProvenanceBook, SuspicionEpisode

__all__ = ["Insight", "ClusterEvent", "CLUSTER_EVENTS"]

ClusterEvent = Union[MemberFlapping, PartitionSuspected, PartitionHealed, MemberRefused,
                     JoinSucceeded, JoinAttemptFailed]
"""An event about the cluster beyond one member's state change (the join events come from the
engine's join in the background, never from the core)."""

CLUSTER_EVENTS = (MemberFlapping, PartitionSuspected, PartitionHealed, MemberRefused,
                  JoinSucceeded, JoinAttemptFailed)
"""The :data:`ClusterEvent` classes, for ``isinstance`` checks."""

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


class Insight:
    """The bookkeeping of one core (watcher of its member table, suspicions and merge rules).

    Args:
        config: the protocol's configuration (the ``flap_*``, ``partition_*`` and
            ``suspicion_history_size`` fields).
        out: the core's outbox: events go there, and timers of kind ``T_INSIGHT``
            (:meth:`tick` runs them).
        local: this node's own record.
        members: the member table's members, read only.
        counts: the member table's count of members by state, read only.
    """

    def __init__(self, config: Config, out: Outbox, local: LocalNode, members: Mapping[NodeID, Member],
                 counts: Mapping[NodeState, int]) -> None:
        cfg = config
        self.out = out
        self.local = local
        self.members = members
        self.counts = counts
        self.book = ProvenanceBook(cfg.suspicion_history_size)
        self.flaps = FlapTracker(cfg.flap_window, cfg.flap_threshold)
        self.partitions = PartitionDetector(cfg.partition_threshold, cfg.partition_window,
                                            cfg.partition_min_members,
                                            max(cfg.partition_window, cfg.state_sync_interval))
        self.damping = cfg.flap_damping
        self.hold = cfg.flap_damping_hold
        self.held: dict[NodeID, float] = {}   # damped members (users see them suspect) -> release
        self.source: NodeID | None = None     # the sender of the packet being received
        self.syncing = False                  # the core is merging a full-state exchange
        self.settle_at: float | None = None   # the timer set to end a partition whose returns settle
        if cfg.tracing is not False:
            self.book.on_close = self._trace_episode

    def _trace_episode(self, node: NodeID, ep: SuspicionEpisode) -> None:
        """Record a suspicion that ended as a span (``Config.tracing``), its provenance as
        attributes and its confirmations as events."""
        m = self.members.get(node)
        end = ep.started_at if ep.ended_at is None else ep.ended_at
        attrs: dict[str, TraceValue] = {
            "gossip.member.id": str(node), "gossip.member.addr": "" if m is None else m.addr,
            "gossip.suspicion.accuser": str(ep.accuser), "gossip.suspicion.via": ep.via,
            "gossip.suspicion.incarnation": ep.incarnation, "gossip.suspicion.timeout": ep.timeout,
            "gossip.suspicion.confirmations": len(ep.confirmations),
            "gossip.suspicion.outcome": ep.outcome,
        }
        if ep.relayed_by is not None:
            attrs["gossip.suspicion.relayed_by"] = str(ep.relayed_by)
        if ep.refuted_incarnation is not None:
            attrs["gossip.suspicion.refuted_incarnation"] = ep.refuted_incarnation
        if ep.declared_by is not None:
            attrs["gossip.suspicion.declared_by"] = str(ep.declared_by)
            attrs["gossip.suspicion.by_timeout"] = ep.by_timeout
        events: list[tuple[str, float, dict[str, TraceValue]]] = []
        for c in ep.confirmations:
            events.append(("gossip.suspicion.confirmation", c.at, {
                "gossip.suspicion.confirmer": str(c.node), "gossip.suspicion.via": c.via,
                "gossip.suspicion.timeout": c.new_timeout}))
        self.out.emit(Trace("gossip.suspicion", ep.started_at, end, attrs, tuple(events)))

    # ------------------------------------------------------------------ how news arrived

    def _via(self, sender: NodeID) -> tuple[NodeID, str, NodeID | None]:
        """Return (who, via, relayed_by) for an accusation by ``sender`` now being handled."""
        src = self.source
        if self.syncing and src is not None and sender == src:
            return sender, "sync", src   # the peer's own verdict, from its full state
        if sender == self.local.id:
            # Our own: a failed probe (timer), or a remote verdict from a state exchange, which
            # the core turns into a suspicion of its own: name the peer that held it.
            return (sender, "probe", None) if src is None else (src, "sync", src)
        if src is None or src == sender:
            return sender, "direct", None
        return sender, "gossip", src

    # ------------------------------------------------------------------ hooks (from the parts)

    def suspected(self, now: float, m: Member, s: Suspect) -> None:
        """A suspicion of ``m`` started (``m.suspicion`` is the new one)."""
        susp = m.suspicion
        if susp is None:
            return
        who, via, relay = self._via(s.sender)
        self.book.suspected(m.node, now, who, m.incarnation, via, relay, susp.deadline() - susp.start,
                            susp.k)

    def confirmed(self, now: float, m: Member, s: Suspect) -> None:
        """An independent confirmation of ``m``'s suspicion counted."""
        susp = m.suspicion
        if susp is None:
            return
        who, via, relay = self._via(s.sender)
        self.book.confirmed(m.node, now, who, via, relay, susp.deadline() - susp.start)

    def alive_again(self, now: float, m: Member, incarnation: int) -> None:
        """``m`` is known alive at a higher ``incarnation`` (before its state changes)."""
        if m.state is SUSPECT:
            self.book.refuted(m.node, now, incarnation)
        elif m.state is DEAD:
            self.book.returned(m.node, now, incarnation)

    def dead(self, now: float, m: Member, d: Dead | None) -> None:
        """``m`` is declared dead: by this node's suspicion timer (``d`` None) or by ``d``."""
        if d is None:
            self.book.dead(m.node, now, m.incarnation, self.local.id, True, False, "probe", None)
            return
        who, via, relay = self._via(d.sender)
        self.book.dead(m.node, now, d.incarnation, d.sender, False, d.left, via, relay)

    def state_changed(self, now: float, m: Member, prev: NodeState) -> None:
        """``m`` went from ``prev`` to ``m.state``: emit the state event (unless damping holds it),
        then any flap or partition event it causes."""
        node, state = m.node, m.state
        score = self.flaps.flip(node, now)   # this change counts toward damping it already
        self._deliver_state(now, m, prev)
        if score is not None:
            self._emit(MemberFlapping(node, m.addr, score, self.flaps.window, self.flaps.threshold,
                                      self.damping, now))
        event: PartitionSuspected | PartitionHealed | None = None
        if prev is ALIVE and (state is SUSPECT or state is DEAD):
            members = self.members
            event = self.partitions.lost(
                node, now, self.counts[ALIVE] + self.counts[SUSPECT],
                lambda n: (x := members.get(n)) is not None and x.state is DEAD)
        elif state is ALIVE:
            event = self.partitions.back(node, now)
        elif state is LEAVING:
            event = self.partitions.back(node, now, gone=True)
        self._partition_event(now, event)

    def added(self, now: float, m: Member) -> None:
        """The table added ``m`` (new, or forgotten before): a partition's member may be back."""
        self._partition_event(now, self.partitions.back(m.node, now))

    def forget(self, now: float, m: Member) -> None:
        """The table forgot ``m``."""
        self.book.forget(m.node)
        self.flaps.forget(m.node)
        self.held.pop(m.node, None)
        self._partition_event(now, self.partitions.back(m.node, now, gone=True))

    def _partition_event(self, now: float, event: PartitionSuspected | PartitionHealed | None) -> None:
        if event is not None:
            self._emit(event)
            return
        deadline = self.partitions.deadline
        if deadline is not None and deadline != self.settle_at:
            self.settle_at = deadline
            self.out.schedule(deadline, T_INSIGHT, None)   # end it if no other comes back

    def tick(self, now: float) -> None:
        """Release damped members whose hold ran out; end a partition whose returns settled."""
        event = self.partitions.settle_check(now)
        if event is not None:
            self._emit(event)
        for node, until in list(self.held.items()):
            if until <= now:
                del self.held[node]
                m = self.members.get(node)
                if m is not None and m.state is ALIVE:
                    self._state_event(now, m, ALIVE, SUSPECT)

    # ------------------------------------------------------------------ damping

    def _deliver_state(self, now: float, m: Member, prev: NodeState) -> None:
        node, state = m.node, m.state
        if node in self.held:
            # Users see it suspect (a held member is alive, so this is a change away from alive):
            # suspect again, they see it already; dead or left, they are told.
            del self.held[node]
            if state is not SUSPECT:
                self._state_event(now, m, state, SUSPECT)
            return
        if (self.damping and state is ALIVE and (prev is SUSPECT or prev is DEAD)
                and self.flaps.flapping(node, now)):
            self._hold(now, node)
            if prev is DEAD:
                self._state_event(now, m, SUSPECT, DEAD)
            return
        self._state_event(now, m, state, prev)

    def _hold(self, now: float, node: NodeID) -> None:
        self.held[node] = now + self.hold
        self.out.schedule(now + self.hold, T_INSIGHT, None)

    def shown_state(self, node: NodeID, state: NodeState) -> NodeState:
        """The state users are shown for a member in ``state`` (suspect while damping holds it)."""
        return SUSPECT if state is ALIVE and node in self.held else state

    # ------------------------------------------------------------------ output and queries

    def _emit(self, event: MemberFlapping | PartitionSuspected | PartitionHealed) -> None:
        self.out.emit(event)

    def _state_event(self, now: float, m: Member, state: NodeState, prev: NodeState) -> None:
        self.out.emit(MemberEvent(EVENT_STATE, m.node, m.addr, state, prev, m.incarnation,
                                  m.meta, m.meta_stamp, m.pv, m.av, now))

    def explain(self, now: float, node: NodeID) -> Explanation | None:
        """Return why ``node`` is in its state (None if the core does not know it)."""
        local = self.local
        flaps = self.flaps
        size = self.book.history_size
        if node == local.id:
            return Explanation(node, local.addr, local.state, local.incarnation, True, (), size, 0,
                               flaps.window, False, False, now)
        m = self.members.get(node)
        if m is None:
            return None
        return Explanation(node, m.addr, m.state, m.incarnation, False, self.book.episodes(node), size,
                           flaps.score(node, now), flaps.window, flaps.flapping(node, now),
                           node in self.held, now)

    def flap_scores(self, now: float) -> dict[NodeID, int]:
        """Return every member's non-zero flap score."""
        return self.flaps.scores(now)
