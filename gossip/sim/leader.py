"""Leader election in the simulator: every node runs an :class:`~gossip.leader.election.Election`
beside its protocol core, and heartbeats and their acknowledgements cross the same simulated
network (latency, jitter, loss, partitions) as the protocol's own packets.

Each node's election sees exactly what its protocol core sees: its members and their states.
It ticks every ``check_interval`` (from a random phase) and re-checks soon after each change of
its membership, as the threaded host does; a leader's heartbeats go directly to every member
that has not left, dead ones included.

Clocks: with ``clock_drift`` > 0 each node's election reads its own clock, which runs at
``1 - clock_drift`` or ``1 + clock_drift`` times the virtual time (chosen per node) from an
arbitrary offset: a lease and a promise last their length on the clock of the node that keeps
them, and the safety invariant is checked in virtual (real) time. The election assumes rates
within ``LeaderConfig.max_clock_drift_rate`` of real time; a larger ``clock_drift`` shows what happens
when that assumption fails.

The ``leader`` scenario (``python -m gossip.sim --scenario leader``):

1. N nodes that know each other elect a leader;
2. ``warmup`` seconds later the network splits 60/40, the leader on the 40 % side (the hard
   case: the minority must give up its leader, the majority must elect a new one);
3. ``partition_duration`` seconds later the network heals;
4. the run ends 30 s after every node follows one single leader again (or at ``duration``).

It reports the most simultaneous leaders on each side during the split, how long the minority
kept a leader, the time from the heal to a single leader and to every node following it, and
the membership's own re-convergence (``converged_s``, from the heal).
"""

from __future__ import annotations

import collections
import functools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..leader.election import (
    BECAME_LEADER, ELECTED, LOST, STEPPED_DOWN, Ack, Election, Heartbeat, LeaderConfig, Message, Notify,
    Peer, SendAck,
)
from ..node import NodeID, NodeState
from ..protocol.actions import MemberEvent
from .network import LinkModel
from .simulation import Simulation

if TYPE_CHECKING:
    from .scenarios import ScenarioParams

__all__ = ["LeaderSimulation", "run_leader_scenario", "run_split_scenario", "LEADER_DEFAULTS", "SPLIT_DEFAULTS"]

LEADER_DEFAULTS: dict[str, Any] = {"nodes": 100, "duration": 300.0, "loss": 0.0}
"""Defaults of the ``leader`` scenario (the CLI fills in what is not given)."""

MINORITY_SHARE = 0.4
TAIL = 30.0
"""Seconds the scenario keeps running after agreement, to see that it holds."""

_LEAVING = NodeState.LEAVING
_ALIVE = NodeState.ALIVE


