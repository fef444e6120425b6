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
