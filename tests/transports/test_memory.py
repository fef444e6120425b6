"""Tests of :mod:`gossip.transports.memory`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from gossip.errors import ClusterClosed, ConnectError, GossipTimeout, MessageTooLarge, SendError
from gossip.transports import Incoming, MemoryNetwork, MemoryTransport, Transport
from gossip.transports.memory import memory_address

WAIT = 5.0


class Node:
    def __init__(self, net: MemoryNetwork, name: str) -> None:
        self.inbox: queue.Queue[tuple[Incoming, str]] = queue.Queue()
        self.t: MemoryTransport = net.new_transport(name)
        self.t.start(self._on_packets)

    def _on_packets(self, batch: list[Incoming]) -> None:
        for p in batch:
            self.inbox.put((p, threading.current_thread().name))

    @property
    def addr(self) -> str:
        return self.t.local_addr

    def get(self, timeout: float = WAIT) -> Incoming:
        return self.inbox.get(timeout=timeout)[0]

    def empty_after(self, seconds: float) -> bool:
        try:
            self.inbox.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def net() -> Iterator[MemoryNetwork]:
    network = MemoryNetwork(seed=42)
    yield network


@pytest.fixture
def trio(net: MemoryNetwork) -> Iterator[tuple[Node, Node, Node]]:
    nodes = (Node(net, "ma"), Node(net, "mb"), Node(net, "mc"))
    yield nodes
    for n in nodes:
        n.t.close()


def test_protocol_and_addresses(net: MemoryNetwork, trio: tuple[Node, Node, Node]) -> None:
    a, b, c = trio
    assert isinstance(a.t, Transport)
    assert len({a.addr, b.addr, c.addr}) == 3
    assert a.addr == memory_address(1) == "127.77.0.1:7946" and b.addr == "127.77.0.2:7946"


def test_best_effort_delivered_on_receiver_thread(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    a.t.send(b.addr, b"hi")
    pkt, thread_name = b.inbox.get(timeout=WAIT)
    assert pkt.data == b"hi" and pkt.src == a.addr and not pkt.reliable and pkt.conn is None
    assert thread_name == "gossip-mb-delivery"
    with pytest.raises(MessageTooLarge):
        a.t.send(b.addr, bytes(2000))


def test_reliable_and_reply_on_connection(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    a.t.send(b.addr, b"r1", reliable=True)
    pkt = b.get()
    assert pkt.reliable and pkt.conn is not None and pkt.conn.peer == a.addr
    pkt.conn.send_frame(b"back")
    back = a.get()
    assert back.data == b"back" and back.reliable and back.src == b.addr


def test_request_reply_and_timeout(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    stop = threading.Event()

    def responder() -> None:
        while not stop.is_set():
            try:
                pkt = b.get(timeout=0.05)
            except queue.Empty:
                continue
            if pkt.conn is not None and pkt.data != b"ignore":
                pkt.conn.send_frame(b"re:" + pkt.data)

    th = threading.Thread(target=responder)
    th.start()
    try:
        assert a.t.request(b.addr, b"q", timeout=WAIT) == b"re:q"
        with pytest.raises(GossipTimeout):
            a.t.request(b.addr, b"ignore", timeout=0.1)
    finally:
        stop.set()
        th.join(WAIT)


def test_unknown_address(net: MemoryNetwork, trio: tuple[Node, Node, Node]) -> None:
    a, _, _ = trio
    a.t.send("mem-999:7946", b"x")  # dropped, counted
    assert net.stats["unroutable"] == 1
    with pytest.raises(ConnectError):
        a.t.send("mem-999:7946", b"x", reliable=True)
    with pytest.raises(ConnectError):
        a.t.request("mem-999:7946", b"x", timeout=0.1)


def test_partition_and_heal(net: MemoryNetwork, trio: tuple[Node, Node, Node]) -> None:
    a, b, c = trio
    a.t.send(b.addr, b"pre", reliable=True)
    conn = b.get().conn
    assert conn is not None
    net.partition([a.addr], [b.addr, c.addr])
    a.t.send(b.addr, b"lost")
    b.t.send(a.addr, b"lost")
    with pytest.raises(SendError):
        a.t.send(b.addr, b"x", reliable=True)
    with pytest.raises(SendError):
        conn.send_frame(b"x")
    with pytest.raises(ConnectError):
        a.t.request(c.addr, b"x", timeout=0.1)
    b.t.send(c.addr, b"inside")  # same side: still fine
    assert c.get().data == b"inside"
    assert a.empty_after(0.05) and b.empty_after(0.05)
    net.heal()
    a.t.send(b.addr, b"healed")
    assert b.get().data == b"healed"
    a.t.send(b.addr, b"healed-r", reliable=True)
    assert b.get().data == b"healed-r"


def test_drop_probability_is_seeded(trio: tuple[Node, Node, Node], net: MemoryNetwork) -> None:
    a, b, _ = trio
    net.drop(a.addr, b.addr, 1.0)
    for _ in range(10):
        a.t.send(b.addr, b"x")
    b.t.send(a.addr, b"reverse ok")
    assert a.get().data == b"reverse ok"
    a.t.send(b.addr, b"reliable ok", reliable=True)  # drops only affect best-effort
    assert b.get().data == b"reliable ok"
    assert b.empty_after(0.05)
    net.drop(a.addr, b.addr, 0.5)
    for i in range(200):
        a.t.send(b.addr, b"%d" % i)
    got = 0
    while True:
        try:
            b.get(timeout=0.2)
            got += 1
        except queue.Empty:
            break
    assert 50 < got < 150

    def run(seed: int) -> list[bool]:
        n2 = MemoryNetwork(seed=seed)
        x, y = n2.new_transport(), n2.new_transport()
        n2.drop(x.local_addr, y.local_addr, 0.5)
        return [n2._route(x.local_addr, y.local_addr, False)[0] is None for _ in range(50)]

    assert run(7) == run(7)


def test_delay(net: MemoryNetwork, trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    net.delay(b.addr, 0.2)
    start = time.monotonic()
    a.t.send(b.addr, b"slow")
    assert b.get().data == b"slow"
    assert time.monotonic() - start >= 0.19
    net.delay(b.addr, 0)
    a.t.send(b.addr, b"fast")
    assert b.get().data == b"fast"


def test_close_joins_thread_and_refuses_sends(net: MemoryNetwork) -> None:
    a, b = Node(net, "cl-a"), Node(net, "cl-b")
    assert any(t.name == "gossip-cl-a-delivery" for t in threading.enumerate())
    a.t.close()
    a.t.close()
    assert not any(t.name == "gossip-cl-a-delivery" for t in threading.enumerate())
    with pytest.raises(ClusterClosed):
        a.t.send(b.addr, b"x")
    with pytest.raises(ConnectError):
        b.t.send(a.addr, b"x", reliable=True)
    b.t.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gossip-cl-")]


def test_callback_error_does_not_kill_delivery(net: MemoryNetwork) -> None:
    got: queue.Queue[bytes] = queue.Queue()

    def cb(batch: list[Incoming]) -> None:
        for p in batch:
            got.put(p.data)
        raise RuntimeError("boom")

    t = net.new_transport("cb")
    t.start(cb)
    s = net.new_transport("cb-s")
    s.start(lambda p: None)
    try:
        s.send(t.local_addr, b"1")
        assert got.get(timeout=WAIT) == b"1"
        s.send(t.local_addr, b"2")
        assert got.get(timeout=WAIT) == b"2"
        assert t.callback_errors == 2
    finally:
        t.close()
        s.close()
