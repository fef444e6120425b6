"""The deadlines of waiting calls: one thread that fires callbacks at their time.

Calls that return a :class:`concurrent.futures.Future` instead of blocking (a request waiting
for its reply, a join waiting for the seeds' answers, a leave waiting for its
acknowledgements) still need something to end them when their time is up. That is this part:
a heap of ``(when, callback)`` served by one thread (``gossip-<node>-deadlines``), started by
the first deadline set and joined at stop. It is not the protocol clock (the scheduler owns
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

__all__ = ["Deadlines", "Alarm"]


class Alarm:
    """One callback set for a time; :meth:`cancel` takes it back (idempotent)."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn: Callable[[], None] | None = fn
        self.cancelled = False

    def cancel(self) -> None:
        """Do not call the callback (if it has not run yet); drops the reference to it."""
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
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def at(self, when: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn()`` on the deadlines thread at ``when`` (``time.monotonic()`` seconds).

        After :meth:`close` the callback is never called (the caller's own close path ends
        what it was waiting for).
        """
        d = Alarm(when, fn)
        with self._cond:
            if self._closed:
                d.cancel()
                return d
            heapq.heappush(self._heap, (when, next(self._seq), d))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is d:
                self._cond.notify()
        return d

    def after(self, seconds: float, fn: Callable[[], None]) -> Alarm:
        """Call ``fn()`` in ``seconds`` (see :meth:`at`)."""
        return self.at(time.monotonic() + max(0.0, seconds), fn)

    def __len__(self) -> int:
        """Deadlines set and not yet due (cancelled ones included until their time)."""
        return len(self._heap)

    def close(self) -> None:
        """Drop every deadline and wake the thread, which ends."""
        with self._cond:
            self._closed = True
            for _, _, d in self._heap:
                d.cancel()
            self._heap.clear()
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
                    now = time.monotonic()
                    if heap and heap[0][0] <= now:
                        d = heapq.heappop(heap)[2]
                        break
                    cond.wait(None if not heap else heap[0][0] - now)
            fn = d.fn
            d.fn = None
            if fn is None or d.cancelled:
                continue
            try:
                fn()
            except Exception:
                self._counters.inc("errors.deadlines")
                self._log.exception("bug: a deadline callback failed")
