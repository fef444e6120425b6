"""Bounded hand-off queues and named worker pools for the engine.

:class:`BoundedQueue` never blocks a producer: when it is full, the configured policy drops
either the new item (``"drop_newest"``) or the oldest queued one (``"drop_oldest"``); the drop
is counted (:attr:`BoundedQueue.dropped`) and a warning is logged at most once per
:data:`WARN_INTERVAL` seconds. :meth:`BoundedQueue.put_priority` places an item ahead of every
normal item (memberlist's high-priority hand-off for alive and refutation messages).

:class:`WorkerPool` runs up to ``count`` daemon threads that take items from a queue and call a
handler; it starts with one and adds one when an item is queued while none is idle
(:meth:`WorkerPool.grow`), so an idle node holds one thread, not ``count``. A raising handler
is logged with its traceback and counted, never fatal.

This module imports only :mod:`gossip.errors` from the library.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from gossip.errors import ClusterClosed

__all__ = ["BoundedQueue", "WorkerPool", "QueueClosed", "Policy", "WARN_INTERVAL"]

_log = logging.getLogger("gossip.workers")

T = TypeVar("T")

Policy = Literal["drop_newest", "drop_oldest"]
"""What a full :class:`BoundedQueue` drops: the item being put, or the oldest queued one."""

WARN_INTERVAL = 10.0
"""Minimum seconds between two "queue full" warnings of one queue."""



class QueueClosed(ClusterClosed):
    """The queue was closed: :meth:`BoundedQueue.get` raises this once it is closed."""


class BoundedQueue(Generic[T]):
    """A thread-safe bounded FIFO queue with an explicit overflow policy and a priority lane.

    Two deques (priority and normal) share one :class:`threading.Condition`; ``maxsize``
    bounds their total length.

    Args:
        maxsize: the most items held at once (>= 1).
        policy: ``"drop_newest"`` refuses the new item when full, ``"drop_oldest"`` evicts
            the oldest normal item to make room.
        name: used in warnings (``queue <name> full``).

    Attributes:
        dropped: how many items were dropped because the queue was full.
    """

    def __init__(self, maxsize: int, policy: Policy, name: str) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if policy not in ("drop_newest", "drop_oldest"):
            raise ValueError(f"policy must be 'drop_newest' or 'drop_oldest', got {policy!r}")
        self.maxsize = maxsize
        self.policy: Policy = policy
        self.name = name
        self.dropped = 0
        self._cond = threading.Condition()
        self._priority: deque[T] = deque()
        self._normal: deque[T] = deque()
        self._closed = False
        self._last_warn = -float("inf")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def put(self, item: T) -> bool:
        """Add ``item`` without ever blocking.

        Returns:
            True if nothing was dropped; False if the queue was full and an item was dropped
            (the new one under ``drop_newest``, the oldest under ``drop_oldest``) or the queue
            is closed (the item is discarded, not counted as dropped). Either way exactly one
            item fewer than put will come out, which keeps a caller's in-flight count right.
        """
        with self._cond:
            if self._closed:
                return False
            if len(self._priority) + len(self._normal) < self.maxsize:
                self._normal.append(item)
                self._cond.notify()
                return True
            self._drop_locked()
            if self.policy == "drop_oldest" and self._normal:
                self._normal.popleft()
                self._normal.append(item)
                self._cond.notify()
            return False

    def put_priority(self, item: T) -> bool:
        """Add ``item`` ahead of every normal item (after earlier priority items).

        When full, the oldest *normal* item is evicted to make room; if only priority items
        are queued, the queue's policy applies among them.

        Returns:
            True if nothing was dropped, False otherwise (see :meth:`put`).
        """
        with self._cond:
            if self._closed:
                return False
            if len(self._priority) + len(self._normal) < self.maxsize:
                self._priority.append(item)
                self._cond.notify()
                return True
            self._drop_locked()
            if self._normal:
                self._normal.popleft()
            elif self.policy == "drop_oldest":
                self._priority.popleft()
            else:
                return False
            self._priority.append(item)
            self._cond.notify()
            return False

    def get(self, timeout: float | None = None) -> T:
        """Remove and return the next item (priority items first), waiting up to ``timeout``.

        ``None`` waits until an item arrives or the queue is closed; ``0`` does not wait.

        Raises:
            queue.Empty: nothing arrived within ``timeout``.
            QueueClosed: the queue is closed (items still queued at close are discarded).
        """
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._closed:
                    raise QueueClosed(f"queue {self.name} is closed")
                if self._priority:
                    return self._priority.popleft()
                if self._normal:
                    return self._normal.popleft()
                if end is None:
                    self._cond.wait()
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                self._cond.wait(left)

    def close(self) -> None:
        """Close the queue: wake every blocked :meth:`get` (they raise :class:`QueueClosed`),
        discard queued items, and make later puts return False. Idempotent."""
        with self._cond:
            self._closed = True
            self._priority.clear()
            self._normal.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._priority) + len(self._normal)

    def __repr__(self) -> str:
        return (
            f"<BoundedQueue {self.name} {len(self)}/{self.maxsize} policy={self.policy} "
            f"dropped={self.dropped}{' closed' if self._closed else ''}>"
        )

    def _drop_locked(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_warn >= WARN_INTERVAL:
            self._last_warn = now
            _log.warning(
                "queue %s full (%d): dropping (%s, %d dropped so far)",
                self.name,
                self.maxsize,
                self.policy,
                self.dropped,
            )


class WorkerPool(Generic[T]):
    """Up to ``count`` named daemon threads feeding items of ``queue`` to ``handler``.

    :meth:`start` starts one thread; a producer calls :meth:`grow` after queueing, which adds
    a thread while none is idle and fewer than ``count`` run (threads never end before
    :meth:`stop`, so a burst leaves its threads ready for the next one).

    Threads are named ``gossip-<name>-<n>`` (``<name>-<n>`` if ``name`` already starts with
    ``gossip-``). A handler exception is logged with its traceback and counted in
    :attr:`errors`; the thread carries on. Threads end when the queue is closed or
    :meth:`stop` is called.

    Attributes:
        errors: how many handler calls raised.
    """

    def __init__(
        self, name: str, count: int, queue: BoundedQueue[T], handler: Callable[[T], None]
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.name = name
        self.count = count
        self.errors = 0
        self._queue = queue
        self._handler = handler
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads not running the handler (written under the lock; grow() peeks)
        prefix = name if name.startswith("gossip-") else f"gossip-{name}"
        self._prefix = prefix

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads started so far."""
        return list(self._threads)

    def start(self) -> None:
        """Start the first thread (a second call does nothing)."""
        with self._lock:
            if self._threads or self._stop.is_set():
                return
            self._spawn_locked()

    def grow(self) -> None:
        """Add a thread if none is idle and fewer than ``count`` run (call after a put).

        Cheap when nothing is to be done: one attribute read, no lock.
        """
        if self._idle > 0 or len(self._threads) >= self.count or not self._threads:
            return
        with self._lock:
            if (self._idle <= 0 and 0 < len(self._threads) < self.count
                    and not self._stop.is_set()):
                self._spawn_locked()

    def _spawn_locked(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"{self._prefix}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        self._idle += 1
        thread.start()

    def stop(self, timeout: float) -> list[str]:
        """Ask the threads to stop and join them, all within ``timeout`` seconds.

        Items still queued are not processed; a handler call already running finishes.
        The queue is closed, which wakes idle workers at once (they never poll).

        Returns:
            The names of threads still alive after the timeout (logged as a warning).
        """
        with self._lock:
            self._stop.set()
        self._queue.close()
        end = time.monotonic() + max(0.0, timeout)
        for thread in list(self._threads):
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        me = threading.current_thread()
        alive = [t.name for t in self._threads if t.is_alive() and t is not me]
        if alive:
            _log.warning("worker pool %s: threads did not stop: %s", self.name, alive)
        return alive

    def __repr__(self) -> str:
        alive = sum(t.is_alive() for t in self._threads)
        return f"<WorkerPool {self.name} alive={alive}/{self.count} errors={self.errors}>"

    def _run(self) -> None:
        lock = self._lock
        while not self._stop.is_set():
            try:
                item = self._queue.get()   # blocks without polling; close() wakes it
            except QueueClosed:
                return
            if self._stop.is_set():
                return
            with lock:
                self._idle -= 1
            try:
                self._handler(item)
            except Exception:
                with lock:
                    self.errors += 1
                _log.error("worker pool %s: handler raised", self.name, exc_info=True)
            finally:
                with lock:
                    self._idle += 1
