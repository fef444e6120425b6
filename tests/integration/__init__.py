"""Integration tests: real UDP/TCP sockets on loopback, separate processes, the examples.

Shared helpers live here. Every wait is a bounded poll (:func:`wait_until`); timeouts are
multiplied by the environment variable ``GOSSIP_TESTS_TIMEOUT_FACTOR`` (default 1) for slow
machines. Nothing asserts on speed.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import ExitStack, contextmanager

import pytest

__all__ = ["FACTOR", "scaled", "wait_until", "gossip_threads", "loopback_blackhole", "REPO_ROOT",
           "ws_connect"]

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


@contextmanager
def loopback_blackhole(host: str = "127.0.0.1") -> Iterator[str]:
    """Yield ``host:port`` on loopback where nothing ever answers, for the life of the block.

    UDP datagrams sent to it land on a bound socket that is never read (no reply, no ICMP
    error), and a TCP dial to it never completes: the port's listener has an accept queue of
    one that is already full, so the kernel drops every further SYN and the dialer waits out
    its own timeout. It is the loopback stand-in for an unroutable host: a test never names an
    address off the machine, because a node probes and dials every member it hears of.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        listener.bind((host, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        udp = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
        udp.bind((host, port))
        # Fill the accept queue (never accepted) until a dial stays pending.
        for _ in range(8):
            filler = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            filler.setblocking(False)
            rc = filler.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, f"cannot fill the blackhole's accept queue: {os.strerror(rc)}")
            deadline = time.monotonic() + 0.5
            while (err := filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)) == 0:
                try:
                    filler.getpeername()
                    break  # connected: the queue took it; dial again
                except OSError:
                    if time.monotonic() >= deadline:
                        yield f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
                        return
                    time.sleep(0.01)
            if err:
                raise OSError(err, f"dial to the blackhole failed: {os.strerror(err)}")
        raise RuntimeError("the blackhole's accept queue never filled")


def ws_connect(url: str, **kw: Any) -> Any:
    """Open a plain ``websockets`` client connection (not ours), for hostile or foreign peers.

    Works with every release of websockets the library supports: ``proxy=None`` (no proxy from
    the environment) and ``legacy=True`` (connect directly) are passed where the installed
    release knows them.
    """
    import inspect

    from websockets.sync.client import connect

    params = inspect.signature(connect).parameters
    if "proxy" in params:
        kw.setdefault("proxy", None)
    if "legacy" in params:
        kw.setdefault("legacy", True)
    return connect(url, **kw)
