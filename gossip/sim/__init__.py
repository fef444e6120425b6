"""Deterministic cluster simulator: many protocol cores, one process, virtual time.

The same :class:`gossip.protocol.Protocol` that the threaded engine hosts runs here on a
virtual clock over a simulated network (latency and jitter, uniform and bursty loss, reordering,
partitions, crashed, leaving and CPU-starved nodes). Every random choice comes from one seed,
so a run is replayed event for event: ``python -m gossip.sim --scenario crash --seed 7``.

Never imports the engine, the transports, ``threading`` or ``socket``.
"""

from __future__ import annotations

from .network import LinkModel, SimNetwork
from .scenarios import SCENARIOS, run_scenario
from .simulation import Simulation, SimNode

__all__ = ["Simulation", "SimNode", "SimNetwork", "LinkModel", "SCENARIOS", "run_scenario"]
