"""Tests for gossip.codecs: msgpack and JSON codecs, registry, typed decoding."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Dict, Literal, NewType, Optional

import pytest

from gossip.codecs import (
    DEFAULT_CODEC,
    Codec,
    JsonCodec,
    MsgpackCodec,
    from_builtin,
    get_codec,
    register_codec,
    to_builtin,
)
from gossip.errors import ConfigError, DecodeError, LocalProtocolError

CODECS: list[Codec] = [MsgpackCodec(), JsonCodec()]
ids = [c.name for c in CODECS]


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Address:
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    addr: Address
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    backup: Optional[Address] = None
    history: list[Address] = dataclasses.field(default_factory=list)
    color: Color = Color.RED
    weight: float = 1.0
    blob: bytes = b""


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Roster:
    members: list[Member]
    by_name: dict[str, Member]
    pair: tuple[int, str]
    alt: int | str | None = None


def test_registry() -> None:
    assert get_codec("msgpack").codec_id == 1
    assert get_codec(1).name == "msgpack"
    assert get_codec("json").codec_id == 2
    assert get_codec(2).name == "json"
    assert DEFAULT_CODEC.name == "msgpack"
    assert isinstance(DEFAULT_CODEC, Codec)
    with pytest.raises(ConfigError):
        get_codec("yaml")
    with pytest.raises(DecodeError):
        get_codec(99)


def test_register_clash_and_replace() -> None:
    class Other(JsonCodec):
        name = "json"

    with pytest.raises(ConfigError):
        register_codec(Other())

    class Mine(JsonCodec):
        name = "mine"
        codec_id = 200

    mine = Mine()
    register_codec(mine)
    assert get_codec(200) is mine and get_codec("mine") is mine

    class Bad(JsonCodec):
        name = "bad"
        codec_id = 0

    with pytest.raises(ConfigError):
        register_codec(Bad())


VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    1.5,
    "",
    "héllo",
    b"",
    b"\x00\xff" * 10,
    [],
    [1, "a", b"b", None],
    {"a": 1, "b": [1, 2, {"c": b"d"}]},
    {"nested": {"deep": [[b"x"]]}},
]


@pytest.mark.parametrize("codec", CODECS, ids=ids)
@pytest.mark.parametrize("value", VALUES)
def test_round_trip(codec: Codec, value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_tuples_become_lists(codec: Codec) -> None:
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]


def test_msgpack_int_keys() -> None:
    c = MsgpackCodec()
    assert c.decode(c.encode({1: "a", 2: "b"})) == {1: "a", 2: "b"}


def test_json_bytes_are_base64_objects() -> None:
    c = JsonCodec()
    data = c.encode({"k": b"\x01\x02"})
    assert data == b'{"k":{"$b":"AQI="}}'
    assert c.decode(data) == {"k": b"\x01\x02"}
    assert c.decode(c.encode(bytearray(b"xy"))) == b"xy"
    # only a dict that is exactly one "$b" key is bytes
    assert c.decode(b'{"$b":"AQI=","x":1}') == {"$b": "AQI=", "x": 1}
    with pytest.raises(DecodeError):
        c.decode(b'{"$b":"not base64!"}')


def _member() -> Member:
    return Member(
        name="n1",
        addr=Address("127.0.10.1", 7946),
        tags={"dc": "eu"},
        backup=Address("127.0.10.2", 7947),
        history=[Address("a", 1), Address("b", 2)],
        color=Color.BLUE,
        weight=2,
        blob=b"\x00raw",
    )


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_dataclass_round_trip(codec: Codec) -> None:
    m = _member()
    data = codec.encode(m)
    plain = codec.decode(data)
    assert plain["addr"] == {"host": "127.0.10.1", "port": 7946}
    assert plain["history"][1] == {"host": "b", "port": 2}
    back = codec.decode_as(data, Member)
    assert back == dataclasses.replace(m, weight=2.0)
    assert isinstance(back.weight, float)
    assert back.color is Color.BLUE


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_dataclass_containers(codec: Codec) -> None:
    r = Roster(members=[_member()], by_name={"n1": _member()}, pair=(1, "x"), alt="s")
    assert codec.decode_as(codec.encode(r), Roster) == r
    assert codec.decode_as(codec.encode([_member()]), list[Member]) == [_member()]
    assert codec.decode_as(codec.encode({"a": [Address("h", 1)]}), dict[str, list[Address]]) == {
        "a": [Address("h", 1)]
    }


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_recursive_dataclass(codec: Codec) -> None:
    t = Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    assert codec.decode_as(codec.encode(t), Tree) == t


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_decode_as_ignores_unknown_and_uses_defaults(codec: Codec) -> None:
    data = codec.encode({"host": "h", "port": 1, "extra": [1, 2]})
    assert codec.decode_as(data, Address) == Address("h", 1)
    data = codec.encode({"name": "n", "addr": {"host": "h", "port": 1}})
    assert codec.decode_as(data, Member) == Member("n", Address("h", 1))


@pytest.mark.parametrize("codec", CODECS, ids=ids)
@pytest.mark.parametrize(
    "value",
    [
        {"host": "h"},  # missing required
        {"host": "h", "port": "1"},  # wrong type
        {"host": "h", "port": True},  # bool is not an int here
        [1, 2],  # not a dict
        None,
    ],
)
def test_decode_as_refuses(codec: Codec, value: Any) -> None:
    with pytest.raises(DecodeError):
        codec.decode_as(codec.encode(value), Address)


def test_decode_as_enum_and_optional() -> None:
    c = MsgpackCodec()
    with pytest.raises(DecodeError):
        from_builtin({"name": "n", "addr": {"host": "h", "port": 1}, "color": 9}, Member)
    opt_int: Any = Optional[int]
    assert from_builtin(None, opt_int) is None
    assert from_builtin(3, opt_int) == 3
    with pytest.raises(DecodeError):
        from_builtin("x", opt_int)
    assert c.decode_as(c.encode([1, 2]), tuple[int, ...]) == (1, 2)
    with pytest.raises(DecodeError):
        from_builtin([1, 2, 3], tuple[int, str])


def test_to_builtin() -> None:
    assert to_builtin((Address("h", 1), [Address("g", 2)])) == [
        {"host": "h", "port": 1},
        [{"host": "g", "port": 2}],
    ]


@pytest.mark.parametrize("codec", CODECS, ids=ids)
@pytest.mark.parametrize("value", [{1, 2}, object(), {"a": frozenset()}, 2**64 + 5, [complex(1, 2)]])
def test_unencodable_raises_local_error(codec: Codec, value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode(value)


def test_unencodable_names_type() -> None:
    class Strange:
        pass

    for codec in CODECS:
        with pytest.raises(LocalProtocolError, match="Strange"):
            codec.encode({"x": [Strange()]})


def test_json_non_str_keys_refused() -> None:
    with pytest.raises(LocalProtocolError):
        JsonCodec().encode({1: "a"})


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa5ab", b"\xc4\xff", b"\xdf\xff\xff\xff\xff",
     b"\x81\x90\x01", b"\xa2\xff\xfe", b"\x91" * 5000],
)
def test_msgpack_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        MsgpackCodec().decode(data)


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[1,]", b"\xff\xfe", b'"\xed\xa0\x80"', b"[" * 5000, b"1 2", b"nan"]
)
def test_json_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(data)


def test_unresolvable_hints_are_local_errors() -> None:
    @dataclasses.dataclass
    class Broken:
        x: "NoSuchType"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(LocalProtocolError):
        MsgpackCodec().decode_as(MsgpackCodec().encode({"x": 1}), Broken)


UserId = NewType("UserId", int)


@dataclasses.dataclass
class Checked:
    low: int
    high: int
    span: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low above high")
        self.span = self.high - self.low


@pytest.mark.parametrize("value, target, expected", [
    (5, Any, 5),
    ([1, "x"], object, [1, "x"]),
    (3, float, 3.0),
    (bytearray(b"ab"), bytes, b"ab"),
    (memoryview(b"cd"), bytes, b"cd"),
    (None, int | str | None, None),
    ("s", int | str | None, "s"),
    ((1, 2), list, [1, 2]),
    ([1, 2], Sequence[int], [1, 2]),
    ([1, 2, 2], set[int], {1, 2}),
    ([1, 2], frozenset, frozenset({1, 2})),
    ([1, 2], tuple, (1, 2)),
    ([], tuple[()], ()),
    ({"a": 1}, dict, {"a": 1}),
    ({"a": 1}, Dict, {"a": 1}),
    ({"a": 1}, Mapping[str, int], {"a": 1}),
    ("b", Literal["a", "b"], "b"),
    (None, None, None),
    (4, UserId, 4),
    (7, Annotated[int, "meta"], 7),
    (7, Annotated[int, ["unhashable"]], 7),
    ({"low": 1, "high": 4, "span": 99}, Checked, Checked(1, 4)),
    (1 + 2j, complex, 1 + 2j),                           # unknown annotation: as is
])
def test_from_builtin_converts(value: Any, target: Any, expected: Any) -> None:
    got = from_builtin(value, target)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, target", [
    ("1.5", float), (True, float),
    ("ab", bytes),
    (1.5, int | str),
    ("x", list[int]), ({"a": 1}, tuple[int, ...]),
    ([1], tuple[()]),
    ("x", dict[str, int]), ([("a", 1)], dict),
    ({"a": "1"}, dict[str, int]),
    ("c", Literal["a", "b"]),
    (0, None),
    ("4", UserId),
    ({"low": 5, "high": 1}, Checked),                   # __post_init__ refuses
    ({"low": 1}, Checked),
])
def test_from_builtin_refuses(value: Any, target: Any) -> None:
    with pytest.raises(DecodeError):
        from_builtin(value, target)


def test_from_builtin_hands_back_an_instance_as_is_and_to_builtin_walks_dicts() -> None:
    addr = Address("127.0.0.1", 1)
    assert from_builtin(addr, Address) is addr
    assert to_builtin({"a": (1, addr)}) == {"a": [1, {"host": "127.0.0.1", "port": 1}]}


@dataclasses.dataclass(frozen=True)
class Labels:
    names: frozenset  # type: ignore[type-arg]  # a bare annotation, as users write it
    seen: set  # type: ignore[type-arg]


@pytest.mark.parametrize("codec", CODECS, ids=ids)
def test_bare_set_annotations_decode_to_sets(codec: Codec) -> None:
    got = codec.decode_as(codec.encode({"names": ["a", "b"], "seen": [1, 1]}), Labels)
    assert got.names == frozenset({"a", "b"}) and got.seen == {1}
    assert isinstance(got.names, frozenset) and isinstance(got.seen, set)
    hash(got.names)                                      # a frozen dataclass's field hashes
