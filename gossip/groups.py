"""Node groups: the members of a cluster whose metadata match a set of criteria.

A :class:`NodeGroup` follows the cluster's state and metadata events and keeps the set of
members that are alive or suspect and match its criteria; a :class:`DataNodeGroup` also keeps one
value per member (a shard map, a connection, a counter...)::

    with gossip.NodeGroup(cluster, {"role": "worker", "zone": "~eu"}) as workers:
        workers.send_to_peers(gossip.USER_MSG, {"job": 7})   # each worker once, nobody else

Criteria map a metadata key to what its value must be; every key must match:

* ``"*"`` (:data:`METADATA_ANY_VALUE`): the key exists, with any value;
* ``"~text"`` (:data:`METADATA_CONTAINS_PREFIX`): the value, as a string, contains ``text``;
* anything else: the value, as a string (:meth:`gossip.MetadataReader.get_string`), is equal.

A :class:`Criteria` may also name tags (``Criteria({"role": "worker"}, tags={"gpu"})``): a node
matches only if it holds every one of them (:attr:`gossip.Node.tags`).

Membership: a node is in the group while it is alive or suspect and matches. It joins when it
starts matching (a metadata change) or comes alive, and leaves when it stops matching, is
declared dead, leaves the cluster or is forgotten. The local node is a member like any other
(from :meth:`gossip.Cluster.start` on); :meth:`NodeGroup.send_to_peers` never sends to it.

Unlike paularlott/gossip's groups, ``on_node_added`` fires once per arrival (never twice for a
node already in the group), no callback runs under a group lock (a callback may call back into
the group), callbacks of one group run one at a time in the order the changes happened, sends
reach the members only, each once, and an empty group sends nothing.

A group is only as trustworthy as the membership and metadata it follows. On an unencrypted
cluster any host that can send a packet to a node can announce a member with matching metadata,
and so join any group (and receive what is sent to it): the first group built on such a cluster
logs a warning saying so. Set ``Config.encryption_key`` where that matters.

This module uses only the public :class:`gossip.Cluster` API.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .node import Node, NodeID, NodeState
from .wire import TransportType, is_reliable

if TYPE_CHECKING:
    from .cluster import Cluster
    from .handlers import HandlerID
    from .metadata import MetadataReader

__all__ = [
    "METADATA_ANY_VALUE",
    "METADATA_CONTAINS_PREFIX",
    "Criteria",
    "NodeGroup",
    "DataNodeGroup",
]

logger = logging.getLogger("gossip.groups")

METADATA_ANY_VALUE = "*"
"""Criteria value meaning "the key exists, with any value"."""
METADATA_CONTAINS_PREFIX = "~"
"""Criteria value prefix: ``"~text"`` means "the value contains ``text``"."""

T = TypeVar("T")

_warned: weakref.WeakSet[Any] = weakref.WeakSet()   # clusters already warned about


def _warn_if_unencrypted(cluster: Cluster) -> None:
    """Warn, once per cluster, that a group on an unencrypted cluster admits any host."""
    if cluster.keyring is not None or cluster in _warned:
        return
    _warned.add(cluster)
    logger.warning("node groups on an unencrypted cluster admit any host: a host that can send a "
                   "packet to a node can announce a member with matching metadata and join any "
                   "group (set Config.encryption_key)")

_ANY, _CONTAINS, _EQUAL = 0, 1, 2
_MEMBER_STATES = (NodeState.ALIVE, NodeState.SUSPECT)


class Criteria:
    """A metadata filter, checked once at construction and then matched against nodes.

    Args:
        criteria: metadata key to expected value (see the module documentation), or another
            :class:`Criteria`; an empty mapping matches every node.
        tags: tags a node must all hold (:attr:`gossip.Node.tags`) to match, besides its
            metadata; added to those of ``criteria`` when it is a :class:`Criteria`.

    Raises:
        TypeError: ``criteria`` is not a mapping of strings to strings, or ``tags`` is a string.
        ValueError: a key is empty, a value is empty, or a value is ``"~"`` with no text.
    """

    __slots__ = ("_items", "_tags")

    def __init__(self, criteria: Mapping[str, str] | Criteria, tags: Iterable[str] = ()) -> None:
        if isinstance(tags, str):
            raise TypeError(f"tags must be a collection of tags, not the string {tags!r}")
        self._tags = frozenset(tags)
        if isinstance(criteria, Criteria):
            self._items: tuple[tuple[str, int, str], ...] = criteria._items
            self._tags |= criteria._tags
            return
        if not isinstance(criteria, Mapping):
            raise TypeError(f"criteria must be a mapping of metadata key to expected value, "
                            f"got {type(criteria).__name__}")
        items = []
        for key, expected in criteria.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"criteria keys must be non-empty strings, got {key!r}")
            if not isinstance(expected, str):
                raise TypeError(f"criteria value for {key!r} must be a string, "
                                f"got {type(expected).__name__}")
            if expected == "":
                raise ValueError(
                    f"criteria value for {key!r} is empty: use {METADATA_ANY_VALUE!r} for any "
                    f"value, '{METADATA_CONTAINS_PREFIX}text' for a value containing text, or "
                    f"the exact value")
            if expected == METADATA_ANY_VALUE:
                items.append((key, _ANY, ""))
            elif expected.startswith(METADATA_CONTAINS_PREFIX):
                text = expected[len(METADATA_CONTAINS_PREFIX):]
                if not text:
                    raise ValueError(f"criteria value for {key!r} is {expected!r}: the "
                                     f"{METADATA_CONTAINS_PREFIX!r} prefix needs text after it")
                items.append((key, _CONTAINS, text))
            else:
                items.append((key, _EQUAL, expected))
        self._items = tuple(items)

    def matches(self, metadata: MetadataReader) -> bool:
        """Return True if ``metadata`` satisfies every criterion."""
        for key, kind, text in self._items:
            if not metadata.exists(key):
                return False
            if kind == _ANY:
                continue
            value = metadata.get_string(key)
            if kind == _CONTAINS:
                if text not in value:
                    return False
            elif value != text:
                return False
        return True

    def matches_node(self, node: Node) -> bool:
        """Return True if ``node`` holds every tag and its metadata satisfies every criterion
        (whatever its state)."""
        return self._tags <= node.tags and self.matches(node.metadata)

    @property
    def tags(self) -> frozenset[str]:
        """The tags a node must all hold to match."""
        return self._tags

    def as_dict(self) -> dict[str, str]:
        """Return the criteria as the mapping they were built from."""
        out = {}
        for key, kind, text in self._items:
            out[key] = (METADATA_ANY_VALUE if kind == _ANY else
                        METADATA_CONTAINS_PREFIX + text if kind == _CONTAINS else text)
        return out

    def __repr__(self) -> str:
        tags = f", tags={sorted(self._tags)!r}" if self._tags else ""
        return f"Criteria({self.as_dict()!r}{tags})"


def _node_id(ref: Node | NodeID | str) -> NodeID:
    if isinstance(ref, Node):
        return ref.id
    return NodeID.parse(ref)


class _Entry:
    __slots__ = ("node", "data", "version")

    def __init__(self, node: Node, data: Any) -> None:
        self.node = node
        self.data = data
        self.version = 0


_ADDED, _UPDATED, _REMOVED = "added", "updated", "removed"
_NO_DATA = object()


class _Group:
    """The machinery both group kinds share: membership, events, ordered callbacks."""

    def __init__(self, cluster: Cluster, criteria: Mapping[str, str] | Criteria,
                 initializer: Callable[[Node], Any] | None) -> None:
        self._criteria = Criteria(criteria)
        self._cluster = cluster
        self._initializer = initializer
        self._lock = threading.Lock()
        self._members: dict[NodeID, _Entry] = {}
        self._pending: collections.deque[tuple[str, Node, Any]] = collections.deque()
        self._delivering = False
        self._closed = False
        _warn_if_unencrypted(cluster)
        # Register first, then scan: a change that happens during the scan is seen by one or
        # both, and every change is applied from the node's current state, so none is missed.
        self._state_handler: HandlerID = cluster.handle_node_state_change_func(self._on_state)
        self._meta_handler: HandlerID = cluster.handle_node_metadata_change_func(self._on_metadata)
        for node in cluster.nodes():
            self._reconcile(node.id, False)

    # ------------------------------------------------------------------ events

    def _on_state(self, node: Node, prev: NodeState) -> None:
        self._reconcile(node.id, False)

    def _on_metadata(self, node: Node) -> None:
        self._reconcile(node.id, True)

    def _wants(self, node: Node | None) -> bool:
        return node is not None and node.state in _MEMBER_STATES and self._criteria.matches_node(node)

    def _reconcile(self, node_id: NodeID, metadata_changed: bool) -> None:
        """Bring ``node_id``'s membership in line with its current state in the cluster.

        Events arrive late and, around construction, from two threads; reading the node's
        current state (rather than trusting the event's snapshot) makes every call converge on
        the truth, whatever order they run in.
        """
        node = self._cluster.get_node(node_id)
        wanted = self._wants(node)
        data: Any = _NO_DATA
        while True:
            with self._lock:
                if self._closed:
                    return
                entry = self._members.get(node_id)
                if wanted and entry is None and data is _NO_DATA and self._initializer is not None:
                    pass  # build the data outside the lock (it is user code), then retry
                else:
                    if wanted:
                        assert node is not None
                        if entry is None:
                            value = None if data is _NO_DATA else data
                            self._members[node_id] = _Entry(node, value)
                            self._pending.append((_ADDED, node, value))
                        else:
                            entry.node = node
                            if metadata_changed:
                                self._pending.append((_UPDATED, node, entry.data))
                    elif entry is not None:
                        del self._members[node_id]
                        self._pending.append((_REMOVED, node or entry.node, entry.data))
                    break
            assert node is not None and self._initializer is not None
            try:
                data = self._initializer(node)
            except Exception:
                logger.exception("group data initializer raised for node %s", node.id.short)
                data = None
        self._deliver()

    def _deliver(self) -> None:
        """Run pending callbacks one at a time, in order, with no lock held.

        Whichever thread finds no delivery running becomes the deliverer until the queue is
        empty; a callback that changes the group (on this or another thread) only queues more.
        """
        with self._lock:
            if self._delivering:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        self._delivering = False
                        return
                    kind, node, data = self._pending.popleft()
                try:
                    self._callback(kind, node, data)
                except Exception:
                    logger.exception("group %s callback raised for node %s", kind, node.id.short)
        except BaseException:
            with self._lock:
                self._delivering = False
            raise

    def _callback(self, kind: str, node: Node, data: Any) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ queries

    def _snapshot(self) -> list[_Entry]:
        with self._lock:
            return list(self._members.values())

    def get_nodes(self, exclude: Iterable[Node | NodeID | str] = ()) -> list[Node]:
        """Return the members (the local node included if it matches), minus ``exclude``."""
        skip = {_node_id(x) for x in exclude}
        return [e.node for e in self._snapshot() if e.node.id not in skip]

    def contains(self, node_id: Node | NodeID | str) -> bool:
        """Return True if the node is a member.

        Raises:
            AddressError: ``node_id`` is a string that is not a UUID.
        """
        nid = _node_id(node_id)
        with self._lock:
            return nid in self._members

    def count(self) -> int:
        """Return the number of members."""
        with self._lock:
            return len(self._members)

    @property
    def criteria(self) -> Criteria:
        """The group's criteria."""
        return self._criteria

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, node: object) -> bool:
        if not isinstance(node, (Node, NodeID, str)):
            return False
        try:
            return self.contains(node)
        except ValueError:
            return False

    def __iter__(self) -> Iterator[Node]:
        return iter(self.get_nodes())

    # ------------------------------------------------------------------ sending

    def _peers(self) -> list[Node]:
        me = self._cluster.local_node().id
        return [e.node for e in self._snapshot() if e.node.id != me]

    def send_to_peers(self, msg_type: int, data: Any,
                      transport: TransportType = TransportType.BEST_EFFORT) -> int:
        """Send ``data`` to every member except the local node, each once (never relayed).

        An empty group (or one holding only the local node) sends nothing.

        Args:
            msg_type: the message type (64 and up).
            data: any value the codec can encode.
            transport: :attr:`~gossip.TransportType.BEST_EFFORT`, or
                :attr:`~gossip.TransportType.RELIABLE` (the same as
                :meth:`send_to_peers_reliable`).

        Returns:
            The number of members the message was sent to.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64), ``data`` cannot be
                encoded, or ``transport`` is not a :class:`~gossip.TransportType`.
            ClusterClosed: the cluster is not started or is stopped.
        """
        reliable = is_reliable(transport)   # LocalProtocolError, even for an empty group
        peers = self._peers()
        if peers:
            if reliable:
                self._cluster.send_to_peers_reliable(peers, msg_type, data)
            else:
                self._cluster.send_to_peers(peers, msg_type, data)
        return len(peers)

    def send_to_peers_reliable(self, msg_type: int, data: Any) -> int:
        """Like :meth:`send_to_peers`, over reliable connections."""
        return self.send_to_peers(msg_type, data, transport=TransportType.RELIABLE)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop following the cluster and empty the group (idempotent; no callback fires)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._members.clear()
            self._pending.clear()
        self._cluster.remove_node_state_change_handler(self._state_handler)
        self._cluster.remove_node_metadata_change_handler(self._meta_handler)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._criteria.as_dict()!r}: {self.count()} members>"


