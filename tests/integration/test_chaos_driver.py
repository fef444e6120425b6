"""This library's chaos driver and harness pieces that need no namespace: Config fields set with
``--gossip-config`` (and refused when wrong), the ``stats`` lines, a ``gossip:KEY=VALUE``
driver, and the harness's sums over those lines.

The harness itself (network namespaces, root) is exercised by ``test_chaos.py`` (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from . import REPO_ROOT, scaled

BENCH = os.path.join(REPO_ROOT, "bench")


@pytest.fixture(scope="module")
def bench() -> Iterator[dict[str, ModuleType]]:
    """``chaos_driver`` and ``chaos_nodes``, imported from bench/."""
    sys.path.insert(0, BENCH)
    try:
        import chaos_driver
        import chaos_nodes
        yield {"driver": chaos_driver, "nodes": chaos_nodes}
    finally:
        sys.path.remove(BENCH)


def _opts(bench: dict[str, ModuleType], *extra: str) -> dict[str, object]:
    return bench["driver"]._parse(["--name", "n000", "--bind", "127.0.0.1:0",
                                   "--probe-timeout-ms", "200", *extra])


def test_gossip_config_sets_fields_after_the_contract_timings(bench: dict[str, ModuleType]) -> None:
    plain = bench["driver"]._config(_opts(bench))
    assert plain.adaptive_ping_timeout is False and plain.ping_timeout == pytest.approx(0.2)
    cfg = bench["driver"]._config(_opts(bench, "--gossip-config", "adaptive_ping_timeout=true",
                                        "--gossip-config=ping_timeout_max=600ms"))
    assert cfg.adaptive_ping_timeout is True
    assert cfg.ping_timeout_max == pytest.approx(0.6)
    assert cfg.ping_timeout == pytest.approx(0.2)          # the contract's timing is kept


@pytest.mark.parametrize("item, names", [
    ("adaptive_ping_timout=true", "ADAPTIVE_PING_TIMEOUT"),     # a typo: the field meant
    ("ping_timeout_max=5s", "ping_timeout_max"),                # out of range for the timings
    ("adaptive_ping_timeout", "KEY=VALUE"),
])
def test_a_wrong_gossip_config_is_refused_before_the_node_starts(
        bench: dict[str, ModuleType], item: str, names: str) -> None:
    with pytest.raises(SystemExit) as exc:
        bench["driver"]._config(_opts(bench, "--gossip-config", item))
    assert names in str(exc.value)


def test_stats_lines_carry_the_probe_counters() -> None:
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "chaos_driver.py"), "--name", "n000", "--bind", "127.0.0.1:0",
         "--gossip-config", "adaptive_ping_timeout=true", "--stats-interval-ms", "250", "--max-runtime-s", "1"],
        capture_output=True, text=True, timeout=scaled(30))
    assert proc.returncode == 3, proc.stderr                  # the run-time cap
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    stats = [x for x in lines if x["ev"] == "stats"]
    assert stats, proc.stdout
    assert set(stats[0]["stats"]) == {"probes", "acks", "indirect_probes", "failed_probes", "nacks"}
    assert all(isinstance(v, int) for v in stats[-1]["stats"].values())


def test_stats_lines_only_when_asked() -> None:
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "chaos_driver.py"), "--name", "n000", "--bind", "127.0.0.1:0",
         "--max-runtime-s", "1"], capture_output=True, text=True, timeout=scaled(30))
    assert proc.returncode == 3, proc.stderr
    evs = {json.loads(x)["ev"] for x in proc.stdout.splitlines()}
    assert "view" in evs and "stats" not in evs


def test_a_gossip_variant_driver_passes_its_config_and_keeps_its_name(bench: dict[str, ModuleType]) -> None:
    Driver = bench["nodes"].Driver
    d = Driver.parse("gossip:adaptive_ping_timeout=true, ping_timeout_max=600ms")
    assert d.name == "gossip:adaptive_ping_timeout=true,ping_timeout_max=600ms" and d.ours
    assert d.argv[-4:] == ("--gossip-config", "adaptive_ping_timeout=true",
                           "--gossip-config", "ping_timeout_max=600ms")
    assert Driver.parse("gossip").ours and Driver.parse("gossip").name == "gossip"
    assert not Driver.parse("/tmp/memberlist-driver").ours
    with pytest.raises(SystemExit):
        Driver.parse("gossip:adaptive_ping_timeout")


def test_counter_sums_over_a_window_and_suspicions_of_one_member(bench: dict[str, ModuleType]) -> None:
    nodes = bench["nodes"]
    obs = nodes.Observer(["n000", "n001", "n002"])
    procs = {name: nodes.NodeProc(i, name, None, 0.0, "") for i, name in enumerate(("n000", "n001", "n002"))}
    for p in procs.values():
        obs.attach(p)

    def feed(name: str, *msgs: dict[str, object]) -> None:
        obs.read(procs[name], iter(json.dumps(m) + "\n" for m in msgs))

    def stats(ts: float, indirect: int) -> dict[str, object]:
        return {"ts": ts, "ev": "stats", "stats": {"indirect_probes": indirect, "probes": 2 * indirect}}

    feed("n000", stats(1.0, 3), stats(2.0, 5), stats(3.0, 9), stats(4.0, 20))
    feed("n001", stats(2.5, 1), stats(3.5, 4), {"ts": 3.6, "ev": "stats", "stats": "junk"})
    feed("n001", {"ts": 2.0, "ev": "state", "node": "n002", "state": "suspect"},
         {"ts": 3.2, "ev": "state", "node": "n002", "state": "suspect"})
    feed("n000", {"ts": 3.3, "ev": "state", "node": "n001", "state": "suspect"})
    # n000: 9 - 5 over [2, 3.7]; n001 had no sample by t0: from its first, 4 - 1
    assert obs.counter_delta(["n000", "n001"], "indirect_probes", 2.0, 3.7) == 4 + 3
    assert obs.counter_delta(["n000"], "probes", 2.0, 3.7) == 8
    assert obs.counter_delta(["n002"], "indirect_probes", 0.0, 9.0) is None     # never reported
    assert obs.suspicions_between("n002", ["n000", "n001"], 2.5, 4.0) == 1
    assert obs.suspicions_between("n002", ["n000"], 0.0, 9.0) == 0
