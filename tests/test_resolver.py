"""Tests of :mod:`gossip.resolver` with a fake resolver (no real DNS) and localhost."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from gossip.errors import AddressError, TransportError
from gossip.resolver import DefaultResolver, Resolver, resolve_peer


class FakeResolver:
    """Scripted answers; unknown names raise TransportError like a failed lookup."""

    def __init__(
        self,
        hosts: dict[str, list[str]] | None = None,
        srv: dict[str, list[tuple[str, int]]] | None = None,
    ) -> None:
        self.hosts = hosts or {}
        self.srv = srv or {}
        self.calls: list[str] = []

    def lookup_ip(self, host: str) -> list[str]:
        self.calls.append(host)
        if host not in self.hosts:
            raise TransportError(f"cannot resolve {host!r}")
        return self.hosts[host]

    def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        self.calls.append("srv:" + name)
        if not name:
            raise AddressError("empty")
        if name not in self.srv:
            raise TransportError(f"no SRV for {name!r}")
        return self.srv[name]


def test_fake_is_a_resolver() -> None:
    assert isinstance(FakeResolver(), Resolver)
    assert isinstance(DefaultResolver(), Resolver)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.10.1:9000", ["127.0.10.1:9000"]),
        ("127.0.10.1", ["127.0.10.1:3500"]),
        ("[::1]:80", ["[::1]:80"]),
        ("::1", ["[::1]:3500"]),
        ("8081", ["127.0.0.1:8081"]),
        ("ws://example.com:81/g", ["ws://example.com:81/g"]),
        ("https://example.com/g", ["https://example.com/g"]),
        ("http://127.0.0.1:81/gossip", ["http://127.0.0.1:81/gossip"]),
    ],
)
def test_literals_and_urls_need_no_lookup(text: str, expected: list[str]) -> None:
    fake = FakeResolver()
    assert resolve_peer(text, fake, 3500) == expected
    assert fake.calls == []


def test_srv_url_gives_one_url_per_target() -> None:
    fake = FakeResolver(srv={"_gossip._tcp.example": [("127.0.10.5", 8443), ("::ffff:7f00:905", 9443)]})
    assert resolve_peer("srv+wss://_gossip._tcp.example/gossip", fake, 3500) == [
        "wss://127.0.10.5:8443/gossip",
        "wss://[::ffff:7f00:905]:9443/gossip",
    ]
    assert fake.calls == ["srv:_gossip._tcp.example"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("ws://127.0.0.1:99999/gossip", "port 99999 is outside"),
        ("wss://:443/gossip", "no host"),
        ("ws://user@host/gossip", "user info"),
        ("ftp://host/gossip", "unsupported scheme 'ftp'"),
        ("srv+wss://", "URL has no host"),
    ],
)
def test_malformed_urls_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why):
        resolve_peer(text, FakeResolver(), 3500)


def test_hostname_gives_every_address() -> None:
    fake = FakeResolver(hosts={"node.example": ["127.0.10.1", "127.0.10.2", "::ffff:7f00:901", "127.0.10.1"]})
    assert resolve_peer("node.example:7000", fake, 3500) == [
        "127.0.10.1:7000",
        "127.0.10.2:7000",
        "[::ffff:7f00:901]:7000",
    ]
    assert resolve_peer("node.example", fake, 4000)[0] == "127.0.10.1:4000"


def test_srv_records() -> None:
    fake = FakeResolver(srv={"_gossip._udp.example": [("127.0.10.5", 7946), ("::ffff:7f00:905", 7947)]})
    assert resolve_peer("srv+_gossip._udp.example", fake, 3500) == [
        "127.0.10.5:7946",
        "[::ffff:7f00:905]:7947",
    ]


def test_failures_name_the_peer() -> None:
    fake = FakeResolver(hosts={"bad.example": ["not-an-ip"], "none.example": []})
    with pytest.raises(TransportError, match="missing.example"):
        resolve_peer("missing.example", fake, 3500)
    with pytest.raises(TransportError, match="bad.example"):
        resolve_peer("bad.example", fake, 3500)
    with pytest.raises(TransportError, match="none.example"):
        resolve_peer("none.example", fake, 3500)
    with pytest.raises(TransportError, match="srv\\+_x._tcp.example"):
        resolve_peer("srv+_x._tcp.example", fake, 3500)


@pytest.mark.parametrize("text", ["", "   ", "srv+", "127.1.2.4:99999", "[::1", "ftp://x", "a b"])
def test_bad_strings(text: str) -> None:
    with pytest.raises(AddressError):
        resolve_peer(text, FakeResolver(), 3500)


def _fake_getaddrinfo(table: dict[bytes, list[tuple[int, str]]], calls: list[object]) -> Any:
    """A stand-in for :func:`socket.getaddrinfo` answering from ``table`` (no system resolver)."""
    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple[Any, ...]]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(fam, socket.SOCK_STREAM, 6, "", (ip, 0) if fam == socket.AF_INET else (ip, 0, 0, 0))
                for fam, ip in table[host]]
    return getaddrinfo


def test_default_resolver_orders_and_deduplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    table = {b"db.internal": [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1"),
                              (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "fe80::1%eth0"),
                              (socket.AF_INET, "127.0.0.2")]}
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(table, calls))
    assert DefaultResolver().lookup_ip("db.internal") == ["127.0.0.1", "127.0.0.2", "::1", "fe80::1"]
    assert DefaultResolver(prefer_ipv6=True).lookup_ip("db.internal") == [
        "::1", "fe80::1", "127.0.0.1", "127.0.0.2"]
    assert resolve_peer("db.internal:7000", DefaultResolver(), 3500)[0] == "127.0.0.1:7000"
    assert calls == [b"db.internal"] * 3        # an ASCII name goes as bytes (no idna codec)


def test_default_resolver_takes_a_literal_without_a_lookup() -> None:
    assert DefaultResolver().lookup_ip("127.0.0.1") == ["127.0.0.1"]
    assert DefaultResolver().lookup_ip("::1") == ["::1"]


def test_default_resolver_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AddressError):
        DefaultResolver().lookup_ip("")
    with pytest.raises(AddressError):
        DefaultResolver().lookup_srv("")
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo({}, []))
    with pytest.raises(TransportError, match="cannot resolve 'no-such-host.invalid'"):
        DefaultResolver().lookup_ip("no-such-host.invalid")


class _Target:
    def __init__(self, text: str) -> None:
        self.text = text

    def to_text(self, omit_final_dot: bool = False) -> str:
        return self.text.rstrip(".") if omit_final_dot and self.text != "." else self.text


class _Srv:
    def __init__(self, priority: int, weight: int, port: int, target: str) -> None:
        self.priority, self.weight, self.port = priority, weight, port
        self.target = _Target(target)


def test_default_resolver_srv_skips_port_zero_and_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    records = [
        _Srv(10, 5, 7946, "b.example."),
        _Srv(1, 5, 0, "zero.example."),
        _Srv(1, 5, 7000, "."),
        _Srv(5, 5, 7001, "a.example."),
        _Srv(20, 5, 7002, "unresolvable.example."),
    ]
    monkeypatch.setattr(dns.resolver, "resolve", lambda name, rdtype: records)
    res = DefaultResolver()
    table = {"a.example": ["127.0.10.1"], "b.example": ["127.0.10.2", "::ffff:7f00:902"]}

    def fake_ip(host: str) -> list[str]:
        if host not in table:
            raise TransportError(f"cannot resolve {host!r}")
        return table[host]

    monkeypatch.setattr(res, "lookup_ip", fake_ip)
    assert res.lookup_srv("_g._udp.example") == [
        ("127.0.10.1", 7001),
        ("127.0.10.2", 7946),
        ("::ffff:7f00:902", 7946),
    ]
    assert resolve_peer("srv+_g._udp.example", res, 3500) == [
        "127.0.10.1:7001",
        "127.0.10.2:7946",
        "[::ffff:7f00:902]:7946",
    ]
    monkeypatch.setattr(dns.resolver, "resolve", lambda name, rdtype: records[1:3])
    with pytest.raises(TransportError, match="_g._udp.example"):
        res.lookup_srv("_g._udp.example")


def test_default_resolver_srv_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    def fail(name: str, rdtype: str) -> object:
        raise dns.resolver.NXDOMAIN()  # type: ignore[no-untyped-call]

    monkeypatch.setattr(dns.resolver, "resolve", fail)
    with pytest.raises(TransportError, match="_g._udp.example"):
        resolve_peer("srv+_g._udp.example", DefaultResolver(), 3500)
