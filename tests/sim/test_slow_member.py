"""The ``slow`` scenario: one member with a steady 0.3 s round trip against a 0.2 s
``ping_timeout``. With adaptive ping timeouts it stops drawing indirect probes, and the crash
of a normal member is found as fast as without. Each failure message carries the replay
command."""

from __future__ import annotations

import statistics

from gossip.config import Config
from gossip.sim.scenarios import ScenarioParams, run_scenario

SEEDS = range(1, 7)


def run(seed: int, adaptive: bool) -> dict[str, object]:
    return run_scenario(ScenarioParams(scenario="slow", seed=seed, adaptive_ping=adaptive))


def replay(r: dict[str, object]) -> str:
    flag = " --adaptive-ping" if r["adaptive_ping"] else ""
    return f"replay: python -m gossip.sim --scenario slow --seed {r['seed']}{flag}"


def test_a_slow_member_stops_drawing_indirect_probes_and_crash_detection_keeps_its_pace() -> None:
    fixed = [run(s, False) for s in SEEDS]
    adaptive = [run(s, True) for s in SEEDS]
    for f, a in zip(fixed, adaptive):
        # Without: every probe of (and by) the slow member falls back to helpers.
        assert f["steady_indirect_probes"] >= 150, replay(f)  # type: ignore[operator]
        # With: only the first probes, before two round trips are known, still do.
        assert a["steady_indirect_probes"] <= 0.4 * f["steady_indirect_probes"], replay(a)  # type: ignore[operator]
        assert a["steady_false_suspect_events"] <= f["steady_false_suspect_events"], replay(a)  # type: ignore[operator]
        assert a["false_dead"] == 0 and a["detected"] == 1, replay(a)
    # The crash of a normal member: found as fast (the median over the seeds within one
    # probe interval of the fixed timeout's).
    interval = Config.lan().health_check_interval
    med_fixed = statistics.median(float(r["detect_all_s"]) for r in fixed)  # type: ignore[arg-type]
    med_adaptive = statistics.median(float(r["detect_all_s"]) for r in adaptive)  # type: ignore[arg-type]
    assert med_adaptive <= med_fixed + interval, [replay(r) for r in adaptive]
