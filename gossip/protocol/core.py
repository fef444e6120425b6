"""The protocol state machine: one node's view of the cluster, driven by its host.

Everything is driven by three verbs and one drain:

* ``receive(now, src, msg, sender=None, reliable=False)``: a decoded protocol message arrived;
* ``tick(now)``: run every timer due by ``now`` (call it at ``next_deadline()``);
* ``join(now, addrs)``, ``leave(now)``, ``set_local_metadata(now, meta, stamp)``: commands;
* ``actions_to_perform()``: the :class:`Send`, :class:`MemberEvent` and :class:`JoinResult`
  records produced since the last drain.

:class:`Protocol` is the face. The work is done by its parts, each in its own module, each
given the narrow collaborators it uses and the one :class:`~.outbox.Outbox` they all write to
(sends, events, timers, counters):

* :mod:`.membership`: the member table, admission, and this node's own record (incarnation,
  refutation, the incarnation budget);
* :mod:`.merge`: the merge rules (SWIM section 4.2) for updates and full states;
* :mod:`.suspicion`: Lifeguard's dynamic suspicion timeouts and the running suspicions;
* :mod:`.probe`: probing (SWIM section 4.1), ping-req relays, nacks, round trips;
* :mod:`.dissemination`: the update queues, gossip rounds and piggybacking;
* :mod:`.sync`: joins, leaves, push/pull, maintenance and reconnection;
* :mod:`.insight`: provenance, flap scores and damping, partitions.

The face sets the context of each received message, hands it to the part that handles it,
and runs each due timer by its kind. The order of every step (and so of every draw from
``rng`` and every timer) is the protocol's: a seeded run replays exactly.

Lifeguard (Dadgar et al. 2018) adds local health awareness (probe interval and timeout scaled by
``score + 1``), nacks from ping-req helpers, the dynamic suspicion timeout, and the buddy system
(a ping to a suspect says so, so it refutes at once).

This module never reads a clock, never sleeps and never uses global randomness.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ..config import Config
from ..messages import (
    EMPTY_META, MAX_INCARNATION, NO_TAGS, Ack, Forget, Gossip, Join, JoinReply, MemberState, Message, Nack, Ping, PingReq,
    PushPull, PushPullReply,
)
from ..node import NodeID, NodeState
from .actions import Action
from .awareness import Awareness
from .dissemination import Dissemination
from .insight import Insight
from ..address import host_of
from .membership import Inbound, LocalNode, Member, MemberTable
from .tables import TableStore
from .merge import Merger
from .outbox import (
    T_GOSSIP, T_INSIGHT, T_JOIN_TIMEOUT, T_LEAVE_RETRY, T_MAINTENANCE, T_PROBE, T_PROBE_END, T_PROBE_TIMEOUT,
    T_PUSH_PULL, T_PUSH_PULL_TIMEOUT, T_RECONNECT, T_RELAY_TIMEOUT, T_SUSPICION, T_SYNC, Outbox,
)
from .probe import Prober
from .reconnect import Reconnector
from .rtt import ProbeRtt, RttHistogram
from .suspicion import Suspicions
from .sync import Sync

__all__ = ["Protocol", "Member"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


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
    are never dialed (see :meth:`.MemberTable.dialable`: no WebSocket URL, no TCP fallback ping, no state
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
        tags: this node's tags (validated by the host: :func:`gossip.tags.check_tags`);
            they travel with the metadata, under its stamp.
        stamp_clock: returns the current time as an HLC stamp (:mod:`gossip.hlc`), the clock
            metadata stamps are compared with: a peer's stamp more than
            ``Config.max_clock_drift`` ahead of it is refused. None (hosts whose stamps are not
            HLC stamps, such as the simulator's counters) skips that check.
        store: where the member table keeps its records (:mod:`.tables`; None: the ordinary
            dict of :class:`Member` objects). The simulator passes a compact one.

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
        tags: frozenset[str] = NO_TAGS,
        store: TableStore | None = None,
    ) -> None:
        if not 0 <= incarnation <= MAX_INCARNATION:
            raise ValueError(f"incarnation must be in 0..{MAX_INCARNATION}, got {incarnation}")
        self.config = config
        self.id = node_id
        self.rng = rng
        self.lifeguard = config.lifeguard_enabled
        self.awareness = Awareness(config.awareness_max_multiplier if self.lifeguard else 1)
        self.rtt = RttHistogram()
        # Forgotten members and seeds, retried slowly for long, so any heal re-merges (reconnect.py).
        self.reconnect = Reconnector(config.reconnect_timeout, config.max_reconnect_targets)
        out = self._out = Outbox()
        self._timers = out.timers
        self.stats: dict[str, int] = out.stats
        inbound = self._inbound = Inbound()
        table = self._table = MemberTable(config, rng, out, inbound, self.reconnect, store)
        self.members: MutableMapping[NodeID, Member] = table.members
        self.counts: dict[NodeState, int] = table.counts
        news = self._news = Dissemination(config, out, table)
        self.broadcasts = news.broadcasts
        self.broadcasts_low = news.broadcasts_low
        local = self._local = LocalNode(config, out, node_id, addr, now, meta=meta, meta_stamp=meta_stamp,
                                        app_version=app_version, incarnation=incarnation,
                                        stamp_clock=stamp_clock, awareness=self.awareness,
                                        announce=news.queue, changed=table.local_changed,
                                        tags=frozenset(tags))
        self.insight = Insight(config, out, local, table.members, table.counts)  # provenance, flaps, partitions
        table.watch(self.insight, news.forget)
        suspicions = self._suspicions = Suspicions(config, out, node_id, table, self.insight, news.queue,
                                                   local.accused)
        merge = self._merge = Merger(config, out, table, inbound, local, suspicions, news, self.insight)
        sync = self._sync = Sync(config, out, rng, table, inbound, local, merge, news.queue, self.reconnect)
        self.join_peers: list[str] = sync.join_peers
        self._probe = Prober(config, out, table, local, self.awareness, self.rtt, news.piggyback,
                             merge.updates, suspicions.on_suspect, sync.leave_acked)
        # First rounds start after a random stagger, so nodes started together do not beat in
        # step (drawn in this order: probe, gossip, push/pull, maintenance). Gossip rounds run
        # only while there is something to gossip (an idle node sleeps).
        self._probe.start(now, rng.uniform(0, config.health_check_interval))
        news.start(now, rng.uniform(0, config.dissemination_interval))
        push_pull = rng.uniform(0.5, 1.0) if config.state_sync_interval > 0 else 0.0
        sync.start(now, push_pull, rng.uniform(0.5, 1.0))

    # ------------------------------------------------------------------ this node's record

    @property
    def addr(self) -> str:
        """This node's advertised transport address (see :meth:`set_address`)."""
        return self._local.addr

    @property
    def incarnation(self) -> int:
        """This node's incarnation."""
        return self._local.incarnation

    @property
    def meta(self) -> Mapping[str, Any]:
        """This node's metadata (see :meth:`set_local_metadata`)."""
        return self._local.meta

    @property
    def meta_stamp(self) -> int:
        """The HLC stamp of this node's metadata."""
        return self._local.meta_stamp

    @property
    def tags(self) -> frozenset[str]:
        """This node's tags (see :meth:`set_local_metadata`)."""
        return self._local.tags

    @property
    def app_version(self) -> str:
        """This node's application version string."""
        return self._local.app_version

    @property
    def state(self) -> NodeState:
        """This node's own state: alive, or leaving once :meth:`leave` was called."""
        return self._local.state

    # ------------------------------------------------------------------ host interface: drains

    def actions_to_perform(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        return self._out.drain()

    def next_deadline(self) -> float:
        """Return when :meth:`tick` next has work (``inf`` if never)."""
        timers = self._timers
        return timers[0][0] if timers else math.inf

    # ------------------------------------------------------------------ queries

    def num_members(self) -> int:
        """Return the number of alive and suspect members, this node included."""
        return self._table.num_members()

    def member(self, node: NodeID) -> Member | None:
        """Return the record of ``node`` (None if unknown or this node)."""
        return self.members.get(node)

    def self_state(self) -> MemberState:
        """Return this node's own state as it would be exchanged."""
        return self._local.self_state()

    def local_states(self) -> tuple[MemberState, ...]:
        """Return the full state (this node first, then every member) for push/pull."""
        return self._table.full_state(self._local)

    def alive_peers(self) -> list[Member]:
        """Return the alive and suspect members other than this node."""
        return [m for m in self.members.values() if m.state is ALIVE or m.state is SUSPECT]

    def random_peers(self, k: int, exclude: Iterable[NodeID] = (), states: tuple[NodeState, ...] = (ALIVE, SUSPECT),
                     tag: str | None = None) -> list[Member]:
        """Return up to ``k`` distinct random members in ``states``, excluding ``exclude`` (and,
        with ``tag``, only members that hold it).

        Members that showed themselves come first; the others only fill up what is missing, so
        a table full of fake members does not swallow the fan-out.
        """
        if tag is not None:
            return self._table.sample_known(k, lambda m: m.state in states and tag in m.tags, set(exclude))
        return self._table.sample_known(k, lambda m: m.state in states, set(exclude))

    def sizes(self) -> dict[str, int]:
        """Return the size of every table the core keeps, for gauges and for bound checks.

        ``members`` (at most ``max_members``), ``broadcasts`` and ``broadcasts_low`` (each at
        most ``broadcast_queue_size``), ``relays`` (at most ``max_pending_relays``), ``probes``,
        ``push_pulls``, ``joins``, ``leave_pending``, ``timers``, ``unconfirmed`` (members only
        their introducer named) and ``probe_list``.
        """
        table, probe, sync = self._table, self._probe, self._sync
        return {
            "members": len(self.members), "broadcasts": len(self.broadcasts),
            "broadcasts_low": len(self.broadcasts_low), "relays": len(probe.relays),
            "probes": len(probe.probes), "push_pulls": len(sync.push_pulls), "joins": len(sync.joins),
            "leave_pending": len(sync.leave_pending), "timers": len(self._timers),
            "unconfirmed": len(table.unproven), "probe_list": len(table.probe_list),
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
        return self._sync.join(now, addrs)

    def leave(self, now: float) -> None:
        """Announce a graceful leave: every alive member is told directly, and it is gossiped.

        Each member is told in a ping that it acknowledges; members that have not acknowledged
        are told again every ``min(ping_timeout, dissemination_interval)``, up to
        ``leave_attempts`` times in all. A member that missed every copy would otherwise hold us
        alive until it probed us, then suspect us alone for a full suspicion timeout.
        The host keeps ticking the core until :meth:`leave_pending` is False (or its leave
        timeout runs out) before it stops.
        """
        self._sync.leave(now)

    def leave_pending(self) -> bool:
        """Return True while members have not yet acknowledged our leave (and may be retried)."""
        return bool(self._sync.leave_pending)

    def set_local_metadata(self, now: float, meta: Mapping[str, Any], stamp: int,
                           tags: frozenset[str] | None = None) -> None:
        """Replace this node's metadata, and its tags unless ``tags`` is None, and announce them
        (raises the incarnation). Tags are ordered with the metadata, by ``stamp``.

        At :data:`~gossip.messages.MAX_INCARNATION` the incarnation stays: peers order
        metadata by its stamp, so the change still spreads. A ``stamp`` below the one
        announced last is raised just above it (the node may have reasserted its metadata
        above a forged stamp: :meth:`.LocalNode.reassert_meta`).
        """
        self._local.set_metadata(now, meta, stamp, tags)

    def forget(self, now: float, node: NodeID) -> bool:
        """Drop the record of ``node``, dead or left, at once, and gossip the forget so every
        member drops it (:class:`~gossip.messages.Forget`; each applies it only if it holds the
        node dead or left too, and only from inside the cluster).

        Stale news about the node from third parties is refused for
        ``dead_node_retention_period`` (``refused_forgotten``); the node's own word is taken,
        so if it comes back it joins as a new member.

        Returns:
            True if the node was forgotten, False if this node does not know it.

        Raises:
            ValueError: ``node`` is this node, or a member held alive or suspect.
        """
        if node == self.id:
            raise ValueError("the local node cannot be forgotten")
        m = self.members.get(node)
        if m is None:
            return False
        if m.state is ALIVE or m.state is SUSPECT:
            raise ValueError(f"node {node} is {m.state}: only a dead or left member can be forgotten")
        self._out.count("members_forgotten")
        self._table.forget(now, m)
        self._news.queue(now, Forget(node, m.incarnation, self.id))
        return True

    def bootstrap(self, now: float, states: Iterable[MemberState]) -> None:
        """Fill the table with members known to be alive, without events or gossip.

        For hosts that start from a known, converged membership (the simulator's scenarios).
        """
        self._table.bootstrap(now, states, self.id)

    def set_address(self, addr: str) -> None:
        """Change the address this node advertises (before it joins)."""
        self._local.set_address(addr)

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
        inbound = self._inbound
        inbound.src_host = host_of(src)
        inbound.sender = sender
        inbound.authenticated = authenticated
        inbound.solicited = False
        inbound.new_in_msg = 0
        local = self._local
        local.in_receive = True
        local.refuted_in_msg = False
        try:
            self._dispatch(now, src, msg, sender, reliable, app_version_ok)
        finally:
            local.in_receive = False
            local.settle(now)

    def _dispatch(self, now: float, src: str, msg: Message, sender: NodeID | None, reliable: bool,
                  app_version_ok: bool | None) -> None:
        inbound = self._inbound
        if sender is not None:
            m = self.members.get(sender)
            if m is not None and m.introducer is not None and (
                    inbound.authenticated or inbound.src_host == host_of(m.addr)):
                self._table.confirm(m)     # it spoke to us (sealed, or from its own host)
            inbound.vouching = inbound.authenticated or (m is not None and m.introducer is None
                                                         and inbound.src_host == host_of(m.addr))
        else:
            inbound.vouching = inbound.authenticated
        t = type(msg)
        self.insight.source = sender   # insight: how accusations reach us
        if t is Ping:
            self._probe.on_ping(now, src, msg, sender, reliable)  # type: ignore[arg-type]
        elif t is Ack:
            self._probe.on_ack(now, msg, sender)  # type: ignore[arg-type]
        elif t is Gossip:
            self._merge.updates(now, msg.updates, sender)  # type: ignore[union-attr]
        elif t is PingReq:
            self._probe.on_ping_req(now, src, msg, sender, reliable)  # type: ignore[arg-type]
        elif t is Nack:
            self._probe.on_nack(msg.seq)  # type: ignore[union-attr]
        elif t is PushPull:
            self._sync.on_push_pull(now, msg, reliable, sender)  # type: ignore[arg-type]
        elif t is PushPullReply:
            self._sync.on_push_pull_reply(now, msg, sender)  # type: ignore[arg-type]
        elif t is Join:
            self._sync.on_join(now, msg, reliable, app_version_ok)  # type: ignore[arg-type]
        elif t is JoinReply:
            self._sync.on_join_reply(now, msg)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ input: time

    def tick(self, now: float) -> None:
        """Run every timer due at or before ``now``."""
        self.insight.source = None
        timers = self._timers
        probe, sync = self._probe, self._sync
        while timers and timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(timers)
            if kind == T_PROBE:
                probe.round(now)
            elif kind == T_PROBE_TIMEOUT:
                probe.timeout(now, key)
            elif kind == T_PROBE_END:
                probe.end(now, key)
            elif kind == T_RELAY_TIMEOUT:
                probe.relay_timeout(key)
            elif kind == T_SUSPICION:
                self._suspicions.fire(now, key, when)
            elif kind == T_GOSSIP:
                self._news.round(now)
            elif kind == T_INSIGHT:
                self.insight.tick(now)
            elif kind == T_PUSH_PULL:
                sync.push_pull_round(now)
            elif kind == T_MAINTENANCE:
                sync.maintenance(now)
            elif kind == T_JOIN_TIMEOUT:
                sync.join_timeout(key)
            elif kind == T_SYNC:
                sync.follow_up(now, key)
            elif kind == T_PUSH_PULL_TIMEOUT:
                sync.push_pull_timeout(key, now)
            elif kind == T_LEAVE_RETRY:
                sync.leave_retry(now)
            elif kind == T_RECONNECT:
                sync.reconnect_round(now)
