"""This library's benchmark driver: one gossip node behind the chaos harness's driver contract.

``bench/chaos.py`` runs every library's nodes through a *driver*: a command the harness starts
once per node (inside the node's network namespace) with::

    --name NAME --bind IP:PORT [--join IP:SEEDPORT]
    --probe-interval-ms 1000 --probe-timeout-ms 500 --gossip-interval-ms 200

and whose standard output is JSON lines, each written whole and flushed:

* ``{"ts": <unix s>, "ev": "ready"}`` once, when the node listens and, with ``--join``, has
  joined;
* ``{"ts": ..., "ev": "view", "alive": [...]}`` every 250 ms: the sorted names of every member
  not dead or left, itself included (a suspect counts as alive);
* ``{"ts": ..., "ev": "state", "node": NAME, "state": "alive"|"suspect"|"dead"|"left"}`` on each
  change the library reports.

Beyond the contract, for this library's harness runs only: ``--gossip-config KEY=VALUE``
(repeatable) sets a :class:`gossip.Config` field after the contract's timings, in the syntax of
``GOSSIP_<KEY>`` environment variables (``adaptive_ping_timeout=true``, ``ping_timeout_max=600ms``;
an unknown field or a bad value is refused before the node starts); ``--stats-interval-ms N``
adds ``{"ts": ..., "ev": "stats", "stats": {...}}`` every N ms: the probe counters of
``cluster.stats()`` (:data:`STATS_KEYS`).

This driver uses the public :class:`gossip.Cluster` API only. It starts from ``Config.lan()``
and maps the contract's three timings onto it: the probe interval onto ``probe_interval``
(``health_check_interval``), the probe timeout onto ``probe_timeout`` (``ping_timeout``), and
the gossip interval onto ``dissemination_interval`` (memberlist's ``GossipInterval``: the
period of the protocol's own gossip rounds; ``gossip_interval`` is the period of user gossip
callbacks, unrelated). Packets are not encrypted (``insecure=True``: the nodes share a private
bridge, and memberlist's driver runs without a key too). Every other field keeps its LAN default. A node carries its contract
name in its metadata (``name``); its node id is generated at each start, as a restarted
process's would be. The view is kept from the cluster's state and metadata events (the public
event API), not by listing every member four times a second, so that the CPU a node uses is the
library's rather than the driver's.

SIGTERM or SIGINT: leave gracefully, stop, exit 0. The process also ends when its standard
output is closed (the harness is gone) and after ``--max-runtime-s`` (exit 3). Logs (warnings
and up, or everything with ``--log-stderr``) go to standard error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from gossip import Cluster, Config, GossipError, Node, NodeID, NodeState  # noqa: E402

VIEW_PERIOD = 0.25
"""Seconds between two ``view`` lines (the contract's 250 ms)."""

STATS_KEYS = ("probes", "acks", "indirect_probes", "failed_probes", "nacks")
"""The core's probe counters a ``stats`` line carries (``cluster.stats()["core.<key>"]``)."""

_STATE_NAMES = {NodeState.ALIVE: "alive", NodeState.SUSPECT: "suspect",
                NodeState.DEAD: "dead", NodeState.LEAVING: "left"}

_USAGE = ("usage: chaos_driver.py --name NAME --bind IP:PORT [--join IP:PORT[,IP:PORT...]] "
          "[--probe-interval-ms 1000] [--probe-timeout-ms 500] [--gossip-interval-ms 200] "
          "[--join-timeout-ms 15000] [--max-runtime-s 3600] [--log-stderr] "
          "[--gossip-config KEY=VALUE ...] [--stats-interval-ms N]")


class _Output:
    """Writes whole JSON lines on stdout under one lock; notes when stdout is gone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def emit(self, ev: str, **fields: Any) -> None:
        """Write ``{"ts": now, "ev": ev, **fields}`` as one flushed line (caller may hold ``lock``)."""
        fields = {"ts": round(time.time(), 4), "ev": ev, **fields}
        self._write(json.dumps(fields, separators=(",", ":")) + "\n")

    def emit_view(self, alive_json: str) -> None:
        """Write a ``view`` line whose ``alive`` list is ``alive_json``, already encoded (the
        line :meth:`emit` would write: encoding a hundred names four times a second is a
        driver's cost, not the library's, so the list is encoded when it changes)."""
        self._write(f'{{"ts":{round(time.time(), 4)!r},"ev":"view","alive":{alive_json}}}\n')

    def _write(self, line: str) -> None:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.closed.set()


def _parse(argv: list[str]) -> dict[str, Any]:
    """Parse the contract's flags (a small parser: argparse costs memory in every node)."""
    opts: dict[str, Any] = {"name": "", "bind": "", "join": "", "probe-interval-ms": 1000,
                            "probe-timeout-ms": 500, "gossip-interval-ms": 200,
                            "join-timeout-ms": 15000, "max-runtime-s": 3600, "log-stderr": False,
                            "gossip-config": [], "stats-interval-ms": 0}
    it = iter(argv)
    for arg in it:
        key, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or key not in opts:
            raise SystemExit(f"chaos_driver: unknown argument {arg!r}\n{_USAGE}")
        if isinstance(opts[key], bool):
            opts[key] = True
            continue
        if not eq:
            value = next(it, "")
        if isinstance(opts[key], list):
            opts[key].append(value)
        elif isinstance(opts[key], int):
            try:
                opts[key] = int(value)
            except ValueError:
                raise SystemExit(f"chaos_driver: --{key} takes an integer, got {value!r}") from None
            if opts[key] <= 0:
                raise SystemExit(f"chaos_driver: --{key} must be positive, got {value!r}")
        else:
            opts[key] = value
    if not opts["name"] or not opts["bind"]:
        raise SystemExit(f"chaos_driver: --name and --bind are required\n{_USAGE}")
    return opts


def _config(opts: dict[str, Any]) -> Config:
    """The LAN preset with the contract's three timings, unencrypted like memberlist's driver,
    then each ``--gossip-config KEY=VALUE`` (parsed as ``GOSSIP_<KEY>`` would be)."""
    cfg = Config.lan(
        bind_addr=opts["bind"],
        insecure=True,      # the harness's private bridge; memberlist's driver has no key either
        health_check_interval=opts["probe-interval-ms"] / 1000.0,
        ping_timeout=opts["probe-timeout-ms"] / 1000.0,
        dissemination_interval=opts["gossip-interval-ms"] / 1000.0,
    )
    env: dict[str, str] = {}
    for item in opts["gossip-config"]:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"chaos_driver: --gossip-config takes KEY=VALUE, got {item!r}")
        env["GOSSIP_" + key.strip().upper()] = value.strip()
    try:
        cfg = Config.from_env(environ=env, base=cfg, strict=True)
        cfg.validate()
    except GossipError as exc:
        raise SystemExit(f"chaos_driver: --gossip-config: {exc}") from None
    return cfg


