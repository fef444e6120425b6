"""Sweep the simulator's ``leave`` scenario over many seeds and report the tail.

Every run: a converged cluster, a little uniform loss, and at the moment one node leaves a burst
of metadata updates from other nodes. The figure is, per run, the time until every survivor has
dropped the leaver; the script prints the distribution and the slowest seeds with their replay
commands.

    python bench/leave_sweep.py                          # 300 seeds, 32 nodes, 2 % loss, burst 16
    python bench/leave_sweep.py --seeds 1000 --loss 0.05 --burst 31
"""

from __future__ import annotations

import argparse
import sys
import time

from gossip.sim.scenarios import ScenarioParams, run_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=300)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("--burst", type=int, default=16)
    ap.add_argument("--burst-size", type=int, default=200)
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds allowed per run")
    ap.add_argument("--bar", type=float, default=1.0, help="seconds every survivor must drop the leaver in")
    args = ap.parse_args()
    print(f"command: python bench/leave_sweep.py --seeds {args.seeds} --first-seed {args.first_seed} "
          f"--nodes {args.nodes} --loss {args.loss} --burst {args.burst} --burst-size {args.burst_size}")
    t0 = time.perf_counter()
    times: list[tuple[float, int]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = run_scenario(ScenarioParams(scenario="leave", nodes=args.nodes, seed=seed, loss=args.loss,
                                        burst=args.burst, burst_size=args.burst_size, duration=args.duration))
        t = r["detect_all_s"]
        times.append((float("inf") if t is None else float(t), seed))
    times.sort()
    values = [t for t, _ in times]
    n = len(values)

    def q(p: float) -> float:
        return values[min(n - 1, int(p * n))]

    over = [(t, s) for t, s in times if t > args.bar]
    print(f"runs {n}, wall {time.perf_counter() - t0:.1f} s")
    print(f"leave seen by every survivor: median {q(0.5):.3f} s, p90 {q(0.9):.3f} s, p99 {q(0.99):.3f} s, "
          f"max {values[-1]:.3f} s")
    print(f"runs over {args.bar} s: {len(over)}")
    for t, seed in times[-5:][::-1]:
        print(f"  {t:8.3f} s  python -m gossip.sim --scenario leave --nodes {args.nodes} --seed {seed} "
              f"--loss {args.loss} --burst {args.burst} --burst-size {args.burst_size}")
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
