"""Chaos on real networks: N node processes, each in its own network namespace, any library.

Usage::

    python bench/chaos.py --scenario kill --nodes 100 --loss 1 --runs 30 \\
        --driver gossip --driver /tmp/anchors-bin/memberlist-driver [--json] [--seed S]

Every node is a *driver* process (``--driver``; ``gossip`` names this library's own,
``bench/chaos_driver.py``; anything else is a command, such as the memberlist driver built by
``build.sh`` beside its ``main.go``) started inside its own namespace on one bridge (see
``bench/chaos_net.py``: one private range, 10.213.0.0/16, no route anywhere else, everything
removed on exit). The harness appends ``--name nNNN --bind IP:7946 [--join SEED:7946]
--probe-interval-ms P --probe-timeout-ms T --gossip-interval-ms G`` and reads the driver's JSON
lines: ``ready``, a ``view`` every 250 ms (every member not dead or left) and optional
``state`` changes. Several ``--driver`` values run one after another for each scenario in the
same invocation, so that the machine's load hits every library alike, with the same seed (the
same victims, sides and instants).

Scenarios (``--scenario``, repeatable), each printing its pass/fail bar:

* ``kill``: SIGKILL one node per run (then restart it under the same name and address, and wait
  until the cluster is whole again). Figures: from the kill until the first survivor, and until
  every survivor, drops it (p50 and p99 over runs), false deaths.
* ``loss``: ``--loss`` per cent of every frame lost on every link for ``--duration`` s (default
  5 %, 600 s), with a kill every ``--kill-every`` s. False deaths must be 0.
* ``partition``: ``--split halves`` cuts the cluster in two for ``--partition-s`` s;
  ``--split oneway`` makes one node deaf (it sends, it hears nothing). Then heal. Figures:
  detection across the cut, and ``heal_s``, the time from the heal until every node sees every
  node again (memberlist has no partition healing of its own: a run that does not heal within
  ``--heal-timeout`` is reported as not healed, and the cluster is restarted).
* ``udp-block``: drop one node's UDP, both ways, for ``--block-s`` s; its TCP still flows.
* ``pause``: SIGSTOP one node for ``--pause-short`` s (0 false deaths), then for
  ``--pause-long`` s (declared dead, then back after SIGCONT with no manual step; ``rejoin_s``).
* ``starve``: one node in a CPU cgroup capped at ``--cpu-pct`` per cent of a core for
  ``--duration`` s (default 300); with ``--starve-hog`` a busy loop shares that quota (a node
  on a busy host), since an idle node alone rarely reaches a 5 % cap.
* ``idle``: nothing happens for ``--duration`` s (default 60): CPU and RSS per node.

A *false death* is a node that was not disrupted, leaving some node's view (or reported dead or
left): counted per (observer, member) episode. ``false_dead`` counts those seen by undisturbed
observers; ``false_dead_by_victim`` those seen by the disrupted node itself (a paused, starved
or UDP-blocked node declaring healthy members dead).

Figures are wall-clock times between the harness's action (``time.time()`` after the signal
or the rule change took effect) and the drivers' timestamps, on one machine's clock. Views come
every 250 ms; ``state`` lines, when a driver gives them, time a drop exactly. p99 interpolates
linearly between order statistics. Every result carries the exact command, the date, the load
average (1-minute figure at start, end and highest during the run), the CPU per node (percent
of one core, user+system, over the scenario after the cluster formed) and RSS per node.

Replay: ``--seed`` fixes every choice the harness makes (victims, sides, instants); the kernel's
random loss (nftables ``numgen random``) is not seeded. No delay is added: this kernel has no
netem, and a user-space delay for every packet of 100 nodes would cost more CPU than the nodes.

Output: progress on stderr; with ``--json`` one JSON object per line per driver and scenario
(``"kind": "result"``) and one per scenario comparing the drivers (``"kind": "comparison"``);
otherwise a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import chaos_net as net  # noqa: E402
from bytecode import cached_env  # noqa: E402
from chaos_net import Lab, LabError  # noqa: E402
from chaos_nodes import (Driver, Excuse, HarnessError, LoadSampler, Nodes, Timings,  # noqa: E402
                         _pdeathsig, log, proc_cpu_s)

SCENARIOS = ("kill", "loss", "partition", "udp-block", "pause", "starve", "idle")


# ---------------------------------------------------------------------------------- figures


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1), linear between order statistics; None for no values."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def r2(x: float | None) -> float | None:
    """Round a figure to 2 decimals (None stays None)."""
    return None if x is None else round(x, 2)


@dataclass
class Outcome:
    """What one scenario run of one driver measured."""

    detect_first: list[float] = field(default_factory=list)
    suspect_first: list[float] = field(default_factory=list)
    detect_all: list[float] = field(default_factory=list)
    missed: int = 0
    heal: list[float | None] = field(default_factory=list)
    rejoin: list[float | None] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- scenarios


class Scenario:
    """One scenario with one driver: start the cluster, disrupt it, measure, stop it."""

    def __init__(self, args: argparse.Namespace, lab: Lab, driver: Driver, name: str,
                 logdir: str, loads: LoadSampler) -> None:
        self.args, self.lab, self.driver, self.scenario = args, lab, driver, name
        self.n = args.nodes
        self.timings = Timings(args.probe_interval_ms, args.probe_timeout_ms, args.gossip_interval_ms)
        self.loss = args.loss if args.loss is not None else (5.0 if name == "loss" else 0.0)
        self.runs = args.runs if args.runs is not None else {"kill": 5, "partition": 3, "udp-block": 3,
                                                             "pause": 3}.get(name, 1)
        self.duration = args.duration if args.duration is not None else {
            "loss": 600.0, "starve": 300.0, "idle": 60.0}.get(name, 0.0)
        self.rng = random.Random(f"{args.seed}-{name}")
        self.logdir, self.loads = logdir, loads
        self.excuses: list[Excuse] = []
        self.victims: set[str] = set()       # disrupted observers (their drops counted apart)
        self.out = Outcome()
        self.nodes: Nodes | None = None
        self.cpu_segments: list[tuple[float, float]] = []
        self.hog: subprocess.Popen[bytes] | None = None

    # -- helpers ---------------------------------------------------------------------------

    def excuse(self, subjects: Iterable[str], observers: Iterable[str] | None, start: float) -> Excuse:
        """Expect drops of ``subjects`` (by ``observers``, None for anyone) from ``start`` on."""
        e = Excuse(frozenset(subjects), None if observers is None else frozenset(observers), start)
        self.excuses.append(e)
        return e

    def sleep(self, seconds: float) -> None:
        """Sleep, checking every second that no node exited on its own."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            assert self.nodes is not None
            self.nodes.check_exits()

    def start_cluster(self) -> float:
        """Start (or restart) the whole cluster; return its convergence time."""
        if self.nodes is not None:
            self.nodes.stop_all()
            self.cpu_segments += self.nodes.cpu_segments
        old = self.nodes
        self.nodes = Nodes(self.lab, self.driver, self.timings, self.n, self.logdir, self.args.start_batch)
        if old is not None:       # keep what the old processes saw, for the false-death count
            self.nodes.obs.drops = old.obs.drops
        return self.nodes.start_all(60.0 + 0.5 * self.n)

    def restart_cluster(self, why: str) -> None:
        """Start the cluster afresh after a run left it split."""
        self.out.notes.append(f"cluster restarted: {why}")
        log(f"{self.driver.name}: restarting the cluster: {why}")
        now = time.time()
        for e in self.excuses:
            e.end = min(e.end, now)
        restart = self.excuse(self.names_all(), None, now)
        self.start_cluster()
        self.sleep(self.args.settle)
        restart.end = time.time()
        assert self.nodes is not None
        self.nodes.begin_cpu()

    def names_all(self) -> list[str]:
        """Every node's name."""
        return [f"n{i:03d}" for i in range(self.n)]

    def ensure_whole(self, timeout: float, fresh_after: float = 0.0) -> bool:
        """Wait until the cluster is whole; restart it if it does not become so."""
        assert self.nodes is not None
        if self.nodes.wait_whole(timeout, fresh_after=fresh_after):
            return True
        self.restart_cluster(f"not whole within {timeout:.0f} s")
        return False

    def pick_victim(self) -> int:
        """A random node other than the seed (the seed is where restarted nodes join)."""
        return self.rng.randrange(1, self.n)

    def detection(self, subjects: list[str], observers: list[str], t0: float,
                  timeout: float) -> tuple[float | None, float | None, dict[tuple[str, str], float]]:
        """Wait until every observer dropped every subject; return (first, all, drops)."""
        assert self.nodes is not None
        pairs = {(o, s) for o in observers for s in subjects if o != s}

        obs = self.nodes.obs

        def done() -> bool:
            return len(obs.first_drops(subjects, observers, t0).keys() & pairs) == len(pairs)
        self.nodes._wait(done, timeout, "detection")
        drops = {k: v for k, v in obs.first_drops(subjects, observers, t0).items() if k in pairs}
        first = min(drops.values()) - t0 if drops else None
        every = max(drops.values()) - t0 if len(drops) == len(pairs) and pairs else None
        return first, every, drops

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the scenario; return its result object."""
        t_begin = time.time()
        load_start = LoadSampler.now()
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        harness_cpu0 = _self_cpu()
        self.lab.heal()
        self.lab.set_loss(self.loss)
        try:
            converge = self.start_cluster()
            self.sleep(self.args.settle)
            assert self.nodes is not None
            t_measure = time.time()
            self.nodes.begin_cpu()
            getattr(self, "_" + self.scenario.replace("-", "_"))()
            t_end = time.time()
            cpu_pct, cpu_max = self._cpu_figures()
            rss = self.nodes.rss()
        finally:
            self._stop_hog()
            self.lab.unlimit_cpu()
            if self.nodes is not None:
                self.nodes.stop_all()
            self.lab.heal()
            self.lab.set_loss(0.0)
        false_dead, by_victim, detail = self._false_deaths(t_measure, t_end)
        loads = self.loads.since(t_begin)
        o = self.out
        res: dict[str, Any] = {
            "kind": "result", "scenario": self.scenario, "driver": self.driver.name,
            "nodes": self.n, "loss": self.loss, "runs": self.runs, "seed": self.args.seed,
            "suspect_first_p50_s": r2(pct(o.suspect_first, 0.5)),
            "detect_first_p50_s": r2(pct(o.detect_first, 0.5)),
            "detect_all_p50_s": r2(pct(o.detect_all, 0.5)),
            "detect_all_p99_s": r2(pct(o.detect_all, 0.99)),
            "detect_all_max_s": r2(max(o.detect_all, default=None)),
            "detections": len(o.detect_all), "missed": o.missed,
            "false_dead": false_dead, "false_dead_by_victim": by_victim,
            "heal_s": _worst(o.heal), "heal_p50_s": r2(pct([h for h in o.heal if h is not None], 0.5)),
            "healed_runs": sum(h is not None for h in o.heal) if o.heal else None,
            "rejoin_s": _worst(o.rejoin),
            "cpu_pct_per_node": r2(cpu_pct), "cpu_pct_per_node_max": r2(cpu_max),
            "rss_mib_per_node": r2(statistics.mean(rss)) if rss else None,
            "rss_mib_per_node_max": r2(max(rss)) if rss else None,
            "harness_cpu_pct": r2(100 * (_self_cpu() - harness_cpu0) / max(1e-9, time.time() - t_begin)),
            "converge_s": r2(converge), "duration_s": round(t_end - t_begin, 1),
            "loadavg_start": list(load_start), "loadavg_end": list(LoadSampler.now()),
            "loadavg_max_1m": max(loads, default=load_start[0]),
            "timings_ms": [self.timings.probe_ms, self.timings.probe_timeout_ms, self.timings.gossip_ms],
            "command": self.args.command, "driver_cmd": shlex.join(self.driver.argv), "date": date,
            "code": self.args.code,
            "restarts": self.nodes.restarts if self.nodes else 0,
            "false_dead_detail": detail[:20], "run_detail": o.runs, "notes": o.notes,
        }
        res.update(self._params())
        res["goal"], res["pass"] = bar(res)
        return res

    def _params(self) -> dict[str, Any]:
        a = self.args
        return {"kill": {}, "loss": {"loss_s": self.duration, "kill_every_s": a.kill_every},
                "partition": {"split": a.split, "partition_s": a.partition_s},
                "udp-block": {"block_s": a.block_s},
                "pause": {"pause_short_s": a.pause_short, "pause_long_s": a.pause_long},
                "starve": {"cpu_pct": a.cpu_pct, "starve_s": self.duration, "starve_hog": a.starve_hog},
                "idle": {"idle_s": self.duration}}[self.scenario]

    def _cpu_figures(self) -> tuple[float | None, float | None]:
        """Percent of a core per node: all nodes' CPU over all their measured seconds, and the
        busiest node's (windows of 10 s or more)."""
        assert self.nodes is not None
        segs = self.cpu_segments + self.nodes.end_cpu()
        wall = sum(w for w, _ in segs)
        if wall <= 0:
            return None, None
        busiest = [100 * c / w for w, c in segs if w >= 10.0]
        return 100 * sum(c for _, c in segs) / wall, max(busiest, default=None)

    def _false_deaths(self, t0: float, t1: float) -> tuple[int, int, list[dict[str, Any]]]:
        assert self.nodes is not None
        false_dead = by_victim = 0
        detail = []
        for ts, o, s, src in self.nodes.obs.drops_between(t0, t1):
            if any(e.covers(ts, o, s) for e in self.excuses):
                continue
            if o in self.victims:
                by_victim += 1
            else:
                false_dead += 1
            detail.append({"t": round(ts - t0, 2), "observer": o, "member": s, "seen_by": src,
                           "observer_disrupted": o in self.victims})
        return false_dead, by_victim, detail

    # -- scenarios ----------------------------------------------------------------------------

    def _kill_once(self) -> None:
        nodes = self.nodes
        assert nodes is not None
        v = self.pick_victim()
        vname = nodes.name(v)
        survivors = [nodes.name(i) for i in nodes.procs if i != v]
        t0 = nodes.kill(v)
        exc = self.excuse([vname], None, t0)
        first, every, drops = self.detection([vname], survivors, t0, self.timings.detect_timeout_s(self.n))
        if every is None:
            self.out.missed += 1
        else:
            self.out.detect_all.append(every)
        if first is not None:
            self.out.detect_first.append(first)
        suspected = nodes.obs.first_suspect(vname, t0)
        if suspected is not None:
            self.out.suspect_first.append(suspected - t0)
        t_restart = nodes.restart(v, 0)
        whole = nodes.wait_whole(60.0 + 0.2 * self.n)
        back = nodes.obs.full_since(nodes.names, nodes.names) - t_restart if whole else None
        exc.end = time.time()
        self.out.runs.append({"victim": vname, "suspected_s": r2(None if suspected is None else suspected - t0),
                              "first_s": r2(first), "all_s": r2(every),
                              "median_survivor_s": r2(pct([t - t0 for t in drops.values()], 0.5)),
                              "dropped_by": len(drops), "survivors": len(survivors),
                              "whole_after_restart_s": r2(back)})
        log(f"{self.driver.name} {self.scenario}: killed {vname}: first {_fmt(first)}, "
            f"all {len(drops)}/{len(survivors)} {_fmt(every)}; whole again {_fmt(back)} after restart")
        if not whole:
            self.restart_cluster(f"{vname} not back in every view after its restart")
        else:
            self.sleep(self.args.settle)

    def _kill(self) -> None:
        for _ in range(self.runs):
            self._kill_once()

    def _loss(self) -> None:
        end = time.monotonic() + self.duration
        next_kill = time.monotonic() + self.args.kill_every
        while time.monotonic() < end:
            if time.monotonic() >= next_kill:
                self._kill_once()
                next_kill = time.monotonic() + self.args.kill_every
            self.sleep(min(1.0, max(0.0, end - time.monotonic())))
        self.runs = len(self.out.runs)

    def _partition(self) -> None:
        nodes = self.nodes
        assert nodes is not None
        a = self.args
        for _ in range(self.runs):
            if a.split == "halves":
                order = self.rng.sample(range(self.n), self.n)
                side_a, side_b = order[: self.n // 2], order[self.n // 2:]
                names_a = [nodes.name(i) for i in side_a]
                names_b = [nodes.name(i) for i in side_b]
                t0 = self.lab.partition(side_a, side_b)
                excuses = [self.excuse(names_b, names_a, t0), self.excuse(names_a, names_b, t0)]
                # detection across the cut: every node of each side drops every node of the other
                fa, ea, da = self.detection(names_b, names_a, t0, a.partition_s)
                fb, eb, db = self.detection(names_a, names_b, t0, max(0.0, t0 + a.partition_s - time.time()))
                firsts = [x for x in (fa, fb) if x is not None]
                first = min(firsts) if firsts else None
                every = max(ea, eb) if ea is not None and eb is not None else None
                what = f"halves {len(side_a)}/{len(side_b)}"
                run: dict[str, Any] = {"split": what, "a_drops_all_b_s": r2(ea), "b_drops_all_a_s": r2(eb)}
            else:
                v = self.pick_victim()
                vname = nodes.name(v)
                others = [nodes.name(i) for i in range(self.n) if i != v]
                t0 = self.lab.cut_inbound(v)
                excuses = [self.excuse([vname], None, t0), self.excuse(nodes.names, [vname], t0)]
                first, every, _ = self.detection([vname], others, t0, a.partition_s)
                what = f"{vname} deaf"
                run = {"split": what}
            if first is not None:
                self.out.detect_first.append(first)
            if every is None:
                self.out.missed += 1
            else:
                self.out.detect_all.append(every)
            rest = t0 + a.partition_s - time.time()
            if rest > 0:
                self.sleep(rest)
            t1 = self.lab.heal()
            healed = nodes.wait_whole(a.heal_timeout)
            heal = max(0.0, nodes.obs.full_since(nodes.names, nodes.names) - t1) if healed else None
            self.out.heal.append(heal)
            run.update({"detect_first_s": r2(first), "detect_all_s": r2(every), "heal_s": r2(heal)})
            self.out.runs.append(run)
            log(f"{self.driver.name} partition ({what}, {a.partition_s:.0f} s): detected first "
                f"{_fmt(first)} all {_fmt(every)}; healed {_fmt(heal) if healed else 'NOT within %.0f s' % a.heal_timeout}")
            if healed:
                for e in excuses:
                    e.end = time.time()
                self.sleep(a.settle)
            else:
                self.restart_cluster(f"not healed within {a.heal_timeout:.0f} s")

    def _udp_block(self) -> None:
        nodes = self.nodes
        assert nodes is not None
        for _ in range(self.runs):
            v = self.pick_victim()
            vname = nodes.name(v)
            self.victims.add(vname)
            t0 = self.lab.block_udp(v)
            self.sleep(self.args.block_s)
            self.lab.heal()
            healthy = self.ensure_whole(60.0)
            drops = [d for d in nodes.obs.drops_between(t0, time.time())
                     if not any(e.covers(d[0], d[1], d[2]) for e in self.excuses)]
            self.out.runs.append({"victim": vname, "drops": len(drops), "whole_after": healthy})
            log(f"{self.driver.name} udp-block {vname} {self.args.block_s:.0f} s: {len(drops)} drops")
            self.sleep(self.args.settle)

    def _pause(self) -> None:
        nodes = self.nodes
        assert nodes is not None
        a = self.args
        watch = self.timings.suspicion_max_s(self.n) + 5 * self.timings.probe_ms / 1000.0
        for _ in range(self.runs):
            v = self.pick_victim()
            vname = nodes.name(v)
            self.victims.add(vname)
            others = [nodes.name(i) for i in range(self.n) if i != v]
            # short: no one may drop it
            t0 = nodes.signal(v, signal.SIGSTOP)
            time.sleep(a.pause_short)
            t1 = nodes.signal(v, signal.SIGCONT)
            self.sleep(watch)
            short_drops = [d for d in nodes.obs.drops_between(t0, time.time())
                           if not any(e.covers(d[0], d[1], d[2]) for e in self.excuses)]
            # long: declared dead, then back by itself after SIGCONT
            t2 = nodes.signal(v, signal.SIGSTOP)
            exc = self.excuse([vname], None, t2)
            time.sleep(a.pause_long)
            dropped = nodes.obs.first_drops([vname], others, t2)
            t3 = nodes.signal(v, signal.SIGCONT)
            whole = nodes.wait_whole(max(60.0, 2 * a.pause_long), fresh_after=t3)
            back = max(0.0, nodes.obs.full_since(nodes.names, nodes.names) - t3) if whole else None
            exc.end = time.time()
            self.out.rejoin.append(back)
            every = max(dropped.values()) - t2 if len(dropped) == len(others) else None
            if every is not None:
                self.out.detect_all.append(every)
                self.out.detect_first.append(min(dropped.values()) - t2)
            self.out.runs.append({"victim": vname, "short_pause_drops": len(short_drops),
                                  "short_pause_s": r2(t1 - t0), "long_pause_dropped_by": len(dropped),
                                  "long_pause_all_dropped_s": r2(every), "rejoin_s": r2(back)})
            log(f"{self.driver.name} pause {vname}: {a.pause_short:.0f} s -> {len(short_drops)} drops; "
                f"{a.pause_long:.0f} s -> dropped by {len(dropped)}/{len(others)}, back in every view "
                f"{_fmt(back) if whole else 'NOT within timeout'} after SIGCONT")
            if not whole:
                self.restart_cluster(f"{vname} not back after SIGCONT")
            else:
                self.sleep(a.settle)

    def _starve(self) -> None:
        nodes = self.nodes
        assert nodes is not None
        v = self.pick_victim()
        vname = nodes.name(v)
        self.victims.add(vname)
        how = self.lab.limit_cpu(nodes.procs[v].pid, self.args.cpu_pct)
        if self.args.starve_hog:
            # The node's host is busy too: a process that never sleeps shares the node's quota
            # (in the node's namespace and cgroup; it dies with the harness or the namespace).
            self.hog = subprocess.Popen([*self.lab.exec_prefix(v), sys.executable, "-c", "while True: pass"],
                                        stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig)
            self.lab.add_to_cpu_limit(self.hog.pid)
            how += ", shared with a busy loop"
        self.out.notes.append(f"{vname} capped: {how}")
        t0 = time.time()
        exc = self.excuse([vname], None, t0)
        log(f"{self.driver.name} starve: {vname} capped at {self.args.cpu_pct:g} % of a core ({how})")
        cpu0 = proc_cpu_s(nodes.procs[v].pid) or 0.0
        self.sleep(self.duration)
        used = 100 * ((proc_cpu_s(nodes.procs[v].pid) or 0.0) - cpu0) / max(1e-9, time.time() - t0)
        self._stop_hog()
        self.lab.unlimit_cpu()
        dropped = nodes.obs.first_drops([vname], nodes.names, t0)
        t1 = time.time()
        whole = self.ensure_whole(60.0)
        exc.end = t1
        self.out.runs.append({"victim": vname, "victim_cpu_pct": r2(used),
                              "victim_dropped_by": len(dropped), "whole_after": whole})
        log(f"{self.driver.name} starve: {vname} used {used:.1f} % of a core; dropped by {len(dropped)} nodes")

    def _stop_hog(self) -> None:
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait()
            self.hog = None

    def _idle(self) -> None:
        self.sleep(self.duration)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _worst(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return r2(max(v for v in values if v is not None))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


# ---------------------------------------------------------------------------------- bars


def bar(r: dict[str, Any]) -> tuple[str, bool | None]:
    """The scenario's pass/fail bar (the goals, at LAN timings) and whether this result meets it."""
    fd = r["false_dead"] + r["false_dead_by_victim"]
    s = r["scenario"]
    if s == "kill":
        ok = fd == 0 and r["missed"] == 0
        goal = "every kill detected by every survivor, 0 false deaths"
        if r["timings_ms"][0] == 1000:
            goal += "; all-survivors p50 <= 9.0 s, p99 <= 11.0 s"
            ok = ok and (r["detect_all_p50_s"] or 99) <= 9.0 and (r["detect_all_p99_s"] or 99) <= 11.0
        return goal, ok
    if s == "loss":
        return "0 false deaths", fd == 0
    if s == "partition":
        ok = r["heal_s"] is not None and r["heal_s"] <= 10.0 and r["false_dead"] == 0
        return "one cluster again <= 10 s after every heal; 0 false deaths", ok
    if s == "udp-block":
        return "0 false deaths (TCP fallback keeps the node alive everywhere)", fd == 0
    if s == "pause":
        short = sum(x["short_pause_drops"] for x in r["run_detail"])
        ok = short == 0 and r["rejoin_s"] is not None and r["rejoin_s"] <= 5.0
        return "short pause: 0 false deaths; long pause: back in every view <= 5 s after SIGCONT", ok
    if s == "starve":
        return "0 false deaths caused by the starved node", fd == 0
    if s == "idle":
        ok = fd == 0 and (r["rss_mib_per_node"] or 99) <= 20.0
        return "RSS per node <= 20 MiB, CPU per node <= memberlist's, 0 false deaths", ok
    return "", None


def compare(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """This library against memberlist in the same invocation, where the goals ask for it."""
    ours = next((r for r in results if r["driver"] == "gossip"), None)
    theirs = next((r for r in results if r["driver"] == "memberlist"), None)
    if ours is None or theirs is None:
        return None
    out: dict[str, Any] = {"kind": "comparison", "scenario": ours["scenario"], "nodes": ours["nodes"],
                           "loss": ours["loss"], "command": ours["command"]}
    if ours["scenario"] == "kill":
        checks = [(k, ours[k], theirs[k]) for k in ("detect_all_p50_s", "detect_all_p99_s")]
    elif ours["scenario"] == "idle":
        checks = [("cpu_pct_per_node", ours["cpu_pct_per_node"], theirs["cpu_pct_per_node"])]
    else:
        return None
    out["figures"] = {k: {"gossip": a, "memberlist": b} for k, a, b in checks}
    out["pass"] = all(a is not None and b is not None and a <= b for _, a, b in checks)
    out["goal"] = "at or below memberlist's in the same run"
    return out


# ---------------------------------------------------------------------------------- output

_COLS = [("scenario", 10), ("driver", 10), ("N", 4), ("loss", 5), ("runs", 4), ("first p50", 9),
         ("all p50", 8), ("all p99", 8), ("false dead", 10), ("heal max", 8), ("rejoin", 7),
         ("CPU%/node", 9), ("RSS MiB", 7), ("load 1m", 13), ("pass", 5)]


def table(results: list[dict[str, Any]]) -> str:
    """The human table, then each result's bar and detail."""
    def f(x: Any) -> str:
        return "-" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))

    rows = [" | ".join(h.ljust(w) for h, w in _COLS)]
    rows.append("-+-".join("-" * w for _, w in _COLS))
    for r in results:
        if r["kind"] != "result":
            continue
        heal = f(r["heal_s"])
        if r["scenario"] == "partition" and r["heal_s"] is None:
            heal = f"{r['healed_runs']}/{r['runs']} healed"
        cells = [r["scenario"] + ("/" + r["split"] if "split" in r else ""), r["driver"], r["nodes"],
                 f"{r['loss']:g}%", r["runs"], f(r["detect_first_p50_s"]), f(r["detect_all_p50_s"]),
                 f(r["detect_all_p99_s"]), f"{r['false_dead']}+{r['false_dead_by_victim']}", heal,
                 f(r["rejoin_s"]), f(r["cpu_pct_per_node"]), f(r["rss_mib_per_node"]),
                 f"{r['loadavg_start'][0]:.1f}/{r['loadavg_max_1m']:.1f}/{r['loadavg_end'][0]:.1f}",
                 {True: "PASS", False: "FAIL", None: "-"}[r["pass"]]]
        rows.append(" | ".join(str(c).ljust(w) for c, (_, w) in zip(cells, _COLS)))
    rows.append("")
    rows.append("false dead: by undisturbed observers + by the disrupted node itself; "
                "load 1m: at start / highest / at end")
    for r in results:
        if r["kind"] == "comparison":
            figs = ", ".join(f"{k} {v['gossip']} vs {v['memberlist']}" for k, v in r["figures"].items())
            rows.append(f"{r['scenario']} N={r['nodes']}: gossip vs memberlist: {figs}: "
                        f"{'PASS' if r['pass'] else 'FAIL'} ({r['goal']})")
        else:
            rows.append(f"{r['scenario']} {r['driver']}: bar: {r['goal']}: "
                        f"{ {True: 'PASS', False: 'FAIL', None: '-'}[r['pass']]}; "
                        f"CPU/node {f(r['cpu_pct_per_node'])} % (max {f(r['cpu_pct_per_node_max'])}), "
                        f"RSS {f(r['rss_mib_per_node'])} MiB (max {f(r['rss_mib_per_node_max'])}), "
                        f"harness {f(r['harness_cpu_pct'])} %, {r['date']}")
            for note in r["notes"]:
                rows.append(f"    note: {note}")
            for d in r["false_dead_detail"][:5]:
                rows.append(f"    false death: +{d['t']} s {d['observer']} dropped {d['member']} ({d['seen_by']})")
    return "\n".join(rows)


def _f(x: Any, unit: str = "") -> str:
    return "-" if x is None else (f"{x:.2f}{unit}" if isinstance(x, float) else f"{x}{unit}")


def _runs(r: dict[str, Any], key: str) -> str:
    return ", ".join(_f(x.get(key)) for x in r["run_detail"])


# (figure, goal, what a result shows for it), per scenario: the markdown report
_Fig = tuple[str, str, Callable[[dict[str, Any]], str]]
_FIGURES: dict[str, list[_Fig]] = {
    "kill": [
        ("every survivor drops it, p50 / p99 (s)", "<= 9.0 / <= 11.0, and <= memberlist's",
         lambda r: f"{_f(r['detect_all_p50_s'])} / {_f(r['detect_all_p99_s'])}"),
        ("first suspected / first survivor drops it, p50 (s)", "",
         lambda r: f"{_f(r.get('suspect_first_p50_s'))} / {_f(r['detect_first_p50_s'])}"),
        ("false deaths; kills not seen by all", "0; 0",
         lambda r: f"{r['false_dead'] + r['false_dead_by_victim']}; {r['missed']}"),
    ],
    "loss": [
        ("false deaths", "0", lambda r: str(r["false_dead"] + r["false_dead_by_victim"])),
        ("kills: every survivor drops it, p50 / max (s)", "",
         lambda r: f"{_f(r['detect_all_p50_s'])} / {_f(r['detect_all_max_s'])} ({r['detections']} kills)"),
    ],
    "partition": [
        ("one cluster again after the heal, each run (s)", "<= 10, every run",
         lambda r: ", ".join(_f(h) if h is not None else "not healed" for h in
                             [x.get("heal_s") for x in r["run_detail"]])),
        ("each side drops the other, p50 (s)", "", lambda r: _f(r["detect_all_p50_s"])),
        ("false deaths", "0", lambda r: str(r["false_dead"])),
    ],
    "udp-block": [
        ("false deaths (by others + by the blocked node)", "0",
         lambda r: f"{r['false_dead']} + {r['false_dead_by_victim']}"),
    ],
    "pause": [
        ("short pause: false deaths", "0", lambda r: str(sum(x["short_pause_drops"] for x in r["run_detail"]))),
        ("long pause: dropped by all after, each run (s)", "", lambda r: _runs(r, "long_pause_all_dropped_s")),
        ("long pause: back in every view after SIGCONT, each run (s)", "<= 5", lambda r: _runs(r, "rejoin_s")),
    ],
    "starve": [
        ("false deaths (by healthy nodes + by the starved node)", "0",
         lambda r: f"{r['false_dead']} + {r['false_dead_by_victim']}"),
        ("starved node: CPU used (% of a core); dropped by", "", lambda r: "; ".join(
            f"{_f(x['victim_cpu_pct'])}; {x['victim_dropped_by']}" for x in r["run_detail"])),
    ],
    "idle": [
        ("CPU per node (% of a core)", "<= memberlist's", lambda r: _f(r["cpu_pct_per_node"])),
        ("RSS per node (MiB)", "<= 20", lambda r: _f(r["rss_mib_per_node"])),
    ],
}


def markdown(results: list[dict[str, Any]]) -> str:
    """A markdown table: one row per figure, this library's and memberlist's from the same run."""
    rows = ["| scenario | N | loss | figure | goal | gossip | memberlist | load 1m: start / max / end "
            "(gossip; memberlist) | date, code | command |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    groups: list[tuple[str, str, dict[str, dict[str, Any]]]] = []
    current: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:     # one invocation gives each driver's result in turn, for each scenario
        if r.get("kind") == "result":
            key = (r["command"], r["scenario"])
            if key not in current or r["driver"] in current[key]:   # (the same command again)
                current[key] = {}
                groups.append((*key, current[key]))
            current[key][r["driver"]] = r
    for command, scenario, by in groups:
        ours, theirs = by.get("gossip"), by.get("memberlist")
        first = ours or theirs
        assert first is not None
        name = scenario + (f" ({first['split']}, {first['partition_s']:g} s)" if scenario == "partition" else "")
        if scenario == "pause":
            name += f" ({first['pause_short_s']:g} s / {first['pause_long_s']:g} s)"
        if scenario == "starve" and first.get("starve_hog"):
            name += " with a busy loop"
        if scenario in ("loss", "starve", "idle"):
            name += f" ({first[{'loss': 'loss_s', 'starve': 'starve_s', 'idle': 'idle_s'}[scenario]]:g} s)"
        loads = "; ".join(f"{x['loadavg_start'][0]:.1f} / {x['loadavg_max_1m']:.1f} / {x['loadavg_end'][0]:.1f}"
                          for x in (ours, theirs) if x)
        for label, goal, fig in _FIGURES[scenario]:
            cells = [name, str(first["nodes"]), f"{first['loss']:g} %", label, goal,
                     fig(ours) if ours else "", fig(theirs) if theirs else "",
                     loads, first["date"] + (f", code {first['code']}" if first.get("code") else ""),
                     f"`{command}`"]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run as root (network namespaces). See the module docstring.")
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default kill")
    p.add_argument("--nodes", type=int, default=6)
    p.add_argument("--loss", type=float, default=None, help="per cent of frames lost on every link "
                   "(default 0; 5 for the loss scenario)")
    p.add_argument("--runs", type=int, default=None, help="disruptions per scenario "
                   "(default: kill 5, partition/udp-block/pause 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--driver", action="append", help="'gossip' (default) or a driver command; repeatable")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--probe-interval-ms", type=int, default=1000)
    p.add_argument("--probe-timeout-ms", type=int, default=500)
    p.add_argument("--gossip-interval-ms", type=int, default=200)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of loss (600), starve (300) or idle (60)")
    p.add_argument("--kill-every", type=float, default=60.0, help="loss: seconds between kills")
    p.add_argument("--split", choices=("halves", "oneway"), default="halves")
    p.add_argument("--partition-s", type=float, default=30.0)
    p.add_argument("--heal-timeout", type=float, default=120.0)
    p.add_argument("--block-s", type=float, default=60.0)
    p.add_argument("--pause-short", type=float, default=3.0)
    p.add_argument("--pause-long", type=float, default=30.0)
    p.add_argument("--cpu-pct", type=float, default=5.0)
    p.add_argument("--starve-hog", action="store_true",
                   help="starve: a busy loop shares the starved node's CPU quota")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of quiet after each run")
    p.add_argument("--start-batch", type=int, default=10, help="nodes started at once")
    p.add_argument("--keep-logs", action="store_true", help="keep the drivers' stderr files")
    p.add_argument("--report", nargs="+", metavar="JSONL", help="print a markdown table of the "
                   "results saved from --json runs, and exit")
    a = p.parse_args(argv)
    a.scenario = a.scenario or ["kill"]
    a.driver = a.driver or ["gossip"]
    minimum = 4 if "partition" in a.scenario else 2
    if a.nodes < minimum or a.nodes > 1000:
        p.error(f"--nodes must be in [{minimum}, 1000]")
    if a.loss is not None and not 0 <= a.loss < 100:
        p.error("--loss must be in [0, 100)")
    a.command = shlex.join(["python", "bench/chaos.py", *argv])
    a.code = _code_version()
    return a


def _code_version() -> str:
    """The last commit of this library's code (``gossip/``) the run measured (``+changes`` if
    its files differ from it)."""
    root = str(HERE.parent)
    try:
        head = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h", "--", "gossip"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "gossip"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Run every scenario with every driver; print the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report:
        saved = []
        for path in args.report:
            with open(path, encoding="utf-8") as f:
                saved += [json.loads(line) for line in f if line.strip()]
        print(markdown(saved))
        return 0
    net.install_signal_handlers()
    why = "; ".join(net.missing_tools())
    if not why:
        removed = net.sweep()
        if removed:
            log(f"removed what an earlier run left: {', '.join(removed)}")
        why = net.unavailable()
    if why:
        print(f"chaos: cannot run here: {why}", file=sys.stderr)
        return 2
    drivers = [Driver.parse(d) for d in args.driver]
    # This library's nodes load compiled bytecode, as an installed package's do (pip compiles
    # it), not every module compiled from source in every process (about 3 MiB of RSS more
    # each): see bench/bytecode.py.
    pycache = tempfile.mkdtemp(prefix="gchaos-pyc-")
    if any(d.name == "gossip" for d in drivers):
        env = cached_env(pycache)
        drivers = [replace(d, env=env) if d.name == "gossip" else d for d in drivers]
    loads = LoadSampler()
    logdir = tempfile.mkdtemp(prefix="gchaos-logs-")
    results: list[dict[str, Any]] = []
    log(f"{args.command}  (seed {args.seed}; {os.cpu_count()} cores, {platform.release()}, "
        f"load {LoadSampler.now()}; driver logs in {logdir})")
    failed = False
    try:
        with Lab() as lab:
            t = time.time()
            lab.create(args.nodes)
            log(f"lab: {args.nodes} namespaces on one bridge ({net.NETWORK}) in {time.time() - t:.1f} s")
            for scenario in args.scenario:
                batch = []
                for driver in drivers:
                    log(f"--- {scenario} with {driver.name} ({args.nodes} nodes)")
                    try:
                        res = Scenario(args, lab, driver, scenario, logdir, loads).run()
                    except (HarnessError, LabError) as exc:
                        failed = True
                        log(f"{driver.name} {scenario}: FAILED: {exc}")
                        res = {"kind": "error", "scenario": scenario, "driver": driver.name,
                               "nodes": args.nodes, "error": str(exc), "command": args.command}
                    results.append(res)
                    if res["kind"] == "result":
                        batch.append(res)
                    if args.json:
                        print(json.dumps(res), flush=True)
                cmp_ = compare(batch)
                if cmp_ is not None:
                    results.append(cmp_)
                    if args.json:
                        print(json.dumps(cmp_), flush=True)
        left = lab.leftovers()
        if left:
            log(f"WARNING: namespaces left behind: {left}")
    finally:
        loads.close()
        shutil.rmtree(pycache, ignore_errors=True)
        if not args.keep_logs and not failed:
            for name in os.listdir(logdir):
                os.unlink(os.path.join(logdir, name))
            os.rmdir(logdir)
        elif os.path.isdir(logdir):
            log(f"driver logs kept in {logdir}")
    if not args.json:
        print(f"command: {args.command}")
        print(table([r for r in results if r["kind"] != "error"]))
        for r in results:
            if r["kind"] == "error":
                print(f"{r['scenario']} {r['driver']}: ERROR {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
