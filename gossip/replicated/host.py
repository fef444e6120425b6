"""The threaded host of a replicated map: :class:`ReplicatedMap` on top of a :class:`gossip.Cluster`.

Each map owns one thread, ``gossip-<node>-map``, which runs anti-entropy every
``sync_interval`` and calls the map's change handlers, in the order the changes were applied,
one at a time, with no lock held. Every replicated map of a cluster shares one message type
(``MapConfig.msg_type``): the first map registers the handler, which hands each message to the
map it names (messages for maps this node does not hold are counted and dropped).

Local writes are broadcast at once (:meth:`gossip.Cluster.send`, epidemic and best effort);
anti-entropy with a random peer repairs what was lost, and a node that comes alive is synced
with at once, so a late joiner receives the whole map within a round trip or two.

Authentication: on a cluster that seals its packets, map messages are accepted only from
sealed packets of known members. Without a key, any host that can reach a node can write any
key of any map: the map says so in a warning when it is created.

This module uses only the public :class:`gossip.Cluster` API.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import GossipError
from ..handlers import EventHandlers, HandlerID
from ..node import Node, NodeID, NodeState
from .core import (
    Broadcast, Changed, MapAction, MapConfig, MapCore, MapMessage, SendTo, decode_map_message, encode_map_message,
)

if TYPE_CHECKING:
    from ..cluster import Cluster
    from ..groups import NodeGroup
    from ..packet import Packet

__all__ = ["ReplicatedMap", "ChangeHandler"]

logger = logging.getLogger("gossip.replicated")

ChangeHandler = Callable[[Changed], None]
"""``fn(change)``: a key changed (see :class:`gossip.replicated.Changed`)."""

_MISSING = object()


class _Hub:
    """The one message handler of a cluster's maps of one message type."""

    def __init__(self, cluster: Cluster, msg_type: int) -> None:
        self.cluster = cluster
        self.msg_type = msg_type
        self.maps: dict[str, ReplicatedMap] = {}
        self.stats: dict[str, int] = {}
        self.lock = threading.Lock()
        self.authenticate = cluster.keyring is not None and cluster.config.encrypt_outgoing

    def count(self, name: str) -> None:
        with self.lock:
            self.stats[name] = self.stats.get(name, 0) + 1

    def on_message(self, sender: Node, packet: Packet) -> None:
        if sender.state is NodeState.UNKNOWN:
            self.count("messages_from_unknown")
            return
        if self.authenticate and not packet.encrypted:
            self.count("messages_unauthenticated")
            return
        try:
            msg = decode_map_message(packet.unmarshal())
        except (GossipError, ValueError) as exc:
            self.count("messages_malformed")
            logger.debug("! malformed map message from %s: %s", sender.id.short, exc)
            return
        with self.lock:
            target = self.maps.get(msg.map)
        if target is None:
            self.count("messages_unknown_map")
            return
        target._receive(sender.id, msg)


_hubs_lock = threading.Lock()
_hubs: weakref.WeakKeyDictionary[Cluster, dict[int, _Hub]] = weakref.WeakKeyDictionary()


def _attach(cluster: Cluster, m: ReplicatedMap) -> _Hub:
    with _hubs_lock:
        by_type = _hubs.setdefault(cluster, {})
        hub = by_type.get(m.config.msg_type)
        if hub is None:
            hub = _Hub(cluster, m.config.msg_type)
            cluster.handle_func(m.config.msg_type, hub.on_message)     # may raise HandlerExistsError
            by_type[m.config.msg_type] = hub
        with hub.lock:
            if m.name in hub.maps:
                raise ValueError(f"this cluster already has a replicated map named {m.name!r}")
            hub.maps[m.name] = m
        return hub


