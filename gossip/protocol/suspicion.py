"""Lifeguard's dynamic suspicion timeout (LHA-Suspicion) as pure functions and a small record.

A suspicion starts with the longest timeout, ``max``, and shrinks toward ``min`` as independent
confirmations (other members suspecting the same node) arrive:

    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

where ``k`` is the number of confirmations expected (memberlist: ``suspicion_mult - 2``, and 0
when the cluster is too small to provide them, in which case the timeout is ``min``).
"""

from __future__ import annotations

import dataclasses
import math

from ..node import NodeID

__all__ = ["remaining_suspicion_time", "suspicion_timeouts", "Suspicion"]


def suspicion_timeouts(
    n: int, probe_interval: float, suspicion_mult: int, max_timeout_mult: int
) -> tuple[float, float]:
    """Return ``(min, max)`` suspicion timeouts for a cluster of ``n`` members.

    ``min = suspicion_mult * max(1, log10(n)) * probe_interval`` and ``max = max_timeout_mult * min``.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    low = suspicion_mult * node_scale * probe_interval
    return low, max_timeout_mult * low


def remaining_suspicion_time(n: int, k: int, elapsed: float, low: float, high: float) -> float:
    """Return how long a suspicion with ``n`` of ``k`` confirmations has left after ``elapsed``.

    The result may be negative (the suspicion is overdue).
    """
    if k < 1:
        timeout = low
    else:
        frac = math.log(n + 1.0) / math.log(k + 1.0)
        timeout = max(low, high - (high - low) * frac)
    return timeout - elapsed


@dataclasses.dataclass(slots=True)
class Suspicion:
    """One running suspicion of a member.

    Attributes:
        incarnation: the incarnation the member is suspected at.
        start: when the suspicion started.
        k: confirmations expected.
        low, high: the minimum and maximum timeouts.
        accuser: the member whose suspicion started it (does not count as a confirmation).
        confirmers: members that confirmed independently.
    """

    incarnation: int
    start: float
    k: int
    low: float
    high: float
    accuser: NodeID
    confirmers: set[NodeID] = dataclasses.field(default_factory=set)

    def deadline(self) -> float:
        """Return the time at which the member is to be declared dead."""
        return self.start + remaining_suspicion_time(len(self.confirmers), self.k, 0.0, self.low, self.high)

    def confirm(self, sender: NodeID) -> bool:
        """Record a confirmation from ``sender``; return True if it is new and counts."""
        if self.k < 1 or sender == self.accuser or sender in self.confirmers:
            return False
        if len(self.confirmers) >= self.k:
            return False
        self.confirmers.add(sender)
        return True
