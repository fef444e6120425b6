"""ReplicatedMap on real clusters (in-memory network, the gossip.testing fixtures). The merge
rules are proved on a virtual clock in tests/sim/test_replicated.py; here waits are bounded
polls."""

from __future__ import annotations

import threading
import types
from collections.abc import Sequence

import pytest

from gossip import Cluster, NodeID
from gossip.errors import ClusterClosed
from gossip.replicated import Changed, MapConfig, MapFull, ReplicatedMap
from gossip.replicated import host as map_host
from gossip.replicated.core import MapCore
from gossip.testing import ClusterFactory, GossipNetwork, scaled, wait_until

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


def test_a_new_map_syncs_at_once_even_if_its_thread_is_already_waiting(
        gossip_cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The map's thread may reach its wait (until the first periodic round, up to a whole
    # sync_interval away) before the constructor goes on: the first round must not wait for it.
    (a,) = gossip_cluster_factory(1)
    (b,) = gossip_cluster_factory(1, join=False, converge=False)
    first = ReplicatedMap(b, "config", MapConfig(sync_interval=3600.0))
    first.set("colour", "blue")
    b.join([a.address])
    gossip_cluster_factory.wait_converged()
    # b syncs with a as a comes alive, before a has the map: a drops it, and only a's own
    # first round can bring it the key.
    wait_until(lambda: a.stats().get("user.unhandled", 0) >= 1, 10.0, "b's digest dropped by a")
    settled = threading.Event()      # the new thread waits for its deadline, or has run a round
    real_deadline, real_tick = MapCore.next_deadline, MapCore.tick

    def next_deadline(core: MapCore) -> float:
        settled.set()
        return real_deadline(core)

    def tick(core: MapCore, now: float, peers: Sequence[NodeID]) -> None:
        real_tick(core, now, peers)
        settled.set()

    class Thread(threading.Thread):
        def start(self) -> None:
            super().start()
            settled.wait(scaled(5.0))

    monkeypatch.setattr(MapCore, "next_deadline", next_deadline)
    monkeypatch.setattr(MapCore, "tick", tick)
    monkeypatch.setattr(map_host, "threading", types.SimpleNamespace(
        Lock=threading.Lock, Condition=threading.Condition, Thread=Thread))
    late = ReplicatedMap(a, "config", MapConfig(sync_interval=3600.0))
    try:
        assert settled.is_set()
        wait_until(lambda: late.get("colour") == "blue", 10.0, "the new map fetched the key")
        assert late.stats().get("syncs_started", 0) >= 1
    finally:
        late.close()
        first.close()


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
