"""How the protocol scales with cluster size, measured in the deterministic simulator.

For each N it runs the ``join`` scenario (everyone joins through one seed at once: seconds until
every node sees every node) and the ``crash`` scenario (one node killed in a converged cluster:
seconds until every survivor has dropped it), and prints one table row with the per-node load.

    python bench/sim_scale.py                 # N = 100, 1000, 5000 (and 10000 with --max 10000)
    python bench/sim_scale.py --sizes 100 1000
"""

from __future__ import annotations

import argparse
import sys
import time

from gossip.sim.scenarios import ScenarioParams, run_scenario


_BYTES_PER_MEMBER_RECORD = 320  # measured (peak RSS of a 2,000-node crash run): bytes per (node, member) pair


def _available_memory() -> int:
    """Return MemAvailable in bytes (a large number where /proc is missing)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--max", type=int, default=0, help="also run this size (e.g. 10000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=600.0, help="skip sizes once this much wall time is spent")
    args = ap.parse_args()
    sizes = list(args.sizes) + ([args.max] if args.max else [])
    header = (f"{'N':>6} {'join conv s':>11} {'join wall s':>11} {'crash det. all s':>16} {'crash wall s':>12} "
              f"{'msgs/node/s':>11} {'bytes/node/s':>12}")
    print(header)
    print("-" * len(header))
    spent = 0.0
    for n in sizes:
        need = n * n * _BYTES_PER_MEMBER_RECORD
        if need > _available_memory():
            print(f"{n:>6} skipped: every simulated node keeps the whole member table, about "
                  f"{need / 2**30:.0f} GiB at this size, more than this machine has free")
            continue
        if spent > args.budget:
            print(f"{n:>6} skipped: wall-time budget of {args.budget:.0f} s spent")
            continue
        t0 = time.perf_counter()
        join = run_scenario(ScenarioParams(scenario="join", nodes=n, seed=args.seed, duration=60.0))
        crash = run_scenario(ScenarioParams(scenario="crash", nodes=n, seed=args.seed, duration=90.0))
        spent += time.perf_counter() - t0
        print(f"{n:>6} {str(join['converged_s']):>11} {join['wall_s']:>11} {str(crash['detect_all_s']):>16} "
              f"{crash['wall_s']:>12} {crash['msgs_per_node_s']:>11} {crash['bytes_per_node_s']:>12}", flush=True)
    print("\nmsgs and bytes per node per second are those of the crash run (steady state plus one failure).")
    print("reproduce: python bench/sim_scale.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
