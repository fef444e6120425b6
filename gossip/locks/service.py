"""The threaded host of the lock service: :class:`LockService` and the :class:`Lease` it grants.

It owns one thread, ``gossip-<node>-locks``, which ticks the :class:`~gossip.locks.core.LockCore`
every ``retry_interval`` (and at its deadlines, and soon after the election or the membership
changes), and carries out what the core asks. Lock messages arrive on the cluster's incoming
workers through a handler of type ``LockConfig.msg_type`` and are handed to the core under the
service's lock; sends happen after the lock is released. A caller of :meth:`LockService.acquire`
waits on a condition for the core's answer, never on the network.

Authentication: on a cluster with an encryption key that seals what it sends, lock messages are
accepted only from sealed packets, and the client of a request is always the packet's sender.
Without a key, any host that can reach a node can forge grants, releases and replica answers:
the service is then not safe, and says so in a warning when it starts.

This module uses only the public :class:`gossip.Cluster` API and the public API of
:class:`gossip.leader.LeaderElection`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ClusterClosed, ConfigError, GossipError, GossipTimeout
from ..groups import Criteria
from ..leader import BECAME_LEADER, ELECTED, LOST, STEPPED_DOWN, LeaderConfig, LeaderElection, LeaderEvent
from ..node import Node, NodeID, NodeState
from .base import Action, Answered, Failed, Granted, LockConfig, LockView, Renewed, Send
from .core import LockCore
from .messages import MAX_NAME_LENGTH, FencingToken, decode_message, encode_message

if TYPE_CHECKING:
    from ..cluster import Cluster
    from ..groups import NodeGroup
    from ..handlers import HandlerID
    from ..packet import Packet

__all__ = ["LockService", "Lease", "LockHolder", "LockLost", "LockRefused"]

logger = logging.getLogger("gossip.locks")

_REPLICA_STATES = (NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD)


class LockLost(GossipError):
    """The lease is over: it expired (not renewed in time), was released, or the leader no
    longer knows it. Stop the work it protected."""


class LockRefused(GossipError, ValueError):
    """The leader refused the request (a ttl out of range, a full lock table)."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as its leader sees it.

    Attributes:
        node_id: the holder.
        token: the fencing token of its lease.
        remaining: seconds left on the lease, on the leader's clock (the holder's own view ends
            sooner).
    """

    node_id: NodeID
    token: FencingToken
    remaining: float


class _Waiter:
    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result: Action | None = None


class Lease:
    """A lock held: its :attr:`token`, until :meth:`expires_at` on this node's monotonic clock.

    Use it as a context manager (released on exit), or call :meth:`release`. Renew it before it
    runs out with :meth:`renew`; check :meth:`valid` before each step of the work it protects,
    and pass :attr:`token` to every write, so that storage can refuse a holder whose lease
    ended (see :class:`gossip.locks.FencingToken`).
    """

    def __init__(self, service: LockService, handle: int, name: str, token: FencingToken, ttl: float,
                 expires: float) -> None:
        self._service = service
        self._handle = handle
        self.name = name
        """The lock's name."""
        self.token = token
        """The fencing token: greater than every earlier grant's of this lock."""
        self.ttl = ttl
        """The lease's length in seconds (as last granted or renewed)."""
        self._expires = expires
        self._ended = ""

    def expires_at(self) -> float:
        """Return when the lease ends, in :func:`time.monotonic` seconds (it may be renewed)."""
        return self._expires

    def remaining(self) -> float:
        """Return the seconds left (0 once over)."""
        return 0.0 if self._ended else max(0.0, self._expires - time.monotonic())

    def valid(self) -> bool:
        """Return True while the lease holds (not released, lost or expired)."""
        return not self._ended and time.monotonic() < self._expires

    def renew(self, ttl: float | None = None, timeout: float | None = None) -> None:
        """Extend the lease to ``ttl`` seconds (default: as granted) from now.

        Waits for the leader's answer, at most until the lease would end (or ``timeout``).

        Raises:
            LockLost: the lease is over, or ended before the renewal was confirmed.
            GossipTimeout: no answer within ``timeout`` (the lease holds until it ends).
            ClusterClosed: the service is closed.
        """
        self._service._renew(self, ttl, timeout)

    def release(self) -> None:
        """Give the lock up now (idempotent; never raises). The leader hears of it at once."""
        if not self._ended:
            self._ended = "released"
            self._service._release(self._handle)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = self._ended or f"{self.remaining():.1f}s left"
        return f"<Lease {self.name!r} token {self.token}: {state}>"