class LeaderSimulation(Simulation):
    """A :class:`Simulation` whose nodes also elect a leader.

    Args:
        config: the protocol configuration.
        seed: the one seed of the run.
        link: the network model.
        leader_config: the election settings every node uses.
        eligible: the indices of the nodes that may lead (None: all); the others follow.
    """

    def __init__(self, config: Config, seed: int, link: LinkModel | None = None,
                 leader_config: LeaderConfig | None = None, eligible: set[int] | None = None,
                 clock_drift: float = 0.0) -> None:
        super().__init__(config, seed, link)
        self.leader_config = leader_config or LeaderConfig()
        self.eligible = eligible
        self.clock_drift = clock_drift
        self.rates: dict[int, float] = {}
        """Each node's clock rate (its seconds per virtual second)."""
        self._offsets: dict[int, float] = {}
        self.elections: dict[int, Election] = {}
        self.leader_rng = random.Random(self.root.getrandbits(64))
        self.leading: set[int] = set()
        self.follow: dict[int, NodeID | None] = {}
        self.follow_count: collections.Counter[NodeID | None] = collections.Counter()
        self.heartbeats = 0
        self.election_msgs = 0
        self.leader_changes = 0
        self.elections_won: list[tuple[float, int]] = []
        self.on_change: Callable[[bool], None] | None = None
        """Called after every change of who leads (``True``) or of whom a node follows."""
        self.leader_figures: dict[str, Any] = {}
        self.lead_intervals: list[list[Any]] = []
        """Every span of leadership as ``[start, end, index]`` (``end`` None while it lasts)."""
        self._lead_open: dict[int, list[Any]] = {}
        self.last_heartbeat: dict[int, float] = {}
        """When each node last sent a heartbeat (virtual time)."""
        self._views: dict[int, list[Peer] | None] = {}
        self._poked: set[int] = set()
        self._deadlines: dict[int, float] = {}
        self.on_event = self._member_event

    # ------------------------------------------------------------------ setup

    def start_elections(self, indices: list[int]) -> None:
        """Start an election on each node, ticking from a random phase."""
        interval = self.leader_config.check_interval
        for i in indices:
            node = self.nodes[i]
            if self.clock_drift:
                self.rates[i] = 1.0 + self.leader_rng.choice((-self.clock_drift, self.clock_drift))
                self._offsets[i] = self.leader_rng.uniform(0.0, 1e6)
            self.elections[i] = Election(node.id, self.leader_config, self.clock(i))
            self.follow[i] = None
            self.follow_count[None] += 1
            self.schedule(self.now + self.leader_rng.uniform(0, interval), functools.partial(self._tick, i))

    def clock(self, index: int) -> float:
        """Node ``index``'s own clock now (virtual time, unless clocks drift)."""
        rate = self.rates.get(index)
        return self.now if rate is None else self._offsets[index] + rate * self.now

    def _virtual(self, index: int, local: float) -> float:
        """The virtual time at which node ``index``'s clock shows ``local``."""
        rate = self.rates.get(index)
        return local if rate is None else (local - self._offsets[index]) / rate

    def crash(self, index: int) -> None:
        """Kill a node without a word; its election dies with it."""
        super().crash(index)
        self._forget(index)

    def leave(self, index: int, linger: float = 1.0) -> None:
        """Stop the node's election (a leader resigns), then leave gracefully, as a host does."""
        e = self.elections.get(index)
        if e is not None and self.nodes[index].running:
            e.stop(self.clock(index))
            self._drain_election(index)
            self._forget(index)
        super().leave(index, linger)

    def _forget(self, index: int) -> None:
        if index in self.elections:
            del self.elections[index]
            self.follow_count[self.follow.pop(index, None)] -= 1
            if index in self.leading:
                self.leading.discard(index)
                self._close_lead(index)
                self._leaders_changed()

    # ------------------------------------------------------------------ views

    def _eligible(self, index: int) -> bool:
        return self.eligible is None or index in self.eligible

    def view(self, index: int) -> list[Peer]:
        """Return node ``index``'s membership as its election sees it (cached until it changes)."""
        cached = self._views.get(index)
        if cached is not None:
            return cached
        node = self.nodes[index]
        by_id = self.by_id
        peers = [Peer(node.id, _LEAVING if node.left else _ALIVE, self._eligible(index))]
        for m in node.core.members.values():
            j = by_id.get(m.node)
            peers.append(Peer(m.node, m.state, j is not None and self._eligible(j)))
        self._views[index] = peers
        return peers

    def _member_event(self, observer: int, ev: MemberEvent) -> None:
        self._views[observer] = None
        if observer in self.elections and observer not in self._poked:
            self._poked.add(observer)
            self.schedule(self.now, lambda: self._poke(observer))

    # ------------------------------------------------------------------ driving the cores

    def _poke(self, index: int) -> None:
        self._poked.discard(index)
        e = self.elections.get(index)
        if e is not None and self.nodes[index].running:
            e.tick(self.clock(index), self.view(index))
            self._drain_election(index)

    def _tick(self, index: int) -> None:
        e = self.elections.get(index)
        node = self.nodes[index]
        if e is None or not node.running:
            return
        e.tick(self.clock(index), self.view(index))
        self._drain_election(index)
        period = self.leader_config.check_interval / self.rates.get(index, 1.0)
        self.schedule(self.now + period, lambda: self._tick(index))

    def _deliver(self, dst: int, src_id: NodeID, msg: Message) -> None:
        e = self.elections.get(dst)
        if e is None or not self.nodes[dst].running:
            return
        if isinstance(msg, Ack):  # only the sender's record is read
            m = self.nodes[dst].core.members.get(src_id)
            j = self.by_id.get(src_id)
            if m is not None and j is not None:
                e.receive(self.clock(dst), src_id, msg, (Peer(src_id, m.state, self._eligible(j)),))
                self._drain_election(dst)
            return
        e.receive(self.clock(dst), src_id, msg, self.view(dst))
        self._drain_election(dst)

    def _drain_election(self, index: int) -> None:
        """Carry out what node ``index``'s election asked for."""
        e = self.elections.get(index)
        if e is None:
            return
        for a in e.actions_to_perform():
            if isinstance(a, Heartbeat):
                self._send_heartbeats(index, a)
            elif isinstance(a, SendAck):
                dst = self.by_id.get(a.node)
                if dst is not None:
                    self._send(index, dst, Ack(a.term, a.seq))
            else:
                self._note(index, a)
        deadline = e.next_deadline()
        if deadline < math.inf and self._deadlines.get(index) != deadline:
            # A lease ends between ticks: check it exactly then, so leadership ends on time.
            self._deadlines[index] = deadline
            self.schedule(max(self.now, self._virtual(index, deadline)), lambda: self._deadline(index, deadline))

    def _deadline(self, index: int, when: float) -> None:
        e = self.elections.get(index)
        if e is None or self._deadlines.get(index) != when or not self.nodes[index].running:
            return
        del self._deadlines[index]
        # (the virtual time of a deadline on a drifting clock is rounded: never tick before it)
        e.tick(max(self.clock(index), when), self.view(index))
        self._drain_election(index)

    def _send_heartbeats(self, index: int, hb: Heartbeat) -> None:
        self.last_heartbeat[index] = self.now
        for m in self.nodes[index].core.members.values():
            if m.state is not _LEAVING:
                dst = self.by_id.get(m.node)
                if dst is not None:
                    self.heartbeats += 1
                    self._send(index, dst, hb)

    def _send(self, src: int, dst: int, msg: Message) -> None:
        """One best-effort datagram over the simulated network (lost, delayed or cut like any)."""
        self.election_msgs += 1
        d = self.net.delay(src, dst, self.now, False)
        if d is not None:
            src_id = self.nodes[src].id
            self.schedule(self.now + d, lambda: self._deliver(dst, src_id, msg))

    def _note(self, index: int, n: Notify) -> None:
        if n.event is BECAME_LEADER:
            self.leading.add(index)
            self.elections_won.append((self.now, index))
            span = [self.now, None, index]
            self.lead_intervals.append(span)
            self._lead_open[index] = span
            self._leaders_changed()
        elif n.event is STEPPED_DOWN:
            if index in self.leading:
                self.leading.discard(index)
                self._close_lead(index)
                self._leaders_changed()
        elif n.event is ELECTED or n.event is LOST:
            new = n.node if n.event is ELECTED else None
            self.follow_count[self.follow.get(index)] -= 1
            self.follow[index] = new
            self.follow_count[new] += 1
            if self.on_change is not None:
                self.on_change(False)

    def _close_lead(self, index: int) -> None:
        span = self._lead_open.pop(index, None)
        if span is not None:
            span[1] = self.now

    def _leaders_changed(self) -> None:
        self.leader_changes += 1
        if self.on_change is not None:
            self.on_change(True)

    # ------------------------------------------------------------------ queries

    def leaders(self) -> list[int]:
        """Return the indices of the nodes that lead now, sorted."""
        return sorted(self.leading)

    def agreed(self) -> int | None:
        """Return the single leader every running election follows, or None."""
        if len(self.leading) != 1:
            return None
        (i,) = self.leading
        return i if self.follow_count[self.nodes[i].id] == len(self.elections) else None


    def overlaps(self) -> tuple[int, float, int]:
        """Check the safety invariant over the whole run: never two leaders at the same instant.

        Returns ``(pairs, seconds, most)``: how many pairs of leadership spans (of different
        nodes) overlap in virtual time, for how long in all, and the most nodes leading at once.
        Spans are half-open (a node that steps down at ``t`` no longer leads at ``t``), so a
        hand-over at one instant is no overlap.
        """
        edges: list[tuple[float, int]] = []
        for start, end, _ in self.lead_intervals:
            stop = self.now if end is None else end
            if stop > start:
                edges.append((start, 1))
                edges.append((stop, -1))
        edges.sort()                 # at one instant, ends (-1) come before starts (+1)
        pairs, seconds, most, level, since = 0, 0.0, 0, 0, 0.0
        for t, step in edges:
            if level > 1:
                seconds += t - since
            if step > 0:
                pairs += level       # the new span overlaps every span open now
            level += step
            most = max(most, level)
            since = t
        return pairs, seconds, most

    def summary(self) -> dict[str, Any]:
        """The simulation's figures plus the election's (:attr:`leader_figures`)."""
        out = super().summary()
        out.update(self.leader_figures)
        return out


