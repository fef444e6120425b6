"""A few protocol cores wired together on a virtual clock (no sockets, no sleeps).

``CoreCluster`` delivers every Send instantly (plus ``latency``) unless the link is cut, and
runs timers in time order, so a test reads: build, act, ``run(seconds)``, assert.
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Any

from gossip.config import Config
from gossip.messages import Alive, Dead, Gossip, MemberState, Message, Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import JoinResult, MemberEvent, Send



A, B, C = NodeID(int=0xA), NodeID(int=0xB), NodeID(int=0xC)
"""Three member ids the single-core tests use."""


def lone(config: Config | None = None, **kw: Any) -> Protocol:
    """A core (id 1, at ``self:1``) that knows nobody."""
    return Protocol(config or Config.lan(), NodeID(int=1), "self:1", random.Random(1), 0.0, **kw)


def with_member(state: NodeState = NodeState.ALIVE, inc: int = 5, config: Config | None = None,
                src: str = "x") -> Protocol:
    """A core that knows member A at ``inc`` in ``state`` (learnt from ``src``), its actions
    drained."""
    core = lone(config)
    core.receive(0.0, src, Gossip((Alive(A, inc, "a:1"),)))
    if state is NodeState.SUSPECT:
        core.receive(0.0, "x", Gossip((Suspect(A, inc, B),)))
    elif state is NodeState.DEAD:
        core.receive(0.0, "x", Gossip((Dead(A, inc, B),)))
    core.actions_to_perform()
    assert core.members[A].state is state
    return core


def sends(core: Protocol) -> list[Send]:
    """Drain the core's actions and return its sends."""
    return [a for a in core.actions_to_perform() if isinstance(a, Send)]

class CoreCluster:
    def __init__(self, n: int, config: Config | None = None, seed: int = 1, bootstrap: bool = True,
                 latency: float = 0.001) -> None:
        self.config = config or Config.lan()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.cores: list[Protocol] = []
        self.by_addr: dict[str, int] = {}
        self.down: set[int] = set()
        self.cut_links: set[tuple[int, int]] = set()
        self.events: list[tuple[int, MemberEvent]] = []
        self.sent: list[tuple[int, Send]] = []
        self.join_results: list[tuple[int, JoinResult]] = []
        self._q: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        for _ in range(n):
            self.add()
        if bootstrap:
            states = [MemberState(c.id, c.addr, NodeState.ALIVE, 0) for c in self.cores]
            for c in self.cores:
                c.bootstrap(self.now, states)

    def add(self, **kw: Any) -> Protocol:
        i = len(self.cores)
        core = Protocol(self.config, NodeID(int=self.rng.getrandbits(128)), f"n{i}", random.Random(self.rng.random()),
                        self.now, **kw)
        self.cores.append(core)
        self.by_addr[core.addr] = i
        return core

    def state(self, observer: int, target: int) -> NodeState:
        m = self.cores[observer].members.get(self.cores[target].id)
        return NodeState.UNKNOWN if m is None else m.state

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, i: int) -> None:
        for j in range(len(self.cores)):
            if j != i:
                self.cut(i, j)

    def heal(self) -> None:
        self.cut_links.clear()

    def deliver(self, i: int, msg: Message, src: int | None = None, sender: NodeID | None = None) -> None:
        """Hand ``msg`` to core ``i`` right now and process what follows."""
        core = self.cores[i]
        core.receive(self.now, "n?" if src is None else f"n{src}", msg, sender)
        self._drain(i)

    def _drain(self, i: int) -> None:
        for a in self.cores[i].actions_to_perform():
            if isinstance(a, Send):
                self.sent.append((i, a))
                j = self.by_addr.get(a.addr)
                if j is None or j in self.down or (i, j) in self.cut_links:
                    continue
                heapq.heappush(self._q, (self.now + self.latency, next(self._seq), j, (i, a)))
            elif isinstance(a, MemberEvent):
                self.events.append((i, a))
            else:
                self.join_results.append((i, a))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            t_msg = self._q[0][0] if self._q else float("inf")
            t_tick, who = min(((c.next_deadline(), k) for k, c in enumerate(self.cores) if k not in self.down),
                              default=(float("inf"), -1))
            t = min(t_msg, t_tick)
            if t > end:
                break
            # A timer already due (a suspicion shortened by confirmations) runs now: virtual
            # time never goes back.
            self.now = max(self.now, t)
            if t_msg <= t_tick:
                _, _, j, (i, a) = heapq.heappop(self._q)
                if j in self.down or (i, j) in self.cut_links:
                    continue
                self.cores[j].receive(self.now, f"n{i}", a.msg, self.cores[i].id, a.reliable)
                self._drain(j)
            else:
                self.cores[who].tick(self.now)
                self._drain(who)
        self.now = end

    def drain_all(self) -> None:
        for i in range(len(self.cores)):
            self._drain(i)
