"""Benchmark real clusters on loopback: user messages as a user sends them, then a process cluster.

Usage::

    python bench/cluster_bench.py [--seconds 5] [--nodes 32] [--idle 30] [--skip-procs]
                                  [--skip-messages] [--busy]
    python bench/cluster_bench.py --aio [--seconds 5] [--stream-mib 256] [--repeat 3]

Part 1, two nodes on 127.0.0.1 (``Config.lan()``), the receiver in its own process as in a real
deployment. One thread calls the send function back to back for ``--seconds``, with no window
and no pacing of its own, exactly as a user's loop would; the library paces it (reliable sends
wait for room) or drops and counts (best-effort sends). For each case it prints the rate sent
and delivered, the share of accepted messages lost, what was raised to the caller, every drop
counter that moved on either side (``dropped.*``, ``send_errors.*``...), the kernel's own UDP
drops on the receiver (``SO_RXQ_OVFL``), and CPU seconds per 10k messages on each side:

* reliable 64 B (``send_to_reliable``), 2 KiB (``send_to``, which takes TCP by size), UDP 64 B
  (``send_to``) and broadcast 64 B (``send``), delivered to a counting handler;
* request/reply round trips per second (``send_to_with_response``) and their latency;
* the receiver's RSS, and the time ``import gossip`` takes in a fresh interpreter.

Part 2, ``--nodes`` nodes as separate processes (``tests/integration/node_proc.py``, one
``Cluster`` each with ``Config.lan()`` on ``127.0.0.1:0``, all joining through the first and
reporting JSON lines on stdout); with ``--busy`` every process also runs a pure-Python thread
that spins for ever, competing for the interpreter lock (a CPU-starved host):

* convergence: seconds from the last node's start (it reported ready: started and joined) until
  every node sees all of them alive (and from the last process being spawned);
* an idle window of ``--idle`` seconds: CPU percent per node (``getrusage`` user+system over the
  window) and RSS per node (``VmRSS``), and false positives (a live node seen SUSPECT or DEAD);
* failure detection: seconds from a SIGKILL of one node until every survivor has it DEAD;
* graceful leave: seconds from asking another node to leave until every remaining node has it
  LEAVING (or DEAD).

``--aio`` measures, instead, the blocking API against :mod:`gossip.aio` in the same run, on
the same node and the same connection to the same receiving process, with the same loop shape
(one caller, back to back, no window: a thread's loop, then one coroutine's): reliable 64 B
messages per second (``send_to_reliable``), request/reply per second and their p50
(``send_to_with_response``), and stream MB/s (``open_stream``, 1 MiB writes, half-close, a
typed answer); each the best of ``--repeat`` alternating runs, with CPU seconds per unit, the
losses and drop counters, the load average, and the asyncio figure as a share of the blocking
one (the goal is at least 80 %).

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import resource
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
import gossip.aio  # noqa: E402
from gossip import Cluster, Config, Node, Packet  # noqa: E402

NODE_PROC = ROOT / "tests" / "integration" / "node_proc.py"


# ---------------------------------------------------------------------------------- part 1

_DROP_PREFIXES = ("dropped.", "send_errors.", "bad_packets.", "user.send_timeouts",
                  "user.send_full", "transport.tcp_frames_lost")


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _losses(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Every loss and drop counter that moved between two ``stats()`` snapshots."""
    out = {}
    for k, v in after.items():
        if k.startswith(_DROP_PREFIXES) and v - before.get(k, 0):
            out[k] = v - before.get(k, 0)
    return out


class _Remote:
    """The receiving node in its own process (``node_proc.py --sink``), as in a real deployment:
    two nodes in one process would share one interpreter lock and halve what each can do."""

    def __init__(self, mtype: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, not per process
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_PROC), "--preset", "lan", "--sink", str(mtype)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
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
            elif ev["event"] in ("count", "stats", "usage"):
                self.replies.put(ev)

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.replies.get(timeout=10)

    def count(self) -> int:
        return int(self.ask("count")["n"])

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def _send_loop(send: Any, seconds: float) -> tuple[int, int, dict[str, int]]:
    """Call ``send()`` back to back from this thread for ``seconds``; return (sent, accepted,
    raised by type)."""
    sent = accepted = 0
    raised: dict[str, int] = {}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sent += 1
        try:
            send()
            accepted += 1
        except gossip.GossipError as exc:
            raised[type(exc).__name__] = raised.get(type(exc).__name__, 0) + 1
    return sent, accepted, raised


