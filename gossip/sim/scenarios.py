"""Named scenarios shared by the tests, the benchmarks and ``python -m gossip.sim``.

Each scenario builds a :class:`~gossip.sim.Simulation`, drives it and returns its summary plus
the scenario's parameters. Defaults are the settings the project's acceptance bar names:

=========  ======  ==========================================================================
scenario   nodes   what happens
=========  ======  ==========================================================================
join       1000    one seed; every other node joins through it at the same moment (with
                   ``joiners`` K: a converged cluster of N - K nodes, and K more join it at
                   the same moment, each through a random member)
crash      1000    a converged cluster; one node is killed; how long until everyone drops it
leave      1000    as crash, but the node leaves gracefully
loss       200     steady state for 10 minutes with 10 % uniform packet loss
partition  200     split in two (``split`` of the nodes on one side, half by default) for 60 s,
                  heal, measure re-convergence; every node's PartitionSuspected and
                  PartitionHealed events are counted per side
starve     100     5 nodes handle every packet 2 s late, for 10 minutes
churn      500     every second a node joins, leaves or crashes, for 10 minutes
attack     100     a forger of accusations and a flooder of fake members, for 2 minutes
leader     100     nodes elect a leader; 60/40 split (leader on the 40 %) for 60 s; heal
slow       20      one member answers every packet ``slow_rtt`` (0.3 s) late against a 0.2 s
                   ``ping_timeout`` (``adaptive_ping`` switches adaptive timeouts on); after 120 s
                   of steady state a normal member crashes; indirect probes, false suspicions
                   and the crash's detection time are measured
leader-    5       a leader is elected; the network splits at a given phase of its heartbeat
split              (``phase``), its side holding ``split`` of the nodes, for
                   ``partition_duration`` (longer than ``retention`` to make the sides forget
                   each other); heal; never two leaders at once, one cluster again
=========  ======  ==========================================================================

The ``attack`` bar is 0 live members declared dead and every table within its bound
(``table_max`` <= ``max_members``, ``queue_max`` <= ``broadcast_queue_size``); its summary
adds what the attackers sent and what the cores refused (``refused``, by reason).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..protocol.insight import ClusterEvent
from ..protocol.partition import PartitionHealed, PartitionSuspected
from .leader import LEADER_DEFAULTS, SPLIT_DEFAULTS, run_leader_scenario, run_split_scenario
from .network import LinkModel
from .params import ScenarioParams
from .simulation import Simulation

__all__ = ["ScenarioParams", "SCENARIOS", "DEFAULTS", "run_scenario", "COMPACT_FROM"]

COMPACT_FROM = 2000
"""``tables="auto"`` keeps the member tables compact (:mod:`gossip.sim.compact`) from this many
nodes on: the same run in a fraction of the memory, somewhat slower."""


DEFAULTS: dict[str, dict[str, Any]] = {
    "join": {"nodes": 1000, "duration": 60.0, "loss": 0.0},
    "crash": {"nodes": 1000, "duration": 60.0, "loss": 0.0},
    "leave": {"nodes": 1000, "duration": 30.0, "loss": 0.0},
    "loss": {"nodes": 200, "duration": 600.0, "loss": 0.10},
    "partition": {"nodes": 200, "duration": 240.0, "loss": 0.0},
    "starve": {"nodes": 100, "duration": 600.0, "loss": 0.0},
    "churn": {"nodes": 500, "duration": 600.0, "loss": 0.0},
    "attack": {"nodes": 100, "duration": 120.0, "loss": 0.0},
    "slow": {"nodes": 20, "duration": 180.0, "loss": 0.0},
}

SLOW_PING_TIMEOUT = 0.2
"""The ``ping_timeout`` of the ``slow`` scenario (the local preset's), below the slow round trip."""
SLOW_STEADY = 120.0
"""Seconds of steady state in the ``slow`` scenario before a normal member crashes."""


TABLE_ROOM = 1024
"""Members a table may hold beyond the cluster's size when the size is above the preset's
``max_members`` (see :func:`_make`)."""


def _make(p: ScenarioParams) -> Simulation:
    cfg = Config.preset(p.config, lifeguard_enabled=p.lifeguard)
    if p.scenario == "attack":
        # Tables sized for the cluster, so the flood reaches the bound within the run.
        cfg = cfg.copy(max_members=p.max_members, max_members_per_message=max(1, p.max_members // 4),
                       max_members_per_source=max(1, p.max_members // 2))
    if p.scenario == "slow":
        cfg = cfg.copy(ping_timeout=SLOW_PING_TIMEOUT, adaptive_ping_timeout=p.adaptive_ping)
    if p.scenario != "attack" and p.nodes is not None and p.nodes + TABLE_ROOM > cfg.max_members:
        # A cluster larger than the presets' table bound (16,384 members): its members must
        # fit every table, with room for the nodes that join during the run.
        cfg = cfg.copy(max_members=p.nodes + TABLE_ROOM)
    link = LinkModel(base_latency=p.latency, jitter=p.jitter, loss=p.loss or 0.0, reorder=p.reorder,
                     burst_loss=p.burst_loss)
    if p.tables not in ("auto", "objects", "compact"):
        raise ValueError(f"tables must be auto, objects or compact, got {p.tables!r}")
    compact = p.tables == "compact" or (p.tables == "auto" and (p.nodes or 0) >= COMPACT_FROM
                                        and p.scenario != "attack")
    return Simulation(cfg, p.seed, link, compact=compact)


def _bootstrapped(p: ScenarioParams) -> Simulation:
    sim = _make(p)
    assert p.nodes is not None
    for _ in range(p.nodes):
        sim.add_node()
    sim.bootstrap(list(range(p.nodes)))
    return sim


def _join(p: ScenarioParams, sim: Simulation) -> None:
    assert p.nodes is not None and p.duration is not None
    joiners = p.nodes - 1 if p.joiners is None else p.joiners
    if not 1 <= joiners < p.nodes:
        raise ValueError(f"joiners must be at least 1 and below nodes ({p.nodes}), got {joiners}")
    base = p.nodes - joiners
    for _ in range(base):
        sim.add_node()
    if base > 1:
        sim.bootstrap(list(range(base)))
    start = 1.0
    sim.extra["joiners"] = joiners

    def go() -> None:
        for _ in range(joiners):
            node = sim.add_node()
            sim.join(node.index, [sim.root.randrange(base) if base > 1 else 0])
        sim.watch_convergence()

    sim.schedule(start, go)
    sim.run_until(start + p.duration, stop=lambda: sim.converged_at is not None and sim.now > start)


def _crash_or_leave(p: ScenarioParams, sim: Simulation, leave: bool) -> None:
    assert p.nodes is not None and p.duration is not None
    victim = sim.root.randrange(p.nodes)
    at = p.warmup

    def hit() -> None:
        if leave:
            sim.leave(victim)
        else:
            sim.crash(victim)
        # A burst of traffic at the same moment: that many other nodes change their metadata,
        # so the verdict about the victim competes with their news for room in every packet.
        others = [i for i in range(p.nodes) if i != victim]  # type: ignore[arg-type]
        for i in sim.root.sample(others, min(p.burst, len(others))):
            sim.set_metadata(i, {"blob": "x" * p.burst_size})

    sim.schedule(at, hit)
    def done() -> bool:
        target = sim.targets.get(victim)
        return sim.now > at and target is not None and target.all is not None

    sim.run_until(at + p.duration, stop=done)


def _steady(p: ScenarioParams, sim: Simulation) -> None:
    assert p.duration is not None
    sim.run_until(p.duration)


def _starve(p: ScenarioParams, sim: Simulation) -> None:
    assert p.nodes is not None and p.duration is not None
    for index in sim.root.sample(range(p.nodes), min(p.starved, p.nodes)):
        sim.starve(index, p.starve_delay, p.starve_timer_delay)
    sim.run_until(p.duration)


def _partition(p: ScenarioParams, sim: Simulation) -> None:
    assert p.nodes is not None and p.duration is not None
    order = list(range(p.nodes))
    sim.root.shuffle(order)
    half = min(p.nodes - 1, max(1, round(p.nodes * p.split)))
    split_at = p.warmup
    heal_at = split_at + p.partition_duration
    sides = (set(order[:half]), set(order[half:]))
    suspected: tuple[set[int], set[int]] = (set(), set())
    healed: tuple[set[int], set[int]] = (set(), set())
    own_side_named = [0]   # members of the observer's own side named in its PartitionSuspected

    def on_cluster_event(observer: int, ev: ClusterEvent) -> None:
        side = 0 if observer in sides[0] else 1
        if isinstance(ev, PartitionSuspected) and split_at <= sim.now < heal_at:
            suspected[side].add(observer)
            own_side_named[0] += sum(1 for n in ev.members if sim.by_id.get(n) in sides[side])
        elif isinstance(ev, PartitionHealed) and sim.now >= heal_at:
            healed[side].add(observer)

    sim.on_cluster_event = on_cluster_event
    sim.extra.update(partition_sides=[len(sides[0]), len(sides[1])])
    sim.schedule(split_at, lambda: sim.net.partition([order[:half], order[half:]]))

    def heal() -> None:
        sim.net.heal()
        sim.watch_convergence()

    sim.schedule(heal_at, heal)
    sim.run_until(p.duration, stop=lambda: sim.now > heal_at and sim.converged_at is not None)
    sim.extra.update(partition_suspected=[len(suspected[0]), len(suspected[1])],
                     partition_healed=[len(healed[0]), len(healed[1])],
                     partition_own_side_named=own_side_named[0])


def _churn(p: ScenarioParams, sim: Simulation) -> None:
    assert p.nodes is not None and p.duration is not None
    rng = sim.root
    end_churn = max(p.warmup, p.duration - p.quiet_tail)

    def step() -> None:
        live = sorted(i for i in sim.live if not sim.nodes[i].left)
        action = rng.choice(("join", "leave", "crash"))
        if len(live) < p.nodes * 0.9:  # type: ignore[operator]
            action = "join"
        if action == "join" or len(live) < 3:
            node = sim.add_node()
            sim.join(node.index, [rng.choice(live)])
        elif action == "leave":
            sim.leave(rng.choice(live))
        else:
            sim.crash(rng.choice(live))
        if sim.now + p.churn_interval <= end_churn:
            sim.schedule(sim.now + p.churn_interval, step)

    sim.schedule(p.warmup, step)
    sim.run_until(p.duration)


def _attack(p: ScenarioParams, sim: Simulation) -> None:
    from .attack import Flooder, Forger

    assert p.duration is not None
    forger = Forger(sim, "66.6.6.6:7946", p.forge_rate, random.Random(sim.root.getrandbits(64)),
                    sim.config.max_incarnation_jump)
    flooder = Flooder(sim, "66.6.6.7:7946", p.flood_rate, random.Random(sim.root.getrandbits(64)), p.flood_size)
    end = p.duration - 10.0          # a quiet tail: verdicts still in flight would count too
    sim.track_sizes = True
    forger.start(p.warmup, end)
    flooder.start(p.warmup, end)
    sim.attack_report = lambda: {"forged_sent": forger.sent, "flood_sent": flooder.sent,
                                 "fake_members_sent": flooder.fakes}
    sim.run_until(p.duration)


def _slow(p: ScenarioParams, sim: Simulation) -> None:
    assert p.nodes is not None and p.duration is not None
    slow = sim.root.randrange(p.nodes)
    sim.net.slow[slow] = p.slow_rtt / 2
    victim = sim.root.choice([i for i in range(p.nodes) if i != slow])
    crash_at = p.warmup + SLOW_STEADY
    steady: dict[str, int] = {}

    def indirect() -> int:
        return sum(n.core.stats.get("indirect_probes", 0) for n in sim.nodes if n.running)

    def mark() -> None:
        steady["indirect_start"] = indirect()
        steady["false_suspect_start"] = sim.false_suspect_events

    def crash() -> None:
        steady["indirect_probes"] = indirect() - steady["indirect_start"]
        steady["false_suspect_events"] = sim.false_suspect_events - steady["false_suspect_start"]
        sim.crash(victim)

    sim.schedule(p.warmup, mark)
    sim.schedule(crash_at, crash)

    def done() -> bool:
        target = sim.targets.get(victim)
        return sim.now > crash_at and target is not None and target.all is not None

    sim.run_until(max(p.duration, crash_at + 1.0), stop=done)
    # Per second of steady state: the slow member is probed about once a second in all.
    sim.extra.update(slow_member=slow, slow_rtt=p.slow_rtt, adaptive_ping=p.adaptive_ping,
                     steady_s=SLOW_STEADY,
                     steady_indirect_probes=steady.get("indirect_probes"),
                     steady_false_suspect_events=steady.get("false_suspect_events"))


SCENARIOS: dict[str, Callable[[ScenarioParams], Simulation]] = {}


def _register(name: str, body: Callable[[ScenarioParams, Simulation], None], bootstrap: bool = True) -> None:
    def run(p: ScenarioParams) -> Simulation:
        sim = _bootstrapped(p) if bootstrap else _make(p)
        body(p, sim)
        return sim

    SCENARIOS[name] = run


_register("join", _join, bootstrap=False)
_register("crash", lambda p, s: _crash_or_leave(p, s, leave=False))
_register("leave", lambda p, s: _crash_or_leave(p, s, leave=True))
_register("loss", _steady)
_register("partition", _partition)
_register("starve", _starve)
_register("churn", _churn)
_register("attack", _attack)
_register("slow", _slow)

# The leader scenarios run elections beside the cores, in their own module.
SCENARIOS["leader"] = run_leader_scenario
DEFAULTS["leader"] = LEADER_DEFAULTS
SCENARIOS["leader-split"] = run_split_scenario
DEFAULTS["leader-split"] = SPLIT_DEFAULTS

from .locks import LOCKS_DEFAULTS, run_locks_scenario  # noqa: E402

SCENARIOS["locks"] = run_locks_scenario
DEFAULTS["locks"] = LOCKS_DEFAULTS


def run_scenario(p: ScenarioParams, progress: Callable[[Simulation], None] | None = None) -> dict[str, Any]:
    """Run a scenario and return its figures as a JSON-ready dict.

    ``progress``, if given, is called every few thousand events with the running simulation
    (its ``now`` against ``p.duration``); it cannot change the run.
    """
    if p.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {p.scenario!r}; expected one of {', '.join(SCENARIOS)}")
    for key, value in DEFAULTS[p.scenario].items():
        if getattr(p, key) is None:
            setattr(p, key, value)
    t0 = Simulation.wall_clock()
    previous, Simulation.observer = Simulation.observer, progress
    try:
        sim = SCENARIOS[p.scenario](p)
    finally:
        Simulation.observer = previous
    wall = Simulation.wall_clock() - t0
    out: dict[str, Any] = {
        "nodes": p.nodes,
        "seed": p.seed,
        "scenario": p.scenario,
        "config": p.config,
        "lifeguard": p.lifeguard,
        "loss": p.loss,
        "virtual_s": round(sim.now, 3),
        "wall_s": round(wall, 3),
    }
    out.update(sim.summary())
    if p.scenario == "attack":
        out.update(_attack_figures(sim))
    return out


def _attack_figures(sim: Simulation) -> dict[str, Any]:
    cores = [n.core for n in sim.nodes if n.running]
    refused: dict[str, int] = {}
    for core in cores:
        for k, v in core.stats.items():
            if k.startswith("refused_") or k in ("incarnation_exhausted", "members_evicted"):
                refused[k] = refused.get(k, 0) + v
    figures: dict[str, Any] = dict(sim.attack_report()) if sim.attack_report is not None else {}
    figures.update({
        "table_max": max((n.table_max for n in sim.nodes), default=0),
        "queue_max": max((n.queue_max for n in sim.nodes), default=0),
        "relays_max": max((n.relays_max for n in sim.nodes), default=0),
        "incarnation_max": max((c.incarnation for c in cores), default=0),
        "refused": dict(sorted(refused.items())),
    })
    return figures
