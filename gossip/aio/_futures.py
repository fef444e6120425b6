"""Awaiting the engine's :class:`concurrent.futures.Future` objects on the running loop.

The engine's calls that never block return a future that one of its threads completes;
:func:`wait` awaits it as :func:`asyncio.wrap_future` would, with less work per call. The
awaiting task waits on a :class:`_LoopWaiter`, a future-like object (it has
``_asyncio_future_blocking``, which asyncio's tasks accept as they accept an
:class:`asyncio.Future`). When the engine's thread completes its future, it wakes the loop once
(``call_soon_threadsafe``), and that one callback resumes the task at once: no second loop
future is chained to the first, and the task does not wait one more turn of the loop. The
result is read from the engine's future itself.

Cancelling the await cancels the engine's future, which releases what the engine held for the
call (a reply waiter, a frame not yet sent, a join waiter).

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["wait", "wait_maybe"]

T = TypeVar("T")

_PENDING, _DONE, _CANCELLED = 0, 1, 2

_Callback = tuple[Callable[[Any], object], contextvars.Context | None]


class _LoopWaiter(Generic[T]):
    """What a task awaits while the engine's future ``fut`` is not done; see the module
    docstring. Every method but the engine's done callback runs on the loop's thread."""

    __slots__ = ("_loop", "_fut", "_state", "_callbacks", "_asyncio_future_blocking")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: Future[T]) -> None:
        self._loop = loop
        self._fut = fut
        self._state = _PENDING
        self._callbacks: list[_Callback] = []
        self._asyncio_future_blocking = False
        fut.add_done_callback(self._done_elsewhere)

    def _done_elsewhere(self, _: Future[T]) -> None:
        """The engine's thread completed the future: wake the loop, once."""
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody awaits any more
            pass

    def _deliver(self) -> None:
        """On the loop: resume the waiting task now (unless it was cancelled meanwhile)."""
        if self._state != _PENDING:
            return
        self._state = _DONE
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            if context is None:
                fn(self)
            else:
                context.run(fn, self)

    # ---------------------------------------------------------- what asyncio's tasks call

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the waiter belongs to."""
        return self._loop

    def done(self) -> bool:
        """True once the engine's future completed here, or the wait was cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if the wait was cancelled."""
        return self._state == _CANCELLED

    def add_done_callback(self, fn: Callable[[Any], object], *,
                          context: contextvars.Context | None = None) -> None:
        """Call ``fn(self)`` on the loop when done (soon, if done already)."""
        if self._state != _PENDING:
            self._loop.call_soon(fn, self, context=context)
        else:
            self._callbacks.append((fn, context))

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        """Forget ``fn``; return how many times it was set."""
        kept = [c for c in self._callbacks if c[0] != fn]
        removed = len(self._callbacks) - len(kept)
        self._callbacks = kept
        return removed

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the wait and the engine's future (what it holds for the call is released)."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._fut.cancel()
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            self._loop.call_soon(fn, self, context=context)
        return True

    def result(self) -> T:
        """The engine's future's result (raises its exception; CancelledError if cancelled)."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("result is not ready")
        return self._fut.result()

    def exception(self) -> BaseException | None:
        """The engine's future's exception, or None."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("exception is not set")
        return self._fut.exception()

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        if self._state == _PENDING:
            raise RuntimeError("await wasn't used with a task")
        return self.result()

    __iter__ = __await__


async def wait(fut: Future[T]) -> T:
    """Await ``fut`` without blocking the loop (cancelling the await cancels ``fut``)."""
    if fut.done() and not fut.cancelled():
        return fut.result()  # already there: no hop through the loop's self-pipe
    return await _LoopWaiter(asyncio.get_running_loop(), fut)


async def wait_maybe(fut: Future[None] | None) -> None:
    """Await ``fut`` unless it is None (the call completed at once)."""
    if fut is not None:
        await wait(fut)
