"""Requests waiting for their replies, each a :class:`concurrent.futures.Future`.

A request sent without blocking (:meth:`gossip.engine.user_messages.UserMessages.request_nowait`)
travels on the pooled connection to the node, like a reliable message, and its reply comes
back on that connection. The replier stamps its reply with the request's message id, so a
reply is matched to its request by ``(sender node id, message id)``: this table holds one
:class:`~concurrent.futures.Future` per request waiting, and the receive path hands it every
reply that arrives on a connection (:meth:`Replies.resolve`, on a reader thread).

A waiter ends in one of four ways, and then it is gone from the table:

* its reply arrives: the future's result is the reply :class:`~gossip.packet.Packet` (decoded
  where it is awaited, never on the reader: :func:`reply_value`);
* its timeout passes (on the deadlines thread): :class:`~gossip.errors.GossipTimeout`;
* its request could not be sent (:meth:`Replies.fail`): the send's error;
* its caller cancels the future (``future.cancel()``, as ``asyncio.wait_for`` does);
* the engine stops: :class:`~gossip.errors.ClusterClosed`.

A reply that finds no waiter is dropped and counted: ``dropped.late_replies`` when its request
ended lately (timed out or cancelled; the last :data:`REMEMBER_ENDED` are remembered),
``dropped.stray_replies`` otherwise.

This module imports the packet, the errors and the deadlines part.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ..counters import Counters
from ..errors import ClusterClosed, DecodeError, GossipTimeout, RemoteHandlerError
from ..packet import Packet
from ..wire import MessageType
from .deadlines import SWEEP_MIN, Alarm, Deadlines

__all__ = ["Replies", "reply_value", "REMEMBER_ENDED"]

REMEMBER_ENDED = 4096
"""Requests that ended without their reply remembered, so that a late reply is told apart."""

Key = tuple[bytes, int]


def reply_value(pkt: Packet, response_type: type[Any] | None, label: str | Callable[[], str],
                msg_type: int) -> Any:
    """Return the value of the reply ``pkt`` to a request of ``msg_type`` sent to ``label``
    (the node's text, or a function that returns it: called only for an error's message).

    Raises:
        RemoteHandlerError: the answer is an error (the node's handler raised, or it has no
            reply handler for the type).
        DecodeError: the answer is not a reply, or does not decode (as ``response_type``).
    """
    if pkt.msg_type == MessageType.REPLY:
        return pkt.unmarshal(response_type)
    if callable(label):
        label = label()
    if pkt.msg_type == MessageType.REPLY_ERROR:
        text = pkt.unmarshal()
        remote = text if isinstance(text, str) else repr(text)
        raise RemoteHandlerError(
            f"node {label} could not answer message type {msg_type}: {remote}", remote, msg_type)
    raise DecodeError(f"node {label} answered message type {msg_type} with a packet of type "
                      f"{pkt.msg_type}, not a reply")


class _Waiter(Future[Packet]):
    """The future of one request waiting for its reply: it knows its table, so that
    cancelling it (as ``asyncio.wait_for`` does) forgets it at once, with no done callback
    set per request."""

    def __init__(self, key: Key, end: float, timeout: float, what: str | Callable[[], str],
                 forget: Callable[[Key], None]) -> None:
        super().__init__()
        self.key = key
        self.end = end
        self.timeout = timeout
        self.what = what
        self._forget = forget

    def cancel(self) -> bool:
        """Cancel the request's wait: its waiter leaves the table (a reply that comes later
        is dropped and counted as late)."""
        if not super().cancel():
            return False
        self._forget(self.key)
        return True


class Replies:
    """The requests waiting for a reply, by ``(node id, message id)``; thread-safe.

    Timeouts: each waiter's deadline goes into a heap of this table's own, and one deadline
    (:mod:`.deadlines`) is set for the earliest, which ends every waiter due and sets the next.
    A waiter that ends otherwise leaves its entry behind; the entries of waiters gone are swept
    out once they are more than :data:`~.deadlines.SWEEP_MIN` and more than half of the heap,
    so it holds at most about twice the requests waiting.

    Args:
        deadlines: where the earliest waiter's timeout is set.
        counters: where unmatched replies are counted.
    """

    def __init__(self, deadlines: Deadlines, counters: Counters) -> None:
        self._deadlines = deadlines
        self._counters = counters
        self._lock = threading.Lock()
        self._waiters: dict[Key, _Waiter] = {}
        self._ended: OrderedDict[Key, None] = OrderedDict()
        self._due: list[tuple[float, int, _Waiter]] = []
        self._seq = 0
        self._alarm: Alarm | None = None
        self._alarm_at = 0.0
        self._armed = 0  # which deadline is the current one (an older one may still fire)
        self._closed = False

    def __len__(self) -> int:
        """The requests waiting now."""
        return len(self._waiters)

    @property
    def timeouts(self) -> int:
        """Entries in the timeout heap (the requests waiting, and those gone not yet swept
        out)."""
        return len(self._due)

    def expect(self, node_id: bytes, msg_id: int, timeout: float,
               what: str | Callable[[], str]) -> Future[Packet]:
        """Wait for the reply of ``node_id`` to the request ``msg_id``, for ``timeout`` seconds.

        ``what`` names the request in the timeout's message (or is a function that returns the
        name, called only then). Cancelling the returned future forgets the waiter at once.

        Raises:
            ClusterClosed: the engine is stopping.
        """
        key = (node_id, msg_id)
        end = time.monotonic() + max(0.0, timeout)
        fut = _Waiter(key, end, timeout, what, self._forget)
        with self._lock:
            if self._closed:
                raise ClusterClosed("the cluster is stopped")
            self._waiters[key] = fut
            due = self._due
            if len(due) > SWEEP_MIN and len(due) > 2 * len(self._waiters):
                waiters = self._waiters
                due[:] = [e for e in due if waiters.get(e[2].key) is e[2]]
                heapq.heapify(due)
            self._seq += 1
            heapq.heappush(due, (end, self._seq, fut))
            if self._alarm is None or end < self._alarm_at:
                self._arm(end)
        return fut

    def _arm(self, when: float) -> None:
        """Set the one deadline for ``when`` (the lock is held)."""
        if self._alarm is not None:
            self._alarm.cancel()
        self._armed += 1
        armed = self._armed
        self._alarm_at = when
        self._alarm = self._deadlines.at(when, lambda: self._expire(armed))

    def _expire(self, armed: int) -> None:
        """The deadlines thread: end every waiter due with :class:`GossipTimeout`, and set the
        deadline of the next (unless an earlier one is set)."""
        expired: list[_Waiter] = []
        with self._lock:
            if armed == self._armed:
                self._alarm = None
            now = time.monotonic()
            due, waiters = self._due, self._waiters
            while due:
                end, _, fut = due[0]
                if waiters.get(fut.key) is not fut:  # ended otherwise: its entry goes
                    heapq.heappop(due)
                    continue
                if end > now:
                    if not self._closed and (self._alarm is None or end < self._alarm_at):
                        self._arm(end)
                    break
                heapq.heappop(due)
                del waiters[fut.key]
                self._remember_locked(fut.key)
                expired.append(fut)
        for fut in expired:
            name = fut.what() if callable(fut.what) else fut.what
            _set_exception(fut, GossipTimeout(f"{name}: no reply within {fut.timeout:.3g}s"))

    def _remember_locked(self, key: Key) -> None:
        ended = self._ended
        ended[key] = None
        if len(ended) > REMEMBER_ENDED:
            ended.popitem(last=False)

    def _forget(self, key: Key) -> None:
        """The waiter of ``key`` was cancelled: forget it (its heap entry is swept out later)."""
        with self._lock:
            fut = self._waiters.get(key)
            if fut is not None and fut.cancelled():
                del self._waiters[key]
                self._remember_locked(key)

    def fail(self, fut: Future[Packet], exc: BaseException) -> None:
        """End the waiter ``fut`` with ``exc`` (its request could not be sent), unless it is
        done already."""
        if isinstance(fut, _Waiter):
            with self._lock:
                if self._waiters.get(fut.key) is fut:
                    del self._waiters[fut.key]
                    self._remember_locked(fut.key)
        _set_exception(fut, exc)

    def resolve(self, pkt: Packet) -> None:
        """A reply arrived on a connection (a reader thread): complete its waiter, or count it."""
        key = (pkt.sender, pkt.msg_id)
        with self._lock:
            fut = self._waiters.pop(key, None)
            late = fut is None and self._ended.pop(key, 0) is None
        if fut is not None:
            try:
                fut.set_result(pkt)
                return
            except InvalidStateError:  # cancelled a moment ago
                late = True
        self._counters.inc("dropped.late_replies" if late else "dropped.stray_replies")

    def close(self) -> None:
        """Fail every waiter with :class:`ClusterClosed` and take no more."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters.values())
            self._waiters.clear()
            self._due.clear()
            if self._alarm is not None:
                self._alarm.cancel()
                self._alarm = None
        for fut in waiters:
            _set_exception(fut, ClusterClosed("the cluster was stopped before the reply came"))


def _set_exception(fut: Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it is done already (its caller may have cancelled it)."""
    try:
        fut.set_exception(exc)
    except InvalidStateError:
        pass
