"""Helpers of the asyncio face's tests: each test runs its coroutine with :func:`run` (no
pytest plugin needed), and waits for what it expects with :func:`until`, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import gossip
import gossip.aio
from gossip import Config

from gossip.testing import scaled

T = TypeVar("T")


def run(main: Awaitable[T], timeout: float = 60.0) -> T:
    """Run ``main`` on a new loop, failing the test past ``timeout`` (scaled) seconds."""
    async def bounded() -> T:
        return await asyncio.wait_for(main, scaled(timeout))

    return asyncio.run(bounded())


async def until(predicate: Callable[[], bool], timeout: float, what: str,
                interval: float = 0.02) -> None:
    """Poll ``predicate`` on the loop until it holds; fail after ``timeout`` (scaled) seconds."""
    end = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() >= end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def local(**overrides: Any) -> Config:
    """A loopback node's configuration (the local preset, port 0)."""
    return Config.local(bind_addr="127.0.0.1:0", **overrides)


async def joined(*clusters: gossip.aio.Cluster | gossip.Cluster) -> None:
    """Join every cluster to the first and wait until each sees all of them alive."""
    first = clusters[0]
    for c in clusters[1:]:
        if isinstance(c, gossip.aio.Cluster):
            await c.join([first.address])
        else:
            c.join([first.address])
    n = len(clusters)
    await until(lambda: all(c.num_alive_nodes() == n for c in clusters), 10.0,
                f"{n} nodes see each other alive")


def node_of(viewer: gossip.aio.Cluster | gossip.Cluster,
            other: gossip.aio.Cluster | gossip.Cluster) -> gossip.Node:
    """``other`` as ``viewer`` sees it."""
    node = viewer.get_node(other.local_node().id)
    assert node is not None
    return node
