"""Tests for gossip.hlc."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip import hlc
from gossip.hlc import (
    EPOCH,
    EPOCH_US,
    HLC,
    MAX_COUNTER,
    make_timestamp,
    timestamp_counter,
    timestamp_from_datetime,
    timestamp_physical_us,
    timestamp_to_datetime,
)

BASE_NS = (EPOCH_US + 1_000_000_000) * 1000  # some time after the HLC epoch


class FakeWall:
    """A settable wall clock returning Unix nanoseconds."""

    def __init__(self, ns: int = BASE_NS) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def test_epoch_constant() -> None:
    assert EPOCH == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert EPOCH_US == int(EPOCH.timestamp()) * 1_000_000


def test_epoch_is_zero() -> None:
    assert timestamp_to_datetime(0) == EPOCH
    assert timestamp_physical_us(0) == EPOCH_US
    assert timestamp_counter(0) == 0
    assert make_timestamp(EPOCH_US, 0) == 0
    assert timestamp_from_datetime(EPOCH) == 0


def test_monotonic_10000_calls() -> None:
    clock = HLC()
    prev = clock.now()
    for _ in range(10_000):
        ts = clock.now()
        assert ts > prev
        prev = ts


def test_module_now_monotonic() -> None:
    a = hlc.now()
    b = hlc.now()
    assert b > a


def test_now_uses_wall_clock() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    ts = clock.now()
    assert timestamp_physical_us(ts) == wall.ns // 1000
    assert timestamp_counter(ts) == 0
    ts2 = clock.now()
    assert timestamp_physical_us(ts2) == wall.ns // 1000
    assert timestamp_counter(ts2) == 1
    wall.ns += 5_000
    ts3 = clock.now()
    assert timestamp_physical_us(ts3) == wall.ns // 1000
    assert timestamp_counter(ts3) == 0


def test_wall_clock_steps_back() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    first = clock.now()
    wall.ns -= 10_000_000_000  # 10 s backwards
    prev = first
    for _ in range(100):
        ts = clock.now()
        assert ts > prev
        assert timestamp_physical_us(ts) >= timestamp_physical_us(first)
        prev = ts


def test_counter_overflow_carries() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    base_us = wall.ns // 1000
    stamps = [clock.now() for _ in range(MAX_COUNTER + 1)]
    assert timestamp_physical_us(stamps[-1]) == base_us
    assert timestamp_counter(stamps[-1]) == MAX_COUNTER
    nxt = clock.now()
    assert nxt > stamps[-1]
    assert timestamp_physical_us(nxt) == base_us + 1
    assert timestamp_counter(nxt) == 0
    # still strictly monotonic over many more calls on a frozen clock
    prev = nxt
    for _ in range(5000):
        ts = clock.now()
        assert ts > prev
        prev = ts


def test_wall_before_epoch_clamped() -> None:
    clock = HLC(lambda: 0)
    a = clock.now()
    b = clock.now()
    assert 0 <= a < b


def test_update_remote_ahead() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    local = clock.now()
    remote = make_timestamp(wall.ns // 1000 + 1_000_000, 7)  # 1 s ahead
    merged = clock.update(remote)
    assert merged > remote > local
    assert timestamp_physical_us(merged) == timestamp_physical_us(remote)
    assert timestamp_counter(merged) == 8
    assert clock.now() > merged


def test_update_remote_behind() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    local = clock.now()
    remote = make_timestamp(wall.ns // 1000 - 1_000_000, 500)
    merged = clock.update(remote)
    assert merged > local > remote
    assert timestamp_physical_us(merged) == wall.ns // 1000
    assert timestamp_counter(merged) == 1


def test_update_same_physical_takes_max_counter() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    local = clock.now()
    remote = make_timestamp(timestamp_physical_us(local), 40)
    merged = clock.update(remote)
    assert timestamp_counter(merged) == 41


def test_update_wall_ahead_of_both() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    clock.now()
    remote = make_timestamp(wall.ns // 1000, 3)
    wall.ns += 1_000_000
    merged = clock.update(remote)
    assert timestamp_physical_us(merged) == wall.ns // 1000
    assert timestamp_counter(merged) == 0


def test_update_counter_overflow_carries() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    remote = make_timestamp(wall.ns // 1000 + 10, MAX_COUNTER)
    merged = clock.update(remote)
    assert merged > remote
    assert timestamp_physical_us(merged) == wall.ns // 1000 + 11
    assert timestamp_counter(merged) == 0


def test_drift_clamp() -> None:
    wall = FakeWall()
    clock = HLC(wall, max_drift=60)
    far = make_timestamp(wall.ns // 1000 + 120_000_000, 0)  # 2 min ahead
    merged = clock.update(far)
    assert merged < far
    assert timestamp_physical_us(merged) == wall.ns // 1000
    # within the drift it is adopted
    near = make_timestamp(wall.ns // 1000 + 30_000_000, 0)
    assert clock.update(near) > near


def test_drift_check_disabled() -> None:
    wall = FakeWall()
    clock = HLC(wall, max_drift=0)
    far = make_timestamp(wall.ns // 1000 + 10**12, 0)
    assert clock.update(far) > far


def test_update_rejects_bad_values() -> None:
    clock = HLC()
    with pytest.raises(ValueError):
        clock.update(-1)
    with pytest.raises(ValueError):
        clock.update(1 << 64)
    with pytest.raises(TypeError):
        clock.update("5")  # type: ignore[arg-type]


def test_negative_drift_refused() -> None:
    with pytest.raises(ValueError):
        HLC(max_drift=-1)


def test_datetime_round_trip() -> None:
    for dt in (
        EPOCH,
        EPOCH + timedelta(microseconds=1),
        EPOCH + timedelta(seconds=1),
        datetime(2025, 6, 15, 12, 30, 45, 123456, tzinfo=timezone.utc),
    ):
        ts = timestamp_from_datetime(dt)
        assert timestamp_counter(ts) == 0
        assert timestamp_to_datetime(ts) == dt


def test_naive_datetime_is_utc() -> None:
    naive = datetime(2025, 6, 15, 12, 0, 0)
    assert timestamp_to_datetime(timestamp_from_datetime(naive)) == naive.replace(
        tzinfo=timezone.utc
    )


def test_counter_does_not_change_time() -> None:
    dt = datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert timestamp_to_datetime(timestamp_from_datetime(dt, 42)) == dt
    assert timestamp_counter(timestamp_from_datetime(dt, 42)) == 42


def test_time_between_before_and_after() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    ts = HLC().now()
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert before <= timestamp_to_datetime(ts) <= after


def test_make_timestamp_validation() -> None:
    with pytest.raises(ValueError):
        make_timestamp(EPOCH_US - 1, 0)
    with pytest.raises(ValueError):
        make_timestamp(EPOCH_US, 1024)
    with pytest.raises(ValueError):
        make_timestamp(EPOCH_US, -1)
    with pytest.raises(ValueError):
        timestamp_from_datetime(datetime(2024, 12, 31, tzinfo=timezone.utc))


@given(st.integers(0, (1 << 54) - 1), st.integers(0, MAX_COUNTER))
def test_make_and_split_round_trip(physical: int, counter: int) -> None:
    ts = make_timestamp(EPOCH_US + physical, counter)
    assert 0 <= ts < 1 << 64
    assert timestamp_physical_us(ts) == EPOCH_US + physical
    assert timestamp_counter(ts) == counter


def test_thread_safety_unique_stamps() -> None:
    clock = HLC(FakeWall())  # frozen: everything goes through the counter path
    results: list[list[int]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        for _ in range(2000):
            results[i].append(clock.now())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [ts for r in results for ts in r]
    assert len(set(flat)) == len(flat)
    for r in results:
        assert r == sorted(r)
