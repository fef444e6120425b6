"""The address a node bound to every interface advertises (gossip.transports.interfaces).

The rules run on table texts given here: nothing reads this machine's interfaces, nothing is
bound beyond loopback and nothing is sent. The documentation prefixes (192.0.2.0/24, 2001:db8::/32)
stand for real networks; they only appear as text.
"""

from __future__ import annotations

import pytest

import gossip
from gossip.errors import ConfigError
from gossip.transports import interfaces
from gossip.transports.interfaces import (
    choose_advertise_host,
    default_route_interface,
    ipv6_default_route_interface,
    ipv6_interface_address,
)

ROUTE = """\
Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
wlan0	00000000	010200C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	010200C0	0003	0	0	100	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	100	00FFFFFF	0	0	0
"""
NO_DEFAULT = ROUTE.splitlines()[0] + "\n" + ROUTE.splitlines()[1] + "\n"
DOWN = ROUTE.splitlines()[0] + "\neth1\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"

IPV6_ROUTE = """\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000003 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
20010db8000000000000000000000042 02 40 00 80     eth0
"""
ADDRS = {"eth0": "192.0.2.10", "wlan0": "192.0.2.77", "docker0": "172.17.0.1", "lo": "127.0.0.1"}


def tables(**texts: str):  # type: ignore[no-untyped-def]
    return lambda name: texts.get(name, "")


def test_the_default_route_of_lowest_metric_wins() -> None:
    assert default_route_interface(ROUTE) == "eth0"
    assert default_route_interface(NO_DEFAULT) is None
    assert default_route_interface(DOWN) is None          # not up
    assert default_route_interface("") is None
    assert default_route_interface("garbage\nline with few columns\n") is None


def test_ipv6_tables() -> None:
    assert ipv6_default_route_interface(IPV6_ROUTE) == "eth0"
    assert ipv6_interface_address(IF_INET6, "eth0") == "2001:db8::42"    # global, not link-local
    assert ipv6_interface_address(IF_INET6, "wlan0") is None


def test_every_interface_advertises_the_default_route_interface_address() -> None:
    assert choose_advertise_host("0.0.0.0", tables(route=ROUTE), ADDRS.get) == "192.0.2.10"
    assert choose_advertise_host("::", tables(route=ROUTE, ipv6_route=IPV6_ROUTE, if_inet6=IF_INET6),
                                 ADDRS.get) == "2001:db8::42"
    # IPv6 bound but no IPv6 default route: the IPv4 one.
    assert choose_advertise_host("::", tables(route=ROUTE), ADDRS.get) == "192.0.2.10"


@pytest.mark.parametrize("read, addrs", [
    (tables(route=NO_DEFAULT), ADDRS),
    (tables(), ADDRS),
    (tables(route=ROUTE), {}),                                # the interface has no IPv4 address
    (tables(route=ROUTE), {"eth0": "127.0.0.1"}),             # never loopback
])
def test_no_default_route_refuses_and_says_to_set_the_advertise_address(read, addrs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        choose_advertise_host("0.0.0.0", read, addrs.get)
    assert info.value.field == "advertise_addr"
    assert "set advertise_addr" in str(info.value) and "--advertise" in str(info.value)


def test_a_cluster_bound_everywhere_without_a_route_refuses_to_start_before_binding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def no_route(host: str) -> str:
        asked.append(host)
        return choose_advertise_host(host, tables(), ADDRS.get)

    monkeypatch.setattr(interfaces, "advertise_host", no_route)
    cluster = gossip.Cluster(gossip.Config.local(bind_addr="0.0.0.0:0", insecure=True))
    with pytest.raises(ConfigError, match="advertise_addr"):
        cluster.start()
    assert asked == ["0.0.0.0"]
    assert cluster.local_node().address == ""          # nothing was bound
    cluster.stop()


def test_an_advertise_address_or_a_specific_bind_address_is_never_replaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(host: str) -> str:
        raise AssertionError("not asked for a specific bind address")

    monkeypatch.setattr(interfaces, "advertise_host", fail)
    with gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as c:
        assert c.address.startswith("127.0.0.1:")


@pytest.mark.parametrize("local, host, advertised", [
    ("0.0.0.0:7946", "192.0.2.10", "192.0.2.10:7946"),
    ("[::]:41000", "2001:db8::42", "[2001:db8::42]:41000"),
    ("ws://127.0.0.1:8080/gossip", "192.0.2.10", "ws://192.0.2.10:8080/gossip"),
    ("wss://127.0.0.1:8443/g", "2001:db8::42", "wss://[2001:db8::42]:8443/g"),
])
def test_the_bound_port_and_url_keep_everything_but_the_host(local: str, host: str, advertised: str) -> None:
    from gossip.cluster import _with_host

    assert _with_host(local, host) == advertised
