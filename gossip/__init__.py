"""gossip: cluster membership, failure detection and messaging for Python processes."""

from __future__ import annotations

__version__ = "0.1.0"