def _detach(cluster: Cluster, m: ReplicatedMap) -> None:
    with _hubs_lock:
        by_type = _hubs.get(cluster, {})
        hub = by_type.get(m.config.msg_type)
        if hub is None:
            return
        with hub.lock:
            if hub.maps.get(m.name) is m:
                del hub.maps[m.name]
            empty = not hub.maps
        if empty:
            cluster.unregister_message_type(m.config.msg_type)
            del by_type[m.config.msg_type]


class ReplicatedMap:
    """A small table every node sees: last writer wins, by hybrid logical clock.

    ::

        config = ReplicatedMap(cluster, "config")
        config.set("feature.search", {"enabled": True})
        config.get("feature.search")            # on every node, within a round trip or two

    Every node that creates a map of the same name holds a copy; writes spread by broadcast and
    anti-entropy repairs the rest (see :mod:`gossip.replicated.core` for the rules).

    Args:
        cluster: the cluster (started before or after).
        name: the map's name (1..128 characters), the same on every node.
        config: the map's settings.
        group: the nodes to run anti-entropy with (its members); None: every alive node.

    Raises:
        ValueError: ``name`` is malformed, or this cluster already has a map of that name.
        HandlerExistsError: ``config.msg_type`` has another handler on this cluster.
    """

    def __init__(self, cluster: Cluster, name: str, config: MapConfig | None = None,
                 group: NodeGroup | None = None) -> None:
        self._cluster = cluster
        self.config = config if config is not None else MapConfig()
        self._me = cluster.local_node().id
        self._core = MapCore(self._me, name, self.config, cluster.local_metadata().clock, random.Random(),
                             time.monotonic())
        self.name = self._core.name
        """The map's name."""
        self._criteria = group.criteria if group is not None else None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events: collections.deque[Changed] = collections.deque()
        self._handlers: EventHandlers[ChangeHandler] = EventHandlers()
        self._stats: dict[str, int] = {}
        # A first round at once (a late joiner fetches all), queued before the thread starts:
        # queued after, it could find the thread already waiting for the periodic round.
        self._sync_with: list[NodeID] = [self._me]
        self._closed = False
        self._hub = _attach(cluster, self)
        if not self._hub.authenticate:
            logger.warning("replicated map %r on a cluster that does not seal its packets: any host that can "
                           "send a packet to a node can write to it (set Config.encryption_key)", self.name)
        self._state_hid = cluster.handle_node_state_change_func(self._on_state)
        self._thread = threading.Thread(target=self._run, name=f"gossip-{self._me.short}-map", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ reads

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it has none."""
        with self._lock:
            found, value = self._core.get(key)
        return value if found else default

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._lock:
            return self._core.get(key)[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._core)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])

    def items(self) -> list[tuple[str, Any]]:
        """Return the ``(key, value)`` pairs, sorted by key."""
        with self._lock:
            return self._core.items()

    def keys(self) -> list[str]:
        """Return the keys, sorted."""
        return [k for k, _ in self.items()]

    def snapshot(self) -> dict[str, Any]:
        """Return a copy of the whole map as a dict."""
        with self._lock:
            return self._core.snapshot()

    def stats(self) -> dict[str, int]:
        """Return the map's counters (writes, merges, syncs, refusals by reason, and the
        messages the cluster's map handler refused)."""
        with self._lock:
            out = dict(self._stats)
            out.update(self._core.stats)
        with self._hub.lock:
            out.update(self._hub.stats)
        return out

    # ------------------------------------------------------------------ writes

    def set(self, key: str, value: Any) -> None:
        """Write ``value`` under ``key`` here and on every node.

        Raises:
            ValueError: the key or value is malformed or too large.
            MapFull: the map is full and ``key`` is new.
            ClusterClosed: the map is closed.
        """
        self._local(lambda core: core.set(key, value))

    def delete(self, key: str) -> bool:
        """Delete ``key`` here and on every node; return False if it had no value.

        Raises:
            ValueError: the key is malformed.
            ClusterClosed: the map is closed.
        """
        return self._local(lambda core: core.delete(key)) is not None

    def on_change(self, fn: ChangeHandler) -> HandlerID:
        """Call ``fn(change)`` for every change of the map, local or remote, on the map's thread,
        in the order the changes were applied; return an id for :meth:`remove_change_handler`."""
        return self._handlers.add(fn)

    def remove_change_handler(self, handler_id: HandlerID) -> bool:
        """Remove a handler added by :meth:`on_change`; return False if unknown."""
        return self._handlers.remove(handler_id)

    def sync(self, node: Node | None = None) -> None:
        """Run anti-entropy now, with ``node`` or a random peer."""
        with self._lock:
            self._sync_with.append(node.id if node is not None else self._me)
            self._cond.notify_all()

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and detach from the cluster (the local copy stays readable). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._cluster.remove_node_state_change_handler(self._state_hid)
        _detach(self._cluster, self)

    def __enter__(self) -> ReplicatedMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ReplicatedMap {self.name!r}: {len(self)} keys>"

    # ------------------------------------------------------------------ internals

    def _local(self, fn: Callable[[MapCore], Any]) -> Any:
        from ..errors import ClusterClosed

        with self._lock:
            if self._closed:
                raise ClusterClosed(f"replicated map {self.name!r} is closed")
            result = fn(self._core)
            actions = self._take()
        self._perform(actions)
        return result

    def _take(self) -> list[MapAction]:
        """Queue the core's change events for the handlers (bounded); return the sends."""
        assert self._lock.locked()
        sends: list[MapAction] = []
        for a in self._core.actions_to_perform():
            if isinstance(a, Changed):
                if len(self._events) >= self.config.event_queue_size:
                    self._events.popleft()
                    self._count("events_dropped")
                self._events.append(a)
                self._cond.notify_all()
            else:
                sends.append(a)
        return sends

    def _perform(self, actions: list[MapAction]) -> None:
        mt = self.config.msg_type
        for a in actions:
            try:
                if isinstance(a, Broadcast):
                    self._cluster.send(mt, encode_map_message(a.msg))
                elif isinstance(a, SendTo):
                    node = self._cluster.get_node(a.node)
                    if node is not None:
                        self._cluster.send_to(node, mt, encode_map_message(a.msg))
            except GossipError as exc:
                with self._lock:
                    self._count("send_errors")
                logger.debug("! map message not sent: %s", exc)

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + n

    def _receive(self, sender: NodeID, msg: MapMessage) -> None:
        with self._lock:
            if self._closed:
                return
            self._core.receive(time.monotonic(), sender, msg)
            actions = self._take()
        self._perform(actions)

    def _on_state(self, node: Node, prev: NodeState) -> None:
        if node.state is NodeState.ALIVE and prev is not NodeState.ALIVE and node.id != self._me:
            if self._criteria is None or self._criteria.matches_node(node):
                with self._lock:
                    self._sync_with.append(node.id)    # a newcomer (or one back): sync with it now
                    self._cond.notify_all()

    def _peers(self) -> list[NodeID]:
        crit = self._criteria
        return [n.id for n in self._cluster.nodes()
                if n.state is NodeState.ALIVE and n.id != self._me and (crit is None or crit.matches_node(n))]

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._events and not self._sync_with:
                    left = self._core.next_deadline() - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
                events = list(self._events)
                self._events.clear()
                asked, self._sync_with = self._sync_with, []
            try:
                for change in events:
                    for fn in self._handlers:
                        try:
                            fn(change)
                        except Exception:
                            with self._lock:
                                self._count("handler_errors")
                            logger.exception("replicated map %r: change handler %r raised", self.name, fn)
                peers = self._peers()
                with self._lock:
                    now = time.monotonic()
                    for node in asked:
                        if node != self._me:
                            self._core.sync_with(node)
                        elif peers:
                            self._core.sync_with(peers[random.randrange(len(peers))])
                    self._core.tick(now, peers)
                    actions = self._take()
                self._perform(actions)
            except Exception:
                logger.exception("bug: replicated map %r tick failed", self.name)
