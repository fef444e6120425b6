"""Tests of :mod:`gossip.workers`: bounded queues and worker pools."""

from __future__ import annotations

import logging
import queue
import threading

import pytest

from gossip.testing import wait_until
from gossip.workers import BoundedQueue, QueueClosed, WorkerPool

WAIT = 5.0


def drain(q: BoundedQueue[int]) -> list[int]:
    out = []
    while True:
        try:
            out.append(q.get(timeout=0))
        except queue.Empty:
            return out


def test_drop_newest() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, "drop_newest", "t")
    assert [q.put(i) for i in range(5)] == [True, True, True, False, False]
    assert len(q) == 3 and q.dropped == 2
    assert drain(q) == [0, 1, 2]


def test_drop_oldest() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, "drop_oldest", "t")
    assert [q.put(i) for i in range(5)] == [True, True, True, False, False]
    assert q.dropped == 2
    assert drain(q) == [2, 3, 4]


def test_priority_goes_first_and_evicts_normal() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, "drop_newest", "t")
    q.put(1)
    q.put(2)
    assert q.put_priority(100)
    assert not q.put_priority(101)  # full: evicts the oldest normal item (1)
    assert q.dropped == 1
    assert drain(q) == [100, 101, 2]


def test_priority_only_full_follows_policy() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, "drop_newest", "t")
    q.put_priority(1)
    q.put_priority(2)
    assert not q.put_priority(3)
    assert drain(q) == [1, 2]
    q2: BoundedQueue[int] = BoundedQueue(2, "drop_oldest", "t")
    q2.put_priority(1)
    q2.put_priority(2)
    q2.put_priority(3)
    assert drain(q2) == [2, 3]


def test_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    q: BoundedQueue[int] = BoundedQueue(1, "drop_newest", "rl")
    with caplog.at_level(logging.WARNING, logger="gossip.workers"):
        for i in range(100):
            q.put(i)
    assert q.dropped == 99
    assert len([r for r in caplog.records if "rl" in r.getMessage()]) == 1


def test_get_timeout_and_close_wakes_getter() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, "drop_newest", "t")
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    started = threading.Event()
    result: list[BaseException] = []

    def getter() -> None:
        started.set()
        try:
            q.get(timeout=None)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            result.append(exc)

    thread = threading.Thread(target=getter)
    thread.start()
    assert started.wait(WAIT)
    q.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(result) == 1 and isinstance(result[0], QueueClosed)
    assert not q.put(1)
    with pytest.raises(QueueClosed):
        q.get(timeout=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BoundedQueue(0, "drop_newest", "t")
    with pytest.raises(ValueError):
        BoundedQueue(1, "nope", "t")  # type: ignore[arg-type]


def test_worker_pool_processes_and_survives_raising_handler() -> None:
    q: BoundedQueue[int] = BoundedQueue(100, "drop_newest", "t")
    done: queue.Queue[int] = queue.Queue()

    def handler(item: int) -> None:
        if item % 2:
            done.put(item)
            raise RuntimeError("odd")
        done.put(item)

    pool = WorkerPool("wp", 2, q, handler)
    pool.start()
    pool.start()  # no-op
    names = {t.name for t in threading.enumerate()}
    assert "gossip-wp-0" in names
    for i in range(10):
        q.put(i)
        pool.grow()
    assert sorted(done.get(timeout=WAIT) for _ in range(10)) == list(range(10))
    # A handler records its item before it raises: the pool counts the error just after.
    wait_until(lambda: pool.errors >= 5, WAIT, "the five errors counted")
    assert pool.errors == 5
    assert all(t.is_alive() for t in pool.threads)
    assert pool.stop(WAIT) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("gossip-wp-")]


def test_worker_pool_ends_when_queue_closes() -> None:
    q: BoundedQueue[int] = BoundedQueue(10, "drop_oldest", "t")
    pool = WorkerPool("gossip-named", 3, q, lambda _i: None)
    pool.start()
    assert [t.name for t in pool.threads] == ["gossip-named-0"]
    q.close()
    for t in pool.threads:
        t.join(WAIT)
    assert pool.stop(0.1) == []


def test_worker_pool_grows_only_while_no_thread_is_idle_and_never_past_count() -> None:
    q: BoundedQueue[int] = BoundedQueue(100, "drop_newest", "t")
    release = threading.Event()
    busy: queue.Queue[int] = queue.Queue()

    def handler(item: int) -> None:
        busy.put(item)
        release.wait(WAIT)

    pool = WorkerPool("grow", 3, q, handler)
    pool.grow()  # before start: nothing
    assert pool.threads == []
    pool.start()
    assert len(pool.threads) == 1
    pool.grow()  # its one thread is idle: no second one
    assert len(pool.threads) == 1
    for i in range(3):
        q.put(i)
        busy.get(timeout=WAIT)  # a thread took it and is now stuck in the handler
        pool.grow()
    # three stuck handlers: the third grow() found none idle but the pool was at its limit
    assert len(pool.threads) == 3
    for i in range(3, 6):
        q.put(i)
        pool.grow()
    assert len(pool.threads) == 3
    release.set()
    assert sorted(busy.get(timeout=WAIT) for _ in range(3)) == [3, 4, 5]
    assert pool.stop(WAIT) == []


def test_worker_pool_reports_stuck_threads() -> None:
    q: BoundedQueue[int] = BoundedQueue(10, "drop_oldest", "t")
    release = threading.Event()
    entered = threading.Event()

    def slow(_i: int) -> None:
        entered.set()
        release.wait(WAIT)

    pool = WorkerPool("stuck", 1, q, slow)
    pool.start()
    q.put(1)
    assert entered.wait(WAIT)
    assert pool.stop(0.05) == ["gossip-stuck-0"]
    release.set()
    assert pool.stop(WAIT) == []
