"""cluster.owners / cluster.owner on real clusters (in-memory network): every node agrees, a
group narrows the candidates, metadata weights count, and a leaver's keys move to the others."""

from __future__ import annotations

from gossip import Cluster, NodeGroup, NodeID
from gossip.testing import ClusterFactory, wait_until

KEYS = [f"job-{i}" for i in range(300)]


def table(c: Cluster, n: int = 2, group: NodeGroup | None = None) -> dict[str, list[NodeID]]:
    return {k: [x.id for x in c.owners(k, n, group)] for k in KEYS}


def test_every_node_computes_the_same_owners(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    tables = [table(c) for c in clusters]
    assert all(t == tables[0] for t in tables)
    owner = clusters[2].owner("job-7")
    assert owner is not None and owner.id == tables[0]["job-7"][0]
    ids = {c.local_node().id for c in clusters}
    assert {nid for owners in tables[0].values() for nid in owners} == ids


def test_only_the_keys_of_a_member_that_leaves_move(gossip_cluster_factory: ClusterFactory) -> None:
    a, b, c, d = gossip_cluster_factory(4)
    before = {k: a.owner(k) for k in KEYS}
    gone = d.local_node().id
    d.stop()
    wait_until(lambda: all(x.num_alive_nodes() == 3 for x in (a, b, c)), what="d gone everywhere")
    for x in (a, b, c):
        for k in KEYS:
            now = x.owner(k)
            was = before[k]
            assert now is not None and was is not None
            if was.id != gone:
                assert now.id == was.id, k
            else:
                assert now.id != gone


def test_a_group_narrows_and_weights_skew(gossip_cluster_factory: ClusterFactory) -> None:
    a, b, c = gossip_cluster_factory(3)
    b.local_metadata().set_string("role", "worker")
    c.local_metadata().set_string("role", "worker").set_int("weight", 4)
    with NodeGroup(a, {"role": "worker"}) as workers:
        wait_until(lambda: workers.count() == 2, what="two workers")
        wait_until(lambda: a.get_node(c.local_node().id).metadata.get_int("weight") == 4,  # type: ignore[union-attr]
                   what="c's weight seen by a")
        owners = [a.owner(k, workers) for k in KEYS]
        assert {o.id for o in owners if o is not None} == {b.local_node().id, c.local_node().id}
        heavy = sum(1 for o in owners if o is not None and o.id == c.local_node().id)
        assert 0.65 < heavy / len(KEYS) < 0.95     # weight 4 against 1: 80 % (over 6 sigma of slack)
        assert a.owners("x", 5, workers)[0].id in {b.local_node().id, c.local_node().id}
        assert len(a.owners("x", 5, workers)) == 2
