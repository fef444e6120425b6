"""Lifeguard's suspicion timeout: the pure formulas, table-tested as memberlist does."""

from __future__ import annotations

import math

import pytest

from gossip.node import NodeID
from gossip.protocol.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeouts


@pytest.mark.parametrize(
    "n, k, elapsed, low, high, expected",
    [
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 30.0 - 28.0 * math.log(3) / math.log(4) - 3.0),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        (0, 0, 1.0, 2.0, 30.0, 1.0),  # no confirmations expected: the minimum
    ],
)
def test_remaining_suspicion_time(n: int, k: int, elapsed: float, low: float, high: float, expected: float) -> None:
    assert remaining_suspicion_time(n, k, elapsed, low, high) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "n, scale",
    [(1, 1.0), (5, 1.0), (10, 1.0), (50, 1.69897), (100, 2.0), (500, 2.69897), (1000, 3.0)],
)
def test_suspicion_timeouts_scale_with_log10_of_size(n: int, scale: float) -> None:
    low, high = suspicion_timeouts(n, 1.0, 4, 6)
    assert low == pytest.approx(4 * scale, rel=1e-5)
    assert high == pytest.approx(6 * low)


def test_confirmations_shrink_the_deadline_to_the_minimum() -> None:
    accuser, a, b, c = (NodeID(int=i) for i in range(1, 5))
    s = Suspicion(incarnation=0, start=100.0, k=2, low=8.0, high=48.0, accuser=accuser)
    assert s.deadline() == pytest.approx(148.0)
    assert not s.confirm(accuser)            # the accuser does not confirm itself
    assert s.confirm(a)
    first = s.deadline()
    assert 108.0 < first < 148.0
    assert not s.confirm(a)                  # one confirmation per member
    assert s.confirm(b)
    assert s.deadline() == pytest.approx(108.0)
    assert not s.confirm(c)                  # k reached: no more count
    assert s.deadline() == pytest.approx(108.0)


def test_no_expected_confirmations_means_minimum_timeout() -> None:
    s = Suspicion(incarnation=0, start=0.0, k=0, low=4.0, high=24.0, accuser=NodeID(int=1))
    assert s.deadline() == 4.0
    assert not s.confirm(NodeID(int=2))
