"""Round-trip times of acked probes: a fixed-bucket histogram the core fills as acks arrive,
and, with ``Config.adaptive_ping_timeout``, each member's recent round trips
(:class:`RttWindow`) from which its direct-probe timeout is drawn (:func:`adaptive_timeout`).

The core knows when it sent each ping and is given ``now`` when the ack arrives; the
difference is one sample. Buckets are fixed (no allocation per sample, nothing to configure),
spanning loopback (sub-millisecond) to slow WAN links (seconds), so a host can export them as
a Prometheus histogram as they are.

The adaptive timeout of a member is a high percentile of its last round trips times a factor
(``adaptive_ping_percentile``, ``adaptive_ping_factor``), clamped between ``ping_timeout`` and
``ping_timeout_max``; until :data:`MIN_SAMPLES` round trips are known it is ``ping_timeout``.
A member with a steady slow link then gets the time it needs, so it is not probed indirectly
at every round (nor suspected when helpers are slow too), while a fast member keeps the short
``ping_timeout`` and its crash is found as fast as before. Only an ack from the member itself
counts (including one arriving after its direct timeout, within the round), never a helper's.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping

from ..node import NodeID

__all__ = ["RTT_BUCKETS", "RttHistogram", "ProbeRtt", "RttWindow", "adaptive_timeout", "MIN_SAMPLES"]

MIN_SAMPLES = 2
"""Round trips a member must have answered before its timeout adapts to them."""

RTT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
"""Upper bounds (seconds, inclusive) of the histogram's buckets; a last bucket holds the rest."""


@dataclasses.dataclass(frozen=True)
class ProbeRtt:
    """A snapshot of the probe round-trip times of one node.

    Attributes:
        bounds: the buckets' upper bounds in seconds (:data:`RTT_BUCKETS`).
        counts: samples per bucket, *not* cumulative; one more entry than ``bounds``: the last
            counts samples above the largest bound.
        sum: the sum of every sample, seconds.
        count: the number of samples.
        last: the last measured round-trip time of each member, seconds (members never acked
            directly are absent).
    """

    bounds: tuple[float, ...] = RTT_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(RTT_BUCKETS) + 1)
    sum: float = 0.0
    count: int = 0
    last: Mapping[NodeID, float] = dataclasses.field(default_factory=dict)

    def cumulative(self) -> list[tuple[float, int]]:
        """Return ``(upper bound, samples at or below it)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append((bound, total))
        return out


class RttHistogram:
    """Counts round-trip samples into :data:`RTT_BUCKETS` (owned by the protocol core)."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(RTT_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def record(self, seconds: float) -> None:
        """Add one sample (negative values, from a host clock stepping back, count as 0)."""
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(RTT_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def snapshot(self, last: Mapping[NodeID, float] | None = None) -> ProbeRtt:
        """Return the figures so far, with ``last`` as the per-member last round-trip times."""
        return ProbeRtt(RTT_BUCKETS, tuple(self.counts), self.sum, self.count, dict(last or {}))


class RttWindow:
    """The last round trips of one member (a ring of at most ``adaptive_ping_samples``)."""

    __slots__ = ("samples", "_next")

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._next = 0

    def add(self, seconds: float, size: int) -> None:
        """Add one sample, dropping the oldest beyond ``size``."""
        seconds = max(0.0, seconds)
        if len(self.samples) < size:
            self.samples.append(seconds)
        else:
            self.samples[self._next % size] = seconds
            self._next = (self._next + 1) % size

    def percentile(self, q: float) -> float:
        """Return the ``q`` quantile (0..1) of the samples (nearest rank); 0.0 if none."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[rank]


def adaptive_timeout(window: RttWindow | None, base: float, cap: float, q: float,
                     factor: float) -> float:
    """Return a member's direct-probe timeout: ``q`` quantile of ``window`` times ``factor``,
    clamped to ``[base, cap]``; ``base`` while fewer than :data:`MIN_SAMPLES` are known."""
    if window is None or len(window.samples) < MIN_SAMPLES:
        return base
    return min(cap, max(base, window.percentile(q) * factor))
