"""The two server roles of the lock service: every eligible node's :class:`Replica`, and the
elected leader's :class:`Grantor`.

Theory of operation
-------------------

The leader decides; the replicas remember. The replication is single-decree Paxos applied to
one table, with the elected leader as the only proposer:

1. **Prepare.** A node that becomes leader picks a ballot ``(term, round, node)`` above every
   ballot it has seen and sends :class:`Prepare` to every replica. A replica that has promised
   nothing higher promises this ballot (it will refuse any lower one from now on) and answers
   with its whole table and the highest token it ever stored (:class:`Promise`).
2. **Recover.** Once a quorum (the election's: a majority of the members it counts, itself
   included) has promised, the leader merges the tables (per name, the newest version) and
   starts issuing tokens above the highest token any of them holds. Every lock the merged table
   shows as held is treated as held for its whole ``ttl`` counted from now, unless its holder
   renews it first: the leader cannot see the lease's clock, so it waits out what it cannot
   confirm.
3. **Write, then answer.** Each grant, renewal, release or expiry is a new version of the
   name's record (:class:`Accept`); a grant or renewal is answered only once a quorum stored it.

Why it is safe (each point needs only that any two quorums share a member):

* *Tokens grow.* A granted token is stored by a quorum; the quorum of any later leader's
  prepare shares a member with it, which reports it (or the higher high-water mark), so the
  later leader's tokens are higher.
* *No two holders.* A replica that promised a higher ballot refuses the older leader's writes,
  so once a new leader has recovered, the old one cannot complete another grant. Any grant the
  old leader did complete reached the new leader in its recovery, after the old leader decided
  it; the holder's lease counts from before it sent its request, on its own clock shortened by
  the drift bound, so it ends before the ``ttl`` the new leader waits from its recovery (see
  :mod:`gossip.locks.requester`). The leader itself keeps each lease until ``ttl`` after it
  decided it, and extends it only by renewals.
* *A minority never grants.* Its leader (if it still thinks it leads) cannot get a quorum to
  store anything.

Where this needs more than quorum intersection, it needs what the election needs: clocks whose
rates differ from real time by at most ``LeaderConfig.max_clock_drift_rate``, and a quorum base
that does not shrink behind the service's back (the election keeps forgotten members; a member
removed from it with ``LeaderElection.remove_members`` must be gone for good).

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math

from ..node import NodeID
from .base import GrantIssued, LockConfig, LockView, Outbox
from .messages import (
    ZERO_BALLOT, ZERO_TOKEN, Accept, Accepted, Acquire, Ballot, FencingToken, Prepare, Promise, Query, Record,
    Reject, Release, Renew, Reply, Wake,
)

__all__ = ["Replica", "Grantor", "GrantorState"]


class Replica:
    """One node's copy of the lock table, and the ballot it follows.

    Args:
        config: the bounds (``max_locks``).
        out: where counters go.
    """

    def __init__(self, config: LockConfig, out: Outbox) -> None:
        self._max = config.max_locks
        self._out = out
        self.promised: Ballot = ZERO_BALLOT
        """The highest ballot this replica promised (it refuses any lower)."""
        self.records: dict[str, Record] = {}
        """The newest version of each name's record."""
        self.high: FencingToken = ZERO_TOKEN
        """The highest token this replica ever stored (kept when records are dropped)."""

    def on_prepare(self, msg: Prepare) -> Promise | Reject:
        """Promise ``msg.ballot`` (and report the table) unless a higher one was promised."""
        if msg.ballot < self.promised:
            self._out.count("replica_rejected")
            return Reject(msg.ballot, self.promised)
        self.promised = msg.ballot
        return Promise(msg.ballot, self.high, tuple(self.records.values()))

    def on_accept(self, msg: Accept) -> Accepted | Reject:
        """Store the records of ``msg`` (a newer version replaces an older one) unless a higher
        ballot was promised; acknowledge what is stored."""
        if msg.ballot < self.promised:
            self._out.count("replica_rejected")
            return Reject(msg.ballot, self.promised)
        self.promised = msg.ballot
        seqs = []
        for r in msg.records:
            if r.ballot != msg.ballot:
                self._out.count("replica_foreign_records")
                continue
            old = self.records.get(r.name)
            if old is None and len(self.records) >= self._max and not self._evict():
                self._out.count("refused_table_full")
                continue
            if old is None or r.version > old.version:
                self.records[r.name] = r
            if r.token > self.high:
                self.high = r.token
            seqs.append(r.seq)
        return Accepted(msg.ballot, tuple(seqs))

    def _evict(self) -> bool:
        """Drop the oldest released record to make room (the high-water mark keeps its token)."""
        oldest = None
        for r in self.records.values():
            if r.released and (oldest is None or r.version < oldest.version):
                oldest = r
        if oldest is None:
            return False
        del self.records[oldest.name]
        self._out.count("records_evicted")
        return True


