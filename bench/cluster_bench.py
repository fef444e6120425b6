"""Benchmark real clusters on loopback: messaging throughput and latency, then a 32-process cluster.

Usage::

    python bench/cluster_bench.py [--seconds 5] [--window 256] [--nodes 32] [--idle 30] [--skip-procs]
                                  [--in-process]

Part 1, two nodes on 127.0.0.1 (``Config.lan()``), the receiver in its own process as in a real
deployment (``--in-process`` puts both in this process, where they share one interpreter lock):

* one-way user messages delivered per second to a handler, sent with ``send_to`` (UDP) and with
  ``send_to_reliable`` (TCP) by one thread for ``--seconds`` with at most ``--window`` messages
  in flight (without it the sender only measures the bounded send queue dropping its oldest
  packets); deliveries are counted by the receiving handler, queue drops are shown;
* request/reply round trips per second with ``send_to_with_response`` (one request at a time)
  and their p50/p99 latency.

Part 2, ``--nodes`` nodes as separate processes (``tests/integration/node_proc.py``, one
``Cluster`` each with ``Config.lan()`` on ``127.0.0.1:0``, all joining through the first and
reporting JSON lines on stdout):

* convergence: seconds from the last node's start (it reported ready: started and joined) until
  every node sees all of them alive (and from the last process being spawned);
* an idle window of ``--idle`` seconds: CPU percent per node (``getrusage`` user+system over the
  window) and RSS per node (``VmRSS``), and false positives (a live node seen SUSPECT or DEAD);
* failure detection: seconds from a SIGKILL of one node until every survivor has it DEAD;
* graceful leave: seconds from asking another node to leave until every remaining node has it
  LEAVING (or DEAD).

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gossip  # noqa: E402
from gossip import Cluster, Config, Node, Packet  # noqa: E402

NODE_PROC = ROOT / "tests" / "integration" / "node_proc.py"


# ---------------------------------------------------------------------------------- part 1


def _pair() -> tuple[Cluster, Cluster]:
    a = Cluster(Config.lan(bind_addr="127.0.0.1:0"))
    b = Cluster(Config.lan(bind_addr="127.0.0.1:0"))
    a.start()
    b.start()
    b.join(a.address, timeout=5.0)
    end = time.monotonic() + 10
    while a.get_node(b.local_node().id) is None or b.get_node(a.local_node().id) is None:
        if time.monotonic() > end:
            raise SystemExit("the two nodes did not see each other within 10 s")
        time.sleep(0.02)
    return a, b


def _one_way(a: Cluster, b: Cluster, reliable: bool, seconds: float, mtype: int,
             window: int) -> dict[str, Any]:
    """Send for ``seconds`` keeping at most ``window`` messages in flight; count deliveries.

    The window keeps the sender from merely overflowing the send queue (whose drops would then
    be measured instead of delivery); a message missing for 50 ms no longer holds the window.
    """
    cond = threading.Condition()
    state: dict[str, float] = {"n": 0, "last": 0.0}

    def on_msg(sender: Node | None, packet: Packet) -> None:
        with cond:
            state["n"] += 1
            state["last"] = time.perf_counter()
            cond.notify()

    b.handle_func_no_forward(mtype, on_msg)
    node_b = a.get_node(b.local_node().id)
    assert node_b is not None
    payload = {"seq": 0, "body": "x" * 64}
    dropped0 = a.stats().get("send_dropped", 0)
    in_dropped0 = b.stats().get("incoming_dropped", 0)
    send = a.send_to_reliable if reliable else a.send_to
    sent = 0
    forgiven = 0  # messages given up on (lost) so the window moves on
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        with cond:
            while sent - state["n"] - forgiven >= window:
                if not cond.wait(0.05):
                    forgiven = sent - state["n"]
                    break
        payload["seq"] = sent
        send(node_b, mtype, payload)
        sent += 1
    send_elapsed = time.perf_counter() - start
    # Let the queues drain: stop when nothing arrived for 0.5 s (at most 5 s).
    quiet_until = time.perf_counter() + 5.0
    prev = -1
    while time.perf_counter() < quiet_until:
        with cond:
            n = state["n"]
        if n == prev:
            break
        prev = n
        time.sleep(0.5)
    with cond:
        delivered, last = state["n"], state["last"]
    b.unregister_message_type(mtype)
    elapsed = max(last - start, send_elapsed) if delivered else send_elapsed
    return {
        "sent": sent,
        "delivered": int(delivered),
        "rate": delivered / elapsed if elapsed > 0 else 0.0,
        "dropped_by_queues": (a.stats().get("send_dropped", 0) - dropped0
                              + b.stats().get("incoming_dropped", 0) - in_dropped0),
        "elapsed": elapsed,
    }


def _round_trips(a: Cluster, node_b: Node, seconds: float, mtype: int) -> dict[str, Any]:
    """Send requests to ``node_b`` (which answers ``mtype``) one at a time for ``seconds``."""
    lat: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            a.send_to_with_response(node_b, mtype, {"q": len(lat)}, timeout=2.0)
            lat.append(time.perf_counter() - t0)
        except gossip.GossipError:
            errors += 1
    elapsed = time.perf_counter() - start
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"n": len(lat), "rate": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"), "errors": errors}


def _round_trip_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("send_to_with_response round trips/s", f"{r['rate']:,.0f}  ({r['n']:,} ok, {r['errors']} errors)"),
            ("  latency p50 / p99", f"{r['p50_ms']:.2f} ms / {r['p99_ms']:.2f} ms")]
    for row in rows:
        print(f"   {row[0]}: {row[1]}", flush=True)
    return rows


class _Remote:
    """The receiving node in its own process (``node_proc.py --sink``), as in a real deployment:
    two nodes in one process would share one interpreter lock and halve what each can do."""

    def __init__(self, mtype: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_PROC), "--preset", "lan", "--sink", str(mtype)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.counts: queue.Queue[int] = queue.Queue()
        self.ready: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        info = self.ready.get(timeout=30)
        self.id, self.addr = info["id"], info["addr"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            if ev["event"] == "ready":
                self.ready.put(ev)
            elif ev["event"] == "count":
                self.counts.put(ev["n"])

    def count(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return self.counts.get(timeout=10)

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def _one_way_remote(a: Cluster, r: _Remote, reliable: bool, seconds: float, mtype: int,
                    window: int) -> dict[str, Any]:
    """Send to the remote sink for ``seconds`` with at most ``window`` messages unaccounted for."""
    node_b = a.get_node(gossip.NodeID.parse(r.id))
    assert node_b is not None
    payload = {"seq": 0, "body": "x" * 64}
    send = a.send_to_reliable if reliable else a.send_to
    base = r.count()
    sent = 0
    seen = 0
    stalled_since = 0.0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if sent - seen >= window:
            now_seen = r.count() - base
            if now_seen == seen:
                stalled_since = stalled_since or time.perf_counter()
                if time.perf_counter() - stalled_since > 0.05:
                    seen = sent - window // 2   # give up on what is lost, move the window on
                continue
            seen, stalled_since = now_seen, 0.0
            continue
        payload["seq"] = sent
        send(node_b, mtype, payload)
        sent += 1
    prev, last_change = -1, time.perf_counter()
    while time.perf_counter() - last_change < 0.5:
        n = r.count() - base
        if n != prev:
            prev, last_change = n, time.perf_counter()
        time.sleep(0.05)
    elapsed = last_change - start
    return {"sent": sent, "delivered": prev, "rate": prev / elapsed, "elapsed": elapsed,
            "dropped_by_queues": a.stats().get("send_dropped", 0)}


def part1_processes(seconds: float, window: int) -> list[tuple[str, str]]:
    print(f"== part 1: two nodes on 127.0.0.1 in two processes, {seconds:g} s per case", flush=True)
    mtype = gossip.USER_MSG
    remote = _Remote(mtype)
    a = Cluster(Config.lan(bind_addr="127.0.0.1:0"))
    a.start()
    rows: list[tuple[str, str]] = []
    try:
        a.join(remote.addr, timeout=5.0)
        for label, reliable in (("send_to (UDP)", False), ("send_to_reliable (TCP)", True)):
            r = _one_way_remote(a, remote, reliable, seconds, mtype, window)
            rows.append((f"{label} delivered/s",
                         f"{r['rate']:,.0f}  ({r['delivered']:,} of {r['sent']:,} sent; window {window})"))
            print(f"   {rows[-1][0]}: {rows[-1][1]}", flush=True)
        node_b = a.get_node(gossip.NodeID.parse(remote.id))
        assert node_b is not None
        rows += _round_trip_rows(_round_trips(a, node_b, seconds, mtype + 1))
    finally:
        a.stop(timeout=3.0)
        remote.close()
    return rows


def part1(seconds: float, window: int) -> list[tuple[str, str]]:
    print(f"== part 1 (--in-process): two nodes in one process on 127.0.0.1, {seconds:g} s per case",
          flush=True)
    a, b = _pair()
    rows: list[tuple[str, str]] = []
    try:
        for label, reliable, mtype in (("send_to (UDP)", False, gossip.USER_MSG),
                                       ("send_to_reliable (TCP)", True, gossip.USER_MSG + 1)):
            r = _one_way(a, b, reliable, seconds, mtype, window)
            rows.append((f"{label} delivered/s",
                         f"{r['rate']:,.0f}  ({r['delivered']:,} of {r['sent']:,} sent, "
                         f"{r['dropped_by_queues']:,} dropped by full queues; "
                         f"window {window})"))
            print(f"   {rows[-1][0]}: {rows[-1][1]}", flush=True)
        mtype = gossip.USER_MSG + 2
        b.handle_func_with_reply(mtype, lambda s, p: p.unmarshal())
        node_b = a.get_node(b.local_node().id)
        assert node_b is not None
        rows += _round_trip_rows(_round_trips(a, node_b, seconds, mtype))
        b.unregister_message_type(mtype)
    finally:
        a.stop(timeout=3.0)
        b.stop(timeout=3.0)
    return rows


# ---------------------------------------------------------------------------------- part 2


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[str]
    spawned: float
    id: str = ""
    addr: str = ""
    ready: float = 0.0
    all_alive: float = 0.0
    # node id -> list of (t, prev, state) seen by this child
    seen: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)
    usage: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)


class Fleet:
    """The child processes and one reader thread per child feeding a shared event queue."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    def spawn(self, join: str, expect: int) -> Child:
        args = [sys.executable, str(NODE_PROC), "--preset", "lan", "--expect", str(expect)]
        if join:
            args += ["--join", join]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        child = Child(len(self.children), proc, time.time())
        self.children.append(child)
        threading.Thread(target=self._read, args=(child,), daemon=True).start()
        return child

    def _read(self, child: Child) -> None:
        assert child.proc.stdout is not None
        for line in child.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            ev = msg.get("event")
            with self.cond:
                if ev == "ready":
                    child.id, child.addr, child.ready = msg["id"], msg["addr"], msg["t"]
                elif ev == "all_alive":
                    child.all_alive = msg["t"]
                elif ev == "state":
                    child.seen.setdefault(msg["node"], []).append((msg["t"], msg["prev"], msg["state"]))
                elif ev == "usage":
                    child.usage.put(msg)
                self.cond.notify_all()

    def wait(self, pred: Any, timeout: float, what: str) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    print(f"   !! timed out after {timeout:g}s waiting until {what}", flush=True)
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def command(self, child: Child, cmd: str) -> None:
        try:
            assert child.proc.stdin is not None
            child.proc.stdin.write(cmd + "\n")
            child.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def usage(self, children: list[Child]) -> dict[int, dict[str, Any]]:
        for c in children:
            self.command(c, "usage")
        out = {}
        for c in children:
            try:
                out[c.index] = c.usage.get(timeout=10.0)
            except queue.Empty:
                pass
        return out

    def shutdown(self) -> None:
        for c in self.children:
            if c.proc.poll() is None:
                self.command(c, "quit")
        end = time.monotonic() + 15
        for c in self.children:
            try:
                c.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
            for f in (c.proc.stdin, c.proc.stdout):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass


