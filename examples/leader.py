"""leader: elect one leader among the nodes of the data centre "development".

Each node sets ``dc=development`` and runs a :class:`gossip.leader.LeaderElection` whose
criteria are ``{"dc": "development"}``: only those nodes may lead, and a majority of the
known ones (alive, suspect, or dead but not yet forgotten) must acknowledge the leader. The
election starts before the cluster does, as in the Go example. Every gossip interval (5 s) each
node says who leads. Run three nodes::

    python examples/leader.py --port 8000 --peers 127.0.0.1:8000
    python examples/leader.py --port 8001 --peers 127.0.0.1:8000
    python examples/leader.py --port 8002 --peers 127.0.0.1:8000

then stop the leader (Ctrl-C hands over at once; ``kill -9`` makes the others wait for the
failure detector, then ``leader_timeout``). Type ``leader`` on any node to see its view.
Unattended::

    python examples/leader.py --port 0 --no-prompt --run-for 5
"""

from __future__ import annotations

import sys

from _common import Command, Example, run

from gossip import Cluster, NodeID
from gossip.leader import BECAME_LEADER, ELECTED, LOST, STEPPED_DOWN, LeaderConfig, LeaderElection, LeaderEvent

CRITERIA = {"dc": "development"}
ELECTION: dict[str, LeaderElection] = {}


def on_event(event: LeaderEvent, node_id: NodeID) -> None:
    """Leader event handler: runs on the election's events thread, in order."""
    messages = {
        ELECTED: f"Leader elected: {node_id}",
        LOST: f"Leader lost: {node_id}",
        BECAME_LEADER: "I became the leader",
        STEPPED_DOWN: "I stepped down",
    }
    print(messages[event], flush=True)


def report() -> None:
    """Gossip handler (every gossip interval): say who leads."""
    election = ELECTION["e"]
    if election.is_leader():
        print("I am the leader", flush=True)
    elif election.has_leader():
        print(f"The leader is {election.leader_id()}", flush=True)
    else:
        print("There is no leader", flush=True)


def setup(cluster: Cluster) -> None:
    """Set the metadata, create the election with its handlers and start it."""
    cluster.local_metadata().set_string("dc", "development")
    election = LeaderElection(cluster, LeaderConfig(metadata_criteria=CRITERIA))
    for event in (ELECTED, LOST, BECAME_LEADER, STEPPED_DOWN):
        election.handle_event_func(event, on_event)
    cluster.handle_gossip_func(report)
    ELECTION["e"] = election
    election.start()


def stopping(cluster: Cluster) -> None:
    """Stop the election before the cluster (a leader hands over at once)."""
    ELECTION["e"].stop()


def cmd_leader(cluster: Cluster, args: list[str]) -> None:
    """Console: ``leader``."""
    election = ELECTION["e"]
    node = election.leader()
    who = "none" if node is None else f"{node.id} ({node.address})"
    print(f"leader: {who}; me: {'leader' if election.is_leader() else 'follower'}; "
          f"term {election.term}", flush=True)


EXAMPLE = Example(
    name="leader",
    description="gossip leader election example: one leader among the dc=development nodes",
    setup=setup,
    stopping=stopping,
    commands={"leader": Command("leader", "show the current leader and term", cmd_leader)},
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
