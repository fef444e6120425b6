"""``python -m gossip demo``: a small local cluster showing joins, a broadcast and a crash.

Starts N nodes in this process on ``127.0.0.1`` (ephemeral ports, :meth:`Config.local`
timings), joins them through the first, broadcasts a message, crashes one node without a
leave and shows the others suspect it and declare it dead. It ends by itself within a hard
deadline and returns a non-zero exit code, with a message, if some step did not happen in time.

Like the rest of :mod:`gossip.cli`, it prints; the library never does.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from ..cluster import Cluster
from ..config import Config
from ..errors import GossipError
from ..node import Node, NodeID, NodeState
from ..packet import Packet
from ..wire import USER_MSG

__all__ = ["run_demo", "DemoFailed"]


class DemoFailed(Exception):
    """A step of the demo did not happen in time."""


class _Demo:
    def __init__(self, n: int, seed: int | None, quiet: bool, deadline: float, out: TextIO) -> None:
        self.n = n
        self.quiet = quiet
        self.deadline = deadline
        self.out = out
        self.rng = random.Random(seed)
        self.print_lock = threading.Lock()
        self.names: dict[NodeID, str] = {}
        self.clusters: list[Cluster] = []
        self.received: dict[str, int] = {}
        self.cond = threading.Condition()
        self.start = time.monotonic()

    def say(self, text: str, always: bool = False) -> None:
        if self.quiet and not always:
            return
        with self.print_lock:
            print(f"[{time.monotonic() - self.start:5.1f}s] {text}", file=self.out, flush=True)

    def name(self, node_id: NodeID) -> str:
        return self.names.get(node_id, node_id.short)

    def wait(self, what: str, pred: Callable[[], bool], limit: float) -> None:
        end = min(time.monotonic() + limit, self.deadline)
        with self.cond:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    raise DemoFailed(f"timed out waiting until {what}")
                self.cond.wait(min(left, 0.1))

    def table(self, viewer: Cluster) -> None:
        if self.quiet:
            return
        rows = sorted(viewer.nodes(), key=lambda n: self.name(n.id))
        lines = [f"membership as seen by {self.name(viewer.local_node().id)}:",
                 f"  {'name':8} {'id':10} {'address':22} {'state':8} {'inc':>4}"]
        for node in rows:
            lines.append(f"  {self.name(node.id):8} {node.id.short:10} {node.address:22} "
                         f"{str(node.state):8} {node.incarnation:>4}")
        with self.print_lock:
            print("\n".join(lines), file=self.out, flush=True)

    def on_state(self, viewer: str) -> Callable[[Node, NodeState], None]:
        def handler(node: Node, prev: NodeState) -> None:
            if self.name(node.id) != viewer:
                self.say(f"{viewer} sees {self.name(node.id)}: {prev} -> {node.state}")
            with self.cond:
                self.cond.notify_all()
        return handler

    def on_message(self, viewer: str) -> Callable[[Node, Packet], None]:
        def handler(sender: Node, packet: Packet) -> None:
            body = packet.unmarshal()
            self.say(f"{viewer} received {body!r} from {self.name(sender.id)}", always=True)
            with self.cond:
                self.received[viewer] = self.received.get(viewer, 0) + 1
                self.cond.notify_all()
        return handler

    def sees(self, viewer: Cluster, target: NodeID, state: NodeState) -> bool:
        node = viewer.get_node(target)
        return node is not None and node.state is state

    def run(self) -> None:
        self.say(f"starting {self.n} nodes on 127.0.0.1", always=True)
        for i in range(self.n):
            label = f"node-{i + 1}"
            node_id = NodeID(int=self.rng.getrandbits(128) & ~(0xF << 76) | (0x4 << 76))
            cfg = Config.local(bind_addr="127.0.0.1:0", node_id=str(node_id))
            c = Cluster(cfg)
            self.names[c.local_node().id] = label
            c.handle_node_state_change_func(self.on_state(label))
            c.handle_func(USER_MSG, self.on_message(label))
            self.clusters.append(c)             # before start(): a Ctrl-C inside it still stops c
            c.start()
            self.say(f"{label} ({c.local_node().id.short}) listening on {c.address}")
        seed = self.clusters[0]
        for c in self.clusters[1:]:
            c.join([seed.address], timeout=5.0)
        ids = [c.local_node().id for c in self.clusters]
        self.wait("every node sees every other node alive",
                  lambda: all(self.sees(c, i, NodeState.ALIVE) for c in self.clusters for i in ids),
                  10.0)
        self.say("the cluster has converged", always=True)
        self.table(seed)

        self.say(f"{self.name(ids[0])} broadcasts a message (type {USER_MSG})", always=True)
        seed.send(USER_MSG, "hello from node-1")
        others = [self.names[i] for i in ids[1:]]
        self.wait("every other node received the broadcast",
                  lambda: all(self.received.get(o, 0) >= 1 for o in others), 5.0)

        victim = self.clusters[-1]
        vid = victim.local_node().id
        survivors = self.clusters[:-1]
        self.say(f"crashing {self.name(vid)} (no leave: its sockets just close)", always=True)
        victim._crash()
        self.wait(f"every survivor declares {self.name(vid)} dead",
                  lambda: all(self.sees(c, vid, NodeState.DEAD) for c in survivors), 20.0)
        self.say(f"{self.name(vid)} is dead for every survivor", always=True)
        self.table(seed)

    def stop(self) -> None:
        self.say("stopping: every node leaves gracefully", always=True)
        for c in self.clusters:
            c.stop(timeout=2.0)
        self.say("all nodes stopped", always=True)


def run_demo(nodes: int = 5, seed: int | None = None, quiet: bool = False,
             timeout: float = 30.0, out: TextIO | None = None) -> int:
    """Run the demo; return the process exit code (0 on success).

    Args:
        nodes: how many nodes to start (at least 3).
        seed: seed for the node ids (random if None).
        quiet: print only the main steps.
        timeout: hard deadline of the whole demo in seconds.
        out: where to print (default standard output).
    """
    stream = out if out is not None else sys.stdout
    if nodes < 3:
        print("the demo needs at least 3 nodes", file=sys.stderr)
        return 2
    demo = _Demo(nodes, seed, quiet, time.monotonic() + timeout, stream)
    code = 0
    try:
        demo.run()
    except (DemoFailed, GossipError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        demo.stop()
    if code == 0:
        demo.say(f"demo finished in {time.monotonic() - demo.start:.1f}s", always=True)
    return code
