"""Replicated maps in the simulator: every node runs a :class:`~gossip.replicated.core.MapCore`
beside its protocol core, and map messages cross the same simulated network.

Each node's map has its own hybrid logical clock, whose wall clock is the virtual time plus a
per-node offset (``clock_skew``: clocks that disagree by up to that many seconds). A broadcast
goes directly to every member the node sees alive (as an epidemic would reach them, but lost
like any best-effort packet); anti-entropy runs every ``sync_interval`` with a random alive
peer, and with a member at once when it comes alive, as the threaded host does.

:meth:`MapSimulation.converged` says whether every running node's map holds the same entries
(equal digests and equal contents); :meth:`MapSimulation.expected` is what they must all hold:
for each key, the write with the largest ``(stamp, writer)`` of all writes made.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any

from ..config import Config
from ..hlc import HLC, EPOCH_US
from ..node import NodeState
from ..protocol.actions import MemberEvent
from ..replicated.core import Broadcast, Changed, Entry, MapConfig, MapCore, MapMessage, SendTo
from .network import LinkModel
from .simulation import Simulation

__all__ = ["MapSimulation"]

_START_US = EPOCH_US + 365 * 86400 * 1_000_000     # virtual time 0 is a year after the HLC epoch


class MapSimulation(Simulation):
    """A :class:`Simulation` whose nodes also hold a replicated map.

    Args:
        config: the protocol configuration.
        seed: the one seed of the run.
        link: the network model.
        map_config: the maps' settings.
        clock_skew: how far (seconds) a node's wall clock may be off, either way.
    """

    def __init__(self, config: Config, seed: int, link: LinkModel | None = None,
                 map_config: MapConfig | None = None, clock_skew: float = 0.0) -> None:
        super().__init__(config, seed, link)
        self.map_config = map_config or MapConfig()
        self.clock_skew = clock_skew
        self.maps: dict[int, MapCore] = {}
        self.map_rng = random.Random(self.root.getrandbits(64))
        self.writes: dict[str, Entry] = {}
        """The winning write of each key so far (what every map must converge to)."""
        self.changes: dict[int, int] = {}
        """Change events each node's map produced."""
        self.map_msgs = 0
        self._wake: dict[int, float] = {}
        self.on_event = self._member_event

    def start_map(self, index: int, name: str = "m") -> MapCore:
        """Give node ``index`` a map (it syncs with a random alive peer at once)."""
        offset = self.map_rng.uniform(-self.clock_skew, self.clock_skew)

        def wall(offset: float = offset) -> int:
            return (_START_US + int((self.now + offset) * 1_000_000)) * 1000

        core = MapCore(self.nodes[index].id, name, self.map_config, HLC(wall_clock=wall), random.Random(
            self.map_rng.getrandbits(64)), self.now)
        self.maps[index] = core
        peers = self.peers(index)
        if peers:
            core.sync_with(peers[self.map_rng.randrange(len(peers))])
        self._drain_map(index)
        return core

    def peers(self, index: int) -> list[Any]:
        """The members node ``index`` sees alive (its anti-entropy partners)."""
        return [m.node for m in self.nodes[index].core.members.values() if m.state is NodeState.ALIVE]

    def crash(self, index: int) -> None:
        """Kill a node; its map dies with it."""
        super().crash(index)
        self.maps.pop(index, None)

    # ------------------------------------------------------------------ writes

    def write(self, index: int, key: str, value: Any) -> Entry:
        """Node ``index`` sets ``key``."""
        e = self.maps[index].set(key, value)
        self._note(e)
        self._drain_map(index)
        return e

    def delete(self, index: int, key: str) -> Entry | None:
        """Node ``index`` deletes ``key``."""
        e = self.maps[index].delete(key)
        if e is not None:
            self._note(e)
        self._drain_map(index)
        return e

    def _note(self, e: Entry) -> None:
        best = self.writes.get(e.key)
        if best is None or e.version > best.version:
            self.writes[e.key] = e

    # ------------------------------------------------------------------ checks

    def expected(self) -> dict[str, Any]:
        """Every key's winning value (deleted keys left out)."""
        return {k: e.value for k, e in self.writes.items() if not e.deleted}

    def converged(self) -> bool:
        """True when every running node's map holds the same entries as every other's."""
        maps = [m for i, m in self.maps.items() if self.nodes[i].running]
        if not maps:
            return True
        first = maps[0].digest()
        if any(m.digest() != first for m in maps[1:]):
            return False
        snap = maps[0].snapshot()
        return all(m.snapshot() == snap for m in maps[1:])

    # ------------------------------------------------------------------ driving the maps

    def _member_event(self, observer: int, ev: MemberEvent) -> None:
        core = self.maps.get(observer)
        if core is not None and ev.state is NodeState.ALIVE and ev.prev is not NodeState.ALIVE:
            core.sync_with(ev.node)
            self.schedule(self.now, lambda: self._drain_map(observer))

    def _tick(self, index: int, when: float) -> None:
        core = self.maps.get(index)
        if core is None or self._wake.get(index) != when or not self.nodes[index].running:
            return
        del self._wake[index]
        core.tick(self.now, self.peers(index))
        self._drain_map(index)

    def _drain_map(self, index: int) -> None:
        core = self.maps.get(index)
        if core is None:
            return
        for a in core.actions_to_perform():
            if isinstance(a, Broadcast):
                for node in self.peers(index):
                    dst = self.by_id.get(node)
                    if dst is not None:
                        self._send_map(index, dst, a.msg)
            elif isinstance(a, SendTo):
                dst = self.by_id.get(a.node)
                if dst is not None:
                    self._send_map(index, dst, a.msg)
            else:
                assert isinstance(a, Changed)
                self.changes[index] = self.changes.get(index, 0) + 1
        deadline = core.next_deadline()
        if deadline < math.inf and self._wake.get(index, math.inf) > deadline:
            self._wake[index] = deadline
            self.schedule(max(self.now, deadline), functools.partial(self._tick, index, deadline))

    def _send_map(self, src: int, dst: int, msg: MapMessage) -> None:
        self.map_msgs += 1
        d = self.net.delay(src, dst, self.now, False)
        if d is not None:
            sender = self.nodes[src].id
            self.schedule(self.now + d, lambda: self._deliver_map(dst, sender, msg))

    def _deliver_map(self, dst: int, sender: Any, msg: MapMessage) -> None:
        core = self.maps.get(dst)
        if core is None or not self.nodes[dst].running:
            return
        core.receive(self.now, sender, msg)
        self._drain_map(dst)
