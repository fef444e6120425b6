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
from collections import deque
from itertools import repeat
from operator import is_, itemgetter
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence, Sequence, ValuesView
from typing import Any, overload

from ..messages import EMPTY_META, MemberState
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from ..protocol.rtt import RttWindow
from ..protocol.suspicion import Suspicion
from ..tags import NO_TAGS
from ..protocol.tables import IdList, IdSet, Member, ObjectStore, news, shuffle

__all__ = ["Registry", "CompactStore", "CompactMember", "CompactMembers"]

_STATES: tuple[NodeState, ...] = tuple(NodeState)
_CODE = {s: i + 1 for i, s in enumerate(_STATES)}   # 0: no record
_DECODE: tuple[NodeState | None, ...] = (None,) + _STATES
ALIVE = NodeState.ALIVE


class Registry:
    """Numbers member ids once for all the tables of a simulation."""

    __slots__ = ("ids", "index", "by_int", "addrs", "_plain", "_shared", "_shared_alive")

    def __init__(self) -> None:
        self.ids: list[NodeID] = []
        self.index: dict[NodeID, int] = {}
        self.by_int: dict[int, int] = {}     # the same numbers by ``NodeID.int`` (cheaper to hash)
        self.addrs: list[str] = []
        # States found plain (every field but the incarnation at its default) by
        # CompactStore.bulk_add: id -> (state, number). A bootstrap hands the same states to
        # every core; each is examined once.
        self._plain: dict[int, tuple[MemberState, int]] = {}
        # Full-state records shared by every core (see CompactStore.states): the record of a
        # member in a state, at an incarnation, every other field at its default, made once.
        # They are kept for the whole simulation, so an ``id`` names one of them for ever.
        self._shared: dict[int, MemberState] = {}              # (number, incarnation, code) key
        self._shared_alive: dict[int, tuple[int, int]] = {}    # id(alive record) -> (number, inc)

    def intern(self, node: NodeID, addr: str) -> int:
        """Return the number of ``node`` (registering it, at ``addr``, if new)."""
        g = self.index.get(node)
        if g is None:
            g = self.index[node] = len(self.ids)
            self.by_int[node.int] = g
            self.ids.append(node)
            self.addrs.append(addr)
        return g

    def plain(self, states: Sequence[MemberState]) -> list[int] | None:
        """Return the numbers of ``states`` if each is alive, at its registered address, and
        every other field but the incarnation is at its default; None otherwise."""
        memo = self._plain
        hits: list[Any] = list(map(memo.get, map(id, states)))
        if None not in hits and all(map(is_, map(_first, hits), states)):   # seen before: C loops
            return list(map(_second, hits))
        gs: list[int] = []
        append = gs.append
        for s in states:
            hit = memo.get(id(s))
            if hit is not None and hit[0] is s:
                append(hit[1])
                continue
            g = self.by_int.get(s.node.int)
            if g is None or s.state is not ALIVE or s.addr != self.addrs[g] or s.meta or s.meta_stamp \
                    or s.pv != PROTOCOL_VERSION or s.av or s.tags:
                return None
            if len(memo) >= 1 << 17:
                memo.clear()
            memo[id(s)] = (s, g)
            append(g)
        return gs

    def shared(self, g: int, code: int, incarnation: int) -> MemberState:
        """Return the shared record of member ``g`` in the state ``code`` at ``incarnation``,
        at its registered address with every other field at its default."""
        key = _shared_key(g, code, incarnation)
        s = self._shared.get(key)
        if s is None:
            state = _DECODE[code]
            assert state is not None
            s = self._shared[key] = MemberState(self.ids[g], self.addrs[g], state, incarnation)
            if state is ALIVE:
                self._shared_alive[id(s)] = (g, incarnation)
        return s

    def __len__(self) -> int:
        return len(self.ids)


_first, _second = itemgetter(0), itemgetter(1)


def _shared_key(g: int, code: int, incarnation: int) -> int:
    """The key of a shared record in ``Registry._shared``: number, incarnation (u32) and state
    code (3 bits) in one int. :meth:`CompactStore.states` computes it inline (a call a member
    saved)."""
    return (g << 35) | (incarnation << 3) | code


