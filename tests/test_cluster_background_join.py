"""``Cluster.join(peers, background=True)`` end to end: on the in-memory transport, and once on
loopback sockets. Waits are bounded polls; nothing asserts on wall-clock speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gossip import Cluster, Config, JoinAttemptFailed, JoinSucceeded, NodeState
from gossip.errors import ClusterClosed, JoinError, TransportError
from gossip.joining import JOIN_IDLE, JOIN_JOINED, JOIN_JOINING, JOIN_STOPPED
from gossip.transports.memory import MemoryNetwork

FAST = dict(join_retry_interval=0.02, join_retry_max_interval=0.1, join_timeout=1.0)


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.01)


class Events:
    """Cluster events as a handler receives them."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen: list[object] = []
        cluster.handle_cluster_event_func(self.seen.append)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in list(self.seen) if isinstance(e, kind)]


class LateResolver:
    """A resolver that knows ``name`` only once :attr:`ready` is set (then as ``ip``)."""

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name, self.ip, self.port = name, ip, port
        self.ready = threading.Event()
        self.lookups: list[str] = []

    def lookup_ip(self, host: str) -> list[str]:
        self.lookups.append(host)
        if host != self.name or not self.ready.is_set():
            raise TransportError(f"cannot resolve {host!r}: no such host")
        return [self.ip]

    def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        self.lookups.append(name)
        if name != self.name or not self.ready.is_set():
            raise TransportError(f"cannot resolve SRV {name!r}: NXDOMAIN")
        return [(self.ip, self.port)]


@pytest.fixture
def net() -> Iterator[MemoryNetwork]:
    yield MemoryNetwork(seed=5)


def test_join_returns_at_once_and_joins_a_seed_that_comes_up_later(net: MemoryNetwork) -> None:
    seed_transport = net.new_transport()  # its address is known; nothing listens there yet
    with Cluster(Config.local(transport=net.new_transport(), **FAST)) as a:
        events = Events(a)
        assert a.join_status().state == JOIN_IDLE
        status = a.join([seed_transport.local_addr], background=True)
        assert status.state == JOIN_JOINING and status.peers == (seed_transport.local_addr,)
        wait_until(lambda: len(events.of(JoinAttemptFailed)) >= 3, "three attempts failed")
        failed = events.of(JoinAttemptFailed)
        assert all(seed_transport.local_addr in e.reason for e in failed)
        assert a.join_status().state == JOIN_JOINING and a.join_status().last_error
        assert a.num_alive_nodes() == 1
        with Cluster(Config.local(transport=seed_transport)) as seed:
            wait_until(lambda: a.join_status().state == JOIN_JOINED, "the late seed is joined")
            wait_until(lambda: seed.num_alive_nodes() == 2 and a.num_alive_nodes() == 2,
                       "both see each other")
            wait_until(lambda: bool(events.of(JoinSucceeded)), "the event reached the handler")
            ok = events.of(JoinSucceeded)
            assert len(ok) == 1 and ok[0].joined == (seed_transport.local_addr,)
            assert ok[0].attempt > len(failed) and not ok[0].rejoin
            status = a.join_status()
            assert status.joined == (seed_transport.local_addr,) and status.last_error == ""
    assert a.join_status().state == JOIN_STOPPED


@pytest.mark.parametrize("peer", ["seed.test:7946", "srv+_gossip._tcp.seed.test"])
def test_a_name_that_resolves_only_later_is_resolved_again_and_joined(net: MemoryNetwork,
                                                                       peer: str) -> None:
    with Cluster(Config.local(transport=net.new_transport())) as seed:
        name = peer.removeprefix("srv+").split(":")[0]
        ip, port = seed.address.split(":")
        resolver = LateResolver(name, ip, int(port))
        with Cluster(Config.local(transport=net.new_transport(), resolver=resolver, **FAST)) as a:
            events = Events(a)
            a.join(peer, background=True)
            wait_until(lambda: len(events.of(JoinAttemptFailed)) >= 2, "two attempts failed")
            assert peer in events.of(JoinAttemptFailed)[0].failures
            assert resolver.lookups.count(name) >= 2  # looked up again at each attempt
            resolver.ready.set()
            wait_until(lambda: a.join_status().state == JOIN_JOINED, "joined once it resolves")
            wait_until(lambda: a.num_alive_nodes() == 2, "a sees the seed")
            wait_until(lambda: bool(events.of(JoinSucceeded)), "the event reached the handler")
            assert events.of(JoinSucceeded)[0].joined == (peer,)


