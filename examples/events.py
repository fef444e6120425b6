"""events: print node state changes and metadata changes as they happen.

Sets ``dc=development`` and ``intValue=42`` before joining, so they travel inside the join
message. Run two or more nodes::

    python examples/events.py --port 8000 --peers 127.0.0.1:8000
    python examples/events.py --port 8001 --peers 127.0.0.1:8000

and watch lines such as ``Node 0190... state changed from unknown to alive``; stop one node
with Ctrl-C (a graceful leave: "alive to left") or kill it with ``kill -9`` (a crash:
"alive to suspect", then "suspect to dead"). ``set-meta`` on one node prints a metadata change
on every node. A member that keeps changing state prints a "flapping" line, a split of the
cluster a "partition" line and its end a "healed" one. Unattended::

    python examples/events.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys

from _common import Example, run, say

from gossip import Cluster, MemberFlapping, Node, NodeState, PartitionHealed, PartitionSuspected


def on_state_change(node: Node, previous: NodeState) -> None:
    """State handler: runs on the cluster's event thread, in order, never concurrently."""
    say(f"Node {node.id} state changed from {previous} to {node.state}")


def on_metadata_change(node: Node) -> None:
    """Metadata handler: runs on the cluster's event thread."""
    meta = node.metadata.get_all_as_string()
    say(f"Node {node.id} metadata changed: {dict(sorted(meta.items()))}")


def on_cluster_event(event: MemberFlapping | PartitionSuspected | PartitionHealed) -> None:
    """Cluster event handler: runs on the event thread too, in order with the state changes."""
    if isinstance(event, MemberFlapping):
        say(f"Node {event.node} is flapping: {event.score} state changes in {event.window:g}s")
    elif isinstance(event, PartitionSuspected):
        say(f"Partition suspected: {len(event.members)} members lost ({event.share:.0%})")
    else:
        say(f"Partition healed after {event.duration:.1f}s")


def setup(cluster: Cluster) -> None:
    """Register the event handlers and set the metadata that travels inside the join."""
    cluster.handle_node_state_change_func(on_state_change)
    cluster.handle_node_metadata_change_func(on_metadata_change)
    cluster.handle_cluster_event_func(on_cluster_event)
    cluster.local_metadata().set_string("dc", "development").set_int("intValue", 42)


EXAMPLE = Example(
    name="events",
    description="gossip events example: prints node state and metadata changes",
    setup=setup,
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
