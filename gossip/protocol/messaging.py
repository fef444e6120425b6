"""User-message bookkeeping: fan-out and TTL formulas and the duplicate-suppression history.

The formulas are paularlott/gossip's (``n`` counts the local node):

* ``calc_fan_out(n) = min(n, max(1, min(ceil(log2 n * mult), 10)))``
* ``max_ttl(n_alive) = max(1, min(ceil(log2 n * mult) + 2, 8))``
* ``calc_payload_size(t) = min(t, max(1, min(ceil(log2 t * mult) + 2, 16)))``

A relayed message never carries more hops than the cluster's own broadcasts would:
:func:`clamp_ttl` cuts a sender's ttl (up to 255 on the wire) down to ``max_ttl``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["calc_fan_out", "max_ttl", "clamp_ttl", "calc_payload_size", "MessageHistory"]


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


def clamp_ttl(ttl: int, n_alive: int, multiplier: float = 1.0) -> int:
    """Return the ttl to relay with: ``ttl`` (already decremented by the caller) but no more
    than :func:`max_ttl` allows for ``n_alive`` alive nodes, and never below 0.

    A host relays a received message with ``clamp_ttl(packet.ttl - 1, n_alive, multiplier)``
    and only when the result is at least 1, so a peer that sends ttl 255 (or a type nobody
    handles) cannot make the cluster relay it 255 hops.
    """
    return max(0, min(ttl, max_ttl(n_alive, multiplier)))


def calc_payload_size(total: int, multiplier: float = 0.8) -> int:
    """Return how many items of ``total`` to carry in one gossip payload."""
    if total <= 0:
        return 0
    return min(total, max(1, min(math.ceil(math.log2(total) * multiplier) + 2, 16)))


class MessageHistory:
    """Remembers ``(sender, message id)`` pairs for ``max_age`` seconds to drop duplicates.

    Bounded: it holds at most ``max_entries`` pairs. Past that the oldest pair of the shard
    goes (an old duplicate may then slip through) and :attr:`evicted` counts it, so a flood of
    unique pairs costs a bounded amount of memory.

    Sharded so that concurrent workers (each holding only its shard's lock in the engine) rarely
    contend; the history itself is not thread-safe, its host serialises access per shard.

    Args:
        max_age: seconds a pair is remembered.
        shards: a power of two.
        max_entries: the most pairs held in all (each shard holds its share).

    Raises:
        ValueError: ``shards`` is not a power of two, or ``max_entries`` < ``shards``.
    """

    __slots__ = ("max_age", "max_entries", "evicted", "_shards", "_mask", "_per_shard")

    def __init__(self, max_age: float, shards: int = 16, max_entries: int = 65536) -> None:
        if shards < 1 or shards & (shards - 1):
            raise ValueError(f"shards must be a power of two, got {shards}")
        if max_entries < shards:
            raise ValueError(f"max_entries must be >= shards ({shards}), got {max_entries}")
        self.max_age = max_age
        self.max_entries = max_entries
        self.evicted = 0
        """Pairs forgotten before ``max_age`` because the history was full."""
        self._mask = shards - 1
        self._per_shard = max_entries // shards
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
        if len(shard) >= self._per_shard:
            shard.popitem(last=False)
            self.evicted += 1
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
