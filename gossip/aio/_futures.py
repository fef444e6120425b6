"""Awaiting the engine's :class:`concurrent.futures.Future` objects on the running loop.

The engine's calls that never block return a future that one of its threads completes;
:func:`wait` awaits it as :func:`asyncio.wrap_future` would, with less work per call: the
engine's thread wakes the loop once (``call_soon_threadsafe``) to complete a bare loop future,
and the result is read from the engine's future itself. Cancelling the await cancels the
engine's future, which releases what the engine held for the call (a reply waiter, a frame not
yet sent, a join waiter).

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TypeVar

__all__ = ["wait", "wait_maybe"]

T = TypeVar("T")


async def wait(fut: Future[T]) -> T:
    """Await ``fut`` without blocking the loop (cancelling the await cancels ``fut``)."""
    if fut.done() and not fut.cancelled():
        return fut.result()  # already there: no hop through the loop's self-pipe
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def done(_: Future[T]) -> None:  # on the engine's thread that completed ``fut``
        try:
            loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # the loop is closed: nobody awaits any more
            pass

    fut.add_done_callback(done)
    try:
        await waiter
    except asyncio.CancelledError:
        fut.cancel()
        raise
    return fut.result()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # not cancelled meanwhile
        waiter.set_result(None)


async def wait_maybe(fut: Future[None] | None) -> None:
    """Await ``fut`` unless it is None (the call completed at once)."""
    if fut is not None:
        await wait(fut)
