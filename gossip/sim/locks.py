"""The lock service in the simulator: every node runs a :class:`~gossip.locks.core.LockCore`
beside its election and its protocol core, and lock messages cross the same simulated network
(latency, jitter, loss, partitions) as everything else.

Each node's lock core sees what its election sees: the leader, whether it leads now (its
lease, on its own clock), the term, the quorum, and the eligible members of its membership. It
ticks every ``retry_interval`` and at its own deadlines, on its own (possibly drifting) clock.

Every node also runs a *worker*: it acquires one of a few lock names, holds it for a while
(renewing when it holds longer than its lease), releases it, pauses, and starts again. The
simulation records, in virtual (real) time, when each worker believed it held which lock
(from the grant to its release, to its lease's end on its own clock, or to its crash) and
checks the two safety properties over the whole run:

* **mutual exclusion**: no two of these spans of one name overlap;
* **fencing**: each grant of a name carries a token above every earlier grant's.

``safety_violations`` counts both (the bar is 0).

The ``locks`` scenario (``python -m gossip.sim --scenario locks --json``):

1. ``nodes`` nodes (7 by default) elect a leader and the workers start;
2. ``warmup`` seconds later the leader crashes (``regrant_after_leader_crash_s``: from the
   crash to the first grant by its successor);
3. 20 s later the network splits, ``split`` of the live nodes (40 %) with the leader on the
   small side, for ``partition_duration`` seconds (``minority_grants``: grants a leader
   decided during the split on a side without a quorum, the bar is 0; a grant decided before
   the split may still complete from acknowledgements sent before it);
4. it heals, and the run goes on to ``duration``.

Figures: ``grants`` and ``grants_per_s`` (grants a worker received, per virtual second),
``regrant_after_leader_crash_s``, ``minority_grants``, ``safety_violations``
(``overlaps`` + ``token_regressions``), ``lock_msgs_per_node_s``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..leader.election import LeaderConfig, quorum
from ..locks.base import Answered, Failed, GrantIssued, Granted, LockConfig, LockView, Renewed, Send
from ..locks.core import LockCore
from ..locks.messages import FencingToken, Message
from ..node import NodeID, NodeState
from .leader import LeaderSimulation
from .network import LinkModel

if TYPE_CHECKING:
    from .params import ScenarioParams

__all__ = ["LockSimulation", "LocksParams", "run_locks", "run_locks_scenario", "LOCKS_DEFAULTS", "Hold"]

LOCKS_DEFAULTS: dict[str, Any] = {"nodes": 7, "duration": 120.0, "loss": 0.05}
"""Defaults of the ``locks`` scenario (the CLI fills in what is not given)."""

_LEAVING = NodeState.LEAVING


@dataclasses.dataclass
class LocksParams:
    """Everything a lock simulation depends on.

    Attributes:
        nodes, seed, duration, loss, latency, jitter, reorder: the cluster and its network.
        ttl: the lease every worker asks for.
        names: how many lock names the workers compete for.
        hold: (shortest, longest) time a worker holds a lock; beyond ``ttl / 3`` it renews.
        pause: (shortest, longest) pause between two locks of one worker.
        timeout: how long a worker waits to acquire before it gives up and starts again.
        crash_leader_at: when the leader crashes (seconds after the first leader), or None.
        split_at: when the network splits (seconds after the first leader), or None.
        partition_duration: how long the split lasts.
        split: the share of the live nodes on the leader's (small) side.
        crash_holder_at: when a worker holding a lock (not the leader) crashes, or None.
        clock_drift: each node's clock runs this much fast or slow.
        max_clock_drift_rate: the drift the election and the leases assume.
        leader_timeout: the election's ``leader_timeout``.
    """

    nodes: int = 7
    seed: int = 1
    duration: float = 120.0
    loss: float = 0.05
    latency: float = 0.0005
    jitter: float = 0.0002
    reorder: float = 0.0
    ttl: float = 2.0
    names: int = 3
    hold: tuple[float, float] = (0.01, 0.3)
    pause: tuple[float, float] = (0.0, 0.2)
    timeout: float = 5.0
    crash_leader_at: float | None = 5.0
    split_at: float | None = 25.0
    partition_duration: float = 20.0
    split: float = 0.4
    crash_holder_at: float | None = None
    clock_drift: float = 0.0
    max_clock_drift_rate: float = 0.01
    leader_timeout: float = 3.0


@dataclasses.dataclass
class Hold:
    """One span during which a worker believed it held a lock (virtual seconds)."""

    name: str
    node: int
    token: FencingToken
    start: float
    end: float | None = None
    expires: float = math.inf       # virtual time of the lease's end on the holder's clock


class LockSimulation(LeaderSimulation):
    """A :class:`LeaderSimulation` whose nodes also run the lock service and a worker each.

    Args:
        config: the protocol configuration.
        p: the lock simulation's parameters.
        lock_config: the lock service's settings.
        leader_config: the election's settings.
    """

    def __init__(self, config: Config, p: LocksParams, lock_config: LockConfig | None = None,
                 leader_config: LeaderConfig | None = None) -> None:
        link = LinkModel(base_latency=p.latency, jitter=p.jitter, loss=p.loss, reorder=p.reorder)
        lc = leader_config or LeaderConfig(leader_timeout=p.leader_timeout,
                                           max_clock_drift_rate=p.max_clock_drift_rate)
        super().__init__(config, p.seed, link, lc, clock_drift=p.clock_drift)
        self.p = p
        self.lock_config = lock_config or LockConfig()
        self.locks: dict[int, LockCore] = {}
        self.work_rng = random.Random(self.root.getrandbits(64))
        self.holds: list[Hold] = []
        self._open: dict[int, Hold] = {}          # node -> its current hold
        self._handle: dict[int, int] = {}         # node -> the handle of its acquire or lease
        self._lock_wake: dict[int, float] = {}
        self._lock_views: dict[int, tuple[object, frozenset[NodeID]]] = {}
        self.grants_issued: list[tuple[float, int, str, FencingToken]] = []
        self.grants_received = 0
        self.lock_msgs = 0
        self.on_grant_issued: Callable[[int, float], None] | None = None
        """Called with (node, virtual time decided) for every grant a leader completes."""

    # ------------------------------------------------------------------ setup

    def start_locks(self, indices: list[int]) -> None:
        """Start a lock core and a worker on each node (workers from a random phase)."""
        drift = self.leader_config.max_clock_drift_rate
        for i in indices:
            core = LockCore(self.nodes[i].id, self.lock_config, drift, self.clock(i))
            self.locks[i] = core
            self._update_lock_view(i)
            self._drain_locks(i)
            self.schedule(self.now + self.work_rng.uniform(0, 1.0), functools.partial(self._work, i))

    def crash(self, index: int) -> None:
        """Kill a node: its election, its lock core and its worker die with it."""
        super().crash(index)
        self.locks.pop(index, None)
        hold = self._open.pop(index, None)
        if hold is not None:
            hold.end = min(self.now, hold.expires)

    # ------------------------------------------------------------------ the view

    def _lock_view(self, index: int) -> LockView:
        e = self.elections.get(index)
        if e is None:
            return LockView()
        peers = self.view(index)
        cached = self._lock_views.get(index)
        if cached is not None and cached[0] is peers:
            replicas = cached[1]
        else:
            me = self.nodes[index].id
            replicas = frozenset(p.id for p in peers if p.eligible and p.state is not _LEAVING and p.id != me)
            self._lock_views[index] = (peers, replicas)
        now = self.clock(index)
        return LockView(leader=e.leader, leading=e.leads(now), term=e.term, replicas=replicas,
                        need=quorum(e.quorum_base, self.leader_config.quorum_percentage),
                        eligible=self._eligible(index))

    def _update_lock_view(self, index: int) -> None:
        core = self.locks.get(index)
        if core is not None and self.nodes[index].running:
            view = self._lock_view(index)
            if view != core.view:
                core.update_view(self.clock(index), view)

    def _drain_election(self, index: int) -> None:
        super()._drain_election(index)
        if index in self.locks:
            self._update_lock_view(index)
            self._drain_locks(index)

    # ------------------------------------------------------------------ driving the lock cores

    def _lock_tick(self, index: int, when: float) -> None:
        core = self.locks.get(index)
        if core is None or self._lock_wake.get(index) != when or not self.nodes[index].running:
            return
        del self._lock_wake[index]
        self._update_lock_view(index)
        core.tick(max(self.clock(index), when))
        self._drain_locks(index)

    def _drain_locks(self, index: int) -> None:
        core = self.locks.get(index)
        if core is None:
            return
        for a in core.actions_to_perform():
            if isinstance(a, Send):
                for dst_id in a.to:
                    dst = self.by_id.get(dst_id)
                    if dst is not None:
                        self._send_lock(index, dst, a.msg)
            elif isinstance(a, Granted):
                self._granted(index, a)
            elif isinstance(a, Renewed):
                hold = self._open.get(index)
                if hold is not None:
                    hold.expires = self._virtual(index, a.expires)
            elif isinstance(a, Failed):
                self._failed(index, a)
            elif isinstance(a, GrantIssued):
                decided = self._virtual(index, a.decided)
                self.grants_issued.append((decided, index, a.name, a.token))
                if self.on_grant_issued is not None:
                    self.on_grant_issued(index, decided)
            else:
                assert isinstance(a, Answered)
        deadline = core.next_deadline()
        if deadline < math.inf and self._lock_wake.get(index, math.inf) > deadline:
            self._lock_wake[index] = deadline
            self.schedule(max(self.now, self._virtual(index, deadline)),
                          functools.partial(self._lock_tick, index, deadline))

    def _send_lock(self, src: int, dst: int, msg: Message) -> None:
        self.lock_msgs += 1
        d = self.net.delay(src, dst, self.now, False)
        if d is not None:
            src_id = self.nodes[src].id
            self.schedule(self.now + d, lambda: self._deliver_lock(dst, src_id, msg))

    def _deliver_lock(self, dst: int, src_id: NodeID, msg: Message) -> None:
        core = self.locks.get(dst)
        if core is None or not self.nodes[dst].running:
            return
        self._update_lock_view(dst)
        core.receive(self.clock(dst), src_id, msg)
        self._drain_locks(dst)

    # ------------------------------------------------------------------ the workers

    def _work(self, index: int) -> None:
        """Start the worker's next lock."""
        core = self.locks.get(index)
        if core is None or index in self._handle:
            return
        p = self.p
        name = f"lock-{self.work_rng.randrange(p.names)}"
        self._handle[index] = core.acquire(self.clock(index), name, p.ttl, p.timeout)
        self._drain_locks(index)

    def _granted(self, index: int, g: Granted) -> None:
        self.grants_received += 1
        hold = Hold(g.name, index, g.token, self.now, expires=self._virtual(index, g.expires))
        self.holds.append(hold)
        self._open[index] = hold
        p = self.p
        length = self.work_rng.uniform(*p.hold)
        self.schedule(self.now + length, functools.partial(self._finish_hold, index, g.handle))
        if length > p.ttl / 3:
            self.schedule(self.now + p.ttl / 3, functools.partial(self._renew, index, g.handle))

    def _renew(self, index: int, handle: int) -> None:
        core = self.locks.get(index)
        if core is None or self._handle.get(index) != handle or index not in self._open:
            return
        if core.renew(self.clock(index), handle, self.p.ttl):
            self._drain_locks(index)
            self.schedule(self.now + self.p.ttl / 3, functools.partial(self._renew, index, handle))

    def _finish_hold(self, index: int, handle: int) -> None:
        core = self.locks.get(index)
        if core is None or self._handle.get(index) != handle:
            return
        hold = self._open.pop(index, None)
        if hold is not None:
            hold.end = min(self.now, hold.expires)
        del self._handle[index]
        core.release(self.clock(index), handle)
        self._drain_locks(index)
        self.schedule(self.now + self.work_rng.uniform(*self.p.pause), functools.partial(self._work, index))

    def _failed(self, index: int, f: Failed) -> None:
        if self._handle.get(index) != f.handle:
            return
        hold = self._open.pop(index, None)
        if hold is not None:
            hold.end = min(self.now, hold.expires)     # the lease ended on the holder's clock
        del self._handle[index]
        self.schedule(self.now + self.work_rng.uniform(*self.p.pause), functools.partial(self._work, index))

    # ------------------------------------------------------------------ safety

    def violations(self) -> tuple[int, int]:
        """Check the whole run: ``(overlaps, token_regressions)``.

        ``overlaps`` counts pairs of holds of one name that overlap in virtual time (a span
        ends at its release, its lease's end on the holder's clock, or its holder's crash;
        spans are half-open). ``token_regressions`` counts grants whose token is not above
        every earlier grant's token for that name.
        """
        by_name: dict[str, list[Hold]] = {}
        for h in self.holds:
            by_name.setdefault(h.name, []).append(h)
        overlaps = regressions = 0
        for holds in by_name.values():
            holds.sort(key=lambda h: (h.start, h.token))
            open_ends: list[float] = []
            best = FencingToken(0, 0)
            for h in holds:
                end = h.end if h.end is not None else min(self.now, h.expires)
                open_ends = [e for e in open_ends if e > h.start]
                overlaps += len(open_ends)
                if end > h.start:
                    open_ends.append(end)
                if h.token <= best:
                    regressions += 1
                best = max(best, h.token)
        return overlaps, regressions

    def summary(self) -> dict[str, Any]:
        """The simulation's and the election's figures, and the lock service's."""
        out = super().summary()
        overlaps, regressions = self.violations()
        ns = max(self.node_seconds, 1e-9)
        recoveries = sum(c.stats.get("recoveries", 0) for c in self.locks.values())
        out.update({
            "grants": self.grants_received,
            "grants_per_s": round(self.grants_received / max(self.now, 1e-9), 2),
            "overlaps": overlaps,
            "token_regressions": regressions,
            "safety_violations": overlaps + regressions,
            "lock_msgs_per_node_s": round(self.lock_msgs / ns, 2),
            "recoveries": recoveries,
        })
        return out


