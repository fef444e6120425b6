"""The event hub: bounded per-subscriber queues of server-sent events, and the response body
that streams them (:class:`EventHub`, :class:`Subscription`, :class:`EventStream`)."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..cluster import Cluster
from ..errors import (
    ClusterClosed,
    GossipError,
)
from ..node import Node
from ..packet import Packet
from ..protocol.insight import ClusterEvent

from .forms import cluster_event_json, dumps, node_json

__all__ = ["TooManySubscribers", "Subscription", "EventStream", "EventHub"]

class TooManySubscribers(GossipError):
    """The event hub already has its most subscribers (``Config.http_max_event_streams``)."""


class Subscription:
    """One subscriber's queue of encoded events, bounded in bytes (see :class:`EventHub`).

    Items are ``(kind, data, encoded)``: the event's kind, its JSON-able data and its
    server-sent-event bytes. :meth:`get` returns the next one, ``None`` once the hub closed.
    """

    __slots__ = ("max_bytes", "_items", "_bytes", "_cond", "_closed", "_on_drop")

    def __init__(self, max_bytes: int, on_drop: Callable[[int], None]) -> None:
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[str, dict[str, Any], bytes]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._on_drop = on_drop

    @property
    def queued_bytes(self) -> int:
        """Bytes of the events waiting."""
        return self._bytes

    def put(self, item: tuple[str, dict[str, Any], bytes]) -> None:
        """Queue an event, dropping the oldest ones while the queue is over its bytes."""
        dropped = 0
        with self._cond:
            if self._closed:
                return
            self._items.append(item)
            self._bytes += len(item[2])
            while self._bytes > self.max_bytes and len(self._items) > 1:
                old = self._items.popleft()
                self._bytes -= len(old[2])
                dropped += 1
            self._cond.notify()
        if dropped:
            self._on_drop(dropped)

    def get(self, timeout: float | None = None) -> tuple[str, dict[str, Any], bytes] | None:
        """Return the next event (``None`` when the hub closed).

        Raises:
            queue.Empty: nothing came within ``timeout`` seconds.
        """
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._bytes -= len(item[2])
                return item
            if self._closed:
                return None
        raise queue.Empty

    def close(self) -> None:
        """End the subscription: :meth:`get` returns ``None`` once the queue is empty."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()


class EventStream:
    """A WSGI response body of server-sent events that gives back its subscription when closed,
    whether or not the server ever started reading it (a client that left at once)."""

    __slots__ = ("_events", "_unsubscribe")

    def __init__(self, events: Iterator[bytes], unsubscribe: Callable[[], None]) -> None:
        self._events = events
        self._unsubscribe = unsubscribe

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        """End the stream and unsubscribe (idempotent)."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
        self._unsubscribe()


class EventHub:
    """Fans one cluster's state, metadata, message and cluster events out to any number of
    subscribers (at most ``max_subscribers``).

    Each event is encoded once; each subscriber holds at most ``max_queue_bytes`` of them, and
    when a slow one falls that far behind its oldest events are dropped (counted in
    :attr:`dropped`), so a stuck client never holds memory or slows the cluster's event thread.
    A message payload whose JSON is longer than ``max_payload_bytes`` is replaced by
    ``{"truncated": true, "bytes": n, "prefix": "..."}`` (counted in :attr:`truncated`).

    Args:
        cluster: the cluster whose events to publish (handlers are added at once).
        max_queue_bytes: the bound of each subscriber's queue (default
            ``cluster.config.http_event_queue_bytes``).
        max_subscribers: the most subscribers at once (default ``http_max_event_streams``).
        max_payload_bytes: the longest message payload shown whole (default
            ``http_event_payload_bytes``).
    """

    def __init__(self, cluster: Cluster, max_queue_bytes: int | None = None,
                 max_subscribers: int | None = None, max_payload_bytes: int | None = None) -> None:
        cfg = cluster.config
        self.cluster = cluster
        self.max_queue_bytes = cfg.http_event_queue_bytes if max_queue_bytes is None else max_queue_bytes
        self.max_subscribers = cfg.http_max_event_streams if max_subscribers is None else max_subscribers
        self.max_payload_bytes = (cfg.http_event_payload_bytes if max_payload_bytes is None
                                  else max_payload_bytes)
        self.dropped = 0
        self.truncated = 0
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._closed = False
        self._handlers = (cluster.handle_node_state_change_func(self._on_state),
                          cluster.handle_node_metadata_change_func(self._on_metadata),
                          cluster.handle_cluster_event_func(self._on_cluster_event))

    def _member(self, node: Node) -> dict[str, Any]:
        return node_json(node, local=self.cluster.node_is_local(node))

    def _on_state(self, node: Node, previous: Any) -> None:
        self.publish("state", {"node": self._member(node), "previous": str(previous)})

    def _on_metadata(self, node: Node) -> None:
        self.publish("metadata", {"node": self._member(node)})

    def _on_cluster_event(self, ev: ClusterEvent) -> None:
        kind, data = cluster_event_json(ev)
        self.publish(kind, data)

    def on_message(self, sender: Node, packet: Packet) -> None:
        """A message handler (``cluster.handle_func(t, hub.on_message)``) publishing ``message``."""
        data: object
        limit = self.max_payload_bytes
        truncated = True
        if len(packet.payload) > 64 * limit:     # not worth decoding to show a prefix
            data = {"truncated": True, "bytes": len(packet.payload), "prefix": ""}
        else:
            try:
                data = packet.unmarshal()
            except GossipError as exc:
                data = {"undecodable": str(exc)[:200]}
            text = dumps(data)
            truncated = len(text) > limit
            if truncated:
                data = {"truncated": True, "bytes": len(text), "prefix": text[:limit]}
        if truncated:
            with self._lock:
                self.truncated += 1
        self.publish("message", {"type": packet.msg_type, "data": data, "from": self._member(sender)})

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one event for every subscriber (``at`` is set to the wall-clock time)."""
        data = dict(data, at=time.time())
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        item = (kind, data, sse_event(kind, data))
        for sub in subs:
            sub.put(item)

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n

    def subscribe(self) -> Subscription:
        """Return a new subscription (its :meth:`~Subscription.get` gives ``None`` once the hub
        closed).

        Raises:
            ClusterClosed: the hub is closed.
            TooManySubscribers: ``max_subscribers`` are subscribed already.
        """
        sub = Subscription(self.max_queue_bytes, self._count_dropped)
        with self._lock:
            if self._closed:
                raise ClusterClosed("the event hub is closed")
            if len(self._subs) >= self.max_subscribers:
                raise TooManySubscribers(f"{len(self._subs)} event streams are open already, the most "
                                         "allowed (http_max_event_streams); try again later")
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription."""
        with self._lock:
            self._subs.discard(sub)
        sub.close()

    @property
    def subscribers(self) -> int:
        """How many subscribers are connected now."""
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """Remove the cluster handlers and end every subscription (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subs)
        self.cluster.remove_node_state_change_handler(self._handlers[0])
        self.cluster.remove_node_metadata_change_handler(self._handlers[1])
        self.cluster.remove_cluster_event_handler(self._handlers[2])
        for sub in subs:
            sub.close()



def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {dumps(data)}\n\n".encode()
