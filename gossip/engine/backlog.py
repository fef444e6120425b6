"""Sends waiting for room: what a non-blocking send could not hand to the transport at once.

A reliable send that returns a :class:`concurrent.futures.Future` instead of blocking
(:meth:`gossip.engine.outgoing.Outgoing.user_nowait`) first tries to queue its frame on the
pooled connection without waiting. When that connection's buffer is full (the peer reads more
slowly than we write), or when no connection is known to be open (the first send to a peer
dials it), the frame goes here instead, and the caller gets a future:

* frames wait per address, in the order they were sent, and a later send to an address that
  has frames waiting queues behind them (so a sender's frames never overtake each other);
* a few engine threads (``gossip-<node>-backlog-<n>``, at most ``num_send_workers``, started
  when needed and ended after a moment idle) each serve one address at a time: they hand its
  frames to the transport in order, each waiting for room up to the end of its own
  ``send_timeout`` (in slices of :data:`SLICE` seconds), and complete each frame's future
  (:class:`~gossip.errors.SendQueueFull` when the time ran out, exactly as a blocking send
  raises it);
* cancelling a frame's future before the transport took it takes it back: out of the queue at
  once, or, for the frame whose turn it is, at the end of the current slice. Nothing of it is
  held or sent. (A cancellation that comes while the transport is taking the frame is too
  late: the frame leaves.)

No thread waits per pending call: a thread waits per address whose connection is full, and
every frame queued behind it waits without one.

:func:`all_done` joins the futures of a send to several nodes into one.

This module imports the errors alone; it is given the blocking send it drives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ..errors import ClusterClosed, SendQueueFull

__all__ = ["Backlog", "all_done"]

_IDLE_LINGER = 2.0  # an idle thread waits this long for another address before it ends
SLICE = 0.05
"""Seconds a frame waits for room in the transport at a time, between looks at whether its
caller cancelled it."""


class _Waiting:
    __slots__ = ("data", "end", "future")

    def __init__(self, data: bytes, end: float, future: Future[None]) -> None:
        self.data = data
        self.end = end
        self.future = future


class Backlog:
    """Frames waiting for room, per address; see the module docstring.

    Args:
        send: ``send(addr, data, timeout)`` hands one frame to the transport, waiting up to
            ``timeout`` seconds for room (raises as the transport does:
            :class:`~gossip.errors.SendQueueFull` when there was none).
        max_threads: the most threads serving addresses at once.
        log: the engine's logger.
        prefix: the thread name prefix (``gossip-<node>``).
        on_timeout: called when a frame's ``send_timeout`` ran out without room.
    """

    def __init__(self, send: Callable[[str, bytes, float], None], max_threads: int,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger], prefix: str,
                 on_timeout: Callable[[], None] | None = None) -> None:
        self._send = send
        self._on_timeout = on_timeout
        self._max_threads = max(1, max_threads)
        self._log = log
        self._name = f"{prefix}-backlog"
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[str, deque[_Waiting]] = {}  # an address stays while it is served
        self._ready: deque[str] = deque()  # addresses waiting for a thread
        self._threads: dict[threading.Thread, None] = {}
        self._idle = 0
        self._seq = 0
        self._closed = False

    def busy(self, addr: str) -> bool:
        """True while frames to ``addr`` wait here (a new frame must queue behind them)."""
        return addr in self._queues

    def __len__(self) -> int:
        """Frames waiting, all addresses together."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def put(self, addr: str, data: bytes, timeout: float) -> Future[None]:
        """Queue ``data`` for ``addr``; the future completes once the transport took it.

        Raises:
            ClusterClosed: the engine is stopping.
        """
        fut: Future[None] = Future()
        item = _Waiting(data, time.monotonic() + timeout, fut)
        with self._cond:
            if self._closed:
                raise ClusterClosed("the cluster is stopped")
            q = self._queues.get(addr)
            if q is None:
                q = self._queues[addr] = deque()
                self._ready.append(addr)
                if self._idle:
                    self._cond.notify()
                elif len(self._threads) < self._max_threads:
                    self._seq += 1
                    t = threading.Thread(target=self._run, name=f"{self._name}-{self._seq}",
                                         daemon=True)
                    self._threads[t] = None
                    t.start()
            q.append(item)
        fut.add_done_callback(lambda f: self._forget(addr, item) if f.cancelled() else None)
        return fut

    def _forget(self, addr: str, item: _Waiting) -> None:
        """A frame's caller cancelled it before its turn: take it out of the queue."""
        with self._cond:
            q = self._queues.get(addr)
            if q is not None:
                try:
                    q.remove(item)
                except ValueError:  # already taken by a thread (which skips it)
                    pass

    def _run(self) -> None:
        me = threading.current_thread()
        cond = self._cond
        while True:
            with cond:
                self._idle += 1
                end = time.monotonic() + _IDLE_LINGER
                while not self._ready and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    cond.wait(left)
                self._idle -= 1
                if not self._ready or self._closed:
                    self._threads.pop(me, None)
                    return
                addr = self._ready.popleft()
            try:
                self._serve(addr)
            except Exception:  # pragma: no cover - _serve catches what a send raises
                self._log.exception("bug: serving the backlog of %s failed", addr)

    def _serve(self, addr: str) -> None:
        while True:
            with self._cond:
                q = self._queues[addr]
                if not q or self._closed:
                    del self._queues[addr]
                    return
                item = q.popleft()
            self._hand_over(addr, item)

    def _hand_over(self, addr: str, item: _Waiting) -> None:
        """Give one frame to the transport, waiting for room in slices; settle its future."""
        fut = item.future
        while not fut.cancelled():
            left = item.end - time.monotonic()
            try:
                self._send(addr, item.data, max(0.0, min(left, SLICE)))
            except SendQueueFull as exc:
                if left > SLICE and not self._closed:
                    continue
                if self._on_timeout is not None:
                    self._on_timeout()
                _settle(fut, exc)
            except BaseException as exc:
                _settle(fut, exc)
            else:
                _settle(fut)
            return

    def close(self) -> None:
        """Fail every waiting frame with :class:`ClusterClosed` and wake the threads."""
        with self._cond:
            self._closed = True
            items = [i for q in self._queues.values() for i in q]
            for q in self._queues.values():
                q.clear()
            self._cond.notify_all()
        for item in items:
            _fail(item.future, ClusterClosed("the cluster was stopped before the frame was sent"))

    def join(self, deadline: float) -> list[str]:
        """Join the threads; return the names of those still running at ``deadline``."""
        with self._cond:
            threads = list(self._threads)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive() and t is not me]


