"""Benchmark the HTTP transport against WebSocket, side by side, in one run.

Usage::

    python bench/http_bench.py [--seconds 3] [--window 256] [--kinds ws,http] [--requests 300]

For each kind (``ws``: two WebSocket-only nodes; ``http``: two HTTP-only nodes), two nodes on
127.0.0.1 (``Config.lan()``, no key), in this process:

* one-way user messages per second, ``send_to_reliable`` then ``send_to`` (best-effort), a
  64-byte body, one sending thread, at most ``--window`` messages unaccounted for; after the
  run, up to 5 s for the stragglers, then what was delivered and what was lost (sent and never
  delivered, or refused at the send);
* the CPU seconds of the process (both nodes) per 10 000 delivered messages;
* request/reply round trips with ``send_to_with_response``, one at a time: p50 and p99.

It prints the command, the load average before and after, and every figure. A measurement,
never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gossip  # noqa: E402
from gossip import Cluster, Config  # noqa: E402
from gossip.errors import GossipError  # noqa: E402

MTYPE = gossip.USER_MSG
RTYPE = gossip.USER_MSG + 1


def _config(kind: str) -> Config:
    bind = {"ws": "websocket_bind_addr", "http": "http_bind_addr"}[kind]
    return Config.lan(bind_addr="127.0.0.1:0", socket_transport_enabled=False, **{bind: "127.0.0.1:0"})


def _pair(kind: str) -> tuple[Cluster, Cluster]:
    a, b = Cluster(_config(kind)), Cluster(_config(kind))
    a.start()
    b.start()
    b.join(a.address, timeout=10)
    end = time.monotonic() + 20
    while not (a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2):
        if time.monotonic() > end:
            raise SystemExit(f"{kind}: the two nodes did not see each other within 20 s")
        time.sleep(0.05)
    return a, b


def _one_way(sender: Cluster, receiver: Cluster, reliable: bool, seconds: float, window: int) -> dict[str, Any]:
    got = 0
    cv = threading.Condition()

    def handler(_: Any, __: Any) -> None:
        nonlocal got
        with cv:
            got += 1
            cv.notify()

    receiver.handle_func_no_forward(MTYPE, handler)
    node = sender.get_node(receiver.local_node().id)
    assert node is not None
    body = b"x" * 64
    sent = refused = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    end = t0 + seconds
    try:
        while time.monotonic() < end:
            with cv:
                while sent - refused - got >= window and time.monotonic() < end:
                    cv.wait(0.05)
            try:
                if reliable:
                    sender.send_to_reliable(node, MTYPE, body)
                else:
                    sender.send_to(node, MTYPE, body)
            except GossipError:
                refused += 1
            sent += 1
        with cv:
            drain = time.monotonic() + 5
            while got < sent - refused and time.monotonic() < drain:
                cv.wait(0.05)
            delivered = got
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    finally:
        receiver.unregister_message_type(MTYPE)
    return {"sent": sent, "delivered": delivered, "lost": sent - delivered, "refused": refused,
            "rate": delivered / elapsed, "cpu_per_10k": cpu / max(1, delivered) * 10_000}


def _round_trips(sender: Cluster, receiver: Cluster, n: int) -> dict[str, float]:
    receiver.handle_func_with_reply(RTYPE, lambda s, p: p.payload)
    node = sender.get_node(receiver.local_node().id)
    assert node is not None
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            sender.send_to_with_response(node, RTYPE, b"ping", timeout=5)
            times.append(time.perf_counter() - t)
    finally:
        receiver.unregister_message_type(RTYPE)
    times.sort()
    return {"p50_ms": statistics.median(times) * 1000, "p99_ms": times[int(len(times) * 0.99) - 1] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--kinds", default="ws,http")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    print(f"{'kind':5} {'mode':11} {'msgs/s':>9} {'sent':>8} {'delivered':>9} {'lost':>6} {'refused':>7} "
          f"{'CPU s/10k':>9}")
    results: dict[str, dict[str, Any]] = {}
    for kind in args.kinds.split(","):
        a, b = _pair(kind)
        try:
            for mode in ("reliable", "best-effort"):
                r = _one_way(a, b, mode == "reliable", args.seconds, args.window)
                results[f"{kind}/{mode}"] = r
                print(f"{kind:5} {mode:11} {r['rate']:9.0f} {r['sent']:8d} {r['delivered']:9d} {r['lost']:6d} "
                      f"{r['refused']:7d} {r['cpu_per_10k']:9.2f}")
            rt = _round_trips(a, b, args.requests)
            print(f"{kind:5} request     p50 {rt['p50_ms']:.2f} ms  p99 {rt['p99_ms']:.2f} ms "
                  f"({args.requests} round trips)")
        finally:
            a.stop()
            b.stop()
    for mode in ("reliable", "best-effort"):
        ws, http = results.get(f"ws/{mode}"), results.get(f"http/{mode}")
        if ws and http:
            print(f"http/ws {mode}: {http['rate'] / ws['rate']:.2f}x the messages per second")
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
