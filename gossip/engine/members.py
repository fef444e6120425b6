"""Snapshots of the member table: what users, handlers and transports are shown of it.

:class:`MemberView` turns the core's members into :class:`~gossip.node.Node` snapshots for the
facade (``nodes()``, ``get_node()``, the counts), for handlers (the sender of each user message,
cached per member), for the transports (``is_member_host``: which hosts get a member's
admission) and for the send path (the peers a broadcast hop goes to). It reads the core only
through :meth:`CoreHost.read` or, where one atomic read of a dict or an attribute is as good as
the caller's snapshot, without the lock (the two hot paths, the sender of a message and the
peers of a broadcast's next hop, take the host's lock inline).

The state users are shown is the core's, except that a member held by flap damping is shown as
suspect (:mod:`gossip.protocol.flap`).

This module imports the core host, the node snapshot and the metadata; never the transports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..config import Config
from ..metadata import Metadata, MetadataReader
from ..node import PROTOCOL_VERSION, Node, NodeID, NodeState
from ..protocol import MemberEvent, Protocol
from ..protocol.insight import Insight
from ..protocol.messaging import calc_fan_out
from ..address import host_of
from .host import CoreHost

__all__ = ["MemberView", "event_node", "removed_node"]

_MEMBER_HOSTS_TTL = 2.0  # the hosts of members are recomputed at least this often

_NO_METADATA = MetadataReader()
"""The metadata of a sender the member table does not hold."""


NameOf = Callable[[NodeID], str]
"""``name_of(node_id)``: a member's name (memberlist's wire names members)."""

def _name(nid: NodeID, name_of: NameOf | None) -> str:
    return name_of(nid) if name_of is not None else ""


def event_node(ev: MemberEvent, name_of: NameOf | None = None) -> Node:
    """Return the snapshot a member event carries."""
    return Node(ev.node, ev.addr, ev.state, ev.incarnation, MetadataReader(ev.meta, ev.meta_stamp),
                ev.pv, ev.av, ev.at, _name(ev.node, name_of), ev.tags)


def removed_node(ev: MemberEvent, name_of: NameOf | None = None) -> Node:
    """Return the snapshot of a forgotten member: its last one, in state ``UNKNOWN``."""
    return dataclasses.replace(event_node(ev, name_of), state=NodeState.UNKNOWN)


def _member_node(m: Any, insight: Insight, name_of: NameOf | None = None) -> Node:
    # The state users are shown: suspect while flap damping holds a member (gossip.protocol.flap).
    return Node(m.node, m.addr, insight.shown_state(m.node, m.state), m.incarnation,
                MetadataReader(m.meta, m.meta_stamp), m.pv, m.av, m.state_change,
                _name(m.node, name_of), m.tags)


class MemberView:
    """Snapshots of one node's member table; see the module docstring.

    Args:
        host: the core's host (its lock is taken for every snapshot).
        node_id: this node's id.
        metadata: this node's metadata (read for its own snapshot).
        config: the validated configuration (the application version, the fan-out settings).
        name_of: members' names, on a wire that names them (None: by id).

    :attr:`address` is this node's advertised address, set by the engine at start;
    :attr:`tags` this node's tags (replaced whole, never mutated: read without a lock).
    """

    def __init__(self, host: CoreHost, node_id: NodeID, metadata: Metadata, config: Config,
                 name_of: NameOf | None = None) -> None:
        self.name_of = name_of
        self._host = host
        self.node_id = node_id
        self._id_bytes = node_id.bytes
        self._metadata = metadata
        self._app_version = config.application_version
        self._fan_out_multiplier = config.fan_out_multiplier
        self._redundancy = config.broadcast_redundancy
        self.address = ""
        self.tags: frozenset[str] = frozenset(config.tags)
        self._node_cache: dict[bytes, tuple[Any, Node, int]] = {}
        self._member_hosts: tuple[float, frozenset[str]] | None = None

    # ------------------------------------------------------------------ snapshots

    def local_node(self) -> Node:
        """Return a snapshot of the local node."""
        values, stamp = self._metadata.snapshot()
        host = self._host
        if not host.started:
            return Node(self.node_id, self.address, NodeState.UNKNOWN, 0,
                        MetadataReader(values, stamp), PROTOCOL_VERSION, self._app_version,
                        name=_name(self.node_id, self.name_of), tags=self.tags)
        core = host.core
        return Node(self.node_id, self.address, core.state, core.incarnation,
                    MetadataReader(values, stamp), PROTOCOL_VERSION, self._app_version,
                    name=_name(self.node_id, self.name_of), tags=self.tags)

    def nodes(self) -> list[Node]:
        """Return snapshots of every known node, the local node first."""
        out = [self.local_node()]
        if self._host.started:
            out.extend(self._host.read(
                lambda core: [_member_node(m, core.insight, self.name_of) for m in core.members.values()]))
        return out

    def state_counts(self) -> dict[NodeState, int]:
        """Return how many known nodes are in each state, the local node included, as users
        see them (a member held by flap damping counts as suspect). O(1): the core keeps the
        counts as members change."""
        out = dict.fromkeys(NodeState, 0)
        if not self._host.started:
            out[NodeState.UNKNOWN] = 1
            return out

        def count(core: Protocol) -> int:
            for state, n in core.counts.items():
                out[state] += n
            out[core.state] += 1
            return sum(1 for nid in core.insight.held
                       if (m := core.members.get(nid)) is not None and m.state is NodeState.ALIVE)

        held = self._host.read(count)
        out[NodeState.ALIVE] -= held
        out[NodeState.SUSPECT] += held
        return out

    def candidates(self, k: int) -> list[Node]:
        """Return up to ``k`` random alive or suspect peers (not this node), sampled by the core."""
        if not self._host.started or k <= 0:
            return []
        exclude = (self.node_id,)
        return self._host.read(lambda core: [_member_node(m, core.insight, self.name_of)
                                             for m in core.random_peers(k, exclude)])

    def get_node(self, node_id: NodeID) -> Node | None:
        """Return the snapshot of ``node_id`` (the local node included), None if unknown."""
        if node_id == self.node_id:
            return self.local_node()
        if not self._host.started:
            return None

        def find(core: Protocol) -> Node | None:
            m = core.members.get(node_id)
            return None if m is None else _member_node(m, core.insight, self.name_of)

        return self._host.read(find)

    def node_for_sender(self, sender: bytes) -> Node:
        """Return the snapshot of the node whose 16-byte id is ``sender``.

        A sender not in the member table (not yet joined, or already forgotten) is returned as
        a node in state ``UNKNOWN``, with no address and empty metadata, so that handlers are
        always given a :class:`Node`.

        This runs for every user message handled, so snapshots are cached per member and
        reused while the member's address, state, incarnation and metadata stamp are unchanged
        (each is one atomic read; the snapshot itself is rebuilt under the core lock).

        Raises:
            ClusterClosed: the engine was never started.
        """
        if sender == self._id_bytes:
            return self.local_node()
        host = self._host
        core = host.core
        entry = self._node_cache.get(sender)
        if entry is not None:
            m, node, stamp = entry
            if (m.incarnation == node.incarnation and m.state is node.state
                    and m.meta_stamp == stamp and m.addr == node.address
                    and core.members.get(m.node) is m):
                return node
        nid = NodeID(bytes=sender)
        with host.lock:  # inline, as in fan_out_addrs: every sender not cached comes here
            m = core.members.get(nid)
            if m is None:
                return Node(nid, "", NodeState.UNKNOWN, 0, _NO_METADATA)
            node = _member_node(m, core.insight, self.name_of)
            stamp = m.meta_stamp
        cache = self._node_cache
        if len(cache) > 2 * len(core.members) + 64:
            cache.clear()  # forgotten members' entries go
        cache[sender] = (m, node, stamp)
        return node

    # ------------------------------------------------------------------ for the send path

    def alive_count(self) -> int:
        """Return the alive members, this node included (one atomic read: a count a moment old
        is fine for the bounds it sets).

        Raises:
            ClusterClosed: the engine was never started.
        """
        return self._host.core.counts[NodeState.ALIVE] + 1

    def state_of(self, node_id: NodeID) -> NodeState | None:
        """Return the state of member ``node_id`` here, None if unknown (one dict read and one
        attribute read, atomic without the lock: a state a moment old is as good as the
        caller's snapshot).

        Raises:
            ClusterClosed: the engine was never started.
        """
        m = self._host.core.members.get(node_id)
        return None if m is None else m.state

    def fan_out_addrs(self, exclude: Iterable[NodeID], tag: str | None = None) -> list[str]:
        """Return the addresses of the random peers one hop of a broadcast goes to (with
        ``tag``, among the alive and suspect members that hold it).

        Each hop sends to ``broadcast_redundancy`` x ``calc_fan_out`` peers: with the single
        fan-out of paularlott/gossip, 2-10 % of broadcasts miss a node at 32-1,000 nodes; twice
        that reaches everyone (see :attr:`Config.broadcast_redundancy`).

        Raises:
            ClusterClosed: the engine was never started.
        """
        host = self._host
        core = host.core
        # Every broadcast sent and every one relayed comes here: the host's lock is taken
        # inline rather than through CoreHost.read, whose closure costs ~5 % of the call.
        with host.lock:
            k = calc_fan_out(core.num_members(), self._fan_out_multiplier) * self._redundancy
            return [m.addr for m in core.random_peers(k, exclude, tag=tag)]

    # ------------------------------------------------------------------ for the transports

    def is_member_host(self, host: str) -> bool:
        """Return True if ``host`` is this node's host or that of an alive or suspect member
        that showed itself.

        The transports ask this to admit connections (slots reserved for members) and to
        budget their dials (see :mod:`gossip.transports._admission`). The set is rebuilt after
        membership changes (:meth:`changed`) and at least every couple of seconds, never under
        a transport's lock.
        """
        cached = self._member_hosts
        now = time.monotonic()
        if cached is None or now - cached[0] > _MEMBER_HOSTS_TTL:
            hosts = {host_of(self.address)} if self.address else set()
            if self._host.started:
                # Only members that showed themselves (no introducer left): a member planted
                # by a stranger's packet never gets a member's admission.
                hosts.update(self._host.read(lambda core: [
                    host_of(m.addr) for m in core.members.values()
                    if (m.state is NodeState.ALIVE or m.state is NodeState.SUSPECT)
                    and getattr(m, "introducer", None) is None]))
            cached = self._member_hosts = (now, frozenset(hosts))
        return host.lower() in cached[1]

    def changed(self) -> None:
        """A member changed state or was forgotten: rebuild the members' hosts on next use."""
        self._member_hosts = None
