"""The former path of ``gossip tune``, kept so that ``gossip.tune`` imports keep working;
everything lives in :mod:`gossip.cli.tune`."""

from __future__ import annotations

from .cli.tune import (
    Candidate,
    Outcome,
    ProgressFunc,
    TuneParams,
    TuneResult,
    candidates,
    evaluate,
    format_report,
    run_tune,
)

__all__ = ["TuneParams", "Candidate", "Outcome", "TuneResult", "candidates", "evaluate", "run_tune",
           "format_report", "ProgressFunc"]
