"""Requests exchanged on the loop itself, on a connection the transport lends.

A blocking request writes its request and reads the reply on a connection of its own, on the
caller's thread: the kernel wakes that one thread when the reply comes. An awaited request
sent on the pooled connection costs two thread wake-ups more: the engine's I/O thread reads the
reply, then wakes the loop. When the transport has an idle request connection to the node
(:class:`~gossip.transports.base.RequestLine`), the loop drives the exchange itself instead: it
writes the request as the socket takes it and reads the reply when the socket is readable, with
the loop's own selector. The loop then does what the blocking caller's thread does, and no
other thread is woken.

Nothing of the protocol runs here: the exchange only moves one request and its reply on a
connection no other part of the engine reads. A blocked loop delays this one reply, as it
delays everything else it runs, and nothing else.

The reply resumes the awaiting task within the reader's callback (a
:class:`~._futures.LoopFuture`), not one turn of the loop later. An exchange ends with the
reply, with the request's timeout (:class:`GossipTimeout`; the connection is closed), with a
broken connection (:class:`SendError`), or when the face stops (:class:`ClusterClosed`).
Cancelling the await before the request was written whole closes the connection; after that,
the exchange keeps reading until the reply comes, which it drops and counts (``on_late``), or
the request's timeout passes, so that the connection can serve the next request.

This module imports nothing from :mod:`gossip` but the errors, the transports' interface
(the :class:`RequestLine` protocol it drives) and :mod:`._futures`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import ClusterClosed, GossipTimeout
from ..transports.base import RequestLine
from ._futures import LoopFuture

__all__ = ["Exchanges"]


class _Exchange:
    """One request on a :class:`RequestLine`, driven by the loop; see the module docstring.
    Every method runs on the loop's thread."""

    __slots__ = ("_owner", "_loop", "_line", "_fd", "_watch", "_timer", "_ended", "fut",
                 "_timeout_msg")

    def __init__(self, owner: Exchanges, loop: asyncio.AbstractEventLoop, line: RequestLine,
                 timeout: float, timeout_msg: Callable[[], str]) -> None:
        self._owner = owner
        self._loop = loop
        self._line = line
        self._fd = line.fileno()
        self._watch = ""  # "r" or "w": what the loop watches on the socket for this exchange
        self._ended = False  # the line was given back
        self._timeout_msg = timeout_msg
        self.fut: LoopFuture[bytes] = LoopFuture(loop)
        # May raise SendError: the caller releases the line (nothing is watched yet).
        if line.flush():
            self._watch = "r"
            loop.add_reader(self._fd, self._readable)
        else:
            self._watch = "w"
            loop.add_writer(self._fd, self._writable)
        self._timer = loop.call_later(timeout, self._timed_out)
        self.fut.add_done_callback(self._settled)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, ""
        if watch == "r":
            self._loop.remove_reader(self._fd)
        elif watch == "w":
            self._loop.remove_writer(self._fd)

    def _end(self, clean: bool) -> None:
        """Stop watching, cancel the timer, give the line back (clean: for reuse); once."""
        if self._ended:
            return
        self._ended = True
        self._unwatch()
        self._timer.cancel()
        self._owner._live.pop(self, None)
        self._line.release(clean)

    def _writable(self) -> None:
        try:
            done = self._line.flush()
        except Exception as exc:
            self.abort(exc)
            return
        if done:
            self._unwatch()
            self._watch = "r"
            self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            reply = self._line.read()
        except Exception as exc:
            self.abort(exc)
            return
        if reply is None:
            return
        fut = self.fut
        self._end(True)
        if fut.done():  # the await was cancelled: nobody wants the reply
            self._owner._on_late()
        else:
            fut.set_result(reply)

    def abort(self, exc: BaseException) -> None:
        """End the exchange now with ``exc`` (a broken connection, the face stopping); the
        connection is closed. Nothing changes for an exchange that has ended."""
        self._end(False)
        if not self.fut.done():
            self.fut.set_exception(exc)

    def _timed_out(self) -> None:
        self.abort(GossipTimeout(self._timeout_msg()))

    def _settled(self, fut: LoopFuture[bytes]) -> None:
        """The future is done: if it was cancelled before the request was written whole, the
        connection goes; after, the exchange reads on until the reply or the timeout."""
        if fut.cancelled() and not self._line.written:
            self._end(False)


class Exchanges:
    """The exchanges one face drives; see the module docstring.

    Args:
        on_late: called (on the loop) with each reply that came after its await was cancelled.
    """

    def __init__(self, on_late: Callable[[], None]) -> None:
        self._on_late = on_late
        self._live: dict[_Exchange, asyncio.AbstractEventLoop] = {}

    async def exchange(self, line: RequestLine, timeout: float,
                       timeout_msg: Callable[[], str]) -> bytes:
        """Write the line's request and return its reply frame, on the running loop.

        Raises:
            GossipTimeout: no reply within ``timeout`` (``timeout_msg()`` says what).
            SendError: the connection broke (``line.retry`` says if the request may be sent
                again another way).
            ClusterClosed: the transport closed, or the face stopped.
        """
        loop = asyncio.get_running_loop()
        try:
            ex = _Exchange(self, loop, line, timeout, timeout_msg)
        except BaseException:
            line.release(False)
            raise
        self._live[ex] = loop
        return await ex.fut

    def abort_all(self) -> None:
        """End every live exchange with :class:`ClusterClosed` (those of another loop on that
        loop's thread)."""
        here = _running_loop()
        for ex, loop in list(self._live.items()):
            exc = ClusterClosed("the cluster is stopped")
            if loop is here:
                ex.abort(exc)
            else:
                try:
                    loop.call_soon_threadsafe(ex.abort, exc)
                except RuntimeError:  # that loop is closed: its sockets are the transport's
                    self._live.pop(ex, None)

    def __len__(self) -> int:
        return len(self._live)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
