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

:func:`join_peers_nowait` is the same join without a thread per peer: each address's join
completes a :class:`concurrent.futures.Future` (:meth:`Joins.expect`), the next address is
tried from the callback of the last, and the whole join's deadline is one alarm on the
deadlines thread (:mod:`.deadlines`). Peers that need a name lookup (DNS, SRV) are resolved
on one short-lived thread of their own (``<prefix>-join-resolve``); IP literals and URLs never
are.

This module imports the core's join result, the join outcome and the deadlines part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from ..errors import ClusterClosed, GossipError, JoinError
from ..joining import JoinOutcome
from ..protocol import JoinResult
from ..protocol.actions import JOIN_NO_ANSWER
from .deadlines import Deadlines

__all__ = ["Joins", "join_peers", "join_peers_nowait"]


class _JoinWaiter:
    __slots__ = ("event", "result", "connected", "refused", "future")

    def __init__(self, future: Future[JoinResult] | None = None) -> None:
        self.event = threading.Event()
        self.result: JoinResult | None = None
        self.connected = False  # the join went out on a connection the seed accepted
        self.refused = ""  # why a packet from the seed was refused here, if one was
        self.future = future  # set for a join that does not block (Joins.expect)


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

    def expect(self, addr: str, send: Callable[[], object]) -> Future[JoinResult]:
        """Call ``send()`` (which asks the core to join ``addr``); return a future of the answer.

        The future's result is the seed's answer or a refusal saying why none came (the core's
        join timer ends every join within ``join_timeout``); it fails with
        :class:`ClusterClosed` when the engine stops. Cancelling it forgets the waiter.
        """
        fut: Future[JoinResult] = Future()
        waiter = _JoinWaiter(fut)
        with self._lock:
            self._waiters.setdefault(addr, []).append(waiter)
        fut.add_done_callback(lambda _: self._forget(addr, waiter))
        try:
            send()
        except BaseException:
            fut.cancel()
            raise
        return fut

    def _forget(self, addr: str, waiter: _JoinWaiter) -> None:
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
            if w.future is not None:
                answer = w.result
                if not answer.accepted and answer.reason == JOIN_NO_ANSWER:  # the core's timer
                    answer = JoinResult(addr, False, _no_answer(w, self._join_timeout))
                try:
                    w.future.set_result(answer)
                except InvalidStateError:  # cancelled meanwhile
                    pass

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
            if w.future is not None:
                try:
                    w.future.set_exception(ClusterClosed("the cluster was stopped while joining"))
                except InvalidStateError:
                    pass


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


