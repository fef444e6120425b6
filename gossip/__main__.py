"""``python -m gossip``: the command line (see :mod:`gossip.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
