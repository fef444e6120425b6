"""The protocol state machine: membership table, SWIM + Lifeguard probing, dissemination,
push/pull anti-entropy, join, leave, recovery of dead members and rejoin when isolated.

Everything is driven by three verbs and one drain:

* ``receive(now, src, msg, sender=None, reliable=False)``: a decoded protocol message arrived;
* ``tick(now)``: run every timer due by ``now`` (call it at ``next_deadline()``);
* ``join(now, addrs)``, ``leave(now)``, ``set_local_metadata(now, meta, stamp)``: commands;
* ``actions_to_perform()``: the :class:`Send`, :class:`MemberEvent` and :class:`JoinResult`
  records produced since the last drain.

Merge rules (SWIM section 4.2, as memberlist applies them), for updates about member M:

* ``alive(M, i)`` wins over anything about M at an incarnation below ``i``;
* ``suspect(M, i)`` wins over ``alive(M, j)`` when ``i >= j``;
* ``dead(M, i)`` (or left, when M announced it) wins over alive and suspect when ``i >= j``;
* only M raises its own incarnation: told that it is suspect or dead, it refutes with
  ``alive(M, i + 1)``.

Lifeguard (Dadgar et al. 2018) adds local health awareness (probe interval and timeout scaled by
``score + 1``), nacks from ping-req helpers, the dynamic suspicion timeout, and the buddy system
(a ping to a suspect says so, so it refutes at once).

This module never reads a clock, never sleeps and never uses global randomness.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..config import Config
from ..messages import (
    EMPTY_META, Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Message, Nack, Ping, PingReq,
    PushPull, PushPullReply, Suspect, Update, update_size,
)
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .actions import (
    EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, EVENT_STATE, Action, JoinResult, MemberEvent, Send,
)
from .awareness import Awareness
from .broadcasts import BroadcastQueue, retransmit_limit
from .insight import Insight
from .rtt import ProbeRtt, RttHistogram
from .suspicion import Suspicion, suspicion_timeouts

__all__ = ["Protocol", "Member"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING

# Timer kinds
_T_PROBE, _T_PROBE_TIMEOUT, _T_PROBE_END, _T_RELAY_TIMEOUT = 1, 2, 3, 4
_T_SUSPICION, _T_GOSSIP, _T_PUSH_PULL, _T_MAINTENANCE, _T_JOIN_TIMEOUT, _T_SYNC = 5, 6, 7, 8, 9, 10

# Encoded-size budget of the fixed parts of a packet: header (39), encryption (28), the message's
# own fields and list framing. What is left of the UDP limit carries piggybacked updates.
_PACKET_OVERHEAD = 160

_T_INSIGHT = 20   # the timer kind of .insight (damping releases)


def _about(node: NodeID | None) -> Callable[[Update], bool] | None:
    """Return a filter skipping alive updates about ``node``: sending a member news of its own
    liveness is a wasted transmission (accusations about it are kept: it must refute them)."""
    if node is None:
        return None
    return lambda u: type(u) is Alive and u.node == node


class Member:
    """The local node's record of one other member (mutable; owned by :class:`Protocol`)."""

    __slots__ = ("node", "addr", "state", "incarnation", "meta", "meta_stamp", "pv", "av",
                 "state_change", "suspicion", "rtt")

    def __init__(self, node: NodeID, addr: str, state: NodeState, incarnation: int,
                 meta: Mapping[str, Any], meta_stamp: int, pv: int, av: str, now: float) -> None:
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
        self.rtt: float | None = None  # seconds of the last direct probe round trip

    def to_state(self) -> MemberState:
        """Return the record as exchanged by push/pull."""
        return MemberState(self.node, self.addr, self.state, self.incarnation, self.meta,
                           self.meta_stamp, self.pv, self.av)

    def __repr__(self) -> str:
        return f"Member({self.node.short}@{self.addr} {self.state.name} inc={self.incarnation})"


class _Probe:
    __slots__ = ("target", "acked", "indirect", "expected_nacks", "nacks", "sent_at")

    def __init__(self, target: NodeID, sent_at: float) -> None:
        self.target = target
        self.sent_at = sent_at
        self.acked = False
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    __slots__ = ("requester_addr", "orig_seq", "nack", "done")

    def __init__(self, requester_addr: str, orig_seq: int, nack: bool) -> None:
        self.requester_addr = requester_addr
        self.orig_seq = orig_seq
        self.nack = nack
        self.done = False


