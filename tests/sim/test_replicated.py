"""Replicated maps in the simulator: convergence after a partition heals, one winner for
concurrent writes, a late joiner gets the whole map, deletes do not come back; with loss,
reordering and skewed clocks, on a virtual clock."""

from __future__ import annotations

import pytest

from gossip.config import Config
from gossip.replicated.core import MapConfig
from gossip.sim.network import LinkModel
from gossip.sim.replicated import MapSimulation

MAP = MapConfig(sync_interval=1.0, tombstone_ttl=600.0)


def cluster(n: int, seed: int, loss: float = 0.0, skew: float = 0.5, reorder: float = 0.0,
            config: MapConfig = MAP) -> MapSimulation:
    sim = MapSimulation(Config.lan(), seed, LinkModel(loss=loss, reorder=reorder), config, clock_skew=skew)
    for _ in range(n):
        sim.add_node()
    sim.bootstrap(list(range(n)))
    for i in range(n):
        sim.start_map(i)
    return sim


def settle(sim: MapSimulation, limit: float = 60.0) -> float:
    """Run until every map is equal (or ``limit`` seconds); return how long it took."""
    start = sim.now
    sim.run_until(sim.now + limit, stop=sim.converged)
    assert sim.converged(), f"maps still differ {limit}s later (seed {sim.seed})"
    return sim.now - start


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_map_is_equal_after_a_partition_heals(seed: int) -> None:
    sim = cluster(7, seed, loss=0.1, reorder=0.1)
    sim.run_until(2.0)
    left, right = [0, 1, 2], [3, 4, 5, 6]
    sim.net.partition([left, right])
    rng = sim.map_rng
    for step in range(200):                         # both sides write, often the same keys
        sim.run_until(sim.now + 0.1)
        i = rng.randrange(7)
        key = f"k{rng.randrange(30)}"
        if rng.random() < 0.2:
            sim.delete(i, key)
        else:
            sim.write(i, key, {"by": i, "step": step})
    sim.run_until(sim.now + 5.0)
    assert not sim.converged()                       # the sides disagree while split
    sim.net.heal()
    settle(sim)
    for i in range(7):
        assert sim.maps[i].snapshot() == sim.expected(), i


def test_concurrent_writes_to_one_key_resolve_the_same_everywhere() -> None:
    for seed in range(1, 6):
        sim = cluster(5, seed, loss=0.2, skew=2.0)
        sim.run_until(1.0)
        entries = [sim.write(i, "leader-hint", f"node-{i}") for i in range(5)]   # the same instant
        settle(sim)
        winner = max(entries, key=lambda e: e.version)
        assert all(m.get("leader-hint") == (True, winner.value) for m in sim.maps.values())


def test_a_late_joiner_receives_the_whole_map() -> None:
    sim = cluster(4, seed=7, loss=0.05)
    for k in range(500):
        sim.write(k % 4, f"key-{k}", "x" * (k % 50))
    for k in range(0, 500, 7):
        sim.delete(k % 4, f"key-{k}")
    settle(sim)
    late = sim.add_node()
    sim.join(late.index, [0])
    sim.run_until(sim.now + 5.0, stop=lambda: any(m.state is m.state.ALIVE for m in late.core.members.values()))
    sim.start_map(late.index)
    took = settle(sim, 30.0)
    assert sim.maps[late.index].snapshot() == sim.expected() and len(sim.expected()) == 500 - 72
    assert took < 5.0                                 # one sync with a peer, not a broadcast per key


def test_deletes_do_not_come_back() -> None:
    sim = cluster(5, seed=11, loss=0.1)
    sim.write(0, "gone", 1)
    settle(sim)
    sim.net.partition([[4], [0, 1, 2, 3]])           # 4 keeps the old value meanwhile
    sim.delete(1, "gone")
    sim.run_until(sim.now + 10.0)
    assert sim.maps[4].get("gone") == (True, 1)
    sim.net.heal()
    settle(sim)
    assert all(m.get("gone") == (False, None) for m in sim.maps.values())
    # a write older than the delete, arriving late, loses too
    old = sim.maps[4].entry("gone")
    assert old is not None and old.deleted
    stale = type(old)("gone", "stale", old.stamp - 1000, "f" * 32, False)
    for m in sim.maps.values():
        m.merge([stale])
    assert all(m.get("gone") == (False, None) for m in sim.maps.values())


def test_tombstones_are_collected_after_their_ttl_and_old_ones_are_not_taken_back() -> None:
    cfg = MapConfig(sync_interval=1.0, tombstone_ttl=20.0)
    sim = cluster(3, seed=5, config=cfg, skew=0.0)
    sim.write(0, "k", 1)
    settle(sim)
    sim.delete(0, "k")
    settle(sim)
    assert all(m.size == 1 for m in sim.maps.values())           # the tombstone
    sim.run_until(sim.now + 25.0)
    assert all(m.size == 0 for m in sim.maps.values())           # collected everywhere
    tomb = sim.writes["k"]
    for m in sim.maps.values():
        m.merge([tomb])                                           # too old: not stored again
    assert all(m.size == 0 for m in sim.maps.values())


def test_the_map_is_bounded_and_refusals_are_counted() -> None:
    cfg = MapConfig(sync_interval=1.0, max_entries=50)
    sim = cluster(2, seed=3, config=cfg)
    core = sim.maps[0]
    for k in range(50):
        sim.write(0, f"k{k}", k)
    from gossip.replicated.core import MapFull
    with pytest.raises(MapFull):
        sim.write(0, "one-more", 1)
    settle(sim)
    assert sim.maps[1].size == 50
    extra = [type(core.entry("k0"))(f"x{k}", k, core.entry("k0").stamp + k + 1, "a" * 32, False)  # type: ignore[union-attr, misc]
             for k in range(10)]
    assert sim.maps[1].merge(extra) == 0
    assert sim.maps[1].stats["refused_full"] == 10
    future = type(core.entry("k0"))("k1", "from the future", core.entry("k0").stamp + (3600 * 10**6 << 10),  # type: ignore[union-attr, misc]
                                    "a" * 32, False)
    assert sim.maps[1].merge([future]) == 0 and sim.maps[1].stats["refused_future_stamp"] == 1


def test_a_run_replays_from_its_seed() -> None:
    def run() -> tuple[str, list[tuple[str, object]]]:
        sim = cluster(5, seed=9, loss=0.1)
        for k in range(50):
            sim.run_until(sim.now + 0.05)
            sim.write(k % 5, f"k{k % 7}", k)
        settle(sim)
        return sim.trace_hash(), sim.maps[0].items()

    assert run() == run()
