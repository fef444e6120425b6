"""The scheduler thread: the protocol clock.

It sleeps on the core lock's condition until the core's next deadline (probe rounds, ack and
suspicion timeouts, gossip rounds, push/pull, maintenance), the next message-history GC, or the
end of the short window in which a burst of local metadata writes is gathered into one update;
a core call that brings a deadline forward wakes it (:meth:`CoreHost._maybe_wake`).

Whatever the core does, this thread survives: an exception from a timer or a metadata update
is logged as a bug, counted (``errors.scheduler``), and the next deadline is served as usual,
so a node can never stop probing while it still answers pings.

This module imports the core host and the metadata; it performs actions through the engine.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING

from ..node import NodeState
from ..protocol.actions import Action

if TYPE_CHECKING:
    from . import Engine

__all__ = ["Scheduler", "META_COALESCE"]

META_COALESCE = 0.01
"""Seconds a burst of local metadata writes is gathered into one update."""
_MAX_SLEEP = 5.0


class Scheduler:
    """Runs the core's timers on one thread (``gossip-<node>-scheduler``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.meta_dirty_at = 0.0  # monotonic time of the first unpropagated local write (lock)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{engine.prefix}-scheduler")

    @property
    def thread(self) -> threading.Thread:
        """The scheduler thread."""
        return self._thread

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def metadata_written(self) -> None:
        """A local metadata write happened: propagate it after the coalescing window."""
        host = self.engine.host
        with host.wake:
            if not self.meta_dirty_at:
                self.meta_dirty_at = time.monotonic()
                host.wake.notify()

    def stop(self) -> None:
        """Wake the thread so that it sees the stop flag."""
        host = self.engine.host
        with host.wake:
            host.wake.notify_all()

    def _run(self) -> None:
        engine = self.engine
        host = engine.host
        core = host.core
        receiver = engine.receiver
        gc_every = engine.config.msg_history_gc_interval
        next_gc = time.monotonic() + gc_every
        stop = engine.stop_event
        while not stop.is_set():
            actions: list[Action] = []
            propagate_meta = False
            with host.wake:
                now = time.monotonic()
                deadline = core.next_deadline()
                if receiver.history_size:
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
                    engine.counters.inc("errors.scheduler")
                    engine.log.exception("bug: core.tick failed")
                if self.meta_dirty_at and now >= self.meta_dirty_at + META_COALESCE:
                    self.meta_dirty_at = 0.0
                    values, stamp = engine.metadata.snapshot()
                    try:
                        core.set_local_metadata(now, values, stamp)
                        propagate_meta = True
                    except Exception:
                        engine.counters.inc("errors.scheduler")
                        engine.log.exception("bug: core.set_local_metadata failed")
                actions = core.actions_to_perform()
            try:
                engine.perform(actions, None)
                if propagate_meta:
                    engine.emit(("metadata", engine.local_node(), NodeState.ALIVE))
                if now >= next_gc:
                    next_gc = now + gc_every
                    receiver.gc_history(now)
            except Exception:
                engine.counters.inc("errors.scheduler")
                engine.log.exception("bug: the scheduler failed to perform its actions")