def _flood(a: Cluster, r: _Remote, send: Any, seconds: float,
           loop: Any = _send_loop) -> dict[str, Any]:
    """Call ``send()`` back to back from this thread for ``seconds``, as a user's loop does (no
    window, no pacing), then wait until deliveries stop; count what was lost and where.
    ``loop(send, seconds)`` runs the sending loop (another shape: :func:`_aio_send_loop`)."""
    s0, r0 = a.stats(), r.ask("stats")["stats"]
    rc0, c0 = r.ask("usage")["cpu"], _cpu()
    base = r.count()
    start = time.perf_counter()
    sent, accepted, raised = loop(send, seconds)
    send_s = time.perf_counter() - start
    c1 = _cpu()
    prev, last_change = -1, time.perf_counter()
    while time.perf_counter() - last_change < 0.5 and time.perf_counter() - start < seconds + 15:
        n = r.count() - base
        if n != prev:
            prev, last_change = n, time.perf_counter()
        time.sleep(0.05)
    delivered = prev
    span = max(send_s, last_change - start - 0.05)
    rc1 = r.ask("usage")["cpu"]
    s1, r1 = a.stats(), r.ask("stats")["stats"]
    return {
        "sent": sent, "accepted": accepted, "raised": raised, "delivered": delivered,
        "sent_rate": sent / send_s, "rate": delivered / span,
        "loss_pct": 100.0 * (accepted - delivered) / accepted if accepted else 0.0,
        "sender_losses": _losses(s0, s1), "receiver_losses": _losses(r0, r1),
        "kernel_drops": r1.get("transport.udp_kernel_drops", 0) - r0.get("transport.udp_kernel_drops", 0),
        "sender_cpu_10k": (c1 - c0) / max(1, sent) * 1e4,
        "receiver_cpu_10k": (rc1 - rc0) / max(1, delivered) * 1e4,
    }


def _flood_rows(label: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    raised = ", ".join(f"{v:,} {k}" for k, v in r["raised"].items()) or "none"
    losses = {**{f"sender {k}": v for k, v in r["sender_losses"].items()},
              **{f"receiver {k}": v for k, v in r["receiver_losses"].items()}}
    rows = [
        (f"{label}: delivered/s", f"{r['rate']:,.0f}  (sent {r['sent_rate']:,.0f}/s; "
                                  f"{r['delivered']:,} of {r['accepted']:,} accepted delivered)"),
        ("  lost", f"{r['loss_pct']:.2f} %; raised to the caller: {raised}"),
        ("  drop counters", ", ".join(f"{k} {v:,}" for k, v in losses.items()) or "none"),
        ("  kernel UDP drops (receiver)", f"{r['kernel_drops']:,}"),
        ("  CPU s per 10k messages", f"sender {r['sender_cpu_10k']:.3f}, "
                                     f"receiver {r['receiver_cpu_10k']:.3f}"),
    ]
    for k, v in rows:
        print(f"   {k}: {v}", flush=True)
    return rows


def _round_trips(a: Cluster, node_b: Node, seconds: float, mtype: int,
                 aio: gossip.aio.Cluster | None = None) -> dict[str, Any]:
    """Send requests to ``node_b`` (which answers ``mtype``) one at a time for ``seconds``;
    with ``aio``, from one coroutine awaiting ``aio.send_to_with_response``."""
    lat: list[float] = []
    errors = 0
    payload = b"x" * 64
    c0 = _cpu()
    start = time.perf_counter()
    end = start + seconds
    if aio is None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                a.send_to_with_response(node_b, mtype, payload, timeout=2.0)
                lat.append(time.perf_counter() - t0)
            except gossip.GossipError:
                errors += 1
    else:
        async def ask() -> int:
            failed = 0
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await aio.send_to_with_response(node_b, mtype, payload, timeout=2.0)
                    lat.append(time.perf_counter() - t0)
                except gossip.GossipError:
                    failed += 1
            return failed

        errors = asyncio.run(ask())
    elapsed = time.perf_counter() - start
    cpu = _cpu() - c0
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"n": len(lat), "rate": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"), "errors": errors,
            "cpu_1k": cpu / max(1, len(lat)) * 1e3}


