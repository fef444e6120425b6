"""The acceptance bar of the protocol, at full size, in the simulator (about a minute in all).

Each case is the scenario with the size and duration the bar names; ``python -m gossip.sim
--scenario X --seed 1 --json`` prints the same figures.
"""

from __future__ import annotations

import math

import pytest

from gossip.config import Config
from gossip.sim.scenarios import ScenarioParams, run_scenario

pytestmark = pytest.mark.slow
LAN = Config.lan()


def run(**kw: object) -> dict[str, object]:
    r = run_scenario(ScenarioParams(seed=1, **kw))  # type: ignore[arg-type]
    r["replay"] = f"python -m gossip.sim --scenario {r['scenario']} --seed 1 --nodes {r['nodes']} --json"
    return r


def test_join_1000_converges_within_10_virtual_seconds() -> None:
    r = run(scenario="join", nodes=1000)
    assert r["converged_s"] is not None and r["converged_s"] <= 10.0, r


def test_crash_1000_dropped_by_all_within_bound() -> None:
    r = run(scenario="crash", nodes=1000)
    bound = LAN.suspicion_mult * math.log10(1000) * LAN.probe_interval + 5 * LAN.probe_interval
    assert r["detect_all_s"] is not None and r["detect_all_s"] <= bound, r
    assert r["false_dead"] == 0, r


def test_loss_10_percent_200_nodes_10_minutes_no_false_dead() -> None:
    r = run(scenario="loss", nodes=200, loss=0.10, duration=600.0)
    assert r["false_dead"] == 0, r


def test_starve_100_nodes_5_starved_10_minutes_no_false_dead_with_lifeguard() -> None:
    r = run(scenario="starve", nodes=100, starved=5, starve_delay=2.0, duration=600.0)
    assert r["false_dead"] == 0, r


def test_partition_200_nodes_60_s_heals_within_push_pull_plus_30_s() -> None:
    r = run(scenario="partition", nodes=200, partition_duration=60.0)
    assert r["converged_s"] is not None and r["converged_s"] <= LAN.push_pull_interval + 30.0, r


def test_churn_200_nodes_5_minutes_no_false_dead_all_crashes_detected() -> None:
    r = run(scenario="churn", nodes=200, duration=300.0)
    assert r["undetected"] == 0 and r["detected"] > 100, r
    assert r["false_dead"] == 0, r