def test_stop_does_not_wait_for_a_join_under_way(net: MemoryNetwork) -> None:
    entered = threading.Event()
    release = threading.Event()

    class Blocking(LateResolver):
        def lookup_ip(self, host: str) -> list[str]:
            entered.set()
            release.wait(60)  # a name lookup that hangs
            raise TransportError("timed out")

    a = Cluster(Config.local(transport=net.new_transport(), resolver=Blocking("x", "", 0), **FAST))
    a.start()
    a.join("seed.test", background=True)
    assert entered.wait(10)
    joiner = a._engine.seeds.thread
    assert joiner is not None
    stopped = threading.Event()
    threading.Thread(target=lambda: (a.stop(timeout=3600.0), stopped.set()), daemon=True).start()
    try:
        # stop() returns while the lookup still hangs: it never waits for the join.
        wait_until(stopped.is_set, "stop() returns while the join is blocked")
        assert joiner.is_alive() and not release.is_set()
        assert a.join_status().state == JOIN_STOPPED
    finally:
        release.set()
    wait_until(lambda: not joiner.is_alive(), "the join thread ends once the lookup returns")
    with pytest.raises(ClusterClosed):
        a.join("seed.test", background=True)


def test_a_node_that_loses_every_peer_goes_back_to_its_seeds(net: MemoryNetwork) -> None:
    quick = dict(health_check_interval=0.2, ping_timeout=0.1, suspicion_mult=1,
                 recovery_attempt_interval=3600.0, reconnect_interval=0, **FAST)
    with Cluster(Config.local(transport=net.new_transport(), **quick)) as seed, \
            Cluster(Config.local(transport=net.new_transport(), **quick)) as a:
        events = Events(a)
        a.join(seed.address, background=True)
        wait_until(lambda: a.join_status().state == JOIN_JOINED, "joined")
        net.partition([a.address], [seed.address])
        wait_until(lambda: (n := a.get_node(seed.local_node().id)) is not None
                   and n.state is NodeState.DEAD, "a declares the seed dead")
        wait_until(lambda: any(e.rejoin for e in events.of(JoinAttemptFailed)),
                   "a re-join attempt fails while the partition lasts")
        assert a.join_status().state == "rejoining" and a.join_status().rejoins == 1
        net.heal()
        wait_until(lambda: any(e.rejoin for e in events.of(JoinSucceeded)), "re-joined")
        wait_until(lambda: a.get_node(seed.local_node().id).state is NodeState.ALIVE,  # type: ignore[union-attr]
                   "the seed is alive again")
        assert a.join_status().state == JOIN_JOINED


def test_a_node_that_leaves_stops_joining(net: MemoryNetwork) -> None:
    with Cluster(Config.local(transport=net.new_transport(), **FAST)) as a:
        a.join("127.77.250.1:7946", background=True)  # nobody there
        wait_until(lambda: a.join_status().attempts >= 2, "attempts go on")
        a.leave()
        assert a.join_status().state == JOIN_STOPPED
        with pytest.raises(JoinError):
            a.join([" "], background=True)


def test_on_loopback_a_background_join_finds_a_seed_named_later() -> None:
    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as seed:
        ip, port = seed.address.split(":")
        resolver = LateResolver("seed.test", ip, int(port))
        with Cluster(Config.local(bind_addr="127.0.0.1:0", resolver=resolver, **FAST)) as a:
            events = Events(a)
            a.join(f"seed.test:{port}", background=True)
            wait_until(lambda: len(events.of(JoinAttemptFailed)) >= 1, "an attempt failed")
            assert "cannot resolve" in events.of(JoinAttemptFailed)[0].reason
            resolver.ready.set()
            wait_until(lambda: a.join_status().state == JOIN_JOINED, "joined once it resolves")
            wait_until(lambda: seed.num_alive_nodes() == 2 and a.num_alive_nodes() == 2,
                       "the two nodes see each other")
