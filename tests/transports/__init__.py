"""Tests of :mod:`gossip.transports`, one module per transport part (they mirror the package)."""
