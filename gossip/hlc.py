"""Hybrid logical clock (HLC) timestamps.

A timestamp is a plain ``int`` that fits in an unsigned 64-bit integer:

* the high 54 bits hold the physical part, microseconds since 2025-01-01T00:00:00Z
  (:data:`EPOCH_US` microseconds after the Unix epoch);
* the low 10 bits hold a logical counter (0..1023).

Timestamps compare as plain integers, so ``a < b`` means "a happened before b" in HLC order.

Unlike the Go library this module never lets the counter wrap: when the counter would pass 1023
the physical part is advanced by one microsecond instead, so :meth:`HLC.now` is strictly
monotonic even when the wall clock steps backwards. :meth:`HLC.update` merges a remote
timestamp (the HLC receive rule), which the Go library lacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

__all__ = [
    "EPOCH_US",
    "COUNTER_BITS",
    "COUNTER_MASK",
    "MAX_COUNTER",
    "MAX_PHYSICAL",
    "MAX_TIMESTAMP",
    "EPOCH",
    "HLC",
    "default_clock",
    "now",
    "make_timestamp",
    "timestamp_physical_us",
    "timestamp_counter",
    "timestamp_to_datetime",
    "timestamp_from_datetime",
]

_log = logging.getLogger("gossip.hlc")

EPOCH_US: int = 1735689600000000
"""Microseconds from the Unix epoch to 2025-01-01T00:00:00Z, the HLC epoch."""

EPOCH: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)
"""The HLC epoch as an aware UTC datetime; timestamp 0 is this instant."""

COUNTER_BITS: int = 10
"""Number of low bits holding the logical counter."""

COUNTER_MASK: int = (1 << COUNTER_BITS) - 1
"""Mask selecting the logical counter of a timestamp."""

MAX_COUNTER: int = COUNTER_MASK
"""Largest logical counter value (1023)."""

MAX_PHYSICAL: int = (1 << 54) - 1
"""Largest physical part (microseconds since the HLC epoch)."""

MAX_TIMESTAMP: int = (1 << 64) - 1
"""Largest valid timestamp (u64)."""

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _check_ts(ts: int) -> None:
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise TypeError(f"HLC timestamp must be an int, got {type(ts).__name__}: {ts!r}")
    if ts < 0 or ts > MAX_TIMESTAMP:
        raise ValueError(f"HLC timestamp {ts} is outside the u64 range 0..{MAX_TIMESTAMP}")


def _pack(physical: int, counter: int) -> int:
    return (physical << COUNTER_BITS) | counter


def make_timestamp(unix_us: int, counter: int) -> int:
    """Build a timestamp from Unix microseconds and a logical counter.

    Args:
        unix_us: microseconds since the Unix epoch; must not be before 2025-01-01 UTC.
        counter: logical counter, 0..1023.

    Raises:
        ValueError: if either part is out of range.
    """
    physical = unix_us - EPOCH_US
    if physical < 0 or physical > MAX_PHYSICAL:
        raise ValueError(
            f"unix_us {unix_us} is outside the HLC range "
            f"{EPOCH_US}..{EPOCH_US + MAX_PHYSICAL} (2025-01-01 UTC onwards)"
        )
    if counter < 0 or counter > MAX_COUNTER:
        raise ValueError(f"HLC counter {counter} is outside 0..{MAX_COUNTER}")
    return _pack(physical, counter)


def timestamp_physical_us(ts: int) -> int:
    """Return the physical part of ``ts`` as microseconds since the Unix epoch.

    ``make_timestamp(timestamp_physical_us(ts), timestamp_counter(ts)) == ts``.
    """
    _check_ts(ts)
    return (ts >> COUNTER_BITS) + EPOCH_US


def timestamp_counter(ts: int) -> int:
    """Return the logical counter (low 10 bits) of ``ts``."""
    _check_ts(ts)
    return ts & COUNTER_MASK


def timestamp_to_datetime(ts: int) -> datetime:
    """Return the physical part of ``ts`` as an aware UTC datetime (the counter is ignored).

    Raises:
        OverflowError: if the instant is beyond ``datetime.max``.
    """
    _check_ts(ts)
    return EPOCH + timedelta(microseconds=ts >> COUNTER_BITS)


def timestamp_from_datetime(dt: datetime, counter: int = 0) -> int:
    """Build a timestamp from a datetime (naive means UTC) and a logical counter.

    Sub-microsecond precision does not exist in :class:`datetime`, so the round trip
    ``timestamp_to_datetime(timestamp_from_datetime(dt)) == dt`` is exact for aware UTC values.

    Raises:
        ValueError: if ``dt`` is before 2025-01-01 UTC or the counter is out of range.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _UNIX_EPOCH
    unix_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return make_timestamp(unix_us, counter)


