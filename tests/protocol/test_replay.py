"""ReplayGuard: stale, future and duplicate protocol packets refused, in bounded memory."""

from __future__ import annotations

import pytest

from gossip.errors import RemoteProtocolError, ReplayedPacket
from gossip.hlc import make_timestamp
from gossip.protocol.replay import ReplayGuard

S1, S2 = b"\x01" * 16, b"\x02" * 16
T0 = 1_800_000_000_000_000           # unix microseconds


def at(seconds: float, counter: int = 0) -> int:
    return make_timestamp(T0 + int(seconds * 1_000_000), counter)


def reason(guard: ReplayGuard, sender: bytes, stamp: int, now: int) -> str | None:
    try:
        guard.check(sender, stamp, now)
    except ReplayedPacket as exc:
        assert isinstance(exc, RemoteProtocolError)      # counted by hosts like any bad packet
        return exc.reason
    return None


def test_fresh_packets_pass_once() -> None:
    g = ReplayGuard(window=30.0)
    now = at(100)
    assert reason(g, S1, at(99), now) is None
    assert reason(g, S2, at(99), now) is None            # same stamp, another sender
    assert reason(g, S1, at(99, 1), now) is None
    assert reason(g, S1, at(99), now) == "duplicate"
    assert g.stats["duplicate"] == 1 and len(g) == 3


@pytest.mark.parametrize("offset, expected", [(-31, "stale"), (-29, None), (29, None), (31, "future")])
def test_window_either_way(offset: float, expected: str | None) -> None:
    g = ReplayGuard(window=30.0)
    assert reason(g, S1, at(100 + offset), at(100)) == expected


def test_a_capture_replayed_later_is_stale() -> None:
    g = ReplayGuard(window=30.0)
    assert reason(g, S1, at(10), at(10)) is None
    assert reason(g, S1, at(10), at(20)) == "duplicate"
    assert reason(g, S1, at(10), at(41)) == "stale"
    assert len(g) == 0                                   # expired pairs are forgotten


def test_memory_is_bounded_and_nothing_forgotten_can_be_replayed() -> None:
    g = ReplayGuard(window=3600.0, max_entries=100)
    now = at(5000)
    stamps = [at(4000 + i * 0.001) for i in range(1000)]
    for i, st in enumerate(stamps):
        assert reason(g, bytes([i % 7]) * 16, st, now) is None
    assert len(g) == 100 and g.stats["evicted"] == 900
    for i, st in enumerate(stamps):                      # replay everything: nothing passes
        assert reason(g, bytes([i % 7]) * 16, st, now) is not None


def test_zero_window_turns_the_guard_off() -> None:
    g = ReplayGuard(window=0.0)
    for _ in range(3):
        assert reason(g, S1, 0, at(100)) is None
    with pytest.raises(ValueError):
        ReplayGuard(window=-1.0)


def test_a_packet_older_than_all_remembered_is_stale_once_the_guard_is_full() -> None:
    g = ReplayGuard(window=3600.0, max_entries=2)
    now = at(100)
    assert reason(g, S1, at(10), now) is None
    assert reason(g, S2, at(12), now) is None
    # Full: admitting S1's older stamp would forget (S1, at(10)) and raise S1's floor to it,
    # which the newcomer is below: refused, as a replay of a forgotten pair could be.
    assert reason(g, S1, at(9), now) == "stale"
    assert g.stats == {"stale": 1, "future": 0, "duplicate": 0, "evicted": 1}
    assert reason(g, S1, at(10), now) == "stale"          # the forgotten pair itself
    assert reason(g, S1, at(11), now) is None             # above the floor: admitted


def _fill_floors(g: ReplayGuard, now: int, senders: list[bytes], base: float) -> None:
    """Give each sender a floor: its pair at ``base + i`` is forgotten to make room."""
    for i, who in enumerate(senders):
        assert reason(g, who, at(base + i), now) is None
    for i in range(len(senders)):
        assert reason(g, b"\xee" * 16, at(base + 50 + i), now) is None


def test_too_many_floors_collapse_into_a_global_floor() -> None:
    g = ReplayGuard(window=3600.0, max_entries=3)
    now = at(1000)
    senders = [bytes([i]) * 16 for i in range(1, 5)]
    _fill_floors(g, now, senders, 10)                    # 4 floors > max_entries, all in window
    assert g.stats["evicted"] >= 4
    # The highest dropped floor (at(13), the 4th sender's) is now everyone's floor: a sender
    # never seen before is refused at or below it, and admitted above it.
    fresh = b"\x77" * 16
    assert reason(g, fresh, at(13), now) == "stale"
    assert reason(g, fresh, at(12), now) == "stale"
    assert reason(g, fresh, at(13.5), now) is None


def test_floors_below_the_window_are_dropped_rather_than_collapsed() -> None:
    g = ReplayGuard(window=100.0, max_entries=3)
    senders = [bytes([i]) * 16 for i in range(1, 4)]
    _fill_floors(g, at(100), senders, 10)                # 3 floors (at(10..12)), at the bound
    # Much later one more floor: the old three are below the window and simply dropped,
    # so no global floor rises to refuse a newcomer's in-window stamp.
    later = at(500)
    assert reason(g, b"\x09" * 16, at(450), later) is None
    for i in range(3):
        assert reason(g, b"\xee" * 16, at(460 + i), later) is None
    fresh = b"\x77" * 16
    assert reason(g, fresh, at(401), later) is None
    assert reason(g, senders[0], at(12), later) == "stale"   # outside the window anyway


def test_check_fresh_checks_the_window_only_and_records_nothing() -> None:
    g = ReplayGuard(window=30.0)
    now = at(100)
    for _ in range(2):
        g.check_fresh(at(99), now)                       # copies pass: nothing recorded
    assert len(g) == 0
    with pytest.raises(ReplayedPacket) as stale:
        g.check_fresh(at(69), now)
    assert stale.value.reason == "stale"
    with pytest.raises(ReplayedPacket) as future:
        g.check_fresh(at(131), now)
    assert future.value.reason == "future"
    g.check_fresh(at(80), now, window=60.0)              # never wider than the guard's own
    with pytest.raises(ReplayedPacket):
        g.check_fresh(at(80), now, window=10.0)          # a narrower window refuses it
    assert g.stats["stale"] == 2 and g.stats["future"] == 1
    off = ReplayGuard(window=0.0)
    off.check_fresh(0, now)                              # the guard turned off admits anything
    assert off.stats["stale"] == 0