def _fail(fut: Future[Any], exc: BaseException) -> None:
    _settle(fut, exc)


def _settle(fut: Future[Any], exc: BaseException | None = None) -> None:
    """Complete ``fut`` (with ``exc`` if given) unless its caller cancelled it meanwhile."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
    except InvalidStateError:
        pass


def all_done(futures: Sequence[Future[None]], first: BaseException | None = None,
             on_success: Callable[[], None] | None = None) -> Future[None]:
    """Return a future that completes when every one of ``futures`` has.

    It fails with ``first`` if given, else with the first failure among ``futures`` (in their
    order); ``on_success()`` is called for each that succeeded. Cancelling it cancels those
    not done yet.
    """
    out: Future[None] = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future[None]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        if out.done():
            return
        error = first
        for f in futures:
            if f.cancelled():
                continue
            exc = f.exception()
            if exc is None:
                if on_success is not None:
                    on_success()
            elif error is None:
                error = exc
        try:
            if error is not None:
                out.set_exception(error)
            else:
                out.set_result(None)
        except InvalidStateError:
            pass

    def cancel_rest(f: Future[None]) -> None:
        if f.cancelled():
            for g in futures:
                g.cancel()

    out.add_done_callback(cancel_rest)
    for f in futures:
        f.add_done_callback(one_done)
    return out