class _Tracker:
    """Follows the leaders through the scenario's phases and integrates the figures."""

    def __init__(self, sim: LeaderSimulation, minority: set[int]) -> None:
        self.sim = sim
        self.minority = minority
        self.phase = "before"
        self.split_at = self.heal_at = 0.0
        self.max_majority = self.max_minority = self.max_after = 0
        self.minority_none_since: float | None = None
        self.majority_one_at: float | None = None
        self.multi = 0.0
        self.multi_since: float | None = None
        self.won_at_split = 0
        self.minority_elections = 0
        self.last_change_after: float | None = None
        self.agreed_at: float | None = None
        self.changes_after_agreement = 0

    def __call__(self, leaders_changed: bool = True) -> None:
        sim, now = self.sim, self.sim.now
        leaders = sim.leading
        if len(leaders) > 1 and self.multi_since is None:
            self.multi_since = now
        elif len(leaders) <= 1 and self.multi_since is not None:
            self.multi += now - self.multi_since
            self.multi_since = None
        if self.phase == "split":
            on_minority = sum(1 for i in leaders if i in self.minority)
            on_majority = len(leaders) - on_minority
            self.max_majority = max(self.max_majority, on_majority)
            self.max_minority = max(self.max_minority, on_minority)
            if on_minority:
                self.minority_none_since = None
            elif self.minority_none_since is None:
                self.minority_none_since = now
            if on_majority == 1 and self.majority_one_at is None:
                self.majority_one_at = now
        elif self.phase == "healed":
            self.max_after = max(self.max_after, len(leaders))
            if leaders_changed:
                self.last_change_after = now
            if self.agreed_at is None:
                if sim.agreed() is not None:
                    self.agreed_at = now
            elif leaders_changed:
                self.changes_after_agreement += 1

    def split(self) -> None:
        self.phase, self.split_at = "split", self.sim.now
        self.won_at_split = len(self.sim.elections_won)
        self()

    def heal(self) -> None:
        won = self.sim.elections_won[self.won_at_split:]
        self.minority_elections = sum(1 for _, i in won if i in self.minority)
        self.phase, self.heal_at = "healed", self.sim.now
        self()

    def finish(self) -> dict[str, Any]:
        sim = self.sim
        if self.multi_since is not None:
            self.multi += sim.now - self.multi_since

        def since(t: float | None, origin: float) -> float | None:
            return None if t is None else round(t - origin, 3)

        single = None
        if self.phase == "healed" and len(sim.leading) == 1:
            single = since(self.last_change_after or self.heal_at, self.heal_at)
        return {
            "leaders_max_majority": self.max_majority,
            "leaders_max_minority": self.max_minority,
            "minority_leader_s": since(self.minority_none_since, self.split_at),
            "majority_leader_s": since(self.majority_one_at, self.split_at),
            "minority_elections": self.minority_elections,
            "multi_leader_s": round(self.multi, 3),
            "leaders_max_after_heal": self.max_after,
            "heal_to_single_leader_s": single,
            "heal_to_agreement_s": since(self.agreed_at, self.heal_at),
            "leader_changes_after_agreement": self.changes_after_agreement,
            "term": max((e.term for e in sim.elections.values()), default=0),
            "elections": len(sim.elections_won),
            "heartbeats": sim.heartbeats,
            "election_msgs_per_node_s": round(sim.election_msgs / max(sim.node_seconds, 1e-9), 2),
        }


