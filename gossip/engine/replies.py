"""Requests waiting for their replies, each a :class:`concurrent.futures.Future`.

A request sent without blocking (:meth:`gossip.engine.outgoing.UserMessages.request_nowait`)
travels on the pooled connection to the node, like a reliable message, and its reply comes
back on that connection. The replier stamps its reply with the request's message id, so a
reply is matched to its request by ``(sender node id, message id)``: this table holds one
:class:`~concurrent.futures.Future` per request waiting, and the receive path hands it every
reply that arrives on a connection (:meth:`Replies.resolve`, on a reader thread).

A waiter ends in one of four ways, and then it is gone from the table:

* its reply arrives: the future's result is the reply :class:`~gossip.packet.Packet` (decoded
  where it is awaited, never on the reader: :func:`reply_value`);
* its timeout passes (on the deadlines thread): :class:`~gossip.errors.GossipTimeout`;
* its caller cancels the future (``future.cancel()``, as ``asyncio.wait_for`` does);
* the engine stops: :class:`~gossip.errors.ClusterClosed`.

A reply that finds no waiter is dropped and counted: ``dropped.late_replies`` when its request
ended lately (timed out or cancelled; the last :data:`REMEMBER_ENDED` are remembered),
``dropped.stray_replies`` otherwise.

This module imports the packet, the errors and the deadlines part.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from ..counters import Counters
from ..errors import ClusterClosed, DecodeError, GossipTimeout, RemoteHandlerError
from ..packet import Packet
from ..wire import MessageType
from .deadlines import Alarm, Deadlines

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


class Replies:
    """The requests waiting for a reply, by ``(node id, message id)``; thread-safe.

    Args:
        deadlines: where each waiter's timeout is set.
        counters: where unmatched replies are counted.
    """

    def __init__(self, deadlines: Deadlines, counters: Counters) -> None:
        self._deadlines = deadlines
        self._counters = counters
        self._lock = threading.Lock()
        self._waiters: dict[Key, Future[Packet]] = {}
        self._ended: OrderedDict[Key, None] = OrderedDict()
        self._closed = False

    def __len__(self) -> int:
        """The requests waiting now."""
        return len(self._waiters)

    def expect(self, node_id: bytes, msg_id: int, timeout: float,
               what: str | Callable[[], str]) -> Future[Packet]:
        """Wait for the reply of ``node_id`` to the request ``msg_id``, for ``timeout`` seconds.

        ``what`` names the request in the timeout's message (or is a function that returns the
        name, called only then). Cancelling the returned future forgets the waiter at once.

        Raises:
            ClusterClosed: the engine is stopping.
        """
        key = (node_id, msg_id)
        fut: Future[Packet] = Future()
        with self._lock:
            if self._closed:
                raise ClusterClosed("the cluster is stopped")
            self._waiters[key] = fut

        def expire() -> None:
            name = what() if callable(what) else what
            _set_exception(fut, GossipTimeout(f"{name}: no reply within {timeout:.3g}s"))

        alarm = self._deadlines.after(timeout, expire)
        fut.add_done_callback(lambda f: self._release(key, f, alarm))
        return fut

    def _release(self, key: Key, fut: Future[Packet], alarm: Alarm) -> None:
        alarm.cancel()
        with self._lock:
            if self._waiters.get(key) is fut:
                del self._waiters[key]
                if fut.cancelled() or fut.exception() is not None:
                    self._ended[key] = None
                    if len(self._ended) > REMEMBER_ENDED:
                        self._ended.popitem(last=False)

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
            except InvalidStateError:  # cancelled or timed out a moment ago
                late = True
        self._counters.inc("dropped.late_replies" if late else "dropped.stray_replies")

    def close(self) -> None:
        """Fail every waiter with :class:`ClusterClosed` and take no more."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters.values())
            self._waiters.clear()
        for fut in waiters:
            _set_exception(fut, ClusterClosed("the cluster was stopped before the reply came"))


def _set_exception(fut: Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it is done already (its caller may have cancelled it)."""
    try:
        fut.set_exception(exc)
    except InvalidStateError:
        pass
