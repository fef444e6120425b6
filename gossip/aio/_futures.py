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

__all__ = ["LoopFuture", "wait", "wait_maybe"]

T = TypeVar("T")

_PENDING, _DONE, _CANCELLED = 0, 1, 2

_Callback = tuple[Callable[[Any], object], contextvars.Context | None]


class LoopFuture(Generic[T]):
    """A future of one loop that resumes its awaiting task at once when resolved: no second
    turn of the loop between the result and the task (an :class:`asyncio.Future` schedules
    its callbacks with ``call_soon``). It has ``_asyncio_future_blocking``, which asyncio's
    tasks accept as they accept an :class:`asyncio.Future`. Every method runs on the loop's
    thread. Resolved from a loop callback (a reader's, a timer's), it resumes its waiters
    there and then; resolved from inside a task, on the loop's next turn."""

    __slots__ = ("_loop", "_state", "_result", "_exc", "_callbacks", "_asyncio_future_blocking")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._state = _PENDING
        self._result: T | None = None
        self._exc: BaseException | None = None
        self._callbacks: list[_Callback] = []
        self._asyncio_future_blocking = False

    def set_result(self, result: T) -> None:
        """Resolve with ``result`` and resume the waiter now (nothing if already done)."""
        if self._state == _PENDING:
            self._result = result
            self._resolve()

    def set_exception(self, exc: BaseException) -> None:
        """Resolve with ``exc`` and resume the waiter now (nothing if already done)."""
        if self._state == _PENDING:
            self._exc = exc
            self._resolve()

    def _resolve(self) -> None:
        self._state = _DONE
        callbacks, self._callbacks = self._callbacks, []
        loop = self._loop
        if asyncio.current_task(loop) is not None:
            # Resolved from inside a task (a stop that ends what is pending): a task cannot
            # step inside another one, so the waiters resume on the next turn, as usual.
            for fn, context in callbacks:
                loop.call_soon(fn, self, context=context)
            return
        for fn, context in callbacks:
            if context is None:
                fn(self)
            else:
                context.run(fn, self)

    # ---------------------------------------------------------- what asyncio's tasks call

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the future belongs to."""
        return self._loop

    def done(self) -> bool:
        """True once resolved or cancelled."""
        return self._state != _PENDING

    def cancelled(self) -> bool:
        """True if cancelled."""
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
        """Cancel the future (its callbacks run soon, as an :class:`asyncio.Future`'s do)."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        callbacks, self._callbacks = self._callbacks, []
        for fn, context in callbacks:
            self._loop.call_soon(fn, self, context=context)
        return True

    def result(self) -> T:
        """The result (raises the exception; CancelledError if cancelled)."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("result is not ready")
        if self._exc is not None:
            raise self._exc
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        """The exception, or None."""
        if self._state == _CANCELLED:
            raise asyncio.CancelledError()
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("exception is not set")
        return self._exc

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            yield self
        if self._state == _PENDING:
            raise RuntimeError("await wasn't used with a task")
        return self.result()

    __iter__ = __await__


class _LoopWaiter(LoopFuture[T]):
    """What a task awaits while the engine's future ``fut`` is not done; see the module
    docstring. Every method but the engine's done callback runs on the loop's thread."""

    __slots__ = ("_fut",)

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: Future[T]) -> None:
        super().__init__(loop)
        self._fut = fut
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
        fut = self._fut
        if fut.cancelled():
            self._exc = asyncio.CancelledError()
        else:
            self._exc = fut.exception()
            if self._exc is None:
                self._result = fut.result()
        self._resolve()

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the wait and the engine's future (what it holds for the call is released)."""
        if not super().cancel(msg):
            return False
        self._fut.cancel()
        return True


async def wait(fut: Future[T]) -> T:
    """Await ``fut`` without blocking the loop (cancelling the await cancels ``fut``)."""
    if fut.done() and not fut.cancelled():
        return fut.result()  # already there: no hop through the loop's self-pipe
    return await _LoopWaiter(asyncio.get_running_loop(), fut)


async def wait_maybe(fut: Future[None] | None) -> None:
    """Await ``fut`` unless it is None (the call completed at once)."""
    if fut is not None:
        await wait(fut)
