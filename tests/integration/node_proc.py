"""One gossip node in its own process, driven over stdin/stdout with JSON lines.

Used by the integration tests (a node that can be killed with SIGKILL) and by
``bench/cluster_bench.py`` (clusters of many processes). Run::

    python tests/integration/node_proc.py --join 127.0.0.1:7946 [--preset local|lan]
        [--bind 127.0.0.1:0] [--expect N] [--node-id UUID]
        [--ws-bind 127.0.0.1:0] [--token T] [--tls-cert F --tls-key F] [--tls-ca F]

``--ws-bind`` makes it a WebSocket-only node (no UDP/TCP listener) advertising its ws:// (or,
with ``--tls-cert``, wss://) URL; ``--token`` is its bearer token, ``--tls-ca`` the authorities
it verifies wss:// peers against.

Every line it writes on stdout is one JSON object with an ``event`` field and ``t``, the wall
clock (``time.time()``) when it happened, so a parent can time events across processes:

* ``{"event": "ready", "id": ..., "addr": ...}`` once started and joined (``joined``: how many
  peers accepted it; ``join_error`` if the join failed — the node keeps running);
* ``{"event": "state", "node": id, "addr": ..., "prev": "alive", "state": "suspect"}`` for every
  state change of another node (from the node's event thread, in order);
* ``{"event": "all_alive", "n": N}`` the first time it sees ``--expect`` nodes alive (itself
  included);
* ``{"event": "usage", "cpu": seconds, "rss_kb": kB, "alive": n, "suspect": n, "dead": n}``
  in answer to the stdin command ``usage`` (CPU time is user + system of this process);
* ``{"event": "left"}`` after the stdin command ``leave`` (then it stops and exits);
* ``{"event": "count", "n": N}`` in answer to ``count``: user messages of type ``--sink`` received
  so far (with ``--sink T``, type T is counted, type T+1 is answered with its own payload, and
  a stream of type T+2 is read to its end, then answered with a typed message T+2 holding the
  byte count);
* ``{"event": "stats", "stats": {...}}`` in answer to ``stats``: the node's ``Cluster.stats()``.

With ``--busy``, the process also runs a pure-Python thread that spins for ever, competing for
the interpreter lock with the node's threads (a CPU-starved host).

stdin commands: ``usage``, ``count``, ``stats``, ``leave`` (announce the leave, report ``left``, stop, exit) and
``quit`` (stop, which also leaves gracefully, and exit). End of input is ``quit``. SIGTERM stops the node too. Exit code 0 on a clean
stop, 1 if the node could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from gossip import Cluster, Config, GossipError, Node, NodeState  # noqa: E402

_out_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line on stdout (thread-safe, flushed)."""
    fields["event"] = event
    fields.setdefault("t", time.time())
    line = json.dumps(fields)
    with _out_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass


def rss_kb() -> int:
    """Return the resident set size of this process in kB (VmRSS), 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds() -> float:
    """Return the user + system CPU time of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--join", default="", help="comma-separated peers to join")
    p.add_argument("--bind", default="127.0.0.1:0")
    p.add_argument("--preset", default="local", choices=["local", "lan", "wan"])
    p.add_argument("--expect", type=int, default=0, help="report all_alive at this many nodes")
    p.add_argument("--node-id", default="")
    p.add_argument("--sink", type=int, default=0, help="count messages of this type; echo type+1")
    p.add_argument("--ws-bind", default="", help="listen on WebSocket only, at this ip:port")
    p.add_argument("--token", default="", help="bearer token of WebSocket connections")
    p.add_argument("--tls-cert", default="", help="PEM certificate of the wss:// listener")
    p.add_argument("--tls-key", default="", help="PEM key of --tls-cert")
    p.add_argument("--tls-ca", default="", help="PEM authorities wss:// peers are verified against")
    p.add_argument("--busy", action="store_true", help="also spin a pure-Python thread for ever")
    args = p.parse_args(argv)
    if args.busy:
        def spin() -> None:
            x = 0
            while True:
                x += 1
        threading.Thread(target=spin, name="node-proc-busy", daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cfg = Config.preset(args.preset, bind_addr=args.bind, node_id=args.node_id,
                        bearer_token=args.token, tls_ca_file=args.tls_ca)
    if args.ws_bind:
        cfg = cfg.copy(socket_transport_enabled=False, websocket_bind_addr=args.ws_bind,
                       tls_cert_file=args.tls_cert, tls_key_file=args.tls_key)
    cluster = Cluster(cfg)
    all_alive_sent = threading.Event()

    def check_all_alive() -> None:
        if args.expect and not all_alive_sent.is_set() and cluster.num_alive_nodes() >= args.expect:
            all_alive_sent.set()
            emit("all_alive", n=args.expect)

    def on_state(node: Node, prev: NodeState) -> None:
        if node.id != me_id:
            emit("state", node=str(node.id), addr=node.address, prev=str(prev),
                 state=str(node.state))
        check_all_alive()

    me_id = cluster.local_node().id
    cluster.handle_node_state_change_func(on_state)
    received = [0]
    count_lock = threading.Lock()
    if args.sink:
        def count(sender: Node | None, packet: Any) -> None:
            with count_lock:   # handlers run on several workers at once
                received[0] += 1
        cluster.handle_func_no_forward(args.sink, count)
        cluster.handle_func_with_reply(args.sink + 1, lambda sender, packet: packet.unmarshal())

        def drain(sender: Node | None, packet: Any, stream: Any) -> None:
            buf = bytearray(1 << 20)
            n = 0
            while got := stream.readinto(buf):
                n += got
            stream.write_msg(args.sink + 2, n)
        cluster.handle_stream_func(args.sink + 2, drain)
    try:
        cluster.start()
    except GossipError as exc:
        print(json.dumps({"event": "error", "error": str(exc)}), flush=True)
        return 1
    fields: dict[str, Any] = {"id": str(me_id), "addr": cluster.address}
    peers = [x for x in args.join.split(",") if x.strip()]
    if peers:
        try:
            fields["joined"] = cluster.join(peers)
        except GossipError as exc:
            fields["join_error"] = str(exc)
    emit("ready", **fields)
    check_all_alive()

    def read_commands() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "count":
                emit("count", n=received[0])
            elif cmd == "stats":
                emit("stats", stats=cluster.stats())
            elif cmd == "usage":
                emit("usage", cpu=cpu_seconds(), rss_kb=rss_kb(),
                     alive=cluster.num_alive_nodes(), suspect=cluster.num_suspect_nodes(),
                     dead=cluster.num_dead_nodes())
            elif cmd == "leave":
                try:
                    cluster.leave()
                except GossipError:
                    pass
                emit("left")
                break
            elif cmd == "quit":
                break
        stop.set()

    threading.Thread(target=read_commands, name="node-proc-stdin", daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    cluster.stop(timeout=3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
