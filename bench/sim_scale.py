"""How the protocol scales with cluster size, measured in the deterministic simulator.

For each N it runs the ``join`` scenario twice (one node joins a converged cluster of N - 1: the
spread of one piece of news; and everyone joins through one seed at once, up to ``--join-max``:
seconds until every node sees every node) and the ``crash`` scenario (one node killed in a
converged cluster: seconds until every survivor has dropped it), each size in a process of its
own so that its peak RSS is its own, and prints one table row: join convergence, crash detection by all, false
deaths, messages and bytes per node per second (of the crash run: steady state plus one
failure), peak RSS, wall and CPU time (and the load average: the machine may be shared).

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

# Measured (peak RSS of crash runs, less the interpreter): bytes per (node, member) pair; for
# compact tables that of the 10,000-node run (4.9 GiB, about 52 bytes a pair) with a margin:
# smaller runs cost more a pair (the interpreter and the registry weigh more), larger ones less.
_BYTES_PER_PAIR = {"objects": 430, "compact": 55}


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


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _one(n: int, seed: int, tables: str, join: bool) -> dict[str, object]:
    """Run both scenarios (the crash only, unless ``join``) at size ``n`` in this process and
    return the figures."""
    t0, c0 = time.perf_counter(), _cpu()
    out: dict[str, object] = {"nodes": n, "join_converged_s": "-", "join_wall_s": "-", "join_cpu_s": "-",
                              "false_dead": 0}
    c = _cpu()
    one = run_scenario(ScenarioParams(scenario="join", nodes=n, joiners=1, seed=seed, duration=60.0, tables=tables))
    out.update(join_one_s=one["converged_s"], join_one_cpu_s=round(_cpu() - c, 1), false_dead=one["false_dead"])
    if join:
        c = _cpu()
        r = run_scenario(ScenarioParams(scenario="join", nodes=n, seed=seed, duration=60.0, tables=tables))
        out.update(join_converged_s=r["converged_s"], join_wall_s=r["wall_s"], join_cpu_s=round(_cpu() - c, 1),
                   false_dead=int(out["false_dead"]) + r["false_dead"])  # type: ignore[call-overload]
    c = _cpu()
    crash = run_scenario(ScenarioParams(scenario="crash", nodes=n, seed=seed, duration=90.0, tables=tables))
    out.update(crash_detect_all_s=crash["detect_all_s"], crash_wall_s=crash["wall_s"],
               crash_cpu_s=round(_cpu() - c, 1), false_dead=int(out["false_dead"]) + crash["false_dead"],  # type: ignore[call-overload]
               msgs_per_node_s=crash["msgs_per_node_s"], bytes_per_node_s=crash["bytes_per_node_s"],
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               wall_s=round(time.perf_counter() - t0, 1), cpu_s=round(_cpu() - c0, 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tables", choices=("auto", "objects", "compact"), default="auto")
    ap.add_argument("--budget", type=float, default=3600.0, help="skip sizes once this much wall time is spent")
    ap.add_argument("--join-max", type=int, default=5000,
                    help="run the join scenario up to this size (above it, the crash scenario only)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # run one size here, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.seed, args.tables, args.one <= args.join_max)))
        return 0
    header = (f"{'N':>6} {'join one s':>10} {'join conv s':>11} {'crash all s':>11} {'false dead':>10} {'msgs/node/s':>11} "
              f"{'bytes/node/s':>12} {'peak RSS MiB':>12} {'join wall s':>11} {'join cpu s':>10} "
              f"{'crash wall s':>12} {'crash cpu s':>11} {'wall s':>7} {'cpu s':>7} {'load':>5}")
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
                              "--tables", args.tables, "--join-max", str(args.join_max)],
                             capture_output=True, text=True, check=True)
        spent += time.perf_counter() - t0
        r = json.loads(out.stdout)
        print(f"{n:>6} {str(r['join_one_s']):>10} {str(r['join_converged_s']):>11} {str(r['crash_detect_all_s']):>11} {r['false_dead']:>10} "
              f"{r['msgs_per_node_s']:>11} {r['bytes_per_node_s']:>12} {r['peak_rss_mib']:>12} "
              f"{r['join_wall_s']:>11} {r['join_cpu_s']:>10} {r['crash_wall_s']:>12} {r['crash_cpu_s']:>11} "
              f"{r['wall_s']:>7} {r['cpu_s']:>7} {os.getloadavg()[0]:>5.1f}", flush=True)
    print(f"\ntables: {args.tables} (compact from {COMPACT_FROM} nodes with auto); msgs and bytes per node "
          "per second are those of the crash run (steady state plus one failure); join one: one node joins "
          "a converged cluster of N - 1, seconds until every node sees every node; join conv: all but one "
          f"node join one seed at once, up to {args.join_max} nodes (--join-max); load: the 1-minute load "
          "average when the size finished.")
    print("reproduce: python bench/sim_scale.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
