"""What an idle node costs: memory, threads, CPU and wake-ups of nodes that do nothing.

Usage::

    python bench/idle_bench.py [--seconds 30] [--sizes 1,3] [--no-bytecode] [--json]

Each node is its own process, started as a user starts one: ``import gossip``, then
``gossip.Cluster(gossip.Config.lan(bind_addr="127.0.0.1:0"))``, ``start()`` and, for every
node but the first, ``join()`` through the first. For each cluster size in ``--sizes`` (a
single node, then a 3-node loopback cluster by default) the benchmark waits until every node
reports ready, lets the cluster idle for ``--seconds``, and prints per node:

* RSS (``VmRSS`` of ``/proc/PID/status``) and PSS (``Pss`` of ``/proc/PID/smaps_rollup``: RSS
  with shared pages divided among the processes sharing them) at the end of the window;
* its threads (``/proc/PID/task``);
* CPU, percent of one core over the window (user + system ticks of ``/proc/PID/stat``);
* wake-ups per second: context switches of all its threads over the window (voluntary and
  involuntary, ``/proc/PID/task/*/status``): each is a thread that went to sleep on a timer or
  a socket and was woken, or was preempted;

with the command and the 1-, 5- and 15-minute load averages (``os.getloadavg()``), since a
loaded host inflates CPU and wake-ups.

Bytecode: an installed package comes with compiled bytecode (pip compiles it), so by default
the nodes run from bytecode compiled beforehand into a temporary ``PYTHONPYCACHEPREFIX`` (the
checkout is left untouched; ``bench/bytecode.py``). ``--no-bytecode`` makes every node compile
the library from source, as a checkout without ``__pycache__`` does (with
``PYTHONDONTWRITEBYTECODE=1`` or a read-only tree; the standard library still loads its
bytecode): the compiler's garbage stays in each node's heap, so both figures say something.

Every address is 127.0.0.1 with ports chosen by the kernel.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bytecode import cached_env, source_env  # noqa: E402

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The node: what a user writes. It prints its address once started (and joined), then idles
# until its standard input closes.
NODE = textwrap.dedent("""
    import sys
    import gossip
    cluster = gossip.Cluster(gossip.Config.lan(bind_addr="127.0.0.1:0"))
    cluster.start()
    if len(sys.argv) > 1:
        if cluster.join(sys.argv[1], timeout=10.0) != 1:
            raise SystemExit("join failed")
    print(cluster.address, flush=True)
    sys.stdin.read()
    cluster.stop()
""")


@dataclass
class Sample:
    """One process's counters at one instant."""

    cpu_s: float
    switches: int


def _sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        switches += int(line.split()[1])
        except OSError:        # a thread that ended meanwhile
            continue
    return Sample(cpu, switches)


def _status_kib(pid: int, path: str, key: str) -> int:
    with open(f"/proc/{pid}/{path}", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise LookupError(key)


def run_size(n: int, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    """Start ``n`` node processes, let them idle ``seconds``, return the per-node figures."""
    procs: list[subprocess.Popen[str]] = []
    try:
        seed = ""
        for i in range(n):
            argv = [sys.executable, "-c", NODE] + ([seed] if i else [])
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if not line:
                raise SystemExit(f"node {i} ended before it was ready (exit code {p.wait()})")
            seed = seed or line
        time.sleep(2.0)    # the joins' own traffic (push-pull, the first probe rounds) settles
        t0 = time.monotonic()
        before = [_sample(p.pid) for p in procs]
        time.sleep(seconds)
        after = [_sample(p.pid) for p in procs]
        wall = time.monotonic() - t0
        nodes = []
        for p, b, a in zip(procs, before, after):
            nodes.append({
                "rss_mib": round(_status_kib(p.pid, "status", "VmRSS") / 1024, 2),
                "pss_mib": round(_status_kib(p.pid, "smaps_rollup", "Pss") / 1024, 2),
                "threads": len(os.listdir(f"/proc/{p.pid}/task")),
                "cpu_pct": round(100 * (a.cpu_s - b.cpu_s) / wall, 3),
                "wakeups_per_s": round((a.switches - b.switches) / wall, 1),
            })
        return {"nodes": n, "idle_s": round(wall, 1), "per_node": nodes}
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def main(argv: list[str]) -> int:
    """Run the benchmark; print a table (or JSON lines with ``--json``)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="idle window (30 s)")
    ap.add_argument("--sizes", default="1,3", help="cluster sizes, comma-separated (1,3)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="compile every module from source in every node (a checkout without __pycache__)")
    ap.add_argument("--json", action="store_true", help="one JSON object per size")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 1 or args.seconds <= 0:
        ap.error("--sizes takes positive integers and --seconds a positive number")
    command = shlex.join([sys.executable, "bench/idle_bench.py", *argv])
    with tempfile.TemporaryDirectory(prefix="gossip-idle-pyc-") as prefix:
        env = source_env(prefix) if args.no_bytecode else cached_env(prefix)
        for n in sizes:
            result = run_size(n, args.seconds, env)
            rows = result["per_node"]
            result.update({
                "bytecode": not args.no_bytecode, "command": command,
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "python": sys.version.split()[0],
                "rss_mib_mean": round(_mean(rows, "rss_mib"), 2),
                "cpu_pct_mean": round(_mean(rows, "cpu_pct"), 3),
                "wakeups_per_s_mean": round(_mean(rows, "wakeups_per_s"), 1),
            })
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            print(f"{n} node(s), idle {result['idle_s']} s, "
                  f"{'bytecode cached' if result['bytecode'] else 'no bytecode (compiled from source)'}, "
                  f"load average {' / '.join(map(str, result['loadavg']))}")
            print(f"  {'node':>4} {'RSS MiB':>8} {'PSS MiB':>8} {'threads':>7} {'CPU %':>7} {'wake-ups/s':>10}")
            for i, r in enumerate(rows):
                print(f"  {i:>4} {r['rss_mib']:>8.2f} {r['pss_mib']:>8.2f} {r['threads']:>7} "
                      f"{r['cpu_pct']:>7.3f} {r['wakeups_per_s']:>10.1f}")
            print(f"  command: {command}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
