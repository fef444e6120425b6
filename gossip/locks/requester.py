"""The client role of the lock service: a node's requests to the leader, and its leases.

Each request is sent to the elected leader and sent again (under a new request number) every
``retry_interval`` until it is answered or its deadline passes; a "busy" answer puts the node in
the leader's queue for the name, and the leader says when it is its turn (:class:`Wake`).

**When a lease ends, on the holder's side.** The lease of a grant counts from when the node
*sent* the request that was granted (before the leader decided), and lasts
``ttl * (1 - d) / (1 + d)`` on the node's own monotonic clock, ``d`` being the drift rate the
election assumes (``LeaderConfig.max_clock_drift_rate``). In real time that is at most
``ttl / (1 + d)`` after the request left, which is before any leader, this one or the next,
could grant the lock to another node: the leader keeps the lease ``ttl`` on its clock (at
least ``ttl / (1 + d)`` real seconds) from a moment after the request arrived. A renewal
extends the lease the same way, from when the renewal was sent.

Requests for a name this node already holds, or is acquiring, wait here for the earlier one to
end: the leader sees one lease per (node, name).

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from ..errors import GossipError
from ..node import NodeID
from .base import Answered, Failed, Granted, LockConfig, LockView, Outbox, Renewed
from .messages import Acquire, FencingToken, Query, Release, Renew, Reply, Wake

__all__ = ["Requester", "TooManyRequests"]

_ACQUIRE, _RENEW, _QUERY, _RELEASE = "acquire", "renew", "query", "release"
_RELEASE_TRIES = 4


class TooManyRequests(GossipError):
    """This node has ``LockConfig.max_requests`` requests outstanding already."""


class _Kind(enum.Enum):
    ACQUIRE = _ACQUIRE
    RENEW = _RENEW
    QUERY = _QUERY
    RELEASE = _RELEASE


@dataclasses.dataclass(slots=True)
class _Op:
    kind: _Kind
    handle: int
    name: str
    ttl: float = 0.0
    deadline: float = math.inf
    next_try: float = -math.inf
    target: NodeID | None = None
    first_req: int = 0
    last_req: int = 0
    tries: int = 0
    token: FencingToken | None = None
    waiting: bool = False        # queued behind an earlier request of this node for the name


@dataclasses.dataclass(slots=True)
class _Held:
    name: str
    token: FencingToken
    expires: float
    req: int         # the last request of the acquire that was granted (a release names it)


class Requester:
    """A node's outstanding lock requests and the leases it holds.

    Args:
        me: the local node.
        config: the settings.
        drift: the clock drift rate the leases assume (``LeaderConfig.max_clock_drift_rate``).
        out: where messages, events and counters go.
    """

    def __init__(self, me: NodeID, config: LockConfig, drift: float, out: Outbox) -> None:
        self.me = me
        self._cfg = config
        self._shrink = (1 - drift) / (1 + drift)
        self._out = out
        self._next_handle = 0
        self._next_req = 0
        self._ops: dict[int, _Op] = {}            # by handle
        self._sent: dict[int, tuple[int, float, NodeID]] = {}   # req -> (handle, sent at, to whom)
        self._held: dict[int, _Held] = {}         # handle -> lease
        self._busy_names: dict[str, int] = {}     # name -> the handle that has it (or asks for it)
        self._view = LockView()

    # ------------------------------------------------------------------ queries

    def lease(self, handle: int) -> tuple[str, FencingToken, float] | None:
        """Return (name, token, local expiry) of a lease held, or None."""
        h = self._held.get(handle)
        return None if h is None else (h.name, h.token, h.expires)

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next at the latest."""
        soonest = math.inf
        for op in self._ops.values():
            if not op.waiting:
                soonest = min(soonest, op.deadline, op.next_try)
        for h in self._held.values():
            soonest = min(soonest, h.expires)
        return soonest

    # ------------------------------------------------------------------ commands

    def _new_op(self, kind: _Kind, name: str, **fields: object) -> _Op:
        if len(self._ops) >= self._cfg.max_requests:
            self._out.count("refused_too_many_requests")
            raise TooManyRequests(f"{len(self._ops)} lock requests are outstanding "
                                  f"(LockConfig.max_requests)")
        self._next_handle += 1
        op = _Op(kind, self._next_handle, name, **fields)  # type: ignore[arg-type]
        self._ops[op.handle] = op
        return op

    def acquire(self, now: float, name: str, ttl: float, timeout: float) -> int:
        """Start acquiring ``name`` for ``ttl`` seconds, giving up ``timeout`` seconds from now;
        return the request's handle (a :class:`Granted` or :class:`Failed` event follows).

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        op = self._new_op(_Kind.ACQUIRE, name, ttl=ttl, deadline=now + timeout)
        if name in self._busy_names:
            op.waiting = True          # after the earlier request or lease of this node
        else:
            self._busy_names[name] = op.handle
            self._attempt(now, op)
        return op.handle

    def renew(self, now: float, handle: int, ttl: float) -> bool:
        """Ask to extend the lease of ``handle`` to ``ttl`` seconds from now; return False if the
        lease is not held (a :class:`Renewed` or :class:`Failed` event follows otherwise).

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        held = self._held.get(handle)
        if held is None or held.expires <= now:
            return False
        for op in self._ops.values():
            if op.kind is _Kind.RENEW and op.handle == handle:
                op.ttl = ttl                          # already renewing: the latest ttl wins
                return True
        op = _Op(_Kind.RENEW, handle, held.name, ttl=ttl, deadline=held.expires, token=held.token)
        if len(self._ops) >= self._cfg.max_requests:
            self._out.count("refused_too_many_requests")
            raise TooManyRequests("too many lock requests outstanding (LockConfig.max_requests)")
        self._ops[-handle] = op                        # renewals are keyed apart from acquires
        self._attempt(now, op)
        return True

    def release(self, now: float, handle: int) -> None:
        """Give up the lease (or the acquire in progress) of ``handle``: at once here, and at the
        leader as soon as it hears of it. Idempotent."""
        held = self._held.pop(handle, None)
        if self._ops.pop(-handle, None) is not None:
            self._forget_reqs(-handle)
        op = self._ops.get(handle)
        if held is not None:
            self._free_name(now, held.name, handle)
            self._start_release(now, held.name, held.token, 0, held.req)
        elif op is not None and op.kind is _Kind.ACQUIRE:
            self._abandon(now, op)

    def query(self, now: float, name: str, timeout: float) -> int:
        """Ask the leader who holds ``name``; return the handle (an :class:`Answered` or
        :class:`Failed` event follows).

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        op = self._new_op(_Kind.QUERY, name, deadline=now + timeout)
        self._attempt(now, op)
        return op.handle

    # ------------------------------------------------------------------ internals

    def _start_release(self, now: float, name: str, token: FencingToken | None, first: int, last: int) -> None:
        self._next_handle += 1
        op = _Op(_Kind.RELEASE, self._next_handle, name, token=token, first_req=first, last_req=last,
                 deadline=now + _RELEASE_TRIES * self._cfg.retry_interval)
        self._ops[op.handle] = op
        self._attempt(now, op)

    def _abandon(self, now: float, op: _Op) -> None:
        """An acquire given up on: tell the leader to free whatever it granted to it."""
        del self._ops[op.handle]
        self._forget_reqs(op.handle)
        if not op.waiting:
            self._free_name(now, op.name, op.handle)
            if op.first_req:
                self._start_release(now, op.name, None, op.first_req, op.last_req)

    def _free_name(self, now: float, name: str, handle: int) -> None:
        if self._busy_names.get(name) != handle:
            return
        del self._busy_names[name]
        nxt = min((o for o in self._ops.values() if o.waiting and o.name == name and o.kind is _Kind.ACQUIRE),
                  key=lambda o: o.handle, default=None)
        if nxt is not None:
            nxt.waiting = False
            self._busy_names[name] = nxt.handle
            self._attempt(now, nxt)

    def _forget_reqs(self, handle: int) -> None:
        for req in [r for r, (h, _, _) in self._sent.items() if h == handle]:
            del self._sent[req]

    def _attempt(self, now: float, op: _Op) -> None:
        """Send the request (again) to the leader, under a new request number."""
        target = op.target or self._view.leader
        op.next_try = now + self._cfg.retry_interval
        op.target = None
        if target is None:
            self._out.count("requests_without_leader")
            return
        self._next_req += 1
        req = self._next_req
        key = op.handle if op.kind is not _Kind.RENEW else -op.handle
        self._sent[req] = (key, now, target)
        if op.kind is _Kind.ACQUIRE:
            op.first_req = op.first_req or req
            op.last_req = req
        op.tries += 1
        if op.kind is _Kind.ACQUIRE:
            msg: Acquire | Renew | Release | Query = Acquire(req, op.name, op.ttl, op.first_req)
        elif op.kind is _Kind.RENEW:
            assert op.token is not None
            msg = Renew(req, op.name, op.token, op.ttl)
        elif op.kind is _Kind.QUERY:
            msg = Query(req, op.name)
        else:
            msg = Release(req, op.name, op.token, op.first_req, op.last_req)
        self._out.send((target,), msg)

    def _finish(self, key: int) -> None:
        op = self._ops.pop(key, None)
        if op is not None:
            self._forget_reqs(key)

    # ------------------------------------------------------------------ inputs

    def update(self, now: float, view: LockView) -> None:
        """Follow the election: a new leader is asked at once."""
        old = self._view.leader
        self._view = view
        if view.leader is not None and view.leader != old:
            for op in list(self._ops.values()):
                if not op.waiting:
                    self._attempt(now, op)

    def on_reply(self, now: float, sender: NodeID, msg: Reply) -> None:
        """Handle the leader's answer to one of this node's requests."""
        found = self._sent.get(msg.req)
        if found is None:
            if msg.status == "granted" and msg.token is not None:
                self._out.count("late_grants")   # for a request given up on: the abandon frees it
            return
        key, sent_at, target = found
        if sender != target:
            self._out.count("replies_from_elsewhere")   # only the node asked may answer
            return
        op = self._ops.get(key)
        if op is None:
            del self._sent[msg.req]
            return
        status = msg.status
        if op.kind is _Kind.ACQUIRE and status == "granted" and msg.token is not None:
            expires = sent_at + msg.ttl * self._shrink
            if expires <= now:
                # Answered too late to be of use: ask again (the leader extends the same lease
                # from the new request; a release here could overtake that request).
                self._out.count("grants_too_late")
                self._attempt(now, op)
                return
            self._finish(key)
            self._held[op.handle] = _Held(op.name, msg.token, expires, op.last_req)
            self._out.emit(Granted(op.handle, op.name, msg.token, expires))
        elif op.kind is _Kind.RENEW and status == "renewed":
            held = self._held.get(op.handle)
            self._finish(key)
            if held is not None:
                held.expires = max(held.expires, sent_at + msg.ttl * self._shrink)
                self._out.emit(Renewed(op.handle, held.expires))
        elif op.kind is _Kind.RENEW and status == "lost":
            self._finish(key)
            self._lose(now, op.handle, "lost")
        elif op.kind is _Kind.QUERY and status == "holder":
            self._finish(key)
            self._out.emit(Answered(op.handle, msg.holder, msg.token, msg.ttl))
        elif op.kind is _Kind.RELEASE and status == "released":
            self._finish(key)
        elif status == "refused":
            self._finish(key)
            if op.kind is _Kind.ACQUIRE:
                self._free_name(now, op.name, op.handle)
            self._out.emit(Failed(op.handle, f"refused: {msg.reason}"))
        elif status == "not_leader":
            op.target = msg.leader
            op.next_try = now + (0.0 if msg.leader is not None else self._cfg.retry_interval)
        elif status == "busy":
            wait = min(max(msg.retry, self._cfg.retry_interval), 4 * self._cfg.retry_interval)
            op.next_try = now + wait
        elif status == "retry":
            op.next_try = now + max(msg.retry, self._cfg.retry_interval)

    def on_wake(self, now: float, sender: NodeID, msg: Wake) -> None:
        """The leader says a name this node waits for is free: ask again now."""
        for op in list(self._ops.values()):
            if op.kind is _Kind.ACQUIRE and op.name == msg.name and not op.waiting:
                self._attempt(now, op)

    def _lose(self, now: float, handle: int, reason: str) -> None:
        held = self._held.pop(handle, None)
        renewing = self._ops.pop(-handle, None)
        if renewing is not None:
            self._forget_reqs(-handle)
        if held is not None:
            self._free_name(now, held.name, handle)
            self._out.emit(Failed(handle, reason))

    def tick(self, now: float) -> None:
        """Expire leases, time out requests, and send again what is due."""
        for handle, held in list(self._held.items()):
            if held.expires <= now:
                self._out.count("leases_expired_locally")
                self._lose(now, handle, "expired")
        for key, op in list(self._ops.items()):
            if key not in self._ops or op.waiting:
                continue
            if now >= op.deadline:
                if op.kind is _Kind.ACQUIRE:
                    self._out.count("acquire_timeouts")
                    self._abandon(now, op)
                    self._out.emit(Failed(op.handle, "timeout"))
                elif op.kind is _Kind.RENEW:
                    self._finish(key)
                    self._lose(now, op.handle, "expired")
                else:
                    self._finish(key)
                    if op.kind is _Kind.QUERY:
                        self._out.emit(Failed(op.handle, "timeout"))
            elif now >= op.next_try:
                self._attempt(now, op)
        # waiting acquires time out too
        for key, op in list(self._ops.items()):
            if op.waiting and now >= op.deadline:
                del self._ops[key]
                self._out.count("acquire_timeouts")
                self._out.emit(Failed(op.handle, "timeout"))
