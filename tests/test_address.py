"""Tests for gossip.address."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.address import (
    format_addr, host_of, is_loopback, is_websocket_url, plain_ip, split_ip_port,
)
from gossip.address import Address, format_host_port
from gossip.errors import AddressError

GOOD: list[tuple[str, str, str, int, str, str]] = [
    # text, kind, host, port, url, str()
    ("127.1.2.4:8000", "ip", "127.1.2.4", 8000, "", "127.1.2.4:8000"),
    ("127.1.2.4", "ip", "127.1.2.4", 7946, "", "127.1.2.4:7946"),
    ("[::1]:8000", "ip", "::1", 8000, "", "[::1]:8000"),
    ("[::1]", "ip", "::1", 7946, "", "[::1]:7946"),
    ("::1", "ip", "::1", 7946, "", "[::1]:7946"),
    ("fe80:0:0::1", "ip", "fe80::1", 7946, "", "[fe80::1]:7946"),
    ("[2001:db8::5]:65535", "ip", "2001:db8::5", 65535, "", "[2001:db8::5]:65535"),
    ("hostname", "host", "hostname", 7946, "", "hostname:7946"),
    ("node-1.example.com:9000", "host", "node-1.example.com", 9000, "", "node-1.example.com:9000"),
    ("my_service:1", "host", "my_service", 1, "", "my_service:1"),
    ("8081", "ip", "127.0.0.1", 8081, "", "127.0.0.1:8081"),
    (":8000", "ip", "127.0.0.1", 8000, "", "127.0.0.1:8000"),
    ("  127.0.10.1:80  ", "ip", "127.0.10.1", 80, "", "127.0.10.1:80"),
    (
        "srv+_gossip._udp.example.com",
        "srv",
        "_gossip._udp.example.com",
        0,
        "",
        "srv+_gossip._udp.example.com",
    ),
    ("ws://host:8080/gossip", "ws", "host", 8080, "ws://host:8080/gossip", "ws://host:8080/gossip"),
    ("wss://example.com/g", "ws", "example.com", 443, "wss://example.com/g", "wss://example.com/g"),
    ("ws://example.com", "ws", "example.com", 80, "ws://example.com", "ws://example.com"),
    ("http://h:81/x", "http", "h", 81, "http://h:81/x", "http://h:81/x"),
    ("https://h/x?y=1", "http", "h", 443, "https://h/x?y=1", "https://h/x?y=1"),
    ("HTTP://h/gossip", "http", "h", 80, "http://h/gossip", "http://h/gossip"),
    ("WSS://h:9/x", "ws", "h", 9, "wss://h:9/x", "wss://h:9/x"),
    ("ws://[::1]:9000/p", "ws", "::1", 9000, "ws://[::1]:9000/p", "ws://[::1]:9000/p"),
    (
        "srv+https://example.com/gossip",
        "srv",
        "example.com",
        0,
        "https://example.com/gossip",
        "srv+https://example.com/gossip",
    ),
]


@pytest.mark.parametrize("text,kind,host,port,url,as_str", GOOD)
def test_good(text: str, kind: str, host: str, port: int, url: str, as_str: str) -> None:
    addr = Address.parse(text)
    assert (addr.kind, addr.host, addr.port, addr.url) == (kind, host, port, url)
    assert str(addr) == as_str
    assert addr.host_port() == (host, port)
    # str() parses back to the same address
    assert Address.parse(str(addr)) == addr


BAD = [
    "",
    "   ",
    "host:",
    "host:abc",
    "host:0",
    "host:65536",
    "host:-1",
    "host:+80",
    "127.1.2.4:99999999999",
    "::1:80:zz",
    "1::2::3",
    "[::1",
    "[::1]x",
    "[::1]:",
    "[127.1.2.4]:80",
    "[nothex::1]:80",
    "::1]",
    "host name",
    "host!:80",
    "-host",
    "a..b",
    "999.1.1.1",
    "srv+",
    "srv+bad name",
    "ftp://host/x",
    "ws://",
    "ws://:80/x",
    "ws://host:abc/x",
    "ws://host:70000/x",
    "ws://user@host/x",
    "host/path",
    "0",
    "65536",
    "a" * 64 + ".com",
]


@pytest.mark.parametrize("text", BAD)
def test_bad(text: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text)
    assert repr(text) in str(info.value) or text.strip() == text == ""


def test_error_message_says_why() -> None:
    with pytest.raises(AddressError, match=r"'host:99999'.*65535"):
        Address.parse("host:99999")
    with pytest.raises(AddressError, match=r"scheme 'ftp'"):
        Address.parse("ftp://x")


def test_zero_port_for_bind() -> None:
    addr = Address.parse("0.0.0.0:0", allow_zero_port=True)
    assert addr.port == 0
    assert Address.parse("0", allow_zero_port=True) == Address("ip", "127.0.0.1", 0)
    with pytest.raises(AddressError):
        Address.parse("0.0.0.0:0")


def test_default_port() -> None:
    assert Address.parse("host", default_port=7946).port == 7946
    assert Address.parse("[::1]", default_port=1).port == 1
    with pytest.raises(AddressError):
        Address.parse("host", default_port=70000)


def test_properties() -> None:
    assert Address.parse("127.1.2.4").is_ip
    assert Address.parse("127.1.2.4").family == 4
    assert Address.parse("::1").family == 6
    assert not Address.parse("host").is_ip
    assert Address.parse("host").family == 0
    assert Address.parse("srv+x.y").family == 0
    assert Address.parse("ws://127.1.2.4/x").family == 0


def test_frozen_and_slotted() -> None:
    addr = Address.parse("127.1.2.4:5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        addr.port = 6  # type: ignore[misc]
    assert not hasattr(addr, "__dict__")
    assert hash(addr) == hash(Address("ip", "127.1.2.4", 5))


def test_bad_kind() -> None:
    with pytest.raises(AddressError):
        Address("tcp", "h", 1)


def test_non_string() -> None:
    with pytest.raises(AddressError):
        Address.parse(1234)  # type: ignore[arg-type]


def test_format_host_port() -> None:
    assert format_host_port("127.1.2.4", 80) == "127.1.2.4:80"
    assert format_host_port("::1", 80) == "[::1]:80"
    assert format_host_port("host", 1) == "host:1"


_ALPHABET = st.sampled_from(list("0123456789abcdefxyz.:[]/_-+@% ") + ["srv+", "ws://", "://"])


@given(st.one_of(st.text(), st.lists(_ALPHABET, max_size=20).map("".join)))
def test_any_text_parses_or_raises_address_error(text: str) -> None:
    try:
        addr = Address.parse(text)
    except AddressError:
        return
    assert addr.kind in {"ip", "host", "srv", "ws"}
    assert 0 <= addr.port <= 65535
    assert Address.parse(str(addr)) == addr


# ---------------------------------------------------------------------------------- address text


@pytest.mark.parametrize("addr, host", [
    ("127.0.0.1:7946", "127.0.0.1"), ("[::1]:7946", "::1"), ("[fe80::1%lo]:80", "fe80::1"),
    ("ws://Node1.Example:8080/gossip", "node1.example"), ("wss://user@[::1]:443/x?y#z", "::1"),
    ("n12", "n12"), ("::1", "::1"), ("mem-3", "mem-3"),
])
def test_host_of_is_what_one_source_controls(addr: str, host: str) -> None:
    assert host_of(addr) == host


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("10.0.0.1", False), ("0.0.0.0", False), ("example.com", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_ip_port_text_round_trips() -> None:
    assert split_ip_port("127.0.0.1:80") == ("127.0.0.1", 80, 4)
    assert split_ip_port("[::1]:0") == ("::1", 0, 6)
    for bad in ("localhost:80", "::1:80", "127.0.0.1", "127.0.0.1:65536", ":80"):
        with pytest.raises(AddressError):
            split_ip_port(bad)
    assert format_addr("::ffff:127.0.0.2", 9) == "127.0.0.2:9"
    assert format_addr("fe80::1%eth0", 9) == "[fe80::1]:9"
    assert plain_ip("::ffff:127.0.0.2") == "127.0.0.2" and plain_ip("") == ""
    assert is_websocket_url("WSS://h/x") and is_websocket_url("ws://h") and not is_websocket_url("http://h")
    assert not is_websocket_url(None)

# ---------------------------------------------------------------------------------- Go's Address


def test_str_is_gos_string_where_it_can_be_parsed_back() -> None:
    # paularlott's Address.String(): "ip:port", then the URL; an address here holds one of them.
    assert str(Address.parse("127.0.0.1:8000")) == "127.0.0.1:8000"
    assert str(Address.parse("node-1:9000")) == "node-1:9000"
    assert str(Address.parse("ws://127.0.0.1:8080/gossip")) == "ws://127.0.0.1:8080/gossip"
    assert f"{Address.parse('127.0.0.1:8000')}" == "127.0.0.1:8000"
    # Where Go's form is ambiguous it keeps the parseable one: Go writes "::1:8000".
    assert str(Address.parse("[::1]:8000")) == "[::1]:8000"
    assert Address.parse(str(Address.parse("[::1]:8000"))) == Address("ip", "::1", 8000)


def test_the_empty_address() -> None:
    import gossip
    from gossip.address import EMPTY_ADDRESS

    assert gossip.EMPTY_ADDRESS is EMPTY_ADDRESS and gossip.Address is Address
    assert EMPTY_ADDRESS.is_empty and not EMPTY_ADDRESS and str(EMPTY_ADDRESS) == ""
    assert Address("", "", 0) == EMPTY_ADDRESS and hash(Address("", "", 0)) == hash(EMPTY_ADDRESS)
    for text in ("127.0.0.1:1", "host", "srv+_g._tcp.example.com", "ws://127.0.0.1/x"):
        addr = Address.parse(text)
        assert not addr.is_empty and addr
    # Only all-empty fields make the empty address.
    for fields in (("", "h", 1), ("", "", 1), ("", "", 0, "ws://h/")):
        with pytest.raises(AddressError, match="or all fields empty"):
            Address(*fields)  # type: ignore[arg-type]
    with pytest.raises(AddressError):
        Address.parse("")     # parsing still refuses empty text


def test_addresses_are_immutable_and_the_empty_constant_replaces_clear() -> None:
    addr = Address.parse("127.0.0.1:8000")
    assert not hasattr(addr, "clear")
    with pytest.raises(dataclasses.FrozenInstanceError):
        addr.host = ""  # type: ignore[misc]
    from gossip.address import EMPTY_ADDRESS

    addr = EMPTY_ADDRESS          # what Go's addr.Clear() does
    assert addr.is_empty and dataclasses.replace(Address.parse("h:1"), kind="", host="", port=0).is_empty
