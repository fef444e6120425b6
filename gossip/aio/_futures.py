"""Awaiting the engine's :class:`concurrent.futures.Future` objects on the running loop.

The engine's calls that never block return a future that one of its threads completes;
:func:`wait` awaits it with :func:`asyncio.wrap_future`, whose cancellation cancels the
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
    return await asyncio.wrap_future(fut)


async def wait_maybe(fut: Future[None] | None) -> None:
    """Await ``fut`` unless it is None (the call completed at once)."""
    if fut is not None:
        await wait(fut)
