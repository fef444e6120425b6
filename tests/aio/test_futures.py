"""Awaiting the engine's futures on the loop (gossip.aio._futures): a future completed on
another thread resumes the awaiting task in one loop callback, cancelling the await cancels
the engine's future, and a cancellation racing the completion ends the call one way only."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from gossip.aio._futures import _LoopWaiter, wait, wait_maybe

from . import run


class Awaited(Future[int]):
    """A future completed on another thread once something waits for it (a done callback is
    set), so that the await never finds it done already, however slow the loop's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def add_done_callback(self, fn: Any) -> None:
        super().add_done_callback(fn)
        self.awaited.set()

    def complete_when_awaited(self, value: int) -> None:
        assert self.awaited.wait(30.0)
        self.set_result(value)


def errors_of(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """Every error the loop reports (an exception in a callback, say), collected."""
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, ctx: seen.append(ctx))
    return seen


def test_a_future_completed_on_another_thread_resumes_the_task_in_one_loop_callback() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors = errors_of(loop)
        wakes = later = 0
        real_threadsafe, real_soon = loop.call_soon_threadsafe, loop.call_soon

        def threadsafe(*args: Any, **kw: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real_threadsafe(*args, **kw)

        def soon(*args: Any, **kw: Any) -> Any:
            nonlocal later
            later += 1
            return real_soon(*args, **kw)

        loop.call_soon_threadsafe = threadsafe  # type: ignore[method-assign]
        loop.call_soon = soon  # type: ignore[method-assign]
        for value in range(50):
            fut = Awaited()
            t = threading.Thread(target=fut.complete_when_awaited, args=(value,))
            t.start()
            assert await wait(fut) == value
            t.join()
        loop.call_soon = real_soon  # type: ignore[method-assign]
        assert wakes == 50  # one wake-up of the loop per call
        assert later == 0  # and the task resumed in it, not one more turn of the loop later
        failing: Future[int] = Future()
        threading.Timer(0.001, failing.set_exception, (KeyError("gone"),)).start()
        with pytest.raises(KeyError):
            await wait(failing)
        done: Future[int] = Future()
        done.set_result(7)
        assert await wait(done) == 7
        await wait_maybe(None)
        assert errors == []

    run(main())


def test_cancelling_the_await_cancels_the_engine_future() -> None:
    async def main() -> None:
        fut: Future[int] = Future()
        task = asyncio.ensure_future(wait(fut))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()
        with pytest.raises(asyncio.TimeoutError):
            other: Future[int] = Future()
            await asyncio.wait_for(wait(other), 0.01)
        assert other.cancelled()

    run(main())


def test_a_cancellation_racing_the_completion_ends_each_call_one_way_only() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors = errors_of(loop)
        results = cancelled = 0
        for i in range(300):
            fut: Future[int] = Future()
            task = asyncio.ensure_future(wait(fut))
            await asyncio.sleep(0)  # the task waits
            go = threading.Event()

            def complete(f: Future[int] = fut, n: int = i) -> None:
                go.wait()
                try:
                    f.set_result(n)
                except Exception:  # cancelled first
                    pass

            t = threading.Thread(target=complete)
            t.start()
            go.set()
            if i % 2:
                await asyncio.sleep(0)
            task.cancel()
            try:
                assert await task == i
                results += 1
            except asyncio.CancelledError:
                cancelled += 1
                # cancelled first: the engine's future was cancelled, or completed a moment
                # after it could no longer be (the engine then counts what it dropped)
                assert fut.done()
            t.join()
        assert results + cancelled == 300
        await asyncio.sleep(0.01)  # any stray callback would run now
        assert errors == []

    run(main())


def test_a_future_completed_after_its_loop_closed_wakes_nobody() -> None:
    fut: Future[int] = Future()

    async def main() -> None:
        task = asyncio.ensure_future(wait(fut))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    loop = asyncio.new_event_loop()
    waiter = _LoopWaiter(loop, Future[int]())
    loop.close()
    waiter._done_elsewhere(Future())  # the loop is closed: nothing raises
    run(main())


def test_the_waiter_answers_as_a_future_does() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: Future[int] = Future()
        w = _LoopWaiter(loop, fut)
        assert w.get_loop() is loop and not w.done() and not w.cancelled()
        with pytest.raises(asyncio.InvalidStateError):
            w.result()
        with pytest.raises(asyncio.InvalidStateError):
            w.exception()
        seen: list[object] = []
        w.add_done_callback(seen.append)
        w.add_done_callback(seen.append)
        assert w.remove_done_callback(seen.append) == 2
        w.add_done_callback(seen.append)
        fut.set_result(3)
        await asyncio.sleep(0.05)
        assert w.done() and w.result() == 3 and w.exception() is None
        assert seen == [w]
        w.add_done_callback(seen.append)  # done already: called soon
        await asyncio.sleep(0)
        assert seen == [w, w]
        assert not w.cancel()
        gen = _LoopWaiter(loop, Future[int]()).__await__()
        next(gen)  # yields itself, as a pending future does
        with pytest.raises(RuntimeError, match="await wasn't used with a task"):
            gen.send(None)
        c = _LoopWaiter(loop, Future[int]())
        assert c.cancel() and c.cancelled()
        with pytest.raises(asyncio.CancelledError):
            c.result()
        with pytest.raises(asyncio.CancelledError):
            c.exception()

    run(main())
