"""Which layout of the simulator's member tables wins: the struct of arrays, or a shared baseline
with per-observer differences?

The simulator keeps one member table per simulated node, so its memory grows with the square
of the cluster. ``gossip.sim.compact`` keeps each table as a struct of arrays (about 50 bytes a
(observer, member) pair at 10,000 nodes). The other layout the issue names shares one baseline
record per member among all observers and keeps, per observer, only what differs from it.

What a baseline can share is what most observers agree on. This benchmark runs a scenario with
compact tables and, every few thousand events, reads every live observer's arrays and counts, per
field, the pairs that differ from the most common value among observers (the best baseline there
could be). It prints:

* the bytes a pair of each per-observer array of the struct of arrays, measured from the arrays
  themselves (their allocated sizes over the pairs they hold);
* per field that a baseline could share (the state and incarnation; the time of the last state
  change), the share of pairs that differ from the baseline, at its worst and on average;
* the projected bytes a pair of the shared-baseline layout: the arrays it cannot share (each
  observer's own insertion order, positions in its sampling lists, probe order, ``vouched``), plus
  a difference entry for each differing pair (a dict entry with its boxed values, measured with
  ``sys.getsizeof``), plus the baseline itself (one record a member, negligible per pair).

Run::

    python bench/sim_layout.py --nodes 1000 --scenario crash
    python bench/sim_layout.py --nodes 500 --scenario churn --duration 300
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from array import array
from collections import Counter
from typing import Any

from gossip.sim.compact import CompactMembers
from gossip.sim.scenarios import ScenarioParams, run_scenario
from gossip.sim.simulation import Simulation


def _bytes(arr: Any) -> int:
    """Allocated bytes of an array or bytearray (its buffer, not the object header)."""
    if isinstance(arr, array):
        return arr.buffer_info()[1] * arr.itemsize
    return sys.getsizeof(arr) - sys.getsizeof(bytearray())


def _diff_entry_bytes() -> int:
    """Bytes of one difference entry: a dict slot (key, value, hash; at the dict's usual fill)
    and a boxed incarnation and time; the state code is a small cached int."""
    d: dict[int, tuple[int, int, float]] = {i: (1, 70_000 + i, 1234.5 + i) for i in range(100_000)}
    per_slot = sys.getsizeof(d) / len(d)
    boxed = sys.getsizeof((1, 70_000, 1.5)) + sys.getsizeof(70_000) + sys.getsizeof(1.5)
    return round(per_slot + boxed + sys.getsizeof(12345))   # + the key, an int above the cache


class Sampler:
    """Reads the compact tables of every live observer (see the module docstring)."""

    def __init__(self) -> None:
        self.samples = 0
        self.pairs = 0
        self.worst = {"state_inc": 0.0, "changed": 0.0}
        self.total = {"state_inc": 0.0, "changed": 0.0}
        self.array_bytes: dict[str, int] = {}
        self.array_pairs = 0

    def __call__(self, sim: Simulation) -> None:
        tables: list[CompactMembers] = []
        for i in sim.live:
            members = sim.nodes[i].core._table.members
            if isinstance(members, CompactMembers):
                tables.append(members)
        if len(tables) < 2:
            return
        size = min(len(t.st) for t in tables)
        by_state: list[Counter[tuple[int, int]]] = [Counter() for _ in range(size)]
        by_time: list[Counter[float]] = [Counter() for _ in range(size)]
        pairs = 0
        for t in tables:
            st, inc, changed, pos = t.st, t.inc, t.changed, t.pos
            for g in range(size):
                if pos[g] >= 0:
                    by_state[g][(st[g], inc[g])] += 1
                    by_time[g][changed[g]] += 1
                    pairs += 1
        if not pairs:
            return
        differ_state = pairs - sum(c.most_common(1)[0][1] for c in by_state if c)
        differ_time = pairs - sum(c.most_common(1)[0][1] for c in by_time if c)
        for key, n in (("state_inc", differ_state), ("changed", differ_time)):
            share = n / pairs
            self.worst[key] = max(self.worst[key], share)
            self.total[key] += share
        self.samples += 1
        self.pairs = pairs
        # The arrays each observer keeps, per pair it holds.
        names = {"state": "st", "vouched": "vouched", "incarnation": "inc", "changed": "changed",
                 "position": "pos", "order": "order"}
        sizes: Counter[str] = Counter()
        held = 0
        for i in sim.live:
            table = sim.nodes[i].core._table
            members = table.members
            if not isinstance(members, CompactMembers):
                continue
            held += len(members)
            for label, attr in names.items():
                sizes[label] += _bytes(getattr(members, attr))
            sizes["sampling lists"] += _bytes(table.ids.arr) + _bytes(table.ids.pos) + \
                _bytes(table.cids.arr) + _bytes(table.cids.pos)
            sizes["probe order"] += _bytes(table.probe_list.arr)
            sizes["probe set"] += _bytes(table._in_probe_list.flags)
        self.array_bytes = dict(sizes)
        self.array_pairs = held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--scenario", default="crash", choices=("crash", "churn", "join", "loss"))
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=50_000, help="events between two samples")
    args = ap.parse_args()
    sampler = Sampler()
    previous = Simulation.OBSERVE_EVERY
    Simulation.OBSERVE_EVERY = args.every
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        r = run_scenario(ScenarioParams(scenario=args.scenario, nodes=args.nodes, seed=args.seed,
                                        duration=args.duration, tables="compact"), progress=sampler)
    finally:
        Simulation.OBSERVE_EVERY = previous
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{args.scenario} at {args.nodes} nodes, {r['virtual_s']} virtual s, seed {args.seed}: "
          f"{sampler.samples} samples of the tables ({sampler.pairs:,} pairs at the last)")
    if not sampler.samples:
        print("no sample taken: lower --every")
        return 1
    pairs = sampler.array_pairs
    print("\nstruct of arrays (gossip.sim.compact), bytes a pair, measured from the arrays:")
    soa = 0.0
    for label, b in sampler.array_bytes.items():
        per = b / pairs
        soa += per
        print(f"  {label:<16} {per:6.1f}")
    print(f"  {'all':<16} {soa:6.1f}   (peak RSS of the process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / max(1, pairs):.1f} a pair held)")
    entry = _diff_entry_bytes()
    print("\npairs that differ from the best baseline (the most common value among observers):")
    for key, label in (("state_inc", "state and incarnation"), ("changed", "time of last change")):
        print(f"  {label:<22} worst {sampler.worst[key]:7.2%}  mean {sampler.total[key] / sampler.samples:7.2%}")
    own = sum(b for k, b in sampler.array_bytes.items() if k not in ("state", "incarnation", "changed")) / pairs
    shared_state = sampler.array_bytes["state"] / pairs + sampler.array_bytes["incarnation"] / pairs
    changed = sampler.array_bytes["changed"] / pairs
    lo = own + changed + sampler.worst["state_inc"] * entry
    hi = own + sampler.worst["changed"] * entry + sampler.worst["state_inc"] * entry
    print(f"\nshared baseline, projected bytes a pair (a difference entry costs {entry} bytes):")
    print(f"  the state and incarnation shared, the time kept per observer: {lo:6.1f}  "
          f"(saves {shared_state - sampler.worst['state_inc'] * entry:+.1f} of {soa:.1f})")
    print(f"  the time shared too:                                          {hi:6.1f}  "
          f"(saves {shared_state + changed - (sampler.worst['changed'] + sampler.worst['state_inc']) * entry:+.1f})")
    print(f"\nrun: {wall:.0f} s wall, {cpu:.0f} s CPU (sampling included), load {os.getloadavg()[0]:.1f}")
    print("reproduce: python bench/sim_layout.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
