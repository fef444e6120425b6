"""basic: start a node, join peers, list members and share metadata.

The common setup of every example and nothing more. Run four nodes in four terminals::

    python examples/basic.py --port 8000 --peers 127.0.0.1:8000,127.0.0.1:8001
    python examples/basic.py --port 8001 --peers 127.0.0.1:8000,127.0.0.1:8001
    python examples/basic.py --port 8002 --peers 127.0.0.1:8000,127.0.0.1:8001
    python examples/basic.py --port 8003 --peers 127.0.0.1:8000,127.0.0.1:8001

or in WebSocket mode (``--web-port``: no UDP or TCP, the node advertises a ``ws://`` URL)::

    python examples/basic.py --web-port 8080 --peers ws://127.0.0.1:8080,ws://127.0.0.1:8081
    python examples/basic.py --web-port 8081 --peers ws://127.0.0.1:8080,ws://127.0.0.1:8081

then type ``peers`` to see membership, ``set-meta zone eu-1`` on one node and ``peers`` on
another to see the metadata arrive, and ``quit`` (or Ctrl-C) to leave. Unattended::

    python examples/basic.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys

from _common import Example, run

EXAMPLE = Example(
    name="basic",
    description="gossip basic example: membership and metadata with an interactive console",
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
