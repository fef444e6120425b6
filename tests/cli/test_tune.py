"""``gossip tune``'s candidates and its choice among simulated outcomes."""

from __future__ import annotations

import pytest

from gossip import Config
from gossip.cli.tune import Candidate, Outcome, TuneParams, TuneResult, _recommend, candidates, evaluate


@pytest.mark.parametrize("rtt", [0.0, 0.001, 0.02, 0.1, 0.5, 2.0])
def test_candidates_are_valid_and_fit_the_round_trip(rtt: float) -> None:
    cands = candidates(TuneParams(nodes=100, rtt=rtt))
    assert len(cands) >= 2
    for c in cands:
        cfg = c.config()                       # validates
        assert cfg.ping_timeout >= 5 * rtt and cfg.ping_timeout < cfg.health_check_interval
        assert cfg.dissemination_interval >= 2 * rtt


def test_high_loss_asks_more_helpers() -> None:
    cfg = candidates(TuneParams(loss=0.1))[0].config()
    assert cfg.indirect_checks == 5 and cfg.retransmit_mult == 6


@pytest.mark.parametrize("field, value, words", [
    ("nodes", 2, "--nodes"), ("loss", 0.7, "--loss"), ("starve_nodes", 300, "--starve"),
    ("jobs", 0, "--jobs"), ("max_bytes", -1.0, "--max-bytes"), ("rtt", -1.0, "--rtt"),
])
def test_params_refuse_out_of_range(field: str, value: object, words: str) -> None:
    p = TuneParams()
    setattr(p, field, value)
    with pytest.raises(ValueError, match=words):
        p.validate()


def outcome(name: str, detect: float, fp: int = 0, susp: int = 0, bytes_: float = 1000.0,
            interval: float = 1.0) -> Outcome:
    cand = Candidate(name, (("health_check_interval", interval), ("ping_timeout", interval / 2)))
    return Outcome(cand, detect_s=detect, false_positives=fp, false_suspicions=susp, node_hours=10.0,
                   bytes_per_node_s=bytes_)


def test_recommends_the_fastest_without_false_positives() -> None:
    outs = [outcome("fast but wrong", 3.0, fp=1), outcome("quick", 6.0), outcome("slow", 12.0)]
    best, why = _recommend(outs, TuneParams())
    assert best.candidate.name == "quick" and "no false positive" in why


def test_near_ties_go_to_the_cheaper() -> None:
    outs = [outcome("a", 6.0, bytes_=2000.0), outcome("b", 6.2, bytes_=1000.0), outcome("c", 9.0, bytes_=500.0)]
    assert _recommend(outs, TuneParams())[0].candidate.name == "b"


def test_nervous_settings_lose_to_calm_ones() -> None:
    outs = [outcome("nervous", 5.0, susp=150), outcome("calm", 10.0, susp=10)]
    best, why = _recommend(outs, TuneParams())
    assert best.candidate.name == "calm" and "twice the calmest" in why


def test_bandwidth_budget() -> None:
    outs = [outcome("greedy", 5.0, bytes_=5000.0), outcome("frugal", 10.0, bytes_=800.0)]
    assert _recommend(outs, TuneParams(max_bytes=1000.0))[0].candidate.name == "frugal"
    best, why = _recommend(outs, TuneParams(max_bytes=10.0))
    assert "no candidate fits" in why


def test_when_all_have_false_positives_the_fewest_wins() -> None:
    outs = [outcome("a", 5.0, fp=3), outcome("b", 9.0, fp=1)]
    best, why = _recommend(outs, TuneParams())
    assert best.candidate.name == "b" and "every candidate had false positives" in why


def test_result_prints_the_same_config_as_python_and_environment() -> None:
    cand = Candidate("x", (("health_check_interval", 0.5), ("ping_timeout", 0.25), ("suspicion_mult", 3)))
    out = Outcome(cand, detect_s=1.0)
    result = TuneResult(TuneParams(), [out], out, "because", 0.0)
    ns: dict[str, object] = {}
    exec(result.python(), ns)
    assert ns["config"] == Config.from_env(environ=result.env()) == cand.config()
    assert result.env() == {"GOSSIP_PRESET": "lan", "GOSSIP_HEALTH_CHECK_INTERVAL": "0.5s",
                            "GOSSIP_PING_TIMEOUT": "0.25s", "GOSSIP_SUSPICION_MULT": "3"}


def test_evaluate_a_small_cluster_with_a_starved_member() -> None:
    p = TuneParams(nodes=12, rtt=0.01, loss=0.01, starve_nodes=1, starve_delay=0.5, steady=60.0, crashes=2)
    o = evaluate(candidates(p)[2], p)
    assert o.undetected == 0 and o.detect_s is not None and o.detect_mean_s is not None
    assert o.detect_mean_s <= o.detect_s
    assert o.join_s is not None and o.bytes_per_node_s > 0 and o.node_hours > 0.1
    again = evaluate(candidates(p)[2], p)      # seeded: the same figures every time
    assert (again.detect_s, again.false_suspicions, again.bytes_per_node_s) == \
        (o.detect_s, o.false_suspicions, o.bytes_per_node_s)
