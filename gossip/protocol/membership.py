"""The member table, how a newcomer is admitted to it, and this node's own record.

* :class:`Member`: the local node's record of one other member;
* :class:`Inbound`: what the core knows of the message it is handling (who sent it, from
  which host, whether it answers our own request), read by admission and the merge rules;
* :class:`MemberTable`: every member, indexed for random sampling and the probe order, with
  the bounds on who may enter it (see :meth:`MemberTable.admit`) and the rule for when a
  member has shown itself to exist (:meth:`MemberTable.confirm`);
* :class:`LocalNode`: this node's id, address, metadata and incarnation, and how it answers
  what others say of it: refutation, the incarnation budget, metadata reasserted over a
  forged stamp.

Every table is bounded by a ``Config`` field and every refusal counted in the outbox's stats
(``refused_<why>``); :class:`~.core.Protocol` documents the bounds as a whole.

Pure data: no clock, no threads, no I/O; ``now`` and the random source are passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, MutableMapping, MutableSequence
from typing import Any, Protocol

from ..address import host_of
from ..config import Config
from ..hlc import COUNTER_BITS, MAX_TIMESTAMP
from ..messages import MAX_INCARNATION, NO_TAGS, Alive, Dead, MemberState, Update
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .actions import EVENT_REMOVED, EVENT_STATE, MemberEvent, Trace
from .awareness import Awareness
from .outbox import Outbox
from .reconnect import Reconnector
from .tables import IdList, IdSet, Member, ObjectStore, TableStore, shuffle

__all__ = ["Member", "Inbound", "MemberTable", "MemberWatcher", "LocalNode"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


class Inbound:
    """The context of the message being handled (set by the core as each one arrives).

    Attributes:
        src_host: the host part of its source address (:func:`gossip.address.host_of`).
        sender: the packet's sender id, when known.
        authenticated: the packet was sealed with a cluster key (``sender`` is authentic).
        vouching: it comes from inside the cluster (see :class:`Member`).
        joining: it is a join request (a joiner is given room in a full table).
        solicited: it answers our own join or push/pull.
        new_in_msg: newcomers it brought to the table so far.
    """

    __slots__ = ("src_host", "sender", "authenticated", "vouching", "joining", "solicited", "new_in_msg")

    def __init__(self) -> None:
        self.src_host = ""
        self.sender: NodeID | None = None
        self.authenticated = False
        self.vouching = False
        self.joining = False
        self.solicited = False
        self.new_in_msg = 0


class MemberWatcher(Protocol):
    """What the table tells about its members as they change (:class:`~.insight.Insight`)."""

    def state_changed(self, now: float, m: Member, prev: NodeState) -> None:
        """``m`` went from ``prev`` to ``m.state``."""

    def added(self, now: float, m: Member) -> None:
        """``m`` entered the table."""

    def forget(self, now: float, m: Member) -> None:
        """``m`` left the table."""


class MemberTable:
    """Every member this node knows (itself excluded), with its indices and admission bounds.

    Args:
        config: the protocol's configuration (``max_members`` and the admission bounds).
        rng: the core's random source (sampling, the probe order).
        out: where member events and counters go.
        inbound: the context of the message being handled.
        reconnect: told of members forgotten while dead, and of members back.

    Call :meth:`watch` once the parts that follow the table exist.
    """

    def __init__(self, config: Config, rng: random.Random, out: Outbox, inbound: Inbound,
                 reconnect: Reconnector, store: TableStore | None = None) -> None:
        self.config = config
        self.store = store = store if store is not None else ObjectStore()
        self.rng = rng
        cls = type(rng)
        self._plain_rng = cls.randrange is random.Random.randrange and \
            cls._randbelow is random.Random._randbelow_with_getrandbits  # type: ignore[attr-defined]
        self.out = out
        self.inbound = inbound
        self.reconnect = reconnect
        self.members: MutableMapping[NodeID, Member] = store.members()
        self.counts: dict[NodeState, int] = {ALIVE: 0, SUSPECT: 0, DEAD: 0, LEAVING: 0}
        self.ids: IdList = store.id_list()    # every member, for random sampling
        self.cids: IdList = store.id_list()   # the members that showed themselves (introducer None)
        self.probe_list: MutableSequence[NodeID] = store.probe_order()   # the probe order (SWIM section 4.3)
        self._in_probe_list: IdSet = store.id_set()
        self._probe_index = 0
        self.unconfirmed: dict[str, int] = {}     # source host -> members only it vouched for
        self.unproven: dict[NodeID, None] = {}    # those members, oldest first
        self._gone: dict[NodeID, None] = {}       # dead and left members, longest gone first
        # Members forgotten by an operator (Protocol.forget): id -> (incarnation, when), oldest
        # first, kept for dead_node_retention_period and at most max_members, so that stale
        # news about them from third parties cannot bring them back (see merge.Merger.on_alive).
        self.forgotten: dict[NodeID, tuple[int, float]] = {}
        self._unconfirmed_cap = max(1, int(config.max_members * config.max_unconfirmed_share))
        self._dial_all = config.force_reliable_transport
        # The full state, kept up to date record by record when the store allows it (see
        # full_state): the members' records in insertion order (None where a member left the
        # table), the members whose record changed since, and our own record.
        self.states_cache: tuple[MemberState, ...] | None = None
        self._records: list[MemberState | None] | None = None
        self._holes = 0
        self._stale: list[Member] = []
        self._local_record: MemberState | None = None
        self._watcher: MemberWatcher | None = None
        self._forget_news: Callable[[NodeID], None] = lambda node: None

    def watch(self, watcher: MemberWatcher, forget_news: Callable[[NodeID], None]) -> None:
        """Tell ``watcher`` of every change from now on, and call ``forget_news`` with each
        member forgotten (its queued updates are void)."""
        self._watcher = watcher
        self._forget_news = forget_news

    # ------------------------------------------------------------------ queries

    def num_members(self) -> int:
        """Return the number of alive and suspect members, this node included."""
        return self.counts[ALIVE] + self.counts[SUSPECT] + 1

    def full_state(self, local: LocalNode) -> tuple[MemberState, ...]:
        """Return the full state (``local`` first, then every member) for a state exchange.

        With a store that allows it (``cache_states``), the records are kept between exchanges
        and only those of the members changed since (:meth:`invalidate`, :meth:`set_state`,
        :meth:`add`, :meth:`remove`) are made again: a full state costs a copy of the list, not
        a record a member (a table of hundreds changes every second in a churning cluster,
        and each node sends a full state every few seconds, to a peer or a dead member).
        """
        if not self.store.cache_states:
            return (local.self_state(),) + tuple(self.store.states(self.members))
        states = self.states_cache
        if states is not None:
            return states
        records = self._records
        if records is None:
            records = self._records = []
            for i, m in enumerate(self.members.values()):
                m.spos = i
                records.append(m.to_state())
            self._holes = 0
        else:
            for m in self._stale:
                if m.spos >= 0:
                    records[m.spos] = m.to_state()
        self._stale.clear()
        if self._local_record is None:
            self._local_record = local.self_state()
        states = self.states_cache = (self._local_record,) + tuple(filter(None, records))
        return states

    def invalidate(self, m: Member | None = None) -> None:
        """The record of ``m`` changed (``None``: any record, ours included; see
        :meth:`full_state`)."""
        self.states_cache = None
        if m is None:
            self._records = self._local_record = None
            self._stale.clear()
        elif self._records is not None:
            stale = self._stale
            stale.append(m)
            if len(stale) > len(self._records):   # not asked for in a long time: start over
                self._records = None
                stale.clear()

    def local_changed(self) -> None:
        """Our own record changed (see :meth:`full_state`)."""
        self.states_cache = self._local_record = None

    def gone(self) -> Iterable[NodeID]:
        """Return the dead and left members (longest gone first)."""
        return self._gone

    def dialable(self, m: Member) -> bool:
        """May we send to ``m``'s address? Sending to a WebSocket URL (or to any address, when
        every packet goes over a connection) dials it, and an address learned from an
        unauthenticated packet is dialed only once its member has shown itself, or if a member
        from inside the cluster named it (see :class:`Member`): a stranger's fake member must
        not make us open connections to whatever it names. Datagrams go anywhere: the answer to
        a probe is how a member shows itself."""
        return m.introducer is None or m.vouched or not (self._dial_all or "://" in m.addr)

    def shown_at(self, sender: NodeID | None, addr: str) -> bool:
        """True if ``sender`` is a member that has shown itself, at ``addr``."""
        m = self.members.get(sender) if sender is not None else None
        return m is not None and m.introducer is None and m.addr == addr

    def answer_addr(self, src: str, claimed: str, sender: NodeID | None) -> str:
        """Return where a datagram answer to the message being handled goes: its source
        ``src``, unless ``claimed`` (the address it says to answer at) is the address of the
        member that sent it, which has shown itself. Never an address a packet merely names:
        that would aim our answers at a third party, or make us dial it."""
        return claimed if claimed != src and self.shown_at(sender, claimed) else src

    def introduces_itself(self, a: Alive) -> bool:
        """True if the message being handled comes from ``a``'s own node: sealed with a cluster
        key (its sender id is authentic), or from the host of its own address."""
        msg = self.inbound
        return msg.sender == a.node and (msg.authenticated or msg.src_host == host_of(a.addr))

    def jump_refused(self, claimed: int, known: int, accusation: bool) -> bool:
        """Return True (and count it) if a claim runs too far ahead of what we know."""
        jump = self.config.max_incarnation_jump
        if claimed - known >= jump if accusation else claimed - known > jump:
            self.out.count("refused_incarnation_jump")
            return True
        return False

    # ------------------------------------------------------------------ sampling

    def sample_known(self, k: int, accept: Callable[[Member], bool], exclude: set[NodeID]) -> list[Member]:
        """Sample among members that showed themselves first, then among the others that may
        be sent to (see :meth:`dialable`)."""
        out = self.sample(k, accept, exclude, self.cids)
        if len(out) < k and len(self.cids) < len(self.ids):
            taken = exclude | {m.node for m in out}
            out += self.sample(k - len(out), lambda m: m.introducer is not None and self.dialable(m)
                               and accept(m), taken)
        return out

    def sample(self, k: int, accept: Callable[[Member], bool], exclude: set[NodeID],
               ids: IdList | None = None, among: Iterable[NodeID] | None = None) -> list[Member]:
        """Return up to ``k`` distinct random members of ``ids`` (default: all) that ``accept``
        takes, excluding ``exclude``. ``among``, if given, holds every member ``accept`` may
        take (such as :meth:`gone`): a large table is then not scanned whole."""
        if ids is None:
            ids = self.ids
        n = len(ids)
        if k <= 0 or n == 0:
            return []
        out: list[Member] = []
        if n <= 4 * k + 8:
            order = list(ids)
            shuffle(self.rng, order)
            for node in order:
                m = self.members[node]
                if node not in exclude and accept(m):
                    out.append(m)
                    if len(out) == k:
                        break
            return out
        # Large table: rejection sampling, then a full scan if too few were accepted. The draws
        # are randrange's (inlined for a plain generator: the same numbers, no calls).
        rng, members = self.rng, self.members
        plain = self._plain_rng
        getrandbits, bits = rng.getrandbits, n.bit_length()
        drawn: set[int] = set()
        for _ in range(6 * k):
            if plain:
                r = getrandbits(bits)
                while r >= n:
                    r = getrandbits(bits)
            else:
                r = rng.randrange(n)
            if r in drawn:
                continue
            drawn.add(r)
            node = ids[r]
            m = members[node]
            if (not exclude or node not in exclude) and accept(m):
                out.append(m)
                if len(out) == k:
                    return out
        seen: set[NodeID] = {ids[r] for r in drawn}
        if among is None:
            rest = [self.members[i] for i in ids if i not in seen and i not in exclude and accept(self.members[i])]
        else:   # the same members in the same order (that of ``ids``), from the few candidates
            members = self.members
            found = [i for i in among if i in ids and i not in seen and i not in exclude and accept(members[i])]
            found.sort(key=ids.index)
            rest = [members[i] for i in found]
        self.rng.shuffle(rest)
        out.extend(rest[: k - len(out)])
        return out

    def next_probe_target(self) -> Member | None:
        """Return the next live member in the probe order that may be probed, or None.

        The order is a shuffled round robin (SWIM section 4.3): at its end, forgotten members
        are dropped and it is shuffled again. Members that may not be dialed are skipped
        (``skipped_unproven_dials``).
        """
        plist = self.probe_list
        for _ in range(len(plist) + 1):
            if self._probe_index >= len(plist):
                # Wrap: drop forgotten members and reshuffle (SWIM's round-robin bound).
                plist[:] = [n for n in plist if n in self.members]
                self._in_probe_list = self.store.id_set(plist)
                self.store.shuffle(self.rng, plist)
                self._probe_index = 0
                if not plist:
                    return None
            node = plist[self._probe_index]
            self._probe_index += 1
            m = self.members.get(node)
            if m is not None and (m.state is ALIVE or m.state is SUSPECT):
                if self.dialable(m):
                    return m
                self.out.count("skipped_unproven_dials")
        return None

    # ------------------------------------------------------------------ changes

    def event(self, kind: str, m: Member, prev: NodeState, now: float, conflict_addr: str = "") -> None:
        """Emit a :class:`~.actions.MemberEvent` about ``m``."""
        self.out.emit(MemberEvent(kind, m.node, m.addr, m.state, prev, m.incarnation, m.meta,
                                  m.meta_stamp, m.pv, m.av, now, conflict_addr, m.tags))

    def set_state(self, now: float, m: Member, state: NodeState) -> None:
        """Move ``m`` to ``state`` (the watcher emits the state event)."""
        prev = m.state
        if prev is state:
            return
        self.counts[prev] -= 1
        self.counts[state] += 1
        if state is DEAD or state is LEAVING:
            self._gone.pop(m.node, None)
            self._gone[m.node] = None
        elif prev is DEAD or prev is LEAVING:
            del self._gone[m.node]
        m.state = state
        m.state_change = now
        self.invalidate(m)
        assert self._watcher is not None
        self._watcher.state_changed(now, m, prev)   # insight: the state event, flaps, partitions

    def admit(self, now: float, itself: bool = False) -> bool:
        """Decide whether one more new member may enter the table (counting every refusal).

        Unsolicited messages may bring ``max_members_per_message`` newcomers each, and one
        source host may have named ``max_members_per_source`` members that have not shown
        themselves (a member introducing itself, ``itself``, does not count against that).
        Members that have not shown themselves fill ``max_unconfirmed_share`` of the table at
        most (news in a reply to our own request excepted). The table holds ``max_members`` in
        all; when it is full a dead or left member (the longest gone) makes room; failing that,
        a member that shows itself, a joiner, or a reply to our own request takes the place of
        the oldest member nobody has shown to exist, so strangers never keep real members
        out. Else the newcomer is refused.
        """
        cfg = self.config
        msg = self.inbound
        count = self.out.count
        room = itself or msg.solicited or msg.joining
        if not msg.solicited:
            if msg.new_in_msg >= cfg.max_members_per_message:
                count("refused_members_per_message")
                return False
            if not itself and self.unconfirmed.get(msg.src_host, 0) >= cfg.max_members_per_source:
                count("refused_members_per_source")
                return False
            if not itself and not msg.joining and len(self.unproven) >= self._unconfirmed_cap:
                oldest = self.members[next(iter(self.unproven))]
                if oldest.state is not DEAD and oldest.state is not LEAVING:
                    count("refused_unconfirmed_full")
                    return False
                self.remove(now, oldest)   # a dead stranger holds no place
                count("members_evicted")
        if len(self.members) >= cfg.max_members:
            if self._gone:
                self.remove(now, self.members[next(iter(self._gone))])
                count("members_evicted")
            elif room and self.unproven:
                self.remove(now, self.members[next(iter(self.unproven))])
                count("members_evicted_unconfirmed")
            else:
                count("refused_members_table_full")
                return False
        msg.new_in_msg += 1
        return True

    def add(self, now: float, a: Alive | MemberState, itself: bool = False) -> Member:
        """Add the member ``a`` announces (admitted by :meth:`admit`), or an alive record of a
        full state names, alive."""
        node = a.node
        self.reconnect.known(node)
        m = self.store.new_member(self.members, node, a.addr, ALIVE, a.incarnation, a.meta, a.meta_stamp,
                                  a.pv, a.av, now, a.tags)
        self.counts[ALIVE] += 1
        self.ids.add(node)
        if itself:
            self.cids.add(node)
        else:
            # Even a reply to our own request only names the member: the peer may hold fakes.
            self.unconfirm(m)
        m.vouched = self.inbound.vouching
        # A newcomer goes in at a random place of the probe order (SWIM section 4.3): appended,
        # then swapped with a random slot, O(1) as in memberlist. (randrange's draw, inlined
        # for a plain generator as in sample.)
        if node not in self._in_probe_list:
            plist = self.probe_list
            if len(plist) > 2 * len(self.members) + 16:
                self._compact_probe_list()
            self._in_probe_list.add(node)
            plist.append(node)
            n = len(plist)
            if self._plain_rng:
                getrandbits, bits = self.rng.getrandbits, n.bit_length()
                j = getrandbits(bits)
                while j >= n:
                    j = getrandbits(bits)
            else:
                j = self.rng.randrange(n)
            plist[-1], plist[j] = plist[j], plist[-1]
        if self._records is not None:
            m.spos = len(self._records)    # a place at the end, made at the next full state
            self._records.append(None)
        self.invalidate(m)
        self.event(EVENT_STATE, m, NodeState.UNKNOWN, now)
        assert self._watcher is not None
        self._watcher.added(now, m)   # insight: a partition's forgotten member may be back
        return m

    def _compact_probe_list(self) -> None:
        """Drop forgotten members from the probe order, keeping the position of the round."""
        plist = self.probe_list
        done = sum(1 for n in plist[: self._probe_index] if n in self.members)
        plist[:] = [n for n in plist if n in self.members]
        self._in_probe_list = self.store.id_set(plist)
        self._probe_index = done

    def bootstrap(self, now: float, states: Iterable[MemberState], self_id: NodeID) -> None:
        """Add the alive members of ``states`` (other than ``self_id``) without events, as
        members that showed themselves, then shuffle the probe order."""
        members = self.members
        me = self_id.int
        fresh = [s for s in states if s.state is ALIVE and s.node.int != me]
        # The common case, an empty table and distinct members, costs no id hashing.
        if members or len({s.node.int for s in fresh}) != len(fresh):
            firsts: dict[NodeID, MemberState] = {}
            for s in fresh:
                if s.node not in firsts and s.node not in members:
                    firsts[s.node] = s
            fresh = list(firsts.values())
        self.store.bulk_add(self.members, self.ids, self.cids, self.probe_list, self._in_probe_list, fresh, now)
        self.counts[ALIVE] += len(fresh)
        self.store.shuffle(self.rng, self.probe_list)
        self.invalidate()

    def unconfirm(self, m: Member) -> None:
        """``m`` was named by the source of the message being handled and has not shown itself
        (at this address): it counts against that source until it does."""
        if m.introducer is not None:
            return
        if m.node in self.cids:
            self.cids.remove(m.node)
        host = self.inbound.src_host
        m.introducer = host
        self.unconfirmed[host] = self.unconfirmed.get(host, 0) + 1
        self.unproven[m.node] = None

    def confirm(self, m: Member) -> None:
        """``m`` showed itself to exist: it no longer counts against its introducer."""
        host = m.introducer
        if host is None:
            return
        m.introducer = None
        self.unproven.pop(m.node, None)
        self.cids.add(m.node)
        left = self.unconfirmed.get(host, 0) - 1
        if left > 0:
            self.unconfirmed[host] = left
        else:
            self.unconfirmed.pop(host, None)

    def answered_at(self, addr: str, states: tuple[MemberState, ...]) -> None:
        """The answer to a request we sent to ``addr`` (a join or a push/pull) came back: its
        first state is the responder's own, and if it claims ``addr``, the responder has shown
        itself there (we dialed that address on our own account)."""
        if states and states[0].addr == addr:
            m = self.members.get(states[0].node)
            if m is not None and m.addr == addr:
                self.confirm(m)

    def remove(self, now: float, m: Member, for_good: bool = False) -> None:
        """Forget ``m`` (its queued news too). ``for_good``: an operator forgot it
        (:meth:`forget`), so its address is not retried after a heal."""
        if m.state is DEAD and m.introducer is None and not for_good:
            self.reconnect.forgotten(m.node, m.addr, now)   # it existed: retry it after a heal
        self.confirm(m)
        self._gone.pop(m.node, None)
        del self.members[m.node]
        self.counts[m.state] -= 1
        self.ids.remove(m.node)
        if m.node in self.cids:
            self.cids.remove(m.node)
        self._forget_news(m.node)
        self.states_cache = None
        records = self._records
        if records is not None and m.spos >= 0:
            records[m.spos] = None
            self._holes += 1
            if self._holes > len(records) // 2 + 16:
                self._records = None   # mostly holes: made again at the next full state
                self._stale.clear()
        m.spos = -1   # out of the table: a change of it touches no record
        self.event(EVENT_REMOVED, m, m.state, now)
        assert self._watcher is not None
        self._watcher.forget(now, m)

    def forget(self, now: float, m: Member) -> None:
        """Remove ``m`` (dead or left) for good, and remember for ``dead_node_retention_period``
        that it was forgotten at its incarnation (see :meth:`forgotten_refuses`)."""
        self.remove(now, m, for_good=True)
        self.reconnect.known(m.node)   # not retried either, if it was forgotten before
        forgotten = self.forgotten
        forgotten.pop(m.node, None)
        forgotten[m.node] = (m.incarnation, now)
        while len(forgotten) > self.config.max_members:
            del forgotten[next(iter(forgotten))]

    def forgotten_refuses(self, a: Alive) -> bool:
        """True (and counted) if ``a`` is stale news about a member forgotten lately: told by a
        third party, at no more than the incarnation it was forgotten at. The member's own word
        is always taken: a forgotten node that comes back joins as new."""
        entry = self.forgotten.get(a.node)
        if entry is None:
            return False
        if self.introduces_itself(a) or a.incarnation > entry[0]:
            del self.forgotten[a.node]
            return False
        self.out.count("refused_forgotten")
        return True

    def expire(self, now: float) -> None:
        """Forget members that left long enough ago, and the dead past their retention.

        Members nobody but their introducer ever vouched for are forgotten as soon as left
        ones are: a flood of fake members does not linger for the whole retention period.
        """
        cfg = self.config
        forgotten = self.forgotten
        while forgotten:
            node, (_, at) = next(iter(forgotten.items()))
            if now - at < cfg.dead_node_retention_period:
                break
            del forgotten[node]
        due = []
        for node in self._gone:      # the dead and left members: no scan of the whole table
            m = self.members[node]
            age = now - m.state_change
            short = m.state is LEAVING or m.introducer is not None
            if (short and age >= cfg.gossip_to_the_dead_time) or age >= cfg.dead_node_retention_period:
                due.append(m)
        if len(due) > 1:             # forgotten in table order (ids by their ints: no hashing in Python)
            by_int = {m.node.int: m for m in due}
            due = [by_int[n.int] for n in self.members if n.int in by_int]
        for m in due:
            self.remove(now, m)


class LocalNode:
    """This node's own record, and how it answers what others say of it.

    Incarnation rules (see :class:`~.core.Protocol`): only this node raises its incarnation;
    an accusation is refuted with ``alive(self, i + 1)``, once per received message at most
    (:meth:`settle`, called when the message has been handled), within a token bucket of
    ``Config.incarnation_budget`` per ``incarnation_budget_window`` (the answer to our own
    join excepted), never past ``MAX_INCARNATION``.

    Args:
        config: the protocol's configuration.
        out: where counters go.
        node_id, addr, meta, meta_stamp, app_version, incarnation: the initial record.
        now: the current time (the incarnation budget starts full).
        stamp_clock: the HLC clock metadata stamps are checked against (None: no check).
        awareness: the local health score (a refutation raises it, with Lifeguard).
        announce: queues an update for dissemination (``announce(now, update)``).
        changed: called when the record changes (the cached full state is void).
    """

    def __init__(self, config: Config, out: Outbox, node_id: NodeID, addr: str, now: float, *,
                 meta: Mapping[str, Any], meta_stamp: int, app_version: str, incarnation: int,
                 stamp_clock: Callable[[], int] | None, awareness: Awareness,
                 announce: Callable[[float, Update], None], changed: Callable[[], None],
                 tags: frozenset[str] = NO_TAGS) -> None:
        self.config = config
        self.out = out
        self.id = node_id
        self.addr = addr
        self.incarnation = incarnation
        self.meta: Mapping[str, Any] = dict(meta)
        self.meta_stamp = meta_stamp
        self.tags = tags
        self.app_version = app_version
        self.state = ALIVE
        self.lifeguard = config.lifeguard_enabled
        self.awareness = awareness
        self._announce = announce
        self._changed = changed
        self._stamp_clock = stamp_clock
        self._drift = int(config.max_clock_drift * 1_000_000) << COUNTER_BITS
        self.in_receive = False
        self.refuted_in_msg = False
        self._refute_to = -1              # the highest accusation about us in the message
        self._refute_catch_up = False     # ...it is our own join's answer
        # The incarnation budget: a token bucket of incarnations our own may rise by in answer
        # to what others say of us.
        self._inc_tokens = float(config.incarnation_budget)
        self._inc_tokens_at = now

    # ------------------------------------------------------------------ the record

    def self_state(self) -> MemberState:
        """Return this node's own state as it would be exchanged."""
        return MemberState(self.id, self.addr, self.state, self.incarnation, self.meta,
                           self.meta_stamp, PROTOCOL_VERSION, self.app_version, self.tags)

    def self_alive(self) -> Alive:
        """Return the update announcing this node alive as it is now."""
        return Alive(self.id, self.incarnation, self.addr, self.meta, self.meta_stamp,
                     PROTOCOL_VERSION, self.app_version, self.tags)

    def left_update(self) -> Dead:
        """Return the update announcing that this node left."""
        return Dead(self.id, self.incarnation, self.id)

    def set_address(self, addr: str) -> None:
        """Change the address this node advertises."""
        self.addr = addr
        self._changed()

    def leaving(self) -> None:
        """This node leaves: nothing said of it is refuted any more."""
        self.state = LEAVING
        self._changed()

    def set_metadata(self, now: float, meta: Mapping[str, Any], stamp: int,
                     tags: frozenset[str] | None = None) -> None:
        """Replace this node's metadata (and its tags, unless None) and announce them (see
        :meth:`~.core.Protocol.set_local_metadata`)."""
        self.meta = dict(meta)
        if tags is not None:
            self.tags = frozenset(tags)
        # Never below a stamp we reasserted our metadata at (see reassert_meta).
        self.meta_stamp = stamp if stamp >= self.meta_stamp else min(self.meta_stamp + 1, MAX_TIMESTAMP)
        if self.incarnation < MAX_INCARNATION:
            self.incarnation += 1
        else:
            self.out.count("incarnation_exhausted")
        self._changed()
        self._announce(now, self.self_alive())

    def stamp_refused(self, stamp: int) -> bool:
        """Return True (and count it) if a metadata stamp lies more than ``max_clock_drift``
        ahead of our clock: one forged stamp near 2**64 would outrank every later write."""
        if not self.stamp_ahead(stamp):
            return False
        self.out.count("refused_metadata_stamp")
        return True

    def stamp_ahead(self, stamp: int) -> bool:
        """True if a metadata stamp lies more than ``max_clock_drift`` ahead of our clock (not
        counted: :meth:`stamp_refused` counts)."""
        clock = self._stamp_clock
        return clock is not None and stamp > clock() + self._drift

    # ------------------------------------------------------------------ what others say of us

    def claimed_alive(self, now: float, a: Alive) -> None:
        """Someone speaks of us alive: refute an incarnation we did not reach, or another
        address or metadata at ours, so our own record wins."""
        if self.state is LEAVING:
            return
        if a.meta_stamp > self.meta_stamp:
            self.reassert_meta(now, a.meta_stamp, a.incarnation)
        elif a.incarnation > self.incarnation or (
                a.incarnation == self.incarnation and (a.addr != self.addr or a.meta_stamp != self.meta_stamp)):
            self.refute(now, a.incarnation)

    def claimed_state(self, now: float, s: MemberState, catch_up: bool) -> None:
        """A full state carries our own record ``s``: refute it if it is not ours."""
        if self.state is LEAVING:
            return
        if s.meta_stamp > self.meta_stamp:
            self.reassert_meta(now, s.meta_stamp, s.incarnation, catch_up)
        elif s.state is not ALIVE and s.incarnation >= self.incarnation:
            self.refute(now, s.incarnation, catch_up)
        elif s.incarnation > self.incarnation:
            self.refute(now, s.incarnation, catch_up)

    def accused(self, now: float, incarnation: int, catch_up: bool = False) -> None:
        """Someone suspects us or holds us dead: refute unless it is stale or we are leaving."""
        if self.state is not LEAVING and incarnation >= self.incarnation:
            self.refute(now, incarnation, catch_up)

    def reassert_meta(self, now: float, stamp: int, incarnation: int = -1, catch_up: bool = False) -> None:
        """Our own record went round with metadata stamped ``stamp``, newer than ours: someone
        wrote our metadata in our name. Restamp ours just above it and announce it (with the
        refutation of ``incarnation`` if that is higher), so every peer takes ours back. A
        stamp too far ahead of our clock is refused, not outbid."""
        if stamp >= MAX_TIMESTAMP:
            self.out.count("refused_metadata_stamp")
        elif not self.stamp_refused(stamp):
            self.meta_stamp = stamp + 1
            self._changed()
            self.out.count("metadata_reasserted")
        self.refute(now, max(self.incarnation, incarnation), catch_up)

    def refute(self, now: float, accused_incarnation: int, catch_up: bool = False) -> None:
        """Note an accusation of us (or a claim about us) at ``accused_incarnation``.

        Refused when it lies ``max_incarnation_jump`` or more ahead of our incarnation (unless
        ``catch_up``: our own join's answer), and impossible at the top of the range. The
        highest accusation a message carries is answered once, when the message has been
        handled (:meth:`settle`).
        """
        if not catch_up and accused_incarnation - self.incarnation >= self.config.max_incarnation_jump:
            self.out.count("refused_incarnation_jump")
            return
        if accused_incarnation >= MAX_INCARNATION:
            self.out.count("incarnation_exhausted")
            return
        if accused_incarnation > self._refute_to:
            self._refute_to = accused_incarnation
        if catch_up:
            self._refute_catch_up = True
        if not self.in_receive:
            self.settle(now)

    def _incarnation_tokens(self, now: float) -> float:
        """Return the incarnation budget left at ``now`` (the bucket refills evenly)."""
        cfg = self.config
        cap = float(cfg.incarnation_budget)
        elapsed = now - self._inc_tokens_at
        if elapsed > 0:
            self._inc_tokens = min(cap, self._inc_tokens + elapsed * cap / cfg.incarnation_budget_window)
            self._inc_tokens_at = now
        return self._inc_tokens

    def settle(self, now: float) -> None:
        """Raise our incarnation past the highest accusation noted, and announce that we are
        alive: once per received message at most, and within the incarnation budget (the
        answer to our own join excepted). Beyond the budget we rise as far as it allows, and
        the rest of the accusation is refused (``refused_incarnation_budget``)."""
        accused, catch_up = self._refute_to, self._refute_catch_up
        if accused < 0:
            return
        self._refute_to, self._refute_catch_up = -1, False
        if accused < self.incarnation:
            return
        if self.refuted_in_msg:
            self.out.count("refused_refutations_per_message")
            return
        target = accused + 1
        if not catch_up:
            tokens = self._incarnation_tokens(now)
            afford = self.incarnation + int(tokens)
            if target > afford:
                self.out.count("refused_incarnation_budget")
                if afford <= self.incarnation:
                    return
                target = afford
            self._inc_tokens = tokens - (target - self.incarnation)
        self.refuted_in_msg = self.in_receive
        previous, self.incarnation = self.incarnation, target
        self._changed()
        self._announce(now, self.self_alive())
        self.out.count("refutations")
        if self.config.tracing is not False:
            self.out.emit(Trace("gossip.refutation", now, now, {
                "gossip.member.id": str(self.id), "gossip.refutation.accused_incarnation": accused,
                "gossip.refutation.previous_incarnation": previous,
                "gossip.refutation.incarnation": target, "gossip.refutation.catch_up": catch_up}))
        if self.lifeguard:
            self.awareness.apply_delta(1)