def _import_ms(runs: int = 7) -> float:
    """Median time of ``import gossip`` in fresh interpreters, bytecode cached as for any
    installed package (one warm-up run writes the cache if the environment had turned it off)."""
    code = "import time; t = time.perf_counter(); import gossip; print(time.perf_counter() - t)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env=env, check=True).stdout) for _ in range(runs)]
    return statistics.median(times) * 1000


def part1(seconds: float) -> list[tuple[str, str]]:
    print(f"== part 1: two nodes on 127.0.0.1 in two processes, {seconds:g} s per case; "
          "one thread sends back to back", flush=True)
    mtype = gossip.USER_MSG
    remote = _Remote(mtype)
    a = Cluster(Config.lan(bind_addr="127.0.0.1:0"))
    a.start()
    rows: list[tuple[str, str]] = []
    try:
        a.join(remote.addr, timeout=5.0)
        node_b = a.get_node(gossip.NodeID.parse(remote.id))
        assert node_b is not None
        idle = remote.ask("usage")
        small, large = b"x" * 64, os.urandom(2048)  # random: lz4 must not shrink it to a datagram
        cases = [
            ("reliable 64 B (send_to_reliable)", lambda: a.send_to_reliable(node_b, mtype, small)),
            ("2 KiB (send_to: over the datagram limit, so TCP)",
             lambda: a.send_to(node_b, mtype, large)),
            ("UDP 64 B (send_to)", lambda: a.send_to(node_b, mtype, small)),
            ("broadcast 64 B (send)", lambda: a.send(mtype, small)),
        ]
        for label, fn in cases:
            rows += _flood_rows(label, _flood(a, remote, fn, seconds))
        rt = _round_trips(a, node_b, seconds, mtype + 1)
        rows += [("request/reply 64 B (send_to_with_response)",
                  f"{rt['rate']:,.0f}/s  ({rt['n']:,} ok, {rt['errors']} errors)"),
                 ("  latency p50 / p99", f"{rt['p50_ms']:.3f} ms / {rt['p99_ms']:.3f} ms")]
        busy = remote.ask("usage")
        rows += [("RSS per node", f"{idle['rss_kb'] / 1024:.1f} MiB idle after joining, "
                                  f"{busy['rss_kb'] / 1024:.1f} MiB after the floods"),
                 ("import gossip", f"{_import_ms():.0f} ms (median of 7 fresh interpreters)")]
        for k, v in rows[-4:]:
            print(f"   {k}: {v}", flush=True)
    finally:
        a.stop(timeout=3.0)
        remote.close()
    return rows


# ---------------------------------------------------------------------------------- --aio


def _aio_send_loop(send: Any, seconds: float) -> tuple[int, int, dict[str, int]]:
    """:func:`_send_loop`'s shape on an event loop: one coroutine awaiting ``send()`` back to
    back for ``seconds`` (``send`` returns an awaitable)."""
    async def run() -> tuple[int, int, dict[str, int]]:
        sent = accepted = 0
        raised: dict[str, int] = {}
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sent += 1
            try:
                await send()
                accepted += 1
            except gossip.GossipError as exc:
                raised[type(exc).__name__] = raised.get(type(exc).__name__, 0) + 1
        return sent, accepted, raised

    return asyncio.run(run())


def _stream_once(a: Cluster, node_b: Node, mtype: int, mib: int,
                 aio: gossip.aio.Cluster | None = None) -> dict[str, Any]:
    """Open a stream to ``node_b`` (which reads it to the end and answers the byte count),
    write ``mib`` MiB in 1 MiB writes, half-close, read the answer: MB/s from the opening to
    the answer, and this process's CPU seconds per 100 MB."""
    block = os.urandom(1 << 20)
    total = mib << 20
    c0, t0 = _cpu(), time.perf_counter()
    if aio is None:
        with a.open_stream(node_b, mtype, None) as st:
            for _ in range(mib):
                st.write(block)
            st.close_write()
            n = st.read_msg(mtype)
    else:
        async def run() -> Any:
            async with await aio.open_stream(node_b, mtype, None) as ast:
                for _ in range(mib):
                    await ast.write(block)
                await ast.close_write()
                return await ast.read_msg(mtype)

        n = asyncio.run(run())
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"mb_s": total / elapsed / 1e6, "whole": n == total,
            "cpu_100mb": cpu / (total / 1e8)}


