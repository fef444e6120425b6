"""Distributed locks with fencing tokens, granted by the elected leader.

::

    from gossip.locks import LockService

    with LockService(cluster) as locks:
        with locks.acquire("nightly-report", ttl=30.0, timeout=10.0) as lease:
            store.write(report, fencing_token=lease.token)

:class:`LockService` is the threaded host (it uses only the public :class:`gossip.Cluster` API
and :class:`gossip.leader.LeaderElection`); :class:`~gossip.locks.core.LockCore` is the pure
state machine it drives, which the simulator (``python -m gossip.sim --scenario locks``) drives
too. How it stays safe, and what it assumes, is written at the top of
:mod:`gossip.locks.grantor` (the leader and the replicas) and :mod:`gossip.locks.requester`
(when a lease ends on the holder's side).
"""

from __future__ import annotations

from .base import LockConfig, LockView
from .core import LockCore
from .messages import FencingToken
from .requester import TooManyRequests
from .service import Lease, LockHolder, LockLost, LockRefused, LockService

__all__ = ["LockService", "Lease", "LockHolder", "LockLost", "LockRefused", "LockConfig", "FencingToken",
           "TooManyRequests", "LockCore", "LockView"]
