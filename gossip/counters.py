"""Counters that cost the hot path one dictionary update, with no lock.

Each thread that counts gets its own ``dict``; :meth:`Counters.snapshot` adds them up (and the
retired totals of threads that ended). Incrementing is a thread-local lookup and a ``dict``
update, which only the owning thread ever writes, so no increment is ever lost and no lock is
taken where packets flow.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import threading
import weakref

__all__ = ["Counters", "STREAM_COUNTERS"]

STREAM_COUNTERS = ("streams.opened", "streams.accepted", "streams.refused",
                   "streams.open_refused", "streams.active", "streams.bytes_in",
                   "streams.bytes_out", "streams.handler_errors", "streams.bad_opens",
                   "streams.refused_per_source")
"""The stream counters :meth:`gossip.Cluster.stats` always shows (zero before any stream)."""

_FOLD_AT = 64  # per-thread tables kept before those of ended threads are folded together


class Counters:
    """Named integer counters, incremented lock-free per thread, summed on demand."""

    __slots__ = ("_local", "_lock", "_tables", "_retired")

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tables: list[tuple[weakref.ref[threading.Thread], dict[str, int]]] = []
        self._retired: dict[str, int] = {}

    def table(self) -> dict[str, int]:
        """Return the calling thread's own table (``table[name] = table.get(name, 0) + n``)."""
        try:
            return self._local.table  # type: ignore[no-any-return]
        except AttributeError:
            return self._new_table()

    def _new_table(self) -> dict[str, int]:
        table: dict[str, int] = {}
        self._local.table = table
        with self._lock:
            if len(self._tables) >= _FOLD_AT:
                self._fold_locked()
            self._tables.append((weakref.ref(threading.current_thread()), table))
        return table

    def _fold_locked(self) -> None:
        """Fold the tables of threads that ended into the retired totals."""
        keep = []
        for ref, table in self._tables:
            thread = ref()
            if thread is None or not thread.is_alive():
                for k, v in dict(table).items():
                    self._retired[k] = self._retired.get(k, 0) + v
            else:
                keep.append((ref, table))
        self._tables = keep

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        try:
            table = self._local.table
        except AttributeError:
            table = self._new_table()
        table[name] = table.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        """Return every counter's total."""
        with self._lock:
            out = dict(self._retired)
            tables = [t for _r, t in self._tables]
        for table in tables:
            for k, v in dict(table).items():  # dict() copies atomically under the GIL
                out[k] = out.get(k, 0) + v
        return out

    def get(self, name: str) -> int:
        """Return the total of one counter."""
        return self.snapshot().get(name, 0)
