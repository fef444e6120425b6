"""Typed per-node metadata stamped with a hybrid logical clock.

:class:`Metadata` is a small key/value store whose values are wire-safe scalars (``str``,
``bool``, ``int`` in the int64/uint64 range, finite ``float``); times are stored as RFC 3339
strings in UTC. Every local write stamps the store with a strictly increasing HLC timestamp;
remote copies are merged with :meth:`Metadata.apply` (newest stamp wins, or forced).

Reads never lock: the values dict is never mutated after it is published, a write builds a new
dict and swaps it in under a lock (copy-on-write). :class:`MetadataReader` is the read-only
view handed out to users (``node.metadata``).

Getters are lenient, following the Go library's conversion rules (strings parsed as numbers,
numbers as bools, ...) and return a zero value when a key is missing or cannot be converted.
Narrowing getters (:meth:`MetadataReader.get_int32`, :meth:`MetadataReader.get_uint32`,
and the 64-bit ones for values outside int64/uint64) return 0 when the value is out of range
rather than clamping or wrapping.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack

from gossip.errors import ClusterClosed, MetadataError
from gossip.hlc import HLC
from gossip import hlc as _hlc

__all__ = [
    "MetadataReader",
    "Metadata",
    "ZERO_TIME",
    "MAX_KEY_LENGTH",
    "DEFAULT_MAX_SIZE",
    "format_time",
    "parse_time",
]

_log = logging.getLogger("gossip.metadata")

ZERO_TIME: datetime = datetime(1, 1, 1, tzinfo=timezone.utc)
"""The zero time returned by :meth:`MetadataReader.get_time` for missing or invalid values."""

MAX_KEY_LENGTH: int = 255
"""Longest allowed metadata key, in characters."""

DEFAULT_MAX_SIZE: int = 512
"""Default limit on the msgpack-encoded size of the whole metadata map, in bytes."""

_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT32 = (0, (1 << 32) - 1)
_UINT64 = (0, (1 << 64) - 1)
_FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TRUE_STRINGS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE_STRINGS = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.ASCII | re.IGNORECASE,
)
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RFC1123_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (" + "|".join(_MONTHS) + r") ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:([+-])([0-9]{2})([0-9]{2})|[A-Z]{1,5})",
    re.ASCII,
)
_DATETIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})", re.ASCII)
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)


def format_time(value: datetime) -> str:
    """Format a datetime as RFC 3339 in UTC (naive means UTC).

    The fraction is written only when non-zero, without trailing zeros:
    ``2023-01-01T12:00:00Z``, ``2023-01-01T12:00:00.5Z``.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    else:
        value = value.astimezone(timezone.utc)
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value:%H:%M:%S}"
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _mk(
    year: str, month: str, day: str, hh: str = "0", mm: str = "0", ss: str = "0", frac: str = ""
) -> datetime:
    micro = int((frac + "000000")[:6]) if frac else 0
    return datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss), micro, timezone.utc)


def parse_time(text: str) -> datetime | None:
    """Parse a time string; return an aware UTC datetime, or None if it matches no format.

    Formats tried in order: RFC 3339 (fraction up to 9 digits, truncated to microseconds),
    RFC 1123 (``Mon, 02 Jan 2006 15:04:05 MST``; a zone abbreviation counts as UTC, a numeric
    ``-0700`` offset is honoured), ``YYYY-MM-DD hh:mm:ss`` and ``YYYY-MM-DD`` (both UTC).
    """
    try:
        m = _RFC3339_RE.fullmatch(text)
        if m is not None:
            y, mo, d, hh, mi, ss, frac, z, sign, oh, om = m.groups()
            dt = _mk(y, mo, d, hh, mi, ss, frac or "")
            if z is None:
                offset = timedelta(hours=int(oh), minutes=int(om))
                dt = dt - offset if sign == "+" else dt + offset
            return dt
        m = _RFC1123_RE.fullmatch(text)
        if m is not None:
            d, mon, y, hh, mi, ss, sign, oh, om = m.groups()
            dt = _mk(y, str(_MONTHS.index(mon) + 1), d, hh, mi, ss)
            if sign is not None:
                offset = timedelta(hours=int(oh), minutes=int(om))
                dt = dt - offset if sign == "+" else dt + offset
            return dt
        m = _DATETIME_RE.fullmatch(text)
        if m is not None:
            return _mk(*m.groups())
        m = _DATE_RE.fullmatch(text)
        if m is not None:
            return _mk(*m.groups())
    except (ValueError, OverflowError):
        return None
    return None


