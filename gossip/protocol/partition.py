"""Partition detection: many live members lost within a short window, and their return.

The rule, as this node sees the cluster:

* A member is *lost* when it goes from alive to suspect or dead. The detector remembers the
  members lost within the last ``Config.partition_window`` seconds that are still suspect or
  dead (at most one entry per member, so never more than the membership table).
* When that set holds at least ``Config.partition_min_members`` members and at least
  ``Config.partition_threshold`` of the members that were live at the start of the window
  (the alive and suspect members now, plus those of the set that are dead since), a partition
  is suspected: :class:`PartitionSuspected` names them. While it lasts, members lost later
  join it.
* The partition is healed when fewer than ``partition_min_members`` of its members are still
  suspect or dead (the same bound below which losing members is never called a partition);
  members that leave or are forgotten meanwhile drop out of it. :class:`PartitionHealed` gives
  its duration and members.

This node itself is never a member of the partition it sees: on the small side of a split the
rest of the cluster looks lost, and that side reports the partition too.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..node import NodeID

__all__ = ["PartitionSuspected", "PartitionHealed", "PartitionDetector"]


@dataclasses.dataclass(frozen=True)
class PartitionSuspected:
    """A large share of the live members was lost within a short window.

    Attributes:
        members: the members lost (suspect or dead), in the order they were lost.
        share: ``len(members)`` over the members live at the start of the window.
        window: ``Config.partition_window``.
        at: when the threshold was crossed (the host's clock; wall-clock time for a Cluster).
    """

    members: tuple[NodeID, ...]
    share: float
    window: float
    at: float

    def shifted(self, offset: float) -> PartitionSuspected:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        names = ", ".join(n.short for n in self.members[:8]) + (", ..." if len(self.members) > 8 else "")
        return (f"partition suspected: {len(self.members)} members ({self.share:.0%} of the live "
                f"ones) lost within {self.window:g}s: {names}")


@dataclasses.dataclass(frozen=True)
class PartitionHealed:
    """The members of a suspected partition came back.

    Attributes:
        members: every member the partition held (those that came back and any still lost).
        returned: the members that are alive again.
        duration: seconds from :class:`PartitionSuspected` to now.
        at: when it healed (the host's clock; wall-clock time for a Cluster).
    """

    members: tuple[NodeID, ...]
    returned: tuple[NodeID, ...]
    duration: float
    at: float

    def shifted(self, offset: float) -> PartitionHealed:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        return (f"partition healed after {self.duration:.1f}s: {len(self.returned)} of its "
                f"{len(self.members)} members are back")


class PartitionDetector:
    """Watches members being lost and coming back (owned by the protocol core).

    Args:
        threshold: the share of live members whose loss is a partition (0..1].
        window: seconds within which they must be lost.
        min_members: fewer lost members than this are never a partition.
    """

    __slots__ = ("threshold", "window", "min_members", "_lost", "_since", "_members", "_down")

    def __init__(self, threshold: float, window: float, min_members: int) -> None:
        self.threshold = threshold
        self.window = window
        self.min_members = min_members
        self._lost: dict[NodeID, float] = {}       # lost within the window, still down
        self._since: float | None = None           # the partition's start, None when none
        self._members: dict[NodeID, None] = {}     # the partition's members, in order
        self._down: set[NodeID] = set()            # its members still down

    @property
    def active(self) -> bool:
        """True while a suspected partition has not healed."""
        return self._since is not None

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        for node in [n for n, t in self._lost.items() if t <= horizon]:
            del self._lost[node]

    def lost(self, node: NodeID, now: float, live: int,
             is_dead: Callable[[NodeID], bool]) -> PartitionSuspected | None:
        """A member went from alive to suspect or dead.

        ``live`` is the number of alive and suspect members now (this node not counted);
        ``is_dead`` tells which lost members are dead now. Returns the event when a partition is
        newly suspected.
        """
        if self._since is not None:
            if node not in self._members:
                self._members[node] = None
            self._down.add(node)
            return None
        self._lost[node] = now
        self._prune(now)
        n = len(self._lost)
        if n < self.min_members:
            return None
        population = max(1, live + sum(1 for m in self._lost if is_dead(m)))
        share = n / population
        if share < self.threshold:
            return None
        self._since = now
        self._members = dict.fromkeys(self._lost)
        self._down = set(self._lost)
        self._lost.clear()
        return PartitionSuspected(tuple(self._members), share, self.window, now)

    def back(self, node: NodeID, now: float, gone: bool = False) -> PartitionHealed | None:
        """A member is alive again (or, with ``gone``, left or was forgotten).

        Returns the event when this heals the partition.
        """
        self._lost.pop(node, None)
        if self._since is None or node not in self._members:
            return None
        self._down.discard(node)
        if gone:
            del self._members[node]
        if len(self._down) >= self.min_members:
            return None
        members = tuple(self._members)
        returned = tuple(n for n in members if n not in self._down)
        healed = PartitionHealed(members, returned, now - self._since, now)
        self._since = None
        self._members = {}
        self._down = set()
        return healed
