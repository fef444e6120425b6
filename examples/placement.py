"""placement: spread keys over the workers by rendezvous hashing; move them when one leaves.

Every node is a worker (metadata ``role=worker``). Twelve jobs, ``job-0`` to ``job-11``, each
belong to one worker: :meth:`gossip.Cluster.owner` picks it among the alive workers, the same
on every node, with no coordination. When a worker joins or leaves, each node prints which jobs
moved: only the jobs of a worker that left move (to the next worker in line), and a worker that
joins takes about its share from the others. ``weight <n>`` gives this worker ``n`` times the
share of the others (its metadata ``weight``). Run three nodes::

    python examples/placement.py --port 8000 --peers 127.0.0.1:8000
    python examples/placement.py --port 8001 --peers 127.0.0.1:8000
    python examples/placement.py --port 8002 --peers 127.0.0.1:8000

then stop one and watch its jobs move. Type ``plan`` to see every job's owner, ``owners <key>
[n]`` for any key. Unattended::

    python examples/placement.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys
import threading

from _common import Command, Example, run, say

from gossip import Cluster, Node, NodeGroup, NodeID

JOBS = [f"job-{i}" for i in range(12)]
STATE: dict[str, object] = {}
_lock = threading.Lock()


def workers(cluster: Cluster) -> NodeGroup:
    group = STATE["workers"]
    assert isinstance(group, NodeGroup)
    return group


def plan(cluster: Cluster) -> dict[str, NodeID | None]:
    """Every job's owner among the alive workers."""
    group = workers(cluster)
    return {job: (owner.id if (owner := cluster.owner(job, group)) is not None else None) for job in JOBS}


def replan(cluster: Cluster) -> None:
    """Print the jobs whose owner changed since the last plan, and this node's share."""
    with _lock:
        new = plan(cluster)
        old = STATE.get("plan", {})
        STATE["plan"] = new
    assert isinstance(old, dict)
    if old == new:
        return
    moved = 0
    for job in JOBS:
        before, after = old.get(job), new[job]
        if before is not None and before != after:
            moved += 1
            say(f"{job} moved: {before.short} -> {after.short if after else 'nobody'}")
    me = cluster.local_node().id
    mine = [job for job in JOBS if new[job] == me]
    say(f"{moved} of {len(JOBS)} jobs moved; this node owns {len(mine)}: {', '.join(mine) or 'none'}")


def setup(cluster: Cluster) -> None:
    """Be a worker; follow the workers and replan whenever they change."""
    cluster.local_metadata().set_string("role", "worker")
    STATE["workers"] = NodeGroup(cluster, {"role": "worker"},
                                 on_node_added=lambda node: replan(cluster),
                                 on_node_removed=lambda node: replan(cluster))
    cluster.handle_node_metadata_change_func(lambda node: replan(cluster))


def joined(cluster: Cluster) -> None:
    """Show the first plan."""
    replan(cluster)


def stopping(cluster: Cluster) -> None:
    """Stop following the workers."""
    workers(cluster).close()


def cmd_plan(cluster: Cluster, args: list[str]) -> None:
    """Console: ``plan``."""
    for job, owner in plan(cluster).items():
        print(f"{job:8} {owner.short if owner else 'nobody'}")


def cmd_owners(cluster: Cluster, args: list[str]) -> None:
    """Console: ``owners <key> [n]``."""
    n = int(args[1]) if len(args) > 1 and args[1].isdigit() else 1
    nodes: list[Node] = cluster.owners(args[0], n, workers(cluster))
    print(f"{args[0]}: {', '.join(f'{x.id.short}@{x.address}' for x in nodes) or 'no worker'}")


def cmd_weight(cluster: Cluster, args: list[str]) -> None:
    """Console: ``weight <n>``."""
    if not args[0].isdigit():
        print("usage: weight <n> (a whole number; 0 takes no jobs)")
        return
    cluster.local_metadata().set_int("weight", int(args[0]))
    print(f"weight {args[0]} set; it propagates to the cluster")


EXAMPLE = Example(
    name="placement",
    description="gossip placement example: jobs spread over the workers by rendezvous hashing",
    setup=setup,
    joined=joined,
    stopping=stopping,
    commands={
        "plan": Command("plan", "show the owner of every job", cmd_plan),
        "owners": Command("owners <key> [n]", "show the n owners of any key", cmd_owners, 1),
        "weight": Command("weight <n>", "take n times the share of a weight-1 worker", cmd_weight, 1),
    },
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
