"""The ``gossip`` command line: ``python -m gossip demo``, ``agent`` and ``sim``.

With :mod:`gossip.demo`, the only part of the library that prints.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="python -m gossip", description="gossip cluster tools")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run a small local cluster: joins, a broadcast, a crash")
    demo.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the node ids")
    demo.add_argument("--quiet", action="store_true", help="print only the main steps")
    demo.add_argument("--timeout", type=float, default=30.0, help="hard deadline in seconds")
    agent = sub.add_parser("agent", help="run one node until interrupted, printing membership")
    agent.add_argument("--bind", default="127.0.0.1:7946", help="bind address ip:port")
    agent.add_argument("--advertise", default="", help="advertised address ip:port")
    agent.add_argument("--join", action="append", default=[], help="peer to join (repeatable)")
    agent.add_argument("--node-id", default="", help="node id (UUID; random if empty)")
    agent.add_argument("--preset", default="lan", choices=["lan", "wan", "local"])
    sub.add_parser("sim", help="run a simulated cluster (same flags as python -m gossip.sim)",
                   add_help=False)
    return parser


def _agent(args: argparse.Namespace) -> int:
    from .cluster import Cluster
    from .config import Config
    from .errors import GossipError
    from .node import Node, NodeState

    cfg = Config.preset(args.preset, bind_addr=args.bind, advertise_addr=args.advertise,
                        node_id=args.node_id)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_state(node: Node, prev: NodeState) -> None:
        print(f"{node.id.short} {node.address}: {prev} -> {node.state}", flush=True)

    try:
        with Cluster(cfg) as cluster:
            cluster.handle_node_state_change_func(on_state)
            print(f"node {cluster.local_node().id} listening on {cluster.address}", flush=True)
            if args.join:
                n = cluster.join(args.join)
                print(f"joined through {n} peer(s)", flush=True)
            stop.wait()
            print("leaving...", flush=True)
    except GossipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from .sim.__main__ import main as sim_main

        return sim_main(argv[1:])
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.nodes, args.seed, args.quiet, args.timeout)
    if args.command == "agent":
        return _agent(args)
    parser.print_help()
    return 2
