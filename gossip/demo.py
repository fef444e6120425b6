"""The former path of ``gossip demo``, kept so that ``gossip.demo`` imports keep working;
everything lives in :mod:`gossip.cli.demo`."""

from __future__ import annotations

from .cli.demo import DemoFailed, run_demo

__all__ = ["run_demo", "DemoFailed"]