class GrantorState(enum.Enum):
    """Where the leader role stands."""

    IDLE = "idle"
    """Not leading (or preempted): grants nothing."""
    PREPARING = "preparing"
    """Leading, gathering promises from a quorum: answers "retry"."""
    ACTIVE = "active"
    """Recovered: grants."""


@dataclasses.dataclass(slots=True)
class _Lease:
    holder: NodeID
    token: FencingToken
    ttl: float
    expires: float          # on the leader's clock
    req: int                # the holder's request this lease last answered (-1: recovered)
    version: tuple[Ballot, int]


@dataclasses.dataclass(slots=True)
class _Write:
    record: Record
    started: float
    acks: set[NodeID]
    reply_to: NodeID | None = None
    reply: Reply | None = None
    resend_at: float = math.inf


class Grantor:
    """The leader role: recovers the table, grants, renews, releases and expires leases.

    Args:
        me: the local node.
        config: the settings.
        replica: the local replica (the leader is one of its own quorum).
        out: where messages, events and counters go.
    """

    def __init__(self, me: NodeID, config: LockConfig, replica: Replica, out: Outbox) -> None:
        self.me = me
        self._cfg = config
        self._replica = replica
        self._out = out
        self.state = GrantorState.IDLE
        self.ballot: Ballot = ZERO_BALLOT
        self._seen: Ballot = ZERO_BALLOT           # the highest ballot heard of
        self._promises: dict[NodeID, Promise] = {}
        self._prepare_at = -math.inf               # when to (re)send prepares
        self._leases: dict[str, _Lease] = {}
        self._soonest = math.inf                   # no lease ends before this (a lower bound)
        self._high: FencingToken = ZERO_TOKEN
        self._seq = 0
        self._writes: dict[int, _Write] = {}
        self._waiters: dict[str, collections.OrderedDict[NodeID, float]] = {}
        self._n_waiters = 0
        self._view = LockView()

    # ------------------------------------------------------------------ queries

    @property
    def active(self) -> bool:
        """True when this node grants (it leads and has recovered)."""
        return self.state is GrantorState.ACTIVE

    def holds(self) -> dict[str, tuple[NodeID, FencingToken, float]]:
        """Return the leases this leader holds: name -> (holder, token, expiry on its clock)."""
        return {n: (x.holder, x.token, x.expires) for n, x in self._leases.items()}

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next at the latest (a lease's end, a retransmission)."""
        if self.state is GrantorState.IDLE:
            return math.inf
        soonest = self._prepare_at if self.state is GrantorState.PREPARING else math.inf
        if self.state is GrantorState.ACTIVE:
            soonest = min(soonest, self._soonest)
            if self._writes:
                soonest = min(soonest, min(w.resend_at for w in self._writes.values()))
        return soonest

    # ------------------------------------------------------------------ leadership

    def update(self, now: float, view: LockView) -> None:
        """Follow the election: start recovering on becoming leader, stop on losing it."""
        was = self._view.leading and self._view.eligible
        self._view = view
        if not view.leading or not view.eligible:
            if self.state is not GrantorState.IDLE:
                self._stop("stepped_down")
            return
        if self.state is GrantorState.IDLE and (not was or now >= self._prepare_at):
            self._prepare(now)

    def _stop(self, reason: str) -> None:
        self._out.count(reason)
        self.state = GrantorState.IDLE
        self._promises.clear()
        self._writes.clear()
        self._waiters.clear()
        self._n_waiters = 0
        # self._leases stays: what this node decided is still a bound it may use later.

    def _prepare(self, now: float) -> None:
        term = self._view.term
        seen = max(self._seen, self._replica.promised)
        if seen.term > term:
            # A leader of a later term has been here: this node's election is behind.
            self._out.count("prepare_stale_term")
            self._prepare_at = now + self._cfg.retry_interval
            return
        rnd = 0
        if self.ballot.term == term:
            rnd = self.ballot.round + 1
        if seen.term == term:
            rnd = max(rnd, seen.round + 1)
        self.ballot = Ballot(term, rnd, self.me.hex)
        self.state = GrantorState.PREPARING
        self._promises.clear()
        self._out.count("prepares")
        own = self._replica.on_prepare(Prepare(self.ballot))
        if isinstance(own, Promise):
            self._promises[self.me] = own
        self._send_prepares(now)
        self._check_quorum(now)

    def _send_prepares(self, now: float) -> None:
        missing = [r for r in self._view.replicas if r not in self._promises]
        if missing:
            self._out.send(missing, Prepare(self.ballot))
        self._prepare_at = now + self._cfg.retry_interval

    def _quorum(self, voters: set[NodeID] | dict[NodeID, Promise]) -> bool:
        need = self._view.need
        if need <= 0:
            return False
        n = sum(1 for v in voters if v == self.me or v in self._view.replicas)
        return n >= need

    def _check_quorum(self, now: float) -> None:
        if self.state is not GrantorState.PREPARING or self.me not in self._promises:
            return
        if not self._quorum(self._promises):
            return
        merged: dict[str, Record] = {}
        high = self._high
        for p in self._promises.values():
            high = max(high, p.high)
            for r in p.records:
                old = merged.get(r.name)
                if old is None or r.version > old.version:
                    merged[r.name] = r
                high = max(high, r.token)
        self._high = high
        leases: dict[str, _Lease] = {}
        for r in merged.values():
            if r.released or r.holder is None:
                continue
            mine = self._leases.get(r.name)
            if mine is not None and mine.version == r.version:
                leases[r.name] = mine            # written by this node: its bound still holds
            else:
                leases[r.name] = _Lease(r.holder, r.token, r.ttl, now + r.ttl, -1, r.version)
                self._out.count("leases_waited_out")
        self._leases = leases
        self._soonest = min((x.expires for x in leases.values()), default=math.inf)
        self._promises.clear()
        self.state = GrantorState.ACTIVE
        self._out.count("recoveries")

    # ------------------------------------------------------------------ replica answers

    def on_promise(self, now: float, sender: NodeID, msg: Promise) -> None:
        """Count a promise for the current ballot."""
        if self.state is not GrantorState.PREPARING or msg.ballot != self.ballot:
            return
        if sender not in self._view.replicas:
            self._out.count("promises_not_replica")
            return
        self._promises[sender] = msg
        self._check_quorum(now)

    def on_accepted(self, now: float, sender: NodeID, msg: Accepted) -> None:
        """Count acknowledgements; answer the client of each write that reached a quorum."""
        if self.state is not GrantorState.ACTIVE or msg.ballot != self.ballot:
            return
        if sender not in self._view.replicas:
            self._out.count("acks_not_replica")
            return
        for seq in msg.seqs:
            w = self._writes.get(seq)
            if w is not None:
                w.acks.add(sender)
                self._complete(seq, w)

    def on_reject(self, now: float, sender: NodeID, msg: Reject) -> None:
        """A replica follows a higher ballot: this leader is preempted until it prepares again."""
        if msg.promised > self._seen:
            self._seen = msg.promised
        if msg.ballot == self.ballot and msg.promised > self.ballot and self.state is not GrantorState.IDLE:
            self._stop("preempted")
            self._prepare_at = now + self._cfg.retry_interval

    # ------------------------------------------------------------------ writes

    def _write(self, now: float, name: str, token: FencingToken, holder: NodeID | None, ttl: float,
               released: bool, reply_to: NodeID | None = None, reply: Reply | None = None) -> tuple[Ballot, int]:
        self._seq += 1
        record = Record(name, token, holder, ttl, released, self.ballot, self._seq)
        w = _Write(record, now, set(), reply_to, reply, now + self._cfg.retry_interval)
        own = self._replica.on_accept(Accept(self.ballot, (record,)))
        if isinstance(own, Accepted) and self._seq in own.seqs:
            w.acks.add(self.me)
        self._writes[self._seq] = w
        self._out.send(self._view.replicas, Accept(self.ballot, (record,)))
        self._complete(self._seq, w)
        return record.version

    def _complete(self, seq: int, w: _Write) -> None:
        if not self._quorum(w.acks):
            return
        del self._writes[seq]
        r = w.record
        if w.reply is not None and w.reply_to is not None:
            self._out.send((w.reply_to,), w.reply)
            if w.reply.status == "granted" and r.holder is not None:
                self._out.emit(GrantIssued(r.name, r.token, r.holder, w.started))
                self._out.count("grants")

    def _resend(self, now: float) -> None:
        """Resend every write still short of a quorum; give up on those too old."""
        late: dict[NodeID, list[Record]] = {}
        for seq, w in list(self._writes.items()):
            if now - w.started > self._cfg.write_timeout:
                del self._writes[seq]
                self._out.count("writes_timed_out")
                continue
            if now < w.resend_at:
                continue
            w.resend_at = now + self._cfg.retry_interval
            for r in self._view.replicas:
                if r not in w.acks:
                    late.setdefault(r, []).append(w.record)
        for node, records in late.items():
            self._out.send((node,), Accept(self.ballot, tuple(records)))

    # ------------------------------------------------------------------ client requests

    def on_request(self, now: float, client: NodeID, msg: Acquire | Renew | Release | Query) -> None:
        """Answer a client (at once, or once the write it needs reached a quorum)."""
        if self.state is not GrantorState.ACTIVE:
            if self._view.leading and self._view.eligible:
                self._reply(client, Reply(msg.req, "retry", retry=self._cfg.retry_interval))
            elif not isinstance(msg, Release):
                leader = self._view.leader if self._view.leader != self.me else None
                self._reply(client, Reply(msg.req, "not_leader", leader=leader))
            return
        self._expire(now)
        if isinstance(msg, Acquire):
            self._acquire(now, client, msg)
        elif isinstance(msg, Renew):
            self._renew(now, client, msg)
        elif isinstance(msg, Release):
            self._release(now, client, msg)
        else:
            lease = self._leases.get(msg.name)
            if lease is None:
                self._reply(client, Reply(msg.req, "holder"))
            else:
                self._reply(client, Reply(msg.req, "holder", lease.token, max(0.0, lease.expires - now),
                                          lease.holder))

    def _reply(self, client: NodeID, reply: Reply) -> None:
        self._out.send((client,), reply)

    def _acquire(self, now: float, client: NodeID, msg: Acquire) -> None:
        cfg = self._cfg
        if not cfg.min_ttl <= msg.ttl <= cfg.max_ttl:
            self._out.count("refused_ttl")
            self._reply(client, Reply(msg.req, "refused",
                                      reason=f"ttl must be in [{cfg.min_ttl:g}, {cfg.max_ttl:g}] s"))
            return
        lease = self._leases.get(msg.name)
        if lease is not None and lease.holder == client and lease.req < msg.first:
            # An earlier acquisition of this client: it moved on, so that lease is over.
            self._free(now, msg.name, lease, wake=False)
            lease = None
        if lease is not None and lease.holder != client:
            self._wait(now, msg.name, client)
            self._reply(client, Reply(msg.req, "busy", retry=max(0.0, lease.expires - now)))
            return
        if lease is not None:
            # The holder asks again for this acquisition (its answer was lost, or came too late
            # to use): the same lease, extended from now, once stored.
            if lease.req < 0:
                self._out.count("leases_confirmed")
            lease.req = max(lease.req, msg.req)
            lease.expires = max(lease.expires, now + msg.ttl)
            lease.ttl = msg.ttl
            lease.version = self._write(now, msg.name, lease.token, client, msg.ttl, False, client,
                                        Reply(msg.req, "granted", lease.token, msg.ttl))
            return
        head = self._head(now, msg.name)
        if head is not None and head != client:
            self._wait(now, msg.name, client)
            self._reply(client, Reply(msg.req, "busy", retry=cfg.retry_interval))
            return
        if len(self._leases) >= cfg.max_locks:
            self._out.count("refused_table_full")
            self._reply(client, Reply(msg.req, "refused", reason="the lock table is full"))
            return
        self._unwait(msg.name, client)
        token = self._next_token()
        version = self._write(now, msg.name, token, client, msg.ttl, False, client,
                              Reply(msg.req, "granted", token, msg.ttl))
        self._leases[msg.name] = _Lease(client, token, msg.ttl, now + msg.ttl, msg.req, version)
        self._soonest = min(self._soonest, now + msg.ttl)

    def _next_token(self) -> FencingToken:
        high, term = self._high, self.ballot.term
        token = FencingToken(high.term, high.counter + 1) if high.term >= term else FencingToken(term, 1)
        self._high = token
        return token

    def _renew(self, now: float, client: NodeID, msg: Renew) -> None:
        lease = self._leases.get(msg.name)
        if lease is None or lease.holder != client or lease.token != msg.token or lease.expires <= now:
            self._out.count("renewals_lost")
            self._reply(client, Reply(msg.req, "lost"))
            return
        if not self._cfg.min_ttl <= msg.ttl <= self._cfg.max_ttl:
            self._out.count("refused_ttl")
            self._reply(client, Reply(msg.req, "refused", reason="ttl out of range"))
            return
        if lease.req < 0:
            self._out.count("leases_confirmed")
        lease.req = max(lease.req, 0)
        lease.expires = max(lease.expires, now + msg.ttl)
        lease.ttl = msg.ttl
        lease.version = self._write(now, msg.name, lease.token, client, msg.ttl, False, client,
                                    Reply(msg.req, "renewed", lease.token, msg.ttl))

    def _release(self, now: float, client: NodeID, msg: Release) -> None:
        lease = self._leases.get(msg.name)
        # A release names the request that was granted: an acquire of the same lease that
        # overtook it (the holder asked again) is not undone by it.
        if lease is not None and lease.holder == client and (
                lease.token == msg.token and lease.req <= msg.last if msg.token is not None
                else msg.first <= lease.req <= msg.last):
            self._free(now, msg.name, lease)
            self._out.count("released")
        if msg.token is not None:
            self._reply(client, Reply(msg.req, "released"))

    def _free(self, now: float, name: str, lease: _Lease, wake: bool = True) -> None:
        del self._leases[name]
        self._write(now, name, lease.token, None, lease.ttl, True)
        head = self._head(now, name) if wake else None
        if head is not None:
            self._out.send((head,), Wake(name))

    def _expire(self, now: float) -> None:
        if now < self._soonest:
            return
        soonest = math.inf
        for name, lease in list(self._leases.items()):
            if lease.expires <= now:
                self._out.count("leases_expired")
                self._free(now, name, lease)
            else:
                soonest = min(soonest, lease.expires)
        self._soonest = soonest

    # ------------------------------------------------------------------ waiters (fairness)

    def _wait(self, now: float, name: str, client: NodeID) -> None:
        q = self._waiters.get(name)
        if q is None:
            q = self._waiters[name] = collections.OrderedDict()
        if client in q:
            q[client] = now
        elif self._n_waiters < self._cfg.max_waiters:
            q[client] = now
            self._n_waiters += 1
        else:
            self._out.count("waiters_full")

    def _unwait(self, name: str, client: NodeID) -> None:
        q = self._waiters.get(name)
        if q is not None and q.pop(client, None) is not None:
            self._n_waiters -= 1
            if not q:
                del self._waiters[name]

    def _head(self, now: float, name: str) -> NodeID | None:
        """The first client still waiting for ``name`` (those silent too long are dropped)."""
        q = self._waiters.get(name)
        stale = now - 8 * self._cfg.retry_interval
        while q:
            client, seen = next(iter(q.items()))
            if seen >= stale:
                return client
            del q[client]
            self._n_waiters -= 1
        if q is not None:
            del self._waiters[name]
        return None

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Retransmit, expire leases, and (re)start preparing when due."""
        if self.state is GrantorState.IDLE:
            if self._view.leading and self._view.eligible and now >= self._prepare_at:
                self._prepare(now)
            return
        if self.state is GrantorState.PREPARING:
            if now >= self._prepare_at:
                self._send_prepares(now)
            self._check_quorum(now)
            return
        self._expire(now)
        self._resend(now)
