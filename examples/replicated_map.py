"""replicated_map: a configuration table every node of the cluster sees.

Each node holds a :class:`gossip.replicated.ReplicatedMap` named ``config``. A write on any
node reaches every other one (broadcast at once, repaired by anti-entropy), the last writer
wins by hybrid logical clock, deletes leave tombstones, and a node that joins late fetches the
whole table from a peer. Every change is printed as it arrives. Run two or more nodes::

    python examples/replicated_map.py --port 8000 --peers 127.0.0.1:8000
    python examples/replicated_map.py --port 8001 --peers 127.0.0.1:8000

and type ``set max_upload_mb 25`` on one, ``show`` on the other; ``del max_upload_mb``.
Values are parsed as JSON when they can be (``set limits '{"rps": 100}'``: the console
splits words like a shell), else kept as text.
Unattended::

    python examples/replicated_map.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import json
import sys
from typing import Any

from _common import Command, Example, run, say

from gossip import Cluster
from gossip.replicated import Changed, MapConfig, ReplicatedMap

TABLE: dict[str, ReplicatedMap] = {}


def on_change(change: Changed) -> None:
    """Print every change of the table, local or remote (runs on the map's thread, in order)."""
    who = "here" if change.local else f"by {change.writer.short}"
    if change.deleted:
        say(f"config: {change.key} deleted ({who})")
    else:
        say(f"config: {change.key} = {json.dumps(change.value)} ({who})")


def setup(cluster: Cluster) -> None:
    """Create the table before the cluster starts (it syncs once the node has joined)."""
    table = ReplicatedMap(cluster, "config", MapConfig(sync_interval=1.0))
    table.on_change(on_change)
    TABLE["config"] = table


def joined(cluster: Cluster) -> None:
    """Fetch the whole table from a peer now (a late joiner gets everything at once)."""
    TABLE["config"].sync()


def stopping(cluster: Cluster) -> None:
    """Detach the table from the cluster before it stops."""
    table = TABLE["config"]
    print(f"the table held {len(table)} entries", flush=True)
    table.close()


def parse(text: str) -> Any:
    """A value typed on the console: JSON if it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_set(cluster: Cluster, args: list[str]) -> None:
    """Console: ``set <key> <value...>``."""
    try:
        TABLE["config"].set(args[0], parse(" ".join(args[1:])))
    except ValueError as exc:
        print(f"refused: {exc}")


def cmd_del(cluster: Cluster, args: list[str]) -> None:
    """Console: ``del <key>``."""
    if not TABLE["config"].delete(args[0]):
        print(f"{args[0]} is not set")


def cmd_get(cluster: Cluster, args: list[str]) -> None:
    """Console: ``get <key>``."""
    table = TABLE["config"]
    if args[0] in table:
        print(f"{args[0]} = {json.dumps(table.get(args[0]))}")
    else:
        print(f"{args[0]} is not set")


def cmd_show(cluster: Cluster, args: list[str]) -> None:
    """Console: ``show``."""
    print(json.dumps(TABLE["config"].snapshot(), sort_keys=True))


EXAMPLE = Example(
    name="replicated_map",
    description="gossip replicated map example: a configuration table shared by every node",
    setup=setup,
    joined=joined,
    stopping=stopping,
    commands={
        "set": Command("set <key> <value...>", "set a key on every node (JSON or text)", cmd_set, 2),
        "get": Command("get <key>", "show one key", cmd_get, 1),
        "del": Command("del <key>", "delete a key on every node", cmd_del, 1),
        "show": Command("show", "show the whole table", cmd_show),
    },
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
