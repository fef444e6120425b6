"""Awareness score, the transmit-limited broadcast queue and the messaging formulas."""

from __future__ import annotations

import pytest

from gossip.protocol.awareness import Awareness
from gossip.protocol.broadcasts import BroadcastQueue, retransmit_limit
from gossip.protocol.messaging import MessageHistory, calc_fan_out, calc_payload_size, clamp_ttl, max_ttl


def test_awareness_clamps_and_scales() -> None:
    a = Awareness(8)
    assert a.scale(1.0) == 1.0
    assert a.apply_delta(-1) == 0
    assert a.apply_delta(3) == 3
    assert a.scale(0.5) == pytest.approx(2.0)
    assert a.apply_delta(100) == 7
    assert a.scale(1.0) == 8.0
    assert a.apply_delta(-2) == 5


@pytest.mark.parametrize("n, limit", [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12), (999, 12), (1000, 16)])
def test_retransmit_limit(n: int, limit: int) -> None:
    assert retransmit_limit(4, n) == limit


def test_queue_sends_fewest_transmitted_and_newest_first() -> None:
    q = BroadcastQueue()
    q.queue("a", "A", 10)
    q.queue("b", "B", 10)
    assert q.get(budget=11, limit=10) == ["B"]       # newest first
    assert q.get(budget=11, limit=10) == ["A"]       # then the one sent fewer times
    q.queue("c", "C", 10)
    assert q.get(budget=11, limit=10) == ["C"]       # never sent: ahead of both
    assert sorted(q.get(budget=100, limit=10)) == ["A", "B", "C"]


def test_queue_respects_budget_and_limit() -> None:
    q = BroadcastQueue()
    for i in range(10):
        q.queue(i, i, 99)
    assert len(q.get(budget=300, limit=2)) == 3
    q2 = BroadcastQueue()
    q2.queue("x", "X", 5)
    assert q2.get(100, limit=2) == ["X"]
    assert q2.get(100, limit=2) == ["X"]
    assert q2.get(100, limit=2) == []                # sent twice: gone
    assert len(q2) == 0


def test_newer_update_invalidates_older() -> None:
    q = BroadcastQueue()
    q.queue("n1", "alive-1", 10)
    q.get(100, limit=5)
    q.queue("n1", "suspect-1", 10)
    assert q.items() == [("suspect-1", 0)]
    q.invalidate("n1")
    assert len(q) == 0


def test_queue_is_bounded_dropping_most_sent_first() -> None:
    q = BroadcastQueue(max_size=16)
    for i in range(16):
        q.queue(i, i, 1)
    q.get(budget=2 * 4, limit=100)  # 4 items sent once
    for i in range(16, 20):
        q.queue(i, i, 1)
    assert len(q) == 16
    assert q.dropped == 4
    assert all(t == 0 for _, t in q.items())         # the sent ones went first


@pytest.mark.parametrize("n, fan_out", [(0, 0), (1, 1), (2, 1), (3, 2), (5, 3), (9, 4), (1024, 10), (5000, 10)])
def test_calc_fan_out(n: int, fan_out: int) -> None:
    assert calc_fan_out(n) == fan_out


@pytest.mark.parametrize("n, ttl", [(0, 0), (1, 2), (2, 3), (4, 4), (8, 5), (32, 7), (64, 8), (10_000, 8)])
def test_max_ttl(n: int, ttl: int) -> None:
    assert max_ttl(n) == ttl


@pytest.mark.parametrize("t, size", [(0, 0), (1, 1), (2, 2), (5, 4), (100, 8)])
def test_calc_payload_size(t: int, size: int) -> None:
    assert calc_payload_size(t) == size


def test_message_history_suppresses_duplicates_until_gc() -> None:
    h = MessageHistory(max_age=30.0, shards=4)
    assert not h.seen(0.0, b"a" * 16, 1)
    assert h.seen(1.0, b"a" * 16, 1)
    assert not h.seen(1.0, b"b" * 16, 1)
    assert h.gc(20.0) == 0
    assert h.gc(30.5) == 1                           # the first pair aged out
    assert not h.contains(b"a" * 16, 1)
    assert h.contains(b"b" * 16, 1)
    with pytest.raises(ValueError):
        MessageHistory(1.0, shards=3)


@pytest.mark.parametrize("ttl, n, multiplier, expected", [
    (254, 32, 1.0, 7), (254, 10_000, 1.0, 8), (3, 1000, 1.0, 3), (0, 5, 1.0, 0), (-1, 5, 1.0, 0),
    (254, 1, 1.0, 2), (254, 32, 2.0, 8), (100, 0, 1.0, 0),
])
def test_clamp_ttl_never_relays_further_than_max_ttl(ttl: int, n: int, multiplier: float, expected: int) -> None:
    assert clamp_ttl(ttl, n, multiplier) == expected
    assert clamp_ttl(ttl, n, multiplier) <= max(0, max_ttl(n, multiplier))


def test_message_history_is_bounded_and_counts_what_it_forgets() -> None:
    h = MessageHistory(max_age=30.0, shards=4, max_entries=64)
    for i in range(10_000):                           # a flood of unique pairs
        assert not h.seen(0.0, i.to_bytes(16, "big"), i)
    assert len(h) <= 64
    assert h.evicted == 10_000 - len(h)
    last = (9999).to_bytes(16, "big")
    assert h.contains(last, 9999) and h.seen(1.0, last, 9999)     # the newest are kept
    assert not h.contains((0).to_bytes(16, "big"), 0)             # the oldest went first
    held = len(h)
    assert h.gc(31.0) == held and len(h) == 0
    with pytest.raises(ValueError):
        MessageHistory(1.0, shards=16, max_entries=8)