class NodeGroup(_Group):
    """The members of ``cluster`` that are alive or suspect and match ``criteria``.

    On an unencrypted cluster any host that can reach a node can become a member of any group
    by announcing matching metadata (a warning says so when the first group is built); only an
    encryption key (``Config.encryption_key``) keeps strangers out.

    Args:
        cluster: the cluster to follow (started or not: the local node joins the group when the
            cluster starts).
        criteria: metadata key to expected value (see :class:`Criteria`).
        on_node_added: ``fn(node)`` when a node joins the group, once per arrival; it also fires
            for the members present at construction, before the constructor returns.
        on_node_removed: ``fn(node)`` when a node leaves the group (``node`` shows why: its
            state, or its metadata that no longer matches).

    Callbacks run one at a time, in order, on the cluster's event thread (or the constructing
    thread), with no lock held: they may call back into the group.

    Raises:
        TypeError, ValueError: the criteria are malformed (an empty value, for instance).
    """

    def __init__(self, cluster: Cluster, criteria: Mapping[str, str] | Criteria,
                 on_node_added: Callable[[Node], None] | None = None,
                 on_node_removed: Callable[[Node], None] | None = None) -> None:
        self._on_added = on_node_added
        self._on_removed = on_node_removed
        super().__init__(cluster, criteria, None)

    def _callback(self, kind: str, node: Node, data: Any) -> None:
        if kind == _ADDED and self._on_added is not None:
            self._on_added(node)
        elif kind == _REMOVED and self._on_removed is not None:
            self._on_removed(node)

    def __enter__(self) -> NodeGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DataNodeGroup(_Group, Generic[T]):
    """A :class:`NodeGroup` that keeps a value of type ``T`` for each member.

    Args:
        cluster: the cluster to follow.
        criteria: metadata key to expected value (see :class:`Criteria`).
        data_initializer: ``fn(node) -> T`` builds the value of a node joining the group (it
            runs with no lock held); without it a member's value starts as None.
        on_node_added: ``fn(node, data)`` when a node joins the group (also for the members
            present at construction, before the constructor returns).
        on_node_removed: ``fn(node, data)`` when a node leaves the group; its value goes too.
        on_node_updated: ``fn(node, data)`` when a member's metadata changes and it still matches.

    Callbacks run one at a time, in order, with no lock held: they may call back into the group.

    Raises:
        TypeError, ValueError: the criteria are malformed (an empty value, for instance).
    """

    def __init__(self, cluster: Cluster, criteria: Mapping[str, str] | Criteria,
                 data_initializer: Callable[[Node], T] | None = None,
                 on_node_added: Callable[[Node, T], None] | None = None,
                 on_node_removed: Callable[[Node, T], None] | None = None,
                 on_node_updated: Callable[[Node, T], None] | None = None) -> None:
        self._on_added = on_node_added
        self._on_removed = on_node_removed
        self._on_updated = on_node_updated
        super().__init__(cluster, criteria, data_initializer)

    def _callback(self, kind: str, node: Node, data: Any) -> None:
        fn = {_ADDED: self._on_added, _REMOVED: self._on_removed, _UPDATED: self._on_updated}[kind]
        if fn is not None:
            fn(node, cast(T, data))

    def get_node_data(self, node_id: Node | NodeID | str) -> T | None:
        """Return the value kept for a member, or None if the node is not a member.

        Raises:
            AddressError: ``node_id`` is a string that is not a UUID.
        """
        nid = _node_id(node_id)
        with self._lock:
            entry = self._members.get(nid)
            return None if entry is None else cast(T, entry.data)

    def get_data_nodes(self) -> list[tuple[Node, T]]:
        """Return ``(node, data)`` for every member."""
        with self._lock:
            return [(e.node, cast(T, e.data)) for e in self._members.values()]

    def update_node_data(self, node_id: Node | NodeID | str, fn: Callable[[T], T]) -> bool:
        """Replace a member's value with ``fn(current)``, atomically.

        ``fn`` runs on the calling thread with no lock held, so it may use the group. If another
        update of the same member lands while ``fn`` runs, ``fn`` is called again with the newer
        value: no update is lost, and ``fn`` should compute a new value rather than mutate the
        old one in place.

        Returns:
            True if the value was replaced, False if the node is not (or no longer) a member.

        Raises:
            AddressError: ``node_id`` is a string that is not a UUID.
        """
        nid = _node_id(node_id)
        while True:
            with self._lock:
                entry = self._members.get(nid)
                if entry is None:
                    return False
                version, current = entry.version, entry.data
            new = fn(cast(T, current))
            with self._lock:
                if self._members.get(nid) is entry and entry.version == version:
                    entry.data = new
                    entry.version += 1
                    return True
                if self._members.get(nid) is None:
                    return False

    def __enter__(self) -> DataNodeGroup[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
