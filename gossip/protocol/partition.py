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
* The partition is over when none of its members is still suspect or dead: each came back
  alive, left, or was forgotten. As a member that crashed during the partition may stay dead
  for ``dead_node_retention_period``, it is also over once members came back and ``settle``
  seconds passed without another return (``max(partition_window, state_sync_interval)``: by
  then the views have merged). :class:`PartitionHealed` then names who came back and who did
  not; a partition whose members were all forgotten or left, none back, ends without it.
  A member forgotten during the partition that appears again before it is over counts as back.

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
    """A suspected partition is over: its members came back (see :attr:`missing` for those
    that did not).

    Attributes:
        members: every member the partition held, in the order they were lost.
        returned: the members that are alive again.
        duration: seconds from :class:`PartitionSuspected` to now.
        at: when it healed (the host's clock; wall-clock time for a Cluster).
    """

    members: tuple[NodeID, ...]
    returned: tuple[NodeID, ...]
    duration: float
    at: float

    @property
    def missing(self) -> tuple[NodeID, ...]:
        """The members that did not come back: still suspect or dead, left, or forgotten."""
        back = set(self.returned)
        return tuple(n for n in self.members if n not in back)

    def shifted(self, offset: float) -> PartitionHealed:
        """Return a copy with its time moved by ``offset`` seconds."""
        return dataclasses.replace(self, at=self.at + offset)

    def __str__(self) -> str:
        text = (f"partition healed after {self.duration:.1f}s: {len(self.returned)} of its "
                f"{len(self.members)} members are back")
        missing = self.missing
        if missing:
            text += ("; not back: " + ", ".join(n.short for n in missing[:8])
                     + (", ..." if len(missing) > 8 else ""))
        return text


class PartitionDetector:
    """Watches members being lost and coming back (owned by the protocol core).

    Args:
        threshold: the share of live members whose loss is a partition (0..1].
        window: seconds within which they must be lost.
        min_members: fewer lost members than this are never a partition.
        settle: seconds after the last return with no other, after which a partition some of
            whose members came back is over (default: ``window``).
    """

    __slots__ = ("threshold", "window", "min_members", "settle", "_lost", "_since", "_members",
                 "_down", "_returned", "_last_return")

    def __init__(self, threshold: float, window: float, min_members: int, settle: float | None = None) -> None:
        self.threshold = threshold
        self.window = window
        self.min_members = min_members
        self.settle = window if settle is None else settle
        self._lost: dict[NodeID, float] = {}       # lost within the window, still down
        self._since: float | None = None           # the partition's start, None when none
        self._members: dict[NodeID, None] = {}     # the partition's members, in order
        self._down: set[NodeID] = set()            # its members still down
        self._returned: dict[NodeID, None] = {}    # its members alive again, in order
        self._last_return = 0.0

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
            self._returned.pop(node, None)
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

        Returns the event when this ends the partition (no member of it is still down).
        """
        self._lost.pop(node, None)
        if self._since is None or node not in self._members:
            return None
        self._down.discard(node)
        if gone:
            self._returned.pop(node, None)
        else:
            self._returned[node] = None
            self._last_return = now
        if self._down:
            return None
        return self._end(now)

    @property
    def deadline(self) -> float | None:
        """When :meth:`settle` may end the partition (None: not before a member returns)."""
        if self._since is None or not self._returned or not self._down:
            return None
        return self._last_return + self.settle

    def settle_check(self, now: float) -> PartitionHealed | None:
        """End the partition if members came back and none for ``settle`` seconds (the rest
        are taken as crashed or still cut off); return the event then."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        return self._end(now)

    def _end(self, now: float) -> PartitionHealed | None:
        assert self._since is not None
        members = tuple(self._members)
        returned = tuple(self._returned)
        since = self._since
        self._since = None
        self._members = {}
        self._down = set()
        self._returned = {}
        if not returned:
            return None   # all left or were forgotten: it did not heal
        return PartitionHealed(members, returned, now - since, now)
