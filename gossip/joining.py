"""What :meth:`gossip.Cluster.join` returns: how many peers accepted us, and what became of
every peer it was given.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["JoinOutcome"]


class JoinOutcome(int):
    """The number of peers that accepted the join, with the fate of every peer given.

    It *is* that number (an ``int``: ``cluster.join(...) == 1``, ``if cluster.join(...):``
    and arithmetic work as they always have), and it carries the details a partial success
    would otherwise hide: a ``wss://`` seed that failed its certificate check while another
    seed answered is listed in :attr:`failures`, with why.

    Attributes:
        joined: the peers that accepted us, as given.
        failures: each peer that could not be joined, mapped to why (empty if none failed).
        skipped: the peers that resolved to this node's own address only.
    """

    joined: tuple[str, ...]
    failures: dict[str, str]
    skipped: tuple[str, ...]

    def __new__(cls, joined: Iterable[str], failures: Mapping[str, str],
                skipped: Iterable[str] = ()) -> JoinOutcome:
        peers = tuple(joined)
        self = super().__new__(cls, len(peers))
        self.joined = peers
        self.failures = dict(failures)
        self.skipped = tuple(skipped)
        return self

    @property
    def complete(self) -> bool:
        """True if no peer failed."""
        return not self.failures

    def __reduce__(self) -> tuple[type[JoinOutcome], tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]]:
        return (JoinOutcome, (self.joined, self.failures, self.skipped))