def _runs(gs: list[int], limit: int = 8) -> list[tuple[int, int, int]] | None:
    """Split ``gs`` into runs of consecutive numbers: ``(offset in gs, first number, length)``;
    None if it takes more than ``limit`` runs (each found by a binary search of slice
    comparisons, so a bootstrap's table, every number but one, costs a few C loops)."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(gs)
    while i < n:
        if len(out) == limit:
            return None
        g0 = gs[i]
        lo, hi = 1, n - i          # gs[i:i+lo] is a run; find the longest
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if gs[i:i + mid] == list(range(g0, g0 + mid)):
                lo = mid
            else:
                hi = mid - 1
        out.append((i, g0, lo))
        i += lo
    return out


def _store(setitem: Any, keys: Iterable[int], values: Iterable[Any]) -> None:
    """``setitem(k, v)`` for each pair of ``keys`` and ``values``, looping in C."""
    deque(map(setitem, keys, values), maxlen=0)


def _positions(pos: Any, gs: list[int], runs: list[tuple[int, int, int]] | None, start: int) -> None:
    """``pos[gs[k]] = start + k`` for each k (by slices over ``runs`` when given)."""
    if runs is None:
        _store(pos.__setitem__, gs, range(start, start + len(gs)))
        return
    for i, g0, n in runs:
        pos[g0:g0 + n] = array("i", range(start + i, start + i + n))


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
        reg = self.registry
        gs = reg.plain(states)
        if gs is None:
            # Some field off its default, or a member not registered: one member at a time.
            for s in states:
                reg.intern(s.node, s.addr)
            ObjectStore.bulk_add(self, members, ids, cids, probe, in_probe, states, now)  # type: ignore[arg-type]
            return
        if not gs:
            return
        members._ensure(max(gs))
        size = len(members.st)
        # Array-wide stores in C (``map`` over the arrays' own ``__setitem__``), not a loop of
        # Python statements per member: a bootstrap enters N members in each of N tables.
        incs = [s.incarnation for s in states]
        runs = _runs(gs)
        if runs is None:
            _store(members.st.__setitem__, gs, repeat(_CODE[ALIVE]))
            _store(members.vouched.__setitem__, gs, repeat(0))
            _store(members.inc.__setitem__, gs, incs)
            _store(members.changed.__setitem__, gs, repeat(now))
        else:
            alive = bytes((_CODE[ALIVE],))
            for i, g0, n in runs:
                members.st[g0:g0 + n] = alive * n
                members.vouched[g0:g0 + n] = bytes(n)
                members.inc[g0:g0 + n] = array("I", incs[i:i + n])
                members.changed[g0:g0 + n] = array("d", (now,)) * n
        for extra in members._extras:
            if extra:
                for g in gs:
                    extra.pop(g, None)
        order = members.order
        _positions(members.pos, gs, runs, len(order))
        order.extend(array("i", gs))
        members.count += len(gs)
        for lst in (ids, cids):
            _grow(lst.pos, size, -1)
            _positions(lst.pos, gs, runs, len(lst.arr))
            lst.arr.extend(array("i", gs))
        _grow(in_probe.flags, size, 0)
        flags = in_probe.flags
        if flags.find(1) < 0 and len(set(gs)) == len(gs):
            new = gs
        else:
            new = []
            for g in gs:
                if not flags[g]:
                    flags[g] = 1
                    new.append(g)
        if new is gs and runs is not None:
            for _, g0, n in runs:
                flags[g0:g0 + n] = b"\x01" * n
        else:
            _store(flags.__setitem__, new, repeat(1))
        probe.arr.extend(array("i", new))

    def shuffle(self, rng: random.Random, order: MutableSequence[NodeID]) -> None:
        """Shuffle the array of registry numbers under ``order``: the same draws and the same
        permutation as shuffling the ids."""
        shuffle(rng, order.arr if isinstance(order, CompactProbeOrder) else order)

    def states(self, members: MutableMapping[NodeID, Member]) -> Iterable[MemberState]:
        """Return the records of ``members`` as exchanged by push/pull, in insertion order.

        A record with every field but its state and incarnation at its default (nearly all of
        them) is the registry's shared one (:meth:`Registry.shared`): a full state costs a
        lookup a member, not a new record, and :meth:`news` knows the shared records on sight.
        """
        assert isinstance(members, CompactMembers)
        t = members
        special = set().union(t.addr, t.meta, t.meta_stamp, t.pv, t.av, t.tags)
        table = self.registry._shared
        shared = self.registry.shared
        st, inc = t.st, t.inc
        out: list[MemberState] = []
        append = out.append
        for g in t.order:
            if g < 0:
                continue
            if g in special:
                append(CompactMember(t, g).to_state())
                continue
            code = st[g]
            i = inc[g]
            s = table.get((g << 35) | (i << 3) | code)   # _shared_key, inline
            append(s if s is not None else shared(g, code, i))
        return out

    def news(self, members: MutableMapping[NodeID, Member], states: Sequence[MemberState]) -> Sequence[MemberState]:
        """See :meth:`~gossip.protocol.tables.TableStore.news`: a shared record (see
        :meth:`states`) is judged from the arrays, any other as the ordinary store does."""
        assert isinstance(members, CompactMembers)
        t = members
        known = self.registry._shared_alive.get
        pos, inc, addr = t.pos, t.inc, t.addr
        size = len(pos)
        out: list[MemberState] = []
        append = out.append
        for s in states:
            hit = known(id(s))
            if hit is None:
                out += news(t, (s,))
                continue
            g, i = hit
            # A shared alive record: the registered address, no metadata (stamp 0).
            if g < size and pos[g] >= 0 and i <= inc[g] and g not in addr:
                continue
            append(s)
        return out
