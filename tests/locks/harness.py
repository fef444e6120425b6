"""A few lock cores wired together by hand: no election, no sockets, no clock.

The test decides who leads (and in which term), which links are cut, and when time moves;
messages are delivered in order, one hop per :meth:`LockNet.run` round, unless cut.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any

from gossip.locks.base import Action, Answered, Failed, GrantIssued, Granted, LockConfig, LockView, Renewed, Send
from gossip.locks.core import LockCore
from gossip.locks.messages import Message, decode_message, encode_message
from gossip.node import NodeID

CFG = LockConfig(retry_interval=0.25, write_timeout=2.0)


@dataclasses.dataclass
class Node:
    name: str
    id: NodeID
    core: LockCore
    events: list[Action] = dataclasses.field(default_factory=list)
    up: bool = True


class LockNet:
    """N lock cores on one perfect (but cuttable) network, on one shared clock."""

    def __init__(self, names: str = "abc", config: LockConfig = CFG, drift: float = 0.01) -> None:
        self.now = 0.0
        self.nodes = {n: Node(n, NodeID(int=i + 1), LockCore(NodeID(int=i + 1), config, drift, 0.0))
                      for i, n in enumerate(names)}
        self.by_id = {x.id: x for x in self.nodes.values()}
        self.queue: deque[tuple[str, str, Message]] = deque()
        self.cut: set[frozenset[str]] = set()
        self.leader: str | None = None
        self.term = 0
        self.need = len(names) // 2 + 1
        self.wire = True   # every message goes through encode/decode
        self.drop: Callable[[str, str, Message], bool] | None = None   # lose matching messages

    # ------------------------------------------------------------------ control

    def id(self, name: str) -> NodeID:
        return self.nodes[name].id

    def elect(self, name: str | None, term: int | None = None) -> None:
        """Make ``name`` the leader everyone sees (None: no leader), in ``term``."""
        self.leader = name
        if term is not None:
            self.term = term
        self.views()
        self.deliver()

    def view(self, name: str) -> LockView:
        me = self.nodes[name]
        return LockView(leader=self.id(self.leader) if self.leader else None, leading=self.leader == name,
                        term=self.term, replicas=frozenset(x.id for x in self.nodes.values() if x is not me),
                        need=self.need, eligible=True)

    def views(self) -> None:
        for x in self.nodes.values():
            if x.up:
                x.core.update_view(self.now, self.view(x.name))
                self._drain(x)

    def set_view(self, name: str, **fields: Any) -> None:
        """Give one node a view of its own (a lagging or mistaken election)."""
        x = self.nodes[name]
        x.core.update_view(self.now, dataclasses.replace(self.view(name), **fields))
        self._drain(x)
        self.deliver()

    def partition(self, *groups: str) -> None:
        """Cut every link between different groups (strings of node names)."""
        self.cut = {frozenset((a, b)) for g in groups for h in groups if g != h for a in g for b in h}

    def heal(self) -> None:
        self.cut = set()

    def crash(self, name: str) -> None:
        self.nodes[name].up = False

    # ------------------------------------------------------------------ running

    def _drain(self, x: Node) -> None:
        for a in x.core.actions_to_perform():
            if isinstance(a, Send):
                for dst in a.to:
                    self.queue.append((x.name, self.by_id[dst].name, a.msg))
            else:
                x.events.append(a)

    def deliver(self, limit: int = 100000) -> None:
        """Deliver every queued message (and those they cause) at the current time."""
        n = 0
        while self.queue and n < limit:
            src, dst, msg = self.queue.popleft()
            n += 1
            if frozenset((src, dst)) in self.cut or not self.nodes[dst].up or not self.nodes[src].up:
                continue
            if self.drop is not None and self.drop(src, dst, msg):
                continue
            if self.wire:
                msg = decode_message(encode_message(msg))
            x = self.nodes[dst]
            x.core.receive(self.now, self.id(src), msg)
            self._drain(x)

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move time forward in steps, ticking every live core and delivering."""
        end = self.now + seconds
        while self.now < end - 1e-12:
            self.now = min(end, self.now + step)
            for x in self.nodes.values():
                if x.up:
                    x.core.tick(self.now)
                    self._drain(x)
            self.deliver()

    # ------------------------------------------------------------------ client helpers

    def acquire(self, name: str, lock: str, ttl: float = 5.0, timeout: float = 30.0) -> int:
        x = self.nodes[name]
        h = x.core.acquire(self.now, lock, ttl, timeout)
        self._drain(x)
        self.deliver()
        return h

    def release(self, name: str, handle: int) -> None:
        x = self.nodes[name]
        x.core.release(self.now, handle)
        self._drain(x)
        self.deliver()

    def renew(self, name: str, handle: int, ttl: float = 5.0) -> bool:
        x = self.nodes[name]
        ok = x.core.renew(self.now, handle, ttl)
        self._drain(x)
        self.deliver()
        return ok

    def query(self, name: str, lock: str) -> int:
        x = self.nodes[name]
        h = x.core.query(self.now, lock, 10.0)
        self._drain(x)
        self.deliver()
        return h

    def outcome(self, name: str, handle: int) -> Action | None:
        """The last Granted/Renewed/Failed/Answered event of ``handle`` on ``name``."""
        found = None
        for e in self.nodes[name].events:
            if isinstance(e, (Granted, Renewed, Failed, Answered)) and e.handle == handle:
                found = e
        return found

    def granted(self, name: str, handle: int) -> Granted | None:
        for e in self.nodes[name].events:
            if isinstance(e, Granted) and e.handle == handle:
                return e
        return None

    def issued(self) -> list[GrantIssued]:
        return [e for x in self.nodes.values() for e in x.events if isinstance(e, GrantIssued)]
