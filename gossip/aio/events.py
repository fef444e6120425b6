"""Membership and cluster events as an async iterator, one bounded queue per subscriber.

The engine delivers events on its event thread, in order (:mod:`gossip.engine.events`). A
subscription (:class:`Events`, from :meth:`gossip.aio.Cluster.events`) registers handlers
there that only append to the subscription's own queue and, when its consumer is waiting,
wake it on its loop. The event thread never waits for a consumer: a full queue drops its
oldest event, and the consumer's next item is one :class:`EventsLost` saying how many it missed
(they were the oldest, so the marker stands where they were), followed by what remained, in
order.

This module imports the node snapshot and the cluster event types (where :mod:`gossip` takes
them from; not the package root, which imports this package).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Union

from ..joining import JoinAttemptFailed, JoinSucceeded
from ..protocol.actions import MemberRefused
from ..protocol.flap import MemberFlapping
from ..protocol.partition import PartitionHealed, PartitionSuspected
from ..node import Node, NodeState

if TYPE_CHECKING:
    from ..cluster import Cluster as SyncCluster
    from ..handlers import HandlerID

__all__ = ["Events", "Event", "EventsLost", "NodeStateChanged", "NodeMetadataChanged"]


@dataclass(frozen=True, slots=True)
class NodeStateChanged:
    """A node changed state (``node`` is the snapshot taken then; a forgotten member arrives as
    a change to ``NodeState.UNKNOWN``)."""

    node: Node
    previous: NodeState


@dataclass(frozen=True, slots=True)
class NodeMetadataChanged:
    """A node's metadata changed (the local node's too)."""

    node: Node


@dataclass(frozen=True, slots=True)
class EventsLost:
    """``count`` events were dropped, the oldest first, because the subscriber's queue was full;
    the events that follow came after them."""

    count: int


Event = Union[NodeStateChanged, NodeMetadataChanged, MemberFlapping, PartitionSuspected,
              PartitionHealed, MemberRefused, JoinSucceeded, JoinAttemptFailed, EventsLost]
"""What :meth:`gossip.aio.Cluster.events` yields."""


class _Queue:
    """The part the event thread touches: a bounded deque, the lost count, the wake-up."""

    def __init__(self, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        self.maxsize = maxsize
        self.loop = loop
        self.lock = threading.Lock()
        self.items: deque[Event] = deque()
        self.lost = 0
        self.waiter: asyncio.Future[None] | None = None  # the consumer waits (loop side)
        self.woken = False
        self.ended = False

    def push(self, event: Event) -> None:
        """Event thread: queue ``event``, dropping the oldest when full; never waits."""
        with self.lock:
            if self.ended:
                return
            if len(self.items) >= self.maxsize:
                self.items.popleft()
                self.lost += 1
            self.items.append(event)
            wake = self.waiter is not None and not self.woken
            if wake:
                self.woken = True
        if wake:
            self._wake()

    def end(self) -> None:
        """No more events (the subscription or the cluster ended)."""
        with self.lock:
            self.ended = True
            wake = self.waiter is not None and not self.woken
            self.woken = True
        if wake:
            self._wake()

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _set(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class Events:
    """One subscription to a cluster's events: ``async for event in cluster.events():``.

    Yields :class:`NodeStateChanged`, :class:`NodeMetadataChanged`,
    :class:`~gossip.MemberFlapping`, :class:`~gossip.PartitionSuspected` and
    :class:`~gossip.PartitionHealed`, :class:`~gossip.MemberRefused`,
    :class:`~gossip.JoinSucceeded` and :class:`~gossip.JoinAttemptFailed` in the order the
    engine emitted them, and an
    :class:`EventsLost` where events were dropped. Iteration ends when the cluster stops (after
    what was queued) or the subscription is closed (:meth:`aclose`, or the end of an
    ``async with`` block). A subscription that is dropped without being closed unsubscribes
    when it is collected.
    """

    def __init__(self, cluster: SyncCluster, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._queue = q = _Queue(maxsize, asyncio.get_running_loop())
        state_id = cluster.handle_node_state_change_func(
            lambda node, prev: q.push(NodeStateChanged(node, prev)))
        meta_id = cluster.handle_node_metadata_change_func(
            lambda node: q.push(NodeMetadataChanged(node)))
        cluster_id = cluster.handle_cluster_event_func(q.push)
        self._unsubscribe: Callable[[], None] = weakref.finalize(
            self, _unsubscribe, cluster, q, state_id, meta_id, cluster_id)

    @property
    def maxsize(self) -> int:
        """The most events held for this subscriber."""
        return self._queue.maxsize

    def end(self) -> None:
        """End the subscription after what is queued (the cluster stops)."""
        self._unsubscribe()

    async def aclose(self) -> None:
        """Unsubscribe now; iteration ends at once (what was queued is discarded)."""
        self._unsubscribe()
        with self._queue.lock:
            self._queue.items.clear()
            self._queue.lost = 0

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> Event:
        q = self._queue
        while True:
            with q.lock:
                if q.lost:
                    lost, q.lost = q.lost, 0
                    return EventsLost(lost)
                if q.items:
                    return q.items.popleft()
                if q.ended:
                    raise StopAsyncIteration
                waiter = q.waiter = q.loop.create_future()
                q.woken = False
            try:
                await waiter
            finally:
                with q.lock:
                    q.waiter = None

    async def __aenter__(self) -> Events:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def _unsubscribe(cluster: SyncCluster, q: _Queue, state_id: HandlerID, meta_id: HandlerID,
                 cluster_id: HandlerID) -> None:
    cluster.remove_node_state_change_handler(state_id)
    cluster.remove_node_metadata_change_handler(meta_id)
    cluster.remove_cluster_event_handler(cluster_id)
    q.end()