def part_aio(seconds: float, mib: int, repeat: int) -> list[tuple[str, str]]:
    """The blocking API and ``gossip.aio`` in the same run, on the same node and connection,
    with the same loop shape (one caller, back to back, no window)."""
    print(f"== --aio: the blocking API and gossip.aio on one node, the receiver in its own "
          f"process; {seconds:g} s per case, streams of {mib} MiB, best of {repeat}", flush=True)
    mtype = gossip.USER_MSG
    remote = _Remote(mtype)
    a = Cluster(Config.lan(bind_addr="127.0.0.1:0"))
    a.start()
    aio = gossip.aio.Cluster.from_cluster(a)
    rows: list[tuple[str, str]] = []
    ratios: list[tuple[str, float]] = []

    def show(new: list[tuple[str, str]]) -> None:
        for k, v in new:
            print(f"   {k}: {v}", flush=True)
        rows.extend(new)

    try:
        a.join(remote.addr, timeout=5.0)
        node_b = a.get_node(gossip.NodeID.parse(remote.id))
        assert node_b is not None
        small = b"x" * 64
        # reliable 64 B: best of ``repeat`` alternating runs of each
        floods: dict[str, list[dict[str, Any]]] = {"blocking": [], "asyncio": []}
        for _ in range(repeat):
            floods["blocking"].append(_flood(
                a, remote, lambda: a.send_to_reliable(node_b, mtype, small), seconds))
            floods["asyncio"].append(_flood(
                a, remote, lambda: aio.send_to_reliable(node_b, mtype, small), seconds,
                loop=_aio_send_loop))
        best = {k: max(v, key=lambda r: r["rate"]) for k, v in floods.items()}
        for k in ("blocking", "asyncio"):
            r = best[k]
            losses = {**{f"sender {x}": y for x, y in r["sender_losses"].items()},
                      **{f"receiver {x}": y for x, y in r["receiver_losses"].items()}}
            raised = ", ".join(f"{v:,} {x}" for x, v in r["raised"].items()) or "none"
            show([(f"reliable 64 B, {k}: delivered/s",
                   f"{r['rate']:,.0f}  ({r['delivered']:,} of {r['accepted']:,} accepted; "
                   f"lost {r['loss_pct']:.2f} %; raised {raised}; drop counters "
                   f"{', '.join(f'{x} {y:,}' for x, y in losses.items()) or 'none'}; "
                   f"CPU s per 10k: sender {r['sender_cpu_10k']:.3f}, "
                   f"receiver {r['receiver_cpu_10k']:.3f})")])
        ratios.append(("reliable 64 B msgs/s", best["asyncio"]["rate"] / best["blocking"]["rate"]))

        rts: dict[str, list[dict[str, Any]]] = {"blocking": [], "asyncio": []}
        for _ in range(repeat):
            rts["blocking"].append(_round_trips(a, node_b, seconds, mtype + 1))
            rts["asyncio"].append(_round_trips(a, node_b, seconds, mtype + 1, aio=aio))
        rbest = {k: max(v, key=lambda r: r["rate"]) for k, v in rts.items()}
        for k in ("blocking", "asyncio"):
            r = rbest[k]
            show([(f"request/reply 64 B, {k}",
                   f"{r['rate']:,.0f}/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms  "
                   f"({r['n']:,} ok, {r['errors']} errors; CPU s per 1k {r['cpu_1k']:.3f})")])
        ratios.append(("request/reply per second", rbest["asyncio"]["rate"] / rbest["blocking"]["rate"]))
        ratios.append(("request/reply p50 (blocking p50 / asyncio p50)",
                       rbest["blocking"]["p50_ms"] / rbest["asyncio"]["p50_ms"]))

        sts: dict[str, list[dict[str, Any]]] = {"blocking": [], "asyncio": []}
        for _ in range(repeat):
            sts["blocking"].append(_stream_once(a, node_b, mtype + 2, mib))
            sts["asyncio"].append(_stream_once(a, node_b, mtype + 2, mib, aio=aio))
        sbest = {k: max(v, key=lambda r: r["mb_s"]) for k, v in sts.items()}
        for k in ("blocking", "asyncio"):
            r = sbest[k]
            whole = all(x["whole"] for x in sts[k])
            show([(f"stream {mib} MiB, {k}",
                   f"{r['mb_s']:,.0f} MB/s  (every byte arrived: {whole}; "
                   f"CPU s per 100 MB {r['cpu_100mb']:.3f})")])
        ratios.append(("stream MB/s", sbest["asyncio"]["mb_s"] / sbest["blocking"]["mb_s"]))
        for label, ratio in ratios:
            verdict = "meets" if ratio >= 0.8 else "BELOW"
            show([(f"asyncio / blocking, {label}", f"{ratio * 100:.0f} %  ({verdict} the 80 % goal)")])
    finally:
        a.stop(timeout=3.0)
        remote.close()
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

    def spawn(self, join: str, expect: int, busy: bool = False) -> Child:
        args = [sys.executable, str(NODE_PROC), "--preset", "lan", "--expect", str(expect)]
        if busy:
            args.append("--busy")
        if join:
            args += ["--join", join]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
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