class Protocol:
    """One node's view of the cluster and the SWIM/Lifeguard machinery around it.

    Args:
        config: a validated :class:`~gossip.Config` (only its protocol knobs are read).
        node_id: this node's id.
        addr: this node's advertised transport address (how others reach it).
        rng: the only source of randomness; seed it for reproducible runs.
        now: the current time on the host's monotonic clock (seconds).
        meta, meta_stamp: the initial local metadata and its HLC stamp.
        app_version: this node's application version string.
        app_version_check: decides whether a joiner's application version is acceptable.
        incarnation: the starting incarnation (0 for a fresh process).
    """

    def __init__(
        self,
        config: Config,
        node_id: NodeID,
        addr: str,
        rng: random.Random,
        now: float,
        *,
        meta: Mapping[str, Any] = EMPTY_META,
        meta_stamp: int = 0,
        app_version: str = "",
        app_version_check: Callable[[str], bool] | None = None,
        incarnation: int = 0,
    ) -> None:
        self.config = config
        self.id = node_id
        self.addr = addr
        self.rng = rng
        self.incarnation = incarnation
        self.meta: Mapping[str, Any] = dict(meta)
        self.meta_stamp = meta_stamp
        self.app_version = app_version
        self.app_version_check = app_version_check
        self.state = ALIVE
        self.lifeguard = config.lifeguard_enabled
        self.awareness = Awareness(config.awareness_max_multiplier if self.lifeguard else 1)
        self.broadcasts = BroadcastQueue(config.broadcast_queue_size)
        self.members: dict[NodeID, Member] = {}
        self.counts: dict[NodeState, int] = {ALIVE: 0, SUSPECT: 0, DEAD: 0, LEAVING: 0}
        self.join_peers: list[str] = []
        self.stats: dict[str, int] = {}
        self.rtt = RttHistogram()
        self.insight = Insight(self, _T_INSIGHT)   # provenance, flap scores, partitions
        self._actions: list[Action] = []
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = 0
        self._seq = 0
        self._ids: list[NodeID] = []          # every member, for random sampling
        self._id_index: dict[NodeID, int] = {}
        self._probe_list: list[NodeID] = []
        self._probe_index = 0
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._joins: dict[int, str] = {}
        self._states_cache: tuple[MemberState, ...] | None = None
        self._corrected: dict[tuple[NodeID, NodeID], int] = {}
        self._self_alive_size = 0
        # First rounds start after a random stagger, so nodes started together do not beat in step.
        self._schedule(now + rng.uniform(0, config.health_check_interval), _T_PROBE, None)
        # Gossip rounds run only while there is something to gossip (an idle node sleeps).
        self._now = now
        self._gossip_armed = True
        self._schedule(now + rng.uniform(0, config.dissemination_interval), _T_GOSSIP, None)
        if config.state_sync_interval > 0:
            self._schedule(now + rng.uniform(0.5, 1.0) * self._push_pull_interval(), _T_PUSH_PULL, None)
        self._schedule(now + rng.uniform(0.5, 1.0) * config.recovery_attempt_interval, _T_MAINTENANCE, None)

    # ------------------------------------------------------------------ host interface: drains

    def actions_to_perform(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float:
        """Return when :meth:`tick` next has work (``inf`` if never)."""
        return self._timers[0][0] if self._timers else math.inf

    # ------------------------------------------------------------------ queries

    def num_members(self) -> int:
        """Return the number of alive and suspect members, this node included."""
        return self.counts[ALIVE] + self.counts[SUSPECT] + 1

    def member(self, node: NodeID) -> Member | None:
        """Return the record of ``node`` (None if unknown or this node)."""
        return self.members.get(node)

    def self_state(self) -> MemberState:
        """Return this node's own state as it would be exchanged."""
        return MemberState(self.id, self.addr, self.state, self.incarnation, self.meta,
                           self.meta_stamp, PROTOCOL_VERSION, self.app_version)

    def local_states(self) -> tuple[MemberState, ...]:
        """Return the full state (this node first, then every member) for push/pull."""
        if self._states_cache is None:
            self._states_cache = (self.self_state(),) + tuple(m.to_state() for m in self.members.values())
        return self._states_cache

    def alive_peers(self) -> list[Member]:
        """Return the alive and suspect members other than this node."""
        return [m for m in self.members.values() if m.state is ALIVE or m.state is SUSPECT]

    def random_peers(self, k: int, exclude: Iterable[NodeID] = (), states: tuple[NodeState, ...] = (ALIVE, SUSPECT)) -> list[Member]:
        """Return up to ``k`` distinct random members in ``states``, excluding ``exclude``."""
        return self._sample(k, lambda m: m.state in states, set(exclude))

    def health_score(self) -> int:
        """Return the Lifeguard local health score (0 is healthy)."""
        return self.awareness.score

    def probe_rtt(self) -> ProbeRtt:
        """Return the round-trip times of directly acked probes: histogram and last per member."""
        last = {m.node: m.rtt for m in self.members.values() if m.rtt is not None}
        return self.rtt.snapshot(last)

    # ------------------------------------------------------------------ commands

    def join(self, now: float, addrs: Iterable[str]) -> list[int]:
        """Send a join request to each address; results come back as :class:`JoinResult`.

        The addresses are remembered: when this node finds itself alone it re-joins through them.
        Returns the sequence numbers of the requests.
        """
        self._now = now
        seqs = []
        for addr in addrs:
            if addr not in self.join_peers:
                self.join_peers.append(addr)
            if addr == self.addr:
                continue
            seq = self._next_seq()
            self._joins[seq] = addr
            self._send(addr, Join(seq, self.addr, (self.self_state(),), PROTOCOL_VERSION, self.app_version), True)
            self._schedule(now + self.config.join_timeout, _T_JOIN_TIMEOUT, seq)
            seqs.append(seq)
        return seqs

    def leave(self, now: float) -> None:
        """Announce a graceful leave: every alive member is told directly, and it is gossiped."""
        self._now = now
        if self.state is LEAVING:
            return
        self.state = LEAVING
        self._states_cache = None
        left = Dead(self.id, self.incarnation, self.id)
        self._queue(left)
        for m in self.alive_peers():
            self._send(m.addr, Gossip((left,)))

    def set_local_metadata(self, now: float, meta: Mapping[str, Any], stamp: int) -> None:
        """Replace this node's metadata and announce it (raises the incarnation)."""
        self._now = now
        self.meta = dict(meta)
        self.meta_stamp = stamp
        self.incarnation += 1
        self._states_cache = None
        self._queue(self._self_alive())

    def bootstrap(self, now: float, states: Iterable[MemberState]) -> None:
        """Fill the table with members known to be alive, without events or gossip.

        For hosts that start from a known, converged membership (the simulator's scenarios).
        """
        for s in states:
            if s.node != self.id and s.node not in self.members and s.state is ALIVE:
                m = Member(s.node, s.addr, ALIVE, s.incarnation, s.meta, s.meta_stamp, s.pv, s.av, now)
                self.members[s.node] = m
                self.counts[ALIVE] += 1
                self._id_index[s.node] = len(self._ids)
                self._ids.append(s.node)
                self._probe_list.append(s.node)
        self.rng.shuffle(self._probe_list)
        self._states_cache = None

    def set_address(self, addr: str) -> None:
        """Change the address this node advertises (before it joins)."""
        self.addr = addr
        self._states_cache = None

    # ------------------------------------------------------------------ input: messages

    def receive(self, now: float, src: str, msg: Message, sender: NodeID | None = None,
                reliable: bool = False) -> None:
        """Handle a decoded protocol message that arrived from transport address ``src``.

        ``sender`` is the packet's sender id when known; ``reliable`` says it came over TCP (a
        reply then goes back over TCP too).
        """
        self._now = now
        t = type(msg)
        self.insight.source = sender   # insight: how accusations reach us
        if t is Ping:
            self._on_ping(now, src, msg, sender, reliable)  # type: ignore[arg-type]
        elif t is Ack:
            self._on_ack(now, msg, sender)  # type: ignore[arg-type]
        elif t is Gossip:
            self._merge_updates(now, msg.updates, sender)  # type: ignore[union-attr]
        elif t is PingReq:
            self._on_ping_req(now, src, msg)  # type: ignore[arg-type]
        elif t is Nack:
            probe = self._probes.get(msg.seq)  # type: ignore[union-attr]
            if probe is not None:
                probe.nacks += 1
                self._count("nacks")
        elif t is PushPull:
            self._on_push_pull(now, msg, reliable)  # type: ignore[arg-type]
        elif t is PushPullReply:
            self._merge_states(now, msg.states)  # type: ignore[union-attr]
        elif t is Join:
            self._on_join(now, msg, reliable)  # type: ignore[arg-type]
        elif t is JoinReply:
            self._on_join_reply(now, msg)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ input: time

    def tick(self, now: float) -> None:
        """Run every timer due at or before ``now``."""
        self._now = now
        self.insight.source = None
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(timers)
            if kind == _T_PROBE:
                self._probe_round(now)
            elif kind == _T_PROBE_TIMEOUT:
                self._probe_timeout(now, key)
            elif kind == _T_PROBE_END:
                self._probe_end(now, key)
            elif kind == _T_RELAY_TIMEOUT:
                relay = self._relays.pop(key, None)
                if relay is not None and not relay.done and relay.nack:
                    self._send(relay.requester_addr, Nack(relay.orig_seq))
            elif kind == _T_SUSPICION:
                self._suspicion_timer(now, key)
            elif kind == _T_GOSSIP:
                self._gossip_round(now)
            elif kind == _T_INSIGHT:
                self.insight.tick(now)
            elif kind == _T_PUSH_PULL:
                self._push_pull_round(now)
            elif kind == _T_MAINTENANCE:
                self._maintenance(now)
            elif kind == _T_JOIN_TIMEOUT:
                addr = self._joins.pop(key, None)
                if addr is not None:
                    self._actions.append(JoinResult(addr, False, "no answer within join_timeout"))
            elif kind == _T_SYNC:
                self._send(key, PushPull(self._next_seq(), self.addr, self.local_states()), True)

    # ------------------------------------------------------------------ internals: plumbing

    def _schedule(self, when: float, kind: int, key: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _send(self, addr: str, msg: Message, reliable: bool = False) -> None:
        self._actions.append(Send(addr, msg, reliable))

    def _reply(self, addr: str, msg: Message, reliable: bool) -> None:
        """Answer the message being received: on its connection if it came over one."""
        self._actions.append(Send(addr, msg, reliable, reliable))

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _sample(self, k: int, accept: Callable[[Member], bool], exclude: set[NodeID]) -> list[Member]:
        ids = self._ids
        n = len(ids)
        if k <= 0 or n == 0:
            return []
        out: list[Member] = []
        seen: set[NodeID] = set()
        if n <= 4 * k + 8:
            order = list(ids)
            self.rng.shuffle(order)
            for node in order:
                m = self.members[node]
                if node not in exclude and accept(m):
                    out.append(m)
                    if len(out) == k:
                        break
            return out
        # Large table: rejection sampling, then a full scan if too few were accepted.
        for _ in range(6 * k):
            node = ids[self.rng.randrange(n)]
            if node in seen:
                continue
            seen.add(node)
            m = self.members[node]
            if node not in exclude and accept(m):
                out.append(m)
                if len(out) == k:
                    return out
        rest = [self.members[i] for i in ids if i not in seen and i not in exclude and accept(self.members[i])]
        self.rng.shuffle(rest)
        out.extend(rest[: k - len(out)])
        return out

    def _budget(self) -> int:
        return self.config.udp_max_packet_size - _PACKET_OVERHEAD

    def _retransmit_limit(self) -> int:
        n = self.num_members()
        return retransmit_limit(self.config.retransmit_mult, n)

    def _piggyback(self, extra: Iterable[Update] = (), to: NodeID | None = None) -> tuple[Update, ...]:
        updates = self.broadcasts.get(self._budget(), self._retransmit_limit(), skip=_about(to))
        extra = tuple(extra)
        return extra + tuple(updates) if extra else tuple(updates)

    def _queue(self, update: Update) -> None:
        self.broadcasts.queue(update.node, update, update_size(update))
        if not self._gossip_armed:
            self._gossip_armed = True
            self._schedule(self._now + self.config.dissemination_interval, _T_GOSSIP, None)

    def _self_alive(self) -> Alive:
        return Alive(self.id, self.incarnation, self.addr, self.meta, self.meta_stamp,
                     PROTOCOL_VERSION, self.app_version)

    def _event(self, kind: str, m: Member, prev: NodeState, now: float, conflict_addr: str = "") -> None:
        self._actions.append(MemberEvent(kind, m.node, m.addr, m.state, prev, m.incarnation, m.meta,
                                         m.meta_stamp, m.pv, m.av, now, conflict_addr))

    def _set_state(self, now: float, m: Member, state: NodeState) -> None:
        prev = m.state
        if prev is state:
            return
        self.counts[prev] -= 1
        self.counts[state] += 1
        m.state = state
        m.state_change = now
        self._states_cache = None
        self.insight.state_changed(now, m, prev)   # insight: the state event, flaps, partitions

    def _add_member(self, now: float, a: Alive) -> Member:
        m = Member(a.node, a.addr, ALIVE, a.incarnation, a.meta, a.meta_stamp, a.pv, a.av, now)
        self.members[a.node] = m
        self.counts[ALIVE] += 1
        self._id_index[a.node] = len(self._ids)
        self._ids.append(a.node)
        # A newcomer goes in at a random place of the probe order (SWIM section 4.3).
        self._probe_list.insert(self.rng.randint(0, len(self._probe_list)), a.node)
        self._states_cache = None
        self._event(EVENT_STATE, m, NodeState.UNKNOWN, now)
        return m

    def _remove_member(self, now: float, m: Member) -> None:
        del self.members[m.node]
        self.counts[m.state] -= 1
        idx = self._id_index.pop(m.node)
        last = self._ids.pop()
        if last != m.node:
            self._ids[idx] = last
            self._id_index[last] = idx
        self.broadcasts.invalidate(m.node)
        self._states_cache = None
        self._event(EVENT_REMOVED, m, m.state, now)
        self.insight.forget(now, m)

    def _refute(self, now: float, accused_incarnation: int) -> None:
        """Raise our incarnation past the accusation and announce that we are alive."""
        self.incarnation = max(self.incarnation, accused_incarnation) + 1
        self._states_cache = None
        self._queue(self._self_alive())
        self._count("refutations")
        if self.lifeguard:
            self.awareness.apply_delta(1)

    # ------------------------------------------------------------------ merge rules

    def _merge_updates(self, now: float, updates: Iterable[Update], peer: NodeID | None = None) -> None:
        stale: list[Update] = []
        for u in updates:
            t = type(u)
            if t is Alive:
                self._on_alive(now, u)  # type: ignore[arg-type]
                continue
            if t is Suspect:
                self._on_suspect(now, u)  # type: ignore[arg-type]
            else:
                self._on_dead(now, u)  # type: ignore[arg-type]
            m = self.members.get(u.node)
            if peer is not None and m is not None and m.state is ALIVE and u.incarnation < m.incarnation:
                stale.append(Alive(m.node, m.incarnation, m.addr, m.meta, m.meta_stamp, m.pv, m.av))
        if stale:
            self._correct(peer, stale)  # type: ignore[arg-type]

    def _correct(self, peer: NodeID, fresher: list[Update]) -> None:
        """Tell ``peer``, which just gossiped stale accusations, what we know is newer.

        Bounded epidemics miss a node now and then; a node that missed a refutation would let
        its old suspicion run out and declare a live member dead. Each (peer, member,
        incarnation) is corrected once.
        """
        m = self.members.get(peer)
        if m is None or m.state is not ALIVE:
            return
        todo = []
        for u in fresher:
            key = (peer, u.node)
            if self._corrected.get(key) != u.incarnation:
                self._corrected[key] = u.incarnation
                todo.append(u)
        if todo:
            if len(self._corrected) > 4096:
                self._corrected.clear()
            self._count("corrections")
            self._send(m.addr, Gossip(tuple(todo)))

    def _on_alive(self, now: float, a: Alive) -> None:
        if a.node == self.id:
            # Someone speaks of us with an incarnation we did not reach, or another address/
            # metadata at ours: refute so our own record wins.
            if self.state is not LEAVING and (a.incarnation > self.incarnation or (
                    a.incarnation == self.incarnation and (a.addr != self.addr or a.meta_stamp != self.meta_stamp))):
                self._refute(now, a.incarnation)
            return
        m = self.members.get(a.node)
        if m is None:
            if a.pv != PROTOCOL_VERSION:
                self._count("refused_protocol_version")
                return
            self._add_member(now, a)
            self._queue(a)
            return
        if a.addr != m.addr:
            reclaimable = (m.state is DEAD or m.state is LEAVING) and \
                now - m.state_change >= self.config.dead_node_reclaim_time
            if not reclaimable:
                if a.incarnation >= m.incarnation:
                    self._count("conflicts")
                    self._event(EVENT_CONFLICT, m, m.state, now, conflict_addr=a.addr)
                return
            if a.incarnation <= m.incarnation:
                # A new process reclaiming the id: it starts over, so let its record replace ours.
                a = Alive(a.node, m.incarnation + 1 if a.incarnation <= m.incarnation else a.incarnation,
                          a.addr, a.meta, a.meta_stamp, a.pv, a.av)
        meta_changed = False
        if a.meta_stamp > m.meta_stamp:
            m.meta = a.meta
            m.meta_stamp = a.meta_stamp
            meta_changed = True
            self._states_cache = None
        if a.incarnation > m.incarnation or (m.state is not ALIVE and a.incarnation > m.incarnation):
            m.incarnation = a.incarnation
            m.addr = a.addr
            m.pv = a.pv
            m.av = a.av
            m.suspicion = None
            self._states_cache = None
            self.insight.alive_again(now, m, a.incarnation)   # insight: refuted, or back from dead
            if m.state is SUSPECT:
                self._count("suspicions_refuted")
            if m.state is not ALIVE:
                self._set_state(now, m, ALIVE)
            self._queue(a)
        elif meta_changed:
            self._queue(a)
        if meta_changed:
            self._event(EVENT_METADATA, m, m.state, now)

    def _accused(self, now: float, incarnation: int) -> None:
        """Someone suspects us or holds us dead: refute unless it is stale or we are leaving."""
        if self.state is not LEAVING and incarnation >= self.incarnation:
            self._refute(now, incarnation)

    def _on_suspect(self, now: float, s: Suspect) -> None:
        if s.node == self.id:
            self._accused(now, s.incarnation)
            return
        m = self.members.get(s.node)
        if m is None or s.incarnation < m.incarnation:
            return
        if m.state is SUSPECT:
            if s.incarnation > m.incarnation:
                # The member refuted (raised its incarnation) after we suspected it and we missed
                # its alive message (a newer update about it replaced that one in the gossip
                # queues). Our suspicion is void; this one is new. memberlist only confirms the
                # old suspicion here and can declare a member dead that has long refuted it.
                m.incarnation = s.incarnation
                self._start_suspicion(now, m, s.sender)
                self.insight.suspected(now, m, s)   # insight: the old one ends refuted
                self._states_cache = None
                self._queue(s)
                return
            susp = m.suspicion
            if susp is not None and susp.confirm(s.sender):
                self._schedule(susp.deadline(), _T_SUSPICION, m.node)
                self._queue(s)
                self.insight.confirmed(now, m, s)
            return
        if m.state is not ALIVE:
            return
        m.incarnation = s.incarnation
        self._start_suspicion(now, m, s.sender)
        self.insight.suspected(now, m, s)
        self._count("suspicions_started")
        self._set_state(now, m, SUSPECT)
        self._queue(s)

    def _start_suspicion(self, now: float, m: Member, accuser: NodeID) -> None:
        cfg = self.config
        n = self.num_members()
        low, high = suspicion_timeouts(n, cfg.health_check_interval, cfg.suspicion_mult,
                                       cfg.suspicion_max_timeout_mult)
        cap = cfg.suspect_retention_period
        low, high = min(low, cap), min(high, cap)
        k = cfg.suspicion_mult - 2
        if not self.lifeguard or n - 2 < k:
            k = 0
        m.suspicion = Suspicion(m.incarnation, now, k, low, high, accuser)
        self._schedule(m.suspicion.deadline(), _T_SUSPICION, m.node)

    def _suspicion_timer(self, now: float, node: NodeID) -> None:
        m = self.members.get(node)
        if m is None or m.state is not SUSPECT or m.suspicion is None:
            return
        deadline = m.suspicion.deadline()
        if deadline > now + 1e-9:
            return  # an earlier timer of a suspicion since shortened or replaced
        if m.suspicion.k > 0 and len(m.suspicion.confirmers) < m.suspicion.k:
            self._count("degraded_timeout")
        m.suspicion = None
        d = Dead(m.node, m.incarnation, self.id)
        self._count("suspicions_confirmed")
        self.insight.dead(now, m, None)   # insight: by our timer
        self._set_state(now, m, DEAD)
        self._queue(d)

    def _on_dead(self, now: float, d: Dead) -> None:
        if d.node == self.id:
            self._accused(now, d.incarnation)
            return
        m = self.members.get(d.node)
        if m is None or d.incarnation < m.incarnation:
            return
        if m.state is DEAD or m.state is LEAVING:
            if d.left and m.state is DEAD and d.incarnation >= m.incarnation:
                # The node itself said it left: more precise than our dead verdict.
                m.incarnation = d.incarnation
                self._set_state(now, m, LEAVING)
            return
        m.incarnation = d.incarnation
        m.suspicion = None
        self.insight.dead(now, m, d)
        self._set_state(now, m, LEAVING if d.left else DEAD)
        self._queue(d)

    # ------------------------------------------------------------------ probing (SWIM 4.1)

    def _probe_interval(self) -> float:
        return self.awareness.scale(self.config.health_check_interval)

    def _next_probe_target(self) -> Member | None:
        plist = self._probe_list
        for _ in range(len(plist) + 1):
            if self._probe_index >= len(plist):
                # Wrap: drop forgotten members and reshuffle (SWIM's round-robin bound).
                plist[:] = [n for n in plist if n in self.members]
                self.rng.shuffle(plist)
                self._probe_index = 0
                if not plist:
                    return None
            node = plist[self._probe_index]
            self._probe_index += 1
            m = self.members.get(node)
            if m is not None and (m.state is ALIVE or m.state is SUSPECT):
                return m
        return None

    def _probe_round(self, now: float) -> None:
        interval = self._probe_interval()
        self._schedule(now + interval, _T_PROBE, None)
        if self.state is LEAVING:
            return
        m = self._next_probe_target()
        if m is None:
            return
        seq = self._next_seq()
        probe = _Probe(m.node, now)
        self._probes[seq] = probe
        buddy = m.incarnation if (self.lifeguard and m.state is SUSPECT) else -1
        extra: tuple[Update, ...] = ()
        if buddy >= 0:
            extra = (Suspect(m.node, m.incarnation, self.id),)
        self._send(m.addr, Ping(seq, m.node, self.addr, self._piggyback(extra, m.node), buddy))
        timeout = self.awareness.scale(self.config.ping_timeout)
        self._schedule(now + timeout, _T_PROBE_TIMEOUT, seq)
        self._schedule(now + interval, _T_PROBE_END, seq)
        self._count("probes")

    def _probe_timeout(self, now: float, seq: int) -> None:
        probe = self._probes.get(seq)
        if probe is None or probe.acked:
            return
        probe.indirect = True
        m = self.members.get(probe.target)
        if m is None:
            return
        cfg = self.config
        k = cfg.indirect_checks if cfg.enable_indirect_pings else 0
        helpers = self._sample(k, lambda h: h.state is ALIVE, {m.node})
        for h in helpers:
            self._send(h.addr, PingReq(seq, m.node, m.addr, self.addr, self.lifeguard))
        if self.lifeguard:
            probe.expected_nacks = len(helpers)
        if cfg.tcp_pings:
            # SWIM over UDP cannot tell a UDP-blocked node from a dead one; TCP can.
            self._send(m.addr, Ping(seq, m.node, self.addr, (), -1), True)
        self._count("indirect_probes")

    def _probe_end(self, now: float, seq: int) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None or probe.acked:
            return
        if self.lifeguard:
            if probe.expected_nacks > 0:
                missed = probe.expected_nacks - probe.nacks
                if missed > 0:
                    self.awareness.apply_delta(missed)
            else:
                self.awareness.apply_delta(1)
        self._count("failed_probes")
        m = self.members.get(probe.target)
        if m is None or (m.state is not ALIVE and m.state is not SUSPECT):
            return
        # Suspect it, or, if it is suspect already, confirm the suspicion independently.
        self._on_suspect(now, Suspect(m.node, m.incarnation, self.id))

    def _on_ping(self, now: float, src: str, p: Ping, sender: NodeID | None, reliable: bool) -> None:
        if p.target != self.id:
            self._count("misdirected_pings")
            return
        if p.suspect_inc >= 0 and self.state is not LEAVING and p.suspect_inc >= self.incarnation:
            self._refute(now, p.suspect_inc)  # Lifeguard's buddy system
        if p.updates:
            self._merge_updates(now, p.updates, sender)
        extra: tuple[Update, ...] = ()
        if sender is not None:
            m = self.members.get(sender)
            if m is not None and m.state is DEAD:
                # A node we hold dead is probing us: tell it, so it refutes (heals partitions).
                extra = (Dead(m.node, m.incarnation, self.id),)
        self._reply(p.source_addr, Ack(p.seq, self._piggyback(extra, sender)), reliable)

    def _on_ack(self, now: float, a: Ack, sender: NodeID | None = None) -> None:
        if a.updates:
            self._merge_updates(now, a.updates, sender)
        probe = self._probes.get(a.seq)
        if probe is not None:
            if not probe.acked:
                probe.acked = True
                self._count("acks")
                if self.lifeguard and not probe.indirect:
                    self.awareness.apply_delta(-1)
                # A round trip is measured only from the target's own ack (a helper's relayed ack
                # carries the helper's id and two more hops).
                if sender == probe.target or (sender is None and not probe.indirect):
                    m = self.members.get(probe.target)
                    if m is not None:
                        m.rtt = now - probe.sent_at
                        self.rtt.record(m.rtt)
            return
        relay = self._relays.get(a.seq)
        if relay is not None and not relay.done:
            relay.done = True
            self._send(relay.requester_addr, Ack(relay.orig_seq))

    def _on_ping_req(self, now: float, src: str, r: PingReq) -> None:
        seq = self._next_seq()
        self._relays[seq] = _Relay(r.source_addr, r.seq, r.nack)
        self._send(r.target_addr, Ping(seq, r.target, self.addr))
        # Answer with a nack a little before the requester gives up (Lifeguard: 80 %).
        self._schedule(now + self.config.ping_timeout, _T_RELAY_TIMEOUT, seq)

    # ------------------------------------------------------------------ dissemination

    def _gossip_round(self, now: float) -> None:
        cfg = self.config
        if not self.broadcasts:
            self._gossip_armed = False   # re-armed by the next queued update
            return
        self._schedule(now + cfg.dissemination_interval, _T_GOSSIP, None)
        if not self._ids:
            return
        dead_window = cfg.gossip_to_the_dead_time

        def gossipable(m: Member) -> bool:
            if m.state is ALIVE or m.state is SUSPECT:
                return True
            return m.state is DEAD and now - m.state_change < dead_window

        budget, limit = self._budget(), self._retransmit_limit()
        for m in self._sample(cfg.dissemination_fan_out, gossipable, set()):
            updates = self.broadcasts.get(budget, limit, skip=_about(m.node))
            if not updates:
                break
            self._send(m.addr, Gossip(tuple(updates)))

    # ------------------------------------------------------------------ anti-entropy

    def _push_pull_interval(self) -> float:
        # memberlist's pushPullScale: the period grows with log2 of the size above 32 nodes.
        n = self.num_members()
        base = self.config.state_sync_interval
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def _push_pull_round(self, now: float) -> None:
        self._schedule(now + self._push_pull_interval(), _T_PUSH_PULL, None)
        if self.state is LEAVING:
            return
        peers = self._sample(1, lambda m: m.state is ALIVE, set())
        if peers:
            self._send(peers[0].addr, PushPull(self._next_seq(), self.addr, self.local_states()), True)
            self._count("push_pulls")

    def _on_push_pull(self, now: float, p: PushPull, reliable: bool) -> None:
        if not reliable:
            # A full-state exchange only travels on a connection, and is answered on it: a
            # datagram claiming to be one would make us send our whole table to any address.
            self._count("dropped_push_pull_datagram")
            return
        self._merge_states(now, p.states)
        self._reply(p.source_addr, PushPullReply(p.seq, self.local_states()), True)

    def _merge_states(self, now: float, states: Iterable[MemberState]) -> None:
        for s in states:
            if s.node == self.id:
                if self.state is LEAVING:
                    continue
                if s.state is not ALIVE and s.incarnation >= self.incarnation:
                    self._refute(now, s.incarnation)
                elif s.incarnation > self.incarnation:
                    self._refute(now, s.incarnation)
                continue
            if s.state is ALIVE:
                m = self.members.get(s.node)
                if m is not None and s.incarnation <= m.incarnation and s.meta_stamp <= m.meta_stamp \
                        and s.addr == m.addr:
                    continue  # nothing newer (the common case of a full-state exchange)
                self._on_alive(now, Alive(s.node, s.incarnation, s.addr, s.meta, s.meta_stamp, s.pv, s.av))
            elif s.state is LEAVING:
                if s.node not in self.members:
                    continue
                self._on_dead(now, Dead(s.node, s.incarnation, s.node))
            elif s.state is DEAD or s.state is SUSPECT:
                # A remote verdict is only a suspicion here (memberlist's rule): if the node is
                # alive it will hear of it and refute; stale deaths never spread as deaths.
                m = self.members.get(s.node)
                if m is not None and s.meta_stamp > m.meta_stamp:
                    m.meta, m.meta_stamp = s.meta, s.meta_stamp
                    self._states_cache = None
                    self._event(EVENT_METADATA, m, m.state, now)
                self._on_suspect(now, Suspect(s.node, s.incarnation, self.id))

    # ------------------------------------------------------------------ join

    def _on_join(self, now: float, j: Join, reliable: bool) -> None:
        if not reliable:
            self._count("dropped_join_datagram")  # joins come, and are answered, on a connection
            return
        reason = ""
        joiner = j.states[0] if j.states else None
        if joiner is None:
            reason = "join carries no node state"
        elif j.pv != PROTOCOL_VERSION:
            reason = f"incompatible protocol version: {j.pv} != {PROTOCOL_VERSION}"
        elif joiner.node == self.id:
            reason = "unable to join self (same node id)"
        elif self.app_version_check is not None and not self._app_version_ok(j.av):
            reason = f"incompatible application version: {j.av!r}"
        else:
            m = self.members.get(joiner.node)
            if m is not None and m.addr != joiner.addr and (m.state is ALIVE or m.state is SUSPECT):
                reason = f"node id {joiner.node} is in use by a live member at {m.addr}"
        if reason:
            self._count("joins_refused")
            self._reply(j.source_addr, JoinReply(j.seq, False, reason), True)
            return
        self._merge_states(now, j.states)
        self._reply(j.source_addr, JoinReply(j.seq, True, "", self.local_states()), True)

    def _app_version_ok(self, version: str) -> bool:
        try:
            assert self.app_version_check is not None
            return bool(self.app_version_check(version))
        except Exception:  # a user callback; a crash in it refuses the join
            return False

    def _on_join_reply(self, now: float, r: JoinReply) -> None:
        addr = self._joins.pop(r.seq, None)
        if addr is None:
            return
        if not r.accepted:
            self._actions.append(JoinResult(addr, False, r.reason))
            return
        self._merge_states(now, r.states)
        responder = r.states[0].node if r.states else None
        self._actions.append(JoinResult(addr, True, "", responder))
        # Announce ourselves too (memberlist does): the joined peer is not the only source.
        self._queue(self._self_alive())
        # One more exchange with the same peer a little later picks up the members that joined
        # through it at the same time as us (a burst of joins converges in seconds, not minutes).
        self._schedule(now + self.config.health_check_interval * self.rng.uniform(1.0, 2.0), _T_SYNC, addr)

    # ------------------------------------------------------------------ maintenance

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        self._schedule(now + cfg.recovery_attempt_interval, _T_MAINTENANCE, None)
        # Forget members that left long enough ago, and the dead past their retention.
        for m in [m for m in self.members.values() if m.state is DEAD or m.state is LEAVING]:
            age = now - m.state_change
            if (m.state is LEAVING and age >= cfg.gossip_to_the_dead_time) or age >= cfg.dead_node_retention_period:
                self._remove_member(now, m)
        if self.state is LEAVING:
            return
        # Isolated (no live peer left): re-join through the peers we joined through.
        if self.counts[ALIVE] + self.counts[SUSPECT] == 0 and self.join_peers:
            pending = set(self._joins.values())
            self.join(now, [a for a in self.join_peers if a not in pending])
            self._count("rejoins")
        # Recovery: exchange state with one dead member; if it answers, both learn of the other's
        # verdict, refute, and the two sides of a healed partition merge again.
        dead = self._sample(1, lambda m: m.state is DEAD, set())
        if dead:
            self._send(dead[0].addr, PushPull(self._next_seq(), self.addr, self.local_states()), True)
            self._count("recovery_attempts")
