"""Joining: every peer contacted in parallel, and each join to an address waiting here for the
seed's answer.

:func:`join_peers` runs one thread per peer (``<prefix>-join-<i>``): it resolves the peer and
tries each of its addresses in turn until one accepts, within one deadline for the whole join,
and returns a :class:`~gossip.joining.JoinOutcome` (or raises :class:`~gossip.errors.JoinError`
when no peer accepted).

A join to one address is a command to the core (it sends the join request and sets a timer); the caller then
waits on a :class:`_JoinWaiter` for whichever comes first:

* the core's :class:`~gossip.protocol.JoinResult` (the seed's answer, or the core's own timer
  saying no answer came: :data:`~gossip.protocol.actions.JOIN_NO_ANSWER`), performed by the
  engine;
* the send path saying the request could not be sent (:meth:`Joins.failed`);
* the receive path saying a packet from the seed was refused here (:meth:`Joins.refused`: a
  seed with another key or label); on the join's own connection that ends the wait at once;
* the caller's timeout, or the engine stopping (:meth:`Joins.close`).

When no answer comes, the reason says as precisely as the joiner can know why.

This module imports the core's join result and the join outcome alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import ClusterClosed, GossipError, JoinError
from ..joining import JoinOutcome
from ..protocol import JoinResult
from ..protocol.actions import JOIN_NO_ANSWER

__all__ = ["Joins", "join_peers"]


class _JoinWaiter:
    __slots__ = ("event", "result", "connected", "refused")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: JoinResult | None = None
        self.connected = False  # the join went out on a connection the seed accepted
        self.refused = ""  # why a packet from the seed was refused here, if one was


def _no_answer(waiter: _JoinWaiter, timeout: float) -> str:
    """Say why a join got no answer, as precisely as the joiner can know it."""
    if waiter.refused:
        return (f"no answer within {timeout:.1f}s that this node could read; the seed's packets "
                f"were refused: {waiter.refused}")
    if waiter.connected:
        return (f"no answer within {timeout:.1f}s, though the seed accepted the connection: it "
                "may have another encryption key or cluster label, or another cipher (its log "
                "says which), or be overloaded")
    return (f"no answer within {timeout:.1f}s: the seed may be down, or have another "
            "encryption key or cluster label, or another cipher")


class Joins:
    """The waiters of the joins under way, by address; thread-safe.

    Args:
        join_timeout: the core's own join timer (``Config.join_timeout``), named when it is
            what ended the wait.
    """

    def __init__(self, join_timeout: float) -> None:
        self._join_timeout = join_timeout
        self._waiters: dict[str, list[_JoinWaiter]] = {}
        self._lock = threading.Lock()

    def wait(self, addr: str, timeout: float | None, send: Callable[[], object]) -> JoinResult:
        """Call ``send()`` (which asks the core to join ``addr``) and wait for the answer.

        Returns the seed's answer, or a refusal saying why none came within ``timeout``.

        Raises:
            ClusterClosed: the engine was stopped while waiting.
        """
        waiter = _JoinWaiter()
        with self._lock:
            self._waiters.setdefault(addr, []).append(waiter)
        try:
            send()
            if not waiter.event.wait(timeout):
                return JoinResult(addr, False, _no_answer(waiter, timeout or 0.0))
            result = waiter.result
            if result is None:
                raise ClusterClosed("the cluster was stopped while joining")
            if not result.accepted and result.reason == JOIN_NO_ANSWER:  # the core's timer
                return JoinResult(addr, False, _no_answer(waiter, self._join_timeout))
            return result
        finally:
            with self._lock:
                waiters = self._waiters.get(addr, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(addr, None)

    def resolve(self, addr: str, result: JoinResult) -> None:
        """End the waits on ``addr`` with ``result`` (the first result a waiter gets stays)."""
        with self._lock:
            waiters = list(self._waiters.get(addr, ()))
        for w in waiters:
            if w.result is None:
                w.result = result
            w.event.set()

    def sent(self, addr: str) -> None:
        """The join request to ``addr`` went out on a connection the seed accepted."""
        with self._lock:
            for w in self._waiters.get(addr, ()):
                w.connected = True

    def failed(self, addr: str, reason: str) -> None:
        """The join request to ``addr`` could not be sent: its waits end with ``reason``."""
        self.resolve(addr, JoinResult(addr, False, reason))

    def refused(self, src: str, reason: str, on_connection: bool) -> None:
        """A packet from ``src`` failed authentication or carried another label (``reason``).

        A join waiting on ``src`` notes why; if the packet came on a connection (the answer
        to the join travels on the join's own connection, which a third party cannot write
        to as a datagram's source can be forged), the join fails at once with that reason.
        """
        if not self._waiters:  # one read, no lock: the common case is no join at all
            return
        with self._lock:
            waiters = list(self._waiters.get(src, ()))
            for w in waiters:
                w.refused = reason
        if on_connection and waiters:
            self.resolve(src, JoinResult(
                src, False, f"the seed answered, but this node refused its answer: {reason}"))

    def close(self) -> None:
        """Wake every waiter (the engine stops: they raise :class:`ClusterClosed`)."""
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for w in waiters:
            w.event.set()


def join_peers(peers: list[str], timeout: float, *, resolve: Callable[[str], list[str]],
               join_addr: Callable[[str, float], JoinResult], own_addr: str,
               prefix: str) -> JoinOutcome:
    """Join through ``peers``, all in parallel, within ``timeout`` seconds in total.

    Each peer is resolved (``resolve(peer)``), ``own_addr`` is skipped, and every address is
    tried in turn (``join_addr(addr, seconds_left)``) until one accepts.

    Returns:
        Who accepted, who failed and why, who was skipped (only ourselves).

    Raises:
        JoinError: no peer accepted; ``failures`` maps each peer to why.
    """
    end = time.monotonic() + timeout
    failures: dict[str, str] = {}
    accepted: list[str] = []
    skipped: list[str] = []
    mutex = threading.Lock()

    def join_one(peer: str) -> None:
        try:
            addrs = resolve(peer)
        except GossipError as exc:
            with mutex:
                failures[peer] = f"cannot resolve: {exc}"
            return
        addrs = [a for a in addrs if a != own_addr]
        if not addrs:
            with mutex:
                skipped.append(peer)
            return
        reasons = []
        for addr in addrs:
            left = end - time.monotonic()
            if left <= 0:
                reasons.append(f"{addr}: timed out")
                break
            try:
                result = join_addr(addr, left)
            except ClusterClosed:
                reasons.append(f"{addr}: cluster stopped")
                break
            if result.accepted:
                with mutex:
                    accepted.append(peer)
                return
            reasons.append(f"{addr}: {result.reason}" if addr != peer else result.reason)
        with mutex:
            failures[peer] = "; ".join(reasons)

    threads = [threading.Thread(target=join_one, args=(p,), daemon=True, name=f"{prefix}-join-{i}")
               for i, p in enumerate(peers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, end - time.monotonic()) + 0.5)
    with mutex:
        for t, p in zip(threads, peers):
            if t.is_alive() and p not in failures and p not in accepted:
                failures[p] = "timed out"
        if not accepted and failures:
            raise JoinError(failures)
        return JoinOutcome(accepted, failures, skipped)
