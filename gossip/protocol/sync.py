"""State exchange: joins, leaves, push/pull anti-entropy, recovery and reconnection.

* **Join** (:meth:`Sync.join`): a join request carrying our own state goes to each seed; the
  one that accepts answers with its full state, which is merged as the answer to our own
  request, and a second exchange with it a little later picks up the members that joined
  through it at the same time. A join request we receive (:meth:`Sync.on_join`) is checked
  (protocol and application versions, our own id, an id in use at another address) and its
  joiner admitted, or refused with a reason.
* **Leave** (:meth:`Sync.leave`): a ``dead(self, left)`` is gossiped, and every alive member is
  told directly in a ping it acknowledges, retried until it does (``leave_attempts``).
* **Push/pull** (``state_sync_interval``, scaled with log2 of the cluster's size above 32
  members as memberlist does): our full state goes to one random member over a connection,
  and its reply is merged. Replies are merged only when they answer our own request.
* **Maintenance** (``recovery_attempt_interval``): forget the long dead and left, re-join
  through the seeds when alone, and exchange state with one dead member so the two sides of a
  healed partition merge again.
* **Reconnect** (``reconnect_interval``): try one forgotten member or seed
  (:class:`~.reconnect.Reconnector`) with a push/pull.

Pure data: no clock, no threads, no I/O; ``now`` and the random source are passed in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

from ..config import Config
from ..messages import Join, JoinReply, MemberState, Ping, PushPull, PushPullReply, Update
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .actions import JOIN_NO_ANSWER, JoinResult, Trace
from .membership import Inbound, LocalNode, Member, MemberTable
from .merge import Merger
from .outbox import (
    T_JOIN_TIMEOUT, T_LEAVE_RETRY, T_MAINTENANCE, T_PUSH_PULL, T_PUSH_PULL_TIMEOUT, T_RECONNECT, T_SYNC,
    Outbox,
)
from .reconnect import Reconnector

__all__ = ["Sync"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


class Sync:
    """Our joins, leaves and state exchanges, and the answers to those of others.

    Args:
        config: the protocol's configuration.
        out: where sends, results, timers and counters go.
        rng: the core's random source.
        table: the member table.
        inbound: the context of the message being handled.
        local: this node's own record.
        merge: merges full states.
        announce: queues an update for dissemination (``announce(now, update)``).
        reconnect: the forgotten members and seeds worth retrying.
    """

    def __init__(self, config: Config, out: Outbox, rng: random.Random, table: MemberTable,
                 inbound: Inbound, local: LocalNode, merge: Merger,
                 announce: Callable[[float, Update], None], reconnect: Reconnector) -> None:
        self.config = config
        self.out = out
        self.rng = rng
        self.table = table
        self.members = table.members
        self.inbound = inbound
        self.local = local
        self.merge = merge
        self._announce = announce
        self.reconnect = reconnect
        self.join_peers: list[str] = []
        self.joins: dict[int, str] = {}
        self.push_pulls: dict[int, str] = {}     # our push/pulls awaiting their reply
        # A node that joined knowing no live member merges the answer to its join, and the
        # follow-up exchange with the same peer, without passing on what it learns (see
        # on_join_reply): the addresses whose follow-up is due, and the follow-ups awaiting
        # their reply (bounded by the join peers and by push_pulls).
        self._quiet_follow_up: set[str] = set()
        self._quiet: set[int] = set()
        # With tracing: when each of those was sent (bounded like push_pulls: by its timeout).
        self.tracing = config.tracing is not False
        self.push_pull_sent: dict[int, float] = {}
        self.leave_pending: dict[int, tuple[Member, int]] = {}   # leave pings: seq -> (member, sent)

    def start(self, now: float, push_pull_stagger: float, maintenance_stagger: float) -> None:
        """Set the first push/pull round (if any) and maintenance, and the reconnect rounds."""
        cfg = self.config
        if cfg.state_sync_interval > 0:
            self.out.schedule(now + push_pull_stagger * self.push_pull_interval(), T_PUSH_PULL, None)
        self.out.schedule(now + maintenance_stagger * cfg.recovery_attempt_interval, T_MAINTENANCE, None)
        # Forgotten members and seeds, retried slowly for long, so any heal re-merges (reconnect.py).
        # (No random stagger: a round with nothing to retry draws nothing from rng either.)
        if cfg.reconnect_interval > 0:
            self.out.schedule(now + cfg.reconnect_interval, T_RECONNECT, None)

    def full_state(self) -> tuple[MemberState, ...]:
        """Return our full state (ourselves first)."""
        return self.table.full_state(self.local)

    # ------------------------------------------------------------------ join

    def join(self, now: float, addrs: Iterable[str]) -> list[int]:
        """Send a join request to each address (see :meth:`~.core.Protocol.join`)."""
        local = self.local
        seqs = []
        for addr in addrs:
            if addr not in self.join_peers:
                self.join_peers.append(addr)
            if addr == local.addr:
                continue
            seq = self.out.next_seq()
            self.joins[seq] = addr
            self.out.send(addr, Join(seq, local.addr, (local.self_state(),), PROTOCOL_VERSION, local.app_version), True)
            self.out.schedule(now + self.config.join_timeout, T_JOIN_TIMEOUT, seq)
            seqs.append(seq)
        return seqs

    def join_timeout(self, seq: int) -> None:
        """Our join ``seq`` got no answer in time."""
        addr = self.joins.pop(seq, None)
        if addr is not None:
            self.out.emit(JoinResult(addr, False, JOIN_NO_ANSWER))

    def on_join(self, now: float, j: Join, reliable: bool, app_version_ok: bool | None) -> None:
        """Admit a joiner and answer with our full state, or refuse it with a reason."""
        if not reliable:
            self.out.count("dropped_join_datagram")  # joins come, and are answered, on a connection
            return
        reason = ""
        joiner = j.states[0] if j.states else None
        if joiner is None:
            reason = "join carries no node state"
        elif j.pv != PROTOCOL_VERSION:
            reason = f"incompatible protocol version: {j.pv} != {PROTOCOL_VERSION}"
        elif joiner.node == self.local.id:
            reason = "unable to join self (same node id)"
        elif app_version_ok is False:
            reason = f"incompatible application version: {j.av!r}"
        else:
            m = self.members.get(joiner.node)
            if m is not None and m.addr != joiner.addr and (m.state is ALIVE or m.state is SUSPECT):
                reason = f"node id {joiner.node} is in use by a live member at {m.addr}"
        if reason:
            self.out.count("joins_refused")
            self.out.reply(j.source_addr, JoinReply(j.seq, False, reason), True)
            return
        assert joiner is not None
        if len(j.states) > 1:
            # A joiner sends its own state only; anything more is not its to vouch for.
            self.out.count("refused_join_extra_states")
        self.inbound.joining = True   # a joiner is given room in a full table (see admit)
        try:
            self.merge.states(now, (joiner,))
        finally:
            self.inbound.joining = False
        if joiner.node not in self.members:
            # Refused by the table's bounds (or its state was not alive): say so, rather than
            # answer "accepted" to a joiner nobody here will know.
            self.out.count("joins_refused")
            self.out.reply(j.source_addr, JoinReply(j.seq, False, "not admitted to the member table"), True)
            return
        self.out.reply(j.source_addr, JoinReply(j.seq, True, "", self.full_state()), True)

    def on_join_reply(self, now: float, r: JoinReply) -> None:
        """The answer to our own join: merge the responder's full state."""
        addr = self.joins.pop(r.seq, None)
        if addr is None:
            self.out.count("refused_unsolicited_reply")
            return
        if not r.accepted:
            self.out.emit(JoinResult(addr, False, r.reason))
            return
        # The answer to our own join: bounded by max_members only, and it may carry us to the
        # incarnation a previous process under our id reached.
        self.inbound.solicited = True
        self.inbound.vouching = True    # it answered where we sent our own request
        # A node that knew no live member learns the cluster from its join's answer. It does not
        # pass that on: the responder, and so the cluster, knows all of it already, and in a
        # burst of N joins the echo would be N full states gossiped back (N squared updates).
        # Members that joined at the same time are passed on by the responder, which heard
        # them join. A node that knew live members (a rejoin, or two clusters joined) passes
        # on what it learns as after any exchange: its old peers may not know it.
        table = self.table
        fresh = table.counts[ALIVE] + table.counts[SUSPECT] == 0
        self.merge.states(now, r.states, catch_up=True, peer=r.states[0].node if r.states else None,
                          echo=not fresh)
        table.answered_at(addr, r.states)
        responder = r.states[0].node if r.states else None
        self.out.emit(JoinResult(addr, True, "", responder))
        # Announce ourselves too (memberlist does): the joined peer is not the only source.
        self._announce(now, self.local.self_alive())
        # One more exchange with the same peer a little later picks up the members that joined
        # through it at the same time as us (a burst of joins converges in seconds, not minutes).
        if fresh:
            self._quiet_follow_up.add(addr)
        else:
            self._quiet_follow_up.discard(addr)
        self.out.schedule(now + self.config.health_check_interval * self.rng.uniform(1.0, 2.0), T_SYNC, addr)

    def follow_up(self, now: float, addr: str) -> None:
        """The exchange that follows our join through ``addr`` (see :meth:`on_join_reply`)."""
        seq = self.send_push_pull(now, addr)
        if addr in self._quiet_follow_up:
            self._quiet_follow_up.discard(addr)
            self._quiet.add(seq)

    # ------------------------------------------------------------------ leave

    def leave(self, now: float) -> None:
        """Announce a graceful leave (see :meth:`~.core.Protocol.leave`)."""
        local = self.local
        if local.state is LEAVING:
            return
        local.leaving()
        left = local.left_update()
        self._announce(now, left)
        for m in [m for m in self.members.values() if m.state is ALIVE or m.state is SUSPECT]:
            if not self.table.dialable(m):
                continue
            seq = self.out.next_seq()
            self.leave_pending[seq] = (m, 1)
            self.out.send(m.addr, Ping(seq, m.node, local.addr, (left,)))
        if self.leave_pending:
            self.out.schedule(now + self._leave_retry_interval(), T_LEAVE_RETRY, None)

    def _leave_retry_interval(self) -> float:
        return min(self.config.ping_timeout, self.config.dissemination_interval)

    def leave_retry(self, now: float) -> None:
        """Tell the members that have not acknowledged our leave again, or give up on them."""
        left = self.local.left_update()
        for seq, (m, attempts) in list(self.leave_pending.items()):
            if attempts >= self.config.leave_attempts:
                del self.leave_pending[seq]
                self.out.count("leave_unacknowledged")
                continue
            self.leave_pending[seq] = (m, attempts + 1)
            self.out.send(m.addr, Ping(seq, m.node, self.local.addr, (left,)))
            self.out.count("leave_retransmits")
        if self.leave_pending:
            self.out.schedule(now + self._leave_retry_interval(), T_LEAVE_RETRY, None)

    def leave_acked(self, seq: int) -> None:
        """The ack ``seq`` may acknowledge our leave."""
        self.leave_pending.pop(seq, None)

    # ------------------------------------------------------------------ push/pull

    def push_pull_interval(self) -> float:
        """Return the push/pull period for the cluster's current size."""
        # memberlist's pushPullScale: the period grows with log2 of the size above 32 nodes.
        n = self.table.num_members()
        base = self.config.state_sync_interval
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def send_push_pull(self, now: float, addr: str) -> int:
        """Send our full state to ``addr`` and return the exchange's sequence number; its reply
        is merged as solicited until it times out."""
        seq = self.out.next_seq()
        self.push_pulls[seq] = addr
        if self.tracing:
            self.push_pull_sent[seq] = now
        cfg = self.config
        self.out.schedule(now + cfg.tcp_dial_timeout + cfg.tcp_deadline, T_PUSH_PULL_TIMEOUT, seq)
        self.out.send(addr, PushPull(seq, self.local.addr, self.full_state()), True)
        return seq

    def push_pull_timeout(self, seq: int, now: float) -> None:
        """Our push/pull ``seq`` got no reply in time: a late one is not merged."""
        addr = self.push_pulls.pop(seq, None)
        self._quiet.discard(seq)
        if self.tracing and addr is not None:
            self._trace(now, seq, addr, "timeout", 0)

    def _trace(self, now: float, seq: int, addr: str, outcome: str, states: int) -> None:
        start = self.push_pull_sent.pop(seq, now)
        self.out.emit(Trace("gossip.push_pull", start, now, {
            "gossip.peer.addr": addr, "gossip.push_pull.seq": seq,
            "gossip.push_pull.outcome": outcome, "gossip.push_pull.states": states}))

    def push_pull_round(self, now: float) -> None:
        """Exchange full states with one random member that may be dialed."""
        self.out.schedule(now + self.push_pull_interval(), T_PUSH_PULL, None)
        if self.local.state is LEAVING:
            return
        peers = self.table.sample_known(1, lambda m: m.state is ALIVE and (m.introducer is None or m.vouched), set())
        if peers:
            self.send_push_pull(now, peers[0].addr)
            self.out.count("push_pulls")

    def on_push_pull(self, now: float, p: PushPull, reliable: bool, peer: NodeID | None) -> None:
        """Merge a peer's full state and answer with ours, on its connection."""
        if not reliable:
            # A full-state exchange only travels on a connection, and is answered on it: a
            # datagram claiming to be one would make us send our whole table to any address.
            self.out.count("dropped_push_pull_datagram")
            return
        self.merge.states(now, p.states, peer=peer)
        self.out.reply(p.source_addr, PushPullReply(p.seq, self.full_state()), True)

    def on_push_pull_reply(self, now: float, r: PushPullReply, peer: NodeID | None) -> None:
        """The reply to our own push/pull: merge it."""
        asked = self.push_pulls.pop(r.seq, None)
        if asked is None:
            self.out.count("refused_unsolicited_reply")
            return
        self.inbound.solicited = True
        self.inbound.vouching = True    # it answered where we sent our own request
        quiet = r.seq in self._quiet
        if quiet:
            self._quiet.discard(r.seq)
        self.merge.states(now, r.states, peer=peer, echo=not quiet)
        self.table.answered_at(asked, r.states)
        if self.tracing:
            self._trace(now, r.seq, asked, "reply", len(r.states))

    # ------------------------------------------------------------------ maintenance

    def reconnect_round(self, now: float) -> None:
        """Try one forgotten member or seed (see :mod:`.reconnect`): a push/pull, which merges
        both views if it answers."""
        self.out.schedule(now + self.config.reconnect_interval, T_RECONNECT, None)
        if self.local.state is LEAVING:
            return
        in_use = {m.addr for m in self.members.values()}
        in_use.add(self.local.addr)
        target = self.reconnect.pick(now, self.rng, self.join_peers, in_use, self.table.num_members())
        if target is not None:
            self.send_push_pull(now, target)
            self.out.count("reconnect_attempts")

    def maintenance(self, now: float) -> None:
        """Forget the long gone, re-join when alone, and try to recover one dead member."""
        cfg = self.config
        table = self.table
        self.out.schedule(now + cfg.recovery_attempt_interval, T_MAINTENANCE, None)
        table.expire(now)
        if self.local.state is LEAVING:
            return
        # Isolated (no live peer left): re-join through the peers we joined through.
        if table.counts[ALIVE] + table.counts[SUSPECT] == 0 and self.join_peers:
            pending = set(self.joins.values())
            self.join(now, [a for a in self.join_peers if a not in pending])
            self.out.count("rejoins")
        # Recovery: exchange state with one dead member; if it answers, both learn of the other's
        # verdict, refute, and the two sides of a healed partition merge again.
        dead = table.sample(1, lambda m: m.state is DEAD, set(), table.cids, table.gone())
        if dead:
            self.send_push_pull(now, dead[0].addr)
            self.out.count("recovery_attempts")