def _elect(p: ScenarioParams, cfg: Config, lc: LeaderConfig, clock_drift: float,
           limit: float) -> tuple[LeaderSimulation, int | None]:
    """Build ``p.nodes`` nodes that know each other, start their elections and run until they
    agree on a leader (or ``limit``); return the simulation and the leader."""
    assert p.nodes is not None
    link = LinkModel(base_latency=p.latency, jitter=p.jitter, loss=p.loss or 0.0, reorder=p.reorder,
                     burst_loss=p.burst_loss)
    sim = LeaderSimulation(cfg, p.seed, link, lc, clock_drift=clock_drift)
    everyone = list(range(p.nodes))
    for _ in everyone:
        sim.add_node()
    sim.bootstrap(everyone)
    sim.start_elections(everyone)
    sim.run_until(limit, stop=lambda: sim.agreed() is not None)
    first = sim.agreed()
    sim.leader_figures["leader_elected_s"] = None if first is None else round(sim.now, 3)
    return sim, first


def run_leader_scenario(p: ScenarioParams) -> LeaderSimulation:
    """Run the ``leader`` scenario (see the module documentation) and return the simulation,
    whose :meth:`~LeaderSimulation.summary` carries the election figures."""
    assert p.nodes is not None and p.duration is not None
    if p.nodes < 2:
        raise ValueError(f"the leader scenario needs at least 2 nodes, got {p.nodes}")
    sim, first = _elect(p, Config.preset(p.config, lifeguard_enabled=p.lifeguard), LeaderConfig(), 0.0,
                        p.duration)
    figures = sim.leader_figures
    everyone = list(range(p.nodes))
    if first is None:
        return sim
    n_minority = max(1, min(p.nodes - 1, round(p.nodes * MINORITY_SHARE)))
    minority = {first, *sim.root.sample([i for i in everyone if i != first], n_minority - 1)}
    majority = [i for i in everyone if i not in minority]
    split_at = sim.now + p.warmup
    heal_at = split_at + p.partition_duration
    figures.update(minority=len(minority), majority=len(majority), split_at_s=round(split_at, 3),
                   heal_at_s=round(heal_at, 3))
    track = _Tracker(sim, minority)
    sim.on_change = track

    def split() -> None:
        sim.net.partition([sorted(minority), majority])
        track.split()

    def heal() -> None:
        sim.net.heal()
        sim.watch_convergence()
        track.heal()

    sim.schedule(split_at, split)
    sim.schedule(heal_at, heal)
    sim.run_until(p.duration, stop=lambda: track.agreed_at is not None and sim.now >= track.agreed_at + TAIL)
    figures.update(track.finish())
    return sim