def _probe_stats(cluster: Cluster) -> dict[str, int]:
    """The probe counters of :data:`STATS_KEYS` (0 for one not counted yet)."""
    stats = cluster.stats()
    return {k: int(stats.get("core." + k, 0)) for k in STATS_KEYS}


def _encode_names(names: list[str]) -> str:
    """``names`` as the JSON of a ``view`` line's ``alive`` list."""
    return json.dumps(names, separators=(",", ":"))


def _name_of(node: Node) -> str:
    return node.metadata.get_string("name") or node.id.short


def main(argv: list[str] | None = None) -> int:
    """Run one node until SIGTERM/SIGINT, closed stdout or the run-time cap; return the exit code."""
    opts = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, format=f"{opts['name']} %(levelname)s %(name)s: %(message)s",
                        level=logging.DEBUG if opts["log-stderr"] else logging.WARNING)
    out = _Output()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + opts["max-runtime-s"]

    cluster = Cluster(_config(opts))
    cluster.local_metadata().set_string("name", opts["name"])
    me = cluster.local_node().id
    # The view follows the library's own events (what a user of the Cluster sees), so that a
    # view costs this process a sorted list when something changed, not a snapshot of every
    # member four times a second: idle CPU is then the library's, not the driver's.
    members: dict[NodeID, tuple[str, bool]] = {}      # id -> (name, alive or suspect)
    view = [_encode_names([opts["name"]])]    # the sorted names, JSON-encoded

    def changed() -> None:
        view[0] = _encode_names(sorted({name for name, up in members.values() if up} | {opts["name"]}))

    def on_state(node: Node, prev: NodeState) -> None:
        if node.id == me:
            return
        name = _name_of(node)
        with out.lock:
            members[node.id] = (name, node.state is NodeState.ALIVE or node.state is NodeState.SUSPECT)
            changed()
            state = _STATE_NAMES.get(node.state)
            if state is not None:
                out.emit("state", node=name, state=state)

    def on_metadata(node: Node) -> None:
        with out.lock:
            if node.id in members and members[node.id][0] != _name_of(node):
                members[node.id] = (_name_of(node), members[node.id][1])
                changed()

    cluster.handle_node_state_change_func(on_state)
    cluster.handle_node_metadata_change_func(on_metadata)
    try:
        cluster.start()
    except GossipError as exc:
        print(f"chaos_driver: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        if opts["join"]:
            seeds = [s for s in opts["join"].split(",") if s]
            give_up = time.monotonic() + opts["join-timeout-ms"] / 1000.0
            while True:
                try:
                    cluster.join(seeds)
                    break
                except GossipError as exc:
                    if time.monotonic() >= give_up:
                        print(f"chaos_driver: join {seeds}: {exc}", file=sys.stderr)
                        return 1
                if stop.wait(0.2):
                    return 0
        with out.lock:
            out.emit("ready")
        next_view = time.monotonic()
        stats_period = opts["stats-interval-ms"] / 1000.0
        next_stats = next_view if stats_period else float("inf")
        while not stop.is_set() and not out.closed.is_set():
            with out.lock:       # the lock of the events: a view is never older than a state line
                out.emit_view(view[0])
            now = time.monotonic()
            if now >= next_stats:
                counters = _probe_stats(cluster)
                with out.lock:
                    out.emit("stats", stats=counters)
                next_stats = max(next_stats + stats_period, now)
            if now >= deadline:
                print("chaos_driver: --max-runtime-s reached", file=sys.stderr)
                cluster.stop(timeout=2.0, leave=False)
                return 3
            next_view = max(next_view + VIEW_PERIOD, now)
            stop.wait(max(0.0, next_view - now))
    finally:
        cluster.stop(timeout=3.0, leave=stop.is_set())
    return 0


if __name__ == "__main__":
    sys.exit(main())
