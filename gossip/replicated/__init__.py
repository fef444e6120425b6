"""A replicated last-writer-wins map: a small table every node of the cluster sees.

::

    from gossip.replicated import ReplicatedMap

    with ReplicatedMap(cluster, "config") as table:
        table.set("max_upload_mb", 25)
        table.on_change(lambda change: print(change.key, change.value))

:class:`ReplicatedMap` is the threaded host (it uses only the public :class:`gossip.Cluster` API);
:class:`~gossip.replicated.core.MapCore` is the pure state machine it drives, which the simulator
drives too (:mod:`gossip.sim.replicated`). The rules (last writer wins by HLC stamp, tombstones,
anti-entropy by digest, the bounds) are written at the top of :mod:`gossip.replicated.core`.
"""

from __future__ import annotations

from .core import Changed, Entry, MapConfig, MapCore, MapFull
from .host import ChangeHandler, ReplicatedMap

__all__ = ["ReplicatedMap", "MapConfig", "Changed", "ChangeHandler", "MapFull", "Entry", "MapCore"]
