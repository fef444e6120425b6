"""Multicast discovery on loopback: nodes with no seeds find each other; strangers (another
label, another key, a forger) are ignored. Every datagram stays on this host: the group is
joined on 127.0.0.1 with a TTL of 0. Skipped where the kernel does not loop multicast back on
the loopback interface."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import gossip_netguard as netguard
import pytest

from gossip import Cluster, Config
from gossip.announce import encode
from gossip.engine.discovery import parse_multicast_seed
from gossip.errors import AddressError, JoinError, TransportError

from . import wait_until

GROUP = "239.255.78.46"   # declared to the network guard below: TTL 0 keeps it on this host
KEY, OTHER_KEY = b"m" * 16, b"n" * 16


def _loopback_multicast() -> str:
    """Return why multicast cannot be tested on loopback here ("" if it can)."""
    try:
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:  # pragma: no cover
        return str(exc)
    with r, s, netguard.allow(f"{GROUP}/32"):
        try:
            r.bind((GROUP, 0))
            r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("127.0.0.1")))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
            s.sendto(b"probe", (GROUP, r.getsockname()[1]))
            r.settimeout(2.0)
            r.recvfrom(16)
        except OSError as exc:
            return f"no multicast on the loopback interface: {exc}"
    return ""


_WHY = _loopback_multicast()
pytestmark = [pytest.mark.skipif(bool(_WHY), reason=_WHY or ""),
              pytest.mark.allow_network(f"{GROUP}/32")]


def mcast(**kw: object) -> Config:
    base: dict[str, object] = dict(bind_addr="127.0.0.1:0", discovery="multicast",
                                   multicast_group=GROUP, multicast_interface="127.0.0.1",
                                   multicast_ttl=0, multicast_interval=0.1)
    base.update(kw)
    return Config.local(**base)


def port_of(c: Cluster) -> int:
    return next(iter(c._engine.discoveries.values())).sock.port


def stat(c: Cluster, name: str) -> int:
    return c.stats().get(name, 0)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def start(stack: ExitStack, cfg: Config) -> Cluster:
    return stack.enter_context(Cluster(cfg))


def test_two_nodes_with_no_seeds_find_each_other(stack: ExitStack) -> None:
    a = start(stack, mcast(multicast_port=0))       # port 0: a free one, then shared
    # b names no interface: the host of its bind address (127.0.0.1) is the one.
    b = start(stack, mcast(multicast_port=port_of(a), multicast_interface=""))
    wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10,
               "the two nodes joined through multicast")
    assert stat(a, "discovery.announced") > 0 and stat(b, "discovery.announced") > 0
    assert stat(a, "discovery.heard") + stat(b, "discovery.heard") >= 1
    assert stat(a, "discovery.joins") + stat(b, "discovery.joins") >= 1


def test_a_node_of_another_label_is_ignored(stack: ExitStack) -> None:
    a = start(stack, mcast(multicast_port=0, cluster_label="blue"))
    port = port_of(a)
    b = start(stack, mcast(multicast_port=port, cluster_label="blue"))
    red = start(stack, mcast(multicast_port=port, cluster_label="red"))
    wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10, "blue converged")
    wait_until(lambda: stat(red, "discovery.refused_label") >= 4 and stat(a, "discovery.refused_label") >= 2,
               10, "each side heard the other label several times")
    assert red.num_alive_nodes() == 1 and a.num_alive_nodes() == 2
    assert stat(red, "discovery.joins") == 0


def test_keyed_clusters_join_only_their_own_and_refuse_a_forger(stack: ExitStack) -> None:
    a = start(stack, mcast(multicast_port=0, encryption_key=KEY))
    port = port_of(a)
    b = start(stack, mcast(multicast_port=port, encryption_key=KEY))
    other = start(stack, mcast(multicast_port=port, encryption_key=OTHER_KEY))
    plain = start(stack, mcast(multicast_port=port))
    wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10, "keyed pair")
    wait_until(lambda: stat(a, "discovery.refused_cluster") >= 2
               and stat(a, "discovery.refused_unauthenticated") >= 2, 10, "strangers refused")
    assert other.num_alive_nodes() == 1 and plain.num_alive_nodes() == 1
    # A forger that knows the label but not the key: an announcement under its own key, and
    # one whose MAC it cannot make (a keyed announcement of a member, its address changed).
    joins = stat(a, "discovery.joins")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        real = bytearray(encode(bytes(16), b.address, time.time(), "", KEY))
        i = real.index(b.address.encode())
        real[i + 8] = ord("9")                       # 127.0.0.9:...: another (loopback) host
        before = stat(a, "discovery.refused_unauthenticated")
        s.sendto(bytes(real), (GROUP, port))
        wait_until(lambda: stat(a, "discovery.refused_unauthenticated") > before, 10,
                   "the forged announcement was refused")
    assert stat(a, "discovery.joins") == joins


def test_an_unkeyed_announcement_for_another_host_is_not_believed(stack: ExitStack) -> None:
    a = start(stack, mcast(multicast_port=0, multicast_interval=60.0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        s.bind(("127.0.0.1", 0))
        s.sendto(encode(bytes(16), "127.0.0.2:7946", time.time(), "", None), (GROUP, port_of(a)))
        wait_until(lambda: stat(a, "discovery.refused_source") == 1, 10, "refused")
    assert stat(a, "discovery.joins") == 0


def test_an_mcast_seed_joins_through_the_group(stack: ExitStack) -> None:
    a = start(stack, mcast(multicast_port=0))
    b = start(stack, Config.local(bind_addr="127.0.0.1:0", multicast_interface="127.0.0.1",
                                  multicast_ttl=0, multicast_interval=0.1))
    seed = f"mcast://{GROUP}:{port_of(a)}"
    outcome = b.join(seed, timeout=10.0)
    assert outcome == 1 and outcome.joined == (seed,)
    wait_until(lambda: a.num_alive_nodes() == 2, 10, "a sees b")
    # The same group again is the same discovery; a bad group is refused with why.
    assert b.join([seed], background=True).state == "idle"
    with pytest.raises(JoinError, match="expected mcast://"):
        b.join("mcast://127.0.0.1:1")


def test_a_lone_mcast_seed_fails_the_join_in_time(stack: ExitStack) -> None:
    lone = start(stack, Config.local(bind_addr="127.0.0.1:0", multicast_interface="127.0.0.1",
                                     multicast_ttl=0, multicast_interval=0.1))
    with pytest.raises(JoinError, match="no member of this cluster announced itself"):
        lone.join(f"mcast://{GROUP}:0", timeout=0.5)


def test_multicast_seeds_parse() -> None:
    assert parse_multicast_seed("mcast://239.1.2.3:7000", 7947) == ("239.1.2.3", 7000)
    assert parse_multicast_seed("mcast://239.1.2.3/", 7947) == ("239.1.2.3", 7947)
    for bad in ("mcast://10.0.0.1:1", "mcast://239.1.2.3:x", "mcast://239.1.2.3:70000"):
        with pytest.raises(AddressError):
            parse_multicast_seed(bad, 7947)


def test_a_group_that_cannot_be_joined_fails_the_start_and_leaves_nothing_open() -> None:
    before = {t.name for t in threading.enumerate()}
    c = Cluster(mcast(multicast_port=0, multicast_interface="192.0.2.1"))  # no such interface here
    with pytest.raises(TransportError, match="cannot join multicast group"):
        c.start()
    c.stop()
    wait_until(lambda: not ({t.name for t in threading.enumerate()} - before), 10,
               "every thread of the failed start ended")
