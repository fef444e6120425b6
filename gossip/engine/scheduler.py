"""The scheduler thread: the protocol clock.

It sleeps on the core lock's condition until the core's next deadline (probe rounds, ack and
suspicion timeouts, gossip rounds, push/pull, maintenance), the next message-history GC, or the
end of the short window in which a burst of local metadata writes is gathered into one update;
a core call that brings a deadline forward wakes it (:meth:`CoreHost._maybe_wake`).

Whatever the core does, this thread survives: an exception from a timer or a metadata update
is logged as a bug, counted (``errors.scheduler``), and the next deadline is served as usual,
so a node can never stop probing while it still answers pings.

This module imports the core host; it is given what it drives: the history to forget, where to
perform the actions, where to read the local metadata, and the stop flag.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..counters import Counters
from ..protocol.actions import Action
from .host import CoreHost

__all__ = ["Scheduler", "History", "META_COALESCE"]

META_COALESCE = 0.01
"""Seconds a burst of local metadata writes is gathered into one update."""
_MAX_SLEEP = 5.0


class History(Protocol):
    """What the scheduler forgets on its clock: the duplicate history of user messages."""

    @property
    def size(self) -> int:
        """Entries held (0: no garbage collection is due)."""
        ...

    def gc(self, now: float) -> None:
        """Forget the entries past their age."""
        ...


class Scheduler:
    """Runs the core's timers on one thread (``<prefix>-scheduler``).

    Args:
        host: the core's host; the thread sleeps on its condition, under its lock.
        history: the duplicate history, garbage-collected every ``gc_interval``.
        perform: ``perform(actions)`` carries out the actions of a tick (lock released).
        metadata: ``metadata()`` returns the local metadata's ``(values, stamp)``.
        on_metadata: called after the local metadata went to the core (lock released).
        stop: set when the engine stops.
        gc_interval: seconds between garbage collections of ``history``.
        counters: where failures are counted (``errors.scheduler``).
        log: the engine's logger.
        prefix: the thread name prefix (``gossip-<node>``).
    """

    def __init__(self, host: CoreHost, *, history: History,
                 perform: Callable[[Sequence[Action]], None],
                 metadata: Callable[[], tuple[dict[str, Any], int]],
                 on_metadata: Callable[[], None], stop: threading.Event, gc_interval: float,
                 counters: Counters, log: logging.Logger | logging.LoggerAdapter[logging.Logger],
                 prefix: str) -> None:
        self._host = host
        self._history = history
        self._perform = perform
        self._metadata = metadata
        self._on_metadata = on_metadata
        self._stop = stop
        self._gc_interval = gc_interval
        self._counters = counters
        self._log = log
        self.meta_dirty_at = 0.0  # monotonic time of the first unpropagated local write (lock)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{prefix}-scheduler")

    @property
    def thread(self) -> threading.Thread:
        """The scheduler thread."""
        return self._thread

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def metadata_written(self) -> None:
        """A local metadata write happened: propagate it after the coalescing window."""
        wake = self._host.wake
        with wake:
            if not self.meta_dirty_at:
                self.meta_dirty_at = time.monotonic()
                wake.notify()

    def metadata_sent(self) -> None:
        """The local metadata is being propagated now: nothing is left to coalesce."""
        with self._host.wake:
            self.meta_dirty_at = 0.0

    def stop(self) -> None:
        """Wake the thread so that it sees the stop flag."""
        wake = self._host.wake
        with wake:
            wake.notify_all()

    def _run(self) -> None:
        host = self._host
        core = host.core
        history = self._history
        gc_every = self._gc_interval
        next_gc = time.monotonic() + gc_every
        stop = self._stop
        counters, log = self._counters, self._log
        while not stop.is_set():
            actions: list[Action] = []
            propagate_meta = False
            with host.wake:
                now = time.monotonic()
                deadline = core.next_deadline()
                if history.size:
                    deadline = min(deadline, next_gc)  # nothing to forget: no wake-up for it
                if self.meta_dirty_at:
                    deadline = min(deadline, self.meta_dirty_at + META_COALESCE)
                if deadline > now:
                    host.planned = deadline
                    host.wake.wait(min(deadline - now, _MAX_SLEEP))
                    host.planned = math.inf
                    continue
                if stop.is_set():
                    break
                try:
                    core.tick(now)
                except Exception:
                    counters.inc("errors.scheduler")
                    log.exception("bug: core.tick failed")
                if self.meta_dirty_at and now >= self.meta_dirty_at + META_COALESCE:
                    self.meta_dirty_at = 0.0
                    values, stamp = self._metadata()
                    try:
                        core.set_local_metadata(now, values, stamp)
                        propagate_meta = True
                    except Exception:
                        counters.inc("errors.scheduler")
                        log.exception("bug: core.set_local_metadata failed")
                actions = core.actions_to_perform()
            try:
                self._perform(actions)
                if propagate_meta:
                    self._on_metadata()
                if now >= next_gc:
                    next_gc = now + gc_every
                    history.gc(now)
            except Exception:
                counters.inc("errors.scheduler")
                log.exception("bug: the scheduler failed to perform its actions")
