"""Six real node processes, each in its own network namespace: a kill, a partition, a UDP block, pauses.

Runs ``bench/chaos.py`` (the chaos harness) once with this library's driver and checks what it
reports: a killed node is dropped by every survivor and comes back when restarted; two halves
cut apart detect each other and become one cluster again after the heal; a node whose UDP is
dropped stays alive everywhere through its TCP fallback pings; a node paused for less than the
suspicion timeout is never declared dead, and one paused for longer is, then is back by itself
after SIGCONT. Every bound is derived from the configured timings (LAN: probe 1 s, suspicion
4 x probe, at most 6 times that) and is generous: nothing here measures speed.

The nodes live in namespaces on one bridge in 10.213.0.0/16, which the harness creates and
removes (the test checks it removed them); nothing is routed off that bridge. It needs root,
``ip`` (iproute2) and ``nft`` (nftables), and is skipped, with the reason, where they are
missing or a namespace cannot be made. About three minutes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

import gossip_netguard as netguard

from . import REPO_ROOT, scaled

CHAOS = os.path.join(REPO_ROOT, "bench", "chaos.py")
NETWORK = "10.213.0.0/16"
NODES = 6
PROBE_S = 1.0
# memberlist's LAN suspicion, which the LAN preset copies: 4 x log10(N) (at least 1) probe
# intervals, starting at 6 times that and shrinking with confirmations.
SUSPICION_MAX_S = 6 * 4 * max(1.0, math.log10(NODES)) * PROBE_S

pytestmark = [pytest.mark.slow, pytest.mark.allow_network(NETWORK)]


def _unavailable() -> str:
    sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
    try:
        import chaos_net
    finally:
        sys.path.pop(0)
    if chaos_net.NETWORK != NETWORK:
        return f"the harness uses {chaos_net.NETWORK}, this test allows {NETWORK}"
    return chaos_net.unavailable()


@pytest.fixture(scope="module")
def chaos() -> dict[str, dict[str, Any]]:
    """Run the four scenarios in one harness invocation; return each scenario's result."""
    why = _unavailable()
    if why:
        pytest.skip(f"network namespaces with nftables are not available here: {why}")
    argv = [sys.executable, CHAOS, "--json", "--driver", "gossip", "--nodes", str(NODES),
            "--seed", "7", "--runs", "1", "--scenario", "kill", "--scenario", "partition",
            "--scenario", "udp-block", "--scenario", "pause", "--partition-s", "30",
            "--heal-timeout", str(scaled(60)), "--block-s", "15", "--pause-short", "2",
            "--pause-long", "30", "--settle", "2"]
    # A module fixture runs outside the tests' own guard block: declare the lab's network
    # here (the nodes, the harness's children, inherit it) and read the guard's reports.
    netguard.take_reports()
    with netguard.allow(NETWORK):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=scaled(600))
        except subprocess.TimeoutExpired:
            proc.terminate()          # the harness removes its namespaces on SIGTERM
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"the chaos harness ran past {scaled(600):.0f} s:\n{err[-3000:]}")
    reports = netguard.take_reports()
    assert not reports, "a node tried to send outside the lab's network:\n  " + "\n  ".join(reports)
    leftovers = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
                 if n.startswith(f"gchaos{proc.pid}-")]
    assert not leftovers, f"the harness left namespaces behind: {leftovers}"
    results = {}
    for line in out.splitlines():
        obj = json.loads(line)
        if obj.get("kind") == "error":
            pytest.fail(f"{obj['scenario']}: {obj['error']}\n{err[-3000:]}")
        if obj.get("kind") == "result":
            results[obj["scenario"]] = obj
    assert proc.returncode == 0 and len(results) == 4, f"rc {proc.returncode}\n{err[-3000:]}"
    return results


def _no_false_deaths(r: dict[str, Any]) -> None:
    assert r["false_dead"] == 0 and r["false_dead_by_victim"] == 0, r["false_dead_detail"]


def test_a_killed_node_is_dropped_by_every_survivor_and_rejoins(chaos: dict[str, dict[str, Any]]) -> None:
    r = chaos["kill"]
    assert r["missed"] == 0 and r["detections"] == 1, r["run_detail"]
    # the worst case: a probe round to notice, then the longest suspicion, then gossip
    assert r["detect_all_max_s"] <= scaled(SUSPICION_MAX_S + 10 * PROBE_S), r["run_detail"]
    assert r["run_detail"][0]["whole_after_restart_s"] is not None, r["run_detail"]
    _no_false_deaths(r)


def test_halves_detect_each_other_and_merge_after_the_heal(chaos: dict[str, dict[str, Any]]) -> None:
    r = chaos["partition"]
    run = r["run_detail"][0]
    assert run["a_drops_all_b_s"] is not None and run["b_drops_all_a_s"] is not None, run
    assert r["healed_runs"] == 1 and r["heal_s"] is not None, (r["run_detail"], r["notes"])
    _no_false_deaths(r)


def test_a_node_without_udp_stays_alive_through_tcp(chaos: dict[str, dict[str, Any]]) -> None:
    r = chaos["udp-block"]
    assert r["run_detail"][0]["drops"] == 0, r["false_dead_detail"]
    _no_false_deaths(r)


def test_a_short_pause_is_survived_and_a_long_one_recovers_by_itself(
        chaos: dict[str, dict[str, Any]]) -> None:
    r = chaos["pause"]
    run = r["run_detail"][0]
    assert run["short_pause_drops"] == 0, r["false_dead_detail"]
    assert run["long_pause_dropped_by"] == NODES - 1, run       # 30 s > the longest suspicion
    assert r["rejoin_s"] is not None and r["rejoin_s"] <= scaled(10 * PROBE_S), run
    _no_false_deaths(r)
