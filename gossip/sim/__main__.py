"""``python -m gossip.sim``: run one simulated scenario and print its figures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .scenarios import DEFAULTS, SCENARIOS, ScenarioParams, run_scenario


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the simulator command."""
    p = argparse.ArgumentParser(prog="python -m gossip.sim",
                                description="Run a deterministic simulated gossip cluster.")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="crash")
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
    p.add_argument("--json", action="store_true", help="print one JSON object (default: readable lines)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator command; return the exit status."""
    args = build_parser().parse_args(argv)
    params = ScenarioParams(
        scenario=args.scenario, nodes=args.nodes, seed=args.seed, duration=args.duration, loss=args.loss,
        burst_loss=args.burst_loss, reorder=args.reorder, latency=args.latency, jitter=args.jitter,
        lifeguard=args.lifeguard == "on", config=args.config, warmup=args.warmup, starved=args.starved,
        starve_delay=args.starve_delay, starve_timer_delay=args.starve_timer_delay,
        partition_duration=args.partition_duration, split=args.split, churn_interval=args.churn_interval,
        quiet_tail=args.quiet_tail, burst=args.burst, burst_size=args.burst_size,
        leader_timeout=args.leader_timeout, phase=args.phase, retention=args.retention,
        clock_drift=args.clock_drift, max_clock_drift_rate=args.max_clock_drift_rate,
    )
    result = run_scenario(params)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
        print(f"\nreplay: python -m gossip.sim --scenario {args.scenario} --seed {args.seed}"
              + (f" --nodes {args.nodes}" if args.nodes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
