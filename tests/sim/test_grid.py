"""The Lifeguard grid (``python -m gossip.sim --scenario lifeguard-grid``) in small: one cell of
20 nodes, three fixed seeds, Lifeguard on and off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gossip.sim.__main__ import main
from gossip.sim.grid import GridCell, format_row, grid_cells, run_cell, run_grid, run_once

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


def test_a_prober_that_missed_a_refutation_learns_it_from_the_suspects_ack() -> None:
    # Seed 15 of the 50-node cell at 3 % loss with one starved member: the member's refutation
    # reached every live member but node 3 (its one copy lost), and node 3's suspicion ran at
    # the shortest timeout. Node 3's ping to the suspect (saying "suspect at 22", one
    # incarnation behind) got an ack that now carries the refutation; before, it carried
    # nothing and node 3 declared the member dead 1.8 s later.
    run = run_once(GridCell(50, 0.03, 0.01, True), 15)
    assert run["false_dead"] == 0 and run["undetected"] == 0, run


def test_grid_cells_and_rows() -> None:
    cells = list(grid_cells())
    assert len(cells) == 2 * 3 * 4 * 2
    assert cells[0] == GridCell(50, 0.01, 0.0, True) and cells[1].lifeguard is False
    assert list(grid_cells(lifeguard=(True,))) == cells[::2]
    assert list(grid_cells(lifeguard=(False,))) == cells[1::2]
    assert [c.starved_nodes() for c in cells[:8:2]] == [0, 1, 3, 5]
    row = {"nodes": 50, "loss": 0.01, "starved": 0.05, "lifeguard": True, "seeds": 3, "false_dead_per_run": 0.0,
           "false_suspect_per_run": 1.5, "detect_all_s": None, "undetected": 3, "starved_nodes": 3}
    assert format_row(row).split() == ["50", "1%", "5%", "3", "on", "3", "0.00", "1.50", "-", "3"]
    assert format_row({**row, "false_dead_seeds": []}) == format_row(row)
    line, seeds = format_row({**row, "false_dead_per_run": 0.67, "false_dead_seeds": [4, 17]}).splitlines()
    assert line.split()[6] == "0.67" and seeds.split() == ["false", "deaths", "in", "seeds", "4,", "17"]


def test_a_cell_names_the_seeds_whose_run_had_a_false_death_in_seed_order() -> None:
    # 8 nodes, 20 % loss, 2 starved, plain SWIM: some runs kill a live member, not all.
    cell = GridCell(8, 0.2, 0.25, False, crash_at=5.0, duration=20.0)
    seeds = [6, 5, 4, 3, 2, 1]
    row = run_cell(cell, seeds)
    bad = [seed for seed in sorted(seeds) if run_once(cell, seed)["false_dead"]]
    assert row["false_dead_seeds"] == bad
    assert 0 < len(bad) < len(seeds), bad                     # some, not all: the list tells them apart
    assert row["false_dead_per_run"] > 0
    quiet = run_cell(GridCell(8, 0.2, 0.25, True, crash_at=5.0, duration=20.0), [1, 2])
    assert quiet["false_dead_per_run"] == 0 and quiet["false_dead_seeds"] == []


def test_cli_prints_one_json_line_per_cell(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--scenario", "lifeguard-grid", "--nodes", "8", "--loss", "0.01", "--seeds", "1", "--duration", "25"]
    assert main([*flags, "--grid-starved", "0.1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["lifeguard"] for r in rows] == [True, False]
    keys = {"nodes", "loss", "starved", "lifeguard", "seeds", "false_dead_per_run", "false_suspect_per_run",
            "detect_all_s"}
    assert all(keys <= r.keys() and r["nodes"] == 8 and r["seeds"] == 1 for r in rows)
    assert all(r["false_dead_seeds"] == [] for r in rows)
    for half, expected in (("on", [True]), ("off", [False])):
        assert main([*flags, "--grid-starved", "0.1", "--json", "--grid-lifeguard", half]) == 0
        half_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["lifeguard"] for r in half_rows] == expected
        assert half_rows[0] == rows[0 if half == "on" else 1]      # the same cell, the same figures
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


def test_cli_names_the_bad_seeds_and_how_to_replay_one(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--scenario", "lifeguard-grid", "--nodes", "8", "--loss", "0.2", "--grid-starved", "0.25",
             "--seed", "1", "--seeds", "3", "--duration", "25"]
    assert main([*flags, "--json"]) == 0
    on, off = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert on["false_dead_seeds"] == [] and off["false_dead_seeds"], off   # plain SWIM kills some
    first = off["false_dead_seeds"][0]
    assert main(flags) == 0
    text = capsys.readouterr().out
    seeds = ", ".join(map(str, off["false_dead_seeds"]))
    assert f"false deaths in seed{'s' if len(off['false_dead_seeds']) > 1 else ''} {seeds}" in text
    (replay,) = [line.split("replay: ", 1)[1] for line in text.splitlines() if line.startswith(" ") and "replay:" in line]
    assert replay == ("python -m gossip.sim --scenario lifeguard-grid --seed " + str(first) + " --nodes 8 "
                      "--duration 25.0 --loss 0.2 --seeds 1 --grid-starved 0.25")
    assert main(replay.split()[3:] + ["--json"]) == 0                # the replay: the same run
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again[1]["false_dead_seeds"] == [first] and again[1]["seeds"] == 1
