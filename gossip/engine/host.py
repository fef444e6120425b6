"""The one lock around the protocol core, and the two ways in: commands and received messages.

The core (:class:`~gossip.protocol.Protocol`) is not thread-safe. Every call into it happens
under :attr:`CoreHost.lock`, which is also the lock of :attr:`CoreHost.wake`, the condition the
scheduler sleeps on, so a call that brings a timer forward wakes the scheduler without a second
lock. Nothing but core calls and the draining of its actions happens under the lock: no I/O, no
user code. The actions are handed back and performed by the caller after the lock is released
(see :mod:`gossip.engine.outgoing`).

This module imports the core and the transports' :class:`Incoming`; it never touches sockets.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import ClusterClosed
from ..messages import Message
from ..node import NodeID
from ..protocol import Protocol
from ..protocol.actions import Action

__all__ = ["CoreHost"]

T = TypeVar("T")


class CoreHost:
    """Owns the core once it exists, its lock, and the scheduler's wake-up condition."""

    __slots__ = ("lock", "wake", "_core", "planned")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self._core: Protocol | None = None
        self.planned = math.inf  # when the sleeping scheduler plans to wake (under the lock)

    @property
    def core(self) -> Protocol:
        """The core (touch it only under :attr:`lock`).

        Raises:
            ClusterClosed: the engine was never started.
        """
        core = self._core
        if core is None:
            raise ClusterClosed("the cluster is not started")
        return core

    @property
    def started(self) -> bool:
        """True once the core exists."""
        return self._core is not None

    def install(self, core: Protocol) -> None:
        """Set the core (once, at start)."""
        self._core = core

    def call(self, fn: Callable[[Protocol], T]) -> tuple[T, list[Action]]:
        """Run ``fn(core)`` under the lock; return its result and the actions it produced.

        Raises:
            ClusterClosed: the engine was never started.
        """
        core = self.core
        with self.lock:
            result = fn(core)
            actions = core.actions_to_perform()
            self._maybe_wake(core)
        return result, actions

    def receive(
        self, now: float, items: Sequence[tuple[str, Message, NodeID, bool, bool | None, bool]]
    ) -> tuple[list[list[Action]], list[tuple[Message, Exception]]]:
        """Feed received messages ``(src, msg, sender, reliable, app_version_ok,
        authenticated)`` under one lock acquisition (``app_version_ok``: the verdict on a
        join's application version, computed by the caller before, since user code never runs
        under the lock; ``authenticated``: the packet was sealed with a cluster key).

        Returns the actions of each message separately, so that each reply can go back on the
        connection its request came in on, and the messages whose handling raised (a bug in
        the core: the caller logs it; the other messages of the batch are still handled).
        """
        core = self.core
        out: list[list[Action]] = []
        failed: list[tuple[Message, Exception]] = []
        with self.lock:
            for src, msg, sender, reliable, app_ok, authenticated in items:
                try:
                    core.receive(now, src, msg, sender, reliable, app_ok, authenticated)
                except Exception as exc:  # keep the reader alive whatever the input
                    failed.append((msg, exc))
                out.append(core.actions_to_perform())
            self._maybe_wake(core)
        return out, failed

    def _maybe_wake(self, core: Protocol) -> None:
        assert self.lock.locked()
        if core.next_deadline() < self.planned:
            self.wake.notify()
