"""The asyncio handlers' dispatcher (:class:`gossip.aio.handlers.Dispatcher`) on its own: what
it does when its loop is closed, when the cluster stops while a lane waits for room, when a
handler raises or is cancelled. Messages are stand-ins: the dispatcher only reads
``packet.reliable`` and hands both to the handler."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from gossip.aio.handlers import Dispatcher
from gossip.errors import ClusterClosed

WAIT = 10.0


def packet(reliable: bool = True) -> Any:
    return SimpleNamespace(reliable=reliable)


def make(loop: asyncio.AbstractEventLoop, fn: Any, reply: bool = False, limit: int = 4,
         stopped: Any = lambda: False) -> tuple[Dispatcher, Counter[str]]:
    counts: Counter[str] = Counter()
    return Dispatcher(loop, fn, reply, limit, lambda name: counts.update([name]),
                      stopped, 300), counts


def test_a_closed_loop_refuses_what_it_can_no_longer_run() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    d, counts = make(loop, lambda sender, p: None, reply=True)
    fut = d(None, packet())  # type: ignore[arg-type]
    assert isinstance(fut, Future)
    with pytest.raises(ClusterClosed, match="loop is closed"):
        fut.result(0)
    assert counts["dropped.async_handler_closed"] == 1 and d.held == 0
    with pytest.raises(ClusterClosed, match="stopping"):   # and stays closed
        d(None, packet()).result(0)  # type: ignore[arg-type,union-attr]


def test_a_lane_waiting_for_room_gives_up_when_the_dispatcher_closes() -> None:
    loop = asyncio.new_event_loop()         # never run: the first message holds the only room
    try:
        d, counts = make(loop, lambda sender, p: None, limit=1)
        assert d(None, packet()) is None  # type: ignore[arg-type]
        out: list[Any] = []
        lane = threading.Thread(target=lambda: out.append(d(None, packet())))  # type: ignore[arg-type]
        lane.start()
        while counts["async.handler_waits"] == 0:   # the lane waits for room
            lane.join(0.01)
        d.close()
        lane.join(WAIT)
        assert not lane.is_alive() and counts["dropped.async_handler_closed"] == 1
        assert d(None, packet(reliable=False)) is None  # type: ignore[arg-type]
        assert counts["dropped.async_handler_closed"] == 2
    finally:
        loop.close()


def test_a_lane_waiting_for_room_gives_up_when_the_cluster_stops() -> None:
    loop = asyncio.new_event_loop()
    stopped = threading.Event()
    try:
        d, counts = make(loop, lambda sender, p: None, limit=1, stopped=stopped.is_set)
        d(None, packet())  # type: ignore[arg-type]
        lane = threading.Thread(target=lambda: d(None, packet()))  # type: ignore[arg-type]
        lane.start()
        while counts["async.handler_waits"] == 0:
            lane.join(0.01)
        stopped.set()                        # seen at the lane's next poll
        lane.join(WAIT)
        assert not lane.is_alive() and counts["dropped.async_handler_closed"] == 1
    finally:
        loop.close()


def test_handlers_that_raise_are_counted_or_answered_with_the_error() -> None:
    async def boom(sender: Any, p: Any) -> None:
        raise ValueError("async boom")

    def plain_boom(sender: Any, p: Any) -> None:
        raise KeyError("plain boom")

    loop = asyncio.new_event_loop()
    try:
        d, counts = make(loop, boom)
        d(None, packet())  # type: ignore[arg-type]
        d2, counts2 = make(loop, plain_boom, reply=True)
        fut = d2(None, packet())  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0.05))
        assert counts["handler_errors.message"] == 1 and d.held == 0
        assert fut is not None and isinstance(fut.exception(0), KeyError) and d2.held == 0
    finally:
        loop.close()


def test_a_cancelled_handler_cancels_its_reply() -> None:
    started = asyncio.Event()

    async def forever(sender: Any, p: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    loop = asyncio.new_event_loop()
    try:
        d, _ = make(loop, forever, reply=True)
        fut = d(None, packet())  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.wait_for(started.wait(), WAIT))
        d.cancel_tasks()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert fut is not None and fut.cancelled() and d.held == 0
    finally:
        loop.close()
