"""How fast news crosses an idle cluster: the gossip ticker's pace, simulated (virtual clock)."""

from __future__ import annotations

import statistics

from gossip.config import Config
from gossip.sim.scenarios import ScenarioParams, run_scenario


def test_a_dead_verdict_crosses_an_idle_cluster_at_the_pace_of_a_running_ticker() -> None:
    # An idle node stops its gossip rounds. The first update it then hears must go out at the
    # next tick of its ticker (half an interval away on average, as with memberlist's ticker
    # that never stops), not a whole interval after it arrived: otherwise every hop of an
    # epidemic costs a full interval, and the last of 100 nodes drops a crashed member about
    # 0.8 s after the first (memberlist: 0.4 s, measured side by side in bench/chaos.py).
    interval = Config.lan().dissemination_interval
    spreads = []
    for seed in range(1, 7):
        r = run_scenario(ScenarioParams(scenario="crash", nodes=100, seed=seed, loss=0.01,
                                        latency=0.0005))
        assert r["detect_first_s"] is not None and r["detect_all_s"] is not None, r
        assert r["false_dead"] == 0, r
        spreads.append(r["detect_all_s"] - r["detect_first_s"])
    assert statistics.mean(spreads) <= 2.75 * interval, spreads