def _format_float(value: float) -> str:
    """Shortest round-trip digits in non-exponent form, like Go's FormatFloat(v, 'f', -1, 64)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    from decimal import Decimal  # only here: decimal costs import time and memory

    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _parse_bool(text: str) -> bool:
    return text in _TRUE_STRINGS


def _parse_float(text: str) -> float | None:
    if _FLOAT_RE.fullmatch(text) is None:
        return None
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def _to_int(value: Any, low: int, high: int) -> int:
    """Lenient integer conversion; 0 for invalid or out-of-range values."""
    result: int
    if isinstance(value, bool):
        result = int(value)
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return 0
        result = math.trunc(value)
    elif isinstance(value, str):
        if _INT_RE.fullmatch(value):
            result = int(value)
        else:
            f = _parse_float(value)
            if f is None or not math.isfinite(f):
                return 0
            result = math.trunc(f)
    else:
        return 0
    if low == 0 and result < 0:
        return 0
    if result < low or result > high:
        return 0
    return result


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        f = _parse_float(value)
        return 0.0 if f is None else f
    return 0.0


def _round_float32(value: float) -> float:
    """Round to the nearest float32 (IEEE semantics: overflow gives an infinity)."""
    if math.isnan(value) or math.isinf(value):
        return value
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _to_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if isinstance(value, bool):
        return ZERO_TIME
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return ZERO_TIME
        try:
            return _UNIX_EPOCH + timedelta(microseconds=int(value) // 1000)
        except OverflowError:
            return ZERO_TIME
    if isinstance(value, str):
        parsed = parse_time(value)
        return ZERO_TIME if parsed is None else parsed
    return ZERO_TIME


class _Store:
    """Shared state of a metadata map: an immutable (values, timestamp) pair plus a write lock."""

    __slots__ = ("state", "lock")

    def __init__(self, values: dict[str, Any], timestamp: int) -> None:
        self.state: tuple[dict[str, Any], int] = (values, timestamp)
        self.lock = threading.Lock()


class MetadataReader:
    """A read-only view of node metadata.

    Constructed directly it is a frozen map; :meth:`Metadata.reader` returns one that shares
    (and follows) a writable :class:`Metadata`'s store.

    Args:
        values: initial values (copied as given, not validated).
        timestamp: the HLC stamp of those values.
    """

    __slots__ = ("_store",)

    def __init__(self, values: Mapping[str, Any] | None = None, timestamp: int = 0) -> None:
        self._store = _Store(dict(values) if values else {}, timestamp)

    @classmethod
    def _from_store(cls, store: _Store) -> MetadataReader:
        reader = cls.__new__(cls)
        reader._store = store
        return reader

    def _get(self, key: str) -> Any:
        return self._store.state[0].get(key)

    # -- whole-map access ------------------------------------------------------------------

    @property
    def timestamp(self) -> int:
        """The HLC stamp of the last write or applied update (0 if never written)."""
        return self._store.state[1]

    def get_timestamp(self) -> int:
        """Go-style alias of :attr:`timestamp` (paularlott's ``GetTimestamp()``)."""
        return self._store.state[1]

    def snapshot(self) -> tuple[dict[str, Any], int]:
        """Return a consistent ``(copy of the values, timestamp)`` pair."""
        values, ts = self._store.state
        return dict(values), ts

    def exists(self, key: str) -> bool:
        """True if ``key`` is present."""
        return key in self._store.state[0]

    def get_all(self) -> dict[str, Any]:
        """Return a copy of all values (mutating it does not change the store)."""
        return dict(self._store.state[0])

    def get_all_keys(self) -> list[str]:
        """Return the keys, sorted."""
        return sorted(self._store.state[0])

    def get_all_as_string(self) -> dict[str, str]:
        """Return every value converted with the :meth:`get_string` rules."""
        return {k: _to_string(v) for k, v in self._store.state[0].items()}

    def copy(self) -> MetadataReader:
        """Return an independent frozen reader holding the current values and stamp."""
        values, ts = self._store.state
        return MetadataReader._from_store(_Store(values, ts))

    def __len__(self) -> int:
        return len(self._store.state[0])

    def __contains__(self, key: object) -> bool:
        return key in self._store.state[0]

    def __repr__(self) -> str:
        values, ts = self._store.state
        return f"{type(self).__name__}({values!r}, timestamp={ts})"

    # -- typed getters ---------------------------------------------------------------------

    def get_string(self, key: str) -> str:
        """Return the value as text: strings as is, bools as ``true``/``false``, integers in
        decimal, floats in shortest non-exponent form (``1e20`` → ``"100000000000000000000"``);
        ``""`` if missing."""
        return _to_string(self._get(key))

    def get_bool(self, key: str) -> bool:
        """Return the value as a bool: strings parsed like Go's ``strconv.ParseBool``
        (``1 t T TRUE true True`` / ``0 f F FALSE false False``, anything else False),
        numbers as ``!= 0``; False if missing."""
        value = self._get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value)
        if isinstance(value, (int, float)):
            return value != 0
        return False

    def get_int64(self, key: str) -> int:
        """Return the value as an int64: floats truncated, strings parsed as base-10 integers
        or else as floats then truncated (``"789.5"`` → 789), True → 1; 0 if missing, invalid
        or outside the int64 range."""
        return _to_int(self._get(key), *_INT64)

    def get_int(self, key: str) -> int:
        """Same as :meth:`get_int64` (Go's ``int`` is 64 bits)."""
        return _to_int(self._get(key), *_INT64)

    def get_int32(self, key: str) -> int:
        """Like :meth:`get_int64`, but 0 when the value is outside the int32 range."""
        return _to_int(self._get(key), *_INT32)

    def get_uint64(self, key: str) -> int:
        """Return the value as a uint64 with the :meth:`get_int64` rules; negative numbers and
        strings (``"-123"``) give 0, as do values above the uint64 range."""
        return _to_int(self._get(key), *_UINT64)

    def get_uint(self, key: str) -> int:
        """Same as :meth:`get_uint64`."""
        return _to_int(self._get(key), *_UINT64)

    def get_uint32(self, key: str) -> int:
        """Like :meth:`get_uint64`, but 0 when the value is outside the uint32 range."""
        return _to_int(self._get(key), *_UINT32)

    def get_float64(self, key: str) -> float:
        """Return the value as a float: any number, a numeric string, bool → 1.0/0.0;
        0.0 if missing or invalid."""
        return _to_float(self._get(key))

    def get_float32(self, key: str) -> float:
        """Like :meth:`get_float64`, rounded to the nearest float32 (overflow → ±inf)."""
        return _round_float32(_to_float(self._get(key)))

    def get_time(self, key: str) -> datetime:
        """Return the value as an aware UTC datetime.

        A stored time string (RFC 3339), an int (Unix nanoseconds, truncated to µs), or a
        string in RFC 3339, RFC 1123, ``YYYY-MM-DD hh:mm:ss`` or ``YYYY-MM-DD`` (UTC).
        Anything else, and a missing key, gives :data:`ZERO_TIME`.
        """
        return _to_time(self._get(key))


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise MetadataError(f"metadata key must be a str, got {type(key).__name__}: {key!r}")
    if not key:
        raise MetadataError("metadata key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise MetadataError(
            f"metadata key {key[:32]!r}... is {len(key)} characters, over the limit of {MAX_KEY_LENGTH}"
        )
    return key


