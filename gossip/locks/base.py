"""The lock service's settings, the view of the cluster its core is given, and what the core
asks its host to do (send messages) or tells it (events).

Pure data; imports no threads, sockets, clocks or random numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Union

from ..errors import ConfigError
from ..node import NodeID
from ..wire import MAX_MSG_TYPE, RESERVED_MSGS_START
from .messages import MAX_TTL, FencingToken, Message

__all__ = [
    "LockConfig",
    "LockView",
    "Send",
    "Granted",
    "Renewed",
    "Failed",
    "Answered",
    "GrantIssued",
    "Action",
    "Outbox",
]


@dataclasses.dataclass(frozen=True)
class LockConfig:
    """Settings of a lock service (float seconds; every bound has a safe default).

    Attributes:
        msg_type: the message type of the lock protocol (64..65535; 67 by default, in the
            range reserved for add-on packages).
        election_msg_type: the heartbeat type of the election a :class:`~gossip.locks.LockService`
            starts for itself when it is given none (66 by default).
        retry_interval: how often a client asks again (no answer, or the leader not ready) and
            the leader resends what a replica has not acknowledged.
        write_timeout: how long the leader tries to replicate one write to a quorum before it
            gives up on it (the client asks again).
        min_ttl: the shortest lease a client may ask for.
        max_ttl: the longest lease a client may ask for (a new leader may have to wait this
            long before it grants a lock whose holder it cannot reach).
        max_locks: the most lock names a replica holds records of, and the most leases the
            leader holds (refusals are counted as ``refused_table_full``).
        max_waiters: the most clients the leader remembers as waiting, over every name (beyond
            it, a client is told "busy" without a place in the queue).
        max_requests: the most requests a node has outstanding at once (``acquire``,
            ``renew``, ``holder``; beyond it, calls raise).

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """

    msg_type: int = RESERVED_MSGS_START + 3
    election_msg_type: int = RESERVED_MSGS_START + 2
    retry_interval: float = 0.25
    write_timeout: float = 2.0
    min_ttl: float = 0.05
    max_ttl: float = 300.0
    max_locks: int = 10000
    max_waiters: int = 4096
    max_requests: int = 1024

    def __post_init__(self) -> None:
        for name in ("msg_type", "election_msg_type"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not RESERVED_MSGS_START <= v <= MAX_MSG_TYPE:
                raise ConfigError(name, f"must be an int in {RESERVED_MSGS_START}..{MAX_MSG_TYPE}, got {v!r}")
        if self.msg_type == self.election_msg_type:
            raise ConfigError("election_msg_type", f"must differ from msg_type ({self.msg_type})")
        for name, low, high in (("retry_interval", 0.001, 60.0), ("write_timeout", 0.001, 600.0),
                                ("min_ttl", 0.001, MAX_TTL), ("max_ttl", 0.001, MAX_TTL)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
                raise ConfigError(name, f"must be a number of seconds in [{low:g}, {high:g}], got {v!r}")
        if self.max_ttl < self.min_ttl:
            raise ConfigError("max_ttl", f"must be >= min_ttl ({self.min_ttl!r}), got {self.max_ttl!r}")
        for name, high in (("max_locks", 1 << 20), ("max_waiters", 1 << 20), ("max_requests", 1 << 20)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise ConfigError(name, f"must be an int in 1..{high}, got {v!r}")


@dataclasses.dataclass(frozen=True)
class LockView:
    """What the core needs to know of the cluster and of the election, as of now.

    Attributes:
        leader: the elected leader (None when there is none).
        leading: this node holds the election's lease now.
        term: the election term this node has seen.
        replicas: the other members that keep records (eligible, not left), in any state the
            membership shows (alive, suspect, dead: messages to them are cheap, and after a heal
            they answer before the views merge).
        need: how many replicas, this node included, make a quorum (the election's quorum).
        eligible: this node keeps records (it matches the election's criteria).
    """

    leader: NodeID | None = None
    leading: bool = False
    term: int = 0
    replicas: frozenset[NodeID] = frozenset()
    need: int = 0
    eligible: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to each of ``to`` (best effort; the core retries what matters)."""

    to: tuple[NodeID, ...]
    msg: Message


@dataclasses.dataclass(frozen=True, slots=True)
class Granted:
    """The local request ``handle`` holds the lock ``name`` until ``expires`` (local clock)."""

    handle: int
    name: str
    token: FencingToken
    expires: float


@dataclasses.dataclass(frozen=True, slots=True)
class Renewed:
    """The lease of ``handle`` now lasts until ``expires`` (local clock)."""

    handle: int
    expires: float


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The request ``handle`` failed: ``timeout``, ``lost`` (the lease is over), ``expired``
    (a renewal came too late) or ``refused: <why>``."""

    handle: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Answered:
    """The answer to the holder query ``handle``: ``holder`` (None: free), its ``token`` and
    the seconds ``remaining`` on the leader's clock."""

    handle: int
    holder: NodeID | None
    token: FencingToken | None
    remaining: float


@dataclasses.dataclass(frozen=True, slots=True)
class GrantIssued:
    """This node, as leader, granted ``name`` to ``holder`` with ``token``: it decided so at
    ``decided`` (its clock), and the write has now reached a quorum. For monitoring and the
    simulator."""

    name: str
    token: FencingToken
    holder: NodeID
    decided: float


Action = Union[Send, Granted, Renewed, Failed, Answered, GrantIssued]
"""What :meth:`gossip.locks.core.LockCore.actions_to_perform` returns."""


class Outbox:
    """Where the parts of the core put what they produce, and their counters."""

    __slots__ = ("me", "actions", "stats", "loopback")

    def __init__(self, me: NodeID) -> None:
        self.me = me
        self.actions: list[Action] = []
        self.stats: dict[str, int] = {}
        self.loopback: list[Message] = []

    def send(self, to: Iterable[NodeID], msg: Message) -> None:
        """Send ``msg`` to each of ``to``; a message to this node itself is kept for the core to
        handle at once (it never crosses the network)."""
        others = []
        for node in to:
            if node == self.me:
                self.loopback.append(msg)
            else:
                others.append(node)
        if others:
            self.actions.append(Send(tuple(others), msg))

    def emit(self, action: Action) -> None:
        """Tell the host something."""
        self.actions.append(action)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self.stats[name] = self.stats.get(name, 0) + n
