"""The engine's send and refusal paths, on the in-memory transport or with no transport at all:
the per-source warning limiter, the datagram rule, a relay that finds the send queue full."""

from __future__ import annotations

from gossip.engine.incoming import SourceWarnings, source_host


def test_source_warnings_warn_once_per_interval_per_source() -> None:
    w = SourceWarnings(interval=60.0, max_sources=4)
    assert w.due("127.0.0.1", 0.0)
    assert not w.due("127.0.0.1", 1.0)
    assert not w.due("127.0.0.1", 59.9)
    assert w.due("127.0.0.2", 2.0)  # another source is another warning
    assert w.due("127.0.0.1", 60.0)  # and the same source again once the interval is over


def test_source_warnings_track_a_bounded_number_of_sources() -> None:
    # A flood from many (spoofed) sources neither floods the log nor grows the table.
    w = SourceWarnings(interval=60.0, max_sources=4)
    assert [w.due(f"127.0.0.{i}", 0.0) for i in range(1, 101)] == [True] * 4 + [False] * 96
    assert w.suppressed == 96 and len(w._last) == 4
    assert not w.due("127.0.1.1", 30.0)  # still full: every entry is fresh
    assert w.due("127.0.1.1", 61.0)  # expired entries make room
    assert len(w._last) == 1


def test_source_host_drops_the_port() -> None:
    assert source_host("127.0.0.1:7946") == "127.0.0.1"
    assert source_host("[::1]:7946") == "[::1]"
    assert source_host("mem-3") == "mem-3"
