"""The suite's network guard refuses, and reports, every attempt to reach past loopback.

The destinations tried here cannot leave the machine even if the guard failed: a multicast
group with a hop limit of 0 for datagrams (the kernel keeps them on the host), a TCP dial to a
multicast address (refused by the local stack before any segment), and the name ``localhost``
(answered from the hosts file).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

import gossip_netguard as netguard
from gossip.errors import GossipError
from gossip.transports.socket import SocketTransport

GROUP = "239.255.77.1"   # organisation-local multicast; TTL 0 keeps it on this host


@pytest.fixture
def reports() -> Iterator[Callable[[], list[str]]]:
    """Read (and clear) what the guard recorded, so that this test's own refusals do not fail it."""
    yield netguard.take_reports
    netguard.take_reports()


def _udp_ttl0() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    return s


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.255.3.4", True), ("::1", True), ("[::1]", True),
    ("::ffff:127.0.0.9", True), ("10.0.0.1", False), ("0.0.0.0", False), ("::", False),
    ("128.0.0.1", False), ("fe80::1%lo", False), ("localhost", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert netguard.is_loopback(host) is expected


@pytest.mark.parametrize("addr, expected", [
    ("127.0.0.1:80", ("127.0.0.1", "80")), ("[::1]:7946", ("::1", "7946")),
    ("ws://127.0.0.2:9/gossip", ("127.0.0.2", "9")), ("wss://[::1]:443/x", ("::1", "443")),
    ("127.1.2.3", ("127.1.2.3", "?")),
])
def test_split_address(addr: str, expected: tuple[str, str]) -> None:
    assert netguard.split_address(addr) == expected


def test_sendto_off_loopback_is_refused_and_reported(reports: Callable[[], list[str]]) -> None:
    with _udp_ttl0() as s:
        with pytest.raises(netguard.OffLoopbackError, match=GROUP):
            s.sendto(b"x", (GROUP, 9))
        with pytest.raises(netguard.OffLoopbackError):
            s.sendto(b"x", 0, (GROUP, 9))
        with pytest.raises(netguard.OffLoopbackError):
            s.sendmsg([b"x"], [], 0, (GROUP, 9))
        s.sendto(b"x", ("127.0.0.1", 9))          # loopback passes
    got = reports()
    assert len(got) == 3 and all(f"{GROUP} port 9" in line for line in got)


def test_connect_off_loopback_is_refused_and_reported(reports: Callable[[], list[str]]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(netguard.OffLoopbackError):
            s.connect((GROUP, 80))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(netguard.OffLoopbackError):
            s.connect_ex((GROUP, 81))
    got = reports()
    assert [line.split(" to ")[0].split()[-1] for line in got] == ["connect", "connect_ex"]


def test_a_name_lookup_is_refused_unless_declared(reports: Callable[[], list[str]]) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("localhost", 80)
    with pytest.raises(socket.gaierror):
        socket.create_connection(("localhost", 80), timeout=1)
    assert len(reports()) == 2
    assert socket.getaddrinfo("127.0.0.1", 80)          # a literal is no lookup
    with netguard.allow_names():
        assert socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert reports() == []


def test_a_declared_network_is_allowed_only_inside_its_block(reports: Callable[[], list[str]]) -> None:
    with _udp_ttl0() as s:
        with netguard.allow("239.255.77.0/24"):
            s.sendto(b"x", (GROUP, 9))                  # TTL 0: stays on this host
        with pytest.raises(netguard.OffLoopbackError):
            s.sendto(b"x", (GROUP, 9))
    assert len(reports()) == 1


@pytest.mark.allow_network("239.255.77.0/24")
def test_the_marker_declares_a_network() -> None:
    with _udp_ttl0() as s:
        s.sendto(b"x", (GROUP, 9))


def test_the_transport_entry_points_name_the_address(reports: Callable[[], list[str]]) -> None:
    t = SocketTransport("127.0.0.1:0")
    t.start(lambda batch: None)
    try:
        for call in (lambda: t.send(f"{GROUP}:9", b"x"),
                     lambda: t.send(f"{GROUP}:9", b"x", reliable=True, timeout=1.0),
                     lambda: t.dial_stream(f"{GROUP}:9", 1.0)):
            with pytest.raises((netguard.OffLoopbackError, GossipError)):
                call()
    finally:
        t.close()
    got = reports()
    assert len(got) == 3 and all("SocketTransport." in line and GROUP in line for line in got)


def test_a_child_process_is_guarded_and_reports(reports: Callable[[], list[str]]) -> None:
    code = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        try:
            s.sendto(b"x", ({GROUP!r}, 9))
        except PermissionError as e:
            print("refused:", e)
            sys.exit(3)
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=netguard.child_env())
    assert done.returncode == 3, done.stdout + done.stderr
    got = reports()
    assert len(got) == 1 and GROUP in got[0] and "[pid " in got[0]


def test_a_child_started_inside_an_allow_block_may_reach_its_network(
        reports: Callable[[], list[str]]) -> None:
    # The chaos harness's nodes run in network namespaces the test makes: they are the suite's
    # grandchildren and must be allowed what the test declared, and nothing more.
    code = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        try:
            s.sendto(b"x", ({GROUP!r}, 9))
        except PermissionError as e:
            print("refused:", e)
            sys.exit(3)
        try:
            s.sendto(b"x", ("239.255.78.1", 9))
        except PermissionError as e:
            sys.exit(0)
        sys.exit(4)
    """)

    def child() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=netguard.child_env())

    with netguard.allow("239.255.77.0/24"):
        inside = child()
        with netguard.allow("239.255.77.0/25", transport_only=True):
            assert netguard.child_env()[netguard.ALLOW_ENV] == "239.255.77.0/24"   # not transport-only ones
    assert inside.returncode == 0, inside.stdout + inside.stderr
    got = reports()
    assert len(got) == 1 and "239.255.78.1" in got[0]
    after = child()
    assert after.returncode == 3, after.stdout + after.stderr
    assert netguard.ALLOW_ENV not in netguard.child_env()
    assert len(reports()) == 1
