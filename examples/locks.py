"""locks: workers take turns at one job, and a fenced store refuses a worker whose lease ended.

Every node is a worker. Over and over, it takes the lock ``nightly-job`` from a
:class:`gossip.locks.LockService` (granted by the elected leader, stored by a quorum), runs the
job, and writes its result to a *fake store* with the lease's fencing token. The store is one
node's (the owner of the key ``fake-store`` among the alive nodes, by rendezvous hashing); it
remembers the highest token it has accepted and refuses any write that carries a lower one.

Type ``pause`` on a worker: its next job stalls for twice its lease before writing, as a long
garbage-collection pause would. Meanwhile the lease runs out and another worker takes the job;
when the paused worker wakes and writes, the store refuses it (its token is older). That is
what the fencing token is for: a lock alone cannot stop a holder that does not know its lease
ended. Run two or more nodes::

    python examples/locks.py --port 8000 --peers 127.0.0.1:8000
    python examples/locks.py --port 8001 --peers 127.0.0.1:8000

Unattended::

    python examples/locks.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from _common import Command, Example, run, say

import gossip
from gossip import Cluster, Node, Packet
from gossip.leader import LeaderConfig
from gossip.locks import FencingToken, LockService

STORE_MSG = gossip.USER_MSG          # 128: request/reply, a write to the fake store
JOB = "nightly-job"
TTL = 2.0                            # seconds a lease lasts
WORK = 0.5                           # seconds the job takes
STATE: dict[str, Any] = {}


class FakeStore:
    """A storage that accepts a write only if its fencing token is not older than the newest
    it has accepted (real storage does this with a conditional write)."""

    def __init__(self) -> None:
        self.highest = FencingToken(0, 0)
        self.rows = 0
        self._lock = threading.Lock()

    def write(self, sender: Node, packet: Packet) -> dict[str, Any]:
        """The store's request handler: ``{"row", "token"}`` in, ``{"ok", "highest"}`` out."""
        request = packet.unmarshal()
        token = FencingToken(*request["token"])
        with self._lock:
            ok = token >= self.highest
            if ok:
                self.highest = token
                self.rows += 1
            highest = self.highest
        verdict = "accepted" if ok else f"REFUSED (it has seen token {highest})"
        say(f"store: write {request['row']!r} with token {token} from {sender.id.short}: {verdict}")
        return {"ok": ok, "highest": list(highest)}


def write_to_store(cluster: Cluster, row: str, token: FencingToken) -> str:
    """Send a write to the node that keeps the store; return its verdict."""
    owner = cluster.owner("fake-store")
    if owner is None:
        return "no store"
    try:
        reply = cluster.send_to_with_response(owner, STORE_MSG, {"row": row, "token": list(token)}, timeout=2.0)
    except gossip.GossipError as exc:
        return f"store unreachable ({exc})"
    return "accepted" if reply["ok"] else f"refused: the store has seen token {FencingToken(*reply['highest'])}"


def worker(cluster: Cluster, locks: LockService, stop: threading.Event) -> None:
    """Take the job, do it, write the result, give the job up; again and again."""
    me = cluster.local_node().id.short
    n = 0
    while not stop.is_set():
        try:
            lease = locks.acquire(JOB, ttl=TTL, timeout=1.0)
        except gossip.GossipTimeout:
            continue
        except gossip.ClusterClosed:
            return
        with lease:
            n += 1
            say(f"worker {me}: holding {JOB} (token {lease.token}), run {n}")
            pause = STATE.pop("pause", False)
            if stop.wait(2 * TTL if pause else WORK):
                return
            if not lease.valid():
                say(f"worker {me}: my lease ended while I was paused; writing anyway, to show the fence")
            verdict = write_to_store(cluster, f"result {n} of {me}", lease.token)
            say(f"worker {me}: write with token {lease.token}: {verdict}")
        stop.wait(0.3)                  # give the others a turn


def setup(cluster: Cluster) -> None:
    """Serve the fake store and start the lock service (with its own leader election)."""
    store = FakeStore()
    cluster.handle_func_with_reply(STORE_MSG, store.write)
    STATE["locks"] = LockService(cluster, leader_config=LeaderConfig(
        check_interval=0.5, leader_timeout=1.5, heartbeat_msg_type=66))


def joined(cluster: Cluster) -> None:
    """Start the worker thread."""
    stop = threading.Event()
    thread = threading.Thread(target=worker, args=(cluster, STATE["locks"], stop), name="example-worker",
                              daemon=True)
    STATE["stop"], STATE["thread"] = stop, thread
    thread.start()


def stopping(cluster: Cluster) -> None:
    """Stop the worker, then the lock service (a leader hands over at once)."""
    stop = STATE.get("stop")
    if stop is not None:
        stop.set()
        STATE["thread"].join(5.0)
    STATE["locks"].close()


def cmd_pause(cluster: Cluster, args: list[str]) -> None:
    """Console: ``pause``."""
    STATE["pause"] = True
    print(f"the next job stalls {2 * TTL:g}s before writing (its lease is {TTL:g}s)")


def cmd_holder(cluster: Cluster, args: list[str]) -> None:
    """Console: ``holder``."""
    holder = STATE["locks"].holder(JOB)
    print("nobody holds it" if holder is None else
          f"{holder.node_id.short} holds {JOB} (token {holder.token}, {holder.remaining:.1f}s left)")


EXAMPLE = Example(
    name="locks",
    description="gossip locks example: one job at a time, and a store that checks fencing tokens",
    setup=setup,
    joined=joined,
    stopping=stopping,
    commands={
        "pause": Command("pause", "stall the next job past its lease (the store refuses its write)", cmd_pause),
        "holder": Command("holder", "show who holds the job", cmd_holder),
    },
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
