"""Hostile sources inside a simulated cluster: a forger of accusations and a flooder.

Neither runs a protocol core. Both send well-formed messages (every value within the wire's
ranges, so a real decoder would pass them on) through :meth:`Simulation.inject`, and know what
an attacker on the network could learn (every member's address and current incarnation, by
taking part in push/pull).

* :class:`Forger` tries to evict live members: accusations far ahead of a member's
  incarnation or at the top of the range, buddy pings claiming the target is suspect at the top,
  forged alive messages at the top (which would leave the member unable to refute later), and
  accusations just within the jump bound (which the member must refute in time).
* :class:`Flooder` tries to fill every table: push/pulls, joins and unsolicited replies with
  thousands of fake members, gossip of fake members, and ping-reqs aimed at arbitrary addresses.

Forged deaths and leaves at a member's *current* incarnation are left out: without
authentication they are indistinguishable from real ones in any SWIM (the member refutes them at
once); encryption is the answer to those.
"""

from __future__ import annotations

import random

from ..messages import (
    MAX_INCARNATION, Alive, Dead, Gossip, Join, MemberState, Message, Ping, PingReq, PushPull, PushPullReply,
    Suspect,
)
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from .simulation import Simulation

__all__ = ["Forger", "Flooder"]


class _Source:
    def __init__(self, sim: Simulation, addr: str, rate: float, rng: random.Random) -> None:
        self.sim = sim
        self.addr = addr
        self.rate = rate
        self.rng = rng
        self.id = NodeID(int=rng.getrandbits(128))
        self.sent = 0
        self.until = 0.0

    def start(self, at: float, until: float) -> None:
        """Send from ``at`` to ``until`` (virtual seconds), ``rate`` messages per second."""
        self.until = until
        self.sim.schedule(at, self._tick)

    def _live(self) -> list[int]:
        return sorted(i for i in self.sim.live if self.sim.nodes[i].running)

    def _tick(self) -> None:
        live = self._live()
        if live:
            self.send(live)
        nxt = self.sim.now + self.rng.expovariate(self.rate)
        if nxt < self.until:
            self.sim.schedule(nxt, self._tick)

    def send(self, live: list[int]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _inject(self, dst: int, msg: Message, reliable: bool = False, sender: NodeID | None = None) -> None:
        self.sent += 1
        self.sim.inject(dst, self.addr, msg, self.id if sender is None else sender, reliable)


class Forger(_Source):
    """Forged accusations and forged top-of-range claims about live members.

    Args:
        sim: the simulation.
        addr: the forger's own address.
        rate: messages per second.
        rng: its random source.
        jump: the victims' ``max_incarnation_jump`` (to aim just inside and far outside it).
    """

    def __init__(self, sim: Simulation, addr: str, rate: float, rng: random.Random, jump: int) -> None:
        super().__init__(sim, addr, rate, rng)
        self.jump = jump

    def send(self, live: list[int]) -> None:
        """Send one forged message about a random live member to a random live member."""
        rng, sim = self.rng, self.sim
        victim = sim.nodes[rng.choice(live)]
        to = rng.choice(live)
        inc = victim.core.incarnation
        accuser = sim.nodes[rng.choice(live)].id        # blame a real member
        kind = rng.randrange(7)
        if kind == 0:
            self._inject(to, Gossip((Suspect(victim.id, min(MAX_INCARNATION, inc + 10 * self.jump), accuser),)))
        elif kind == 1:
            self._inject(to, Gossip((Suspect(victim.id, MAX_INCARNATION, accuser),)))
        elif kind == 2:
            self._inject(to, Gossip((Dead(victim.id, MAX_INCARNATION, accuser),)))
        elif kind == 3:
            self._inject(to, Gossip((Alive(victim.id, MAX_INCARNATION, victim.addr),)))
        elif kind == 4:
            self._inject(victim.index, Ping(rng.getrandbits(32), victim.id, self.addr, (), MAX_INCARNATION))
        elif kind == 5:
            # Within the bound: taken as a real suspicion; the victim must refute it in time.
            step = rng.randrange(1, max(2, self.jump // 2))
            self._inject(to, Gossip((Suspect(victim.id, min(MAX_INCARNATION, inc + step), accuser),)))
        else:
            # The same forgeries in a push/pull, sent as if by the victim's neighbour.
            states = (MemberState(victim.id, victim.addr, NodeState.SUSPECT, MAX_INCARNATION),
                      MemberState(victim.id, victim.addr, NodeState.ALIVE, MAX_INCARNATION))
            self._inject(to, PushPull(rng.getrandbits(32), self.addr, states), reliable=True, sender=accuser)


class Flooder(_Source):
    """Messages full of fake members, and ping-reqs at arbitrary addresses.

    Args:
        sim: the simulation.
        addr: the flooder's own address.
        rate: messages per second.
        rng: its random source.
        size: fake members per full-state message.
    """

    def __init__(self, sim: Simulation, addr: str, rate: float, rng: random.Random, size: int) -> None:
        super().__init__(sim, addr, rate, rng)
        self.size = size
        self._next_fake = 1 << 100
        self.fakes = 0

    def _fakes(self, n: int) -> tuple[MemberState, ...]:
        start = self._next_fake
        self._next_fake += n
        self.fakes += n
        return tuple(MemberState(NodeID(int=start + i), f"127.66.{i >> 8 & 255}.{i & 255}:7946", NodeState.ALIVE, 0)
                     for i in range(n))

    def send(self, live: list[int]) -> None:
        """Send one flooding message to a random live member."""
        rng = self.rng
        to = rng.choice(live)
        seq = rng.getrandbits(32)
        kind = rng.randrange(5)
        if kind == 0:
            self._inject(to, PushPull(seq, self.addr, self._fakes(self.size)), reliable=True)
        elif kind == 1:
            states = self._fakes(self.size)
            self._inject(to, Join(seq, self.addr, states, PROTOCOL_VERSION, ""), reliable=True)
        elif kind == 2:
            self._inject(to, PushPullReply(seq, self._fakes(self.size)), reliable=True)
        elif kind == 3:
            fakes = self._fakes(40)
            self._inject(to, Gossip(tuple(Alive(s.node, 0, s.addr) for s in fakes)))
        else:
            target = self.sim.nodes[rng.choice(live)]
            self._inject(to, PingReq(seq, NodeID(int=rng.getrandbits(128)), "203.0.113.9:80", self.addr))
            self._inject(to, PingReq(seq + 1, target.id, "203.0.113.9:80", self.addr))
