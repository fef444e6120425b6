"""Compact member tables for simulations of thousands of nodes.

Every simulated core keeps a member table of the whole cluster, so memory grows with the square
of its size: the ordinary table (:class:`~gossip.protocol.tables.ObjectStore`) costs about 550
bytes a (node, member) pair, one :class:`~gossip.protocol.tables.Member` object and several
index entries each. :class:`CompactStore` keeps the same records as arrays instead:

* a :class:`Registry` shared by every core of a simulation numbers each member id once (and
  holds the address it was first seen at);
* each core's table is a struct of arrays indexed by those numbers: the state and the
  ``vouched`` flag a byte each, the incarnation (a u32, as on the wire) four bytes, the time
  of the last state change eight, the insertion order and the positions in the id lists four
  bytes each; fields
  that are nearly always at their default (the metadata, its stamp, versions, an address
  other than the registered one, a running suspicion, the introducer, a pending timer, the
  last round trip) live in small dicts holding only the exceptions;
* :class:`CompactMember` is a short-lived view of one record with the attributes of a
  :class:`~gossip.protocol.tables.Member`: the core reads and writes it as usual.

The member table (:class:`~gossip.protocol.membership.MemberTable`), and so the protocol, is
the same code with either store; the simulator's tests run both on the same seeds and compare
every figure and the trace of every member event.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence, ValuesView
from typing import Any, overload

from ..messages import EMPTY_META, MemberState
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from ..protocol.rtt import RttWindow
from ..protocol.suspicion import Suspicion
from ..tags import NO_TAGS
from ..protocol.tables import IdList, IdSet, Member, ObjectStore

__all__ = ["Registry", "CompactStore", "CompactMember", "CompactMembers"]

_STATES: tuple[NodeState, ...] = tuple(NodeState)
_CODE = {s: i + 1 for i, s in enumerate(_STATES)}   # 0: no record
_DECODE: tuple[NodeState | None, ...] = (None,) + _STATES
ALIVE = NodeState.ALIVE


class Registry:
    """Numbers member ids once for all the tables of a simulation."""

    __slots__ = ("ids", "index", "addrs")

    def __init__(self) -> None:
        self.ids: list[NodeID] = []
        self.index: dict[NodeID, int] = {}
        self.addrs: list[str] = []

    def intern(self, node: NodeID, addr: str) -> int:
        """Return the number of ``node`` (registering it, at ``addr``, if new)."""
        g = self.index.get(node)
        if g is None:
            g = self.index[node] = len(self.ids)
            self.ids.append(node)
            self.addrs.append(addr)
        return g

    def __len__(self) -> int:
        return len(self.ids)


def _grow(arr: Any, size: int, fill: Any) -> None:
    """Extend ``arr`` (an array or bytearray) with ``fill`` up to ``size`` items."""
    missing = size - len(arr)
    if missing > 0:
        arr.extend(type(arr)(arr.typecode, [fill]) * missing if isinstance(arr, array) else bytes(missing))


class CompactMembers(MutableMapping[NodeID, Member]):
    """One core's member records as a struct of arrays, a mapping of id to :class:`CompactMember`.

    Iterates in insertion order, as a dict does (a removed member that comes back goes last).
    """

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.st = bytearray()            # state code
        self.vouched = bytearray()
        self.inc = array("I")
        self.changed = array("d")
        self.pos = array("i")            # position in ``order``, -1: absent
        self.order = array("i")          # registry numbers in insertion order, -1: removed
        self.count = 0
        self.addr: dict[int, str] = {}
        self.meta: dict[int, Mapping[str, Any]] = {}
        self.meta_stamp: dict[int, int] = {}
        self.pv: dict[int, int] = {}
        self.av: dict[int, str] = {}
        self.suspicion: dict[int, Suspicion] = {}
        self.introducer: dict[int, str] = {}
        self.timer_at: dict[int, float] = {}
        self.rtt: dict[int, float] = {}
        self.rtts: dict[int, RttWindow] = {}
        self.tags: dict[int, frozenset[str]] = {}
        self._extras: tuple[dict[int, Any], ...] = (
            self.addr, self.meta, self.meta_stamp, self.pv, self.av, self.suspicion, self.introducer,
            self.timer_at, self.rtt, self.rtts, self.tags)

    def _ensure(self, g: int) -> None:
        size = max(g + 1, len(self.reg))
        _grow(self.st, size, 0)
        _grow(self.vouched, size, 0)
        _grow(self.inc, size, 0)
        _grow(self.changed, size, 0.0)
        _grow(self.pos, size, -1)

    def insert(self, node: NodeID, addr: str, state: NodeState, incarnation: int, meta: Mapping[str, Any],
               meta_stamp: int, pv: int, av: str, now: float, tags: frozenset[str] = NO_TAGS) -> CompactMember:
        """Enter a fresh record (``node`` must be absent) and return its view."""
        g = self.reg.intern(node, addr)
        if g >= len(self.st):
            self._ensure(g)
        for extra in self._extras:
            extra.pop(g, None)
        self.st[g] = _CODE[state]
        self.vouched[g] = 0
        self.inc[g] = incarnation
        self.changed[g] = now
        self.pos[g] = len(self.order)
        self.order.append(g)
        self.count += 1
        m = CompactMember(self, g)
        if addr != self.reg.addrs[g]:
            self.addr[g] = addr
        if meta:
            self.meta[g] = meta
        if meta_stamp:
            self.meta_stamp[g] = meta_stamp
        if pv != PROTOCOL_VERSION:
            self.pv[g] = pv
        if av:
            self.av[g] = av
        if tags:
            self.tags[g] = tags
        return m

    def _slot(self, node: object) -> int:
        g: int | None = self.reg.index.get(node)  # type: ignore[call-overload]
        if g is None or g >= len(self.pos) or self.pos[g] < 0:
            return -1
        return g

    def get(self, node: NodeID, default: Any = None) -> Any:
        g = self._slot(node)
        return default if g < 0 else CompactMember(self, g)

    def __getitem__(self, node: NodeID) -> Member:
        g = self._slot(node)
        if g < 0:
            raise KeyError(node)
        return CompactMember(self, g)

    def __contains__(self, node: object) -> bool:
        return self._slot(node) >= 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[NodeID]:
        ids = self.reg.ids
        return (ids[g] for g in self.order if g >= 0)

    def values(self) -> ValuesView[Member]:
        return _Values(self)

    def __setitem__(self, node: NodeID, m: Member) -> None:
        raise TypeError("records are made by CompactStore.new_member")

    def __delitem__(self, node: NodeID) -> None:
        g = self._slot(node)
        if g < 0:
            raise KeyError(node)
        # The record's data stays (a view held by the caller still reads it, as a removed
        # Member object would); it is reset when the member is entered again.
        self.order[self.pos[g]] = -1
        self.pos[g] = -1
        self.count -= 1
        if len(self.order) > 2 * self.count + 64:
            self.order = array("i", (x for x in self.order if x >= 0))
            for i, x in enumerate(self.order):
                self.pos[x] = i


class _Values(ValuesView[Member]):
    """The records of a :class:`CompactMembers`, in insertion order."""

    _mapping: CompactMembers

    def __iter__(self) -> Iterator[Member]:
        t = self._mapping
        return (CompactMember(t, g) for g in list(t.order) if g >= 0)


class CompactMember(Member):
    """A view of one record of a :class:`CompactMembers`, with the attributes of a
    :class:`~gossip.protocol.tables.Member` (reads and writes go to the arrays)."""

    __slots__ = ("_t", "_g")

    def __init__(self, t: CompactMembers, g: int) -> None:  # noqa: D107 - no Member.__init__: no copy
        self._t = t
        self._g = g

    @property
    def node(self) -> NodeID:  # type: ignore[override]
        return self._t.reg.ids[self._g]

    @property
    def addr(self) -> str:
        t = self._t
        addr = t.addr.get(self._g)
        return t.reg.addrs[self._g] if addr is None else addr

    @addr.setter
    def addr(self, value: str) -> None:
        t = self._t
        if value == t.reg.addrs[self._g]:
            t.addr.pop(self._g, None)
        else:
            t.addr[self._g] = value

    @property
    def state(self) -> NodeState:
        s = _DECODE[self._t.st[self._g]]
        assert s is not None
        return s

    @state.setter
    def state(self, value: NodeState) -> None:
        self._t.st[self._g] = _CODE[value]

    @property
    def incarnation(self) -> int:
        return self._t.inc[self._g]

    @incarnation.setter
    def incarnation(self, value: int) -> None:
        self._t.inc[self._g] = value

    @property
    def state_change(self) -> float:
        return self._t.changed[self._g]

    @state_change.setter
    def state_change(self, value: float) -> None:
        self._t.changed[self._g] = value

    @property
    def vouched(self) -> bool:
        return bool(self._t.vouched[self._g])

    @vouched.setter
    def vouched(self, value: bool) -> None:
        self._t.vouched[self._g] = 1 if value else 0

    @property
    def meta(self) -> Mapping[str, Any]:
        return self._t.meta.get(self._g, EMPTY_META)

    @meta.setter
    def meta(self, value: Mapping[str, Any]) -> None:
        if value:
            self._t.meta[self._g] = value
        else:
            self._t.meta.pop(self._g, None)

    @property
    def meta_stamp(self) -> int:
        return self._t.meta_stamp.get(self._g, 0)

    @meta_stamp.setter
    def meta_stamp(self, value: int) -> None:
        _put(self._t.meta_stamp, self._g, value, 0)

    @property
    def pv(self) -> int:
        return self._t.pv.get(self._g, PROTOCOL_VERSION)

    @pv.setter
    def pv(self, value: int) -> None:
        _put(self._t.pv, self._g, value, PROTOCOL_VERSION)

    @property
    def av(self) -> str:
        return self._t.av.get(self._g, "")

    @av.setter
    def av(self, value: str) -> None:
        _put(self._t.av, self._g, value, "")

    @property
    def suspicion(self) -> Suspicion | None:
        return self._t.suspicion.get(self._g)

    @suspicion.setter
    def suspicion(self, value: Suspicion | None) -> None:
        _put(self._t.suspicion, self._g, value, None)

    @property
    def introducer(self) -> str | None:
        return self._t.introducer.get(self._g)

    @introducer.setter
    def introducer(self, value: str | None) -> None:
        _put(self._t.introducer, self._g, value, None)

    @property
    def timer_at(self) -> float:
        return self._t.timer_at.get(self._g, math.inf)

    @timer_at.setter
    def timer_at(self, value: float) -> None:
        _put(self._t.timer_at, self._g, value, math.inf)

    @property
    def rtt(self) -> float | None:
        return self._t.rtt.get(self._g)

    @rtt.setter
    def rtt(self, value: float | None) -> None:
        _put(self._t.rtt, self._g, value, None)

    @property
    def rtts(self) -> RttWindow | None:
        return self._t.rtts.get(self._g)

    @rtts.setter
    def rtts(self, value: RttWindow | None) -> None:
        _put(self._t.rtts, self._g, value, None)

    @property
    def tags(self) -> frozenset[str]:
        return self._t.tags.get(self._g, NO_TAGS)

    @tags.setter
    def tags(self, value: frozenset[str]) -> None:
        _put(self._t.tags, self._g, value or None, None)


def _put(d: dict[int, Any], g: int, value: Any, default: Any) -> None:
    """Keep ``value`` in the dict of exceptions ``d`` unless it equals ``default``."""
    if value is default or (default is not None and type(value) is type(default) and value == default):
        d.pop(g, None)
    else:
        d[g] = value


class CompactIdList:
    """:class:`~gossip.protocol.tables.IdList` as an array of registry numbers with an array of
    positions."""

    __slots__ = ("reg", "arr", "pos")

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.arr = array("i")
        self.pos = array("i")

    def add(self, node: NodeID) -> None:
        g = self.reg.index[node]
        if g >= len(self.pos):
            _grow(self.pos, max(g + 1, len(self.reg)), -1)
        self.pos[g] = len(self.arr)
        self.arr.append(g)

    def remove(self, node: NodeID) -> None:
        g = self.reg.index[node]
        idx = self.pos[g]
        if idx < 0:
            raise KeyError(node)
        self.pos[g] = -1
        last = self.arr.pop()
        if last != g:
            self.arr[idx] = last
            self.pos[last] = idx

    def __contains__(self, node: object) -> bool:
        g = self.reg.index.get(node)  # type: ignore[call-overload]
        return g is not None and g < len(self.pos) and self.pos[g] >= 0

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int) -> NodeID:
        return self.reg.ids[self.arr[i]]

    def index(self, node: NodeID) -> int:
        """The position of ``node``."""
        idx = self.pos[self.reg.index[node]] if node in self else -1
        if idx < 0:
            raise KeyError(node)
        return idx

    def __iter__(self) -> Iterator[NodeID]:
        ids = self.reg.ids
        return (ids[g] for g in self.arr)


class CompactProbeOrder(MutableSequence[NodeID]):
    """The probe order as an array of registry numbers."""

    def __init__(self, reg: Registry, ids: Iterable[NodeID] = ()) -> None:
        self.reg = reg
        index = reg.index
        self.arr = array("i", (index[n] for n in ids))

    @overload
    def __getitem__(self, i: int) -> NodeID: ...

    @overload
    def __getitem__(self, i: slice) -> list[NodeID]: ...

    def __getitem__(self, i: int | slice) -> NodeID | list[NodeID]:
        ids = self.reg.ids
        if isinstance(i, slice):
            return [ids[g] for g in self.arr[i]]
        return ids[self.arr[i]]

    @overload
    def __setitem__(self, i: int, value: NodeID) -> None: ...

    @overload
    def __setitem__(self, i: slice, value: Iterable[NodeID]) -> None: ...

    def __setitem__(self, i: int | slice, value: Any) -> None:
        index = self.reg.index
        if isinstance(i, slice):
            self.arr[i] = array("i", (index[n] for n in value))
        else:
            self.arr[i] = index[value]

    def __delitem__(self, i: int | slice) -> None:
        del self.arr[i]

    def __len__(self) -> int:
        return len(self.arr)

    def insert(self, i: int, value: NodeID) -> None:
        self.arr.insert(i, self.reg.index[value])

    def __iter__(self) -> Iterator[NodeID]:
        ids = self.reg.ids
        return (ids[g] for g in self.arr)


class CompactIdSet:
    """:class:`~gossip.protocol.tables.IdSet` as a byte per registry number."""

    __slots__ = ("reg", "flags")

    def __init__(self, reg: Registry, ids: Iterable[NodeID] = ()) -> None:
        self.reg = reg
        self.flags = bytearray(len(reg))
        for n in ids:
            self.add(n)

    def add(self, node: NodeID) -> None:
        g = self.reg.index[node]
        if g >= len(self.flags):
            _grow(self.flags, max(g + 1, len(self.reg)), 0)
        self.flags[g] = 1

    def __contains__(self, node: object) -> bool:
        g = self.reg.index.get(node)  # type: ignore[call-overload]
        return g is not None and g < len(self.flags) and self.flags[g] == 1


class CompactStore:
    """A :class:`~gossip.protocol.tables.TableStore` of arrays (see the module docstring).

    Args:
        registry: the numbering shared by every core of the simulation.
    """

    cache_states = False   # a cached full state per core would be a Member-sized object per pair

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def members(self) -> MutableMapping[NodeID, Member]:
        """Return a new, empty :class:`CompactMembers`."""
        return CompactMembers(self.registry)

    def new_member(self, members: MutableMapping[NodeID, Member], node: NodeID, addr: str, state: NodeState,
                   incarnation: int, meta: Mapping[str, Any], meta_stamp: int, pv: int, av: str,
                   now: float, tags: frozenset[str] = NO_TAGS) -> Member:
        """Enter a record in ``members`` (a :class:`CompactMembers`) and return its view."""
        assert isinstance(members, CompactMembers)
        return members.insert(node, addr, state, incarnation, meta, meta_stamp, pv, av, now, tags)

    def id_list(self) -> IdList:
        """Return a new :class:`CompactIdList`."""
        return CompactIdList(self.registry)

    def probe_order(self, ids: Iterable[NodeID] = ()) -> MutableSequence[NodeID]:
        """Return a new :class:`CompactProbeOrder`."""
        return CompactProbeOrder(self.registry, ids)

    def id_set(self, ids: Iterable[NodeID] = ()) -> IdSet:
        """Return a new :class:`CompactIdSet`."""
        return CompactIdSet(self.registry, ids)

    def bulk_add(self, members: MutableMapping[NodeID, Member], ids: IdList, cids: IdList,
                 probe: MutableSequence[NodeID], in_probe: IdSet, states: Sequence[MemberState],
                 now: float) -> None:
        """Enter ``states`` (see :meth:`~gossip.protocol.tables.TableStore.bulk_add`) an array at
        a time: a few tight loops per table instead of a few calls per member."""
        assert isinstance(members, CompactMembers) and isinstance(ids, CompactIdList)
        assert isinstance(cids, CompactIdList) and isinstance(probe, CompactProbeOrder)
        assert isinstance(in_probe, CompactIdSet)
        index = self.registry.index
        try:
            gs = [index[s.node] for s in states]
        except KeyError:
            intern = self.registry.intern
            gs = [intern(s.node, s.addr) for s in states]
        if not gs:
            return
        top = max(gs)
        members._ensure(top)
        addrs = self.registry.addrs
        if any(s.addr != addrs[g] or s.meta or s.meta_stamp or s.pv != PROTOCOL_VERSION or s.av or s.tags
               or s.state is not ALIVE
               for s, g in zip(states, gs)):
            # Some field off its default: one member at a time.
            ObjectStore.bulk_add(self, members, ids, cids, probe, in_probe, states, now)  # type: ignore[arg-type]
            return
        plain = list(zip(states, gs))
        code = _CODE[NodeState.ALIVE]
        st, vouched, inc, changed, pos, order = (members.st, members.vouched, members.inc, members.changed,
                                                 members.pos, members.order)
        extras = members._extras
        for s, g in plain:
            st[g] = code
            vouched[g] = 0
            inc[g] = s.incarnation
            changed[g] = now
            for extra in extras:
                if g in extra:
                    del extra[g]
        start = len(order)
        order.extend(array("i", [g for _, g in plain]))
        for i, (_, g) in enumerate(plain, start):
            pos[g] = i
        members.count += len(plain)
        for lst in (ids, cids):
            _grow(lst.pos, max(top + 1, len(self.registry)), -1)
            start = len(lst.arr)
            lst.arr.extend(array("i", [g for _, g in plain]))
            lpos = lst.pos
            for i, (_, g) in enumerate(plain, start):
                lpos[g] = i
        _grow(in_probe.flags, max(top + 1, len(self.registry)), 0)
        flags = in_probe.flags
        for _, g in plain:
            if not flags[g]:
                flags[g] = 1
                probe.arr.append(g)

    def shuffle(self, rng: random.Random, order: MutableSequence[NodeID]) -> None:
        """Shuffle the array of registry numbers under ``order``: the same draws and the same
        permutation as shuffling the ids."""
        rng.shuffle(order.arr if isinstance(order, CompactProbeOrder) else order)
