"""Where a member table keeps its records: :class:`TableStore` and its ordinary implementation.

:class:`~.membership.MemberTable` holds the protocol's rules; a store holds its data. The store
makes the member records and keeps the four collections the table indexes them by:

* ``members``: every member by id, in insertion order (a mapping of :class:`Member`);
* id lists (:class:`IdList`): the members for random sampling, and those that showed
  themselves; each an indexed set (O(1) add, remove, membership, random access);
* the probe order: a plain mutable sequence of ids (shuffled, appended, swapped);
* id sets: which members are in the probe order.

:class:`ObjectStore` (the default) uses a dict, lists, sets and one :class:`Member` object a
record. A host that runs thousands of cores in one process (the simulator) may pass a store
that keeps the same records more compactly (:mod:`gossip.sim.compact`): the table, and so the
protocol, is the same code either way.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Protocol

from ..messages import Alive, MemberState
from ..node import NodeID, NodeState
from ..tags import NO_TAGS
from .rtt import RttWindow
from .suspicion import Suspicion

ALIVE = NodeState.ALIVE

__all__ = ["Member", "IdList", "IdSet", "TableStore", "ObjectStore", "ObjectIdList", "shuffle", "news"]


def shuffle(rng: random.Random, x: MutableSequence[Any]) -> None:
    """Shuffle ``x`` in place exactly as ``rng.shuffle(x)`` does (the same draws, the same
    permutation), a few times faster for long sequences: the loop of :meth:`random.Random.shuffle`
    with its draws inlined. A generator that overrides its drawing goes through ``rng.shuffle``."""
    cls = type(rng)
    if cls.shuffle is not random.Random.shuffle or \
            cls._randbelow is not random.Random._randbelow_with_getrandbits:  # type: ignore[attr-defined]
        rng.shuffle(x)
        return
    getrandbits = rng.getrandbits
    items = list(x)
    for i in reversed(range(1, len(items))):
        n = i + 1
        k = n.bit_length()
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        items[i], items[j] = items[j], items[i]
    x[:] = array(x.typecode, items) if isinstance(x, array) else items


class Member:
    """The local node's record of one other member (mutable; owned by the member table).

    ``introducer`` is the source host that told us of the member, until the member shows itself
    (a packet from it, sealed or from its own host, or an answer to our probe); None for
    members given by the host (:meth:`~.core.Protocol.bootstrap`). Relayed news is no proof: an
    epidemic spreads fakes as well as it spreads members. ``vouched`` says the news came from
    inside the cluster (a packet sealed with a cluster key, one from a member that has shown
    itself, sent from its own host, or the answer to our own join or push/pull), so its address
    may be dialed before the member shows itself; news from a stranger is not dialed.
    """

    __slots__ = ("node", "addr", "state", "incarnation", "meta", "meta_stamp", "pv", "av",
                 "state_change", "suspicion", "introducer", "vouched", "timer_at", "rtt", "rtts",
                 "tags", "spos")

    def __init__(self, node: NodeID, addr: str, state: NodeState, incarnation: int,
                 meta: Mapping[str, Any], meta_stamp: int, pv: int, av: str, now: float,
                 tags: frozenset[str] = NO_TAGS) -> None:
        self.node = node
        self.addr = addr
        self.state = state
        self.incarnation = incarnation
        self.meta = meta
        self.meta_stamp = meta_stamp
        self.pv = pv
        self.av = av
        self.state_change = now
        self.suspicion: Suspicion | None = None
        self.introducer: str | None = None
        self.vouched = False       # named from inside the cluster (see above)
        self.timer_at = math.inf   # when the pending suspicion timer of this member fires
        self.rtt: float | None = None  # seconds of the last direct probe round trip
        self.rtts: RttWindow | None = None  # its recent round trips (adaptive ping timeout)
        self.tags = tags               # ordered with the metadata, by meta_stamp
        self.spos = -1                 # its place in the table's kept full state, -1: none

    def to_state(self) -> MemberState:
        """Return the record as exchanged by push/pull."""
        return MemberState(self.node, self.addr, self.state, self.incarnation, self.meta,
                           self.meta_stamp, self.pv, self.av, self.tags)

    def to_alive(self) -> Alive:
        """Return the alive update that says what we know of the member."""
        return Alive(self.node, self.incarnation, self.addr, self.meta, self.meta_stamp, self.pv,
                     self.av, self.tags)

    def __repr__(self) -> str:
        return f"Member({self.node.short}@{self.addr} {self.state.name} inc={self.incarnation})"


class IdList(Protocol):
    """An indexed set of member ids: O(1) add, remove, membership and random access."""

    def add(self, node: NodeID) -> None:
        """Add ``node`` at the end (it must not be in the list)."""

    def remove(self, node: NodeID) -> None:
        """Remove ``node``, moving the last id into its slot."""

    def __contains__(self, node: object) -> bool:
        """True if ``node`` is in the list."""

    def __len__(self) -> int:
        """The number of ids."""

    def __getitem__(self, i: int) -> NodeID:
        """The id at position ``i``."""

    def index(self, node: NodeID) -> int:
        """The position of ``node`` (KeyError if absent)."""

    def __iter__(self) -> Iterator[NodeID]:
        """The ids in list order."""


class IdSet(Protocol):
    """A set of member ids (which members are in the probe order)."""

    def add(self, node: NodeID) -> None:
        """Add ``node``."""

    def __contains__(self, node: object) -> bool:
        """True if ``node`` is in the set."""


class TableStore(Protocol):
    """What a member table keeps its records in (see the module docstring)."""

    cache_states: bool
    """Whether the table may keep the full state it last sent (memory for speed)."""

    def members(self) -> MutableMapping[NodeID, Member]:
        """Return a new, empty mapping of members by id (insertion-ordered)."""

    def new_member(self, members: MutableMapping[NodeID, Member], node: NodeID, addr: str, state: NodeState,
                   incarnation: int, meta: Mapping[str, Any], meta_stamp: int, pv: int, av: str,
                   now: float, tags: frozenset[str] = NO_TAGS) -> Member:
        """Make the record of a member absent from ``members``, enter it there, and return it."""

    def id_list(self) -> IdList:
        """Return a new, empty :class:`IdList`."""

    def probe_order(self, ids: Iterable[NodeID] = ()) -> MutableSequence[NodeID]:
        """Return a new probe order holding ``ids``."""

    def id_set(self, ids: Iterable[NodeID] = ()) -> IdSet:
        """Return a new :class:`IdSet` holding ``ids``."""

    def bulk_add(self, members: MutableMapping[NodeID, Member], ids: IdList, cids: IdList,
                 probe: MutableSequence[NodeID], in_probe: IdSet, states: Sequence[MemberState],
                 now: float) -> None:
        """Enter alive members that showed themselves, all at once: each of ``states`` (absent
        from ``members``, distinct) into ``members``, ``ids`` and ``cids``, and at the end of
        ``probe`` (and into ``in_probe``) unless ``in_probe`` holds it."""

    def shuffle(self, rng: random.Random, order: MutableSequence[NodeID]) -> None:
        """Shuffle ``order`` in place as ``rng.shuffle(order)`` would (the same draws, the same
        permutation)."""

    def states(self, members: MutableMapping[NodeID, Member]) -> Iterable[MemberState]:
        """Return every record of ``members`` as exchanged by push/pull, in insertion order."""

    def news(self, members: MutableMapping[NodeID, Member], states: Sequence[MemberState]) -> Sequence[MemberState]:
        """Return ``states`` (a received full state, in order) without the ones that can change
        nothing: alive members held at the same address with an incarnation and a metadata
        stamp at least as high (see :func:`news`)."""


def news(members: Mapping[NodeID, Member], states: Sequence[MemberState]) -> list[MemberState]:
    """The rule of :meth:`TableStore.news`, one record at a time (any store)."""
    get = members.get
    out = []
    for s in states:
        if s.state is ALIVE:
            m = get(s.node)
            if m is not None and s.incarnation <= m.incarnation and s.meta_stamp <= m.meta_stamp \
                    and s.addr == m.addr:
                continue
        out.append(s)
    return out


class ObjectIdList:
    """:class:`IdList` as a list with a dict of positions."""

    __slots__ = ("_ids", "_index")

    def __init__(self) -> None:
        self._ids: list[NodeID] = []
        self._index: dict[NodeID, int] = {}

    def add(self, node: NodeID) -> None:
        """Add ``node`` at the end."""
        self._index[node] = len(self._ids)
        self._ids.append(node)

    def remove(self, node: NodeID) -> None:
        """Remove ``node`` by moving the last element into its slot (O(1))."""
        idx = self._index.pop(node)
        last = self._ids.pop()
        if last != node:
            self._ids[idx] = last
            self._index[last] = idx

    def __contains__(self, node: object) -> bool:
        return node in self._index

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> NodeID:
        return self._ids[i]

    def index(self, node: NodeID) -> int:
        """The position of ``node``."""
        return self._index[node]

    def __iter__(self) -> Iterator[NodeID]:
        return iter(self._ids)


class ObjectStore:
    """The ordinary store: a dict of :class:`Member` objects, lists and sets."""

    cache_states = True

    def members(self) -> MutableMapping[NodeID, Member]:
        """Return a new, empty dict."""
        return {}

    def new_member(self, members: MutableMapping[NodeID, Member], node: NodeID, addr: str, state: NodeState,
                   incarnation: int, meta: Mapping[str, Any], meta_stamp: int, pv: int, av: str,
                   now: float, tags: frozenset[str] = NO_TAGS) -> Member:
        """Make a :class:`Member` and enter it in ``members``."""
        m = Member(node, addr, state, incarnation, meta, meta_stamp, pv, av, now, tags)
        members[node] = m
        return m

    def id_list(self) -> IdList:
        """Return a new :class:`ObjectIdList`."""
        return ObjectIdList()

    def probe_order(self, ids: Iterable[NodeID] = ()) -> MutableSequence[NodeID]:
        """Return a list."""
        return list(ids)

    def id_set(self, ids: Iterable[NodeID] = ()) -> IdSet:
        """Return a set."""
        return set(ids)

    def bulk_add(self, members: MutableMapping[NodeID, Member], ids: IdList, cids: IdList,
                 probe: MutableSequence[NodeID], in_probe: IdSet, states: Sequence[MemberState],
                 now: float) -> None:
        """Enter each of ``states`` in turn (see :meth:`TableStore.bulk_add`)."""
        for s in states:
            self.new_member(members, s.node, s.addr, s.state, s.incarnation, s.meta, s.meta_stamp, s.pv, s.av, now,
                            s.tags)
            ids.add(s.node)
            cids.add(s.node)
            if s.node not in in_probe:
                in_probe.add(s.node)
                probe.append(s.node)

    def shuffle(self, rng: random.Random, order: MutableSequence[NodeID]) -> None:
        """``rng.shuffle(order)``."""
        shuffle(rng, order)

    def states(self, members: MutableMapping[NodeID, Member]) -> Iterable[MemberState]:
        """Each record's :meth:`Member.to_state`, in insertion order."""
        return [m.to_state() for m in members.values()]

    def news(self, members: MutableMapping[NodeID, Member], states: Sequence[MemberState]) -> Sequence[MemberState]:
        """See :meth:`TableStore.news`."""
        return news(members, states)
