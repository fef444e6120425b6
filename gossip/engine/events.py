"""Membership events and user gossip callbacks, each on a thread of its own.

* The event thread (``gossip-<node>-events``) delivers node state and metadata changes, and
  the core's cluster events (flapping members, partitions), to the registered handlers in the
  order they happened, never two at once, from a bounded queue
  (if handlers fall far behind, the oldest events are dropped, counted and warned about,
  rather than memory grow).
* The gossip thread (``gossip-<node>-gossip``) calls the user gossip callbacks every
  ``gossip_interval``, stretching the interval while the callbacks are slow (paularlott's
  adaptive interval) and shrinking it back once they are fast again.

A raising handler is logged and counted; it never stops later events.

This module imports the handler registries and the workers' queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..handlers import EventHandlers
from ..node import Node, NodeState
from ..protocol.insight import ClusterEvent
from ..workers import BoundedQueue, QueueClosed

if TYPE_CHECKING:
    from . import Engine

__all__ = ["EventLoop", "StateHandler", "MetadataHandler", "GossipHandler", "ClusterEventHandler",
           "EVENT_QUEUE_SIZE"]

StateHandler = Callable[[Node, NodeState], None]
"""``fn(node, previous_state)``: called on the event thread when a node changes state."""
MetadataHandler = Callable[[Node], None]
"""``fn(node)``: called on the event thread when a node's metadata changes."""
GossipHandler = Callable[[], None]
"""``fn()``: called on the gossip thread every ``gossip_interval``."""
ClusterEventHandler = Callable[[ClusterEvent], None]
"""``fn(event)``: called on the event thread with a ``MemberFlapping``, ``PartitionSuspected``
or ``PartitionHealed``."""

EVENT_QUEUE_SIZE = 65536
"""Events held for the event thread before the oldest are dropped."""

Event = tuple[str, Any, Any]
"""``("state", node, previous)``, ``("metadata", node, previous)`` or ``("cluster", event, None)``."""


class EventLoop:
    """The event thread and the gossip thread of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state_handlers: EventHandlers[StateHandler] = EventHandlers()
        self.metadata_handlers: EventHandlers[MetadataHandler] = EventHandlers()
        self.gossip_handlers: EventHandlers[GossipHandler] = EventHandlers()
        self.cluster_handlers: EventHandlers[ClusterEventHandler] = EventHandlers()
        self.queue: BoundedQueue[Event] = BoundedQueue(
            EVENT_QUEUE_SIZE, policy="drop_oldest", name=f"{engine.prefix}-events")
        self.gossip_interval = engine.config.gossip_interval
        self.threads = [
            threading.Thread(target=self._events, daemon=True, name=f"{engine.prefix}-events"),
            threading.Thread(target=self._gossip, daemon=True, name=f"{engine.prefix}-gossip"),
        ]

    def start(self) -> None:
        """Start both threads."""
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Stop taking events (the event thread ends; the gossip thread ends with the engine)."""
        self.queue.close()

    def emit(self, event: Event) -> None:
        """Queue an event; count and warn if the oldest had to go."""
        if not self.queue.put(event) and not self.queue.closed:
            engine = self.engine
            engine.counters.inc("dropped.events")
            engine.warn("events_dropped", "event queue full (%d): handlers are too slow, "
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
            self.engine.counters.inc(f"handler_errors.{what}")
            self.engine.log.exception("%s handler %r raised", what, fn)

    def _gossip(self) -> None:
        cfg = self.engine.config
        base, cap = cfg.gossip_interval, cfg.gossip_max_interval
        stop = self.engine.stop_event
        while not stop.wait(self.gossip_interval):
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
