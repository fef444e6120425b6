"""tagged: broadcasts that only the nodes holding a tag receive, and tags changed at run time.

Each node may carry tags (``--tags gpu,eu``). ``send <tag> <message>`` broadcasts to the nodes
holding ``tag``: only they print it, and only they pass it on. ``tag <t>`` and ``untag <t>``
change this node's tags while it runs (the change spreads like a metadata write): a node that
gains a tag starts receiving. ``nodes <tag>`` lists the holders. Run three nodes::

    python examples/tagged.py --port 8000 --tags gpu
    python examples/tagged.py --port 8001 --peers 127.0.0.1:8000
    python examples/tagged.py --port 8002 --peers 127.0.0.1:8000 --tags gpu,eu

then ``send gpu hello`` on the second. Unattended::

    python examples/tagged.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import os
import sys

from _common import Command, Example, run, say

from gossip import USER_MSG, Cluster, GossipError, Node, Packet

TAGGED = USER_MSG + 21


def setup(cluster: Cluster) -> None:
    """Take the tags of ``GOSSIP_EXAMPLE_TAGS`` (set from ``--tags``) and print what arrives."""
    tags = [t for t in os.environ.get("GOSSIP_EXAMPLE_TAGS", "").split(",") if t]
    if tags:
        cluster.set_tags(tags)

    def on_message(sender: Node, packet: Packet) -> None:
        msg = packet.unmarshal()
        say(f"[{msg.get('tag')}] from {sender.id.short}: {msg.get('text')}")

    cluster.handle_func(TAGGED, on_message)


def joined(cluster: Cluster) -> None:
    """Say which tags this node holds."""
    say(f"this node's tags: {', '.join(sorted(cluster.local_node().tags)) or 'none'}")


def cmd_send(cluster: Cluster, args: list[str]) -> None:
    """Console: ``send <tag> <message>``."""
    holders = [n for n in cluster.nodes_by_tag(args[0]) if n.id != cluster.local_node().id]
    try:
        cluster.send_tagged(args[0], TAGGED, {"tag": args[0], "text": " ".join(args[1:])})
    except GossipError as exc:
        print(f"not sent: {exc}")
        return
    print(f"sent to the {len(holders)} other node(s) tagged {args[0]}")


def cmd_tag(cluster: Cluster, args: list[str]) -> None:
    """Console: ``tag <t>``."""
    try:
        cluster.add_tag(args[0])
    except GossipError as exc:
        print(f"refused: {exc}")
        return
    print(f"tags: {', '.join(sorted(cluster.local_node().tags))}")


def cmd_untag(cluster: Cluster, args: list[str]) -> None:
    """Console: ``untag <t>``."""
    cluster.remove_tag(args[0])
    print(f"tags: {', '.join(sorted(cluster.local_node().tags)) or 'none'}")


def cmd_nodes(cluster: Cluster, args: list[str]) -> None:
    """Console: ``nodes <tag>``."""
    for n in cluster.nodes_by_tag(args[0]):
        print(f"{n.id.short}@{n.address} tags: {', '.join(sorted(n.tags))}")


EXAMPLE = Example(
    name="tagged",
    description="gossip tagged example: broadcasts only the nodes holding a tag receive",
    setup=setup,
    joined=joined,
    commands={
        "send": Command("send <tag> <message>", "broadcast to the nodes holding a tag", cmd_send, 2),
        "tag": Command("tag <t>", "add a tag to this node", cmd_tag, 1),
        "untag": Command("untag <t>", "remove a tag from this node", cmd_untag, 1),
        "nodes": Command("nodes <tag>", "list the nodes holding a tag", cmd_nodes, 1),
    },
)


def main() -> int:
    """Run the example; ``--tags a,b`` sets this node's tags."""
    argv = list(sys.argv[1:])
    if "--tags" in argv:
        i = argv.index("--tags")
        if i + 1 >= len(argv):
            print("--tags needs a value, e.g. --tags gpu,eu", file=sys.stderr)
            return 2
        os.environ["GOSSIP_EXAMPLE_TAGS"] = argv[i + 1]
        del argv[i:i + 2]
    return run(EXAMPLE, argv)


if __name__ == "__main__":
    sys.exit(main())
