"""Fixtures of the transport tests: the integration tests' thread-leak check applies here too."""

from __future__ import annotations

from integration.conftest import no_gossip_thread_leak

__all__ = ["no_gossip_thread_leak"]