class HLC:
    """A thread-safe hybrid logical clock.

    Args:
        wall_clock: returns the current Unix time in nanoseconds (default :func:`time.time_ns`);
            inject a fake one in tests.
        max_drift: seconds a remote timestamp may lie ahead of the local wall clock and still be
            merged by :meth:`update`; ``0`` disables the check.
    """

    __slots__ = ("_wall_clock", "_max_drift_us", "_last", "_lock")

    def __init__(
        self,
        wall_clock: Callable[[], int] | None = None,
        max_drift: float = 60.0,
    ) -> None:
        if max_drift < 0:
            raise ValueError(f"max_drift must be >= 0 seconds, got {max_drift!r}")
        self._wall_clock: Callable[[], int] = wall_clock if wall_clock is not None else time.time_ns
        self._max_drift_us = int(max_drift * 1_000_000)
        self._last = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The most recent timestamp this clock issued (0 before the first)."""
        return self._last

    def _wall_physical(self) -> int:
        physical = self._wall_clock() // 1000 - EPOCH_US
        if physical < 0:
            return 0
        return min(physical, MAX_PHYSICAL)

    def _advance(self, physical: int, counter: int) -> int:
        """Pack (physical, counter), carrying a counter overflow into the physical part."""
        if counter > MAX_COUNTER:
            physical += 1
            counter = 0
        if physical > MAX_PHYSICAL:
            raise OverflowError("HLC physical part exhausted the 54-bit range")
        return _pack(physical, counter)

    def peek(self) -> int:
        """Return the current time as a timestamp without issuing it: the wall clock, or the
        last timestamp issued if that is ahead (what a peer's stamp is compared with)."""
        return max(_pack(self._wall_physical(), 0), self._last)

    def now(self) -> int:
        """Return a new timestamp, strictly greater than every one this clock issued before."""
        with self._lock:
            wall = self._wall_physical()
            last_phys = self._last >> COUNTER_BITS
            if wall > last_phys:
                ts = _pack(wall, 0)
            else:
                ts = self._advance(last_phys, (self._last & COUNTER_MASK) + 1)
            self._last = ts
            return ts

    def update(self, remote: int) -> int:
        """Merge a remote timestamp and return a new local one.

        The result is strictly greater than both the last local timestamp and ``remote``
        (the HLC receive rule). A remote whose physical part lies more than ``max_drift`` ahead
        of the local wall clock is ignored (logged at debug level) and this is just :meth:`now`.

        Raises:
            TypeError: if ``remote`` is not an int.
            ValueError: if ``remote`` is not a u64.
        """
        _check_ts(remote)
        with self._lock:
            wall = self._wall_physical()
            last_phys, last_ctr = self._last >> COUNTER_BITS, self._last & COUNTER_MASK
            r_phys, r_ctr = remote >> COUNTER_BITS, remote & COUNTER_MASK
            if self._max_drift_us and r_phys > wall + self._max_drift_us:
                _log.debug(
                    "ignoring remote HLC timestamp %d: %d us ahead of the wall clock",
                    remote,
                    r_phys - wall,
                )
                r_phys, r_ctr = 0, 0
            physical = max(wall, last_phys, r_phys)
            if physical == last_phys and physical == r_phys:
                counter = max(last_ctr, r_ctr) + 1
            elif physical == last_phys:
                counter = last_ctr + 1
            elif physical == r_phys:
                counter = r_ctr + 1
            else:
                counter = 0
            ts = self._advance(physical, counter)
            self._last = ts
            return ts

    def __repr__(self) -> str:
        return f"HLC(last={self._last}, max_drift_us={self._max_drift_us})"


default_clock: HLC = HLC()
"""The process-wide clock used by :func:`now` and by metadata without its own clock."""


def now() -> int:
    """Return a new timestamp from :data:`default_clock`."""
    return default_clock.now()
