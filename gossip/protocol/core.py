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
from ..hlc import COUNTER_BITS, MAX_TIMESTAMP
from ..messages import (
    EMPTY_META, MAX_INCARNATION, Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Message, Nack,
    Ping, PingReq, PushPull, PushPullReply, Suspect, Update, metadata_size, update_size,
)
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .actions import (
    EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, EVENT_STATE, JOIN_NO_ANSWER, Action, JoinResult,
    MemberEvent, Send,
)
from .awareness import Awareness
from .broadcasts import BroadcastQueue, retransmit_limit
from .insight import Insight
from .reconnect import Reconnector
from .rtt import ProbeRtt, RttHistogram
from .suspicion import Suspicion, suspicion_timeouts

__all__ = ["Protocol", "Member"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING

# Timer kinds
_T_PROBE, _T_PROBE_TIMEOUT, _T_PROBE_END, _T_RELAY_TIMEOUT = 1, 2, 3, 4
_T_SUSPICION, _T_GOSSIP, _T_PUSH_PULL, _T_MAINTENANCE, _T_JOIN_TIMEOUT, _T_SYNC = 5, 6, 7, 8, 9, 10
_T_PUSH_PULL_TIMEOUT, _T_LEAVE_RETRY = 11, 12
_T_RECONNECT = 13

# A helper sends its nack at this share of the time the requester still waits (Lifeguard: 80 %).
_NACK_SHARE = 0.8

_SMALL_CLUSTER = 4  # live peers up to which an update may be sent to every one of them

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


def _host(addr: str) -> str:
    """Return the host part of a transport address (``ip:port``, ``[v6]:port``, a ``ws://`` or
    ``wss://`` URL, or a bare name): what one source controls, whatever port it sends from."""
    if "://" in addr:
        addr = addr.partition("://")[2].partition("/")[0]
    host, sep, port = addr.rpartition(":")
    return host if sep and port.isdigit() else addr


def _index_add(ids: list[NodeID], index: dict[NodeID, int], node: NodeID) -> None:
    """Add ``node`` to a list kept with its positions (O(1), for random sampling)."""
    index[node] = len(ids)
    ids.append(node)


def _index_remove(ids: list[NodeID], index: dict[NodeID, int], node: NodeID) -> None:
    """Remove ``node`` by moving the last element into its slot (O(1))."""
    idx = index.pop(node)
    last = ids.pop()
    if last != node:
        ids[idx] = last
        index[last] = idx


class Member:
    """The local node's record of one other member (mutable; owned by :class:`Protocol`).

    ``introducer`` is the source host that told us of the member, until the member shows itself
    (a packet from it, sealed or from its own host, or an answer to our probe); None for
    members given by the host (:meth:`Protocol.bootstrap`). Relayed news is no proof: an
    epidemic spreads fakes as well as it spreads members. ``vouched`` says the news came from
    inside the cluster (a packet sealed with a cluster key, one from a member that has shown
    itself, sent from its own host, or the answer to our own join or push/pull), so its address
    may be dialed before the member shows itself; news from a stranger is not dialed.
    """

    __slots__ = ("node", "addr", "state", "incarnation", "meta", "meta_stamp", "pv", "av",
                 "state_change", "suspicion", "introducer", "vouched", "timer_at", "rtt")

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
        self.introducer: str | None = None
        self.vouched = False       # named from inside the cluster (see above)
        self.timer_at = math.inf   # when the pending suspicion timer of this member fires
        self.rtt: float | None = None  # seconds of the last direct probe round trip

    def to_state(self) -> MemberState:
        """Return the record as exchanged by push/pull."""
        return MemberState(self.node, self.addr, self.state, self.incarnation, self.meta,
                           self.meta_stamp, self.pv, self.av)

    def __repr__(self) -> str:
        return f"Member({self.node.short}@{self.addr} {self.state.name} inc={self.incarnation})"


class _Probe:
    __slots__ = ("target", "end", "acked", "indirect", "expected_nacks", "nacks", "sent_at")

    def __init__(self, target: NodeID, end: float, sent_at: float) -> None:
        self.target = target
        self.end = end
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

    The core never calls user code. The one user decision the protocol needs, whether a
    joiner's application version is acceptable (``Config.application_version_check``), is taken
    by the host *before* it takes its lock, and passed in with the message::

        ok = None
        if type(msg) is Join and check is not None:
            try:
                ok = bool(check(msg.av))
            except Exception:
                ok = False                     # a crashing check refuses the join
        with lock:
            core.receive(now, src, msg, sender, reliable, app_version_ok=ok)

    ``app_version_ok=None`` means "no check": the join is accepted on protocol grounds alone.

    Incarnations (bounded by the wire's u32, :data:`~gossip.messages.MAX_INCARNATION`):

    * the core never produces one above the bound and ignores any received above it
      (``refused_incarnation_range``);
    * a claim about a member, ourselves included, may move what we know of it by at most
      ``Config.max_incarnation_jump``: an accusation at or past ``known + jump``, or an alive at
      more than ``known + jump`` about a member we hold alive or suspect, is refused
      (``refused_incarnation_jump``), and we do not refute an accusation that would take us
      further than that. Legitimate claims about a node never run ahead of the node itself, so
      only forged ones (or a previous process under the same id) are refused. Three exceptions:
      alive news about a member we hold dead or left is taken at any incarnation (it moved on
      while we were apart); a member's own alive, coming from that member (see
      :meth:`receive`), is taken at any distance (it is the one that raises it: a victim of
      forged accusations must not be refused its own refutations); and our own state in the
      answer to our own join may carry us any distance (a restarted process catching up with
      its previous run);
    * our own incarnation rises by time, not by claim: one received message raises it once at
      most, past the highest accusation it carries, and what others say of us may raise it by
      ``Config.incarnation_budget`` per ``incarnation_budget_window`` at most (a token bucket
      that refills evenly; the answer to our own join excepted). An accusation beyond what is
      left is refused (``refused_incarnation_budget``): we rise as far as the budget allows.
      Local metadata changes are ours and are not counted;
    * at the very top a node stays at ``MAX_INCARNATION``: metadata changes still spread (they
      are ordered by their HLC stamp, not by the incarnation), but an accusation at the top
      cannot be outbid (``incarnation_exhausted``). With the default budget, forged
      accusations take years of sustained flooding to get there; the way out is a restart
      under a new node id (the default for a new process).

    Members (every bound a ``Config`` field, every refusal counted in :attr:`stats` as
    ``refused_<why>``): the table holds ``max_members``; an unsolicited message brings at most
    ``max_members_per_message`` newcomers, a join its joiner only; a source host may have named
    at most ``max_members_per_source`` members that have not shown themselves (sent us a packet,
    sealed or from their own host; answered our probe; or answered at their address a join or
    push/pull we sent there), and all sources together ``max_unconfirmed_share`` of the table.
    Until they show themselves, news about them is gossiped after everything else, they are
    gossip targets, ping-req helpers and push/pull peers only when too few others exist, they
    are never dialed (see :meth:`_dialable`: no WebSocket URL, no TCP fallback ping, no state
    exchange; a datagram probe is how they show themselves), a joiner or a member showing
    itself takes the place of the oldest of them in a full table, and once dead they are
    forgotten after ``gossip_to_the_dead_time``. Replies are merged only when they answer our
    own join or push/pull. A ping-req is run only for a known member, at its known address, at
    most ``max_pending_relays`` at once. :meth:`sizes` reports every table.

    Answers go where the message came from: on its connection, or as a datagram to its source
    address, never to an address it merely names (``Ping.source_addr``, ``PingReq.source_addr``)
    unless that is the address of the sending member, which has shown itself. A leave of a
    member said by anyone but the member is checked with it at once (a ping carrying the
    leave): if it was forged, the member refutes within one round trip. A metadata stamp more
    than ``max_clock_drift`` ahead of ``stamp_clock`` is refused, and our own record seen with a
    newer stamp than ours makes us reassert our metadata above it.

    Args:
        config: a validated :class:`~gossip.Config` (only its protocol knobs are read).
        node_id: this node's id.
        addr: this node's advertised transport address (how others reach it).
        rng: the only source of randomness; seed it for reproducible runs.
        now: the current time on the host's monotonic clock (seconds).
        meta, meta_stamp: the initial local metadata and its HLC stamp.
        app_version: this node's application version string.
        incarnation: the starting incarnation (0 for a fresh process).
        stamp_clock: returns the current time as an HLC stamp (:mod:`gossip.hlc`), the clock
            metadata stamps are compared with: a peer's stamp more than
            ``Config.max_clock_drift`` ahead of it is refused. None (hosts whose stamps are not
            HLC stamps, such as the simulator's counters) skips that check.

    Raises:
        ValueError: ``incarnation`` is outside ``0..MAX_INCARNATION``.
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
        incarnation: int = 0,
        stamp_clock: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= incarnation <= MAX_INCARNATION:
            raise ValueError(f"incarnation must be in 0..{MAX_INCARNATION}, got {incarnation}")
        self.config = config
        self.id = node_id
        self.addr = addr
        self.rng = rng
        self.incarnation = incarnation
        self.meta: Mapping[str, Any] = dict(meta)
        self.meta_stamp = meta_stamp
        self.app_version = app_version
        self.state = ALIVE
        self._stamp_clock = stamp_clock
        self._drift = int(config.max_clock_drift * 1_000_000) << COUNTER_BITS
        self.lifeguard = config.lifeguard_enabled
        self.awareness = Awareness(config.awareness_max_multiplier if self.lifeguard else 1)
        self.broadcasts = BroadcastQueue(config.broadcast_queue_size)
        # News about members nobody has shown us exist yet (only their introducer named them)
        # waits behind everything else: a flood of fake members cannot hold up a refutation.
        self.broadcasts_low = BroadcastQueue(config.broadcast_queue_size)
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
        self._cids: list[NodeID] = []         # the members that showed themselves (introducer None)
        self._cid_index: dict[NodeID, int] = {}
        self._probe_list: list[NodeID] = []
        self._in_probe_list: set[NodeID] = set()
        self._probe_index = 0
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._joins: dict[int, str] = {}
        self._push_pulls: dict[int, str] = {}     # our push/pulls awaiting their reply
        self._leave_pending: dict[int, tuple[Member, int]] = {}   # leave pings: seq -> (member, sent)
        self._unconfirmed: dict[str, int] = {}    # source host -> members only it vouched for
        self._unproven: dict[NodeID, None] = {}   # those members, oldest first
        self._gone: dict[NodeID, None] = {}       # dead and left members, longest gone first
        # Context of the message being handled (see receive()).
        self._src_host = ""
        self._sender: NodeID | None = None
        self._authenticated = False
        self._vouching = False            # the message comes from inside the cluster
        self._joining = False             # the message is a join request
        self._unconfirmed_cap = max(1, int(config.max_members * config.max_unconfirmed_share))
        self._dial_all = config.force_reliable_transport
        self._solicited = False
        self._new_in_msg = 0
        self._in_receive = False
        self._refute_to = -1              # the highest accusation about us in the message
        self._refute_catch_up = False     # ...it is our own join's answer
        self._refuted_in_msg = False
        # The incarnation budget: a token bucket of incarnations our own may rise by in answer
        # to what others say of us (see the class docstring).
        self._inc_tokens = float(config.incarnation_budget)
        self._inc_tokens_at = now
        self._states_cache: tuple[MemberState, ...] | None = None
        self._corrected: dict[tuple[NodeID, NodeID], tuple[bool, int]] = {}
        self._self_alive_size = 0
        # First rounds start after a random stagger, so nodes started together do not beat in step.
        self._schedule(now + rng.uniform(0, config.health_check_interval), _T_PROBE, None)
        # Gossip rounds run only while there is something to gossip (an idle node sleeps), on
        # the ticks of a ticker that never stops: an update queued while idle goes out at the
        # next tick (half an interval later on average, as memberlist's GossipInterval ticker
        # does), not a whole interval later at every hop.
        self._now = now
        self._gossip_armed = True
        self._gossip_epoch = now + rng.uniform(0, config.dissemination_interval)
        self._schedule(self._gossip_epoch, _T_GOSSIP, None)
        if config.state_sync_interval > 0:
            self._schedule(now + rng.uniform(0.5, 1.0) * self._push_pull_interval(), _T_PUSH_PULL, None)
        self._schedule(now + rng.uniform(0.5, 1.0) * config.recovery_attempt_interval, _T_MAINTENANCE, None)
        # Forgotten members and seeds, retried slowly for long, so any heal re-merges (reconnect.py).
        # (No random stagger: a round with nothing to retry draws nothing from rng either.)
        self.reconnect = Reconnector(config.reconnect_timeout, config.max_reconnect_targets)
        if config.reconnect_interval > 0:
            self._schedule(now + config.reconnect_interval, _T_RECONNECT, None)

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
        """Return up to ``k`` distinct random members in ``states``, excluding ``exclude``.

        Members that showed themselves come first; the others only fill up what is missing, so
        a table full of fake members does not swallow the fan-out.
        """
        return self._sample_known(k, lambda m: m.state in states, set(exclude))

    def sizes(self) -> dict[str, int]:
        """Return the size of every table the core keeps, for gauges and for bound checks.

        ``members`` (at most ``max_members``), ``broadcasts`` and ``broadcasts_low`` (each at
        most ``broadcast_queue_size``), ``relays`` (at most ``max_pending_relays``), ``probes``,
        ``push_pulls``, ``joins``, ``leave_pending``, ``timers``, ``unconfirmed`` (members only
        their introducer named) and ``probe_list``.
        """
        return {
            "members": len(self.members), "broadcasts": len(self.broadcasts),
            "broadcasts_low": len(self.broadcasts_low), "relays": len(self._relays),
            "probes": len(self._probes), "push_pulls": len(self._push_pulls), "joins": len(self._joins),
            "leave_pending": len(self._leave_pending), "timers": len(self._timers),
            "unconfirmed": len(self._unproven), "probe_list": len(self._probe_list),
            "reconnect": len(self.reconnect),
        }

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
        """Announce a graceful leave: every alive member is told directly, and it is gossiped.

        Each member is told in a ping that it acknowledges; members that have not acknowledged
        are told again every ``min(ping_timeout, dissemination_interval)``, up to
        ``leave_attempts`` times in all. A member that missed every copy would otherwise hold us
        alive until it probed us, then suspect us alone for a full suspicion timeout.
        The host keeps ticking the core until :meth:`leave_pending` is False (or its leave
        timeout runs out) before it stops.
        """
        self._now = now
        if self.state is LEAVING:
            return
        self.state = LEAVING
        self._states_cache = None
        left = self._left_update()
        self._queue(left)
        for m in self.alive_peers():
            if not self._dialable(m):
                continue
            seq = self._next_seq()
            self._leave_pending[seq] = (m, 1)
            self._send(m.addr, Ping(seq, m.node, self.addr, (left,)))
        if self._leave_pending:
            self._schedule(now + self._leave_retry_interval(), _T_LEAVE_RETRY, None)

    def leave_pending(self) -> bool:
        """Return True while members have not yet acknowledged our leave (and may be retried)."""
        return bool(self._leave_pending)

    def _leave_retry_interval(self) -> float:
        return min(self.config.ping_timeout, self.config.dissemination_interval)

    def _left_update(self) -> Dead:
        return Dead(self.id, self.incarnation, self.id)

    def _leave_retry(self, now: float) -> None:
        left = self._left_update()
        for seq, (m, attempts) in list(self._leave_pending.items()):
            if attempts >= self.config.leave_attempts:
                del self._leave_pending[seq]
                self._count("leave_unacknowledged")
                continue
            self._leave_pending[seq] = (m, attempts + 1)
            self._send(m.addr, Ping(seq, m.node, self.addr, (left,)))
            self._count("leave_retransmits")
        if self._leave_pending:
            self._schedule(now + self._leave_retry_interval(), _T_LEAVE_RETRY, None)

    def set_local_metadata(self, now: float, meta: Mapping[str, Any], stamp: int) -> None:
        """Replace this node's metadata and announce it (raises the incarnation).

        At :data:`~gossip.messages.MAX_INCARNATION` the incarnation stays: peers order
        metadata by its stamp, so the change still spreads. A ``stamp`` below the one
        announced last is raised just above it (the node may have reasserted its metadata
        above a forged stamp: :meth:`_reassert_meta`).
        """
        self._now = now
        self.meta = dict(meta)
        # Never below a stamp we reasserted our metadata at (see _reassert_meta).
        self.meta_stamp = stamp if stamp >= self.meta_stamp else min(self.meta_stamp + 1, MAX_TIMESTAMP)
        if self.incarnation < MAX_INCARNATION:
            self.incarnation += 1
        else:
            self._count("incarnation_exhausted")
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
                _index_add(self._ids, self._id_index, s.node)
                _index_add(self._cids, self._cid_index, s.node)
                if s.node not in self._in_probe_list:
                    self._in_probe_list.add(s.node)
                    self._probe_list.append(s.node)
        self.rng.shuffle(self._probe_list)
        self._states_cache = None

    def set_address(self, addr: str) -> None:
        """Change the address this node advertises (before it joins)."""
        self.addr = addr
        self._states_cache = None

    # ------------------------------------------------------------------ input: messages

    def receive(self, now: float, src: str, msg: Message, sender: NodeID | None = None,
                reliable: bool = False, app_version_ok: bool | None = None,
                authenticated: bool = False) -> None:
        """Handle a decoded protocol message that arrived from transport address ``src``.

        ``sender`` is the packet's sender id when known; ``reliable`` says it came over a
        connection (a reply then goes back on it). ``app_version_ok`` is the host's verdict on
        a :class:`~gossip.messages.Join`'s application version (see the class docstring); None
        when no check is configured. ``authenticated`` says the packet was sealed with a
        cluster key, so ``sender`` is authentic: a member that speaks for itself in such a
        packet has shown itself, whatever host it sends from.

        Any well-formed message (one :func:`~gossip.messages.from_wire` returns) is safe here:
        nothing it carries makes this method raise, and every refusal is counted in
        :attr:`stats`. The message raises our incarnation once at most (see the class
        docstring).
        """
        self._now = now
        self._src_host = _host(src)
        self._sender = sender
        self._authenticated = authenticated
        self._solicited = False
        self._new_in_msg = 0
        self._in_receive = True
        self._refuted_in_msg = False
        try:
            self._dispatch(now, src, msg, sender, reliable, app_version_ok)
        finally:
            self._in_receive = False
            self._settle_refutation(now)

    def _dispatch(self, now: float, src: str, msg: Message, sender: NodeID | None, reliable: bool,
                  app_version_ok: bool | None) -> None:
        if sender is not None:
            m = self.members.get(sender)
            if m is not None and m.introducer is not None and (
                    self._authenticated or self._src_host == _host(m.addr)):
                self._confirm(m)     # it spoke to us (sealed, or from its own host)
            self._vouching = self._authenticated or (m is not None and m.introducer is None
                                                     and self._src_host == _host(m.addr))
        else:
            self._vouching = self._authenticated
        t = type(msg)
        self.insight.source = sender   # insight: how accusations reach us
        if t is Ping:
            self._on_ping(now, src, msg, sender, reliable)  # type: ignore[arg-type]
        elif t is Ack:
            self._on_ack(now, msg, sender)  # type: ignore[arg-type]
        elif t is Gossip:
            self._merge_updates(now, msg.updates, sender)  # type: ignore[union-attr]
        elif t is PingReq:
            self._on_ping_req(now, src, msg, sender, reliable)  # type: ignore[arg-type]
        elif t is Nack:
            probe = self._probes.get(msg.seq)  # type: ignore[union-attr]
            if probe is not None:
                probe.nacks += 1
                self._count("nacks")
        elif t is PushPull:
            self._on_push_pull(now, msg, reliable, sender)  # type: ignore[arg-type]
        elif t is PushPullReply:
            asked = self._push_pulls.pop(msg.seq, None)  # type: ignore[union-attr]
            if asked is None:
                self._count("refused_unsolicited_reply")
                return
            self._solicited = True
            self._vouching = True    # it answered where we sent our own request
            self._merge_states(now, msg.states, peer=sender)  # type: ignore[union-attr]
            self._answered_at(asked, msg.states)  # type: ignore[union-attr]
        elif t is Join:
            self._on_join(now, msg, reliable, app_version_ok)  # type: ignore[arg-type]
        elif t is JoinReply:
            self._on_join_reply(now, msg)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ input: time

    def tick(self, now: float) -> None:
        """Run every timer due at or before ``now``."""
        self._now = now
        self.insight.source = None
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(timers)
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
                self._suspicion_timer(now, key, when)
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
                    self._actions.append(JoinResult(addr, False, JOIN_NO_ANSWER))
            elif kind == _T_SYNC:
                self._send_push_pull(now, key)
            elif kind == _T_PUSH_PULL_TIMEOUT:
                self._push_pulls.pop(key, None)
            elif kind == _T_LEAVE_RETRY:
                self._leave_retry(now)
            elif kind == _T_RECONNECT:
                self._reconnect_round(now)

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

    def _send_push_pull(self, now: float, addr: str) -> None:
        """Send our full state to ``addr``; its reply is merged as solicited until it times out."""
        seq = self._next_seq()
        self._push_pulls[seq] = addr
        cfg = self.config
        self._schedule(now + cfg.tcp_dial_timeout + cfg.tcp_deadline, _T_PUSH_PULL_TIMEOUT, seq)
        self._send(addr, PushPull(seq, self.addr, self.local_states()), True)

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _sample_known(self, k: int, accept: Callable[[Member], bool], exclude: set[NodeID]) -> list[Member]:
        """Sample among members that showed themselves first, then among the others that may
        be sent to (see :meth:`_dialable`)."""
        out = self._sample(k, accept, exclude, self._cids)
        if len(out) < k and len(self._cids) < len(self._ids):
            taken = exclude | {m.node for m in out}
            out += self._sample(k - len(out), lambda m: m.introducer is not None and self._dialable(m)
                                and accept(m), taken)
        return out

    def _sample(self, k: int, accept: Callable[[Member], bool], exclude: set[NodeID],
                ids: list[NodeID] | None = None) -> list[Member]:
        if ids is None:
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
        # In a small cluster the log-scaled limit (2 with the local preset) is fewer sends than
        # there are live peers, and an epidemic that ends early leaves one of them alone with
        # its suspicion: up to the longest suspicion timeout. Up to _SMALL_CLUSTER live peers,
        # every update may go to each of them.
        return max(retransmit_limit(self.config.retransmit_mult, n),
                   min(self.counts[ALIVE], _SMALL_CLUSTER))

    def _take(self, budget: int, limit: int, to: NodeID | None) -> list[Update]:
        """Take queued updates for one packet: all that fit of the main queue, then low ones.

        A packet to a member we hold suspect or dead carries them too (it may be alive and
        must hear what is said of it), but does not count against their retransmit limit:
        with few members, a handful of transmissions spent on crashed ones would otherwise
        leave a live member without the news, so that it suspects alone (no confirmation,
        the longest timeout) or misses a death verdict (Lifeguard's k never reached).
        """
        skip = _about(to)
        m = self.members.get(to) if to is not None else None
        count = m is None or m.state is ALIVE
        updates: list[Update] = self.broadcasts.get(budget, limit, skip=skip, count=count)
        left = budget - self.broadcasts.last_used
        if self.broadcasts_low and left > 16:
            updates += self.broadcasts_low.get(left, limit, skip=skip, count=count)
        return updates

    def _piggyback(self, extra: Iterable[Update] = (), to: NodeID | None = None) -> tuple[Update, ...]:
        updates = self._take(self._budget(), self._retransmit_limit(), to)
        extra = tuple(extra)
        return extra + tuple(updates) if extra else tuple(updates)

    def _queue(self, update: Update) -> None:
        size = update_size(update)
        if size > self._budget():
            # It would never fit a datagram: queued, it would sit there for ever and keep the
            # gossip timer running. Full-state exchanges still carry the member.
            self._count("refused_broadcast_oversize")
            return
        m = self.members.get(update.node)
        if m is not None and m.introducer is not None:
            self.broadcasts.invalidate(update.node)
            self.broadcasts_low.queue(update.node, update, size)
        else:
            self.broadcasts_low.invalidate(update.node)
            self.broadcasts.queue(update.node, update, size)
        if not self._gossip_armed:
            self._gossip_armed = True
            self._schedule(self._next_gossip_tick(self._now), _T_GOSSIP, None)

    def _next_gossip_tick(self, now: float) -> float:
        """The first tick of this node's gossip ticker at or after ``now``."""
        interval = self.config.dissemination_interval
        ticks = max(0, math.ceil((now - self._gossip_epoch) / interval))
        return self._gossip_epoch + ticks * interval

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
        if state is DEAD or state is LEAVING:
            self._gone.pop(m.node, None)
            self._gone[m.node] = None
        elif prev is DEAD or prev is LEAVING:
            del self._gone[m.node]
        m.state = state
        m.state_change = now
        self._states_cache = None
        self.insight.state_changed(now, m, prev)   # insight: the state event, flaps, partitions

    def _introduces_itself(self, a: Alive) -> bool:
        """True if the message being handled comes from ``a``'s own node: sealed with a cluster
        key (its sender id is authentic), or from the host of its own address."""
        return self._sender == a.node and (self._authenticated or self._src_host == _host(a.addr))

    def _admit(self, now: float, itself: bool = False) -> bool:
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
        room = itself or self._solicited or self._joining
        if not self._solicited:
            if self._new_in_msg >= cfg.max_members_per_message:
                self._count("refused_members_per_message")
                return False
            if not itself and self._unconfirmed.get(self._src_host, 0) >= cfg.max_members_per_source:
                self._count("refused_members_per_source")
                return False
            if not itself and not self._joining and len(self._unproven) >= self._unconfirmed_cap:
                oldest = self.members[next(iter(self._unproven))]
                if oldest.state is not DEAD and oldest.state is not LEAVING:
                    self._count("refused_unconfirmed_full")
                    return False
                self._remove_member(now, oldest)   # a dead stranger holds no place
                self._count("members_evicted")
        if len(self.members) >= cfg.max_members:
            if self._gone:
                self._remove_member(now, self.members[next(iter(self._gone))])
                self._count("members_evicted")
            elif room and self._unproven:
                self._remove_member(now, self.members[next(iter(self._unproven))])
                self._count("members_evicted_unconfirmed")
            else:
                self._count("refused_members_table_full")
                return False
        self._new_in_msg += 1
        return True

    def _add_member(self, now: float, a: Alive, itself: bool = False) -> Member:
        self.reconnect.known(a.node)
        m = Member(a.node, a.addr, ALIVE, a.incarnation, a.meta, a.meta_stamp, a.pv, a.av, now)
        self.members[a.node] = m
        self.counts[ALIVE] += 1
        _index_add(self._ids, self._id_index, a.node)
        if itself:
            _index_add(self._cids, self._cid_index, a.node)
        else:
            # Even a reply to our own request only names the member: the peer may hold fakes.
            self._unconfirm(m)
        m.vouched = self._vouching
        # A newcomer goes in at a random place of the probe order (SWIM section 4.3): appended,
        # then swapped with a random slot, O(1) as in memberlist.
        if a.node not in self._in_probe_list:
            plist = self._probe_list
            if len(plist) > 2 * len(self.members) + 16:
                self._compact_probe_list()
            self._in_probe_list.add(a.node)
            plist.append(a.node)
            j = self.rng.randrange(len(plist))
            plist[-1], plist[j] = plist[j], plist[-1]
        self._states_cache = None
        self._event(EVENT_STATE, m, NodeState.UNKNOWN, now)
        self.insight.added(now, m)   # insight: a partition's forgotten member may be back
        return m

    def _compact_probe_list(self) -> None:
        """Drop forgotten members from the probe order, keeping the position of the round."""
        plist = self._probe_list
        done = sum(1 for n in plist[: self._probe_index] if n in self.members)
        plist[:] = [n for n in plist if n in self.members]
        self._in_probe_list = set(plist)
        self._probe_index = done

    def _unconfirm(self, m: Member) -> None:
        """``m`` was named by the source of the message being handled and has not shown itself
        (at this address): it counts against that source until it does."""
        if m.introducer is not None:
            return
        if m.node in self._cid_index:
            _index_remove(self._cids, self._cid_index, m.node)
        host = self._src_host
        m.introducer = host
        self._unconfirmed[host] = self._unconfirmed.get(host, 0) + 1
        self._unproven[m.node] = None

    def _confirm(self, m: Member) -> None:
        """``m`` showed itself to exist: it no longer counts against its introducer."""
        host = m.introducer
        if host is None:
            return
        m.introducer = None
        self._unproven.pop(m.node, None)
        _index_add(self._cids, self._cid_index, m.node)
        left = self._unconfirmed.get(host, 0) - 1
        if left > 0:
            self._unconfirmed[host] = left
        else:
            self._unconfirmed.pop(host, None)

    def _remove_member(self, now: float, m: Member) -> None:
        if m.state is DEAD and m.introducer is None:
            self.reconnect.forgotten(m.node, m.addr, now)   # it existed: retry it after a heal
        self._confirm(m)
        self._gone.pop(m.node, None)
        del self.members[m.node]
        self.counts[m.state] -= 1
        _index_remove(self._ids, self._id_index, m.node)
        if m.node in self._cid_index:
            _index_remove(self._cids, self._cid_index, m.node)
        self.broadcasts.invalidate(m.node)
        self.broadcasts_low.invalidate(m.node)
        self._states_cache = None
        self._event(EVENT_REMOVED, m, m.state, now)
        self.insight.forget(now, m)

    def _dialable(self, m: Member) -> bool:
        """May we send to ``m``'s address? Sending to a WebSocket URL (or to any address, when
        every packet goes over a connection) dials it, and an address learned from an
        unauthenticated packet is dialed only once its member has shown itself, or if a member
        from inside the cluster named it (see :class:`Member`): a stranger's fake member must
        not make us open connections to whatever it names. Datagrams go anywhere: the answer to
        a probe is how a member shows itself."""
        return m.introducer is None or m.vouched or not (self._dial_all or "://" in m.addr)

    def _answered_at(self, addr: str, states: tuple[MemberState, ...]) -> None:
        """The answer to a request we sent to ``addr`` (a join or a push/pull) came back: its
        first state is the responder's own, and if it claims ``addr``, the responder has shown
        itself there (we dialed that address on our own account)."""
        if states and states[0].addr == addr:
            m = self.members.get(states[0].node)
            if m is not None and m.addr == addr:
                self._confirm(m)

    def _shown_at(self, sender: NodeID | None, addr: str) -> bool:
        """True if ``sender`` is a member that has shown itself, at ``addr``."""
        m = self.members.get(sender) if sender is not None else None
        return m is not None and m.introducer is None and m.addr == addr

    def _answer_addr(self, src: str, claimed: str, sender: NodeID | None) -> str:
        """Return where a datagram answer to the message being handled goes: its source
        ``src``, unless ``claimed`` (the address it says to answer at) is the address of the
        member that sent it, which has shown itself. Never an address a packet merely names:
        that would aim our answers at a third party, or make us dial it."""
        return claimed if claimed != src and self._shown_at(sender, claimed) else src

    def _refute(self, now: float, accused_incarnation: int, catch_up: bool = False) -> None:
        """Note an accusation of us (or a claim about us) at ``accused_incarnation``.

        Refused when it lies ``max_incarnation_jump`` or more ahead of our incarnation (unless
        ``catch_up``: our own join's answer), and impossible at the top of the range. The
        highest accusation a message carries is answered once, when the message has been
        handled (:meth:`_settle_refutation`).
        """
        if not catch_up and accused_incarnation - self.incarnation >= self.config.max_incarnation_jump:
            self._count("refused_incarnation_jump")
            return
        if accused_incarnation >= MAX_INCARNATION:
            self._count("incarnation_exhausted")
            return
        if accused_incarnation > self._refute_to:
            self._refute_to = accused_incarnation
        if catch_up:
            self._refute_catch_up = True
        if not self._in_receive:
            self._settle_refutation(now)

    def _incarnation_tokens(self, now: float) -> float:
        """Return the incarnation budget left at ``now`` (the bucket refills evenly)."""
        cfg = self.config
        cap = float(cfg.incarnation_budget)
        elapsed = now - self._inc_tokens_at
        if elapsed > 0:
            self._inc_tokens = min(cap, self._inc_tokens + elapsed * cap / cfg.incarnation_budget_window)
            self._inc_tokens_at = now
        return self._inc_tokens

    def _settle_refutation(self, now: float) -> None:
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
        if self._refuted_in_msg:
            self._count("refused_refutations_per_message")
            return
        target = accused + 1
        if not catch_up:
            tokens = self._incarnation_tokens(now)
            afford = self.incarnation + int(tokens)
            if target > afford:
                self._count("refused_incarnation_budget")
                if afford <= self.incarnation:
                    return
                target = afford
            self._inc_tokens = tokens - (target - self.incarnation)
        self._refuted_in_msg = self._in_receive
        self.incarnation = target
        self._states_cache = None
        self._queue(self._self_alive())
        self._count("refutations")
        if self.lifeguard:
            self.awareness.apply_delta(1)

    # ------------------------------------------------------------------ merge rules

    def _merge_updates(self, now: float, updates: Iterable[Update], peer: NodeID | None = None) -> None:
        stale: list[Update] = []
        for u in updates:
            if not 0 <= u.incarnation <= MAX_INCARNATION:
                self._count("refused_incarnation_range")   # a host that skipped the decoder
                continue
            t = type(u)
            if t is Alive:
                self._on_alive(now, u)  # type: ignore[arg-type]
                continue
            if t is Suspect:
                self._on_suspect(now, u)  # type: ignore[arg-type]
            else:
                self._on_dead(now, u)  # type: ignore[arg-type]
            m = self.members.get(u.node)
            if peer is None or m is None:
                continue
            if m.state is ALIVE and u.incarnation < m.incarnation:
                stale.append(Alive(m.node, m.incarnation, m.addr, m.meta, m.meta_stamp, m.pv, m.av))
            elif m.state is LEAVING and u.incarnation <= m.incarnation and not (t is Dead and u.left):  # type: ignore[union-attr]
                # The peer missed the leave and now suspects the leaver on its own: it would
                # wait out a whole suspicion timeout with no one to confirm it. Tell it.
                stale.append(Dead(m.node, m.incarnation, m.node))
        if stale:
            self._correct(peer, stale)  # type: ignore[arg-type]

    def _correct(self, peer: NodeID, fresher: list[Update]) -> None:
        """Tell ``peer``, which just gossiped stale accusations, what we know is newer.

        Bounded epidemics miss a node now and then; a node that missed a refutation would let
        its old suspicion run out and declare a live member dead. Each (peer, member,
        incarnation) is corrected once.
        """
        m = self.members.get(peer)
        if m is None or m.state is not ALIVE or not self._dialable(m):
            return
        todo = []
        room = self._budget()   # one datagram's worth: the rest waits for the next stale gossip
        for u in fresher:
            key = (peer, u.node)
            mark = (type(u) is Dead, u.incarnation)
            if self._corrected.get(key) != mark:
                size = update_size(u)
                if size > room:
                    break
                room -= size
                self._corrected[key] = mark
                todo.append(u)
        if todo:
            if len(self._corrected) > 4096:
                self._corrected.clear()
            self._count("corrections")
            self._send(m.addr, Gossip(tuple(todo)))

    def _jump_refused(self, claimed: int, known: int, accusation: bool) -> bool:
        """Return True (and count it) if a claim runs too far ahead of what we know."""
        jump = self.config.max_incarnation_jump
        if claimed - known >= jump if accusation else claimed - known > jump:
            self._count("refused_incarnation_jump")
            return True
        return False

    def _stamp_refused(self, stamp: int) -> bool:
        """Return True (and count it) if a metadata stamp lies more than ``max_clock_drift``
        ahead of our clock: one forged stamp near 2**64 would outrank every later write."""
        clock = self._stamp_clock
        if clock is None or stamp <= clock() + self._drift:
            return False
        self._count("refused_metadata_stamp")
        return True

    def _checked_meta(self, a: Alive, m: Member | None) -> Alive:
        """Return ``a``, or ``a`` with our current metadata for it if its own is too large or
        stamped too far ahead of our clock.

        Liveness is kept: a peer configured with a larger ``max_metadata_size`` is still a member.
        """
        if m is not None and a.meta_stamp <= m.meta_stamp:
            return a
        if a.meta_stamp and self._stamp_refused(a.meta_stamp):
            meta, stamp = (m.meta, m.meta_stamp) if m is not None else (EMPTY_META, 0)
            return Alive(a.node, a.incarnation, a.addr, meta, stamp, a.pv, a.av)
        if not a.meta:
            return a
        if metadata_size(a.meta) <= self.config.max_metadata_size:
            return a
        self._count("refused_metadata_size")
        meta, stamp = (m.meta, m.meta_stamp) if m is not None else (EMPTY_META, 0)
        return Alive(a.node, a.incarnation, a.addr, meta, stamp, a.pv, a.av)

    def _on_alive(self, now: float, a: Alive) -> None:
        if a.node == self.id:
            # Someone speaks of us with an incarnation we did not reach, or another address/
            # metadata at ours: refute so our own record wins.
            if self.state is LEAVING:
                return
            if a.meta_stamp > self.meta_stamp:
                self._reassert_meta(now, a.meta_stamp, a.incarnation)
            elif a.incarnation > self.incarnation or (
                    a.incarnation == self.incarnation and (a.addr != self.addr or a.meta_stamp != self.meta_stamp)):
                self._refute(now, a.incarnation)
            return
        m = self.members.get(a.node)
        if m is None:
            if a.pv != PROTOCOL_VERSION:
                self._count("refused_protocol_version")
                return
            itself = self._introduces_itself(a)
            if not self._admit(now, itself):
                return
            a = self._checked_meta(a, None)
            self._add_member(now, a, itself)
            self._queue(a)
            return
        if (m.state is ALIVE or m.state is SUSPECT) and not self._introduces_itself(a) \
                and self._jump_refused(a.incarnation, m.incarnation, False):
            # (A member's own word on its incarnation is taken at any distance: it is the one
            # that raises it, and a victim of forged accusations must not flap.)
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
                if m.incarnation >= MAX_INCARNATION:
                    self._count("incarnation_exhausted")
                    return
                a = Alive(a.node, m.incarnation + 1, a.addr, a.meta, a.meta_stamp, a.pv, a.av)
        a = self._checked_meta(a, m)
        meta_changed = False
        if a.meta_stamp > m.meta_stamp:
            m.meta = a.meta
            m.meta_stamp = a.meta_stamp
            meta_changed = True
            self._states_cache = None
        if a.incarnation > m.incarnation:
            if a.addr != m.addr:
                # A new address must be shown too: until then it counts against whoever named
                # it, and is not dialed (see _dialable).
                m.addr = a.addr
                if self._introduces_itself(a):
                    self._confirm(m)
                else:
                    self._unconfirm(m)
                m.vouched = self._vouching
            elif self._vouching:
                m.vouched = True
            m.incarnation = a.incarnation
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

    def _reassert_meta(self, now: float, stamp: int, incarnation: int = -1, catch_up: bool = False) -> None:
        """Our own record went round with metadata stamped ``stamp``, newer than ours: someone
        wrote our metadata in our name. Restamp ours just above it and announce it (with the
        refutation of ``incarnation`` if that is higher), so every peer takes ours back. A
        stamp too far ahead of our clock is refused, not outbid."""
        if stamp >= MAX_TIMESTAMP:
            self._count("refused_metadata_stamp")
        elif not self._stamp_refused(stamp):
            self.meta_stamp = stamp + 1
            self._states_cache = None
            self._count("metadata_reasserted")
        self._refute(now, max(self.incarnation, incarnation), catch_up)

    def _accused(self, now: float, incarnation: int, catch_up: bool = False) -> None:
        """Someone suspects us or holds us dead: refute unless it is stale or we are leaving."""
        if self.state is not LEAVING and incarnation >= self.incarnation:
            self._refute(now, incarnation, catch_up)

    def _on_suspect(self, now: float, s: Suspect) -> None:
        if s.node == self.id:
            self._accused(now, s.incarnation)
            return
        m = self.members.get(s.node)
        if m is None or s.incarnation < m.incarnation:
            return
        if m.state is not ALIVE and m.state is not SUSPECT:
            return
        if self._jump_refused(s.incarnation, m.incarnation, True):
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
                self._arm_suspicion(m)
                self._queue(s)
                self.insight.confirmed(now, m, s)
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
        self._arm_suspicion(m)

    def _arm_suspicion(self, m: Member) -> None:
        """Make sure a timer fires at the suspicion's deadline: one pending timer per member,
        whatever the number of suspicions and confirmations a flood of accusations brings."""
        assert m.suspicion is not None
        deadline = m.suspicion.deadline()
        if deadline < m.timer_at:
            m.timer_at = deadline
            self._schedule(deadline, _T_SUSPICION, m.node)

    def _suspicion_timer(self, now: float, node: NodeID, when: float) -> None:
        m = self.members.get(node)
        if m is None or when != m.timer_at:
            return  # superseded by an earlier timer, or the member was forgotten
        m.timer_at = math.inf
        if m.state is not SUSPECT or m.suspicion is None:
            return
        deadline = m.suspicion.deadline()
        if deadline > now + 1e-9:
            self._arm_suspicion(m)   # the suspicion was replaced by a later one
            return
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
                if self._jump_refused(d.incarnation, m.incarnation, True):
                    return
                # The node itself said it left: more precise than our dead verdict.
                m.incarnation = d.incarnation
                self._set_state(now, m, LEAVING)
            return
        if self._jump_refused(d.incarnation, m.incarnation, True):
            return
        m.incarnation = d.incarnation
        m.suspicion = None
        self.insight.dead(now, m, d)
        self._set_state(now, m, LEAVING if d.left else DEAD)
        self._queue(d)
        if d.left and not (self._sender == m.node and (self._authenticated or self._src_host == _host(m.addr))):
            self._check_leave(m, d)

    def _check_leave(self, m: Member, d: Dead) -> None:
        """A leave of ``m`` that ``m`` did not tell us itself is an accusation: tell ``m`` at
        once, in a ping it answers. If it left, its ack says so again; if the leave was forged,
        it refutes, and its ack brings the refutation back within one round trip (no one
        gossips to a member that left, so it would otherwise refute only at its next state
        exchange, and stay out of every view until then)."""
        self._count("leaves_checked")
        if self._dialable(m):
            self._send(m.addr, Ping(self._next_seq(), m.node, self.addr, (d,)))

    # ------------------------------------------------------------------ probing (SWIM 4.1)

    def _probe_interval(self) -> float:
        return self.awareness.scale(self.config.health_check_interval)

    def _next_probe_target(self) -> Member | None:
        plist = self._probe_list
        for _ in range(len(plist) + 1):
            if self._probe_index >= len(plist):
                # Wrap: drop forgotten members and reshuffle (SWIM's round-robin bound).
                plist[:] = [n for n in plist if n in self.members]
                self._in_probe_list = set(plist)
                self.rng.shuffle(plist)
                self._probe_index = 0
                if not plist:
                    return None
            node = plist[self._probe_index]
            self._probe_index += 1
            m = self.members.get(node)
            if m is not None and (m.state is ALIVE or m.state is SUSPECT):
                if self._dialable(m):
                    return m
                self._count("skipped_unproven_dials")
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
        probe = _Probe(m.node, now + interval, now)
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
        helpers = self._sample_known(k, lambda h: h.state is ALIVE, {m.node})
        # Helpers learn how long we still wait, so their nacks arrive in time whatever our
        # health score stretched the probe to.
        window = max(0.0, probe.end - now)
        for h in helpers:
            self._send(h.addr, PingReq(seq, m.node, m.addr, self.addr, self.lifeguard, window))
        if self.lifeguard:
            probe.expected_nacks = len(helpers)
        if cfg.tcp_pings and (m.introducer is None or m.vouched):
            # SWIM over UDP cannot tell a UDP-blocked node from a dead one; TCP can. (A dial:
            # never to an address only a stranger named.)
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
        if 0 <= p.suspect_inc <= MAX_INCARNATION:
            self._accused(now, p.suspect_inc)  # Lifeguard's buddy system
        if p.updates:
            self._merge_updates(now, p.updates, sender)
        self._settle_refutation(now)   # our answer to an accusation rides on the ack
        extra: tuple[Update, ...] = ()
        if self.state is LEAVING:
            extra = (self._left_update(),)   # whoever still probes us missed our leave
        elif sender is not None:
            m = self.members.get(sender)
            if m is not None and m.state is DEAD:
                # A node we hold dead is probing us: tell it, so it refutes (heals partitions).
                extra = (Dead(m.node, m.incarnation, self.id),)
        ack = Ack(p.seq, self._piggyback(extra, sender))
        if reliable:
            self._reply(src, ack, True)     # on its connection
        else:
            self._send(self._answer_addr(src, p.source_addr, sender), ack)

    def _on_ack(self, now: float, a: Ack, sender: NodeID | None = None) -> None:
        if a.updates:
            self._merge_updates(now, a.updates, sender)
        probe = self._probes.get(a.seq)
        if probe is not None:
            if not probe.acked:
                probe.acked = True
                self._count("acks")
                target = self.members.get(probe.target)
                if target is not None and target.introducer is not None:
                    self._confirm(target)    # it answered our probe: it exists
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
            return
        self._leave_pending.pop(a.seq, None)

    def _on_ping_req(self, now: float, src: str, r: PingReq, sender: NodeID | None, reliable: bool) -> None:
        cfg = self.config
        if len(self._relays) >= cfg.max_pending_relays:
            self._count("refused_relays_full")
            return
        # The answers go to the requester later, as datagrams (see _answer_addr); a request
        # that came on a connection is run only for a member that has shown itself, at its
        # own address.
        if reliable:
            if not self._shown_at(sender, r.source_addr):
                self._count("refused_ping_req_requester")
                return
            requester = r.source_addr
        else:
            requester = self._answer_addr(src, r.source_addr, sender)
        m = self.members.get(r.target)
        if m is None or not (m.state is ALIVE or m.state is SUSPECT) or not self._dialable(m):
            # We only probe members we know, at the address we know: a ping-req is no way to
            # make us ping arbitrary addresses. A nack tells the requester we are fine.
            self._count("refused_ping_req_target")
            if r.nack:
                self._send(requester, Nack(r.seq))
            return
        # Nack a little before the requester gives up (Lifeguard: at 80 %). The requester says
        # how long it waits; a peer that does not is assumed to run our configuration.
        window = r.timeout if r.timeout > 0 else cfg.health_check_interval - cfg.ping_timeout
        window = min(window, cfg.health_check_interval * cfg.awareness_max_multiplier)
        seq = self._next_seq()
        self._relays[seq] = _Relay(requester, r.seq, r.nack)
        self._send(m.addr, Ping(seq, m.node, self.addr))
        self._schedule(now + _NACK_SHARE * window, _T_RELAY_TIMEOUT, seq)

    # ------------------------------------------------------------------ dissemination

    def _gossip_round(self, now: float) -> None:
        cfg = self.config
        sent = False
        if (self.broadcasts or self.broadcasts_low) and self._ids:
            dead_window = cfg.gossip_to_the_dead_time

            def gossipable(m: Member) -> bool:
                if m.state is ALIVE or m.state is SUSPECT:
                    return True
                return m.state is DEAD and now - m.state_change < dead_window

            budget, limit = self._budget(), self._retransmit_limit()
            for m in self._sample_known(cfg.dissemination_fan_out, gossipable, set()):
                updates = self._take(budget, limit, m.node)
                if updates:
                    self._send(m.addr, Gossip(tuple(updates)))
                    # Only sends to live members use up the queue (see _take): rounds that
                    # reach nobody alive must not keep the timer going on their own.
                    sent = sent or m.state is ALIVE
        if sent:
            self._schedule(now + cfg.dissemination_interval, _T_GOSSIP, None)
        else:
            # Nothing could go out (an empty queue, nobody to send to, or only news about the
            # peers themselves): sleep until the next queued update instead of spinning.
            self._gossip_armed = False

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
        peers = self._sample_known(1, lambda m: m.state is ALIVE and (m.introducer is None or m.vouched), set())
        if peers:
            self._send_push_pull(now, peers[0].addr)
            self._count("push_pulls")

    def _on_push_pull(self, now: float, p: PushPull, reliable: bool, peer: NodeID | None) -> None:
        if not reliable:
            # A full-state exchange only travels on a connection, and is answered on it: a
            # datagram claiming to be one would make us send our whole table to any address.
            self._count("dropped_push_pull_datagram")
            return
        self._merge_states(now, p.states, peer=peer)
        self._reply(p.source_addr, PushPullReply(p.seq, self.local_states()), True)

    def _merge_states(self, now: float, states: Iterable[MemberState], catch_up: bool = False,
                      peer: NodeID | None = None) -> None:
        """Merge a full state. ``peer`` is the member that sent it: its view of a member as
        suspect or dead is its own verdict, so it starts (or independently confirms) our
        suspicion in its name; without it, a node whose only news of a death came by a state
        exchange would wait the longest suspicion timeout alone."""
        self.insight.syncing = True
        try:
            self._merge_state_list(now, states, catch_up, peer)
        finally:
            self.insight.syncing = False

    def _merge_state_list(self, now: float, states: Iterable[MemberState], catch_up: bool,
                          peer: NodeID | None) -> None:
        per_message = self.config.max_members_per_message
        refused = 0
        for s in states:
            if not 0 <= s.incarnation <= MAX_INCARNATION:
                self._count("refused_incarnation_range")
                continue
            if s.node == self.id:
                if self.state is LEAVING:
                    continue
                if s.meta_stamp > self.meta_stamp:
                    self._reassert_meta(now, s.meta_stamp, s.incarnation, catch_up)
                elif s.state is not ALIVE and s.incarnation >= self.incarnation:
                    self._refute(now, s.incarnation, catch_up)
                elif s.incarnation > self.incarnation:
                    self._refute(now, s.incarnation, catch_up)
                continue
            if s.state is ALIVE:
                m = self.members.get(s.node)
                if m is not None and s.incarnation <= m.incarnation and s.meta_stamp <= m.meta_stamp \
                        and s.addr == m.addr:
                    continue  # nothing newer (the common case of a full-state exchange)
                if m is None and not self._solicited and self._new_in_msg >= per_message:
                    refused += 1   # the rest of a flood costs a lookup each, no more
                    continue
                self._on_alive(now, Alive(s.node, s.incarnation, s.addr, s.meta, s.meta_stamp, s.pv, s.av))
            elif s.state is LEAVING:
                if s.node not in self.members:
                    continue
                self._on_dead(now, Dead(s.node, s.incarnation, s.node))
            elif s.state is DEAD or s.state is SUSPECT:
                # A remote verdict is only a suspicion here (memberlist's rule): if the node is
                # alive it will hear of it and refute; stale deaths never spread as deaths.
                m = self.members.get(s.node)
                if m is not None and s.meta_stamp > m.meta_stamp and not self._stamp_refused(s.meta_stamp):
                    if s.meta and metadata_size(s.meta) > self.config.max_metadata_size:
                        self._count("refused_metadata_size")
                    else:
                        m.meta, m.meta_stamp = s.meta, s.meta_stamp
                        self._states_cache = None
                        self._event(EVENT_METADATA, m, m.state, now)
                accuser = peer if peer is not None and peer != s.node else self.id
                self._on_suspect(now, Suspect(s.node, s.incarnation, accuser))
        if refused:
            self.stats["refused_members_per_message"] = self.stats.get("refused_members_per_message", 0) + refused

    # ------------------------------------------------------------------ join

    def _on_join(self, now: float, j: Join, reliable: bool, app_version_ok: bool | None) -> None:
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
        elif app_version_ok is False:
            reason = f"incompatible application version: {j.av!r}"
        else:
            m = self.members.get(joiner.node)
            if m is not None and m.addr != joiner.addr and (m.state is ALIVE or m.state is SUSPECT):
                reason = f"node id {joiner.node} is in use by a live member at {m.addr}"
        if reason:
            self._count("joins_refused")
            self._reply(j.source_addr, JoinReply(j.seq, False, reason), True)
            return
        assert joiner is not None
        if len(j.states) > 1:
            # A joiner sends its own state only; anything more is not its to vouch for.
            self._count("refused_join_extra_states")
        self._joining = True   # a joiner is given room in a full table (see _admit)
        try:
            self._merge_states(now, (joiner,))
        finally:
            self._joining = False
        if joiner.node not in self.members:
            # Refused by the table's bounds (or its state was not alive): say so, rather than
            # answer "accepted" to a joiner nobody here will know.
            self._count("joins_refused")
            self._reply(j.source_addr, JoinReply(j.seq, False, "not admitted to the member table"), True)
            return
        self._reply(j.source_addr, JoinReply(j.seq, True, "", self.local_states()), True)

    def _on_join_reply(self, now: float, r: JoinReply) -> None:
        addr = self._joins.pop(r.seq, None)
        if addr is None:
            self._count("refused_unsolicited_reply")
            return
        if not r.accepted:
            self._actions.append(JoinResult(addr, False, r.reason))
            return
        # The answer to our own join: bounded by max_members only, and it may carry us to the
        # incarnation a previous process under our id reached.
        self._solicited = True
        self._vouching = True    # it answered where we sent our own request
        self._merge_states(now, r.states, catch_up=True, peer=r.states[0].node if r.states else None)
        self._answered_at(addr, r.states)
        responder = r.states[0].node if r.states else None
        self._actions.append(JoinResult(addr, True, "", responder))
        # Announce ourselves too (memberlist does): the joined peer is not the only source.
        self._queue(self._self_alive())
        # One more exchange with the same peer a little later picks up the members that joined
        # through it at the same time as us (a burst of joins converges in seconds, not minutes).
        self._schedule(now + self.config.health_check_interval * self.rng.uniform(1.0, 2.0), _T_SYNC, addr)

    # ------------------------------------------------------------------ maintenance

    def _reconnect_round(self, now: float) -> None:
        """Try one forgotten member or seed (see :mod:`.reconnect`): a push/pull, which merges
        both views if it answers."""
        self._schedule(now + self.config.reconnect_interval, _T_RECONNECT, None)
        if self.state is LEAVING:
            return
        in_use = {m.addr for m in self.members.values()}
        in_use.add(self.addr)
        target = self.reconnect.pick(now, self.rng, self.join_peers, in_use, self.num_members())
        if target is not None:
            self._send_push_pull(now, target)
            self._count("reconnect_attempts")

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        self._schedule(now + cfg.recovery_attempt_interval, _T_MAINTENANCE, None)
        # Forget members that left long enough ago, and the dead past their retention.
        # Members nobody but their introducer ever vouched for are forgotten as soon as left ones
        # are: a flood of fake members does not linger for the whole retention period.
        for m in [m for m in self.members.values() if m.state is DEAD or m.state is LEAVING]:
            age = now - m.state_change
            short = m.state is LEAVING or m.introducer is not None
            if (short and age >= cfg.gossip_to_the_dead_time) or age >= cfg.dead_node_retention_period:
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
        dead = self._sample(1, lambda m: m.state is DEAD, set(), self._cids)
        if dead:
            self._send_push_pull(now, dead[0].addr)
            self._count("recovery_attempts")