def part2(n: int, idle: float, busy: bool = False) -> list[tuple[str, str]]:
    print(f"== part 2: {n} nodes as {n} processes, Config.lan() on 127.0.0.1"
          + (", each also spinning a pure-Python thread (--busy)" if busy else ""), flush=True)
    fleet = Fleet()
    rows: list[tuple[str, str]] = []
    try:
        seed = fleet.spawn("", n, busy)
        if not fleet.wait(lambda: bool(seed.addr), 30, "the first node is ready"):
            return rows
        for _ in range(n - 1):
            fleet.spawn(seed.addr, n, busy)
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
        ok = fleet.wait(lambda: all(_dropped_at(c, victim.id, ("dead", "left")) for c in survivors),
                        120, "every survivor has the killed node dead")
        with fleet.lock:
            t_first_suspect = min((_dropped_at(c, victim.id, ("suspect", "dead"))
                                   for c in survivors if _dropped_at(c, victim.id, ("suspect", "dead"))),
                                  default=0.0)
            t_all_dead = max(_dropped_at(c, victim.id, ("dead", "left")) for c in survivors)
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
        ok = fleet.wait(lambda: all(_dropped_at(c, leaver.id, ("left", "dead")) for c in rest),
                        60, "every remaining node has the leaver dropped")
        with fleet.lock:
            t_all_left = max(_dropped_at(c, leaver.id, ("left", "dead")) for c in rest)
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
    p.add_argument("--nodes", type=int, default=32, help="processes in part 2")
    p.add_argument("--idle", type=float, default=30.0, help="idle window in seconds")
    p.add_argument("--skip-procs", action="store_true", help="skip part 2 (the processes)")
    p.add_argument("--skip-messages", action="store_true", help="skip part 1 (the messages)")
    p.add_argument("--busy", action="store_true",
                   help="part 2 with every process also spinning a pure-Python thread")
    p.add_argument("--aio", action="store_true",
                   help="only the blocking API against gossip.aio, in this one run")
    p.add_argument("--stream-mib", type=int, default=256, help="MiB per stream with --aio")
    p.add_argument("--repeat", type=int, default=3, help="runs of each case with --aio (best kept)")
    args = p.parse_args(argv)
    cmd = "python " + " ".join(shlex.quote(a) for a in
                               ["bench/cluster_bench.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"gossip {gossip.__version__} on Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    load0 = os.getloadavg()
    print(f"load average at the start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    rows: list[tuple[str, str]] = []
    if args.aio:
        rows += part_aio(args.seconds, args.stream_mib, args.repeat)
        load1 = os.getloadavg()
        rows.append(("load average (start; end)", f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
                                                  f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"))
    if not args.skip_messages and not args.aio:
        rows += part1(args.seconds)
    if not args.skip_procs and not args.aio:
        if args.nodes < 3:
            p.error("--nodes must be at least 3")
        rows += part2(args.nodes, args.idle, args.busy)
    if rows:
        width = max(len(r[0]) for r in rows)
        print("\n== results")
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
    print(f"\nreproduce with: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
