"""Handlers on the loop: user messages, requests and streams handed from the engine's threads
to the event loop that registered them.

The engine calls a message handler on a user lane thread (:mod:`gossip.engine.incoming`).
A :class:`Dispatcher` stands in for the user's handler there: it queues the message for the
loop and returns at once, and the loop runs the handler (a coroutine function becomes a task;
a plain function is called). Messages of one type are taken from the queue in the order the
lanes handed them over, so the handlers for one sender start in the order its messages
arrived.

Each dispatcher holds at most ``Config.async_handler_limit`` messages at once (queued for the
loop, or running there). Past that bound, a datagram is dropped and counted
(``dropped.async_handler_full``), while a message that came on a connection (a reliable send,
a request, a large message) waits on its lane until a handler ends (``async.handler_waits``):
the lane's queue fills, the engine pauses the connection, and the sender slows down, exactly as
behind a slow blocking handler. A request's reply travels back from the loop when its handler
ends (the lane hands the engine a future: :meth:`Dispatcher.__call__`).

A stream handler written as a coroutine function gets an :class:`~gossip.aio.AsyncStream` and
runs on the loop; the stream pool's worker that accepted the stream serves its writes
meanwhile (:func:`stream_handler`).

This module imports the engine's stream pump and the face's stream; never a transport.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..errors import ClusterClosed
from ..node import Node
from ..packet import Packet
from .stream import AsyncStream

if TYPE_CHECKING:
    from ..engine import Engine
    from ..streams import Stream

__all__ = ["Dispatcher", "stream_handler", "MessageHandler", "ReplyHandler", "StreamHandler"]

logger = logging.getLogger("gossip.aio")

MessageHandler = Callable[[Node, Packet], "Awaitable[None] | None"]
"""``fn(sender, packet)``, a coroutine function or a plain one, run on the loop."""
ReplyHandler = Callable[[Node, Packet], Any]
"""``fn(sender, packet) -> reply`` (or ``async def``), run on the loop; what it returns (or
awaits to) is the reply; if it raises, the requester gets
:class:`~gossip.errors.RemoteHandlerError`."""
StreamHandler = Callable[[Node, Packet, Any], Any]
"""``async def fn(sender, packet, stream)`` with an :class:`~gossip.aio.AsyncStream`, run on
the loop; or a plain ``fn(sender, packet, stream)`` with a blocking :class:`~gossip.Stream`,
run on a stream pool thread as with :class:`gossip.Cluster`."""

_WAIT_POLL = 0.5  # a lane waiting for room checks this often whether the cluster stopped


class Dispatcher:
    """Runs one message type's handler on ``loop``; called by the engine on its lanes.

    Args:
        loop: the loop that registered the handler.
        fn: the user's handler (coroutine function or plain function).
        reply: True for a reply handler (each call returns a future of the reply).
        limit: the most messages held at once (``Config.async_handler_limit``).
        count: ``count(name)`` adds one to an engine counter.
        stopped: True once the cluster stops (a waiting lane gives up).
        msg_type: the message type (for logs).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], reply: bool,
                 limit: int, count: Callable[[str], None], stopped: Callable[[], bool],
                 msg_type: int) -> None:
        self._loop = loop
        self._fn = fn
        self._reply = reply
        self._limit = limit
        self._count = count
        self._stopped = stopped
        self._msg_type = msg_type
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[tuple[Node, Packet, Future[Any] | None]] = deque()
        self._held = 0  # queued for the loop, or running there
        self._scheduled = False  # a drain is queued on the loop
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        """Messages held now (queued for the loop, or running there)."""
        return self._held

    def close(self) -> None:
        """Take no more messages; wake the lanes waiting for room (they drop theirs)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __call__(self, sender: Node, packet: Packet) -> Future[Any] | None:
        """The engine's handler (a user lane thread): queue the message for the loop."""
        reply: Future[Any] | None = Future() if self._reply else None
        cond = self._cond
        with cond:
            waited = False
            while self._held >= self._limit and not self._closed:
                if not packet.reliable:
                    self._count("dropped.async_handler_full")
                    return _refused(reply, "the asyncio handler is full")
                if not waited:
                    waited = True
                    self._count("async.handler_waits")
                cond.wait(_WAIT_POLL)
                if self._stopped():
                    self._closed = True
            if self._closed:
                self._count("dropped.async_handler_closed")
                return _refused(reply, "the cluster is stopping")
            self._held += 1
            self._pending.append((sender, packet, reply))
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nothing will ever run there
                with cond:
                    dropped = len(self._pending)
                    self._pending.clear()
                    self._held -= dropped
                    self._closed = True
                for _ in range(dropped):
                    self._count("dropped.async_handler_closed")
                return _refused(reply, "the asyncio loop is closed")
        return reply

    def _drain(self) -> None:
        """On the loop: start the handler for every queued message, in order."""
        with self._cond:
            items = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for sender, packet, reply in items:
            self._start(sender, packet, reply)

    def _start(self, sender: Node, packet: Packet, reply: Future[Any] | None) -> None:
        try:
            result = self._fn(sender, packet)
        except Exception as exc:
            self._failed(exc, reply)
            self._done()
            return
        if not inspect.isawaitable(result):
            if reply is not None:
                _settle(reply, result)
            self._done()
            return
        task = self._loop.create_task(self._finish(result, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, awaitable: Awaitable[Any], reply: Future[Any] | None) -> None:
        try:
            value = await awaitable
        except asyncio.CancelledError:
            if reply is not None:
                reply.cancel()
            raise
        except Exception as exc:
            self._failed(exc, reply)
        else:
            if reply is not None:
                _settle(reply, value)
        finally:
            self._done()

    def _failed(self, exc: Exception, reply: Future[Any] | None) -> None:
        if reply is not None:
            _settle(reply, exc=exc)  # the engine logs, counts and answers with the error
            return
        self._count("handler_errors.message")
        logger.error("asyncio message handler for type %d raised", self._msg_type, exc_info=exc)

    def _done(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify()

    def cancel_tasks(self) -> None:
        """Cancel the handlers still running (on the loop's thread)."""
        for task in list(self._tasks):
            task.cancel()


def _settle(fut: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def _refused(reply: Future[Any] | None, why: str) -> Future[Any] | None:
    if reply is not None:
        reply.set_exception(ClusterClosed(why))
    return reply


def stream_handler(engine: Engine, loop: asyncio.AbstractEventLoop,
                   fn: Callable[..., Awaitable[Any]]) -> Callable[[Node, Packet, Stream], None]:
    """Return the engine's stream handler for the coroutine function ``fn``.

    It runs on the stream pool's worker: it wraps the stream in an
    :class:`~gossip.aio.AsyncStream`, runs ``fn`` on ``loop``, serves the stream's writes
    until ``fn`` ends, and then raises what ``fn`` raised (the pool aborts the stream) or
    returns (the pool closes it).
    """

    def serve(sender: Node, packet: Packet, stream: Stream) -> None:
        pump = engine.streams.pump(stream, writer_lent=True)
        astream = AsyncStream(pump, loop)
        try:
            done = asyncio.run_coroutine_threadsafe(_call(fn, sender, packet, astream), loop)
        except RuntimeError as exc:  # the loop is closed
            raise ClusterClosed("the asyncio loop of the stream handler is closed") from exc
        pump.serve_writes(until=done)
        if not done.done():  # the stream was cut (the cluster stops)
            done.cancel()
            raise ClusterClosed("the node is stopping")
        done.result()

    return serve


async def _call(fn: Callable[..., Awaitable[Any]], sender: Node, packet: Packet,
                stream: AsyncStream) -> None:
    await fn(sender, packet, stream)
