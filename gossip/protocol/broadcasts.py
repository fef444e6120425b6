"""The transmit-limited queue of membership updates waiting to be gossiped.

Each update is sent at most ``retransmit_limit`` times (memberlist:
``retransmit_mult * ceil(log10(N + 1))``); updates sent fewest times go first, and among those
the newest. A newer update about the same node invalidates the queued one, and the queue is
bounded: when it is over its size, the updates already sent most often are dropped first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

__all__ = ["BroadcastQueue", "retransmit_limit"]

_MAX_MISFITS = 32   # updates too large for what is left of a packet, looked past before stopping


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Return how many times an update is sent in a cluster of ``n`` members."""
    return retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


class _Entry:
    __slots__ = ("key", "item", "size", "transmits", "order")

    def __init__(self, key: Hashable, item: Any, size: int, order: int) -> None:
        self.key = key
        self.item = item
        self.size = size
        self.transmits = 0
        self.order = order


class BroadcastQueue:
    """Updates keyed by the node they are about, bucketed by how often each was sent.

    Args:
        max_size: the most updates kept; beyond it the most-sent (then oldest) are dropped.
    """

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = max_size
        self._entries: dict[Hashable, _Entry] = {}
        # transmits -> its entries, in insertion order (newest last). The buckets hold the
        # entries themselves (hashed by identity, in C), so moving an update from one bucket to
        # the next never hashes its key.
        self._buckets: dict[int, dict[_Entry, None]] = {}
        self._order = 0
        self.dropped = 0
        self.last_used = 0
        """Bytes (sizes plus overheads) the last :meth:`get` took."""

    def __len__(self) -> int:
        return len(self._entries)

    def queue(self, key: Hashable, item: Any, size: int) -> None:
        """Queue ``item`` (``size`` bytes encoded) about ``key``, replacing any older one."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][old]
        self._order += 1
        entry = _Entry(key, item, size, self._order)
        entries[key] = entry
        bucket = self._buckets.get(0)
        if bucket is None:
            bucket = self._buckets[0] = {}
        bucket[entry] = None
        if len(entries) > self.max_size:
            self._prune(len(entries) - self.max_size)

    def invalidate(self, key: Hashable) -> None:
        """Drop the queued update about ``key``, if any."""
        old = self._entries.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][old]

    def _prune(self, count: int) -> None:
        for transmits in sorted(self._buckets, reverse=True):
            bucket = self._buckets[transmits]
            while bucket and count > 0:
                entry = next(iter(bucket))
                del bucket[entry]
                del self._entries[entry.key]
                self.dropped += 1
                count -= 1
            if count == 0:
                return

    def get(self, budget: int, limit: int, overhead: int = 1, count: bool = True,
            about: Hashable | None = None, about_type: type | None = None,
            skip_type: type | None = None) -> list[Any]:
        """Take updates whose sizes (plus ``overhead`` each) fit in ``budget`` bytes.

        Each taken update counts one more transmission; one that reaches ``limit`` leaves the
        queue. The update queued about ``about`` is not taken if it is an ``about_type`` (any
        type when None): news of the recipient itself, for example. No item of ``skip_type``
        is taken. ``count=False`` takes them without counting: for a recipient that is
        probably down, which must not use up a transmission that a live member needed.
        """
        self.last_used = 0
        if not self._entries or budget <= 0:
            return []
        excluded = self._entries.get(about) if about is not None else None
        if excluded is not None and about_type is not None and type(excluded.item) is not about_type:
            excluded = None
        taken: list[_Entry] = []
        used = 0
        misfits = 0
        buckets = self._buckets
        for transmits in sorted(buckets) if len(buckets) > 1 else buckets:
            for entry in reversed(buckets[transmits]):
                need = entry.size + overhead
                if used + need > budget:
                    # Look a little further for a smaller update, not through the whole queue:
                    # a long queue would make every packet cost O(queue).
                    misfits += 1
                    if misfits > _MAX_MISFITS:
                        break
                    continue
                if entry is excluded or (skip_type is not None and type(entry.item) is skip_type):
                    continue
                taken.append(entry)
                used += need
                if budget - used < 16:
                    break
            if budget - used < 16 or misfits > _MAX_MISFITS:
                break
        self.last_used = used
        if not count:
            return [e.item for e in taken]
        entries = self._entries
        for entry in taken:
            bucket = buckets[entry.transmits]
            del bucket[entry]
            if not bucket:
                del buckets[entry.transmits]
            entry.transmits += 1
            if entry.transmits >= limit:
                del entries[entry.key]
            else:
                nxt = buckets.get(entry.transmits)
                if nxt is None:
                    nxt = buckets[entry.transmits] = {}
                nxt[entry] = None
        return [e.item for e in taken]

    def items(self) -> list[tuple[Any, int]]:
        """Return ``(item, transmits)`` for every queued update (for tests and inspection)."""
        return [(e.item, e.transmits) for e in self._entries.values()]
