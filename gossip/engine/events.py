"""Membership events and user gossip callbacks, each on a thread of its own.

* The event thread (``gossip-<node>-events``) delivers node state and metadata changes, and
  the core's cluster events (flapping members, partitions), to the registered handlers in the
  order they happened, never two at once, from a bounded queue
  (if handlers fall far behind, the oldest events are dropped, counted and warned about,
  rather than memory grow).
* The gossip thread (``gossip-<node>-gossip``) calls the user gossip callbacks every
  ``gossip_interval``, stretching the interval while the callbacks are slow (paularlott's
  adaptive interval) and shrinking it back once they are fast again. While no callback is
  registered it sleeps without a timeout (an idle node's thread wakes for nothing); the first
  registration wakes it, and the first call comes ``gossip_interval`` later.

A raising handler is logged and counted; it never stops later events.

This module imports the handler registries and the workers' queue; the engine hands it its
settings, its counters and log, and the stop flag it shares with the other threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..counters import Counters
from ..handlers import EventHandlers
from ..node import Node, NodeState
from ..protocol.insight import ClusterEvent
from ..workers import BoundedQueue, QueueClosed

__all__ = ["EventLoop", "StateHandler", "MetadataHandler", "GossipHandler", "ClusterEventHandler",
           "EVENT_QUEUE_SIZE"]

StateHandler = Callable[[Node, NodeState], None]
"""``fn(node, previous_state)``: called on the event thread when a node changes state."""
MetadataHandler = Callable[[Node], None]
"""``fn(node)``: called on the event thread when a node's metadata changes."""
GossipHandler = Callable[[], None]
"""``fn()``: called on the gossip thread every ``gossip_interval``."""
ClusterEventHandler = Callable[[ClusterEvent], None]
"""``fn(event)``: called on the event thread with a ``MemberFlapping``, ``PartitionSuspected``,
``PartitionHealed`` or ``MemberRefused``."""

EVENT_QUEUE_SIZE = 65536
"""Events held for the event thread before the oldest are dropped."""

Event = tuple[str, Any, Any]
"""``("state", node, previous)``, ``("metadata", node, previous)`` or ``("cluster", event, None)``."""


class EventLoop:
    """The event thread and the gossip thread of one engine.

    Args:
        gossip_interval: the base period of the gossip callbacks.
        gossip_max_interval: the longest it stretches to while they are slow.
        stop: set when the engine stops (the gossip thread ends).
        counters: where dropped events and handler errors are counted.
        log: the engine's logger.
        warn: ``warn(key, msg, *args)`` logs a warning at most once per interval per key.
        prefix: thread names are ``<prefix>-events`` and ``<prefix>-gossip``.
    """

    def __init__(self, gossip_interval: float, gossip_max_interval: float, stop: threading.Event,
                 counters: Counters, log: logging.Logger | logging.LoggerAdapter[logging.Logger],
                 warn: Callable[..., None], prefix: str) -> None:
        self._base_interval = gossip_interval
        self._max_interval = gossip_max_interval
        self._stop = stop
        self._counters = counters
        self._log = log
        self._warn = warn
        self.state_handlers: EventHandlers[StateHandler] = EventHandlers()
        self.metadata_handlers: EventHandlers[MetadataHandler] = EventHandlers()
        self._closed = False
        self._gossip_lock = threading.Lock()     # orders _closed with the handler count
        self._gossip_wanted = threading.Event()  # set while gossip handlers exist, and on close
        self.gossip_handlers: EventHandlers[GossipHandler] = EventHandlers(self._gossip_count)
        self.cluster_handlers: EventHandlers[ClusterEventHandler] = EventHandlers()
        self.queue: BoundedQueue[Event] = BoundedQueue(
            EVENT_QUEUE_SIZE, policy="drop_oldest", name=f"{prefix}-events")
        self.gossip_interval = gossip_interval
        self.threads = [
            threading.Thread(target=self._events, daemon=True, name=f"{prefix}-events"),
            threading.Thread(target=self._gossip, daemon=True, name=f"{prefix}-gossip"),
        ]

    def start(self) -> None:
        """Start both threads."""
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Stop taking events (the event thread ends; the gossip thread ends with the engine,
        once its stop flag is set: this wakes it if it sleeps for want of a handler)."""
        self.queue.close()
        with self._gossip_lock:
            self._closed = True
            self._gossip_wanted.set()

    def _gossip_count(self, n: int) -> None:
        # Called under the registry's lock, in the order of the changes.
        with self._gossip_lock:
            if n or self._closed:
                self._gossip_wanted.set()
            else:
                self._gossip_wanted.clear()

    def emit(self, event: Event) -> None:
        """Queue an event; count and warn if the oldest had to go."""
        if not self.queue.put(event) and not self.queue.closed:
            self._counters.inc("dropped.events")
            self._warn("events_dropped", "event queue full (%d): handlers are too slow, "
                       "dropping the oldest events", EVENT_QUEUE_SIZE)

    def _events(self) -> None:
        while True:
            try:
                kind, node, prev = self.queue.get()
            except QueueClosed:
                return
            if kind == "state":
                for fn in self.state_handlers:
                    self._call(fn, "state", node, prev)
            elif kind == "cluster":
                for cl_fn in self.cluster_handlers:
                    self._call(cl_fn, "cluster", node)
            else:
                for md_fn in self.metadata_handlers:
                    self._call(md_fn, "metadata", node)

    def _call(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self._counters.inc(f"handler_errors.{what}")
            self._log.exception("%s handler %r raised", what, fn)

    def _gossip(self) -> None:
        base, cap = self._base_interval, self._max_interval
        stop = self._stop
        wanted = self._gossip_wanted
        while True:
            wanted.wait()  # no handler: sleep until one is registered or the engine stops
            if stop.wait(self.gossip_interval):
                return
            handlers = self.gossip_handlers.handlers()
            if not handlers:
                continue
            start = time.monotonic()
            for fn in handlers:
                if stop.is_set():
                    return
                self._call(fn, "gossip")
            d = time.monotonic() - start
            interval = self.gossip_interval
            if d > interval:
                interval = min(1.25 * d, cap)
            elif interval > base and d < 0.8 * interval:
                interval = max(base, (d + interval) / 2)
            self.gossip_interval = interval
