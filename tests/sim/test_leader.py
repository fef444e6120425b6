"""Leader election in the simulator: real protocol cores, a simulated network, virtual time.

Failure messages carry the replay command (``python -m gossip.sim --scenario leader ...``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gossip.config import Config
from gossip.leader import LeaderConfig
from gossip.node import NodeState
from gossip.protocol.actions import MemberEvent
from gossip.sim.leader import LeaderSimulation
from gossip.sim.scenarios import ScenarioParams, run_scenario

LC = LeaderConfig()
LAN = Config.lan()


def run(**kw: Any) -> dict[str, Any]:
    r = run_scenario(ScenarioParams(scenario="leader", **kw))
    r["replay"] = f"python -m gossip.sim --scenario leader --seed {r['seed']} --nodes {r['nodes']}"
    return r


def push_pull_interval(n: int) -> float:
    """memberlist's scaled push/pull period at ``n`` nodes (what the protocol core uses)."""
    import math
    base = LAN.push_pull_interval
    return base if n <= 32 else base * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def check_partition_figures(r: dict[str, Any]) -> None:
    # The split: one leader at most on each side, the minority's gives up within an ack window,
    # nobody on the minority wins an election, the majority elects one.
    assert r["leaders_max_majority"] == 1, r
    assert r["leaders_max_minority"] == 1, r           # only the leader from before the split
    assert r["minority_elections"] == 0, r
    assert r["minority_leader_s"] is not None and r["minority_leader_s"] <= LC.leader_timeout + LC.check_interval, r
    assert r["majority_leader_s"] is not None, r
    assert r["multi_leader_s"] <= LC.check_interval, r
    # The heal: exactly one leader within leader_timeout plus one push/pull, and it holds.
    bound = LC.leader_timeout + push_pull_interval(r["nodes"])
    assert r["leaders_max_after_heal"] == 1, r
    assert r["heal_to_single_leader_s"] is not None and r["heal_to_single_leader_s"] <= bound, r
    assert r["heal_to_agreement_s"] is not None and r["heal_to_agreement_s"] <= bound, r
    assert r["leader_changes_after_agreement"] == 0, r


def test_leader_scenario_100_nodes() -> None:
    r = run(nodes=100, seed=1)
    assert (r["minority"], r["majority"]) == (40, 60), r
    check_partition_figures(r)


def test_leader_scenario_3_2_split() -> None:
    r = run(nodes=5, seed=3)
    assert (r["minority"], r["majority"]) == (2, 3), r
    check_partition_figures(r)


def test_leader_scenario_with_loss_still_holds() -> None:
    r = run(nodes=30, seed=5, loss=0.05)
    assert r["dropped_packets"] > 0
    check_partition_figures(r)


def test_leader_scenario_is_replayable() -> None:
    a, b = run(nodes=20, seed=9), run(nodes=20, seed=9)
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b


def test_cli_runs_the_leader_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from gossip.sim.__main__ import main

    assert main(["--scenario", "leader", "--nodes", "10", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("leaders_max_majority", "leaders_max_minority", "heal_to_single_leader_s",
                "heal_to_agreement_s", "minority_leader_s", "converged_s"):
        assert key in out
    assert out["scenario"] == "leader" and out["nodes"] == 10


# ---------------------------------------------------------------------- driven directly


def cluster(n: int, seed: int, eligible: set[int] | None = None) -> LeaderSimulation:
    sim = LeaderSimulation(Config.lan(), seed, eligible=eligible)
    for _ in range(n):
        sim.add_node()
    sim.bootstrap(list(range(n)))
    sim.start_elections(list(range(n)))
    sim.run_until(30.0, stop=lambda: sim.agreed() is not None)
    assert sim.agreed() is not None
    return sim


def test_five_nodes_elect_exactly_one_and_keep_it() -> None:
    sim = cluster(5, seed=11)
    first = sim.agreed()
    assert sim.now <= LC.leader_timeout + 2 * LC.check_interval
    sim.run_until(sim.now + 120.0)
    assert sim.agreed() == first and len(sim.elections_won) == 1


def test_leader_crash_new_leader_within_leader_timeout_plus_detection() -> None:
    sim = cluster(5, seed=12)
    old = sim.agreed()
    assert old is not None
    sim.run_until(sim.now + 10.0)
    suspected: dict[int, float] = {}
    follow = sim.on_event

    def watch(observer: int, ev: MemberEvent) -> None:
        if ev.node == sim.nodes[old].id and ev.state in (NodeState.SUSPECT, NodeState.DEAD):
            suspected.setdefault(observer, sim.now)
        assert follow is not None
        follow(observer, ev)

    sim.on_event = watch
    crash_at = sim.now
    sim.crash(old)
    sim.run_until(crash_at + 60.0, stop=lambda: sim.agreed() is not None)
    new = sim.agreed()
    assert new is not None and new != old
    detection = suspected[new] - crash_at
    assert sim.now - crash_at <= LC.leader_timeout + detection + 2 * LC.check_interval, (sim.now, detection)


def test_a_leader_that_leaves_is_replaced_without_waiting_for_the_detector() -> None:
    sim = cluster(5, seed=13)
    old = sim.agreed()
    assert old is not None
    at = sim.now
    sim.leave(old)
    sim.run_until(at + 60.0, stop=lambda: sim.agreed() is not None)
    assert sim.agreed() not in (None, old)
    assert sim.now - at <= LC.leader_timeout + 2 * LC.check_interval


def test_only_eligible_nodes_lead() -> None:
    eligible = {3, 5, 7}
    sim = cluster(8, seed=14, eligible=eligible)
    assert sim.agreed() in eligible
    first = sim.agreed()
    assert first is not None
    sim.crash(first)
    sim.run_until(sim.now + 60.0, stop=lambda: sim.agreed() is not None)
    assert sim.agreed() in eligible - {first}
    assert all(i in eligible for _, i in sim.elections_won)
