"""Parts of the protocol core wired by hand around one outbox, for tests of one part at a time.

Each part is built with the collaborators it is given in the core; what a test does not
exercise is a :class:`Recorder` that notes every call. Assertions read the outbox: the sends,
events, timers and counters a part produced.
"""

from __future__ import annotations

import random
from typing import Any

from gossip.config import Config
from gossip.messages import Alive, MemberState, Message
from gossip.node import NodeID, NodeState
from gossip.protocol.actions import MemberEvent, Send
from gossip.protocol.awareness import Awareness
from gossip.address import host_of
from gossip.protocol.membership import Inbound, LocalNode, MemberTable
from gossip.protocol.outbox import Outbox
from gossip.protocol.reconnect import Reconnector

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
SELF = NodeID(int=1)


def node(i: int) -> NodeID:
    return NodeID(int=0x100 + i)


def addr(i: int) -> str:
    return f"127.0.1.{i}:7946"


class Recorder:
    """A watcher (and any callable collaborator): records ``(name, args)`` of every call
    (keyword arguments, if any, as a dict after the others)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.syncing = False
        self.source: NodeID | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any, **kw: Any) -> None:
            self.calls.append((name, args + ((kw,) if kw else ())))
        return record

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


class Parts:
    """An outbox, a message context, a member table and a local node, wired as in the core."""

    def __init__(self, config: Config | None = None, seed: int = 1) -> None:
        self.config = config or Config.lan()
        self.rng = random.Random(seed)
        self.out = Outbox()
        self.inbound = Inbound()
        self.reconnect = Reconnector(self.config.reconnect_timeout, self.config.max_reconnect_targets)
        self.table = MemberTable(self.config, self.rng, self.out, self.inbound, self.reconnect)
        self.watcher = Recorder()
        self.news = Recorder()      # stands in for dissemination: announce(now, update), forget(node)
        self.table.watch(self.watcher, self.news.forget)
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self.local = LocalNode(self.config, self.out, SELF, "127.0.0.1:7946", 0.0, meta={}, meta_stamp=0,
                               app_version="", incarnation=0, stamp_clock=None, awareness=self.awareness,
                               announce=self.news.queue, changed=self.table.local_changed)

    def message_from(self, src: str, sender: NodeID | None = None, authenticated: bool = False) -> None:
        """Set the context as the core does when a message arrives."""
        msg = self.inbound
        msg.src_host = host_of(src)
        msg.sender = sender
        msg.authenticated = authenticated
        msg.solicited = False
        msg.new_in_msg = 0
        msg.vouching = authenticated

    def bootstrap(self, n: int) -> list[NodeID]:
        """Fill the table with ``n`` members that showed themselves."""
        ids = [node(i) for i in range(n)]
        self.table.bootstrap(0.0, [MemberState(x, addr(i), ALIVE, 0) for i, x in enumerate(ids)], SELF)
        return ids

    def admit(self, now: float, a: Alive, itself: bool = False) -> bool:
        """Run a newcomer through admission and add it, as the merge rules do."""
        if not self.table.admit(now, itself):
            return False
        self.table.add(now, a, itself)
        return True

    def sends(self) -> list[Send]:
        return [a for a in self.out.drain() if isinstance(a, Send)]

    def drained(self) -> list[Any]:
        return self.out.drain()

    def events(self) -> list[MemberEvent]:
        return [a for a in self.out.drain() if isinstance(a, MemberEvent)]

    def timers(self, kind: int) -> list[tuple[float, Any]]:
        return sorted((when, key) for when, _, k, key in self.out.timers if k == kind)


def messages(sends: list[Send], kind: type) -> list[Message]:
    return [s.msg for s in sends if isinstance(s.msg, kind)]
