"""Joining in the background: the seeds tried until one accepts, and again when left alone.

:class:`SeedJoiner` owns one thread (``<prefix>-seeds``), started by the first join in the
background (:meth:`gossip.Cluster.join` with ``background=True``). It runs two phases in turn:

* **joining**: an attempt joins through every seed (``attempt(peers, timeout)``, which resolves
  each name afresh, so a DNS name or ``srv+`` record that appears later is found); when none
  accepts, it waits a :class:`~gossip.joining.Backoff` (exponential, jittered, capped at
  ``Config.join_retry_max_interval``) and tries again. Each failure is a
  :class:`~gossip.joining.JoinAttemptFailed` cluster event (with why), the success a
  :class:`~gossip.joining.JoinSucceeded`.
* **watching**: once joined, it sleeps until a member dies or leaves (:meth:`member_lost`);
  if no live peer is left then (``isolated()``), it goes back to joining its seeds, the same
  way (the backoff starts over).

It ends when the engine stops or the node leaves (:meth:`close`). Nothing waits for it: a
stop while an attempt is under way wakes the attempt (the engine's joins raise
:class:`~gossip.errors.ClusterClosed`), and a name lookup that blocks ends the thread once it
returns.

This module imports the join outcome, events and backoff, and the errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import ClusterClosed, GossipError, JoinError
from ..joining import (
    JOIN_IDLE,
    JOIN_JOINED,
    JOIN_JOINING,
    JOIN_REJOINING,
    JOIN_STOPPED,
    Backoff,
    JoinAttemptFailed,
    JoinOutcome,
    JoinStatus,
    JoinSucceeded,
)

__all__ = ["SeedJoiner"]

Attempt = Callable[[list[str], float], JoinOutcome]
"""``attempt(peers, timeout)``: one join through every peer; raises ``JoinError`` if none
accepted, ``ClusterClosed`` if the engine stopped."""


def _reason(failures: dict[str, str]) -> str:
    if not failures:
        return "no peer accepted"
    return "; ".join(f"{peer}: {why}" for peer, why in failures.items())


class SeedJoiner:
    """Joins through the seeds in the background, and back to them when left alone.

    Args:
        attempt: one join through the given peers (see :data:`Attempt`).
        isolated: whether this node has no live peer left.
        emit: hands a cluster event to the event thread (called under the joiner's lock: it
            must not block, nor call back into the joiner).
        backoff: the waits between attempts.
        timeout: seconds each attempt may take (``Config.join_timeout``).
        rng: shuffles the seeds before each attempt.
        log: the engine's logger.
        prefix: the thread is named ``<prefix>-seeds``.
        wait: ``wait(event, seconds)`` waits out a backoff: for ``event`` (set by new seeds and
            by :meth:`close`), at most ``seconds`` (tests replace it).
        clock: the monotonic clock (for :attr:`JoinStatus.next_attempt_in`).
        wall: the wall clock (the events' times).
    """

    def __init__(self, attempt: Attempt, isolated: Callable[[], bool], emit: Callable[[object], None],
                 backoff: Backoff, timeout: float, rng: random.Random,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger], prefix: str, *,
                 wait: Callable[[threading.Event, float], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._attempt = attempt
        self._isolated = isolated
        self._emit = emit
        self._backoff = backoff
        self._timeout = timeout
        self._rng = rng
        self._log = log
        self._prefix = prefix
        self._wait = wait if wait is not None else (lambda ev, s: ev.wait(s))
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._peers: list[str] = []
        self._state = JOIN_IDLE
        self._attempts = 0
        self._joined: tuple[str, ...] = ()
        self._last_error = ""
        self._next_at: float | None = None
        self._rejoins = 0
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ commands

    def add(self, peers: Sequence[str]) -> JoinStatus:
        """Join through ``peers`` (added to the seeds) in the background; return at once.

        A join already under way tries the new seeds at once; a node already joined keeps
        them as seeds for when it is left alone.

        Raises:
            ClusterClosed: the joiner was closed (the engine stopped or the node left).
        """
        with self._lock:
            if self._closed:
                raise ClusterClosed("the cluster is stopped")
            for p in peers:
                if p not in self._peers:
                    self._peers.append(p)
            if self.thread is None:
                self._state = JOIN_JOINING
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name=f"{self._prefix}-seeds")
                self.thread.start()
            elif self._state in (JOIN_JOINING, JOIN_REJOINING):
                self._wake.set()  # try the new seeds now rather than after the backoff
        return self.status()

    def member_lost(self) -> None:
        """A member died or left: a node watching for being left alone checks now."""
        if self._state == JOIN_JOINED:
            self._wake.set()

    def close(self) -> None:
        """Stop: no more attempts; the thread ends without anyone waiting for it."""
        with self._lock:
            self._closed = True
            if self.thread is not None:
                self._state = JOIN_STOPPED
        self._wake.set()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def status(self) -> JoinStatus:
        """Return what the joiner is doing."""
        with self._lock:
            nxt = None if self._next_at is None else max(0.0, self._next_at - self._clock())
            return JoinStatus(self._state, tuple(self._peers), self._attempts, self._joined,
                              self._last_error, nxt, self._rejoins)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            while self._join_until_accepted() and self._watch_until_alone():
                pass
        except Exception:  # a bug must not pass silently, nor take the engine with it
            self._log.exception("the background join failed")
        with self._lock:
            self._state = JOIN_STOPPED
            self._next_at = None

    def _join_until_accepted(self) -> bool:
        """Attempt until a seed accepts (True) or the joiner is closed (False)."""
        self._backoff.reset()
        with self._lock:
            self._attempts = 0
            rejoin = self._state == JOIN_REJOINING
        while True:
            with self._lock:
                if self._closed:
                    return False
                self._wake.clear()
                self._attempts += 1
                attempt = self._attempts
                self._next_at = None
                peers = list(self._peers)
            self._rng.shuffle(peers)
            try:
                outcome = self._attempt(peers, self._timeout)
            except ClusterClosed:
                return False
            except JoinError as exc:
                failures = dict(exc.failures)
            except GossipError as exc:  # a transport refusing outright: retried like the rest
                failures = {p: str(exc) for p in peers}
            else:
                event = JoinSucceeded(outcome.joined, dict(outcome.failures), attempt, rejoin,
                                      self._wall())
                self._log.info("%s", event)
                with self._lock:  # whoever sees the new state finds the event queued
                    if self._closed:
                        return False
                    self._state = JOIN_JOINED
                    self._joined = outcome.joined
                    self._last_error = ""
                    self._emit(event)
                return True
            delay = self._backoff.next()
            reason = _reason(failures)
            failed = JoinAttemptFailed(reason, failures, attempt, delay, rejoin, self._wall())
            self._log.info("%s", failed)
            with self._lock:
                if self._closed:
                    return False
                self._last_error = reason
                self._next_at = self._clock() + delay
                self._emit(failed)
            self._wait(self._wake, delay)

    def _watch_until_alone(self) -> bool:
        """Sleep until a lost member leaves no live peer (True: rejoin), or the joiner is
        closed (False). Only a loss wakes it, so a join that left the node alone (every seed
        was itself) does not loop."""
        while True:
            self._wake.wait()
            with self._lock:
                if self._closed:
                    return False
                self._wake.clear()
            if self._isolated():
                with self._lock:
                    if self._closed:
                        return False
                    self._state = JOIN_REJOINING
                    self._rejoins += 1
                self._log.warning("every peer is gone: joining the seeds again (%s)",
                                  ", ".join(self._peers))
                return True
