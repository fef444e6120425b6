"""How the protocol scales with cluster size, measured in the deterministic simulator.

For each N it runs the ``join`` scenario (everyone joins through one seed at once: seconds until
every node sees every node) and the ``crash`` scenario (one node killed in a converged cluster:
seconds until every survivor has dropped it), each size in a process of its own so that its
peak RSS is its own, and prints one table row: join convergence, crash detection by all, false
deaths, messages and bytes per node per second (of the crash run: steady state plus one
failure), peak RSS and wall time.

    python bench/sim_scale.py                       # N = 100, 1000, 5000
    python bench/sim_scale.py --sizes 1000 5000 10000
    python bench/sim_scale.py --sizes 1000 --tables objects

Member tables are compact (gossip.sim.compact) from ``COMPACT_FROM`` nodes on (``--tables``):
about 70 bytes a (node, member) pair instead of about 430; a size whose estimate exceeds the
memory available is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from gossip.sim.scenarios import COMPACT_FROM, ScenarioParams, run_scenario

# Measured (peak RSS of 1,000- and 2,000-node crash runs, less the interpreter): bytes per
# (node, member) pair.
_BYTES_PER_PAIR = {"objects": 430, "compact": 75}


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


def _one(n: int, seed: int, tables: str) -> dict[str, object]:
    """Run both scenarios at size ``n`` in this process and return the figures."""
    t0 = time.perf_counter()
    join = run_scenario(ScenarioParams(scenario="join", nodes=n, seed=seed, duration=60.0, tables=tables))
    crash = run_scenario(ScenarioParams(scenario="crash", nodes=n, seed=seed, duration=90.0, tables=tables))
    return {
        "nodes": n, "join_converged_s": join["converged_s"], "join_wall_s": join["wall_s"],
        "crash_detect_all_s": crash["detect_all_s"], "crash_wall_s": crash["wall_s"],
        "false_dead": join["false_dead"] + crash["false_dead"],
        "msgs_per_node_s": crash["msgs_per_node_s"], "bytes_per_node_s": crash["bytes_per_node_s"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tables", choices=("auto", "objects", "compact"), default="auto")
    ap.add_argument("--budget", type=float, default=3600.0, help="skip sizes once this much wall time is spent")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # run one size here, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.seed, args.tables)))
        return 0
    header = (f"{'N':>6} {'join conv s':>11} {'crash all s':>11} {'false dead':>10} {'msgs/node/s':>11} "
              f"{'bytes/node/s':>12} {'peak RSS MiB':>12} {'join wall s':>11} {'crash wall s':>12} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    spent = 0.0
    for n in args.sizes:
        kind = args.tables if args.tables != "auto" else ("compact" if n >= COMPACT_FROM else "objects")
        need = n * n * _BYTES_PER_PAIR[kind]
        if need > _available_memory():
            print(f"{n:>6} skipped: its member tables ({kind}) need about {need / 2**30:.1f} GiB, "
                  f"more than this machine has free")
            continue
        if spent > args.budget:
            print(f"{n:>6} skipped: wall-time budget of {args.budget:.0f} s spent")
            continue
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(n), "--seed", str(args.seed),
                              "--tables", args.tables], capture_output=True, text=True, check=True)
        spent += time.perf_counter() - t0
        r = json.loads(out.stdout)
        print(f"{n:>6} {str(r['join_converged_s']):>11} {str(r['crash_detect_all_s']):>11} {r['false_dead']:>10} "
              f"{r['msgs_per_node_s']:>11} {r['bytes_per_node_s']:>12} {r['peak_rss_mib']:>12} "
              f"{r['join_wall_s']:>11} {r['crash_wall_s']:>12} {r['wall_s']:>7}", flush=True)
    print(f"\ntables: {args.tables} (compact from {COMPACT_FROM} nodes with auto); msgs and bytes per node "
          "per second are those of the crash run (steady state plus one failure).")
    print("reproduce: python bench/sim_scale.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
