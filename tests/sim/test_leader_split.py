"""Leader safety across network splits, in the simulator (real protocol cores, virtual time).

The invariant, checked over the whole of every run: never two nodes leading at the same virtual
instant (``overlap_pairs == 0``; leadership spans are half-open). It holds because a leader's
lease counts from the heartbeats it sent and ends before any follower that acknowledged them may
acknowledge another. That needs every node's clock to run within ``LeaderConfig.max_clock_drift_rate``
of real time; with ``clock_drift`` the simulator gives each node a clock of its own, that much
fast or slow (tests/test_leader_election.py shows two leaders when the bound is too small).

Each failure message carries the replay command.
"""

from __future__ import annotations

from typing import Any

import pytest

from gossip.config import Config
from gossip.sim.scenarios import ScenarioParams, run_scenario

LEADER_TIMEOUTS = (1.2, 2.0, 3.0)


def run(**kw: Any) -> dict[str, Any]:
    r = run_scenario(ScenarioParams(scenario="leader-split", **kw))
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in kw.items() if k != "seed")
    r["replay"] = f"python -m gossip.sim --scenario leader-split --seed {r['seed']} {flags}"
    return r


def sweep(seeds: range, phases: int, **kw: Any) -> list[dict[str, Any]]:
    """Splits at every ``1/phases`` of the heartbeat interval, the leader on either side, at
    each leader_timeout of :data:`LEADER_TIMEOUTS`."""
    out = []
    timeouts = kw.pop("leader_timeouts", LEADER_TIMEOUTS)
    for seed in seeds:
        out.append(run(seed=seed, phase=(seed % phases) / phases, split=(0.4, 0.6)[seed % 2],
                       leader_timeout=timeouts[seed // 2 % len(timeouts)], partition_duration=15.0, **kw))
    return out


def check(runs: list[dict[str, Any]]) -> None:
    for r in runs:
        assert r["overlap_pairs"] == 0 and r["leaders_max"] == 1, r["replay"]
        assert r["heal_to_agreement_s"] is not None, r["replay"]       # and one leader again


def test_never_two_leaders_when_the_split_falls_at_any_phase_of_the_heartbeat() -> None:
    check(sweep(range(1, 25), phases=12))


@pytest.mark.parametrize("drift", [0.01, 0.2])
def test_never_two_leaders_while_clocks_drift_within_the_assumed_bound(drift: float) -> None:
    check(sweep(range(1, 25), phases=12, clock_drift=drift, max_clock_drift_rate=drift,
                leader_timeouts=(2.0, 3.0)))


@pytest.mark.slow
def test_never_two_leaders_over_hundreds_of_seeds() -> None:
    check(sweep(range(25, 265), phases=24))      # 240 runs, about 10 s


@pytest.mark.parametrize("split", [0.4, 0.6])
def test_a_split_longer_than_the_retention_elects_no_second_leader_and_heals_into_one(split: float) -> None:
    bound = Config.lan().reconnect_interval + 15.0
    for seed in range(1, 6):
        r = run(seed=seed, split=split, partition_duration=60.0, retention=4.0)
        assert r["overlap_pairs"] == 0, r["replay"]
        # The 2-node side (the leader's at split 0.4, the other at 0.6) never elects.
        assert r["elections_leader_side" if split < 0.5 else "elections_other_side"] == 0, r["replay"]
        assert r["heal_to_one_cluster_s"] is not None and r["heal_to_one_cluster_s"] <= bound, r["replay"]
        assert r["heal_to_agreement_s"] is not None, r["replay"]