def _false_positives(children: list[Child], live_ids: set[str], since: float) -> list[str]:
    out = []
    for c in children:
        for nid, evs in c.seen.items():
            if nid not in live_ids:
                continue
            for t, prev, state in evs:
                if t >= since and state in ("suspect", "dead"):
                    out.append(f"node {c.index} saw {nid[:8]} {prev}->{state}")
    return out


def _dropped_at(child: Child, nid: str, states: tuple[str, ...]) -> float:
    for t, _prev, state in child.seen.get(nid, []):
        if state in states:
            return t
    return 0.0


def part2(n: int, idle: float) -> list[tuple[str, str]]:
    print(f"== part 2: {n} nodes as {n} processes, Config.lan() on 127.0.0.1", flush=True)
    fleet = Fleet()
    rows: list[tuple[str, str]] = []
    try:
        seed = fleet.spawn("", n)
        if not fleet.wait(lambda: bool(seed.addr), 30, "the first node is ready"):
            return rows
        for _ in range(n - 1):
            fleet.spawn(seed.addr, n)
        last_spawn = time.time()
        kids = fleet.children
        fleet.wait(lambda: all(c.ready for c in kids), 120, f"all {n} processes are ready")
        ok = fleet.wait(lambda: all(c.all_alive for c in kids), 120,
                        f"every node sees {n} alive")
        with fleet.lock:
            last_ready = max(c.ready for c in kids)
            conv = max(c.all_alive for c in kids)
        if ok:
            rows.append((f"convergence: last node ready -> all {n} see {n} alive",
                         f"{conv - last_ready:.2f} s"))
            rows.append(("  (from the last process spawned)", f"{conv - last_spawn:.2f} s"))
            rows.append(("  (start-up: first spawn -> last node ready)",
                         f"{last_ready - kids[0].spawned:.2f} s"))
        else:
            rows.append(("convergence", "did not converge within 120 s"))
        for r in rows:
            print(f"   {r[0]}: {r[1]}", flush=True)

        live = {c.id for c in kids}
        t_idle = time.time()
        u0 = fleet.usage(kids)
        w0 = time.monotonic()
        print(f"   idle window of {idle:g} s...", flush=True)
        time.sleep(idle)
        u1 = fleet.usage(kids)
        w1 = time.monotonic()
        cpus = [(u1[i]["cpu"] - u0[i]["cpu"]) / (w1 - w0) * 100 for i in u0 if i in u1]
        rss = [u1[i]["rss_kb"] / 1024 for i in u1]
        with fleet.lock:
            fps = _false_positives(kids, live, t_idle)
            fps_all = _false_positives(kids, live, 0.0)
        if cpus:
            rows.append((f"idle CPU per node ({idle:g} s window)",
                         f"mean {statistics.fmean(cpus):.2f} %, max {max(cpus):.2f} % "
                         f"(sum {sum(cpus):.1f} % of one core)"))
        if rss:
            rows.append(("RSS per node", f"mean {statistics.fmean(rss):.1f} MiB, "
                                         f"max {max(rss):.1f} MiB"))
        rows.append(("false positives in the idle window", f"{len(fps)}"))
        rows.append(("false positives since start-up", f"{len(fps_all)}"
                     + (f" ({'; '.join(fps_all[:5])})" if fps_all else "")))
        for r in rows[-4:]:
            print(f"   {r[0]}: {r[1]}", flush=True)

        victim = kids[n // 2]
        survivors = [c for c in kids if c is not victim]
        t_kill = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        ok = fleet.wait(lambda: all(_dropped_at(c, victim.id, ("dead", "leaving")) for c in survivors),
                        120, "every survivor has the killed node dead")
        with fleet.lock:
            t_first_suspect = min((_dropped_at(c, victim.id, ("suspect", "dead"))
                                   for c in survivors if _dropped_at(c, victim.id, ("suspect", "dead"))),
                                  default=0.0)
            t_all_dead = max(_dropped_at(c, victim.id, ("dead", "leaving")) for c in survivors)
        if ok:
            rows.append(("SIGKILL -> every survivor has it DEAD", f"{t_all_dead - t_kill:.2f} s"))
            if t_first_suspect:
                rows.append(("  (SIGKILL -> first SUSPECT)", f"{t_first_suspect - t_kill:.2f} s"))
        else:
            rows.append(("SIGKILL -> every survivor has it DEAD", "not within 120 s"))

        leaver = kids[n // 2 + 1]
        rest = [c for c in survivors if c is not leaver]
        t_leave = time.time()
        fleet.command(leaver, "leave")
        ok = fleet.wait(lambda: all(_dropped_at(c, leaver.id, ("leaving", "dead")) for c in rest),
                        60, "every remaining node has the leaver dropped")
        with fleet.lock:
            t_all_left = max(_dropped_at(c, leaver.id, ("leaving", "dead")) for c in rest)
        rows.append(("graceful leave -> every node has it LEAVING",
                     f"{t_all_left - t_leave:.2f} s" if ok else "not within 60 s"))
        for r in rows[-3 if t_first_suspect else -2:]:
            print(f"   {r[0]}: {r[1]}", flush=True)
        with fleet.lock:
            fps_end = _false_positives(rest, {c.id for c in rest}, 0.0)
        rows.append(("false positives over the whole run (live nodes)", f"{len(fps_end)}"))
    finally:
        fleet.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per messaging case")
    p.add_argument("--window", type=int, default=256,
                   help="one-way messages in flight at most (sender back-pressure)")
    p.add_argument("--nodes", type=int, default=32, help="processes in part 2")
    p.add_argument("--idle", type=float, default=30.0, help="idle window in seconds")
    p.add_argument("--skip-procs", action="store_true", help="skip part 2 (the processes)")
    p.add_argument("--in-process", action="store_true",
                   help="part 1 with both nodes in this process (they share one interpreter lock)")
    args = p.parse_args(argv)
    cmd = "python " + " ".join(shlex.quote(a) for a in
                               ["bench/cluster_bench.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"gossip {gossip.__version__} on Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    rows = part1(args.seconds, args.window) if args.in_process else part1_processes(args.seconds, args.window)
    if not args.skip_procs:
        if args.nodes < 3:
            p.error("--nodes must be at least 3")
        rows += part2(args.nodes, args.idle)
    width = max(len(r[0]) for r in rows)
    print("\n== results")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"\nreproduce with: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
