"""What :meth:`gossip.Cluster.join` returns: how many peers accepted us, and what became of
every peer it was given; what a join in the background reports (:class:`JoinStatus`, the
cluster events :class:`JoinSucceeded` and :class:`JoinAttemptFailed`), and its retry schedule
(:class:`Backoff`).

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping

__all__ = ["JoinOutcome", "JoinStatus", "JoinSucceeded", "JoinAttemptFailed", "Backoff",
           "JOIN_IDLE", "JOIN_JOINING", "JOIN_JOINED", "JOIN_REJOINING", "JOIN_STOPPED"]

JOIN_IDLE = "idle"
"""No join in the background was asked for."""
JOIN_JOINING = "joining"
"""A join in the background is trying its peers (or waiting to try again)."""
JOIN_JOINED = "joined"
"""The join in the background succeeded; the node watches for being left alone."""
JOIN_REJOINING = "rejoining"
"""The node lost every peer and is joining its seeds again, as a first join does."""
JOIN_STOPPED = "stopped"
"""The cluster stopped; no more attempts."""


class JoinOutcome(int):
    """The number of peers that accepted the join, with the fate of every peer given.

    It *is* that number (an ``int``: ``cluster.join(...) == 1``, ``if cluster.join(...):``
    and arithmetic work as they always have), and it carries the details a partial success
    would otherwise hide: a ``wss://`` seed that failed its certificate check while another
    seed answered is listed in :attr:`failures`, with why.

    Attributes:
        joined: the peers that accepted us, as given.
        failures: each peer that could not be joined, mapped to why (empty if none failed).
        skipped: the peers that resolved to this node's own address only.
    """

    joined: tuple[str, ...]
    failures: dict[str, str]
    skipped: tuple[str, ...]

    def __new__(cls, joined: Iterable[str], failures: Mapping[str, str],
                skipped: Iterable[str] = ()) -> JoinOutcome:
        peers = tuple(joined)
        self = super().__new__(cls, len(peers))
        self.joined = peers
        self.failures = dict(failures)
        self.skipped = tuple(skipped)
        return self

    @property
    def complete(self) -> bool:
        """True if no peer failed."""
        return not self.failures

    def __reduce__(self) -> tuple[type[JoinOutcome], tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]]:
        return (JoinOutcome, (self.joined, self.failures, self.skipped))


@dataclasses.dataclass(frozen=True)
class JoinSucceeded:
    """A join in the background (or a re-join after losing every peer) succeeded.

    Attributes:
        joined: the peers that accepted us, as given (empty if every seed was this node).
        failures: the peers that failed in the same attempt, each mapped to why.
        attempt: the number of the attempt that succeeded (1 for the first).
        rejoin: True if the node had lost every peer and joined its seeds again.
        at: when it succeeded (wall-clock seconds for a Cluster).
    """

    joined: tuple[str, ...]
    failures: Mapping[str, str]
    attempt: int
    rejoin: bool
    at: float

    def shifted(self, offset: float) -> JoinSucceeded:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        what = "re-joined" if self.rejoin else "joined"
        return f"{what} through {', '.join(self.joined) or 'no peer'} at attempt {self.attempt}"


@dataclasses.dataclass(frozen=True)
class JoinAttemptFailed:
    """One attempt of a join in the background failed; another follows in ``retry_in`` seconds.

    Attributes:
        reason: why, in one line (every peer and what became of it).
        failures: each peer mapped to why it could not be joined (a name that did not
            resolve says so).
        attempt: the number of the attempt that failed (1 for the first).
        retry_in: seconds until the next attempt (the backoff, jittered).
        rejoin: True if the node had lost every peer and is joining its seeds again.
        at: when it failed (wall-clock seconds for a Cluster).
    """

    reason: str
    failures: Mapping[str, str]
    attempt: int
    retry_in: float
    rejoin: bool
    at: float

    def shifted(self, offset: float) -> JoinAttemptFailed:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        return f"join attempt {self.attempt} failed ({self.reason}); next in {self.retry_in:.1f}s"


@dataclasses.dataclass(frozen=True)
class JoinStatus:
    """What the join in the background is doing (:meth:`gossip.Cluster.join_status`).

    Attributes:
        state: :data:`JOIN_IDLE`, :data:`JOIN_JOINING`, :data:`JOIN_JOINED`,
            :data:`JOIN_REJOINING` or :data:`JOIN_STOPPED`.
        peers: the seeds it joins through (every peer given to a background join).
        attempts: attempts made since the current join or re-join began.
        joined: the peers that accepted us at the last success.
        last_error: why the last attempt failed (``""`` if none did yet, or it succeeded).
        next_attempt_in: seconds until the next attempt while waiting to retry, else None.
        rejoins: how many times the node lost every peer and went back to its seeds.
    """

    state: str
    peers: tuple[str, ...] = ()
    attempts: int = 0
    joined: tuple[str, ...] = ()
    last_error: str = ""
    next_attempt_in: float | None = None
    rejoins: int = 0

    @property
    def active(self) -> bool:
        """True while attempts go on (joining or rejoining)."""
        return self.state in (JOIN_JOINING, JOIN_REJOINING)


class Backoff:
    """Exponential backoff with jitter: the waits between join attempts.

    The ``n``-th wait (from 0) is drawn uniformly from ``[d/2, d]`` with
    ``d = min(cap, base * 2**n)`` ("equal jitter"): it grows until it reaches ``cap``, and nodes
    that started together drift apart instead of retrying in step.

    Args:
        base: the first wait's upper bound (``Config.join_retry_interval``).
        cap: the longest wait (``Config.join_retry_max_interval``).
        rng: the random source (seed it for a reproducible schedule).
    """

    __slots__ = ("base", "cap", "rng", "attempt")

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = max(base, cap)
        self.rng = rng
        self.attempt = 0

    def reset(self) -> None:
        """Start again from the first wait."""
        self.attempt = 0

    def bound(self, n: int) -> float:
        """The upper bound of the ``n``-th wait (before jitter)."""
        if n >= 64:
            return self.cap
        return min(self.cap, self.base * (1 << n))

    def next(self) -> float:
        """Return the next wait, in seconds."""
        d = self.bound(self.attempt)
        self.attempt += 1
        return d / 2 + self.rng.random() * d / 2
