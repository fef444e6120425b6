"""Cluster behaviour end to end, on the in-memory transport (and once on real loopback sockets).

Waits are bounded polls (``wait_until``); nothing asserts on wall-clock speed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import gossip
from gossip import Cluster, Config, Node, NodeState, Packet
from gossip.transports.memory import MemoryNetwork

TIMEOUT = 10.0


def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll ``pred`` until true; fail clearly after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def mem_config(net: MemoryNetwork, **kw: object) -> Config:
    return Config.local(transport=net.new_transport(), **kw)


def sees_all(clusters: list[Cluster], state: NodeState = NodeState.ALIVE) -> bool:
    ids = [c.local_node().id for c in clusters]
    for c in clusters:
        for i in ids:
            n = c.get_node(i)
            if n is None or n.state is not state:
                return False
    return True


def make_cluster(net: MemoryNetwork | None, n: int, **kw: object) -> list[Cluster]:
    clusters = []
    for _ in range(n):
        cfg = mem_config(net, **kw) if net is not None else Config.local(bind_addr="127.0.0.1:0", **kw)
        c = Cluster(cfg)
        c.start()
        clusters.append(c)
    for c in clusters[1:]:
        assert c.join(clusters[0].address, timeout=5.0) == 1
    wait_until(lambda: sees_all(clusters), what=f"{n} nodes to converge")
    return clusters


@pytest.fixture
def five() -> Iterator[list[Cluster]]:
    net = MemoryNetwork(seed=1)
    # A short anti-entropy period bounds the tail of gossip dissemination in the tests.
    clusters = make_cluster(net, 5, state_sync_interval=2.0)
    yield clusters
    for c in clusters:
        c.stop(timeout=2.0)


def test_five_nodes_converge_on_memory(five: list[Cluster]) -> None:
    for c in five:
        assert c.num_nodes() == 5
        assert c.num_alive_nodes() == 5
        assert c.num_suspect_nodes() == 0 and c.num_dead_nodes() == 0
        assert c.local_node().alive()
        assert c.node_is_local(c.local_node())


@pytest.mark.integration
def test_five_nodes_converge_on_loopback_sockets() -> None:
    clusters = make_cluster(None, 5)
    try:
        got: dict[str, int] = {}
        lock = threading.Lock()

        def handler(name: str) -> Callable[[Node | None, Packet], None]:
            def fn(sender: Node | None, packet: Packet) -> None:
                with lock:
                    got[name] = got.get(name, 0) + 1
            return fn

        for i, c in enumerate(clusters):
            c.handle_func(gossip.USER_MSG, handler(str(i)))
        clusters[0].send(gossip.USER_MSG, b"x" * 3000)  # over the UDP limit: goes by TCP
        wait_until(lambda: len(got) == 4, what="broadcast over sockets")
    finally:
        for c in clusters:
            c.stop(timeout=2.0)


def test_broadcast_reaches_every_other_node_exactly_once(five: list[Cluster]) -> None:
    counts: dict[int, int] = {}
    senders: list[Node | None] = []
    lock = threading.Lock()

    def handler(i: int) -> Callable[[Node | None, Packet], None]:
        def fn(sender: Node | None, packet: Packet) -> None:
            assert packet.unmarshal() == {"n": 1}
            with lock:
                counts[i] = counts.get(i, 0) + 1
                senders.append(sender)
        return fn

    for i, c in enumerate(five):
        c.handle_func(gossip.USER_MSG, handler(i))
    five[0].send(gossip.USER_MSG, {"n": 1})
    wait_until(lambda: len(counts) == 4, what="broadcast to reach 4 nodes")
    # With 5 nodes every receiver relays to the 3 others (the fan-out covers them all), so 12
    # copies arrive after the first one at each node: wait for all of them, then check that
    # every one was recognised as a duplicate and none reached a handler.
    def stat(name: str) -> int:
        return sum(c.stats().get(name, 0) for c in five)

    wait_until(lambda: stat("user.duplicates") == 12, what="the 12 relayed copies")
    assert stat("user.received") == 4
    assert counts == {1: 1, 2: 1, 3: 1, 4: 1}
    assert all(s is not None and s.id == five[0].local_node().id for s in senders)


def test_send_to_is_not_relayed(five: list[Cluster]) -> None:
    got: list[int] = []
    for i, c in enumerate(five):
        c.handle_func(gossip.USER_MSG + 1, lambda s, p, i=i: got.append(i))
    target = five[0].get_node(five[2].local_node().id)
    assert target is not None
    five[0].send_to_reliable(target, gossip.USER_MSG + 1, "direct")
    wait_until(lambda: got == [2], what="the direct message")
    time.sleep(0.2)
    assert got == [2]


@dataclasses.dataclass
class Question:
    text: str


@dataclasses.dataclass
class Answer:
    text: str
    by: str


def test_send_to_with_response_and_timeout(five: list[Cluster]) -> None:
    a, b = five[0], five[1]
    release = threading.Event()

    def answer(sender: Node | None, packet: Packet) -> Answer:
        q = packet.unmarshal(Question)
        return Answer(q.text.upper(), str(b.local_node().id))

    def slow(sender: Node | None, packet: Packet) -> str:
        release.wait(5.0)
        return "late"

    b.handle_func_with_reply(200, answer)
    b.handle_func_with_reply(201, slow)
    node_b = a.get_node(b.local_node().id)
    assert node_b is not None
    reply = a.send_to_with_response(node_b, 200, Question("hi"), Answer, timeout=5.0)
    assert reply == Answer("HI", str(b.local_node().id))
    with pytest.raises(gossip.GossipTimeout, match=node_b.id.short):
        a.send_to_with_response(node_b, 201, "x", timeout=0.2)
    release.set()


def test_registering_internal_type_or_twice_fails(five: list[Cluster]) -> None:
    c = five[0]
    with pytest.raises(gossip.LocalProtocolError, match="5"):
        c.handle_func(5, lambda s, p: None)
    with pytest.raises(gossip.LocalProtocolError):
        c.send(3, "x")
    c.handle_func(300, lambda s, p: None)
    with pytest.raises(gossip.HandlerExistsError, match="300"):
        c.handle_func_no_forward(300, lambda s, p: None)
    assert c.unregister_message_type(300) is True
    assert c.unregister_message_type(300) is False


def test_leave_is_seen_as_leaving(five: list[Cluster]) -> None:
    leaver = five[4]
    lid = leaver.local_node().id
    leaver.leave(timeout=2.0)
    others = five[:4]
    wait_until(lambda: all((n := c.get_node(lid)) is not None and n.state is NodeState.LEAVING
                           for c in others), what="the others to see the leave")


def test_metadata_update_reaches_everyone_and_fires_handler(five: list[Cluster]) -> None:
    seen: dict[int, str] = {}
    lock = threading.Lock()
    for i, c in enumerate(five):
        def fn(node: Node, i: int = i) -> None:
            if node.id == five[0].local_node().id and node.metadata.get_string("zone"):
                with lock:
                    seen[i] = node.metadata.get_string("zone")
        c.handle_node_metadata_change_func(fn)
    five[0].local_metadata().set_string("zone", "eu-1").set_int("weight", 3)
    wait_until(lambda: len(seen) == 5, what="the metadata event on every node (local one too)")
    assert set(seen.values()) == {"eu-1"}
    mid = five[0].local_node().id
    wait_until(lambda: all((n := c.get_node(mid)) is not None and n.metadata.get_int("weight") == 3
                           for c in five), what="the last write of the burst everywhere")


def test_state_events_in_order_and_never_concurrent() -> None:
    net = MemoryNetwork(seed=2)
    clusters = make_cluster(net, 4)
    watcher = clusters[0]
    victim = clusters[3]
    vid = victim.local_node().id
    events: list[tuple[NodeState, NodeState]] = []
    threads: set[str] = set()
    active = [0]
    overlap = [False]
    lock = threading.Lock()

    def on_state(node: Node, prev: NodeState) -> None:
        with lock:
            active[0] += 1
            if active[0] > 1:
                overlap[0] = True
            threads.add(threading.current_thread().name)
        time.sleep(0.01)
        if node.id == vid:
            events.append((prev, node.state))
        with lock:
            active[0] -= 1

    watcher.handle_node_state_change_func(on_state)
    watcher.handle_node_state_change_func(lambda n, p: None)
    try:
        victim._crash()
        wait_until(lambda: bool(events) and events[-1][1] is NodeState.DEAD, timeout=20.0,
                   what="the crashed node to be declared dead")
        # In order: each event starts where the previous one ended (alive -> suspect -> dead,
        # or alive -> dead when a peer's verdict arrives before our own suspicion).
        assert events[0][0] is NodeState.ALIVE
        for before, after in zip(events, events[1:]):
            assert after[0] is before[1], events
        assert not overlap[0]
        assert len(threads) == 1 and threads.pop().endswith("-events")
        assert watcher.num_dead_nodes() == 1
    finally:
        for c in clusters:
            c.stop(timeout=2.0)


def test_bad_config_is_refused_naming_the_field() -> None:
    with pytest.raises(gossip.ConfigError, match="num_send_workers"):
        Cluster(Config.local(num_send_workers=0))


def test_no_gossip_thread_survives_stop_and_stop_twice_is_fine() -> None:
    net = MemoryNetwork(seed=3)
    clusters = make_cluster(net, 3)
    # Only these clusters' threads (gossip-<node short id>-<role>): other tests' clusters may
    # still be winding down in the same process.
    prefixes = tuple(f"gossip-{c.local_node().id.short}-" for c in clusters) + \
        tuple(f"gossip-{c.config.transport.name}-" for c in clusters)
    assert any(t.name.startswith(prefixes) for t in threading.enumerate())
    for c in clusters:
        c.stop(timeout=3.0)
        c.stop(timeout=3.0)
    alive = [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]
    assert not alive, f"threads left running: {alive}"
    with pytest.raises(gossip.ClusterClosed):
        clusters[0].send(gossip.USER_MSG, "x")
    with pytest.raises(gossip.ClusterClosed):
        clusters[0].start()


def test_context_manager_and_lifecycle_traps() -> None:
    net = MemoryNetwork(seed=4)
    c = Cluster(mem_config(net))
    with pytest.raises(gossip.ClusterClosed):
        c.join("127.77.99.99:7946")
    with c:
        c.start()  # twice: no-op
        assert c.local_node().alive()
        assert c.join(c.address) == 0  # only ourselves: nothing to do
        peers = ["127.77.99.99:7946"]   # an in-memory address no transport holds
        with pytest.raises(gossip.JoinError, match="127.77.99.99"):
            c.join(peers, timeout=2.0)
        assert peers == ["127.77.99.99:7946"]
    assert not c.local_node().alive()


def test_gossip_handler_runs_and_can_be_removed() -> None:
    net = MemoryNetwork(seed=5)
    calls = threading.Semaphore(0)
    with Cluster(mem_config(net, gossip_interval=0.05)) as c:
        hid = c.handle_gossip_func(calls.release)
        assert calls.acquire(timeout=5.0)
        assert c.remove_gossip_handler(hid) is True
        assert c.remove_gossip_handler(hid) is False


def test_an_idle_node_runs_one_send_worker_no_lane_and_no_stream_thread() -> None:
    """Threads start with the work that needs them: a receive lane with its first user
    packet, more send workers only while none is idle, the stream pool with a stream."""
    net = MemoryNetwork(seed=4)
    a, b = make_cluster(net, 2, num_incoming_workers=8, num_send_workers=8)
    try:
        prefix = f"gossip-{b.local_node().id.short}-"

        def roles() -> list[str]:
            return sorted(t.name[len(prefix):] for t in threading.enumerate()
                          if t.name.startswith(prefix))

        idle = roles()
        assert not [r for r in idle if r.startswith(("recv-", "stream"))], idle
        assert len([r for r in idle if r.startswith("send-")]) == 1, idle
        assert b.stats()["streams.opened"] == 0 and b.stats()["streams.active"] == 0
        got: list[str] = []
        b.handle_func(gossip.USER_MSG, lambda s, p: got.append(p.unmarshal()))
        target = a.get_node(b.local_node().id)
        assert target is not None
        for i in range(20):
            a.send_to_reliable(target, gossip.USER_MSG, str(i))
        wait_until(lambda: len(got) == 20, what="20 messages")
        assert got == [str(i) for i in range(20)]  # one source: one lane, in order
        lanes = [r for r in roles() if r.startswith("recv-")]
        assert len(lanes) <= 1, lanes
    finally:
        a.stop(timeout=3.0)
        b.stop(timeout=3.0)


def test_a_sender_outside_the_member_table_is_an_unknown_node_not_none() -> None:
    net = MemoryNetwork(seed=3)
    server, stranger = Cluster(mem_config(net)), Cluster(mem_config(net))   # never joined
    got: list[Node] = []
    server.handle_func(gossip.USER_MSG, lambda sender, packet: got.append(sender))
    server.handle_func_with_reply(gossip.USER_MSG + 1, lambda sender, packet: sender.id.short)
    try:
        server.start()
        stranger.start()
        stranger.send_to_reliable(server.local_node(), gossip.USER_MSG, "hi")
        wait_until(lambda: len(got) == 1, what="the stranger's message")
        assert got[0].id == stranger.local_node().id and got[0].state is NodeState.UNKNOWN
        assert got[0].address == "" and got[0].incarnation == 0
        answer = stranger.send_to_with_response(server.local_node(), gossip.USER_MSG + 1, "who am i")
        assert answer == stranger.local_node().id.short
    finally:
        stranger.stop(timeout=2.0)
        server.stop(timeout=2.0)


def test_joining_an_in_memory_address_asks_no_resolver() -> None:
    """``mem-1:7946`` is the memory network's own address: a DNS query for ``mem-1`` would
    leave the machine (and, when the name server is slow, time the join out)."""
    asked: list[str] = []

    class Recording:
        def lookup_ip(self, host: str) -> list[str]:
            asked.append(host)
            raise gossip.TransportError(f"no such host {host}")

        def lookup_srv(self, name: str) -> list[tuple[str, int]]:
            asked.append(name)
            raise gossip.TransportError(f"no such name {name}")

    net = MemoryNetwork(seed=4)
    a, b = (Cluster(mem_config(net, resolver=Recording())) for _ in range(2))
    try:
        a.start()
        b.start()
        assert b.join(a.address, timeout=5.0) == 1
        assert asked == []
    finally:
        b.stop(timeout=2.0)
        a.stop(timeout=2.0)


def test_a_stopped_cluster_refuses_metadata_changes() -> None:
    net = MemoryNetwork(seed=5)
    c = Cluster(mem_config(net))
    md = c.local_metadata()
    md.set_string("role", "before-start")            # allowed: it goes out with the join
    c.start()
    md.set_int("weight", 3)
    c.stop(timeout=2.0)
    for write in (lambda: md.set_string("role", "after-stop"), lambda: md.delete("weight"),
                  lambda: c.local_metadata().set_bool("x", True)):
        with pytest.raises(gossip.ClusterClosed, match="stopped"):
            write()
    assert md.get_string("role") == "before-start" and md.get_int("weight") == 3
    with pytest.raises(gossip.ClusterClosed):
        c.update_metadata()


def test_get_node_takes_the_short_id_every_table_shows(five: list[Cluster]) -> None:
    a = five[0]
    for c in five:
        node = c.local_node()
        assert a.get_node(node.id.short).id == node.id            # type: ignore[union-attr]
        assert a.get_node(node.id.short.upper()).id == node.id    # type: ignore[union-attr]
        assert a.get_node_by_id_string(node.id.short) is not None
    assert a.get_node("0badf00d") is None
    with pytest.raises(gossip.NodeIDError):
        a.get_node("not-an-id")


def test_a_short_id_two_nodes_share_asks_for_the_full_id() -> None:
    net = MemoryNetwork(seed=6)
    ids = ["01900000-0000-7000-8000-0000deadbeef", "01900000-0000-7000-8000-1111deadbeef"]
    clusters = [Cluster(mem_config(net, node_id=i)) for i in ids]
    try:
        for c in clusters:
            c.start()
        assert clusters[1].join(clusters[0].address, timeout=5.0) == 1
        wait_until(lambda: clusters[0].num_alive_nodes() == 2, what="both alive")
        with pytest.raises(gossip.NodeIDError, match="give the full id"):
            clusters[0].get_node("deadbeef")
        assert clusters[0].get_node(ids[1]) is not None
    finally:
        for c in clusters:
            c.stop(timeout=2.0)
