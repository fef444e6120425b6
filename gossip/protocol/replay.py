"""Replay protection for sealed packets: a pure, bounded guard over (sender, HLC stamp).

Every packet carries its sender's id and a message id that is an HLC stamp (strictly
increasing per sender: :mod:`gossip.hlc`). A captured packet replayed later is refused because
its stamp falls out of the window around our own clock, and a replay inside the window because
the pair was seen already. Memory is bounded: past ``max_entries`` pairs the one with the oldest
stamp is forgotten and its sender's *floor* rises to it, so a forgotten pair can never be
replayed (anything of that sender at or below its floor is refused as stale). Floors are kept
per sender, so a busy guard never refuses a sender whose clock runs a little behind the
others'; they are bounded too (past ``max_entries`` senders with a floor, a global floor takes
over from the dropped ones).

The engine keeps one guard for protocol packets and one for the user lane (user messages and
the add-on packages' messages, such as the leader election's heartbeats). Broadcasts arrive
several times by design: :meth:`ReplayGuard.check_fresh` checks only their window, and the
duplicate history of the user lane drops the copies.

It is only as good as the sender id is authentic: use it on encrypted packets, where the id is
inside the authenticated part. It needs the members' clocks within ``window`` of each other.

Not thread-safe: the host calls it under one lock. Never reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import heapq

from ..errors import ReplayedPacket
from ..hlc import COUNTER_BITS

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """Refuse protocol packets that are stale, from the future, or already seen.

    Args:
        window: seconds a stamp may be away from ``now``, either way; 0 turns the guard off.
        max_entries: the most (sender, stamp) pairs remembered.

    Raises:
        ValueError: a negative window or fewer than one entry.
    """

    __slots__ = ("window", "max_entries", "_span", "_heap", "_seen", "_floor", "_floors", "stats")

    def __init__(self, window: float, max_entries: int = 65536) -> None:
        if window < 0 or max_entries < 1:
            raise ValueError(f"need window >= 0 and max_entries >= 1, got {window}, {max_entries}")
        self.window = window
        self.max_entries = max_entries
        self._span = int(window * 1_000_000) << COUNTER_BITS   # the window in HLC units
        self._heap: list[tuple[int, bytes]] = []               # (stamp, sender), oldest first
        self._seen: set[tuple[bytes, int]] = set()
        self._floor = -1                                       # below it every sender is stale
        self._floors: dict[bytes, int] = {}                    # per sender, forgotten stamps
        self.stats: dict[str, int] = {"stale": 0, "future": 0, "duplicate": 0, "evicted": 0}
        """Refusals by reason, and pairs forgotten early because the guard was full."""

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, sender: bytes, stamp: int, now: int) -> None:
        """Admit the packet ``(sender, stamp)`` at our HLC time ``now``, or refuse it.

        Call it once per authenticated protocol packet, before decoding its message::

            guard.check(packet.sender, packet.msg_id, hlc.now())

        Raises:
            ReplayedPacket: ``reason`` says why (counted in :attr:`stats`).
        """
        if not self._span:
            return
        low = now - self._span
        heap = self._heap
        seen = self._seen
        while heap and heap[0][0] < low:
            old, who = heapq.heappop(heap)
            seen.discard((who, old))
        if stamp < low or stamp <= self._floor or stamp <= self._floors.get(sender, -1):
            self.stats["stale"] += 1
            raise ReplayedPacket("stale", f"packet stamp {stamp} is older than the replay window")
        if stamp > now + self._span:
            self.stats["future"] += 1
            raise ReplayedPacket("future", f"packet stamp {stamp} is beyond the replay window")
        key = (sender, stamp)
        if key in seen:
            self.stats["duplicate"] += 1
            raise ReplayedPacket("duplicate", "packet already seen inside the replay window")
        if len(seen) >= self.max_entries:
            old, who = heapq.heappop(heap)
            seen.discard((who, old))
            self._raise_floor(who, old, low)
            self.stats["evicted"] += 1
            if stamp <= self._floor or stamp <= self._floors.get(sender, -1):
                self.stats["stale"] += 1
                raise ReplayedPacket("stale", f"packet stamp {stamp} is below the forgotten ones")
        seen.add(key)
        heapq.heappush(heap, (stamp, sender))

    def check_fresh(self, stamp: int, now: int, window: float | None = None) -> None:
        """Refuse a stamp outside the window around ``now`` (``window`` seconds back if given,
        never more than the guard's own), without recording it: for broadcasts, whose copies
        a duplicate history drops.

        Raises:
            ReplayedPacket: ``reason`` is ``"stale"`` or ``"future"`` (counted in :attr:`stats`).
        """
        if not self._span:
            return
        back = self._span if window is None else min(self._span, int(window * 1_000_000) << COUNTER_BITS)
        if stamp < now - back:
            self.stats["stale"] += 1
            raise ReplayedPacket("stale", f"packet stamp {stamp} is older than the replay window")
        if stamp > now + self._span:
            self.stats["future"] += 1
            raise ReplayedPacket("future", f"packet stamp {stamp} is beyond the replay window")

    def _raise_floor(self, sender: bytes, stamp: int, low: int) -> None:
        """Remember that ``sender``'s pairs up to ``stamp`` are forgotten (bounded)."""
        floors = self._floors
        # Pairs leave the heap oldest first, so ``stamp`` is above the sender's floor already;
        # max() keeps a floor from ever going down all the same.
        floors[sender] = max(stamp, floors.get(sender, -1))
        if len(floors) > self.max_entries:
            # Floors below the window say nothing the window does not; past that, the highest
            # of the dropped ones becomes everyone's floor.
            for who, floor in list(floors.items()):
                if floor < low:
                    del floors[who]
            if len(floors) > self.max_entries:
                self._floor = max(self._floor, max(floors.values()))
                floors.clear()
