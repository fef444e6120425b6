"""Reconnecting after a long partition: retry forgotten members and the seeds, slowly, for long.

A member dead for ``dead_node_retention_period`` is forgotten; the core's recovery (a push/pull
with one dead member each ``recovery_attempt_interval``) only tries members it still holds. So
after a split longer than the retention, each side has forgotten the other, and neither is
alone (which would make it re-join through its seeds): without more, the two sides stay apart
for good after the network heals.

:class:`Reconnector` keeps, for ``reconnect_timeout`` (24 h by default, Serf's), the address of
every member forgotten while dead that had shown itself to exist (it spoke to us from its own
address, or answered our probe: never one only another member named). Every
``reconnect_interval`` (30 s) the core may try one target, chosen at random among those
addresses and the seeds it joined through that no member it holds uses: it sends it a push/pull.
If the target answers, the two views merge, and the failure detector's refutations bring both
sides together. As in Serf, the chance of a try in a round is the number of targets over the
number of live members (at most 1), so a large cluster that forgot a few members does not send a
storm of tries.

At most ``max_reconnect_targets`` addresses are kept (the longest forgotten go first).

Pure data: no clock, no threads, no I/O; ``now`` and the random source are passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable

from ..node import NodeID

__all__ = ["Reconnector"]


class Reconnector:
    """The addresses worth retrying after a long partition (owned by the protocol core).

    Args:
        timeout: seconds an address is kept after its member was forgotten.
        limit: the most addresses kept.
    """

    __slots__ = ("timeout", "limit", "_targets", "_by_node")

    def __init__(self, timeout: float, limit: int) -> None:
        self.timeout = timeout
        self.limit = limit
        self._targets: dict[str, float] = {}       # address -> retried until, longest kept first
        self._by_node: dict[NodeID, str] = {}

    def __len__(self) -> int:
        return len(self._targets)

    def forgotten(self, node: NodeID, addr: str, now: float) -> None:
        """A member that had shown itself was forgotten while dead: retry ``addr`` from now on."""
        if self.timeout <= 0 or self.limit <= 0:
            return
        old = self._by_node.pop(node, None)
        if old is not None:
            self._targets.pop(old, None)
        self._targets.pop(addr, None)
        while len(self._targets) >= self.limit:
            first = next(iter(self._targets))
            del self._targets[first]
        self._targets[addr] = now + self.timeout
        self._by_node[node] = addr

    def known(self, node: NodeID) -> None:
        """``node`` is in the member table again: stop retrying its address."""
        addr = self._by_node.pop(node, None)
        if addr is not None:
            self._targets.pop(addr, None)

    def targets(self, now: float) -> list[str]:
        """Return the addresses still to be retried (dropping those past their time)."""
        expired = [a for a, until in self._targets.items() if until <= now]
        for a in expired:
            del self._targets[a]
        if expired:
            gone = set(expired)
            self._by_node = {n: a for n, a in self._by_node.items() if a not in gone}
        return list(self._targets)

    def pick(self, now: float, rng: random.Random, seeds: Iterable[str], in_use: Collection[str],
             live: int) -> str | None:
        """Return the address to try this round, or None.

        ``seeds`` are the addresses this node joined through; ``in_use`` the addresses of the
        members it holds (tried by other means, or simply there); ``live`` its alive and
        suspect members, itself included.
        """
        pool = [a for a in self.targets(now) if a not in in_use]
        kept = set(pool)
        pool += [a for a in seeds if a not in in_use and a not in kept]
        if not pool:
            return None
        if rng.random() >= len(pool) / max(1, live):
            return None
        return pool[rng.randrange(len(pool))]
