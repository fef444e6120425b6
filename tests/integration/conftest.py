"""Fixtures of the integration tests: every test is marked, and no ``gossip-`` thread leaks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from . import gossip_threads, scaled


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests in this directory are integration tests even if a marker was forgotten."""
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def no_gossip_thread_leak() -> Iterator[None]:
    """Fail a test that leaves a ``gossip-`` thread running it did not find at its start.

    Threads of clusters owned by module-scoped fixtures predate the test and are ignored, and
    so are the threads such a cluster starts during the test (a receive lane starts with its
    first packet): they share the running cluster's name prefix (``gossip-<node>-``). A short
    grace period lets threads that are already finishing end.
    """
    before = gossip_threads()
    owners = {_owner(n) for n in before.values()}
    yield
    end = time.monotonic() + scaled(3.0)
    while True:
        leaked = {i: n for i, n in gossip_threads().items()
                  if i not in before and _owner(n) not in owners}
        if not leaked or time.monotonic() >= end:
            break
        time.sleep(0.05)
    if leaked:
        pytest.fail(f"gossip threads still running after the test: {sorted(leaked.values())}")


def _owner(thread_name: str) -> str:
    """The cluster (or transport) a ``gossip-<owner>-<role>`` thread belongs to."""
    return thread_name.split("-", 2)[1] if thread_name.count("-") >= 2 else thread_name
