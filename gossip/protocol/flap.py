"""Flap scores: how often a member changed state lately, and damping of flapping members.

A member's *flap score* is the number of its state changes (alive, suspect, dead, left: any
change of the state this node holds it in) within the last ``Config.flap_window`` seconds. When
a change brings the score to ``Config.flap_threshold`` the core emits :class:`MemberFlapping`;
it fires again only after the score has fallen below the threshold (seen at a later change).
Each member keeps at most :data:`MAX_FLIPS` change times, so a score never exceeds it.

Damping (``Config.flap_damping``, off by default) changes what users see, never what the
protocol does. While a member is flapping, its return to alive (from suspect or dead) is held:
users keep seeing it suspect (a member back from dead is shown suspect at once), and the alive
state change is delivered only once it has stayed alive for ``Config.flap_damping_hold``
seconds. If it is suspected again meanwhile, nothing is delivered (users already see it
suspect); if it dies or leaves, that change is delivered as usual. The protocol itself treats
the member as alive at once: it is probed as usual, its refutation spreads, and no other node's
decision changes.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import collections
import dataclasses

from ..node import NodeID

__all__ = ["MAX_FLIPS", "MemberFlapping", "FlapTracker"]

MAX_FLIPS = 64
"""State changes remembered per member (the largest possible flap score)."""


@dataclasses.dataclass(frozen=True)
class MemberFlapping:
    """A member's flap score reached the threshold.

    Attributes:
        node: the member.
        addr: its address.
        score: its state changes within the last ``window`` seconds.
        window: ``Config.flap_window``.
        threshold: ``Config.flap_threshold``.
        damped: True when damping now holds its returns to alive (``Config.flap_damping``).
        at: when the threshold was reached (the host's clock; wall-clock time for a Cluster).
    """

    node: NodeID
    addr: str
    score: int
    window: float
    threshold: int
    damped: bool
    at: float

    def shifted(self, offset: float) -> MemberFlapping:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        held = "; damped" if self.damped else ""
        return (f"member {self.node.short}@{self.addr} is flapping: {self.score} state changes "
                f"in {self.window:g}s{held}")


class FlapTracker:
    """The flap scores of every member (owned by the protocol core).

    Args:
        window: the sliding window, seconds.
        threshold: the score at which a member is flapping.
    """

    __slots__ = ("window", "threshold", "_flips", "_flapping")

    def __init__(self, window: float, threshold: int) -> None:
        self.window = window
        self.threshold = min(threshold, MAX_FLIPS)
        self._flips: dict[NodeID, collections.deque[float]] = {}
        self._flapping: set[NodeID] = set()

    def _prune(self, flips: collections.deque[float], now: float) -> int:
        horizon = now - self.window
        while flips and flips[0] <= horizon:
            flips.popleft()
        return len(flips)

    def flip(self, node: NodeID, now: float) -> int | None:
        """Record a state change; return the score if it just reached the threshold, else None."""
        flips = self._flips.get(node)
        if flips is None:
            flips = self._flips[node] = collections.deque(maxlen=MAX_FLIPS)
        flips.append(now)
        score = self._prune(flips, now)
        if score < self.threshold:
            self._flapping.discard(node)
            return None
        if node in self._flapping:
            return None
        self._flapping.add(node)
        return score

    def score(self, node: NodeID, now: float) -> int:
        """Return the member's state changes within the window ending at ``now``."""
        flips = self._flips.get(node)
        if flips is None:
            return 0
        n = self._prune(flips, now)
        if n == 0:
            del self._flips[node]
        return n

    def flapping(self, node: NodeID, now: float) -> bool:
        """True while the member's score is at or above the threshold."""
        return self.score(node, now) >= self.threshold

    def scores(self, now: float) -> dict[NodeID, int]:
        """Return every non-zero score."""
        out = {}
        for node in list(self._flips):
            n = self.score(node, now)
            if n:
                out[node] = n
        return out

    def forget(self, node: NodeID) -> None:
        """Drop a member (the core forgot it)."""
        self._flips.pop(node, None)
        self._flapping.discard(node)
