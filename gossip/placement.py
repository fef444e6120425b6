"""Placement by rendezvous hashing: which members own a key.

Rendezvous hashing (highest random weight, HRW) gives every (member, key) pair a pseudo-random
score; the owners of a key are the members with the highest scores. Every node that knows the
same members computes the same owners, with no coordination and no shared ring, and the
placement is as stable as it can be:

* when a member leaves, only the keys it owned move (each to the member that scored next);
* when a member joins, it takes about ``1/N`` of the keys (those it now scores highest on),
  and no key moves between the members that stayed.

Weighted members use *logarithmic* HRW (Schindelhauer and Resch, "Weighted distributed hash
tables", 2005): a member of weight ``w`` scores ``-w / ln(u)``, ``u`` its hash mapped into
``(0, 1)``, and so owns a share of the keys proportional to ``w`` while keeping the stability
above. With equal weights the scores are compared as the integer hashes themselves (no floating
point), so owners agree across processes and platforms.

The hash is BLAKE2b (64 bits) of the member's identity and the key, never Python's ``hash()``
(randomised per process)::

    from gossip.placement import Rendezvous

    ring = Rendezvous(["a", "b", "c"])
    ring.owners("user:42", 2)         # ['b', 'c'] in every process, on every platform

:meth:`gossip.Cluster.owners` and :meth:`gossip.Cluster.owner` place keys over the cluster's
alive members (or a :class:`gossip.NodeGroup`'s), weighting each by its integer metadata key
``weight`` (default 1; 0 or less owns nothing).

This module uses only the public :class:`gossip.Cluster` API.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

from .node import Node, NodeState


__all__ = ["Rendezvous", "WEIGHT_KEY", "MAX_WEIGHT", "node_weight", "owners", "NodeSource", "NodeList"]

WEIGHT_KEY = "weight"
"""The integer metadata key that weighs a member in :meth:`gossip.Cluster.owners`."""

MAX_WEIGHT = 1 << 20
"""The largest weight counted (larger ones count as this): one member's claim is bounded."""

_PERSON = b"gossip.hrw"
_SPAN = float(1 << 64)

M = TypeVar("M")


class NodeList(Protocol):
    """Anything that lists the nodes it knows: a :class:`gossip.Cluster`."""

    def nodes(self) -> list[Node]:
        """Return every known node, whatever its state."""
        ...


class NodeSource(Protocol):
    """Anything that lists candidate nodes: a :class:`gossip.NodeGroup` or a
    :class:`gossip.DataNodeGroup`."""

    def get_nodes(self) -> list[Node]:
        """Return the group's members."""
        ...


def _identity(member: object) -> bytes:
    """The bytes a member is hashed by: a node's id, a UUID's 16 bytes, text as UTF-8."""
    if isinstance(member, Node):
        return member.id.bytes
    if isinstance(member, uuid.UUID):
        return member.bytes
    if isinstance(member, str):
        return member.encode("utf-8")
    if isinstance(member, (bytes, bytearray)):
        return bytes(member)
    raise TypeError(f"a rendezvous member is a Node, a NodeID, a str or bytes, got {type(member).__name__}")


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    raise TypeError(f"a placement key is a str or bytes, got {type(key).__name__}")


def node_weight(node: Node) -> float:
    """Return a node's weight: its integer metadata key ``weight`` (1 when absent; values above
    :data:`MAX_WEIGHT` count as it; 0 or less means the node owns nothing)."""
    md = node.metadata
    if not md.exists(WEIGHT_KEY):
        return 1.0
    return float(min(md.get_int(WEIGHT_KEY), MAX_WEIGHT))


class Rendezvous(Generic[M]):
    """A set of members and the keys they own, by (weighted) rendezvous hashing.

    Args:
        members: the candidates, or a mapping of each candidate to its weight. A member is a
            :class:`gossip.Node` (hashed by its id), a :class:`gossip.NodeID`, a ``str`` or
            ``bytes``; two members with the same identity count once (the last one given).
        weight: ``weight(member)`` when ``members`` is not a mapping; by default a node's
            metadata ``weight`` (:func:`node_weight`) and 1 for anything else.

    Members of weight 0 or less (or not finite) own nothing.

    Raises:
        TypeError: a member or a weight has the wrong type.
    """

    __slots__ = ("_members", "_uniform")

    def __init__(self, members: Iterable[M] | Mapping[M, float],
                 weight: Callable[[M], float] | None = None) -> None:
        if isinstance(members, Mapping):
            pairs = [(m, members[m]) for m in members]
        else:
            def default(m: M) -> float:
                return node_weight(m) if isinstance(m, Node) else 1.0
            fn = weight if weight is not None else default
            pairs = [(m, fn(m)) for m in members]
        table: dict[bytes, tuple[M, float, hashlib.blake2b]] = {}
        for member, w in pairs:
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise TypeError(f"weight of {member!r} must be a number, got {type(w).__name__}")
            ident = _identity(member)
            if not math.isfinite(w) or w <= 0:
                table.pop(ident, None)
                continue
            base = hashlib.blake2b(digest_size=8, person=_PERSON)
            base.update(len(ident).to_bytes(4, "big"))
            base.update(ident)
            table[ident] = (member, float(w), base)
        self._members = list(table.values())
        self._uniform = len({w for _, w, _ in self._members}) <= 1

    @property
    def members(self) -> list[M]:
        """The members that may own keys (weight above 0), in the order given."""
        return [m for m, _, _ in self._members]

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"<Rendezvous of {len(self._members)} members{'' if self._uniform else ', weighted'}>"

    def _scores(self, key: str | bytes) -> Iterable[tuple[float | int, int, int]]:
        """(score, hash, index) for every member: higher is better; ties broken by the hash."""
        k = _key_bytes(key)
        uniform = self._uniform
        for i, (_, w, base) in enumerate(self._members):
            h = base.copy()
            h.update(k)
            value = int.from_bytes(h.digest(), "big")
            if uniform:
                yield value, value, -i
            else:
                u = (value + 0.5) / _SPAN          # in (0, 1): ln(u) < 0
                yield -w / math.log(u), value, -i

    def owners(self, key: str | bytes, n: int = 1) -> list[M]:
        """Return the ``n`` members that own ``key``, the first owner first (fewer when there
        are fewer members).

        Raises:
            ValueError: ``n`` is negative.
            TypeError: ``key`` is neither str nor bytes.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if n == 0 or not self._members:
            _key_bytes(key)
            return []
        if n == 1:
            best = max(self._scores(key))
            return [self._members[-best[2]][0]]
        top = heapq.nlargest(n, self._scores(key))
        return [self._members[-i][0] for _, _, i in top]

    def owner(self, key: str | bytes) -> M | None:
        """Return the first owner of ``key``, or None when there is no member."""
        found = self.owners(key, 1)
        return found[0] if found else None


def owners(cluster: NodeList, key: str | bytes, n: int = 1, group: NodeSource | None = None) -> list[Node]:
    """Return the ``n`` alive members of ``cluster`` (or of ``group``) that own ``key``.

    ``cluster`` is anything that lists the nodes it knows (a :class:`gossip.Cluster`).

    Members are weighted by their metadata ``weight`` (see :func:`node_weight`). Every node
    that sees the same alive members computes the same owners. This is what
    :meth:`gossip.Cluster.owners` does.
    """
    nodes = group.get_nodes() if group is not None else cluster.nodes()
    alive = [node for node in nodes if node.state is NodeState.ALIVE]
    return Rendezvous(alive).owners(key, n)