class LockService:
    """Distributed locks with fencing tokens, granted by the elected leader of the cluster.

    Every node that takes part runs a service; nodes matching ``group``'s criteria (all nodes
    by default) keep copies of the lock table and stand for leader. A grant is made by the
    leader, stored by a quorum, then answered; a new leader recovers the table from a quorum
    and waits out every lease it cannot confirm (see :mod:`gossip.locks.grantor`).

    Args:
        cluster: the cluster (started before or after).
        group: the nodes that keep the table and may lead (its criteria); None: all nodes. Its
            criteria are metadata only: the election that picks the leader matches metadata.
        config: the lock service's settings.
        election: the leader election to follow (started by its owner, with the same criteria);
            None: the service runs its own, of type ``config.election_msg_type``, with
            ``leader_config`` (the group's criteria are applied).
        leader_config: the settings of the service's own election.

    Safe only on an encrypted cluster (see the module documentation).

    Raises:
        HandlerExistsError: ``config.msg_type`` (or the election's type) already has a handler.
        ConfigError: ``leader_config`` is invalid, or ``group`` selects by tag (the leader
            election matches metadata only: select the lock nodes by a metadata key).
    """

    def __init__(self, cluster: Cluster, group: NodeGroup | None = None, config: LockConfig | None = None,
                 election: LeaderElection | None = None, leader_config: LeaderConfig | None = None) -> None:
        self._cluster = cluster
        self.config = config if config is not None else LockConfig()
        self._owned = election is None
        if group is not None and group.criteria.tags:
            raise ConfigError("group", "a lock service's group selects by metadata only (the leader "
                                       f"election matches metadata), not by tags {sorted(group.criteria.tags)}")
        if election is None:
            lc = leader_config if leader_config is not None else LeaderConfig(
                heartbeat_msg_type=self.config.election_msg_type)
            if group is not None:
                lc = dataclasses.replace(lc, metadata_criteria=group.criteria.as_dict())
            election = LeaderElection(cluster, lc)
        self._election = election
        self._criteria: Criteria | None = group.criteria if group is not None else election.config.criteria()
        self._me = cluster.local_node().id
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._core = LockCore(self._me, self.config, election.config.max_clock_drift_rate, time.monotonic())
        self._waiters: dict[int, _Waiter] = {}
        self._leases: dict[int, Lease] = {}
        self._stats: dict[str, int] = {}
        self._dirty = True
        self._closed = False
        self._authenticate = self._check_security()
        cluster.handle_func_no_forward(self.config.msg_type, self._on_message)
        self._state_hid: HandlerID = cluster.handle_node_state_change_func(lambda node, prev: self._poke())
        self._meta_hid: HandlerID = cluster.handle_node_metadata_change_func(lambda node: self._poke())
        self._leader_hids = [election.handle_event_func(ev, self._on_leader_event)
                             for ev in (ELECTED, LOST, BECAME_LEADER, STEPPED_DOWN)]
        try:
            if self._owned:
                election.start()
        except BaseException:
            self._unregister()
            raise
        self._thread = threading.Thread(target=self._run, name=f"gossip-{self._me.short}-locks", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 5.0) -> None:
        """Release every lease this node holds, stop the thread, unregister, and stop the
        service's own election (a leader hands over at once). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = time.monotonic()
            for handle, lease in list(self._leases.items()):
                lease._ended = lease._ended or "closed"
                self._core.release(now, handle)
            self._leases.clear()
            actions = self._take()
            self._cond.notify_all()
        self._perform(actions)
        self._thread.join(timeout)
        self._unregister()
        if self._owned:
            self._election.stop(timeout)

    def _unregister(self) -> None:
        c = self._cluster
        c.unregister_message_type(self.config.msg_type)
        c.remove_node_state_change_handler(self._state_hid)
        c.remove_node_metadata_change_handler(self._meta_hid)
        for hid in self._leader_hids:
            self._election.remove_event_handler(hid)

    def __enter__(self) -> LockService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LockService {self._me.short}: {self._core.grantor.state.value}>"

    def _check_security(self) -> bool:
        if self._cluster.keyring is None or not self._cluster.config.encrypt_outgoing:
            logger.warning(
                "lock service on a cluster that does not seal its packets is not safe: any host that "
                "can send a packet to a node can forge grants and releases (set Config.encryption_key)")
            return False
        return True

    @property
    def election(self) -> LeaderElection:
        """The leader election the service follows."""
        return self._election

    @property
    def authenticated(self) -> bool:
        """True if lock messages are accepted only from sealed packets (an encrypted cluster)."""
        return self._authenticate

    def stats(self) -> dict[str, int]:
        """Return the service's counters: grants, recoveries, leases waited out, refusals by
        reason (``refused_*``), messages refused (``messages_*``)..."""
        with self._lock:
            out = dict(self._stats)
            out.update(self._core.stats)
        return out

    # ------------------------------------------------------------------ the API

    def acquire(self, name: str, ttl: float = 10.0, timeout: float | None = None) -> Lease:
        """Wait for the lock ``name`` and return its :class:`Lease` of ``ttl`` seconds.

        Args:
            name: the lock (1..256 characters).
            ttl: the lease's length; renew it (:meth:`Lease.renew`) to hold it longer.
            timeout: the longest wait in seconds (None: until granted or the service closes).

        Raises:
            GossipTimeout: not granted within ``timeout``.
            LockRefused: the leader refused (``ttl`` outside ``[min_ttl, max_ttl]``, a full table).
            ValueError: ``name`` or ``ttl`` is malformed.
            ClusterClosed: the service is closed.
        """
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"a lock name is a string of 1..{MAX_NAME_LENGTH} characters, got {name!r:.60}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        limit = math.inf if timeout is None else max(0.0, float(timeout))
        result, handle = self._call(lambda core, now: core.acquire(now, name, float(ttl), limit), limit)
        if isinstance(result, Granted):
            lease = Lease(self, handle, name, result.token, float(ttl), result.expires)
            with self._lock:
                if self._closed:
                    lease._ended = "closed"
                    self._core.release(time.monotonic(), handle)
                else:
                    self._leases[handle] = lease
            return lease
        if isinstance(result, Failed) and result.reason.startswith("refused"):
            raise LockRefused(f"lock {name!r}: {result.reason}")
        raise GossipTimeout(f"lock {name!r} not acquired within {timeout}s")

    def holder(self, name: str, timeout: float = 5.0) -> LockHolder | None:
        """Ask the leader who holds ``name``; None if nobody does.

        Raises:
            GossipTimeout: no answer within ``timeout`` (no leader, or it cannot be reached).
            ClusterClosed: the service is closed.
        """
        result, _ = self._call(lambda core, now: core.query(now, name, timeout), timeout)
        if isinstance(result, Answered):
            if result.holder is None or result.token is None:
                return None
            return LockHolder(result.holder, result.token, result.remaining)
        raise GossipTimeout(f"no answer from the lock leader about {name!r} within {timeout}s")

    # ------------------------------------------------------------------ internals

    def _call(self, start: Any, limit: float) -> tuple[Action | None, int]:
        """Start a request on the core and wait for its outcome (None: timed out here)."""
        deadline = time.monotonic() + limit
        with self._lock:
            if self._closed:
                raise ClusterClosed("the lock service is closed")
            handle = start(self._core, time.monotonic())
            waiter = self._waiters[handle] = _Waiter()
            actions = self._take()
        self._perform(actions)
        actions = []
        with self._lock:
            try:
                while waiter.result is None and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 3600.0))
                closed = self._closed
                if waiter.result is None and not closed:
                    self._core.release(time.monotonic(), handle)       # give up at the leader too
                    actions = self._take()
            finally:
                self._waiters.pop(handle, None)
        self._perform(actions)
        if waiter.result is None and closed:
            raise ClusterClosed("the lock service was closed while waiting")
        return waiter.result, handle

    def _renew(self, lease: Lease, ttl: float | None, timeout: float | None) -> None:
        if lease._ended:
            raise LockLost(f"lock {lease.name!r}: the lease is {lease._ended}")
        length = float(lease.ttl if ttl is None else ttl)
        with self._lock:
            if self._closed:
                raise ClusterClosed("the lock service is closed")
            now = time.monotonic()
            held = self._core.lease(lease._handle)
            if held is None or held[2] <= now:
                lease._ended = lease._ended or "expired"
                raise LockLost(f"lock {lease.name!r}: the lease expired")
            self._core.renew(now, lease._handle, length)       # (may raise TooManyRequests)
            waiter = self._waiters[-lease._handle] = _Waiter()
            actions = self._take()
        self._perform(actions)
        end = held[2] if timeout is None else min(held[2], time.monotonic() + timeout)
        with self._lock:
            try:
                while waiter.result is None and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._waiters.pop(-lease._handle, None)
        result = waiter.result
        if isinstance(result, Renewed):
            lease._expires = result.expires
            lease.ttl = length
            return
        if isinstance(result, Failed) or time.monotonic() >= held[2]:
            lease._ended = lease._ended or "lost"
            raise LockLost(f"lock {lease.name!r}: the lease is over ({getattr(result, 'reason', 'expired')})")
        if self._closed:
            raise ClusterClosed("the lock service was closed while renewing")
        raise GossipTimeout(f"lock {lease.name!r}: no answer to the renewal within {timeout}s")

    def _release(self, handle: int) -> None:
        with self._lock:
            self._leases.pop(handle, None)
            if self._closed:
                return
            self._core.release(time.monotonic(), handle)
            actions = self._take()
        self._perform(actions)

    # ------------------------------------------------------------------ driving the core

    def _view(self) -> LockView:
        """The election's and the membership's state, as the core wants it (O(members))."""
        e = self._election
        crit = self._criteria
        replicas = []
        eligible = True
        for n in self._cluster.nodes():
            if n.id == self._me:
                eligible = crit is None or crit.matches(n.metadata)
            elif n.state in _REPLICA_STATES and (crit is None or crit.matches(n.metadata)):
                replicas.append(n.id)
        return LockView(leader=e.leader_id(), leading=e.is_leader(), term=e.term, replicas=frozenset(replicas),
                        need=e.quorum_size(), eligible=eligible)

    def _take(self) -> list[Send]:
        """Drain the core: settle waiters and leases with its events; return the sends."""
        assert self._lock.locked()
        sends: list[Send] = []
        wake = False
        for a in self._core.actions_to_perform():
            if isinstance(a, Send):
                sends.append(a)
                continue
            if isinstance(a, (Granted, Answered)):
                w = self._waiters.get(a.handle)
            elif isinstance(a, Renewed):
                w = self._waiters.get(-a.handle)
                lease = self._leases.get(a.handle)
                if lease is not None:
                    lease._expires = max(lease._expires, a.expires)
            elif isinstance(a, Failed):
                w = self._waiters.get(a.handle) or self._waiters.get(-a.handle)
                lease = self._leases.pop(a.handle, None)
                if lease is not None:
                    lease._ended = lease._ended or a.reason
                    self._count("leases_lost")
            else:
                continue                                     # GrantIssued: counted by the core
            if w is not None:
                w.result = a
                wake = True
        if wake:
            self._cond.notify_all()
        return sends

    def _perform(self, actions: list[Send]) -> None:
        """Send what the core asked for (no lock held: this is I/O)."""
        mt = self.config.msg_type
        for a in actions:
            nodes = [n for n in (self._cluster.get_node(i) for i in a.to) if n is not None]
            if not nodes:
                continue
            try:
                self._cluster.send_to_peers(nodes, mt, encode_message(a.msg))
            except GossipError as exc:
                with self._lock:
                    self._count("send_errors")
                logger.debug("! lock message not sent: %s", exc)

    def _step(self, fn: Any) -> None:
        with self._lock:
            if self._closed:
                return
            fn(self._core, time.monotonic())
            sends = self._take()
        self._perform(sends)

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + n

    def _on_message(self, sender: Node, packet: Packet) -> None:
        if sender.state is NodeState.UNKNOWN:
            with self._lock:
                self._count("messages_from_unknown")
            return
        if self._authenticate and not packet.encrypted:
            with self._lock:
                self._count("messages_unauthenticated")
            logger.debug("! plain lock message from %s refused: this cluster seals them", sender.id.short)
            return
        try:
            msg = decode_message(packet.unmarshal())
        except (GossipError, ValueError) as exc:
            with self._lock:
                self._count("messages_malformed")
            logger.debug("! malformed lock message from %s: %s", sender.id.short, exc)
            return
        self._step(lambda core, now: core.receive(now, sender.id, msg))

    def _on_leader_event(self, event: LeaderEvent, node_id: NodeID) -> None:
        self._poke()

    def _poke(self) -> None:
        """The election or the membership changed: have the thread look again soon."""
        with self._lock:
            self._dirty = True
            self._cond.notify_all()

    def _run(self) -> None:
        interval = self.config.retry_interval
        next_view = 0.0
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    due = min(self._core.next_deadline(), next_view)
                    if self._dirty or now >= due:
                        break
                    self._cond.wait(min(due - now, interval))
                if self._closed:
                    return
                self._dirty = False
            try:
                view = self._view()          # reads the cluster: outside the lock
                next_view = time.monotonic() + interval
                with self._lock:
                    if self._closed:
                        return
                    now = time.monotonic()
                    if view != self._core.view:
                        self._core.update_view(now, view)
                    self._core.tick(now)
                    sends = self._take()
                self._perform(sends)
            except Exception:
                logger.exception("bug: lock service tick failed")