SPLIT_DEFAULTS: dict[str, Any] = {"nodes": 5, "duration": 300.0, "loss": 0.0}
"""Defaults of the ``leader-split`` scenario."""

SPLIT_TAIL = 10.0
"""Seconds the ``leader-split`` scenario runs on once the healed cluster is one again."""


def run_split_scenario(p: ScenarioParams) -> LeaderSimulation:
    """Run the ``leader-split`` scenario and return the simulation (figures in its summary).

    A small cluster elects a leader; then the network splits at a chosen phase of the leader's
    heartbeat (``phase``: the fraction of ``check_interval`` after one of its heartbeats; drawn
    from the seed when None), the leader's side holding ``split`` of the nodes; ``partition_duration``
    seconds later it heals. ``retention`` overrides ``dead_node_retention_period`` (a split longer
    than it makes each side forget the other). ``clock_drift`` makes each node's clock run that
    much fast or slow (``max_clock_drift_rate`` is what the election assumes). The run ends
    :data:`SPLIT_TAIL` seconds after the
    healed cluster is one again (every node sees every other alive and follows one leader), or
    at ``duration``.

    Figures: ``overlap_pairs``, ``overlap_s`` and ``leaders_max`` check the safety invariant
    (never two nodes leading at the same virtual instant, over the whole run);
    ``elections_leader_side`` and ``elections_other_side`` count the elections won during the
    split on each side; ``heal_to_agreement_s`` and ``heal_to_one_cluster_s`` time the heal.
    """
    assert p.nodes is not None and p.duration is not None
    if p.nodes < 2:
        raise ValueError(f"the leader-split scenario needs at least 2 nodes, got {p.nodes}")
    overrides: dict[str, Any] = {"lifeguard_enabled": p.lifeguard}
    if p.retention is not None:
        overrides["dead_node_retention_period"] = p.retention
    lc = LeaderConfig(leader_timeout=p.leader_timeout, max_clock_drift_rate=p.max_clock_drift_rate)
    sim, first = _elect(p, Config.preset(p.config, **overrides), lc, p.clock_drift, min(p.duration, 60.0))
    figures = sim.leader_figures
    everyone = list(range(p.nodes))
    if first is None:
        return sim
    n_side = max(1, min(p.nodes - 1, round(p.nodes * p.split)))
    side = {first, *sim.root.sample([i for i in everyone if i != first], n_side - 1)}
    other = [i for i in everyone if i not in side]
    phase = sim.root.random() if p.phase is None else p.phase
    interval = lc.check_interval
    beat = sim.last_heartbeat.get(first, sim.now)
    split_at = beat + math.ceil(max(p.warmup, 0.0) / interval + 1) * interval + phase * interval
    heal_at = split_at + p.partition_duration
    figures.update(leader_side=len(side), other_side=len(other), phase=round(phase, 4),
                   split_at_s=round(split_at, 3), heal_at_s=round(heal_at, 3))
    won_before = [0]
    healed_at: list[float] = []
    agreed_at: list[float] = []
    one_at: list[float] = []

    def split() -> None:
        sim.net.partition([sorted(side), other])
        won_before[0] = len(sim.elections_won)

    def heal() -> None:
        sim.net.heal()
        healed_at.append(sim.now)
        won = sim.elections_won[won_before[0]:]
        figures["elections_leader_side"] = sum(1 for _, i in won if i in side)
        figures["elections_other_side"] = sum(1 for _, i in won if i not in side)
        sim.watch_convergence()

    def done() -> bool:
        if not healed_at:
            return False
        if not agreed_at and sim.agreed() is not None:
            agreed_at.append(sim.now)
        if not one_at and sim.converged_at is not None:
            one_at.append(sim.converged_at)
        if agreed_at and one_at and sim.agreed() is None:
            agreed_at.clear()   # it did not hold: measure again
        return bool(agreed_at and one_at) and sim.now >= max(agreed_at[0], one_at[0]) + SPLIT_TAIL

    sim.schedule(split_at, split)
    sim.schedule(heal_at, heal)
    sim.run_until(p.duration, stop=done)
    pairs, seconds, most = sim.overlaps()
    figures.update(
        overlap_pairs=pairs, overlap_s=round(seconds, 6), leaders_max=most,
        heal_to_agreement_s=round(agreed_at[0] - heal_at, 3) if agreed_at else None,
        heal_to_one_cluster_s=round(one_at[0] - heal_at, 3) if one_at else None,
        term=max((e.term for e in sim.elections.values()), default=0),
        elections=len(sim.elections_won),
    )
    return sim
