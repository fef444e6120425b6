"""``python -m gossip.sim``: run one simulated scenario and print its figures.

On a terminal, progress (virtual time, events, wall time) is shown on standard error while it
runs. The figures end with a ``replay:`` line naming every flag that differs from its default,
so that running it gives the same run (the same ``trace_hash``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .grid import GRID_LOSS, GRID_NODES, GRID_STARVED, HEADER, format_row, grid_cells, run_grid
from .scenarios import COMPACT_FROM, DEFAULTS, SCENARIOS, ScenarioParams, run_scenario
from .simulation import Simulation

_OUTPUT_ONLY = frozenset({"json", "tables"})
"""Flags that change how the figures are printed (or the memory used), not the run."""

GRID = "lifeguard-grid"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the simulator command."""
    p = argparse.ArgumentParser(prog="python -m gossip.sim",
                                description="Run a deterministic simulated gossip cluster.")
    p.add_argument("--scenario", choices=sorted([*SCENARIOS, GRID]), default="crash")
    p.add_argument("--nodes", type=int, help="cluster size (scenario default if omitted)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, help="virtual seconds (scenario default if omitted)")
    p.add_argument("--loss", type=float, help="uniform loss of best-effort packets, 0..1")
    p.add_argument("--burst-loss", type=float, default=0.0, help="loss during bad periods of a bursty link")
    p.add_argument("--reorder", type=float, default=0.0, help="share of packets delayed extra (reordering)")
    p.add_argument("--latency", type=float, default=0.0005, help="base one-way latency, seconds")
    p.add_argument("--jitter", type=float, default=0.0002, help="mean exponential jitter, seconds")
    p.add_argument("--lifeguard", choices=("on", "off"), default="on")
    p.add_argument("--config", choices=("lan", "wan", "local"), default="lan")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before the fault")
    p.add_argument("--starved", type=int, default=5, help="starve: how many nodes are starved")
    p.add_argument("--starve-delay", type=float, default=2.0, help="starve: message handling delay, s")
    p.add_argument("--starve-timer-delay", type=float, default=0.0, help="starve: timers up to this late, s")
    p.add_argument("--partition-duration", type=float, default=60.0)
    p.add_argument("--split", type=float, default=0.5, help="partition: share of the nodes on one side")
    p.add_argument("--churn-interval", type=float, default=1.0)
    p.add_argument("--quiet-tail", type=float, default=60.0, help="churn: no new faults in the last seconds")
    p.add_argument("--burst", type=int, default=0,
                   help="crash/leave: this many other nodes change their metadata at the same moment")
    p.add_argument("--burst-size", type=int, default=200, help="bytes of metadata per burst update")
    p.add_argument("--leader-timeout", type=float, default=3.0, help="leader-split: the election's leader_timeout, s")
    p.add_argument("--phase", type=float, help="leader-split: the split's phase in the leader's heartbeat interval, 0..1")
    p.add_argument("--retention", type=float, help="dead_node_retention_period, s (leader-split)")
    p.add_argument("--clock-drift", type=float, default=0.0,
                   help="leader-split: each node's clock runs this much fast or slow (0.01 = 1 %%)")
    p.add_argument("--max-clock-drift-rate", type=float, default=0.01,
                   help="leader-split: the drift the election assumes (LeaderConfig.max_clock_drift_rate)")
    p.add_argument("--slow-rtt", type=float, default=0.3,
                   help="slow: the slow member's round trip, s (ping_timeout is 0.2 s)")
    p.add_argument("--adaptive-ping", action="store_true",
                   help="Config.adaptive_ping_timeout: each member's probe timeout from its round trips")
    p.add_argument("--seeds", type=int, default=10,
                   help="lifeguard-grid: runs per cell (seeds --seed, --seed + 1, ...)")
    p.add_argument("--jobs", type=int, default=1,
                   help="lifeguard-grid: processes that run a cell's seeds side by side "
                        "(the same figures; default 1)")
    p.add_argument("--grid-starved", type=float, nargs="+",
                   help="lifeguard-grid: shares of starved nodes (default 0 0.01 0.05 0.1)")
    p.add_argument("--joiners", type=int,
                   help="join: how many nodes join (the rest form a converged cluster first); "
                        "all but one by default")
    p.add_argument("--grid-lifeguard", choices=("both", "on", "off"), default="both",
                   help="lifeguard-grid: run the cells with Lifeguard on, off, or both")
    p.add_argument("--tables", choices=("auto", "objects", "compact"), default="auto",
                   help="member tables: ordinary objects, or compact arrays (auto: compact from "
                        f"{COMPACT_FROM} nodes); the run is the same, memory and speed differ")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (lifeguard-grid: one per cell and line)")
    return p


def replay_command(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> str:
    """Return the command that runs ``args`` again: the scenario, the seed, and every flag
    whose value differs from its default (output-only flags such as ``--json`` left out)."""
    parser = parser or build_parser()
    words = ["python", "-m", "gossip.sim", "--scenario", args.scenario, "--seed", str(args.seed)]
    for dest, value in vars(args).items():      # every flag, in the order of --help
        if dest in ("scenario", "seed") or dest in _OUTPUT_ONLY:
            continue
        if value is None or value == parser.get_default(dest):
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            values = value if isinstance(value, (list, tuple)) else [value]   # nargs="+" flags
            words += [flag, *(repr(v) if isinstance(v, float) else str(v) for v in values)]
    return shlex.join(words)


def progress_printer(out: TextIO, duration: float) -> Callable[[Simulation], None]:
    """Return an observer that redraws one progress line on ``out`` (a terminal)."""
    start = time.monotonic()

    def show(sim: Simulation) -> None:
        share = min(0.99, sim.now / duration) if duration > 0 else 0.0
        out.write(f"\r  {sim.now:7.1f}s of ~{duration:g}s virtual ({share:3.0%})  "
                  f"{sim.events:>11,} events  {time.monotonic() - start:6.1f}s  ")
        out.flush()

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator command; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scenario == GRID:
        return _grid(args, parser)
    params = ScenarioParams(
        scenario=args.scenario, nodes=args.nodes, seed=args.seed, duration=args.duration, loss=args.loss,
        burst_loss=args.burst_loss, reorder=args.reorder, latency=args.latency, jitter=args.jitter,
        lifeguard=args.lifeguard == "on", config=args.config, warmup=args.warmup, starved=args.starved,
        starve_delay=args.starve_delay, starve_timer_delay=args.starve_timer_delay,
        partition_duration=args.partition_duration, split=args.split, churn_interval=args.churn_interval,
        quiet_tail=args.quiet_tail, burst=args.burst, burst_size=args.burst_size,
        leader_timeout=args.leader_timeout, phase=args.phase, retention=args.retention,
        clock_drift=args.clock_drift, max_clock_drift_rate=args.max_clock_drift_rate,
        slow_rtt=args.slow_rtt, adaptive_ping=args.adaptive_ping, tables=args.tables, joiners=args.joiners,
    )
    progress = None
    if sys.stderr.isatty():
        defaults = DEFAULTS.get(args.scenario, {})
        duration = args.duration if args.duration is not None else defaults.get("duration", 0.0)
        progress = progress_printer(sys.stderr, float(duration or 0.0))
    try:
        result = run_scenario(params, progress)
    finally:
        if progress is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
        print(f"\nreplay: {replay_command(args, parser)}")
    return 0


def _grid(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the Lifeguard grid (``--nodes`` and ``--loss`` narrow it to one size or loss)."""
    nodes = (args.nodes,) if args.nodes else GRID_NODES
    loss = (args.loss,) if args.loss is not None else GRID_LOSS
    starved = tuple(args.grid_starved) if args.grid_starved else GRID_STARVED
    kw = {"duration": args.duration} if args.duration is not None else {}
    seeds = range(args.seed, args.seed + args.seeds)
    if not args.json:
        print(HEADER)

    def show(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
            return
        print(format_row(row), flush=True)
        if row.get("false_dead_seeds"):
            # The cell alone, with its first bad seed (Lifeguard on and off, as the grid runs).
            one = argparse.Namespace(**{**vars(args), "nodes": row["nodes"], "loss": row["loss"],
                                        "grid_starved": [row["starved"]], "seed": row["false_dead_seeds"][0],
                                        "seeds": 1, "jobs": 1})
            print(f"{'':>5} replay: {replay_command(one, parser)}", flush=True)

    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    halves = {"both": (True, False), "on": (True,), "off": (False,)}[args.grid_lifeguard]
    run_grid(grid_cells(nodes, loss, starved, halves, config=args.config, **kw), seeds, show,
             jobs=args.jobs)
    if not args.json:
        print(f"\nreplay: {replay_command(args, parser)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
