"""The merge rules: what an update or a full state about a member does to our table.

For updates about member M (SWIM section 4.2, as memberlist applies them):

* ``alive(M, i)`` wins over anything about M at an incarnation below ``i``;
* ``suspect(M, i)`` wins over ``alive(M, j)`` when ``i >= j`` (:meth:`.Suspicions.on_suspect`);
* ``dead(M, i)`` (or left, when M announced it) wins over alive and suspect when ``i >= j``;
* only M raises its own incarnation: what is said of this node goes to
  :class:`~.membership.LocalNode`, which refutes it.

A full state (push/pull, join) is merged member by member with the same rules, except that a
remote verdict of suspect or dead is only a suspicion here: if the member is alive it will
hear of it and refute, and stale deaths never spread as deaths.

:class:`Merger` also bounds what one message may do: newcomers go through the table's
admission (:meth:`~.membership.MemberTable.admit`), incarnations may not jump further than
``max_incarnation_jump``, metadata too large or stamped too far ahead is not taken, and a peer
that gossips an accusation older than what we know is corrected.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..config import Config
from ..messages import (
    EMPTY_META, MAX_INCARNATION, NO_TAGS, Alive, Dead, Forget, MemberState, Ping, Suspect, Update,
    metadata_size, tags_size,
)
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .actions import EVENT_CONFLICT, EVENT_METADATA, MemberRefused
from .dissemination import Dissemination
from ..address import host_of
from .membership import Inbound, LocalNode, Member, MemberTable
from .outbox import Outbox
from .suspicion import Suspicions

__all__ = ["Merger", "MergeWatcher"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


class MergeWatcher(Protocol):
    """What :class:`Merger` tells as it merges (:class:`~.insight.Insight`)."""

    syncing: bool
    """Set while a full state is merged."""

    def alive_again(self, now: float, m: Member, incarnation: int) -> None:
        """``m`` is known alive at a higher ``incarnation`` (before its state changes)."""

    def dead(self, now: float, m: Member, d: Dead | None) -> None:
        """``m`` is declared dead by ``d``."""


class Merger:
    """Merges updates and full states into the member table.

    Args:
        config: the protocol's configuration.
        out: where sends and counters go.
        table: the member table.
        inbound: the context of the message being handled.
        local: this node's own record (what is said of us goes there).
        suspicions: the suspect rule.
        news: dissemination (merged news is passed on; stale gossip corrected).
        watcher: told of returns and verdicts.
    """

    def __init__(self, config: Config, out: Outbox, table: MemberTable, inbound: Inbound,
                 local: LocalNode, suspicions: Suspicions[Member], news: Dissemination,
                 watcher: MergeWatcher) -> None:
        self.config = config
        self.out = out
        self.table = table
        self.members = table.members
        self.inbound = inbound
        self.local = local
        self.id = local.id
        self.suspicions = suspicions
        self.on_suspect = suspicions.on_suspect
        self.news = news
        self.watcher = watcher
        self.refused: set[NodeID] = set()   # members told of as refused (bounded)

    # ------------------------------------------------------------------ updates

    def updates(self, now: float, updates: Iterable[Update], peer: NodeID | None = None) -> None:
        """Merge the updates of a gossip, ping or ack ``peer`` sent."""
        stale: list[Update] = []
        for u in updates:
            if not 0 <= u.incarnation <= MAX_INCARNATION:
                self.out.count("refused_incarnation_range")   # a host that skipped the decoder
                continue
            t = type(u)
            if t is Alive:
                self.on_alive(now, u)  # type: ignore[arg-type]
                continue
            if t is Suspect:
                self.on_suspect(now, u)  # type: ignore[arg-type]
            elif t is Forget:
                self.on_forget(now, u)  # type: ignore[arg-type]
                continue
            else:
                self.on_dead(now, u)  # type: ignore[arg-type]
            m = self.members.get(u.node)
            if peer is None or m is None:
                continue
            if m.state is ALIVE and u.incarnation < m.incarnation:
                stale.append(m.to_alive())
            elif m.state is LEAVING and u.incarnation <= m.incarnation and not (t is Dead and u.left):  # type: ignore[union-attr]
                # The peer missed the leave and now suspects the leaver on its own: it would
                # wait out a whole suspicion timeout with no one to confirm it. Tell it.
                stale.append(Dead(m.node, m.incarnation, m.node))
        if stale:
            self.news.correct(peer, stale)  # type: ignore[arg-type]

    def oversize(self, meta: Any, tags: frozenset[str]) -> bool:
        """True (and counted) if metadata and tags together exceed ``max_metadata_size``."""
        if not self._too_big(meta, tags):
            return False
        self.out.count("refused_metadata_size")
        return True

    def _too_big(self, meta: Any, tags: frozenset[str]) -> bool:
        """True if metadata and tags together exceed ``max_metadata_size`` (not counted)."""
        if not meta and not tags:
            return False
        return (metadata_size(meta) if meta else 0) + tags_size(tags) > self.config.max_metadata_size

    def _checked_meta(self, a: Alive, m: Member | None) -> Alive:
        """Return ``a``, or ``a`` with our current metadata and tags for it if its own are too
        large (together: tags count against the metadata bound) or stamped too far ahead of our
        clock.

        Liveness is kept: a peer configured with a larger ``max_metadata_size`` is still a member.
        """
        if m is not None and a.meta_stamp <= m.meta_stamp:
            return a
        if (a.meta_stamp and self.local.stamp_refused(a.meta_stamp)) or self.oversize(a.meta, a.tags):
            meta, stamp, tags = (m.meta, m.meta_stamp, m.tags) if m is not None else (EMPTY_META, 0, NO_TAGS)
            return Alive(a.node, a.incarnation, a.addr, meta, stamp, a.pv, a.av, tags)
        return a

    def on_alive(self, now: float, a: Alive, echo: bool = True) -> None:
        """Merge ``alive(a.node, a.incarnation)``: admit a newcomer, or update a member. With
        ``echo`` false a newcomer is not queued for gossip (see :meth:`states`)."""
        if a.node == self.id:
            self.local.claimed_alive(now, a)
            return
        table = self.table
        m = self.members.get(a.node)
        if m is None:
            if a.pv != PROTOCOL_VERSION:
                self.out.count("refused_protocol_version")
                if a.node not in self.refused and len(self.refused) < 1024:
                    self.refused.add(a.node)
                    self.out.emit(MemberRefused(a.node, a.addr, "no protocol version in common (it "
                                                f"announces {a.pv}, we speak {PROTOCOL_VERSION})", now))
                return
            if table.forgotten and table.forgotten_refuses(a):
                return
            itself = table.introduces_itself(a)
            if not table.admit(now, itself):
                return
            a = self._checked_meta(a, None)
            table.add(now, a, itself)
            if echo:
                self.news.queue(now, a)
            return
        if a.incarnation <= m.incarnation and a.meta_stamp <= m.meta_stamp and a.addr == m.addr:
            return   # nothing newer (the common case of gossip: news we had already)
        if (m.state is ALIVE or m.state is SUSPECT) and not table.introduces_itself(a) \
                and table.jump_refused(a.incarnation, m.incarnation, False):
            # (A member's own word on its incarnation is taken at any distance: it is the one
            # that raises it, and a victim of forged accusations must not flap.)
            return
        if a.addr != m.addr:
            reclaimable = (m.state is DEAD or m.state is LEAVING) and \
                now - m.state_change >= self.config.dead_node_reclaim_time
            if not reclaimable:
                if a.incarnation >= m.incarnation:
                    self.out.count("conflicts")
                    table.event(EVENT_CONFLICT, m, m.state, now, conflict_addr=a.addr)
                return
            if a.incarnation <= m.incarnation:
                # A new process reclaiming the id: it starts over, so let its record replace ours.
                if m.incarnation >= MAX_INCARNATION:
                    self.out.count("incarnation_exhausted")
                    return
                a = Alive(a.node, m.incarnation + 1, a.addr, a.meta, a.meta_stamp, a.pv, a.av, a.tags)
        a = self._checked_meta(a, m)
        meta_changed = False
        if a.meta_stamp > m.meta_stamp:
            m.meta = a.meta
            m.meta_stamp = a.meta_stamp
            m.tags = a.tags
            meta_changed = True
            table.invalidate(m)
        if a.incarnation > m.incarnation:
            if a.addr != m.addr:
                # A new address must be shown too: until then it counts against whoever named
                # it, and is not dialed (see MemberTable.dialable).
                m.addr = a.addr
                if table.introduces_itself(a):
                    table.confirm(m)
                else:
                    table.unconfirm(m)
                m.vouched = self.inbound.vouching
            elif self.inbound.vouching:
                m.vouched = True
            m.incarnation = a.incarnation
            m.pv = a.pv
            m.av = a.av
            m.suspicion = None
            table.invalidate(m)
            self.watcher.alive_again(now, m, a.incarnation)   # insight: refuted, or back from dead
            if m.state is SUSPECT:
                self.out.count("suspicions_refuted")
            if m.state is not ALIVE:
                table.set_state(now, m, ALIVE)
            self.news.queue(now, a)
        elif meta_changed:
            self.news.queue(now, a)
        if meta_changed:
            table.event(EVENT_METADATA, m, m.state, now)

    def on_dead(self, now: float, d: Dead) -> None:
        """Merge ``dead(d.node, d.incarnation)`` (a leave when ``d.left``)."""
        if d.node == self.id:
            self.local.accused(now, d.incarnation)
            return
        table = self.table
        m = self.members.get(d.node)
        if m is None or d.incarnation < m.incarnation:
            return
        if m.state is DEAD or m.state is LEAVING:
            if d.left and m.state is DEAD and d.incarnation >= m.incarnation:
                if table.jump_refused(d.incarnation, m.incarnation, True):
                    return
                # The node itself said it left: more precise than our dead verdict.
                m.incarnation = d.incarnation
                table.set_state(now, m, LEAVING)
            return
        if table.jump_refused(d.incarnation, m.incarnation, True):
            return
        m.incarnation = d.incarnation
        m.suspicion = None
        self.watcher.dead(now, m, d)
        table.set_state(now, m, LEAVING if d.left else DEAD)
        self.news.queue(now, d)
        msg = self.inbound
        if d.left and not (msg.sender == m.node and (msg.authenticated or msg.src_host == host_of(m.addr))):
            self._check_leave(m, d)

    def on_forget(self, now: float, f: Forget) -> None:
        """Merge ``forget(f.node, f.incarnation)``: drop a dead or left member's record at once
        and pass the news on.

        Refused (and counted) when it comes from outside the cluster (``refused_forget_stranger``:
        a packet neither sealed with a cluster key nor sent by a member from its own host),
        when we hold the member alive or suspect (``refused_forget_live``: a live member is never
        forgotten), or when we know it at a higher incarnation (it came back since). A forget
        of this node is an accusation: it refutes, and comes back everywhere as new.
        """
        if f.node == self.id:
            self.local.accused(now, f.incarnation)
            return
        m = self.members.get(f.node)
        if m is None:
            return   # already forgotten (or never known): the news stops here
        if not self.inbound.vouching:
            self.out.count("refused_forget_stranger")
            return
        if m.state is ALIVE or m.state is SUSPECT:
            self.out.count("refused_forget_live")
            return
        if f.incarnation < m.incarnation:
            self.out.count("refused_forget_stale")
            return
        self.out.count("members_forgotten")
        self.table.forget(now, m)
        self.news.queue(now, f)

    def _check_leave(self, m: Member, d: Dead) -> None:
        """A leave of ``m`` that ``m`` did not tell us itself is an accusation: tell ``m`` at
        once, in a ping it answers. If it left, its ack says so again; if the leave was forged,
        it refutes, and its ack brings the refutation back within one round trip (no one
        gossips to a member that left, so it would otherwise refute only at its next state
        exchange, and stay out of every view until then)."""
        self.out.count("leaves_checked")
        if self.table.dialable(m):
            self.out.send(m.addr, Ping(self.out.next_seq(), m.node, self.local.addr, (d,)))

    # ------------------------------------------------------------------ full states

    def states(self, now: float, states: Sequence[MemberState], catch_up: bool = False,
               peer: NodeID | None = None, echo: bool = True) -> None:
        """Merge a full state. ``peer`` is the member that sent it: a member it holds dead is
        its verdict, so it starts (or independently confirms) our suspicion in its name;
        without it, a node whose only news of a death came by a state exchange would wait the
        longest suspicion timeout alone. A member it holds suspect is hearsay (most often an
        accusation it heard by gossip, like everyone): it may start a suspicion here but
        never confirms one (:meth:`.Suspicions.on_hearsay`). With ``echo`` false, members new
        to us are entered without being queued for gossip (the sender's cluster knows them:
        see :meth:`~.sync.Sync.on_join_reply`); news about members we knew is passed on as
        always (a refutation must spread)."""
        self.watcher.syncing = True
        try:
            self._state_list(now, states, catch_up, peer, echo)
        finally:
            self.watcher.syncing = False

    def _state_list(self, now: float, states: Sequence[MemberState], catch_up: bool,
                    peer: NodeID | None, echo: bool) -> None:
        per_message = self.config.max_members_per_message
        msg = self.inbound
        table = self.table
        members = self.members
        refused = 0
        # A reply to our own request (a join's answer, a push/pull's) is bounded by the table's
        # size only (MemberTable.admit): when all of it fits, a member new to us that another
        # member names, alive, in our protocol version, with metadata we would take as it is,
        # enters the table at once, without the checks of on_alive it passes anyway (a fresh
        # joiner's table is the whole cluster, entered member by member). Any other record,
        # and the sender's own, takes the path of on_alive.
        direct = msg.solicited and not table.forgotten and \
            len(members) + len(states) <= self.config.max_members
        sender = msg.sender.int if msg.sender is not None else -1
        me = self.id.int
        # Most of a full state is what we hold already (alive, at the same address, nothing
        # newer): the store drops those records first, the compact store without a view of each.
        for s in table.store.news(members, states):
            if not 0 <= s.incarnation <= MAX_INCARNATION:
                self.out.count("refused_incarnation_range")
                continue
            node = s.node.int
            if direct and s.state is ALIVE and node != sender and node != me and s.pv == PROTOCOL_VERSION \
                    and s.node not in members and not (s.meta_stamp and self.local.stamp_ahead(s.meta_stamp)) \
                    and not self._too_big(s.meta, s.tags):
                msg.new_in_msg += 1
                table.add(now, s)
                if echo:
                    self.news.queue(now, Alive(s.node, s.incarnation, s.addr, s.meta, s.meta_stamp, s.pv, s.av,
                                               s.tags))
                continue
            if node == me:
                self.local.claimed_state(now, s, catch_up)
                continue
            if s.state is ALIVE:
                if not msg.solicited and msg.new_in_msg >= per_message and s.node not in members:
                    refused += 1   # the rest of a flood costs a lookup each, no more
                    continue
                self.on_alive(now, Alive(s.node, s.incarnation, s.addr, s.meta, s.meta_stamp, s.pv, s.av, s.tags),
                              echo)
            elif s.state is LEAVING:
                if s.node not in members:
                    continue
                self.on_dead(now, Dead(s.node, s.incarnation, s.node))
            elif s.state is DEAD or s.state is SUSPECT:
                # A remote verdict is only a suspicion here (memberlist's rule): if the node is
                # alive it will hear of it and refute; stale deaths never spread as deaths.
                m = members.get(s.node)
                if m is not None and s.meta_stamp > m.meta_stamp and not self.local.stamp_refused(s.meta_stamp):
                    if not self.oversize(s.meta, s.tags):
                        m.meta, m.meta_stamp, m.tags = s.meta, s.meta_stamp, s.tags
                        table.invalidate(m)
                        table.event(EVENT_METADATA, m, m.state, now)
                accuser = peer if peer is not None and peer != s.node else self.id
                if s.state is DEAD:
                    self.on_suspect(now, Suspect(s.node, s.incarnation, accuser))
                else:
                    # Held suspect is not suspected by the peer itself: hearsay, which never
                    # confirms a suspicion (Suspicions.on_hearsay).
                    self.suspicions.on_hearsay(now, Suspect(s.node, s.incarnation, accuser))
        if refused:
            stats = self.out.stats
            stats["refused_members_per_message"] = stats.get("refused_members_per_message", 0) + refused
