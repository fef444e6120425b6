"""Sweep the simulator's ``leader-split`` scenario: splits at every phase of the leader's heartbeat.

For each seed, a 5-node cluster elects a leader, then the network splits 2|3 at phase
``(seed % phases) / phases`` of the leader's heartbeat interval, the leader on the 2-node side
for odd seeds and on the 3-node side for even ones, with ``leader_timeout`` cycling through
1.2, 2.0 and 3.0 s; the split lasts ``--partition`` seconds (with ``--retention`` set below it,
each side forgets the other), then heals. The script counts the runs in which two nodes led at
the same virtual instant, the runs that did not end with one leader followed by all, and the
runs that did not become one cluster again, and prints the replay command of each failure.

    python bench/leader_sweep.py                                    # 600 runs, 15 s splits
    python bench/leader_sweep.py --seeds 200 --partition 60 --retention 4
    python bench/leader_sweep.py --loss 0.1
    python bench/leader_sweep.py --clock-drift 0.01                 # clocks 1 % fast or slow
"""

from __future__ import annotations

import argparse
import sys
import time

from gossip.sim.scenarios import ScenarioParams, run_scenario

LEADER_TIMEOUTS = (1.2, 2.0, 3.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=600)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--phases", type=int, default=24)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--partition", type=float, default=15.0, help="seconds the split lasts")
    ap.add_argument("--retention", type=float, default=None, help="dead_node_retention_period, s")
    ap.add_argument("--clock-drift", type=float, default=0.0, help="each node's clock this much fast or slow")
    ap.add_argument("--max-clock-drift-rate", type=float, default=0.01, help="LeaderConfig.max_clock_drift_rate")
    args = ap.parse_args()
    print(f"command: python bench/leader_sweep.py --seeds {args.seeds} --first-seed {args.first_seed} "
          f"--phases {args.phases} --nodes {args.nodes} --loss {args.loss} --partition {args.partition}"
          + (f" --retention {args.retention}" if args.retention is not None else "")
          + f" --clock-drift {args.clock_drift} --max-clock-drift-rate {args.max_clock_drift_rate}")
    t0 = time.perf_counter()
    two, no_leader, apart, total = [], [], [], 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        phase = (seed % args.phases) / args.phases
        split = (0.4, 0.6)[seed % 2]
        lt = LEADER_TIMEOUTS[seed // 2 % 3]
        d = args.max_clock_drift_rate
        if lt * (1 - d) / (1 + d) <= 1.0:            # the lease would not exceed check_interval
            lt = LEADER_TIMEOUTS[-1]
        r = run_scenario(ScenarioParams(scenario="leader-split", nodes=args.nodes, seed=seed, loss=args.loss,
                                        phase=phase, split=split, leader_timeout=lt,
                                        partition_duration=args.partition, retention=args.retention,
                                        clock_drift=args.clock_drift, max_clock_drift_rate=args.max_clock_drift_rate))
        total += 1
        replay = (f"python -m gossip.sim --scenario leader-split --nodes {args.nodes} --seed {seed} "
                  f"--phase {phase:g} --split {split} --leader-timeout {lt} --loss {args.loss} "
                  f"--partition-duration {args.partition}"
                  + (f" --retention {args.retention}" if args.retention is not None else "")
                  + (f" --clock-drift {args.clock_drift} --max-clock-drift-rate {args.max_clock_drift_rate}"
                     if args.clock_drift else ""))
        if r.get("overlap_pairs"):
            two.append((r["overlap_s"], replay))
        if r.get("heal_to_agreement_s") is None:
            no_leader.append(replay)
        if r.get("heal_to_one_cluster_s") is None:
            apart.append(replay)
    print(f"runs {total}, wall {time.perf_counter() - t0:.1f} s")
    print(f"two leaders at once: {len(two)} runs" + (f" (longest {max(t for t, _ in two):.3f} s)" if two else ""))
    print(f"no single leader after the heal: {len(no_leader)} runs")
    print(f"not one cluster after the heal: {len(apart)} runs")
    for _, replay in sorted(two, reverse=True)[:5]:
        print(f"  two leaders: {replay}")
    for replay in (no_leader + apart)[:5]:
        print(f"  not healed: {replay}")
    return 0 if not two else 1


if __name__ == "__main__":
    sys.exit(main())
