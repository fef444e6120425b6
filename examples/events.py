"""events: print node state changes and metadata changes as they happen.

Sets ``dc=development`` and ``intValue=42`` before joining, so they travel inside the join
message. Run two or more nodes::

    python examples/events.py --port 8000 --peers 127.0.0.1:8000
    python examples/events.py --port 8001 --peers 127.0.0.1:8000

and watch lines such as ``Node 0190... state changed from unknown to alive``; stop one node
with Ctrl-C (a graceful leave: "alive to leaving") or kill it with ``kill -9`` (a crash:
"alive to suspect", then "suspect to dead"). ``set-meta`` on one node prints a metadata change
on every node. Unattended::

    python examples/events.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys

from _common import Example, run

from gossip import Cluster, Node, NodeState


def on_state_change(node: Node, previous: NodeState) -> None:
    """State handler: runs on the cluster's event thread, in order, never concurrently."""
    print(f"Node {node.id} state changed from {previous} to {node.state}", flush=True)


def on_metadata_change(node: Node) -> None:
    """Metadata handler: runs on the cluster's event thread."""
    meta = node.metadata.get_all_as_string()
    print(f"Node {node.id} metadata changed: {dict(sorted(meta.items()))}", flush=True)


def setup(cluster: Cluster) -> None:
    """Register the event handlers and set the metadata that travels inside the join."""
    cluster.handle_node_state_change_func(on_state_change)
    cluster.handle_node_metadata_change_func(on_metadata_change)
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
