"""The event thread (gossip.engine.events): in order, one at a time, whatever handlers do."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gossip.counters import Counters
from gossip.engine.events import EVENT_QUEUE_SIZE, EventLoop
from gossip.node import NodeState

WAIT = 10.0


def wait_until(pred: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Rig:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.counters = Counters()
        self.warnings: list[tuple[Any, ...]] = []
        self.loop = EventLoop(0.05, 0.5, self.stop, self.counters, logging.getLogger("gossip.test"),
                              lambda *args: self.warnings.append(args), "gossip-test")

    def close(self) -> None:
        self.stop.set()
        self.loop.close()
        for t in self.loop.threads:
            if t.ident is not None:
                t.join(WAIT)
                assert not t.is_alive()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_events_reach_every_handler_in_order_on_one_thread(rig: Rig) -> None:
    seen: list[tuple[str, int, int]] = []
    rig.loop.state_handlers.add(lambda n, prev: seen.append(("state", n, threading.get_ident())))
    rig.loop.metadata_handlers.add(lambda n: seen.append(("metadata", n, threading.get_ident())))
    rig.loop.cluster_handlers.add(lambda ev: seen.append(("cluster", ev, threading.get_ident())))
    rig.loop.start()
    kinds = ["state", "metadata", "cluster"]
    for i in range(300):
        rig.loop.emit((kinds[i % 3], i, NodeState.ALIVE if kinds[i % 3] != "cluster" else None))
    wait_until(lambda: len(seen) == 300, "every event")
    assert [(k, n) for k, n, _ in seen] == [(kinds[i % 3], i) for i in range(300)]
    assert len({t for _, _, t in seen}) == 1 and seen[0][2] != threading.get_ident()


def test_a_raising_handler_is_counted_and_later_events_still_arrive(rig: Rig) -> None:
    got: list[int] = []

    def flaky(n: int, prev: NodeState) -> None:
        if n % 2:
            raise RuntimeError("handler bug")
        got.append(n)

    rig.loop.state_handlers.add(flaky)
    rig.loop.start()
    for i in range(6):
        rig.loop.emit(("state", i, NodeState.ALIVE))
    wait_until(lambda: got == [0, 2, 4], "the even events")
    wait_until(lambda: rig.counters.snapshot().get("handler_errors.state") == 3, "3 errors")


def test_a_full_queue_drops_the_oldest_counts_and_warns(rig: Rig) -> None:
    for i in range(EVENT_QUEUE_SIZE + 3):  # the thread is not started: nothing is taken
        rig.loop.emit(("state", i, NodeState.ALIVE))
    assert rig.counters.snapshot()["dropped.events"] == 3
    assert [w[0] for w in rig.warnings] == ["events_dropped"] * 3  # rate-limited by the warner
    first: list[int] = []
    rig.loop.state_handlers.add(lambda n, prev: first.append(n) if not first else None)
    rig.loop.start()
    wait_until(lambda: first == [3], "the oldest kept event")


def test_the_gossip_callbacks_run_every_interval_until_stopped(rig: Rig) -> None:
    calls = threading.Semaphore(0)
    rig.loop.gossip_handlers.add(calls.release)
    rig.loop.start()
    for _ in range(3):
        assert calls.acquire(timeout=WAIT)


class _CountingEvent(threading.Event):
    """A stop flag that counts the waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_without_a_gossip_handler_the_gossip_thread_sleeps_until_one_comes() -> None:
    stop = _CountingEvent()
    loop = EventLoop(0.05, 0.5, stop, Counters(), logging.getLogger("gossip.test"),
                     lambda *args: None, "gossip-test")
    seen = threading.Semaphore(0)
    loop.state_handlers.add(lambda n, prev: seen.release())
    loop.start()
    try:
        loop.emit(("state", 1, NodeState.ALIVE))
        assert seen.acquire(timeout=WAIT)       # both threads run; the gossip one has no work
        assert stop.waits == 0                  # it never timed a round
        calls = threading.Semaphore(0)
        hid = loop.gossip_handlers.add(calls.release)
        for _ in range(2):
            assert calls.acquire(timeout=WAIT)
        assert loop.gossip_handlers.remove(hid)
        again = loop.gossip_handlers.add(calls.release)
        assert calls.acquire(timeout=WAIT)
        assert loop.gossip_handlers.remove(again)
    finally:
        stop.set()
        loop.close()
        for t in loop.threads:
            t.join(WAIT)
    assert not any(t.is_alive() for t in loop.threads)


def test_stop_ends_a_gossip_thread_that_sleeps_for_want_of_a_handler() -> None:
    stop = threading.Event()
    loop = EventLoop(0.05, 0.5, stop, Counters(), logging.getLogger("gossip.test"),
                     lambda *args: None, "gossip-test")
    loop.start()
    stop.set()
    loop.close()
    for t in loop.threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in loop.threads)
