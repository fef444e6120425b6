"""The ``gossip`` command line (also ``python -m gossip``): the only part of the library that
prints.

==================  ==========================================================================
module              owns
==================  ==========================================================================
:mod:`.main`        the parser, the entry points, ``keygen``, ``tune`` and ``sim``
:mod:`.client`      ``members``, ``send``, ``watch`` and ``dashboard``: an agent's HTTP API
:mod:`.agent`       ``gossip agent``: its layered settings and the long-running node
:mod:`.demo`        ``gossip demo``: a small local cluster, a broadcast and a crash
:mod:`.tune`        ``gossip tune``: failure-detector settings chosen by simulation
==================  ==========================================================================

The console script ``gossip`` runs :func:`main_exit`.
"""

from __future__ import annotations

from .client import DEFAULT_AGENT, format_explanation
from .main import build_parser, main, main_exit

__all__ = ["main", "main_exit", "build_parser", "DEFAULT_AGENT", "format_explanation"]
