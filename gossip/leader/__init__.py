"""Leader election over a gossip cluster: a lease from a quorum of the largest membership confirmed.

::

    from gossip.leader import BECAME_LEADER, LeaderConfig, LeaderElection

    election = LeaderElection(cluster, LeaderConfig(metadata_criteria={"role": "scheduler"}))
    election.handle_event_func(BECAME_LEADER, lambda event, node_id: print("leading"))
    election.start()
    ...
    election.stop()

:class:`LeaderElection` is the threaded host (it uses only the public :class:`gossip.Cluster`
API); :class:`Election` in :mod:`gossip.leader.election` is the pure state machine it drives,
which the simulator drives too. The rules (the quorum's base, leases and promises, terms that
only grow, who stands and when, what the lease assumes of the clocks) are written at the top of
:mod:`gossip.leader.election`. The election is safe only on an encrypted cluster: without a key,
any host that can reach a node can make itself leader (:meth:`LeaderElection.start` warns).
"""

from __future__ import annotations

from .election import (
    BECAME_LEADER,
    ELECTED,
    LOST,
    STEPPED_DOWN,
    Election,
    Heartbeat,
    LeaderConfig,
    LeaderEvent,
    Notify,
    Peer,
    quorum,
)
from .host import LeaderElection, LeaderEventHandler

__all__ = [
    "LeaderElection",
    "LeaderConfig",
    "LeaderEvent",
    "LeaderEventHandler",
    "ELECTED",
    "LOST",
    "BECAME_LEADER",
    "STEPPED_DOWN",
    "Election",
    "Peer",
    "Heartbeat",
    "Notify",
    "quorum",
]
