"""ReplicatedMap on real clusters (in-memory network, the gossip.testing fixtures). The merge
rules are proved on a virtual clock in tests/sim/test_replicated.py; here waits are bounded
polls."""

from __future__ import annotations

import threading

import pytest

from gossip import Cluster
from gossip.errors import ClusterClosed
from gossip.replicated import Changed, MapConfig, MapFull, ReplicatedMap
from gossip.testing import ClusterFactory, GossipNetwork, wait_until

FAST = MapConfig(sync_interval=0.2)


def maps(clusters: list[Cluster], name: str = "config", config: MapConfig = FAST) -> list[ReplicatedMap]:
    return [ReplicatedMap(c, name, config) for c in clusters]


def test_writes_reach_every_node_and_handlers_see_them_in_order(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(3)
    a, b, c = maps(clusters)
    seen: list[Changed] = []
    threads: set[str] = set()

    def on_change(ch: Changed) -> None:
        threads.add(threading.current_thread().name)
        seen.append(ch)

    try:
        c.on_change(on_change)
        a.set("colour", "blue")
        b.set("limits", {"upload_mb": 25, "zones": ["a", "b"]})
        a.set("colour", "green")
        assert a.delete("colour") and not a.delete("never-set")
        want = {"limits": {"upload_mb": 25, "zones": ["a", "b"]}}
        wait_until(lambda: all(m.snapshot() == want for m in (a, b, c)), 10.0, "every map equal")
        assert c.get("limits") == want["limits"] and c.get("colour", "none") == "none"
        assert "limits" in c and "colour" not in c and len(c) == 1 and c.keys() == ["limits"]
        assert c.items() == [("limits", want["limits"])] and list(c) == ["limits"]
        wait_until(lambda: any(ch.key == "colour" and ch.deleted for ch in seen), 10.0, "the delete seen")
        colour = [ch for ch in seen if ch.key == "colour"]
        assert colour[-1].deleted and colour[-1].writer == clusters[0].local_node().id
        assert not any(ch.local for ch in seen)
        assert threads == {f"gossip-{clusters[2].local_node().id.short}-map"}
    finally:
        for m in (a, b, c):
            m.close()


def test_a_partitioned_cluster_converges_when_it_heals(gossip_network: GossipNetwork,
                                                       gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    ms = maps(clusters)
    try:
        gossip_network.partition(clusters[:2], clusters[2:])
        for i, m in enumerate(ms):
            m.set("shared", f"written by {i}")
            m.set(f"own-{i}", i)
        ms[3].delete("own-3")
        gossip_network.heal()
        wait_until(lambda: all(m.snapshot() == ms[0].snapshot() for m in ms), 20.0, "every map equal")
        snap = ms[0].snapshot()
        assert set(snap) == {"shared", "own-0", "own-1", "own-2"}
        assert snap["shared"].startswith("written by")
    finally:
        for m in ms:
            m.close()


def test_a_late_joiner_receives_the_whole_map(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(2)
    ms = maps(clusters, config=MapConfig(sync_interval=30.0))    # no periodic round: the join syncs
    try:
        for k in range(300):
            ms[k % 2].set(f"key-{k}", k)
        wait_until(lambda: len(ms[0]) == len(ms[1]) == 300, 10.0, "both hold 300 keys")
        (late,) = gossip_cluster_factory(1)
        joined = ReplicatedMap(late, "config", MapConfig(sync_interval=30.0))
        ms.append(joined)
        wait_until(lambda: joined.snapshot() == ms[0].snapshot(), 10.0, "the late joiner holds it all")
    finally:
        for m in ms:
            m.close()


def test_bounds_names_and_closing(gossip_cluster_factory: ClusterFactory) -> None:
    a, b = gossip_cluster_factory(2)
    small = MapConfig(sync_interval=0.2, max_entries=3, max_value_size=100, max_key_length=8)
    m = ReplicatedMap(a, "small", small)
    other = ReplicatedMap(a, "other", small)
    try:
        with pytest.raises(ValueError):
            ReplicatedMap(a, "small", small)               # one map per name per cluster
        with pytest.raises(ValueError):
            m.set("k", "x" * 200)
        with pytest.raises(ValueError):
            m.set("much-too-long", 1)
        with pytest.raises(ValueError):
            m.set("k", object())
        for k in ("a", "b", "c"):
            m.set(k, 1)
        with pytest.raises(MapFull):
            m.set("d", 1)
        assert m.stats()["refused_full_local"] == 1
        b.send_to(a.local_node(), small.msg_type, {"m": "small", "k": "up", "es": [["x", 1, -5, "a" * 32, False]]})
        b.send_to(a.local_node(), small.msg_type, {"m": "nobody", "k": "dg", "bs": []})
        wait_until(lambda: m.stats().get("messages_malformed") == 1 and m.stats().get("messages_unknown_map") == 1,
                   10.0, "the refusals counted")
    finally:
        m.close()
        other.close()
    with pytest.raises(ClusterClosed):
        m.set("a", 2)
    assert m.get("a") == 1                                  # still readable
    ReplicatedMap(a, "small", small).close()                # the name is free again
