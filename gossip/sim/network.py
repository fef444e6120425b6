"""The simulated network: who can reach whom, how late, and what gets lost.

* latency: ``base_latency`` plus an exponential jitter (mean ``jitter``) per packet, so packets
  overtake each other now and then; ``reorder`` adds an extra random delay to that share of
  packets;
* loss: ``loss`` drops best-effort packets uniformly; ``burst_loss`` drops them while the
  receiver's link is in a "bad" period of a two-state (Gilbert-Elliott) chain with mean good and
  bad durations ``burst_good`` and ``burst_bad``;
* reliable packets (TCP) are never lost at random (TCP retransmits) but take one extra
  round trip, and like all packets they cannot cross a partition or reach a crashed node;
* partitions: nodes are coloured; packets between different colours are dropped;
* slow nodes: :attr:`SimNetwork.slow` adds a fixed delay to every packet to or from a node (a
  steady slow link: a round trip with it is twice that longer).
"""

from __future__ import annotations

import dataclasses
import random
from math import log as _log

__all__ = ["LinkModel", "SimNetwork"]


@dataclasses.dataclass
class LinkModel:
    """Parameters of every link (seconds and probabilities)."""

    base_latency: float = 0.0005
    jitter: float = 0.0002
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.005
    burst_loss: float = 0.0
    burst_good: float = 10.0
    burst_bad: float = 0.5


class SimNetwork:
    """Decides, for each packet, whether and when it arrives.

    Args:
        model: the link parameters.
        rng: the network's own random source (derived from the run's seed).
    """

    def __init__(self, model: LinkModel, rng: random.Random) -> None:
        self.model = model
        self.rng = rng
        self.colour: dict[int, int] = {}
        self.slow: dict[int, float] = {}
        self._burst_state: dict[int, tuple[bool, float]] = {}
        self.dropped = 0
        self.dropped_partition = 0

    def partition(self, groups: list[list[int]]) -> None:
        """Split the network: nodes of different groups cannot talk."""
        self.colour = {}
        for colour, group in enumerate(groups):
            for node in group:
                self.colour[node] = colour

    def heal(self) -> None:
        """Remove every partition."""
        self.colour = {}

    def _in_burst(self, dst: int, now: float) -> bool:
        m = self.model
        bad, until = self._burst_state.get(dst, (False, -1.0))
        if until < 0:
            until = now + self.rng.expovariate(1.0 / m.burst_good)
        while until <= now:
            bad = not bad
            until += self.rng.expovariate(1.0 / (m.burst_bad if bad else m.burst_good))
        self._burst_state[dst] = (bad, until)
        return bad

    def delay(self, src: int, dst: int, now: float, reliable: bool) -> float | None:
        """Return the packet's transit time, or None if it is lost."""
        colour = self.colour
        if colour and colour.get(src, 0) != colour.get(dst, 0):
            self.dropped_partition += 1
            return None
        m = self.model
        rng = self.rng
        if not reliable:
            if m.loss and rng.random() < m.loss:
                self.dropped += 1
                return None
            if m.burst_loss and self._in_burst(dst, now) and rng.random() < m.burst_loss:
                self.dropped += 1
                return None
        # rng.expovariate(1 / jitter), inlined (the same draw and value, one call fewer a packet).
        d = m.base_latency + (-_log(1.0 - rng.random()) / (1.0 / m.jitter) if m.jitter > 0 else 0.0)
        if reliable:
            d += 2 * m.base_latency
        if m.reorder and rng.random() < m.reorder:
            d += rng.uniform(0, m.reorder_delay)
        slow = self.slow
        if slow:
            d += slow.get(src, 0.0) + slow.get(dst, 0.0)
        return d
