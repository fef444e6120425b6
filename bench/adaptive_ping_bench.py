"""Adaptive ping timeouts against one slow member, measured in the deterministic simulator.

Runs the ``slow`` scenario (20 nodes; one member answers with a steady ``--slow-rtt`` round
trip against a 0.2 s ``ping_timeout``; after 120 s of steady state a normal member crashes) over
several seeds, with fixed and with adaptive timeouts, and prints per mode: the indirect probes
and false suspicions of the steady state, and the crash's detection time (mean, max).

    python bench/adaptive_ping_bench.py
    python bench/adaptive_ping_bench.py --seeds 20 --slow-rtt 0.35
"""

from __future__ import annotations

import argparse
import statistics

from gossip.sim.scenarios import ScenarioParams, run_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=12, help="seeds 1..N")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--slow-rtt", type=float, default=0.3)
    args = ap.parse_args()
    print(f"{'mode':<9} {'indirect probes':>16} {'false suspicions':>17} {'detect mean s':>14} {'detect max s':>13}")
    for adaptive in (False, True):
        runs = [run_scenario(ScenarioParams(scenario="slow", seed=s, nodes=args.nodes,
                                            slow_rtt=args.slow_rtt, adaptive_ping=adaptive))
                for s in range(1, args.seeds + 1)]
        detect = [float(r["detect_all_s"]) for r in runs if r["detect_all_s"] is not None]
        print(f"{'adaptive' if adaptive else 'fixed':<9} "
              f"{statistics.mean(r['steady_indirect_probes'] for r in runs):>16.1f} "
              f"{statistics.mean(r['steady_false_suspect_events'] for r in runs):>17.2f} "
              f"{statistics.mean(detect):>14.2f} {max(detect):>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
