"""Tests for gossip.metadata (ports of the Go library's metadata_test.go plus extras)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.errors import MetadataError
from gossip.hlc import EPOCH_US, HLC
from gossip.metadata import ZERO_TIME, Metadata, MetadataReader, format_time, parse_time

UTC = timezone.utc


def frozen_clock() -> HLC:
    """An HLC whose wall clock never moves."""
    ns = (EPOCH_US + 10_000_000) * 1000
    return HLC(lambda: ns)


def md(max_size: int = 0) -> Metadata:
    return Metadata(clock=frozen_clock(), max_size=max_size)


# -- ports of metadata_test.go ---------------------------------------------------------------


def test_basic_operations() -> None:
    m = md()
    assert m.timestamp == 0
    assert m.set_string("key", "value") is m
    assert m.get_string("key") == "value"
    assert m.exists("key")
    assert "key" in m
    assert len(m) == 1
    m.delete("key")
    assert not m.exists("key")
    assert m.get_string("key") == ""
    assert m.get_string("missing") == ""


def test_string_conversions() -> None:
    m = md()
    m.set_bool("bool", True)
    m.set_int("int", 123)
    m.set_int64("int64", -9223372036854775807)
    m.set_uint64("uint64", 18446744073709551615)
    m.set_float64("float", 123.456)
    m.set_float64("big", 1e20)
    m.set_float64("small", 1e-7)
    m.set_float64("whole", 5.0)
    m.set_float32("f32", 32.5)
    m.set_time("time", datetime(2023, 1, 1, 12, 0, 0, tzinfo=UTC))
    assert m.get_string("bool") == "true"
    assert m.get_string("int") == "123"
    assert m.get_string("int64") == "-9223372036854775807"
    assert m.get_string("uint64") == "18446744073709551615"
    assert m.get_string("float") == "123.456"
    assert m.get_string("big") == "100000000000000000000"
    assert m.get_string("small") == "0.0000001"
    assert m.get_string("whole") == "5"
    assert m.get_string("f32") == "32.5"
    assert m.get_string("time") == "2023-01-01T12:00:00Z"
    m.set_bool("false", False)
    assert m.get_string("false") == "false"


def test_bool_conversions() -> None:
    m = md()
    m.set_int("one", 1).set_int("zero", 0).set_int("neg", -10)
    m.set_uint("u1", 1).set_uint32("u0", 0)
    m.set_float64("f01", 0.1).set_float64("f00", 0.0)
    for s in ("true", "false", "1", "0", "t", "F", "TRUE", "False", "invalid", "yes", ""):
        m.set_string("s_" + s, s)
    assert m.get_bool("one") is True
    assert m.get_bool("zero") is False
    assert m.get_bool("neg") is True
    assert m.get_bool("u1") is True
    assert m.get_bool("u0") is False
    assert m.get_bool("f01") is True
    assert m.get_bool("f00") is False
    assert m.get_bool("s_true") is True
    assert m.get_bool("s_1") is True
    assert m.get_bool("s_t") is True
    assert m.get_bool("s_TRUE") is True
    assert m.get_bool("s_false") is False
    assert m.get_bool("s_0") is False
    assert m.get_bool("s_F") is False
    assert m.get_bool("s_False") is False
    assert m.get_bool("s_invalid") is False
    assert m.get_bool("s_yes") is False
    assert m.get_bool("s_") is False
    assert m.get_bool("missing") is False


def test_int_conversions() -> None:
    m = md()
    m.set_int("int", 42).set_int32("int32", -32).set_int64("int64", 64)
    m.set_uint("uint", 7).set_uint32("uint32", 32).set_uint64("uint64", 64)
    m.set_float32("f32", 32.5).set_float64("f64", 64.5).set_float64("fneg", -3.9)
    m.set_string("s1", "123").set_string("s2", "-456").set_string("s3", "789.5")
    m.set_string("bad", "invalid").set_bool("t", True).set_bool("f", False)
    assert m.get_int("int") == 42
    assert m.get_int("int32") == -32
    assert m.get_int("int64") == 64
    assert m.get_int("uint") == 7
    assert m.get_int("uint32") == 32
    assert m.get_int("uint64") == 64
    assert m.get_int("f32") == 32
    assert m.get_int("f64") == 64
    assert m.get_int("fneg") == -3
    assert m.get_int("s1") == 123
    assert m.get_int("s2") == -456
    assert m.get_int("s3") == 789
    assert m.get_int("bad") == 0
    assert m.get_int("t") == 1
    assert m.get_int("f") == 0
    assert m.get_int("missing") == 0
    assert m.get_int32("s2") == -456
    assert m.get_int64("s3") == 789
    assert m.get_int32("int64") == 64


def test_int_narrowing_out_of_range_is_zero() -> None:
    m = md()
    m.set_int64("big", 1 << 40).set_uint64("huge", (1 << 64) - 1)
    assert m.get_int32("big") == 0
    assert m.get_int64("big") == 1 << 40
    assert m.get_int64("huge") == 0
    assert m.get_uint64("huge") == (1 << 64) - 1
    assert m.get_uint32("huge") == 0
    assert m.get_uint32("big") == 0
    m.set_float64("inf_like", 1e300)
    assert m.get_int64("inf_like") == 0


def test_uint_conversions() -> None:
    m = md()
    m.set_int("neg", -100).set_int("pos", 100).set_float64("f", 123.45).set_float64("fn", -1.5)
    m.set_string("s", "789").set_string("sn", "-123").set_string("sf", "12.9")
    m.set_string("bad", "x").set_bool("t", True).set_bool("f0", False)
    m.set_uint64("max", (1 << 64) - 1)
    assert m.get_uint("neg") == 0
    assert m.get_uint("pos") == 100
    assert m.get_uint("f") == 123
    assert m.get_uint("fn") == 0
    assert m.get_uint("s") == 789
    assert m.get_uint("sn") == 0
    assert m.get_uint("sf") == 12
    assert m.get_uint("bad") == 0
    assert m.get_uint("t") == 1
    assert m.get_uint("f0") == 0
    assert m.get_uint("missing") == 0
    assert m.get_uint32("s") == 789
    assert m.get_uint64("max") == (1 << 64) - 1


def test_float_conversions() -> None:
    m = md()
    m.set_float32("f32", 32.5).set_float64("f64", 64.75).set_int("int", 42)
    m.set_uint64("u64", 1 << 40).set_string("s", "123.45").set_string("si", "789")
    m.set_string("bad", "invalid").set_bool("t", True).set_bool("f", False)
    m.set_string("exp", "1e3")
    assert m.get_float32("f32") == 32.5
    assert m.get_float64("f32") == 32.5
    assert m.get_float64("f64") == 64.75
    assert m.get_float32("f64") == 64.75
    assert m.get_float64("int") == 42.0
    assert m.get_float64("u64") == float(1 << 40)
    assert m.get_float64("s") == 123.45
    assert m.get_float64("si") == 789.0
    assert m.get_float64("bad") == 0.0
    assert m.get_float64("t") == 1.0
    assert m.get_float64("f") == 0.0
    assert m.get_float64("exp") == 1000.0
    assert m.get_float64("missing") == 0.0


def test_float32_rounding() -> None:
    m = md()
    m.set_float32("x", 0.1)
    assert m.get_float64("x") != 0.1
    assert abs(m.get_float64("x") - 0.1) < 1e-8
    m.set_float64("big", 1e300)
    assert m.get_float32("big") == float("inf")
    with pytest.raises(MetadataError):
        m.set_float32("y", 1e39)
    with pytest.raises(MetadataError):
        m.set_float64("nan", float("nan"))
    with pytest.raises(MetadataError):
        m.set_float64("b", True)
    m.set_float64("i", 3)
    assert m.get_float64("i") == 3.0


def test_time_conversions() -> None:
    m = md()
    t = datetime(2023, 1, 1, 12, 0, 0, tzinfo=UTC)
    tf = datetime(2023, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    m.set_time("time", t).set_time("frac", tf)
    ns = int(t.timestamp()) * 1_000_000_000
    m.set_int64("ns", ns)
    m.set_string("rfc3339", "2023-01-01T12:00:00Z")
    m.set_string("rfc3339_off", "2023-01-01T14:00:00.5+02:00")
    m.set_string("rfc3339_nano", "2023-01-01T12:00:00.123456789Z")
    m.set_string("rfc1123", "Sun, 01 Jan 2023 12:00:00 GMT")
    m.set_string("dt", "2023-01-01 12:00:00")
    m.set_string("date", "2023-01-02")
    m.set_string("bad", "invalid")
    m.set_bool("b", True)
    assert m.get_time("time") == t
    assert m.get_string("frac") == "2023-01-01T12:00:00.123456Z"
    assert m.get_time("frac") == tf
    assert m.get_time("ns") == t
    assert m.get_time("rfc3339") == t
    assert m.get_time("rfc3339_off") == t + timedelta(milliseconds=500)
    assert m.get_time("rfc3339_nano") == tf
    assert m.get_time("rfc1123") == t
    assert m.get_time("dt") == t
    assert m.get_time("date") == datetime(2023, 1, 2, tzinfo=UTC)
    assert m.get_time("bad") == ZERO_TIME
    assert m.get_time("b") == ZERO_TIME
    assert m.get_time("missing") == ZERO_TIME
    assert ZERO_TIME == datetime(1, 1, 1, tzinfo=UTC)


def test_set_time_naive_and_offset() -> None:
    m = md()
    m.set_time("naive", datetime(2023, 5, 1, 8, 30))
    m.set_time("off", datetime(2023, 5, 1, 10, 30, tzinfo=timezone(timedelta(hours=2))))
    assert m.get_string("naive") == "2023-05-01T08:30:00Z"
    assert m.get_string("off") == "2023-05-01T08:30:00Z"
    with pytest.raises(MetadataError):
        m.set_time("x", "2023-01-01")  # type: ignore[arg-type]


def test_format_and_parse_time() -> None:
    assert format_time(datetime(2023, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)) == (
        "2023-01-01T12:00:00.5Z"
    )
    assert format_time(ZERO_TIME) == "0001-01-01T00:00:00Z"
    assert parse_time("0001-01-01T00:00:00Z") == ZERO_TIME
    assert parse_time("2023-13-01") is None
    assert parse_time("nope") is None


def test_get_all() -> None:
    m = md()
    m.set_string("a", "1").set_int("b", 2).set_bool("c", True)
    all_values = m.get_all()
    assert all_values == {"a": "1", "b": 2, "c": True}
    all_values["a"] = "changed"
    all_values["d"] = 4
    assert m.get_string("a") == "1"
    assert not m.exists("d")
    assert m.get_all_keys() == ["a", "b", "c"]
    assert m.get_all_as_string() == {"a": "1", "b": "2", "c": "true"}


def test_concurrent_access() -> None:
    m = Metadata(max_size=0)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(100):
                m.set_int(f"key{i}", j)
                m.set_string(f"s{i}", str(j))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(100):
                m.get_all()
                m.get_int("key1")
                m.get_string("s2")
                m.snapshot()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    threads += [threading.Thread(target=reader) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(m.get_all()) == 20
    assert all(m.get_int(f"key{i}") == 99 for i in range(10))


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setter,value",
    [
        ("set_int32", 1 << 31),
        ("set_int32", -(1 << 31) - 1),
        ("set_int64", 1 << 63),
        ("set_int", -(1 << 63) - 1),
        ("set_uint", -1),
        ("set_uint32", 1 << 32),
        ("set_uint64", 1 << 64),
    ],
)
def test_range_errors(setter: str, value: int) -> None:
    m = md()
    with pytest.raises(MetadataError) as info:
        getattr(m, setter)("k", value)
    assert "'k'" in str(info.value) and str(value) in str(info.value)
    assert len(m) == 0 and m.timestamp == 0


def test_range_bounds_accepted() -> None:
    m = md()
    m.set_int32("a", (1 << 31) - 1).set_int32("b", -(1 << 31))
    m.set_int64("c", (1 << 63) - 1).set_int64("d", -(1 << 63))
    m.set_uint32("e", (1 << 32) - 1).set_uint64("f", (1 << 64) - 1).set_uint("g", 0)
    assert m.get_int32("b") == -(1 << 31)
    assert m.get_int64("d") == -(1 << 63)
    assert m.get_uint32("e") == (1 << 32) - 1


def test_type_errors() -> None:
    m = md()
    with pytest.raises(MetadataError):
        m.set_int("k", True)
    with pytest.raises(MetadataError):
        m.set_int("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(MetadataError):
        m.set_uint("k", False)
    with pytest.raises(MetadataError):
        m.set_string("k", 5)  # type: ignore[arg-type]
    with pytest.raises(MetadataError):
        m.set_bool("k", 1)  # type: ignore[arg-type]


def test_key_validation() -> None:
    m = md()
    with pytest.raises(MetadataError):
        m.set_string("", "x")
    with pytest.raises(MetadataError):
        m.set_string("k" * 256, "x")
    with pytest.raises(MetadataError):
        m.set_string(5, "x")  # type: ignore[arg-type]
    m.set_string("k" * 255, "x")


def test_size_limit_leaves_store_unchanged() -> None:
    m = Metadata(clock=frozen_clock(), max_size=64)
    m.set_string("a", "small")
    before = m.snapshot()
    with pytest.raises(MetadataError) as info:
        m.set_string("b", "x" * 100)
    assert "64" in str(info.value)
    assert m.snapshot() == before
    assert not m.exists("b")
    assert len(msgpack.packb(m.get_all())) <= 64


def test_default_size_limit() -> None:
    m = Metadata()
    assert m.max_size == 512
    with pytest.raises(MetadataError, match="512"):
        m.set_string("big", "x" * 600)


def test_constructor_values_validated() -> None:
    m = Metadata(values={"a": 1, "t": datetime(2023, 1, 1, tzinfo=UTC)}, timestamp=5)
    assert m.get_string("t") == "2023-01-01T00:00:00Z"
    assert m.timestamp == 5
    with pytest.raises(MetadataError):
        Metadata(values={"a": [1, 2]})
    with pytest.raises(MetadataError):
        Metadata(values={"a": "x" * 600})
    with pytest.raises(MetadataError):
        Metadata(max_size=-1)


# -- stamps ----------------------------------------------------------------------------------


def test_stamp_strictly_increases() -> None:
    m = md()
    stamps = [m.timestamp]
    m.set_string("a", "1")
    stamps.append(m.get_timestamp())
    m.set_string("a", "1")
    stamps.append(m.timestamp)
    m.set_int("b", 2)
    stamps.append(m.timestamp)
    m.delete("b")
    stamps.append(m.timestamp)
    m.delete("b")  # absent: no stamp
    assert m.timestamp == stamps[-1]
    for _ in range(2000):  # through a counter overflow on the frozen clock
        m.set_int("c", 1)
        stamps.append(m.timestamp)
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_stamp_after_applied_remote_ahead() -> None:
    m = md()
    m.set_string("a", "1")
    far = m.timestamp + (1 << 50)  # far beyond the drift window
    assert m.apply({"x": "y"}, far)
    m.set_string("a", "2")
    assert m.timestamp > far


def test_failed_write_does_not_stamp() -> None:
    m = md()
    m.set_string("a", "1")
    ts = m.timestamp
    with pytest.raises(MetadataError):
        m.set_int32("a", 1 << 40)
    assert m.timestamp == ts


# -- merge -----------------------------------------------------------------------------------


def test_apply_newer_older_force() -> None:
    m = md()
    m.set_string("a", "local")
    ts = m.timestamp
    assert not m.apply({"a": "old"}, ts - 1)
    assert not m.apply({"a": "same"}, ts)
    assert m.get_string("a") == "local"
    assert m.apply({"b": "new"}, ts + 1)
    assert m.get_all() == {"b": "new"}
    assert m.timestamp == ts + 1
    assert m.apply({"c": "forced"}, 1, force=True)
    assert m.get_all() == {"c": "forced"}
    assert m.timestamp == 1
    with pytest.raises(MetadataError):
        m.apply({}, -1)


def test_apply_skips_size_check() -> None:
    m = Metadata(clock=frozen_clock(), max_size=16)
    assert m.apply({"big": "x" * 100}, 10)
    assert m.get_string("big") == "x" * 100


def test_snapshot_and_from_snapshot() -> None:
    m = md()
    m.set_string("a", "1").set_int("b", 2)
    values, ts = m.snapshot()
    values["a"] = "changed"
    assert m.get_string("a") == "1"
    values, ts = m.snapshot()
    clone = Metadata.from_snapshot(values, ts)
    assert clone.get_all() == m.get_all()
    assert clone.timestamp == ts


def test_snapshot_survives_codecs() -> None:
    m = md()
    m.set_string("s", "x").set_bool("b", True).set_int("i", -5).set_uint64("u", (1 << 64) - 1)
    m.set_float64("f", 1.5).set_time("t", datetime(2023, 1, 1, tzinfo=UTC))
    values, ts = m.snapshot()
    via_msgpack = Metadata.from_snapshot(msgpack.unpackb(msgpack.packb(values)), ts)
    assert via_msgpack.get_all() == values
    j = orjson.loads(orjson.dumps({k: v for k, v in values.items() if k != "u"}))
    via_json = Metadata.from_snapshot(j, ts)
    assert via_json.get_time("t") == datetime(2023, 1, 1, tzinfo=UTC)
    assert via_json.get_int("i") == -5


def test_reader_view_and_copy() -> None:
    m = md()
    m.set_string("a", "1")
    view = m.reader()
    frozen = m.copy()
    assert isinstance(view, MetadataReader) and not isinstance(view, Metadata)
    assert not hasattr(view, "set_string")
    m.set_string("a", "2")
    assert view.get_string("a") == "2"
    assert view.timestamp == m.timestamp
    assert frozen.get_string("a") == "1"
    assert frozen.timestamp < m.timestamp
    standalone = MetadataReader({"k": 1}, 9)
    assert standalone.get_int("k") == 1 and standalone.timestamp == 9
    assert "timestamp=9" in repr(standalone)
    assert "Metadata(" in repr(m)


# -- listeners -------------------------------------------------------------------------------


def test_listener_called(caplog: pytest.LogCaptureFixture) -> None:
    m = md()
    calls: list[int] = []

    def listener(x: Metadata) -> None:
        assert x is m
        calls.append(x.timestamp)

    def broken(x: Metadata) -> None:
        raise RuntimeError("boom")

    m.add_listener(listener)
    m.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="gossip.metadata"):
        m.set_string("a", "1")
    assert "boom" in caplog.text
    m.delete("a")
    m.delete("a")  # absent: no call
    m.apply({"z": 1}, m.timestamp + 1)  # remote: no call
    assert len(calls) == 2
    assert calls[0] < calls[1]
    assert m.remove_listener(listener)
    assert not m.remove_listener(listener)
    m.set_string("b", "2")
    assert len(calls) == 2


# -- property-based --------------------------------------------------------------------------

_keys = st.text(min_size=1, max_size=20)


@given(_keys, st.integers(-(1 << 63), (1 << 63) - 1))
def test_int_round_trip(key: str, value: int) -> None:
    m = md()
    m.set_int64(key, value)
    assert m.get_int64(key) == value
    assert m.get_string(key) == str(value)
    assert m.get_float64(key) == float(value)


@given(_keys, st.integers(0, (1 << 64) - 1))
def test_uint_round_trip(key: str, value: int) -> None:
    m = md()
    m.set_uint64(key, value)
    assert m.get_uint64(key) == value


@given(_keys, st.text(max_size=100))
def test_string_round_trip(key: str, value: str) -> None:
    m = md()
    m.set_string(key, value)
    assert m.get_string(key) == value


@given(_keys, st.floats(allow_nan=False, allow_infinity=False))
def test_float_string_round_trip(key: str, value: float) -> None:
    m = md()
    m.set_float64(key, value)
    assert m.get_float64(key) == value
    text = m.get_string(key)
    assert "e" not in text.lower()
    assert float(text) == value
    m.set_string("s", text)
    assert m.get_float64("s") == value


@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)))
def test_time_round_trip(value: datetime) -> None:
    m = md()
    m.set_time("t", value)
    assert m.get_time("t") == value
