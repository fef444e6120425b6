"""User-message bookkeeping: fan-out and TTL formulas and the duplicate-suppression history.

The formulas are paularlott/gossip's (``n`` counts the local node):

* ``calc_fan_out(n) = min(n, max(1, min(ceil(log2 n * mult), 10)))``
* ``max_ttl(n_alive) = max(1, min(ceil(log2 n * mult) + 2, 8))``
* ``calc_payload_size(t) = min(t, max(1, min(ceil(log2 t * mult) + 2, 16)))``
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["calc_fan_out", "max_ttl", "calc_payload_size", "MessageHistory"]


def calc_fan_out(n: int, multiplier: float = 1.0) -> int:
    """Return how many peers a broadcast is sent to in a cluster of ``n`` alive+suspect nodes."""
    if n <= 0:
        return 0
    return min(n, max(1, min(math.ceil(math.log2(n) * multiplier), 10)))


def max_ttl(n_alive: int, multiplier: float = 1.0) -> int:
    """Return the hop limit of a broadcast in a cluster of ``n_alive`` alive nodes."""
    if n_alive <= 0:
        return 0
    return max(1, min(math.ceil(math.log2(n_alive) * multiplier) + 2, 8))


def calc_payload_size(total: int, multiplier: float = 0.8) -> int:
    """Return how many items of ``total`` to carry in one gossip payload."""
    if total <= 0:
        return 0
    return min(total, max(1, min(math.ceil(math.log2(total) * multiplier) + 2, 16)))


class MessageHistory:
    """Remembers ``(sender, message id)`` pairs for ``max_age`` seconds to drop duplicates.

    Sharded so that concurrent workers (each holding only its shard's lock in the engine) rarely
    contend; the history itself is not thread-safe, its host serialises access per shard.
    """

    __slots__ = ("max_age", "_shards", "_mask")

    def __init__(self, max_age: float, shards: int = 16) -> None:
        if shards < 1 or shards & (shards - 1):
            raise ValueError(f"shards must be a power of two, got {shards}")
        self.max_age = max_age
        self._mask = shards - 1
        self._shards: list[OrderedDict[tuple[bytes, int], float]] = [OrderedDict() for _ in range(shards)]

    def shard_index(self, sender: bytes, msg_id: int) -> int:
        """Return the shard a pair belongs to."""
        return (hash(sender) ^ msg_id) & self._mask

    def seen(self, now: float, sender: bytes, msg_id: int) -> bool:
        """Record the pair; return True if it was already recorded (a duplicate)."""
        shard = self._shards[self.shard_index(sender, msg_id)]
        key = (sender, msg_id)
        if key in shard:
            return True
        shard[key] = now
        return False

    def contains(self, sender: bytes, msg_id: int) -> bool:
        """Return True if the pair is remembered."""
        return (sender, msg_id) in self._shards[self.shard_index(sender, msg_id)]

    def gc(self, now: float) -> int:
        """Forget pairs older than ``max_age``; return how many were dropped."""
        cutoff = now - self.max_age
        dropped = 0
        for shard in self._shards:
            while shard:
                key, at = next(iter(shard.items()))
                if at > cutoff:
                    break
                del shard[key]
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)