class _NowaitJoin:
    """One join through several peers, driven by callbacks (see :func:`join_peers_nowait`)."""

    def __init__(self, peers: list[str], end: float, resolve: Callable[[str], list[str]],
                 expect_join: Callable[[str], Future[JoinResult]], own_addr: str) -> None:
        self.peers = peers
        self.end = end
        self.resolve = resolve
        self.expect_join = expect_join
        self.own_addr = own_addr
        self.out: Future[JoinOutcome] = Future()
        self.lock = threading.Lock()
        self.failures: dict[str, str] = {}
        self.accepted: list[str] = []
        self.skipped: list[str] = []
        self.attempts: dict[str, Future[JoinResult]] = {}  # the address being tried per peer
        self.finished = False

    def begin(self, peer: str, addrs: list[str] | GossipError) -> None:
        """Start trying ``peer``'s resolved addresses (or record why it has none)."""
        if isinstance(addrs, GossipError):
            self._done(peer, failure=f"cannot resolve: {addrs}")
            return
        addrs = [a for a in addrs if a != self.own_addr]
        if not addrs:
            self._done(peer, skipped=True)
            return
        self._try(peer, addrs, 0, [])

    def _try(self, peer: str, addrs: list[str], i: int, reasons: list[str]) -> None:
        if i >= len(addrs):
            self._done(peer, failure="; ".join(reasons))
            return
        addr = addrs[i]
        if time.monotonic() >= self.end:
            reasons.append(f"{addr}: timed out")
            self._done(peer, failure="; ".join(reasons))
            return
        try:
            fut = self.expect_join(addr)
        except ClusterClosed:
            reasons.append(f"{addr}: cluster stopped")
            self._done(peer, failure="; ".join(reasons))
            return
        with self.lock:
            if self.finished:
                fut.cancel()
                return
            self.attempts[peer] = fut

        def answered(f: Future[JoinResult]) -> None:
            if f.cancelled():
                return  # the whole join ended (its deadline)
            exc = f.exception()
            if exc is not None:
                reasons.append(f"{addr}: cluster stopped")
                self._done(peer, failure="; ".join(reasons))
                return
            result = f.result()
            if result.accepted:
                self._done(peer, accepted=True)
                return
            reasons.append(f"{addr}: {result.reason}" if addr != peer else result.reason)
            self._try(peer, addrs, i + 1, reasons)

        fut.add_done_callback(answered)

    def _done(self, peer: str, *, accepted: bool = False, skipped: bool = False,
              failure: str = "") -> None:
        with self.lock:
            if self.finished:
                return
            self.attempts.pop(peer, None)
            if accepted:
                self.accepted.append(peer)
            elif skipped:
                self.skipped.append(peer)
            else:
                self.failures[peer] = failure
            if len(self.accepted) + len(self.skipped) + len(self.failures) < len(self.peers):
                return
        self._finish()

    def expire(self) -> None:
        """The join's deadline passed: every peer still under way failed ("timed out")."""
        with self.lock:
            if self.finished:
                return
            for p in self.peers:
                if p not in self.failures and p not in self.accepted and p not in self.skipped:
                    self.failures[p] = "timed out"
        self._finish()

    def _finish(self) -> None:
        with self.lock:
            if self.finished:
                return
            self.finished = True
            attempts = list(self.attempts.values())
            self.attempts.clear()
        for f in attempts:
            f.cancel()
        try:
            if not self.accepted and self.failures:
                self.out.set_exception(JoinError(self.failures))
            else:
                self.out.set_result(JoinOutcome(self.accepted, self.failures, self.skipped))
        except InvalidStateError:  # the caller cancelled it
            pass

    def cancel(self) -> None:
        """The caller gave up: release every waiter still held."""
        with self.lock:
            self.finished = True
            attempts = list(self.attempts.values())
            self.attempts.clear()
        for f in attempts:
            f.cancel()


def join_peers_nowait(peers: list[str], timeout: float, *, resolve: Callable[[str], list[str]],
                      needs_lookup: Callable[[str], bool],
                      expect_join: Callable[[str], Future[JoinResult]], own_addr: str,
                      deadlines: Deadlines, prefix: str) -> Future[JoinOutcome]:
    """:func:`join_peers` without blocking: return a future of the outcome.

    ``expect_join(addr)`` sends a join to one resolved address and returns a future of its
    answer (:meth:`Joins.expect`); ``needs_lookup(peer)`` says whether resolving ``peer`` may
    block (a name to look up). The future fails with :class:`JoinError` when no peer
    accepted; cancelling it releases every join waiter still held.
    """
    job = _NowaitJoin(peers, time.monotonic() + timeout, resolve, expect_join, own_addr)
    alarm = deadlines.at(job.end, job.expire)

    def ended(f: Future[JoinOutcome]) -> None:
        alarm.cancel()
        if f.cancelled():
            job.cancel()

    job.out.add_done_callback(ended)

    def resolved(peer: str) -> list[str] | GossipError:
        try:
            return resolve(peer)
        except GossipError as exc:
            return exc

    lookups = [p for p in peers if needs_lookup(p)]
    for peer in peers:
        if peer not in lookups:
            job.begin(peer, resolved(peer))
    if lookups:
        def look_up() -> None:
            for peer in lookups:
                if job.finished:
                    return
                job.begin(peer, resolved(peer))

        threading.Thread(target=look_up, daemon=True, name=f"{prefix}-join-resolve").start()
    if not peers:
        job.expire()
    return job.out
