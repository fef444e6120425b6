"""Lifeguard's local health awareness (LHA-Probe).

A score in ``[0, max_multiplier - 1]`` that rises when this node's probes fail without the nacks
that healthy helpers would send, or when it has to refute suspicion of itself, and falls with
each successful probe. The node's probe interval and timeout are multiplied by ``score + 1``, so
a node that is itself slow (CPU-starved, paused, overloaded) slows its accusations instead of
spraying false suspicions at healthy peers.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """The local health score.

    Args:
        max_multiplier: the largest factor timeouts are stretched by; the score stays below it.
    """

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` (clamped to the range) and return the new score."""
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)
        return self.score

    def scale(self, timeout: float) -> float:
        """Return ``timeout`` stretched by the current health: ``timeout * (score + 1)``."""
        return timeout * (self.score + 1)

    def __repr__(self) -> str:
        return f"Awareness(score={self.score}, max={self.max_multiplier})"
