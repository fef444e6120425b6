"""The engine's send and refusal paths, on the in-memory transport or with no transport at all:
the per-source warning limiter, the datagram rule, a relay that finds the send queue full."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable

import pytest

import gossip
from gossip import Cluster, Config
from gossip.engine.incoming import SourceWarnings
from gossip.transports.memory import MemoryNetwork

MT = gossip.USER_MSG + 61


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


def _wait(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_a_relay_that_finds_the_send_queue_full_drops_its_oldest_packet() -> None:
    # b relays a's reliable broadcasts to c through its send workers: one worker, a queue of
    # one. The worker is held inside its first send to c until released, so later relays must
    # find the queue full: each pushes out the oldest one waiting (dropped.send_queue_full).
    net = MemoryNetwork(seed=21)
    tb = net.new_transport()
    a = Cluster(Config.local(transport=net.new_transport()))
    b = Cluster(Config.local(transport=tb, send_queue_size=1, num_send_workers=1,
                             state_sync_interval=3600.0))
    c = Cluster(Config.local(transport=net.new_transport()))
    clusters = [a, b, c]
    entered, release = threading.Event(), threading.Event()
    real_send = tb.send

    def held_send(addr: str, data: bytes, reliable: bool = False,
                  timeout: float | None = None) -> None:
        (msg_type,) = struct.unpack_from(">H", data, 8)  # plain packets: after the prefix
        if reliable and addr == c.address and msg_type >= gossip.RESERVED_MSGS_START:
            entered.set()
            release.wait(10.0)
        real_send(addr, data, reliable, timeout)

    try:
        for x in clusters:
            x.start()
        for x in (b, c):
            assert x.join(a.address, timeout=5.0) == 1
        _wait(lambda: all(x.num_alive_nodes() == 3 for x in clusters), "3 alive")
        got: list[int] = []
        c.handle_func(MT, lambda s, p: got.append(p.unmarshal()))
        b.handle_func(MT, lambda s, p: None)
        tb.send = held_send  # type: ignore[method-assign]
        no_c = [c.local_node().id]
        a.send_reliable_excluding(MT, 1, no_c)  # to b only; b relays it to c
        assert entered.wait(10.0), "b's send worker never started relaying to c"
        for i in range(2, 6):
            a.send_reliable_excluding(MT, i, no_c)
        _wait(lambda: b.stats().get("user.relayed", 0) == 5, "b relayed all five")
        assert b.stats()["dropped.send_queue_full"] == 3  # 2, 3 and 4 were pushed out by 5
        release.set()
        _wait(lambda: sorted(got) == [1, 5], "c got the first and the newest")
    finally:
        release.set()
        for x in clusters:
            x.stop(timeout=2.0)
