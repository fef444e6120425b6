"""Distributed locks with fencing tokens, granted by the elected leader.

::

    from gossip.locks import LockService

    with LockService(cluster) as locks:
        with locks.acquire("nightly-report", ttl=30.0, timeout=10.0) as lease:
            store.write(report, fencing_token=lease.token)

See :class:`LockService` for the API and :mod:`gossip.locks.grantor` for how it is kept safe.
"""

from __future__ import annotations

from .base import LockConfig, LockView
from .core import LockCore
from .messages import FencingToken
from .requester import TooManyRequests

__all__ = ["LockConfig", "LockView", "LockCore", "FencingToken", "TooManyRequests"]
