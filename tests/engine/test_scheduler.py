"""The protocol clock (gossip.engine.scheduler), given a host whose core is a stand-in that
records what the clock asks of it; waits are bounded polls."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from gossip.counters import Counters
from gossip.engine.host import CoreHost
from gossip.engine.scheduler import Scheduler

WAIT = 10.0


def wait_until(pred: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Core:
    """What the scheduler uses of a core: its next deadline, ticks, metadata, actions."""

    def __init__(self) -> None:
        self.deadline = math.inf
        self.ticks: list[float] = []
        self.failing_ticks = 0
        self.meta: list[tuple[dict[str, Any], int]] = []
        self.pending: list[Any] = []

    def next_deadline(self) -> float:
        return self.deadline

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.deadline = math.inf
        self.pending.append(("tick", len(self.ticks)))
        if self.failing_ticks:
            self.failing_ticks -= 1
            raise OverflowError("a core bug")

    def set_local_metadata(self, now: float, values: dict[str, Any], stamp: int) -> None:
        self.meta.append((values, stamp))

    def actions_to_perform(self) -> list[Any]:
        out, self.pending = self.pending, []
        return out


class History:
    def __init__(self, size: int) -> None:
        self.size = size
        self.collected: list[float] = []

    def gc(self, now: float) -> None:
        self.collected.append(now)


class Rig:
    def __init__(self, history_size: int = 0, gc_interval: float = 60.0) -> None:
        self.host = CoreHost()
        self.core = Core()
        self.host.install(self.core)  # type: ignore[arg-type]
        self.history = History(history_size)
        self.performed: list[Any] = []
        self.locked_while_performing = False
        self.metadata_events = 0
        self.stop = threading.Event()
        self.counters = Counters()
        self.scheduler = Scheduler(
            self.host, history=self.history, perform=self.perform,
            metadata=lambda: ({"k": "v"}, 7), on_metadata=self.on_metadata, stop=self.stop,
            gc_interval=gc_interval, counters=self.counters,
            log=logging.getLogger("gossip.test"), prefix="gossip-test")

    def perform(self, actions: Sequence[Any]) -> None:
        self.locked_while_performing |= self.host.lock.locked()
        self.performed.extend(actions)

    def on_metadata(self) -> None:
        self.metadata_events += 1

    def close(self) -> None:
        self.stop.set()
        self.scheduler.stop()
        self.scheduler.thread.join(WAIT)
        assert not self.scheduler.thread.is_alive()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def test_a_deadline_brought_forward_wakes_the_clock_and_its_actions_are_performed_unlocked(
        rig: Rig) -> None:
    rig.scheduler.start()
    assert rig.core.ticks == []

    def due_now(core: Any) -> None:
        core.deadline = 0.0

    rig.host.call(due_now)  # a command that brings a deadline forward wakes the sleeping clock
    wait_until(lambda: rig.performed == [("tick", 1)], "the tick's actions")
    assert not rig.locked_while_performing


def test_a_burst_of_metadata_writes_goes_out_as_one_update(rig: Rig) -> None:
    for _ in range(3):
        rig.scheduler.metadata_written()  # before the thread runs: one window, one update
    rig.scheduler.start()
    wait_until(lambda: rig.metadata_events == 1, "the metadata event")
    assert rig.core.meta == [({"k": "v"}, 7)]


def test_metadata_the_caller_sent_itself_is_not_sent_again(rig: Rig) -> None:
    rig.scheduler.metadata_written()
    rig.scheduler.metadata_sent()  # update_metadata() propagated it meanwhile
    rig.scheduler.start()
    rig.host.call(lambda core: setattr(core, "deadline", 0.0))
    wait_until(lambda: len(rig.core.ticks) == 1, "a tick")
    assert rig.core.meta == [] and rig.metadata_events == 0


def test_the_clock_survives_a_failing_core(rig: Rig) -> None:
    rig.core.failing_ticks = 3
    rig.scheduler.start()
    for n in range(1, 5):
        rig.host.call(lambda core: setattr(core, "deadline", 0.0))
        wait_until(lambda: len(rig.core.ticks) == n, f"tick {n}")
    wait_until(lambda: len(rig.performed) == 4, "every tick's actions")
    assert rig.counters.snapshot()["errors.scheduler"] == 3
    assert rig.scheduler.thread.is_alive()


def test_the_history_is_collected_on_the_clock_while_it_holds_entries() -> None:
    r = Rig(history_size=5, gc_interval=0.01)
    r.scheduler.start()
    try:
        wait_until(lambda: len(r.history.collected) >= 2, "two collections")
    finally:
        r.close()


def test_stop_ends_the_thread() -> None:
    r = Rig()
    r.scheduler.start()
    r.close()
