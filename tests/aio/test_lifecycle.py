"""Clean exit: ``asyncio.run(main())`` leaves no gossip thread and no open file descriptor
behind, whether ``main()`` returns or is cancelled (also while its cluster is leaving)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import gossip
import gossip.aio
from gossip import Node, Packet
from gossip.aio import AsyncStream
from gossip.testing import gossip_threads, scaled

from . import joined, local, node_of, until

T = gossip.USER_MSG + 330


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def assert_clean(fds_before: set[int], threads_before: set[int]) -> None:
    """No gossip thread and no file descriptor left beyond what was there before (bounded
    wait: a thread that was told to end may still be on its way out)."""
    end = time.monotonic() + scaled(5.0)
    while True:
        threads = {i: n for i, n in gossip_threads().items() if i not in threads_before}
        fds = open_fds() - fds_before
        if (not threads and not fds) or time.monotonic() >= end:
            break
        time.sleep(0.05)
    assert threads == {}, sorted(threads.values())
    leaked = {fd: _describe(fd) for fd in fds}
    assert leaked == {}, leaked


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


async def busy_pair(a: gossip.aio.Cluster, b: gossip.aio.Cluster) -> None:
    """Use everything that holds a thread or a descriptor: handlers on the loop, a request,
    events, a stream both ways (left open), a reliable connection."""
    got: list[int] = []

    async def on_msg(sender: Node, packet: Packet) -> None:
        got.append(packet.unmarshal())

    async def echo(sender: Node, packet: Packet, stream: AsyncStream) -> None:
        async for chunk in stream:
            await stream.write(chunk)

    b.handle_func(T, on_msg)
    b.handle_func_with_reply(T + 1, lambda s, p: p.unmarshal() + 1)
    b.handle_stream_func(T + 2, echo)
    events = a.events()
    await joined(a, b)
    nb = node_of(a, b)
    await a.send_to_reliable(nb, T, 1)
    assert await a.send_to_with_response(nb, T + 1, 41) == 42
    stream = await a.open_stream(nb, T + 2)
    await stream.write(b"ping")
    assert await stream.readexactly(4) == b"ping"
    await until(lambda: got == [1], 10.0, "the message handled")
    assert await anext(events) is not None


def test_asyncio_run_leaves_no_thread_and_no_descriptor_behind() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            await busy_pair(a, b)
        assert not a.running and not b.running

    fds, threads = open_fds(), set(gossip_threads())
    asyncio.run(main())
    assert_clean(fds, threads)


def test_a_cancelled_main_leaves_no_thread_and_no_descriptor_behind() -> None:
    clusters: list[gossip.aio.Cluster] = []

    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            clusters.extend((a, b))
            await busy_pair(a, b)
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_soon(task.cancel)
            await asyncio.sleep(3600)  # cancelled here: the clusters stop on the way out

    fds, threads = open_fds(), set(gossip_threads())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert clusters and not any(c.running for c in clusters)
    assert_clean(fds, threads)


def test_a_main_cancelled_again_while_its_cluster_leaves_still_stops_it() -> None:
    clusters: list[gossip.aio.Cluster] = []

    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            clusters.extend((a, b))
            await joined(a, b)
            # b stops first; ask it to leave toward a peer that no longer answers, and cancel
            # that leave too: stop() still ends every thread.
            await a.stop(leave=False)
            leaving = asyncio.create_task(b.stop(timeout=10.0))
            await asyncio.sleep(0)
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
            assert not b.running

    fds, threads = open_fds(), set(gossip_threads())
    asyncio.run(main())
    assert clusters and not any(c.running for c in clusters)
    assert_clean(fds, threads)
