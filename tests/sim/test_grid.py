"""The Lifeguard grid (``python -m gossip.sim --scenario lifeguard-grid``) in small: one cell of
20 nodes, three fixed seeds, Lifeguard on and off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gossip.sim.__main__ import main
from gossip.sim.grid import GridCell, format_row, grid_cells, run_cell, run_grid

ROOT = Path(__file__).resolve().parents[2]


def test_lifeguard_reduces_false_deaths_of_starved_members() -> None:
    # 10 % loss, 10 % of the nodes (2) reading each packet 0.5-2.5 s late, timers on time. (At
    # 5 % loss plain SWIM no longer kills anyone at 20 nodes on these seeds: refutations spread
    # on the gossip ticker within half an interval. It still suspects every member.)
    on = run_cell(GridCell(20, 0.10, 0.10, True), [1, 2, 3])
    off = run_cell(GridCell(20, 0.10, 0.10, False), [1, 2, 3])
    assert on["starved_nodes"] == 2 and on["seeds"] == 3
    assert off["false_dead_per_run"] > 0, off        # plain SWIM kills starved members...
    assert on["false_dead_per_run"] < off["false_dead_per_run"], (on, off)   # ...Lifeguard fewer
    assert on["false_suspect_per_run"] < off["false_suspect_per_run"], (on, off)
    assert on["undetected"] == 0 and on["detect_all_s"] is not None   # the crash is still seen


def test_grid_cells_and_rows() -> None:
    cells = list(grid_cells())
    assert len(cells) == 2 * 3 * 4 * 2
    assert cells[0] == GridCell(50, 0.01, 0.0, True) and cells[1].lifeguard is False
    assert [c.starved_nodes() for c in cells[:8:2]] == [0, 1, 3, 5]
    row = {"nodes": 50, "loss": 0.01, "starved": 0.05, "lifeguard": True, "seeds": 3, "false_dead_per_run": 0.0,
           "false_suspect_per_run": 1.5, "detect_all_s": None, "undetected": 3, "starved_nodes": 3}
    assert format_row(row).split() == ["50", "1%", "5%", "3", "on", "3", "0.00", "1.50", "-", "3"]


def test_cli_prints_one_json_line_per_cell(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--scenario", "lifeguard-grid", "--nodes", "8", "--loss", "0.01", "--seeds", "1", "--duration", "25"]
    assert main([*flags, "--grid-starved", "0.1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["lifeguard"] for r in rows] == [True, False]
    keys = {"nodes", "loss", "starved", "lifeguard", "seeds", "false_dead_per_run", "false_suspect_per_run",
            "detect_all_s"}
    assert all(keys <= r.keys() and r["nodes"] == 8 and r["seeds"] == 1 for r in rows)
    assert main([*flags, "--grid-starved", "0"]) == 0
    text = capsys.readouterr().out
    assert "false" not in text and "lifeguard" in text.splitlines()[0]
    assert "replay: python -m gossip.sim --scenario lifeguard-grid" in text


def test_python_m_gossip_sim_runs_the_grid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gossip.sim", "--scenario", "lifeguard-grid", "--nodes", "6", "--loss", "0.01",
         "--grid-starved", "0", "--seeds", "1", "--duration", "15", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    assert len(out.stdout.splitlines()) == 2


def test_seeds_run_side_by_side_give_the_same_figures_as_one_after_another() -> None:
    cell = GridCell(12, 0.10, 0.10, False, crash_at=5.0, duration=25.0)
    seeds = [4, 5, 6]
    alone = run_grid([cell], seeds)
    side_by_side = run_grid([cell], seeds, jobs=2)
    assert side_by_side == alone and alone[0]["seeds"] == 3
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_grid([cell], seeds, jobs=0)


def test_cli_refuses_a_jobs_count_under_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--scenario", "lifeguard-grid", "--nodes", "20", "--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err
