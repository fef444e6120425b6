"""Leader election's settings and events: :class:`LeaderConfig`, :class:`LeaderEvent` and the
quorum rule. Pure data: no clock, no threads (:mod:`gossip.leader.election` holds the machine).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from fractions import Fraction

from ..errors import ConfigError
from ..groups import Criteria
from ..wire import MAX_MSG_TYPE, RESERVED_MSGS_START

__all__ = ["LeaderEvent", "ELECTED", "LOST", "BECAME_LEADER", "STEPPED_DOWN", "LeaderConfig",
           "quorum", "SILENT_LEADER_FACTOR", "MAX_TERM"]

MAX_TERM = (1 << 63) - 1
"""The largest term (and heartbeat sequence number) an election message carries."""

SILENT_LEADER_FACTOR = 10
"""How many times ``leader_timeout`` a node waits before standing against a silent leader that its
failure detector still sees alive (normally the detector suspects a crashed leader much sooner)."""

class LeaderEvent(enum.IntEnum):
    """What happened to the leadership, as the local node sees it (paularlott's numbers)."""

    ELECTED = 0
    """A (new) leader is known; the event's node is the leader."""
    LOST = 1
    """There is no leader any more; the event's node is the leader that was lost."""
    BECAME_LEADER = 2
    """The local node became the leader."""
    STEPPED_DOWN = 3
    """The local node is no longer the leader."""

    def __str__(self) -> str:
        return _EVENT_NAMES[self]


_EVENT_NAMES = {
    LeaderEvent.ELECTED: "Leader Elected",
    LeaderEvent.LOST: "Leader Lost",
    LeaderEvent.BECAME_LEADER: "Became Leader",
    LeaderEvent.STEPPED_DOWN: "Stepped Down",
}

ELECTED = LeaderEvent.ELECTED
"""Alias of :attr:`LeaderEvent.ELECTED`."""
LOST = LeaderEvent.LOST
"""Alias of :attr:`LeaderEvent.LOST`."""
BECAME_LEADER = LeaderEvent.BECAME_LEADER
"""Alias of :attr:`LeaderEvent.BECAME_LEADER`."""
STEPPED_DOWN = LeaderEvent.STEPPED_DOWN
"""Alias of :attr:`LeaderEvent.STEPPED_DOWN`."""


def quorum(n: int, percentage: float) -> int:
    """Return how many votes a quorum of ``n`` members needs: ``ceil(n * percentage / 100)``.

    At least 1 when ``n > 0``; 0 when ``n == 0``. Computed exactly (``quorum(100, 57) == 57``).
    """
    if n <= 0:
        return 0
    return _quorum(n, percentage)


@functools.lru_cache(maxsize=1024)
def _quorum(n: int, percentage: float) -> int:
    return max(1, math.ceil(Fraction(n) * Fraction(str(percentage)) / 100))


@dataclasses.dataclass(frozen=True)
class LeaderConfig:
    """Settings of a leader election (paularlott's names and defaults, in float seconds).

    Attributes:
        check_interval: how often each node checks the leadership and the leader heartbeats.
        leader_timeout: a leader silent this long is gone; also how long a follower promises
            its leader not to acknowledge anyone else, and how long a node waits, after
            starting or regaining quorum, for a heartbeat before it stands itself.
        heartbeat_msg_type: the message type of heartbeats (64..65535; 65 by default, in the
            range reserved for add-on packages).
        quorum_percentage: the share of the quorum's base (see the module documentation) that
            must acknowledge a leader; above 50, so two sides of a partition can never both
            have it.
        metadata_criteria: only nodes matching these criteria (see :class:`gossip.NodeGroup`)
            may lead, and only they count for the quorum; None means every node.
        expected_members: the number of eligible members the cluster is meant to have: the
            quorum is never measured against fewer (None: only the members confirmed alive
            count). Set it where nodes are replaced under new ids (containers), so the quorum's
            base does not keep the crashed ones until an operator removes them.
        max_clock_drift_rate: how much faster or slower than real time any node's monotonic clock
            may run (0.01 is 1 %); the lease is ``leader_timeout * (1 - d) / (1 + d)``, and
            must exceed ``check_interval``.
        max_term_jump: the most heartbeats may raise this node's term within one
            ``leader_timeout`` (a heartbeat further ahead is not followed; the term climbs by
            what is left of the allowance).
        max_remembered: the most members the quorum's base holds (the longest known are
            dropped first beyond it, counted as ``quorum_members_evicted``).

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """

    check_interval: float = 1.0
    leader_timeout: float = 3.0
    heartbeat_msg_type: int = RESERVED_MSGS_START + 1
    quorum_percentage: float = 51
    metadata_criteria: Mapping[str, str] | None = None
    expected_members: int | None = None
    max_clock_drift_rate: float = 0.01
    max_term_jump: int = 1 << 20
    max_remembered: int = 16384

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value!r}")
            return float(value)

        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(name, f"must be an int in {low}..{high}, got {value!r}")

        if number("check_interval") <= 0:
            raise ConfigError("check_interval", f"must be > 0, got {self.check_interval!r}")
        if number("leader_timeout") <= self.check_interval:
            raise ConfigError("leader_timeout", f"must be greater than check_interval "
                              f"({self.check_interval!r}), or followers give up on the leader "
                              f"between two heartbeats; got {self.leader_timeout!r}")
        mt = self.heartbeat_msg_type
        if isinstance(mt, bool) or not isinstance(mt, int) or not RESERVED_MSGS_START <= mt <= MAX_MSG_TYPE:
            raise ConfigError("heartbeat_msg_type", f"must be an int in {RESERVED_MSGS_START}.."
                              f"{MAX_MSG_TYPE}, got {mt!r}")
        pct = number("quorum_percentage")
        if not 50 < pct <= 100:
            raise ConfigError("quorum_percentage", f"must be in (50, 100] so that two sides of a "
                              f"partition cannot both have a quorum, got {self.quorum_percentage!r}")
        if self.metadata_criteria is not None:
            try:
                Criteria(self.metadata_criteria)
            except (TypeError, ValueError) as exc:
                raise ConfigError("metadata_criteria", str(exc)) from exc
        if self.expected_members is not None:
            integer("expected_members", 1, 1 << 20)
        drift = number("max_clock_drift_rate")
        if not 0 <= drift < 0.5:
            raise ConfigError("max_clock_drift_rate", f"must be in [0, 0.5), got {self.max_clock_drift_rate!r}")
        if self.lease <= self.check_interval:
            raise ConfigError("max_clock_drift_rate", f"leaves a lease of {self.lease:.3g}s, not more than "
                              f"check_interval ({self.check_interval!r}): raise leader_timeout or "
                              f"lower the drift")
        integer("max_term_jump", 1, MAX_TERM)
        integer("max_remembered", 1, 1 << 24)

    @property
    def lease(self) -> float:
        """How long a quorum's acknowledgements keep a leader leading, counted from when it sent
        the heartbeat they answer: ``leader_timeout * (1 - max_clock_drift_rate) / (1 + max_clock_drift_rate)``."""
        d = float(self.max_clock_drift_rate)
        return float(self.leader_timeout) * (1 - d) / (1 + d)

    def criteria(self) -> Criteria | None:
        """Return the compiled :attr:`metadata_criteria` (None if every node is eligible)."""
        return None if self.metadata_criteria is None else Criteria(self.metadata_criteria)
