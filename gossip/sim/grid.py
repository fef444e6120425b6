"""The Lifeguard experiment: false deaths with and without Lifeguard, cell by cell.

Lifeguard (Dadgar et al., 2018) makes SWIM tolerate slow members: a node that hears of its
own suspicion or misses acks trusts its own verdicts less (local health), and suspicions
shorten only as independent confirmations come in. The experiment runs a grid of cells:

* cluster sizes (50 and 200 nodes by default);
* uniform loss of datagrams (1 %, 3 % and 5 %);
* the share of starved nodes (0 %, 1 %, 5 % and 10 %, rounded up to whole nodes): a starved
  node reads each packet 0.5 to 2.5 s late (uniformly, per packet) while its timers fire on
  time, as a process whose receive loop is starved of CPU;
* Lifeguard on and off.

Each run of a cell bootstraps a converged cluster, starves its nodes, kills one healthy node
at ``crash_at`` and runs to ``duration`` virtual seconds. A cell reports, over its runs:

* ``false_dead_per_run``: live members declared dead by some live member (distinct members,
  per run);
* ``false_suspect_per_run``: live members suspected by some live member (distinct, per run);
* ``detect_all_s``: the mean time from the crash until every survivor dropped the dead node
  (None if no run saw it);
* ``undetected``: runs in which some survivor never dropped it;
* ``false_dead_seeds``: the seeds whose run had a false death, in seed order, to replay one
  (``run_once(cell, seed)``, or the command line with ``--seed S --seeds 1``).

``python -m gossip.sim --scenario lifeguard-grid --seeds 10`` runs it (``--json``: one JSON
object per cell and line).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..config import Config
from .network import LinkModel
from .simulation import Simulation

__all__ = ["GridCell", "grid_cells", "run_cell", "run_grid", "GRID_NODES", "GRID_LOSS", "GRID_STARVED"]

GRID_NODES: tuple[int, ...] = (50, 200)
GRID_LOSS: tuple[float, ...] = (0.01, 0.03, 0.05)
GRID_STARVED: tuple[float, ...] = (0.0, 0.01, 0.05, 0.10)


@dataclasses.dataclass(frozen=True)
class GridCell:
    """One cell of the grid (see the module docstring)."""

    nodes: int
    loss: float
    starved: float
    lifeguard: bool
    starve_min: float = 0.5
    starve_max: float = 2.5
    crash_at: float = 20.0
    duration: float = 120.0
    config: str = "lan"

    def starved_nodes(self) -> int:
        """The number of starved nodes: the share of the cluster, rounded up."""
        return min(self.nodes - 1, math.ceil(self.nodes * self.starved - 1e-9))


def run_once(cell: GridCell, seed: int) -> dict[str, Any]:
    """Run one seed of ``cell`` and return its simulation summary."""
    cfg = Config.preset(cell.config, lifeguard_enabled=cell.lifeguard)
    sim = Simulation(cfg, seed, LinkModel(loss=cell.loss))
    for _ in range(cell.nodes):
        sim.add_node()
    sim.bootstrap(list(range(cell.nodes)))
    order = list(range(cell.nodes))
    sim.root.shuffle(order)
    victim, starved = order[0], order[1:1 + cell.starved_nodes()]
    for index in starved:
        sim.starve(index, cell.starve_min, 0.0, cell.starve_max - cell.starve_min)
    sim.schedule(cell.crash_at, lambda: sim.crash(victim))
    sim.run_until(cell.duration)
    return sim.summary()


def run_cell(cell: GridCell, seeds: Sequence[int],
             pool: concurrent.futures.Executor | None = None) -> dict[str, Any]:
    """Run ``cell`` once per seed and return its figures (one JSON-ready dict).

    With ``pool`` (a process pool), the seeds run side by side in its processes; each run
    depends on its seed alone, and the runs are gathered in seed order, so the figures are the
    same as without it.
    """
    if pool is None:
        runs = [run_once(cell, seed) for seed in seeds]
    else:
        runs = list(pool.map(run_once, [cell] * len(seeds), seeds))
    n = max(1, len(runs))
    bad = sorted(seed for seed, r in zip(seeds, runs) if r["false_dead"])
    detected = [r["detect_all_s"] for r in runs if r["detect_all_s"] is not None and not r["undetected"]]
    return {
        "nodes": cell.nodes,
        "loss": cell.loss,
        "starved": cell.starved,
        "lifeguard": cell.lifeguard,
        "seeds": len(runs),
        "false_dead_per_run": round(sum(r["false_dead"] for r in runs) / n, 3),
        "false_suspect_per_run": round(sum(r["false_suspect"] for r in runs) / n, 3),
        "detect_all_s": round(sum(detected) / len(detected), 3) if detected else None,
        "undetected": sum(1 for r in runs if r["undetected"]),
        "starved_nodes": cell.starved_nodes(),
        "false_dead_seeds": bad,
    }


def grid_cells(nodes: Sequence[int] = GRID_NODES, loss: Sequence[float] = GRID_LOSS,
               starved: Sequence[float] = GRID_STARVED, lifeguard: Sequence[bool] = (True, False),
               **kw: Any) -> Iterator[GridCell]:
    """Yield the cells of the grid, smallest clusters first, Lifeguard on then off (``lifeguard``
    narrows it to one half)."""
    for n in nodes:
        for lo in loss:
            for st in starved:
                for on in lifeguard:
                    yield GridCell(n, lo, st, on, **kw)


def run_grid(cells: Sequence[GridCell] | Iterator[GridCell], seeds: Sequence[int],
             each: Callable[[dict[str, Any]], None] | None = None,
             jobs: int = 1) -> list[dict[str, Any]]:
    """Run every cell over ``seeds``; call ``each`` with each cell's figures as it completes.

    ``jobs`` above 1 runs each cell's seeds in that many processes (the same figures, sooner
    on a machine with as many cores).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    out = []
    pool = None
    if jobs > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("fork"))
    try:
        for cell in cells:
            row = run_cell(cell, seeds, pool)
            if each is not None:
                each(row)
            out.append(row)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def format_row(row: dict[str, Any]) -> str:
    """Return one readable table line of a cell's figures, and under it, if some runs had a
    false death, a line naming their seeds."""
    detect = "-" if row["detect_all_s"] is None else f"{row['detect_all_s']:.1f}"
    line = (f"{row['nodes']:>5} {row['loss']:>5.0%} {row['starved']:>7.0%} {row['starved_nodes']:>3} "
            f"{'on' if row['lifeguard'] else 'off':>9} {row['seeds']:>5} {row['false_dead_per_run']:>10.2f} "
            f"{row['false_suspect_per_run']:>13.2f} {detect:>9} {row['undetected']:>10}")
    bad = row.get("false_dead_seeds")
    if bad:
        line += f"\n{'':>5} false deaths in seed{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}"
    return line


HEADER = (f"{'nodes':>5} {'loss':>5} {'starved':>7} {'(n)':>3} {'lifeguard':>9} {'seeds':>5} "
          f"{'dead/run':>10} {'suspect/run':>13} {'detect s':>9} {'undetected':>10}")
