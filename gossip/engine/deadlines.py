"""The deadlines of waiting calls: one thread that fires callbacks at their time.

Calls that return a :class:`concurrent.futures.Future` instead of blocking (a request waiting
for its reply, a join waiting for the seeds' answers, a leave waiting for its
acknowledgements) still need something to end them when their time is up. That is this part:
a heap of ``(when, callback)`` served by one thread (``gossip-<node>-deadlines``), started by
the first deadline set and joined at stop. A cancelled deadline leaves the heap when the heap
is next swept: once more than :data:`SWEEP_MIN` entries are cancelled and they are more than
half of the heap, so the heap holds at most about twice the deadlines still set. It is not the protocol clock (the scheduler owns
that, :mod:`gossip.engine.scheduler`): a flood of user deadlines never delays a probe.

A callback runs on the deadlines thread and must not block: it completes a future, or checks
a condition and sets the next deadline. A raising callback is logged and counted
(``errors.deadlines``); the thread carries on.

This module imports nothing from the engine's other parts.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from ..counters import Counters

__all__ = ["Deadlines", "Alarm", "SWEEP_MIN"]

SWEEP_MIN = 64
"""Cancelled deadlines the heap may hold before a sweep takes them out (see the module
docstring)."""


class Alarm:
    """One callback set for a time; :meth:`cancel` takes it back (idempotent)."""

    __slots__ = ("when", "fn", "cancelled", "on_cancel")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn: Callable[[], None] | None = fn
        self.cancelled = False
        # Set by the deadlines that hold it: counts it among the entries to sweep out.
        self.on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        """Do not call the callback (if it has not run yet); drops the reference to it."""
        on_cancel = self.on_cancel
        if on_cancel is not None:
            on_cancel()
        else:
            self.cancelled = True
            self.fn = None


class Deadlines:
    """Callbacks called at their time on one thread; see the module docstring.

    Args:
        counters: where raising callbacks are counted (``errors.deadlines``).
        log: the engine's logger.
        prefix: the thread name prefix (``gossip-<node>``).
    """

    def __init__(self, counters: Counters,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger], prefix: str) -> None:
        self._counters = counters
        self._log = log
        self._name = f"{prefix}-deadlines"
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Alarm]] = []
        self._dead = 0  # cancelled alarms still in the heap
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def at(self, when: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn()`` on the deadlines thread at ``when`` (``time.monotonic()`` seconds).

        After :meth:`close` the callback is never called (the caller's own close path ends
        what it was waiting for).
        """
        d = Alarm(when, fn)
        d.on_cancel = lambda: self._cancel(d)
        with self._cond:
            if self._closed:
                d.cancelled = True
                d.fn = None
                return d
            heap = self._heap
            if self._dead > SWEEP_MIN and self._dead * 2 > len(heap):
                heap[:] = [e for e in heap if not e[2].cancelled]
                heapq.heapify(heap)
                self._dead = 0
            heapq.heappush(heap, (when, next(self._seq), d))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is d:
                self._cond.notify()
        return d

    def _cancel(self, d: Alarm) -> None:
        with self._cond:
            if not d.cancelled:  # still in the heap: one more entry to sweep out
                self._dead += 1
            d.cancelled = True
            d.fn = None

    def after(self, seconds: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn()`` in ``seconds`` (see :meth:`at`)."""
        return self.at(time.monotonic() + max(0.0, seconds), fn)

    def __len__(self) -> int:
        """Deadlines in the heap: those set and not yet due, and cancelled ones not yet swept
        out (at most about as many as the others, see the module docstring)."""
        return len(self._heap)

    def close(self) -> None:
        """Drop every deadline and wake the thread, which ends."""
        with self._cond:
            self._closed = True
            for _, _, d in self._heap:
                d.cancelled = True
                d.fn = None
            self._heap.clear()
            self._dead = 0
            self._cond.notify_all()

    def join(self, deadline: float) -> list[str]:
        """Join the thread; return its name if it still runs at ``deadline``."""
        t = self._thread
        if t is None or t is threading.current_thread():
            return []
        t.join(max(0.0, deadline - time.monotonic()))
        return [t.name] if t.is_alive() else []

    def _run(self) -> None:
        cond, heap = self._cond, self._heap
        while True:
            with cond:
                while True:
                    if self._closed:
                        return
                    while heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                        self._dead -= 1
                    now = time.monotonic()
                    if heap and heap[0][0] <= now:
                        d = heapq.heappop(heap)[2]
                        fn = d.fn
                        d.fn = None
                        d.cancelled = True  # out of the heap: a late cancel() counts nothing
                        break
                    cond.wait(None if not heap else heap[0][0] - now)
            if fn is None:
                continue
            try:
                fn()
            except Exception:
                self._counters.inc("errors.deadlines")
                self._log.exception("bug: a deadline callback failed")