def _check_int(key: str, value: object, low: int, high: int, type_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetadataError(
            f"metadata key {key!r}: {type_name} value must be an int, "
            f"got {type(value).__name__}: {value!r}"
        )
    if value < low or value > high:
        raise MetadataError(
            f"metadata key {key!r}: value {value} is outside the {type_name} range {low}..{high}"
        )
    return value


def _check_float(key: str, value: object, type_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(
            f"metadata key {key!r}: {type_name} value must be a float, "
            f"got {type(value).__name__}: {value!r}"
        )
    try:
        result = float(value)
    except OverflowError:
        raise MetadataError(
            f"metadata key {key!r}: value {value} is outside the {type_name} range"
        ) from None
    if not math.isfinite(result):
        raise MetadataError(
            f"metadata key {key!r}: value {value!r} is not finite ({type_name} values must be "
            "finite to survive every codec)"
        )
    return result


def _normalise(key: str, value: object) -> Any:
    """Validate an initial value and convert datetimes to their stored form."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if value < _INT64[0] or value > _UINT64[1]:
            raise MetadataError(
                f"metadata key {key!r}: value {value} is outside the range {_INT64[0]}..{_UINT64[1]}"
            )
        return value
    if isinstance(value, float):
        return _check_float(key, value, "float64")
    if isinstance(value, datetime):
        return format_time(value)
    raise MetadataError(
        f"metadata key {key!r}: unsupported value type {type(value).__name__}: {value!r} "
        "(use str, bool, int, float or datetime)"
    )


class Metadata(MetadataReader):
    """Writable node metadata.

    Setters are chainable (``md.set_string("zone", "a").set_int("weight", 3)``). Every local
    write stamps the store with a timestamp from ``clock`` that is strictly greater than the
    previous stamp, then calls the listeners (outside the lock).

    Args:
        clock: the HLC used for stamps (default :data:`gossip.hlc.default_clock`).
        max_size: limit on the msgpack-encoded size of the whole map in bytes; ``0`` means no
            limit. A local write that would exceed it raises :class:`MetadataError` and
            changes nothing.
        values: initial values (validated and size-checked; not stamped).
        timestamp: the stamp of the initial values.

    Raises:
        MetadataError: an initial key or value is invalid, or they exceed ``max_size``.
    """

    __slots__ = ("_clock", "_max_size", "_listeners", "_closed", "_reserved")

    def __init__(
        self,
        clock: HLC | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        values: Mapping[str, Any] | None = None,
        timestamp: int = 0,
    ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise MetadataError(f"max_size must be an int >= 0 (0 = no limit), got {max_size!r}")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            raise MetadataError(f"timestamp must be an int >= 0, got {timestamp!r}")
        self._clock: HLC = clock if clock is not None else _hlc.default_clock
        self._max_size = max_size
        self._listeners: tuple[Callable[[Metadata], None], ...] = ()
        self._closed = ""
        self._reserved = 0
        initial: dict[str, Any] = {}
        for k, v in (values or {}).items():
            initial[_check_key(k)] = _normalise(k, v)
        self._check_size(initial)
        self._store = _Store(initial, timestamp)

    @classmethod
    def from_snapshot(
        cls,
        values: Mapping[str, Any],
        timestamp: int,
        clock: HLC | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> Metadata:
        """Build metadata from a remote snapshot, without validation or size check."""
        md = cls(clock=clock, max_size=max_size)
        md.apply(values, timestamp, force=True)
        return md

    @property
    def max_size(self) -> int:
        """The size limit in bytes (0 = no limit)."""
        return self._max_size

    @property
    def clock(self) -> HLC:
        """The HLC that stamps local writes."""
        return self._clock

    def reader(self) -> MetadataReader:
        """Return a read-only view sharing this store (it sees later writes)."""
        return MetadataReader._from_store(self._store)

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[Metadata], None]) -> None:
        """Call ``fn(self)`` after every local write (set or delete), outside the lock.

        Not called by :meth:`apply`. Exceptions raised by ``fn`` are logged, not propagated.
        """
        with self._store.lock:
            self._listeners = self._listeners + (fn,)

    def remove_listener(self, fn: Callable[[Metadata], None]) -> bool:
        """Remove a listener added with :meth:`add_listener`; return whether it was there."""
        with self._store.lock:
            listeners = list(self._listeners)
            try:
                listeners.remove(fn)
            except ValueError:
                return False
            self._listeners = tuple(listeners)
            return True

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn(self)
            except Exception:
                _log.exception("metadata listener %r raised", fn)

    # -- writes ----------------------------------------------------------------------------

    def _encoded_size(self, values: Mapping[str, Any]) -> int:
        try:
            return len(msgpack.packb(values, use_bin_type=True))
        except (TypeError, ValueError, OverflowError) as exc:
            raise MetadataError(f"metadata cannot be encoded: {exc}") from None

    def _check_size(self, values: Mapping[str, Any], reserved: int | None = None) -> None:
        if self._max_size:
            size = self._encoded_size(values)
            extra = self._reserved if reserved is None else reserved
            if size + extra > self._max_size:
                beside = f" beside {extra} bytes of tags" if extra else ""
                raise MetadataError(
                    f"metadata would be {size} bytes encoded{beside}, over the limit of "
                    f"{self._max_size} bytes"
                )

    def reserve(self, nbytes: int) -> tuple[dict[str, Any], int]:
        """Set aside ``nbytes`` of ``max_size`` for what travels with the metadata (the node's
        tags), and give the current values a new stamp, as a write would: what changed with
        them is ordered after every earlier write. Returns ``(values, stamp)``; listeners are
        not called (the caller propagates).

        Raises:
            MetadataError: the current values and ``nbytes`` together exceed ``max_size``.
            ClusterClosed: the metadata is closed.
        """
        if self._closed:
            raise ClusterClosed(self._closed)
        with self._store.lock:
            values, ts = self._store.state
            self._check_size(values, nbytes)
            self._reserved = nbytes
            stamp = self._next_stamp(ts)
            self._store.state = (values, stamp)
            return dict(values), stamp

    def _next_stamp(self, current: int) -> int:
        stamp = self._clock.update(current) if current else self._clock.now()
        return stamp if stamp > current else current + 1

    def close(self, reason: str) -> None:
        """Refuse every later local write (set or delete) with :class:`ClusterClosed`
        carrying ``reason``; reads and :meth:`apply` still work."""
        self._closed = reason or "the metadata is closed"

    def _set(self, key: str, value: Any) -> Metadata:
        if self._closed:
            raise ClusterClosed(self._closed)
        with self._store.lock:
            values, ts = self._store.state
            new = dict(values)
            new[key] = value
            self._check_size(new)
            self._store.state = (new, self._next_stamp(ts))
        self._notify()
        return self

    def set_string(self, key: str, value: str) -> Metadata:
        """Store a string."""
        _check_key(key)
        if not isinstance(value, str):
            raise MetadataError(
                f"metadata key {key!r}: value must be a str, got {type(value).__name__}: {value!r}"
            )
        return self._set(key, value)

    def set_bool(self, key: str, value: bool) -> Metadata:
        """Store a bool."""
        _check_key(key)
        if not isinstance(value, bool):
            raise MetadataError(
                f"metadata key {key!r}: value must be a bool, got {type(value).__name__}: {value!r}"
            )
        return self._set(key, value)

    def set_int(self, key: str, value: int) -> Metadata:
        """Store an int in the int64 range (bools and floats are refused)."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_INT64, "int"))

    def set_int32(self, key: str, value: int) -> Metadata:
        """Store an int in the int32 range."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_INT32, "int32"))

    def set_int64(self, key: str, value: int) -> Metadata:
        """Store an int in the int64 range."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_INT64, "int64"))

    def set_uint(self, key: str, value: int) -> Metadata:
        """Store an int in the uint64 range."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_UINT64, "uint"))

    def set_uint32(self, key: str, value: int) -> Metadata:
        """Store an int in the uint32 range."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_UINT32, "uint32"))

    def set_uint64(self, key: str, value: int) -> Metadata:
        """Store an int in the uint64 range."""
        _check_key(key)
        return self._set(key, _check_int(key, value, *_UINT64, "uint64"))

    def set_float32(self, key: str, value: float) -> Metadata:
        """Store a finite float rounded to the nearest float32 (as a Python float).

        Raises:
            MetadataError: not a number, not finite, or beyond the float32 range.
        """
        _check_key(key)
        f = _check_float(key, value, "float32")
        if abs(f) > _FLOAT32_MAX:
            raise MetadataError(
                f"metadata key {key!r}: value {value!r} is outside the float32 range "
                f"±{_FLOAT32_MAX!r}"
            )
        return self._set(key, _round_float32(f))

    def set_float64(self, key: str, value: float) -> Metadata:
        """Store a finite float (an int is converted; bools are refused)."""
        _check_key(key)
        return self._set(key, _check_float(key, value, "float64"))

    def set_time(self, key: str, value: datetime) -> Metadata:
        """Store a datetime as an RFC 3339 UTC string (naive means UTC)."""
        _check_key(key)
        if not isinstance(value, datetime):
            raise MetadataError(
                f"metadata key {key!r}: value must be a datetime, "
                f"got {type(value).__name__}: {value!r}"
            )
        return self._set(key, format_time(value))

    def delete(self, key: str) -> Metadata:
        """Remove ``key``; does nothing (and does not stamp) if it is absent.

        Raises:
            ClusterClosed: the metadata was closed (its cluster stopped).
        """
        if self._closed:
            raise ClusterClosed(self._closed)
        with self._store.lock:
            values, ts = self._store.state
            if key not in values:
                return self
            new = dict(values)
            del new[key]
            self._store.state = (new, self._next_stamp(ts))
        self._notify()
        return self

    # -- remote merge ----------------------------------------------------------------------

    def apply(self, values: Mapping[str, Any], timestamp: int, force: bool = False) -> bool:
        """Replace the whole map with a remote copy if ``timestamp`` is newer (or ``force``).

        No validation or size check is done: the sender enforced its own limit, and refusing
        would lose data. Listeners are not called. Returns whether the copy was applied.
        """
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not (
            0 <= timestamp <= _hlc.MAX_TIMESTAMP
        ):
            raise MetadataError(f"metadata timestamp must be a u64 int, got {timestamp!r}")
        new = dict(values)
        with self._store.lock:
            if not force and timestamp <= self._store.state[1]:
                return False
            self._store.state = (new, timestamp)
        return True
