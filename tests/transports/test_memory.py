"""Tests of :mod:`gossip.transports.memory`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from gossip.errors import (ClusterClosed, ConnectError, GossipTimeout, MessageTooLarge, SendError,
                           SendQueueFull, TransportError)
from gossip.testing import wait_until
from gossip.transports import Incoming, MemoryNetwork, MemoryTransport, StreamConn, Transport
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


# ----------------------------------------------------------------- bounds, streams, misuse

FAR = 3600.0   # a delay no test waits out: what is sent stays queued, deterministically


def test_bad_arguments_are_refused(net: MemoryNetwork) -> None:
    for n in (0, (256 - 77) << 16):
        with pytest.raises(ValueError):
            memory_address(n)
    with pytest.raises(ValueError):
        net.drop("a", "b", 1.5)
    with pytest.raises(ValueError):
        net.delay("a", -1.0)
    t = net.new_transport("twice")
    with pytest.raises(ClusterClosed, match="not started"):
        t.send(memory_address(1), b"x")
    t.start(lambda batch: None)
    with pytest.raises(TransportError, match="already started"):
        t.start(lambda batch: None)
    t.close()
    with pytest.raises(ClusterClosed):
        t.start(lambda batch: None)
    assert "closed=True" in repr(t)


def test_a_full_receiver_refuses_reliable_frames_and_drops_datagrams(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    a.t.network.max_queue = 2
    a.t.network.delay(b.addr, FAR)
    a.t.send(b.addr, b"1", reliable=True)
    a.t.send(b.addr, b"2", reliable=True)
    assert b.t.stats["frames_queued"] == 2
    with pytest.raises(SendQueueFull):
        a.t.send(b.addr, b"3", reliable=True, timeout=0.0)
    # Datagrams have their own share of the queue: two fit, the third is dropped and counted.
    dropped = a.t.network.stats["dropped"]
    for _ in range(3):
        a.t.send(b.addr, b"d")
    assert a.t.network.stats["dropped"] == dropped + 1
    assert b.empty_after(0.0)


def test_a_frame_to_a_closed_transport_is_a_send_error(net: MemoryNetwork) -> None:
    a, b = Node(net, "fc-a"), Node(net, "fc-b")
    try:
        a.t.send(b.addr, b"open", reliable=True)
        conn = b.get().conn
        assert conn is not None
        receiver = b.t
        receiver.close()
        with pytest.raises(SendError):                    # the connection was closed with it
            a.t.send(b.addr, b"x", reliable=True)
        unroutable = net.stats["unroutable"]
        receiver._enqueue(Incoming(b"late", a.addr, False, None, 0.0), 0.0)
        assert net.stats["unroutable"] == unroutable + 1  # counted, not queued
        with pytest.raises(SendError, match="closed"):
            receiver._enqueue_frame(Incoming(b"late", a.addr, True, None, 0.0), 0.0, 0.0)
    finally:
        a.t.close()


def test_a_paused_connection_holds_frames_until_resumed(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    a.t.send(b.addr, b"first", reliable=True)
    conn = b.get().conn
    assert conn is not None
    conn.resume_reading()                                 # not paused: nothing to do
    conn.pause_reading()
    a.t.send(b.addr, b"held-1", reliable=True)
    a.t.send(b.addr, b"held-2", reliable=True)
    wait_until(lambda: len(conn.held) == 2, WAIT, "both frames held")   # type: ignore[attr-defined]
    assert b.empty_after(0.0)
    conn.resume_reading()
    assert [b.get().data, b.get().data] == [b"held-1", b"held-2"]
    conn.mark_trusted()
    conn.mark_rejected()
    conn.close()
    with pytest.raises(SendError, match="connection closed"):
        conn.send_frame(b"x")
    assert "closed=True" in repr(conn)


class StreamNode:
    """A transport that hands every accepted stream to a queue."""

    def __init__(self, net: MemoryNetwork, name: str) -> None:
        self.streams: queue.Queue[StreamConn] = queue.Queue()
        self.t = net.new_transport(name)
        self.t.start(lambda batch: None, self.streams.put)

    def accept(self) -> StreamConn:
        return self.streams.get(timeout=WAIT)


@pytest.fixture
def stream_pair(net: MemoryNetwork) -> Iterator[tuple[StreamNode, StreamNode]]:
    pair = (StreamNode(net, "sa"), StreamNode(net, "sb"))
    yield pair
    for n in pair:
        n.t.close()


def test_stream_frames_half_close_and_close(stream_pair: tuple[StreamNode, StreamNode]) -> None:
    a, b = stream_pair
    mine = a.t.dial_stream(b.t.local_addr, WAIT)
    theirs = b.accept()
    assert mine.peer == b.t.local_addr and theirs.peer == a.t.local_addr
    mine.send_frame(b"one")
    mine.send_frame(memoryview(b"two"))
    mine.close_write()
    with pytest.raises(SendError, match="closed for writing"):
        mine.send_frame(b"x")
    assert [theirs.recv_frame(0.0), theirs.recv_frame(0.0), theirs.recv_frame(0.0)] == [b"one", b"two", None]
    with pytest.raises(GossipTimeout):
        mine.recv_frame(0.0)                              # nothing came the other way
    theirs.send_frame(b"back")
    assert mine.recv_frame(0.0) == b"back"
    with pytest.raises(MessageTooLarge):
        theirs.send_frame(bytes(a.t.max_stream_frame_size + 1))
    theirs.mark_trusted()
    theirs.close()
    with pytest.raises(TransportError, match="closed"):
        mine.recv_frame(0.0)
    with pytest.raises(SendError):
        theirs.send_frame(b"x")
    assert "MemoryStreamConn" in repr(mine)


def test_a_stream_writer_waits_for_the_window_then_times_out(
        stream_pair: tuple[StreamNode, StreamNode]) -> None:
    a, b = stream_pair
    mine = a.t.dial_stream(b.t.local_addr, WAIT)
    theirs = b.accept()
    big = bytes(3 * 1024 * 1024)                          # the window is 4 MiB
    mine.send_frame(big)
    with pytest.raises(GossipTimeout):
        mine.send_frame(big, timeout=0.0)                 # no room: the stream is closed
    assert theirs.recv_frame(0.0) == big                  # what was queued is still read
    with pytest.raises(TransportError):
        theirs.recv_frame(0.0)


def test_a_stream_writer_blocked_on_the_window_fails_when_the_reader_closes(
        stream_pair: tuple[StreamNode, StreamNode]) -> None:
    a, b = stream_pair
    mine = a.t.dial_stream(b.t.local_addr, WAIT)
    theirs = b.accept()
    big = bytes(3 * 1024 * 1024)
    mine.send_frame(big)
    errors: queue.Queue[BaseException | None] = queue.Queue()

    def write() -> None:
        try:
            mine.send_frame(big, timeout=WAIT)
            errors.put(None)
        except BaseException as exc:
            errors.put(exc)

    th = threading.Thread(target=write)
    th.start()
    theirs.close()
    th.join(WAIT)
    assert isinstance(errors.get(timeout=WAIT), SendError)


def test_a_reader_gets_a_frame_written_while_it_waits(stream_pair: tuple[StreamNode, StreamNode]) -> None:
    a, b = stream_pair
    mine = a.t.dial_stream(b.t.local_addr, WAIT)
    theirs = b.accept()
    got: queue.Queue[object] = queue.Queue()
    th = threading.Thread(target=lambda: got.put(theirs.recv_frame(None)))
    th.start()
    mine.send_frame(b"late")
    assert got.get(timeout=WAIT) == b"late"
    th.join(WAIT)


def test_a_stream_across_a_partition_is_closed_on_write(
        net: MemoryNetwork, stream_pair: tuple[StreamNode, StreamNode]) -> None:
    a, b = stream_pair
    mine = a.t.dial_stream(b.t.local_addr, WAIT)
    theirs = b.accept()
    net.partition([a.t.local_addr], [b.t.local_addr])
    with pytest.raises(SendError, match="partitioned"):
        mine.send_frame(b"x")
    with pytest.raises(TransportError):
        theirs.recv_frame(0.0)


def test_streams_to_a_transport_that_takes_none_or_fails_on_them(net: MemoryNetwork) -> None:
    plain = Node(net, "np")
    dialer = StreamNode(net, "nd")
    try:
        with pytest.raises(ConnectError, match="accepts no streams"):
            dialer.t.dial_stream(plain.addr, WAIT)

        def boom(stream: StreamConn) -> None:
            raise RuntimeError("on_stream failed")

        failing = net.new_transport("nf")
        failing.start(lambda batch: None, boom)
        try:
            mine = dialer.t.dial_stream(failing.local_addr, WAIT)
            with pytest.raises(TransportError):
                mine.recv_frame(WAIT)                     # closed by the failing side
            assert failing.callback_errors == 1
        finally:
            failing.close()
    finally:
        plain.t.close()
        dialer.t.close()


def test_closing_a_transport_closes_streams_not_yet_accepted(net: MemoryNetwork) -> None:
    a, b = StreamNode(net, "ca"), StreamNode(net, "cb")
    try:
        net.delay(b.t.local_addr, FAR)
        mine = a.t.dial_stream(b.t.local_addr, WAIT)
        b.t.close()
        with pytest.raises(TransportError):
            mine.recv_frame(0.0)
        with pytest.raises(ClusterClosed):
            b.t.dial_stream(a.t.local_addr, WAIT)
    finally:
        a.t.close()
