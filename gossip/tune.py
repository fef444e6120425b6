"""``gossip tune``: pick failure-detector settings by simulating them on your network.

For a cluster size, a round-trip time, a loss rate and optionally some CPU-starved nodes, a
handful of candidate settings (probe interval x suspicion multiplier, timeouts fitted to the
round trip) each run two short seeded simulations on :mod:`gossip.sim`:

* a *crash run*: a converged cluster, then a few members killed one after another; it measures
  how long until every survivor has dropped each of them;
* a *steady run*: the same cluster with no failure at all, a few members joining; it measures
  false positives (live members declared dead), false suspicions, bytes per node per second,
  and how long after a join every member knows the joiner (and it knows them).

Every candidate runs on the same seeds (the same topology, victims and losses), so the
figures compare settings, not luck. The recommendation is the fastest detection among the
candidates with no false positive (within ``max_bytes`` if given) that suspect live members at
most twice as often as the calmest candidate (or once per node-hour); ties within 5 % go to
the one that sends less.

This module drives the simulator only; it never opens a socket or starts a thread, and the
process pool of :func:`run_tune` runs whole simulations, one per task.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

from .config import Config
from .node import NodeState
from .protocol.actions import EVENT_REMOVED, EVENT_STATE, MemberEvent
from .protocol.suspicion import suspicion_timeouts
from .sim.network import LinkModel
from .sim.simulation import Simulation

__all__ = ["TuneParams", "Candidate", "Outcome", "TuneResult", "candidates", "evaluate", "run_tune",
           "format_report", "ProgressFunc"]

_NICE = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0,
         20.0, 30.0)
_WARMUP = 5.0
_CRASH_SPACING = 2.0
_JOIN_CAP = 60.0
_BYTES_BUDGET = 1600.0   # simulated bytes per node per steady second (LAN traffic is ~1,000-1,300)


def _nice(x: float) -> float:
    """Round up to a readable duration."""
    for v in _NICE:
        if v >= x - 1e-9:
            return v
    return math.ceil(x)


@dataclasses.dataclass
class TuneParams:
    """What ``tune`` simulates.

    Attributes:
        nodes: cluster size.
        rtt: round-trip time between two members, seconds (half each way, plus jitter).
        loss: share of best-effort packets lost, 0..1.
        starve_nodes: how many members are CPU-starved (handle every packet late).
        starve_delay: how late a starved member handles each packet, seconds.
        seed: the seed of every simulation.
        crashes: members killed in each crash run.
        steady: virtual seconds of each steady run (None: 60 to 600 s, longer for small clusters).
        max_bytes: a bandwidth budget, bytes per node per second (None: no budget).
        jobs: processes to run simulations in.
    """

    nodes: int = 500
    rtt: float = 0.001
    loss: float = 0.0
    starve_nodes: int = 0
    starve_delay: float = 1.0
    seed: int = 1
    crashes: int = 3
    steady: float | None = None
    max_bytes: float | None = None
    jobs: int = 2

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that is out of range."""
        if not 5 <= self.nodes <= 20000:
            raise ValueError(f"--nodes must be 5..20000, got {self.nodes}")
        if not 0 <= self.rtt <= 10.0:
            raise ValueError(f"--rtt must be 0..10s, got {self.rtt}s")
        if not 0 <= self.loss < 0.5:
            raise ValueError(f"--loss must be 0..50%, got {self.loss * 100:g}%")
        if not 0 <= self.starve_nodes <= self.nodes // 2:
            raise ValueError(f"--starve must starve at most half the nodes ({self.nodes // 2}), "
                             f"got {self.starve_nodes}")
        if not 0 <= self.starve_delay <= 60:
            raise ValueError(f"the starve delay must be 0..60s, got {self.starve_delay}s")
        if not 1 <= self.crashes <= max(1, self.nodes // 4):
            raise ValueError(f"crashes must be 1..{max(1, self.nodes // 4)}, got {self.crashes}")
        if self.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {self.jobs}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"--max-bytes must be positive, got {self.max_bytes}")

    def steady_seconds(self) -> float:
        """Virtual seconds of each steady run."""
        if self.steady is not None:
            return self.steady
        return min(600.0, max(60.0, 30000.0 / self.nodes))

    def link(self) -> LinkModel:
        """The simulated network."""
        one_way = self.rtt / 2
        return LinkModel(base_latency=one_way, jitter=max(one_way / 10, 0.00005), loss=self.loss)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One setting to try: a preset and the fields changed from it."""

    name: str
    overrides: tuple[tuple[str, Any], ...]
    preset: str = "lan"

    def config(self) -> Config:
        """Return the full configuration (validated).

        Raises:
            ConfigError: the overrides contradict each other.
        """
        cfg = Config.preset(self.preset, **dict(self.overrides))
        cfg.validate()
        return cfg


def candidates(p: TuneParams) -> list[Candidate]:
    """Return the settings worth trying for ``p``: probe intervals x suspicion multipliers.

    The ping timeout never drops below five round trips (and 200 ms), nor below half the
    probe interval (memberlist's LAN ratio); protocol gossip rounds are at least two round
    trips apart; more helpers and retransmissions are used when loss is high.
    """
    t_min = _nice(max(0.2, 5 * p.rtt))
    base = _nice(max(1.0, 2.5 * t_min))
    common: dict[str, Any] = {"dissemination_interval": _nice(max(0.2, 2 * p.rtt))}
    if p.loss >= 0.05:
        common.update(indirect_checks=5, retransmit_mult=6)
    out = []
    for interval in (_nice(base / 2), base, _nice(base * 2)):
        timeout = max(t_min, interval / 2)
        if timeout >= interval:
            continue
        for mult in (3, 4):
            fields = dict(common, health_check_interval=interval, ping_timeout=timeout,
                          suspicion_mult=mult)
            defaults = Config.lan()
            changed = tuple(sorted((k, v) for k, v in fields.items() if getattr(defaults, k) != v))
            out.append(Candidate(f"probe {interval:g}s, suspicion x{mult}", changed))
    return out


@dataclasses.dataclass
class Outcome:
    """What the simulations of one candidate showed.

    Attributes:
        candidate: the setting.
        detect_s: worst time, over the crashed members, until every survivor dropped one.
        detect_mean_s: the mean of those times.
        undetected: crashed members some survivor still held alive or suspect at the end.
        false_positives: episodes of a live member declared dead by at least one member.
        false_suspicions: episodes of a live member suspected by at least one member.
        node_hours: live member-hours simulated (both runs).
        bytes_per_node_s: bytes sent per member per second in the steady run.
        join_s: worst time after a join until all knew the joiner alive and it knew them all
            (None if some join did not converge within 60 s).
        wall_s: host seconds the two simulations took.
    """

    candidate: Candidate
    detect_s: float | None = None
    detect_mean_s: float | None = None
    undetected: int = 0
    false_positives: int = 0
    false_suspicions: int = 0
    node_hours: float = 0.0
    bytes_per_node_s: float = 0.0
    join_s: float | None = None
    wall_s: float = 0.0

    @property
    def fp_per_node_hour(self) -> float:
        """False positives per member-hour, as observed."""
        return self.false_positives / self.node_hours if self.node_hours else 0.0

    @property
    def fp_upper_bound(self) -> float:
        """95 % upper bound on false positives per member-hour when none was seen (3 / hours)."""
        return 3.0 / self.node_hours if self.node_hours else math.inf

    @property
    def suspicions_per_node_hour(self) -> float:
        """False suspicions per member-hour, as observed."""
        return self.false_suspicions / self.node_hours if self.node_hours else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict."""
        return {
            "name": self.candidate.name,
            "preset": self.candidate.preset,
            "overrides": dict(self.candidate.overrides),
            "detect_s": self.detect_s,
            "detect_mean_s": self.detect_mean_s,
            "undetected": self.undetected,
            "false_positives": self.false_positives,
            "false_positives_per_node_hour": round(self.fp_per_node_hour, 4),
            "false_positives_upper_95_per_node_hour": None if self.false_positives else round(self.fp_upper_bound, 4),
            "false_suspicions": self.false_suspicions,
            "false_suspicions_per_node_hour": round(self.suspicions_per_node_hour, 4),
            "node_hours": round(self.node_hours, 3),
            "bytes_per_node_s": round(self.bytes_per_node_s, 1),
            "join_s": self.join_s,
            "wall_s": round(self.wall_s, 2),
        }


class _Episodes:
    """Counts episodes of live members wrongly held dead or suspect, from member events."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.dead: dict[int, set[int]] = {}
        self.suspect: dict[int, set[int]] = {}
        self.dead_episodes = 0
        self.suspect_episodes = 0

    def __call__(self, observer: int, ev: MemberEvent) -> None:
        if ev.kind != EVENT_STATE and ev.kind != EVENT_REMOVED:
            return
        sim = self.sim
        target = sim.by_id.get(ev.node)
        if target is None:
            return
        for table, state in ((self.dead, NodeState.DEAD), (self.suspect, NodeState.SUSPECT)):
            holders = table.setdefault(target, set())
            if ev.kind == EVENT_STATE and ev.state is state:
                if target in sim.live and observer in sim.live:
                    if not holders:
                        if state is NodeState.DEAD:
                            self.dead_episodes += 1
                        else:
                            self.suspect_episodes += 1
                    holders.add(observer)
            else:
                holders.discard(observer)


def _build(cfg: Config, p: TuneParams, seed: int) -> tuple[Simulation, list[int]]:
    sim = Simulation(cfg, seed, p.link())
    for _ in range(p.nodes):
        sim.add_node()
    sim.bootstrap(list(range(p.nodes)))
    starved = sim.root.sample(range(p.nodes), p.starve_nodes) if p.starve_nodes else []
    for i in starved:
        sim.starve(i, p.starve_delay, p.starve_delay / 2)
    return sim, starved


def _crash_run(cfg: Config, p: TuneParams, seed: int) -> dict[str, Any]:
    sim, starved = _build(cfg, p, seed)
    episodes = _Episodes(sim)
    sim.on_event = episodes
    healthy = [i for i in range(p.nodes) if i not in set(starved)]
    victims = sim.root.sample(healthy, min(p.crashes, len(healthy) - 2))
    for k, v in enumerate(victims):
        sim.schedule(_WARMUP + k * _CRASH_SPACING, functools.partial(sim.crash, v))
    _, high = suspicion_timeouts(p.nodes, cfg.health_check_interval, cfg.suspicion_mult,
                                 cfg.suspicion_max_timeout_mult)
    last = _WARMUP + (len(victims) - 1) * _CRASH_SPACING
    end = last + min(high, cfg.suspect_retention_period) + 60.0

    def done() -> bool:
        if sim.now <= last:
            return False
        return all(v in sim.targets and sim.targets[v].all is not None for v in victims)

    sim.run_until(end, stop=done)
    times = [sim.targets[v].all - sim.targets[v].at  # type: ignore[operator]
             for v in victims if v in sim.targets and sim.targets[v].all is not None]
    return {"times": times, "undetected": len(victims) - len(times), "fp": episodes.dead_episodes,
            "fs": episodes.suspect_episodes, "node_seconds": sim.node_seconds}


def _steady_run(cfg: Config, p: TuneParams, seed: int) -> dict[str, Any]:
    sim, _ = _build(cfg, p, seed)
    episodes = _Episodes(sim)
    sim.on_event = episodes
    duration = p.steady_seconds()
    # Work budget, in simulated bytes (deterministic, unlike wall time): a setting that floods
    # the network is observed for less virtual time, which its wider false-positive bound shows.
    budget = p.nodes * duration * _BYTES_BUDGET
    sim.run_until(_WARMUP)
    joins: list[float | None] = []
    for _ in range(2):
        live = sorted(sim.live)
        node = sim.add_node()
        j = node.index
        sim.join(j, [sim.root.choice(live)])
        start = sim.now

        def joined(j: int = j) -> bool:
            n = len(sim.live) - 1
            return len(sim.alive_view[j]) >= n and len(sim.nodes[j].core.members) >= n

        sim.run_until(start + _JOIN_CAP, stop=joined)
        joins.append(sim.now - start if joined() else None)
        sim.run_until(sim.now + 2.0)
    end = _WARMUP + duration
    while sim.now < end and sim.bytes < budget:
        sim.run_until(min(end, sim.now + 1.0))
    summary = sim.summary()
    worst = None if any(j is None for j in joins) else max(j for j in joins if j is not None)
    return {"join": worst, "bytes": summary["bytes_per_node_s"], "fp": episodes.dead_episodes,
            "fs": episodes.suspect_episodes, "node_seconds": sim.node_seconds,
            "observed_s": sim.now}


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C reaches the whole process group, and only the parent acts."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _task(args: tuple[int, str, Candidate, TuneParams]) -> tuple[int, str, dict[str, Any], float]:
    index, kind, cand, p = args
    t0 = time.perf_counter()
    cfg = cand.config()
    if kind == "crash":
        result = _crash_run(cfg, p, p.seed)
    else:
        result = _steady_run(cfg, p, p.seed + 1)
    return index, kind, result, time.perf_counter() - t0


def _merge(outcome: Outcome, kind: str, r: dict[str, Any], wall: float) -> None:
    outcome.wall_s += wall
    outcome.false_positives += r["fp"]
    outcome.false_suspicions += r["fs"]
    outcome.node_hours += r["node_seconds"] / 3600.0
    if kind == "crash":
        times = r["times"]
        outcome.detect_s = round(max(times), 3) if times else None
        outcome.detect_mean_s = round(sum(times) / len(times), 3) if times else None
        outcome.undetected = r["undetected"]
    else:
        outcome.bytes_per_node_s = r["bytes"]
        outcome.join_s = None if r["join"] is None else round(r["join"], 3)


def evaluate(candidate: Candidate, p: TuneParams) -> Outcome:
    """Run both simulations of one candidate in this process and return its figures."""
    out = Outcome(candidate)
    for kind in ("crash", "steady"):
        _, _, r, wall = _task((0, kind, candidate, p))
        _merge(out, kind, r, wall)
    return out


ProgressFunc = Callable[[int, int, str], None]
"""``fn(done, total, what)``: called as each simulation finishes."""


@dataclasses.dataclass
class TuneResult:
    """The figures of every candidate and the recommendation."""

    params: TuneParams
    outcomes: list[Outcome]
    recommended: Outcome
    reason: str
    wall_s: float

    def config(self) -> Config:
        """The recommended configuration."""
        return self.recommended.candidate.config()

    def python(self) -> str:
        """The recommended configuration as Python source."""
        cand = self.recommended.candidate
        lines = ["import gossip", "", f"config = gossip.Config.{cand.preset}("]
        lines += [f"    {k}={v!r}," for k, v in cand.overrides]
        lines.append(")")
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        """The recommended configuration as ``GOSSIP_*`` variables (only what differs)."""
        cand = self.recommended.candidate
        base = Config.preset(cand.preset).to_env()
        mine = self.config().to_env()
        out = {"GOSSIP_PRESET": cand.preset}
        out.update({k: v for k, v in mine.items() if base.get(k) != v})
        return out

    def to_json(self) -> dict[str, Any]:
        """Return everything as a JSON-ready dict."""
        p = self.params
        return {
            "params": dataclasses.asdict(p),
            "candidates": [o.to_json() for o in self.outcomes],
            "recommended": self.recommended.candidate.name,
            "reason": self.reason,
            "python": self.python(),
            "env": self.env(),
            "wall_s": round(self.wall_s, 2),
        }


def _recommend(outcomes: list[Outcome], p: TuneParams) -> tuple[Outcome, str]:
    detected = [o for o in outcomes if o.undetected == 0 and o.detect_s is not None]
    within = [o for o in detected if p.max_bytes is None or o.bytes_per_node_s <= p.max_bytes]
    # False suspicions are where false positives come from: a setting that suspects live members
    # far more often than the calmest candidate is one bad day away from declaring them dead.
    calm = min((o.suspicions_per_node_hour for o in within), default=0.0)
    limit = max(1.0, 2 * calm)
    safe = [o for o in within if o.false_positives == 0 and o.suspicions_per_node_hour <= limit]
    calm_note = ""
    if not safe:
        safe = [o for o in within if o.false_positives == 0]
    elif len(safe) < len([o for o in within if o.false_positives == 0]):
        calm_note = (f", among those suspecting live members at most {limit:.1f} times per "
                     "node-hour (twice the calmest)")
    if safe:
        fastest = min(o.detect_s for o in safe if o.detect_s is not None)
        close = [o for o in safe if o.detect_s is not None and o.detect_s <= fastest * 1.05]
        best = min(close, key=lambda o: (o.bytes_per_node_s, o.false_suspicions))
        why = "the fastest detection with no false positive" + calm_note
        if p.max_bytes is not None:
            why += f" within {p.max_bytes:g} bytes per node per second"
        if len(close) > 1:
            why += " (of those within 5 %, the one sending least)"
        return best, why
    pool = within or detected or outcomes
    best = min(pool, key=lambda o: (o.false_positives, o.detect_s if o.detect_s is not None else math.inf))
    if not detected:
        return best, "no candidate detected every crash: the fewest false positives"
    if not within:
        return best, (f"no candidate fits {p.max_bytes:g} bytes per node per second: the fewest "
                      "false positives")
    return best, "every candidate had false positives: the fewest, then the fastest"


def run_tune(p: TuneParams, progress: ProgressFunc | None = None) -> TuneResult:
    """Simulate every candidate for ``p`` and return the figures and the recommendation.

    Simulations run in ``p.jobs`` processes (in this one if 1); ``progress`` is called in this
    process as each one finishes.

    Raises:
        ValueError: a parameter is out of range (the message names it).
    """
    p.validate()
    t0 = time.perf_counter()
    cands = candidates(p)
    outcomes = [Outcome(c) for c in cands]
    # Longest first: slow probe intervals take longer to detect, steady runs are the longest.
    tasks = [(i, kind, c, p) for kind in ("steady", "crash") for i, c in enumerate(cands)]
    def cost(t: tuple[int, str, Candidate, TuneParams]) -> tuple[bool, float]:
        return t[1] != "steady", -float(dict(t[2].overrides).get("health_check_interval", 1.0))

    tasks.sort(key=cost)
    total = len(tasks)
    done = 0

    def finished(index: int, kind: str, r: dict[str, Any], wall: float) -> None:
        nonlocal done
        done += 1
        _merge(outcomes[index], kind, r, wall)
        if progress is not None:
            o = outcomes[index]
            if kind == "crash":
                what = (f"{o.candidate.name}: crash seen by all in {_fmt(o.detect_s)}"
                        + (f", {o.undetected} undetected" if o.undetected else ""))
            else:
                what = (f"{o.candidate.name}: {r['fp']} false positives, join {_fmt(o.join_s)}, "
                        f"{o.bytes_per_node_s:.0f} B/node/s")
            progress(done, total, what)

    if p.jobs == 1:
        for t in tasks:
            finished(*_task(t))
    else:
        import multiprocessing

        # Fork is cheap and needs no importable __main__, but is only safe with no other thread.
        import threading

        ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 and
                                          "fork" in multiprocessing.get_all_start_methods() else "spawn")
        pool = ctx.Pool(p.jobs, initializer=_ignore_sigint)
        try:
            for result in pool.imap_unordered(_task, tasks):
                finished(*result)
            pool.close()
        except BaseException:
            # Ctrl-C (or a failed run): end the workers now, whatever they are simulating, rather
            # than wait for every queued run; nothing is left behind.
            pool.terminate()
            raise
        finally:
            pool.join()
    best, why = _recommend(outcomes, p)
    return TuneResult(p, outcomes, best, why, time.perf_counter() - t0)


def _fmt(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


def format_report(result: TuneResult) -> str:
    """Return the human-readable report ``gossip tune`` prints."""
    p = result.params
    lines = [
        f"{p.nodes} nodes, RTT {p.rtt * 1000:g} ms, loss {p.loss * 100:g} %"
        + (f", {p.starve_nodes} starved ({p.starve_delay:g}s late)" if p.starve_nodes else "")
        + f"; seed {p.seed}; {result.wall_s:.1f}s",
        "",
        f"{'candidate':28} {'crash seen by all':>17} {'false pos/node-h':>17} {'false susp/node-h':>18} "
        f"{'bytes/node/s':>12} {'join converged':>14}",
    ]
    for o in result.outcomes:
        mark = "*" if o is result.recommended else " "
        detect = _fmt(o.detect_s) + (f" ({o.undetected} missed)" if o.undetected else "")
        fp = (f"{o.fp_per_node_hour:.3f}" if o.false_positives
              else f"0 (<{o.fp_upper_bound:.2f})")
        lines.append(f"{mark}{o.candidate.name:27} {detect:>17} {fp:>17} "
                     f"{o.suspicions_per_node_hour:>18.2f} {o.bytes_per_node_s:>12.0f} {_fmt(o.join_s):>14}")
    lines += [
        "",
        "(false positives: live members declared dead by someone; '<x': none seen, x is the 95 %",
        f" upper bound, 3 / node-hours observed: {min(o.node_hours for o in result.outcomes):.1f} to "
        f"{max(o.node_hours for o in result.outcomes):.1f}; false suspicions: live members suspected)",
        "",
        f"recommended: {result.recommended.candidate.name} — {result.reason}",
        "",
        "as Python:",
        "",
        *("    " + line if line else "" for line in result.python().splitlines()),
        "",
        "as environment variables:",
        "",
        *(f"    {k}={v}" for k, v in result.env().items()),
    ]
    return "\n".join(lines)

