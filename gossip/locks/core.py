"""One node's lock service as a pure state machine: :class:`LockCore`.

It holds the node's three roles (:class:`~gossip.locks.requester.Requester`, the client;
:class:`~gossip.locks.grantor.Replica`, if the node is eligible; and
:class:`~gossip.locks.grantor.Grantor`, which acts while the node leads) and routes each
input to the role it is for. Its host feeds it:

* ``update_view(now, view)`` whenever the election or the membership changes, and at least
  every ``retry_interval`` with ``tick(now)``, and at :meth:`LockCore.next_deadline`;
* ``receive(now, sender, message)`` for every lock message from another node (the host has
  authenticated the sender: the message's client is the packet's sender);
* the application's commands: :meth:`~LockCore.acquire`, :meth:`~LockCore.renew`,
  :meth:`~LockCore.release`, :meth:`~LockCore.query`.

and carries out :meth:`LockCore.actions_to_perform`: :class:`~gossip.locks.base.Send` (one
best-effort datagram to each destination; the core retransmits) and the events
(:class:`~gossip.locks.base.Granted`, ``Renewed``, ``Failed``, ``Answered``, ``GrantIssued``).
Messages a node sends itself (its own requests while it leads, its own replica) never leave
the core. The threaded host is :class:`gossip.locks.LockService`; the simulator
(``python -m gossip.sim --scenario locks``) runs the same core beside each simulated node.

This module imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

from ..node import NodeID
from .base import Action, LockConfig, LockView, Outbox
from .grantor import Grantor, Replica
from .messages import (
    Accept, Accepted, Acquire, FencingToken, Message, Prepare, Promise, Query, Reject, Release, Renew, Reply, Wake,
)
from .requester import Requester

__all__ = ["LockCore"]

_MAX_LOOPBACK = 10000


class LockCore:
    """One node's lock service: client, replica and (while leading) grantor.

    Args:
        node_id: the local node.
        config: the settings.
        drift: the clock drift rate leases assume (``LeaderConfig.max_clock_drift_rate``).
        now: the host's current time (monotonic seconds).
    """

    def __init__(self, node_id: NodeID, config: LockConfig, drift: float, now: float) -> None:
        self.id = node_id
        self.config = config
        self._out = Outbox(node_id)
        self.replica = Replica(config, self._out)
        self.grantor = Grantor(node_id, config, self.replica, self._out)
        self.requester = Requester(node_id, config, drift, self._out)
        self._view = LockView()
        self._now = now
        self._next_tick = now

    # ------------------------------------------------------------------ queries

    @property
    def stats(self) -> dict[str, int]:
        """The core's counters (grants, recoveries, refusals by reason...)."""
        return self._out.stats

    @property
    def view(self) -> LockView:
        """The view of the cluster last given."""
        return self._view

    def lease(self, handle: int) -> tuple[str, FencingToken, float] | None:
        """Return (name, token, local expiry) of a lease this node holds, or None."""
        return self.requester.lease(handle)

    def next_deadline(self) -> float:
        """When the host must call :meth:`tick` at the latest."""
        return min(self._next_tick, self.requester.next_deadline(), self.grantor.next_deadline())

    def actions_to_perform(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        actions, self._out.actions = self._out.actions, []
        return actions

    # ------------------------------------------------------------------ inputs

    def update_view(self, now: float, view: LockView) -> None:
        """Take a new view of the election and the membership."""
        self._view = view
        self.grantor.update(now, view)
        self.requester.update(now, view)
        self._loop(now)

    def tick(self, now: float) -> None:
        """Do what is due: retransmissions, timeouts, lease expiries, recovery."""
        self._next_tick = now + self.config.retry_interval
        self.grantor.tick(now)
        self.requester.tick(now)
        self._loop(now)

    def receive(self, now: float, sender: NodeID, msg: Message) -> None:
        """Handle a message from ``sender`` (authenticated by the host)."""
        self._dispatch(now, sender, msg)
        self._loop(now)

    def acquire(self, now: float, name: str, ttl: float, timeout: float) -> int:
        """Start acquiring ``name``; return the request's handle.

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        handle = self.requester.acquire(now, name, ttl, timeout)
        self._loop(now)
        return handle

    def renew(self, now: float, handle: int, ttl: float) -> bool:
        """Start renewing the lease ``handle``; False if it is not held.

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        ok = self.requester.renew(now, handle, ttl)
        self._loop(now)
        return ok

    def release(self, now: float, handle: int) -> None:
        """Release the lease (or cancel the acquire) ``handle``."""
        self.requester.release(now, handle)
        self._loop(now)

    def query(self, now: float, name: str, timeout: float) -> int:
        """Ask who holds ``name``; return the request's handle.

        Raises:
            TooManyRequests: ``max_requests`` are outstanding.
        """
        handle = self.requester.query(now, name, timeout)
        self._loop(now)
        return handle

    # ------------------------------------------------------------------ routing

    def _dispatch(self, now: float, sender: NodeID, msg: Message) -> None:
        if isinstance(msg, (Acquire, Renew, Release, Query)):
            self.grantor.on_request(now, sender, msg)
        elif isinstance(msg, Reply):
            self.requester.on_reply(now, sender, msg)
        elif isinstance(msg, Wake):
            self.requester.on_wake(now, sender, msg)
        elif isinstance(msg, (Prepare, Accept)):
            if not self._view.eligible or (sender != self.id and sender not in self._view.replicas):
                # only eligible members keep the table, and only they may write to it
                self._out.count("replica_messages_not_eligible")
                return
            answer = self.replica.on_prepare(msg) if isinstance(msg, Prepare) else self.replica.on_accept(msg)
            self._out.send((sender,), answer)
        elif isinstance(msg, Promise):
            self.grantor.on_promise(now, sender, msg)
        elif isinstance(msg, Accepted):
            self.grantor.on_accepted(now, sender, msg)
        elif isinstance(msg, Reject):
            self.grantor.on_reject(now, sender, msg)

    def _loop(self, now: float) -> None:
        """Handle the messages this node sent itself, until there are none left."""
        out = self._out
        n = 0
        while out.loopback:
            batch, out.loopback = out.loopback, []
            for msg in batch:
                self._dispatch(now, self.id, msg)
            n += len(batch)
            if n > _MAX_LOOPBACK:  # pragma: no cover - a bug, not an input
                out.loopback.clear()
                out.count("loopback_overflow")

    def __repr__(self) -> str:
        role = self.grantor.state.value
        return f"<LockCore {self.id.short}: grantor {role}>"
