"""The scenario parameters sit below the scenarios and the leader scenarios: no import circle."""

from __future__ import annotations

import dataclasses

from gossip.sim import leader, scenarios
from gossip.sim.params import ScenarioParams
from test_layers import ROOT, imported


def test_the_leader_scenarios_never_import_the_scenarios() -> None:
    assert "gossip.sim.scenarios" not in imported(ROOT / "sim" / "leader.py")
    assert "gossip.sim.leader" in imported(ROOT / "sim" / "scenarios.py")


def test_every_path_names_the_same_params() -> None:
    assert scenarios.ScenarioParams is ScenarioParams
    assert leader.run_leader_scenario.__annotations__["p"] in ("ScenarioParams", ScenarioParams)
    p = ScenarioParams(scenario="leader", nodes=5)
    assert dataclasses.replace(p, seed=2).nodes == 5
