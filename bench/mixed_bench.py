"""A mixed memberlist cluster: N processes on loopback, half hashicorp/memberlist (the Go node
of tests/memberlist/go, Debian's memberlist 0.2.2) and half this library on memberlist's wire
(bench/memberlist_driver.py), with the same timings (probe 1 s, probe timeout 0.5 s, gossip
0.2 s; suspicion multipliers 4 and 6 on both sides).

It measures, split by kind: join convergence (each node, from its start, until its view holds
all N); false positives (a live member missing from a view during a steady window); crash
detection (SIGKILL of one Go node, then of one of ours: per observer, until the victim leaves
its view), by kind of observer and of victim; leave (SIGTERM of one of each kind: until every
survivor dropped it). It prints the command, the figures and the load average.

    python bench/mixed_bench.py                     # N = 16, a 60 s steady window
    python bench/mixed_bench.py --nodes 8 --steady 20

Needs Go and Debian's golang-github-hashicorp-memberlist-dev (.ci/install-go-tools).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.memberlist.gonode import free_port, mlnode_binary, missing  # noqa: E402


class Proc:
    def __init__(self, kind: str, name: str, args: list[str]) -> None:
        self.kind, self.name = kind, name
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.PIPE, text=True)
        self.started = time.time()
        self.ready_at: float | None = None
        self.views: list[tuple[float, frozenset[str]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "ready":
                self.ready_at = ev["ts"]
            elif ev.get("ev") == "view":
                self.views.append((ev["ts"], frozenset(ev["alive"])))

    def view(self) -> frozenset[str]:
        return self.views[-1][1] if self.views else frozenset()

    def first(self, pred: Any, since: float) -> float | None:
        for ts, v in list(self.views):
            if ts >= since and pred(v):
                return ts
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(kind: str, name: str, port: int, seed: str, binary: str, runtime: int) -> Proc:
    common = ["--name", name, "--bind", f"127.0.0.1:{port}", "--probe-interval-ms", "1000",
              "--probe-timeout-ms", "500", "--gossip-interval-ms", "200", "--max-runtime-s", str(runtime)]
    if seed:
        common += ["--join", seed]
    if kind == "go":
        return Proc(kind, name, [binary, *common])
    return Proc(kind, name, [sys.executable, os.path.join(HERE, "memberlist_driver.py"), *common])


def wait(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def fmt(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s (n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--steady", type=float, default=60.0, help="seconds of the false-positive window")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for each phase")
    args = ap.parse_args()
    why = missing()
    binary = mlnode_binary()
    if why or binary is None:
        print(f"cannot run: {why or 'mlnode did not build'}", file=sys.stderr)
        return 2
    print(f"command: python bench/mixed_bench.py --nodes {args.nodes} --steady {args.steady} "
          f"--timeout {args.timeout}")
    n = args.nodes
    runtime = int(args.steady + 6 * args.timeout + 60)
    procs: list[Proc] = []
    try:
        seed_port = free_port()
        procs.append(spawn("go", "go00", seed_port, "", binary, runtime))
        wait(lambda: procs[0].ready_at is not None, 10)
        seed = f"127.0.0.1:{seed_port}"
        for i in range(1, n):
            kind = "py" if i % 2 else "go"
            procs.append(spawn(kind, f"{kind}{i:02d}", free_port(), seed, binary, runtime))
        names = frozenset(p.name for p in procs)
        ok = wait(lambda: all(p.view() == names for p in procs), args.timeout)
        print(f"\njoin convergence ({'all converged' if ok else 'NOT all converged'}), from each node's start:")
        for kind in ("go", "py"):
            ts = [t - p.started for p in procs if p.kind == kind
                  for t in [p.first(lambda v: v == names, 0)] if t is not None]
            print(f"  {kind} nodes: {fmt(ts)}")
        # false positives: a live member missing from a view during the steady window
        t0 = time.time()
        time.sleep(args.steady)
        print(f"\nfalse positives over {args.steady:.0f} s (views missing a live member, by observer kind):")
        for kind in ("go", "py"):
            bad = sum(1 for p in procs if p.kind == kind for ts, v in p.views if ts >= t0 and v != names)
            print(f"  {kind} observers: {bad} views")
        # crash detection: one Go victim, then one of ours
        alive = list(procs)
        print("\ncrash detection (SIGKILL; per observer until the victim leaves its view):")
        for vkind in ("go", "py"):
            victim = [p for p in alive if p.kind == vkind and p is not procs[0]][-1]
            victim.proc.send_signal(signal.SIGKILL)
            killed = time.time()
            alive.remove(victim)
            wait(lambda: all(victim.name not in p.view() for p in alive), args.timeout)
            for okind in ("go", "py"):
                ts = [t - killed for p in alive if p.kind == okind
                      for t in [p.first(lambda v: victim.name not in v, killed)] if t is not None]
                missed = sum(1 for p in alive if p.kind == okind) - len(ts)
                print(f"  {vkind} victim, {okind} observers: {fmt(ts)}" + (f", {missed} never" if missed else ""))
        print("\nleave (SIGTERM; until every survivor dropped it):")
        for vkind in ("go", "py"):
            leaver = [p for p in alive if p.kind == vkind and p is not procs[0]][-1]
            leaver.proc.send_signal(signal.SIGTERM)
            sent = time.time()
            alive.remove(leaver)
            wait(lambda: all(leaver.name not in p.view() for p in alive), args.timeout)
            for okind in ("go", "py"):
                ts = [t - sent for p in alive if p.kind == okind
                      for t in [p.first(lambda v: leaver.name not in v, sent)] if t is not None]
                print(f"  {vkind} leaver, {okind} observers: {fmt(ts)}")
        print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for p in procs:
            if p.alive():
                p.proc.kill()
        for p in procs:
            try:
                p.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
