"""Integration tests: real UDP/TCP sockets on loopback, separate processes, the examples.

Shared helpers live here. Every wait is a bounded poll (:func:`wait_until`); timeouts are
multiplied by the environment variable ``GOSSIP_TESTS_TIMEOUT_FACTOR`` (default 1) for slow
machines. Nothing asserts on speed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

__all__ = ["FACTOR", "scaled", "wait_until", "gossip_threads", "REPO_ROOT"]

FACTOR = float(os.environ.get("GOSSIP_TESTS_TIMEOUT_FACTOR", "1") or "1")
"""Multiplier applied to every timeout of the integration tests."""

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scaled(seconds: float) -> float:
    """Return ``seconds`` scaled by :data:`FACTOR`."""
    return seconds * FACTOR


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.03) -> None:
    """Poll ``predicate`` every ``interval`` s until it is true; fail after ``timeout`` (scaled).

    Raises:
        pytest.fail: with a message naming ``what`` did not happen.
    """
    limit = scaled(timeout)
    end = time.monotonic() + limit
    while True:
        if predicate():
            return
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {limit:.1f}s waiting until {what}")
        time.sleep(interval)


def gossip_threads() -> dict[int, str]:
    """Return the live threads whose name starts with ``gossip-``, by ident."""
    return {t.ident or 0: t.name for t in threading.enumerate()
            if t.name.startswith("gossip-") and t.is_alive()}
