"""Clusters (in-memory network, real engine threads) that forget each other during a long
partition merge again once it heals: the engine carries out the core's reconnect tries.

Waits are generous bounded polls; nothing asserts on speed (the timing is proved in the
simulator: tests/sim/test_leader_split.py).
"""

from __future__ import annotations

from gossip.testing import ClusterFactory, GossipNetwork, wait_until


def test_two_sides_that_forgot_each_other_merge_after_the_heal(
        gossip_cluster_factory: ClusterFactory, gossip_network: GossipNetwork) -> None:
    clusters = gossip_cluster_factory(4, dead_node_retention_period=0.5, reconnect_interval=0.5,
                                      recovery_attempt_interval=0.5)
    left, right = clusters[:2], clusters[2:]
    ids = {c: c.local_node().id for c in clusters}
    gossip_network.partition(left, right)
    wait_until(lambda: all(c.get_node(ids[o]) is None for side, other in ((left, right), (right, left))
                           for c in side for o in other), 30.0, "each side to forget the other")
    gossip_network.heal()
    wait_until(lambda: all(c.num_alive_nodes() == 4 for c in clusters), 30.0, "one cluster of 4 again")
    assert sum(c.stats().get("core.reconnect_attempts", 0) for c in clusters) >= 1