def run_locks(p: LocksParams, config: Config | None = None) -> LockSimulation:
    """Run a lock simulation with the faults ``p`` names (see the module documentation) and
    return it; :meth:`LockSimulation.summary` carries the figures."""
    if p.nodes < 2:
        raise ValueError(f"the locks scenario needs at least 2 nodes, got {p.nodes}")
    sim = LockSimulation(config or Config.lan(), p)
    everyone = list(range(p.nodes))
    for _ in everyone:
        sim.add_node()
    sim.bootstrap(everyone)
    sim.start_elections(everyone)
    sim.start_locks(everyone)
    figures = sim.leader_figures
    sim.run_until(min(p.duration, 60.0), stop=lambda: sim.agreed() is not None)
    first = sim.agreed()
    figures["leader_elected_s"] = None if first is None else round(sim.now, 3)
    figures["regrant_after_leader_crash_s"] = None
    figures["minority_grants"] = 0
    origin = sim.now
    crashed: list[tuple[float, int]] = []

    def granter() -> int | None:
        active = [i for i, c in sim.locks.items() if c.grantor.active]
        if len(active) == 1:
            return active[0]
        leaders = sim.leaders()
        return leaders[0] if leaders else None

    def crash_leader() -> None:
        victim = granter()
        if victim is not None:
            crashed.append((sim.now, victim))
            sim.crash(victim)

    def on_grant(index: int, decided: float) -> None:
        if crashed and figures["regrant_after_leader_crash_s"] is None and index != crashed[0][1]:
            figures["regrant_after_leader_crash_s"] = round(sim.now - crashed[0][0], 3)
        if split_at[0] <= decided < heal_at[0] and any(index in s for s in short):
            figures["minority_grants"] += 1

    split_at, heal_at = [math.inf], [math.inf]
    short: list[set[int]] = []       # the sides of the split without a quorum

    def split() -> None:
        live = [i for i in everyone if sim.nodes[i].running]
        lead = granter()
        n_side = max(1, min(len(live) - 1, round(len(live) * p.split)))
        pool = [i for i in live if i != lead]
        side = set(sim.root.sample(pool, n_side - (1 if lead is not None else 0)))
        if lead is not None:
            side.add(lead)
        other = {i for i in everyone if i not in side}
        sim.net.partition([sorted(side), sorted(other)])
        need = quorum(p.nodes, sim.leader_config.quorum_percentage)
        short.extend(s for s in (side, {i for i in other if i in live}) if len(s) < need)
        split_at[0], heal_at[0] = sim.now, sim.now + p.partition_duration
        figures.update(split_at_s=round(sim.now, 3), leader_side=len(side),
                       sides_without_quorum=len(short))
        sim.schedule(heal_at[0], sim.net.heal)

    def crash_holder() -> None:
        holders = [i for i in sim._open if i not in sim.leaders()]
        if holders:
            sim.crash(sim.root.choice(sorted(holders)))

    sim.on_grant_issued = on_grant
    if p.crash_leader_at is not None:
        sim.schedule(origin + p.crash_leader_at, crash_leader)
    if p.split_at is not None:
        sim.schedule(origin + p.split_at, split)
    if p.crash_holder_at is not None:
        sim.schedule(origin + p.crash_holder_at, crash_holder)
    sim.run_until(p.duration)
    return sim


def run_locks_scenario(p: ScenarioParams) -> LockSimulation:
    """The ``locks`` scenario of ``python -m gossip.sim`` (its flags mapped onto
    :class:`LocksParams`)."""
    assert p.nodes is not None and p.duration is not None
    lp = LocksParams(nodes=p.nodes, seed=p.seed, duration=p.duration, loss=p.loss or 0.0, latency=p.latency,
                     jitter=p.jitter, reorder=p.reorder, partition_duration=p.partition_duration,
                     crash_leader_at=p.warmup, clock_drift=p.clock_drift,
                     max_clock_drift_rate=p.max_clock_drift_rate, leader_timeout=p.leader_timeout,
                     split=0.4 if p.split == 0.5 else p.split)
    return run_locks(lp, Config.preset(p.config, lifeguard_enabled=p.lifeguard))
