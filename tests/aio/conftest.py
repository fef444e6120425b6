"""The asyncio face's tests run real clusters on loopback: they are integration tests, and no
``gossip-`` thread may outlive one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gossip.testing import gossip_threads, scaled


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is an integration test."""
    for item in items:
        if "tests/aio/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def no_gossip_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a ``gossip-`` thread running that it did not find at its start
    (a short grace period lets threads that are already ending end)."""
    before = set(gossip_threads())
    yield
    end = time.monotonic() + scaled(3.0)
    while True:
        leaked = {i: n for i, n in gossip_threads().items() if i not in before}
        if not leaked or time.monotonic() >= end:
            break
        time.sleep(0.05)
    if leaked:
        pytest.fail(f"gossip threads still running after the test: {sorted(leaked.values())}")
