"""The simulator's network model: partitions, uniform and bursty loss, latency, reordering."""

from __future__ import annotations

import random

from gossip.sim.network import LinkModel, SimNetwork


def test_burst_loss_drops_best_effort_packets_in_runs_per_receiver() -> None:
    net = SimNetwork(LinkModel(burst_loss=1.0, burst_good=1.0, burst_bad=1.0, jitter=0.0),
                     random.Random(7))
    times = [i * 0.01 for i in range(10_000)]            # 100 s, about 50 bad periods
    to_1 = [net.delay(0, 1, t, reliable=False) is None for t in times]
    to_2 = [net.delay(0, 2, t, reliable=False) is None for t in times]
    for lost in (to_1, to_2):
        share = sum(lost) / len(lost)
        assert 0.3 < share < 0.7                         # half the time in a bad period
        runs = sum(1 for a, b in zip(lost, lost[1:]) if a != b)
        assert 20 < runs < 500                           # in long runs, not packet by packet
    assert to_1 != to_2                                  # each receiver has its own chain
    assert net.dropped == sum(to_1) + sum(to_2)
    # Reliable packets are never lost, bad period or not, and take one more round trip.
    assert all(net.delay(0, 1, t, reliable=True) == 3 * 0.0005 for t in times[:500])


def test_uniform_loss_spares_reliable_packets() -> None:
    net = SimNetwork(LinkModel(loss=1.0, jitter=0.0), random.Random(1))
    assert net.delay(0, 1, 0.0, reliable=False) is None
    assert net.delay(0, 1, 0.0, reliable=True) == 3 * 0.0005
    assert net.dropped == 1


def test_latency_jitter_and_reordering_bounds() -> None:
    model = LinkModel(base_latency=0.001, jitter=0.0, reorder=1.0, reorder_delay=0.01)
    net = SimNetwork(model, random.Random(3))
    delays = [net.delay(0, 1, 0.0, reliable=False) for _ in range(200)]
    assert all(d is not None and 0.001 <= d <= 0.011 for d in delays)
    assert len(set(delays)) > 100                        # reordered: every packet its own delay
    plain = SimNetwork(LinkModel(base_latency=0.001, jitter=0.0), random.Random(3))
    assert {plain.delay(0, 1, 0.0, reliable=False) for _ in range(20)} == {0.001}


def test_a_partition_drops_packets_across_it_until_healed() -> None:
    net = SimNetwork(LinkModel(jitter=0.0), random.Random(5))
    net.partition([[0, 1], [2]])
    assert net.delay(0, 1, 0.0, reliable=False) is not None
    assert net.delay(0, 2, 0.0, reliable=True) is None
    assert net.delay(2, 1, 0.0, reliable=False) is None
    assert net.dropped_partition == 2 and net.dropped == 0
    net.heal()
    assert net.delay(0, 2, 0.0, reliable=True) is not None
