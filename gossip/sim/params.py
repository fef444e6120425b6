"""The parameters of a simulator scenario run: :class:`ScenarioParams`.

The scenarios (:mod:`gossip.sim.scenarios`), the leader scenarios (:mod:`gossip.sim.leader`) and
the command line (``python -m gossip.sim``) read them; they live below all three, so that the
scenarios can import the leader scenarios without an import circle.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ScenarioParams"]


@dataclasses.dataclass
class ScenarioParams:
    """Everything a scenario run depends on (the CLI has a flag for each)."""

    scenario: str = "crash"
    nodes: int | None = None
    seed: int = 1
    duration: float | None = None
    loss: float | None = None
    burst_loss: float = 0.0
    reorder: float = 0.0
    latency: float = 0.0005
    jitter: float = 0.0002
    lifeguard: bool = True
    config: str = "lan"
    warmup: float = 5.0
    starved: int = 5
    starve_delay: float = 2.0
    starve_timer_delay: float = 0.0
    partition_duration: float = 60.0
    split: float = 0.5
    churn_interval: float = 1.0
    quiet_tail: float = 60.0
    burst: int = 0
    burst_size: int = 200
    forge_rate: float = 50.0
    flood_rate: float = 20.0
    flood_size: int = 5000
    max_members: int = 2048
    leader_timeout: float = 3.0
    phase: float | None = None
    retention: float | None = None
    clock_drift: float = 0.0
    max_clock_drift_rate: float = 0.01
    slow_rtt: float = 0.3
    adaptive_ping: bool = False
    tables: str = "auto"
    joiners: int | None = None
