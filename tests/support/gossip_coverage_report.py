"""Branch coverage of the measured run: combine every process's data, print it, hold the floors.

The measured run (``.ci/run``) starts coverage in the suite's process and in every process it
starts (``sitecustomize.py``). At the end of the session :func:`summarize` combines their data,
and returns the lines to print and the modules under their floor. Every module's branch
coverage must reach 80 % (:data:`DEFAULT_FLOOR`) unless ``tests/coverage-floors.toml`` gives it
a lower floor and says why.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass

DEFAULT_FLOOR = 80.0
"""Branch coverage (percent) every module must reach unless the floors file says otherwise."""


@dataclass(frozen=True)
class ModuleCoverage:
    """Coverage of one module: its lines and branches, covered and in all."""

    path: str
    lines: int
    lines_covered: int
    branches: int
    branches_covered: int

    @property
    def branch_percent(self) -> float:
        """Covered branches in percent (100 for a module without branches)."""
        return 100.0 * self.branches_covered / self.branches if self.branches else 100.0


def measuring() -> bool:
    """Return whether this run measures coverage (``COVERAGE_PROCESS_START`` is set)."""
    return bool(os.environ.get("COVERAGE_PROCESS_START"))


def load_floors(path: str) -> dict[str, tuple[float, str]]:
    """Read ``{module path: (floor, why)}`` from the floors file (TOML, a ``[floors]`` table)."""
    with open(path, "rb") as f:
        table = tomllib.load(f).get("floors", {})
    out: dict[str, tuple[float, str]] = {}
    for module, entry in table.items():
        floor, why = float(entry["floor"]), str(entry["why"]).strip()
        if not why:
            raise ValueError(f"{path}: the floor of {module} says no reason")
        out[module] = (floor, why)
    return out


def collect(root: str) -> list[ModuleCoverage]:
    """Stop this process's measurement, combine every data file, and return each module's figures."""
    import coverage

    current = coverage.Coverage.current()
    if current is not None:
        current.stop()
        current.save()
    config = os.environ["COVERAGE_PROCESS_START"]
    combined = coverage.Coverage(config_file=config)
    combined.combine()
    combined.save()
    fd, out = tempfile.mkstemp(suffix=".json", prefix="gossip-coverage-")
    os.close(fd)
    try:
        combined.json_report(outfile=out)
        with open(out, encoding="utf-8") as f:
            files = json.load(f)["files"]
    finally:
        os.unlink(out)
    modules = []
    for path, data in files.items():
        s = data["summary"]
        rel = os.path.relpath(os.path.abspath(path), root)
        modules.append(ModuleCoverage(rel, s["num_statements"], s["covered_lines"],
                                      s.get("num_branches", 0), s.get("covered_branches", 0)))
    return sorted(modules, key=lambda m: m.path)


def summarize(modules: list[ModuleCoverage],
              floors: dict[str, tuple[float, str]]) -> tuple[list[str], list[str]]:
    """Return the lines to print and one line per module under its floor."""
    lines = [f"{'module':<44} {'lines':>7} {'branches':>9}  floor"]
    under: list[str] = []
    for m in modules:
        floor, why = floors.get(m.path, (DEFAULT_FLOOR, ""))
        line_pct = 100.0 * m.lines_covered / m.lines if m.lines else 100.0
        mark = "" if m.branch_percent >= floor else "  << under its floor"
        lines.append(f"{m.path:<44} {line_pct:6.1f}% {m.branch_percent:8.1f}%  {floor:.0f}%{mark}")
        if mark:
            under.append(f"{m.path}: {m.branch_percent:.1f}% of branches, floor {floor:.0f}%"
                         + (f" ({why})" if why else ""))
    total_lines = sum(m.lines for m in modules)
    total_branches = sum(m.branches for m in modules)
    lp = 100.0 * sum(m.lines_covered for m in modules) / total_lines if total_lines else 100.0
    bp = (100.0 * sum(m.branches_covered for m in modules) / total_branches
          if total_branches else 100.0)
    lines.append(f"{'total':<44} {lp:6.1f}% {bp:8.1f}%")
    stale = sorted(set(floors) - {m.path for m in modules})
    for path in stale:
        under.append(f"{path}: has a floor in tests/coverage-floors.toml but was not measured")
    return lines, under
