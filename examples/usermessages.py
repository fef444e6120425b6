"""usermessages: broadcast a typed user message to the whole cluster.

Registers a forwarding handler for message type 128 (``gossip.USER_MSG``) whose payload is
``{"content": text}``; the console command ``gossip <text>`` broadcasts one with ``send`` (an
epidemic, best-effort broadcast: in a large cluster a node may occasionally miss one). Run::

    python examples/usermessages.py --port 8000 --peers 127.0.0.1:8000
    python examples/usermessages.py --port 8001 --peers 127.0.0.1:8000

and type ``gossip hello everyone`` on one of them. Unattended::

    python examples/usermessages.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from _common import Command, Example, run, say

import gossip
from gossip import Cluster, Node, Packet

USER_MESSAGE_TYPE = gossip.USER_MSG  # 128


@dataclass
class UserMessage:
    """The payload of a type-128 message."""

    content: str


def on_user_message(sender: Node, packet: Packet) -> None:
    """Print who sent the message and its content (a sender this node does not know yet is in
    state UNKNOWN, with no address)."""
    try:
        msg = packet.unmarshal(UserMessage)
    except gossip.GossipError as exc:
        print(f"undecodable user message: {exc}", flush=True)
        return
    who = f"{sender.id} ({sender.address or 'not a member yet'})"
    say(f"Received message from {who}: {msg.content}")


def cmd_gossip(cluster: Cluster, args: list[str]) -> None:
    """Console command: broadcast the text to the cluster."""
    text = " ".join(args)
    cluster.send(USER_MESSAGE_TYPE, UserMessage(text))
    print(f"sent: {text}", flush=True)


def setup(cluster: Cluster) -> None:
    """Register the type-128 handler (messages are relayed on: an epidemic broadcast)."""
    cluster.handle_func(USER_MESSAGE_TYPE, on_user_message)


EXAMPLE = Example(
    name="usermessages",
    description="gossip user messages example: broadcast text with 'gossip <text>'",
    setup=setup,
    commands={"gossip": Command("gossip <text...>", "broadcast a message to the cluster",
                                cmd_gossip, 1)},
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
