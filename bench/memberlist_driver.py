"""One node of this library on memberlist's wire, behind the benchmark driver contract
(/work's memberlist driver README: ``--name --bind [--join] --probe-interval-ms
--probe-timeout-ms --gossip-interval-ms``), for bench/mixed_bench.py.

Prints JSON lines: ``ready``, ``view`` (every 250 ms: the names of every member not dead or
left, itself included) and ``state`` (each change). SIGTERM leaves gracefully and exits 0; the
process also ends when stdout closes or after ``--max-runtime-s``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from gossip import Cluster
from gossip.config import Config
from gossip.node import Node, NodeState

_out = threading.Lock()


def emit(**v: Any) -> None:
    v["ts"] = time.time()
    line = json.dumps(v)
    with _out:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            raise SystemExit(0) from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--join", default="")
    ap.add_argument("--probe-interval-ms", type=int, default=1000)
    ap.add_argument("--probe-timeout-ms", type=int, default=500)
    ap.add_argument("--gossip-interval-ms", type=int, default=200)
    ap.add_argument("--max-runtime-s", type=float, default=3600)
    a = ap.parse_args()
    cfg = Config(bind_addr=a.bind, wire_protocol="memberlist", name=a.name,
                 health_check_interval=a.probe_interval_ms / 1000,
                 ping_timeout=a.probe_timeout_ms / 1000,
                 dissemination_interval=a.gossip_interval_ms / 1000)
    c = Cluster(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_state(node: Node, prev: NodeState) -> None:
        emit(ev="state", node=node.name, state=str(node.state))

    c.handle_node_state_change_func(on_state)
    c.start()
    if a.join:
        deadline = time.monotonic() + 15
        while True:
            try:
                c.join(a.join.split(","))
                break
            except Exception:
                if time.monotonic() > deadline:
                    c.stop(leave=False)
                    return 1
                time.sleep(0.2)
    emit(ev="ready")
    end = time.monotonic() + a.max_runtime_s
    while not stop.is_set() and time.monotonic() < end:
        alive = sorted(n.name for n in c.nodes() if n.state in (NodeState.ALIVE, NodeState.SUSPECT))
        emit(ev="view", alive=alive)
        stop.wait(0.25)
    c.stop(leave=stop.is_set())
    return 0


if __name__ == "__main__":
    sys.exit(main())
