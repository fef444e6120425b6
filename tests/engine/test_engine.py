"""Engine tests on the in-memory transport: hostile input, handler isolation, MTU rule, stats,
the address a node advertises and the transport's lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, Node, Packet
from gossip.engine import Engine, wiring
from gossip.transports import interfaces
from gossip.transports.base import Incoming
from gossip.transports.memory import MEMORY_PORT, MemoryNetwork
from gossip.wire import MessageType


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``pred`` until true; fail clearly after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def pair(net: MemoryNetwork, **kw: object) -> tuple[Cluster, Cluster]:
    a = Cluster(Config.local(transport=net.new_transport(), **kw))
    b = Cluster(Config.local(transport=net.new_transport(), **kw))
    a.start()
    b.start()
    assert b.join(a.address, timeout=5.0) == 1
    wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, what="2 nodes")
    return a, b


def test_garbage_packets_are_counted_and_the_cluster_keeps_working() -> None:
    net = MemoryNetwork(seed=7)
    a, b = pair(net)
    raw = net.new_transport()
    raw.start(lambda batch: None)
    try:
        bad = [b"", b"garbage", b"\xc5\x01" + b"\x00" * 60, b"\xc5\x09" + b"\x00" * 60, bytes(range(256))]
        for data in bad:
            raw.send(a.address, data)
            raw.send(a.address, data, reliable=True)
        # A well-formed packet whose payload is not a valid protocol message.
        codec = a._codec
        raw.send(a.address, codec.encode(int(MessageType.PING), b"\x01" * 16, 1, 1, ["nonsense"]))

        def bad_count() -> int:
            return sum(v for k, v in a.stats().items() if k.startswith("bad_packets."))

        wait_until(lambda: bad_count() >= 2 * len(bad) - 2 + 1, what="bad packets to be counted")
        assert not [k for k in a.stats() if k.startswith("errors.")]
        got = threading.Event()
        b.handle_func(gossip.USER_MSG, lambda s, p: got.set())
        a.send(gossip.USER_MSG, "still alive")
        assert got.wait(5.0)
    finally:
        raw.close()
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


def test_handler_exception_is_counted_and_worker_survives() -> None:
    net = MemoryNetwork(seed=8)
    a, b = pair(net)
    try:
        ok = threading.Event()

        def boom(sender: Node | None, packet: Packet) -> None:
            if packet.unmarshal() == "boom":
                raise RuntimeError("handler bug")
            ok.set()

        b.handle_func_no_forward(gossip.USER_MSG, boom)
        b_node = a.get_node(b.local_node().id)
        assert b_node is not None
        for _ in range(3):
            a.send_to(b_node, gossip.USER_MSG, "boom")
        wait_until(lambda: b.stats().get("handler_errors.message", 0) == 3,
                   what="3 handler errors")
        a.send_to(b_node, gossip.USER_MSG, "fine")
        assert ok.wait(5.0)
        # A raising state handler does not stop later events.
        b.handle_node_state_change_func(lambda n, p: 1 / 0)
        a.stop(timeout=2.0)
        wait_until(lambda: b.stats().get("handler_errors.state", 0) >= 1,
                   what="state handler error")
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


def test_large_packets_go_reliable_and_reply_handler_none() -> None:
    net = MemoryNetwork(seed=9)
    a, b = pair(net)
    try:
        got: list[bytes] = []
        b.handle_func(gossip.USER_MSG, lambda s, p: got.append(p.unmarshal()))
        b.handle_func_with_reply(gossip.USER_MSG + 1, lambda s, p: None)
        a.send(gossip.USER_MSG, b"x" * 5000)  # over the 1400-byte datagram limit
        wait_until(lambda: got == [b"x" * 5000], what="the large broadcast")
        b_node = a.get_node(b.local_node().id)
        assert b_node is not None
        assert a.send_to_with_response(b_node, gossip.USER_MSG + 1, "q", timeout=5.0) is None
        assert not any(k.startswith("send_errors.") for k in a.stats())
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


def test_incoming_queue_overflow_is_counted() -> None:
    net = MemoryNetwork(seed=10)
    cfg = Config.local(transport=net.new_transport(), incoming_packet_queue_depth=1,
                       num_incoming_workers=1)
    c = Cluster(cfg)
    engine: Engine = c._engine
    c.start()
    try:
        block = threading.Event()
        c.handle_func_no_forward(gossip.USER_MSG, lambda s, p: block.wait(5.0))
        codec = c._codec
        batch = [Incoming(codec.encode(gossip.USER_MSG, b"\x02" * 16, i + 1, 1, "x"), "mem-x:1",
                          False, None, time.monotonic()) for i in range(20)]
        engine.receiver.on_packets(batch)
        assert c.stats().get("dropped.incoming_queue_full", 0) > 0
        block.set()
    finally:
        c.stop(timeout=2.0)


def test_gossip_interval_adapts_to_slow_callbacks() -> None:
    net = MemoryNetwork(seed=11)
    with Cluster(Config.local(transport=net.new_transport(), gossip_interval=0.05,
                              gossip_max_interval=0.5)) as c:
        calls = threading.Semaphore(0)

        def slow() -> None:
            time.sleep(0.1)
            calls.release()

        c.handle_gossip_func(slow)
        assert calls.acquire(timeout=5.0)
        wait_until(lambda: c._engine.gossip_interval > 0.05, what="interval to grow")
        assert c._engine.gossip_interval <= 0.5


def test_protocol_lane_answers_probes_while_every_user_lane_is_blocked() -> None:
    # Eight handlers that never return, and a flood of user messages behind them: acks must
    # still go out at once (probes and acks never wait behind user code), so no one suspects b.
    net = MemoryNetwork(seed=12)
    a, b = pair(net)
    release = threading.Event()
    try:
        b.handle_func_no_forward(gossip.USER_MSG, lambda s, p: release.wait(30.0))
        lanes = b._engine.receiver.lanes
        sources: dict[int, str] = {}
        i = 0
        while len(sources) < lanes.n:  # one source for each lane
            sources.setdefault(lanes.lane_of(f"mem-src-{i}:1"), f"mem-src-{i}:1")
            i += 1
        for n, src in enumerate(sources.values()):
            for k in range(3):
                raw = Incoming(b._codec.encode(gossip.USER_MSG, b"\x03" * 16, 10 * n + k + 1, 1,
                                               "x"), src, False, None, time.monotonic(), "memory")
                b._engine.receiver.on_packets([raw])
        wait_until(lambda: not any(lanes._waiting), what="every lane to be stuck in a handler")
        probes0 = a.stats().get("core.probes", 0)
        wait_until(lambda: a.stats().get("core.probes", 0) >= probes0 + 5, 20.0, "5 more probes")
        assert a.stats().get("core.failed_probes", 0) == 0
        assert a.get_node(b.local_node().id).state is gossip.NodeState.ALIVE  # type: ignore[union-attr]
    finally:
        release.set()
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


def test_a_reply_never_waits_for_a_full_connection() -> None:
    net = MemoryNetwork(seed=13)
    with Cluster(Config.local(transport=net.new_transport())) as c:
        c.handle_func_with_reply(gossip.USER_MSG, lambda s, p: "answer")

        class FullConn:
            peer = "mem-full:1"
            timeouts: list[float | None] = []

            def send_frame(self, data: bytes, timeout: float | None = None) -> None:
                self.timeouts.append(timeout)
                raise gossip.SendQueueFull("full")

            def pause_reading(self) -> None: ...
            def resume_reading(self) -> None: ...
            def mark_trusted(self) -> None: ...
            def mark_rejected(self) -> None: ...
            def close(self) -> None: ...

        conn = FullConn()
        req = Incoming(c._codec.encode(gossip.USER_MSG, b"\x04" * 16, 7, 0, "q"), conn.peer, True,
                       conn, time.monotonic(), "memory")
        c._engine.receiver.on_packets([req])
        wait_until(lambda: c.stats().get("dropped.reply_buffer_full", 0) == 1, what="the drop")
        assert conn.timeouts == [0]  # asked never to wait


def test_a_compressed_datagram_cannot_expand_past_the_datagram_limit() -> None:
    net = MemoryNetwork(seed=14)
    with Cluster(Config.local(transport=net.new_transport())) as c:
        got = threading.Event()
        c.handle_func_no_forward(gossip.USER_MSG, lambda s, p: got.set())
        bomb = c._codec.encode(gossip.USER_MSG, b"\x05" * 16, 9, 1, bytes(1 << 20))  # 1 MiB of 0
        assert len(bomb) < 8192  # lz4 shrinks it to a few kB: it fits in a datagram
        c._engine.receiver.on_packets([Incoming(bomb, "mem-x:1", False, None, time.monotonic(),
                                                "memory")])
        assert c.stats().get("bad_packets.PacketTooLarge", 0) == 1
        assert not got.is_set()
        # The same packet over a connection is within the frame limit and is delivered.
        conn_in = Incoming(bomb, "mem-x:1", True, None, time.monotonic(), "memory")
        c._engine.receiver.on_packets([conn_in])
        assert got.wait(5.0)


def test_the_scheduler_survives_a_failing_core() -> None:
    # Whatever a timer or a metadata update raises, probing goes on: a node must never keep
    # answering pings while it has silently stopped probing.
    net = MemoryNetwork(seed=15)
    a, b = pair(net)
    try:
        core = a._engine.core
        real_tick, real_meta = core.tick, core.set_local_metadata
        calls = {"tick": 0}

        def bad_tick(now: float) -> None:
            calls["tick"] += 1
            if calls["tick"] <= 3:
                raise OverflowError("a core bug")
            real_tick(now)

        def bad_meta(*args: object) -> None:
            raise OverflowError("another core bug")

        core.tick = bad_tick  # type: ignore[method-assign]
        core.set_local_metadata = bad_meta  # type: ignore[method-assign]
        a.local_metadata().set_string("k", "v")  # the scheduler propagates it: and fails
        wait_until(lambda: a.stats().get("errors.scheduler", 0) >= 4, what="the errors counted")
        core.set_local_metadata = real_meta  # type: ignore[method-assign]
        probes = a.stats().get("core.probes", 0)
        wait_until(lambda: a.stats().get("core.probes", 0) >= probes + 2, 10.0, "probing goes on")
        assert a._engine.scheduler.thread.is_alive()
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


class _ListensOnStart:
    """A transport that, like the socket transport, knows the address it listens on only once
    started: bound to every interface (``0.0.0.0``) on the in-memory network's port."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.started = False

    @property
    def local_addr(self) -> str:
        return "0.0.0.0:" + self.real.local_addr.rpartition(":")[2] if self.started else ""

    def start(self, on_packets: Any, on_stream: Any = None) -> None:
        self.real.start(on_packets, on_stream)
        self.started = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_node_bound_to_every_interface_advertises_the_route_s_host_with_its_bound_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The address is taken from the transport once it listens: before start it has none.
    net = MemoryNetwork(seed=16)
    built: list[_ListensOnStart] = []

    def build(cfg: Config, name: str, member_check: Any) -> Any:
        built.append(_ListensOnStart(net.new_transport()))
        return built[0]

    monkeypatch.setattr(interfaces, "advertise_host", lambda host: "127.0.0.1")
    monkeypatch.setattr(wiring, "build_transport", build)
    with Cluster(Config.local(bind_addr="0.0.0.0:0", insecure=True)) as c:
        assert c.address == f"127.0.0.1:{MEMORY_PORT}"
        assert c.local_node().address == c.address
    assert built[0].real.closed


def test_a_transport_given_to_a_cluster_that_never_started_is_closed_by_stop() -> None:
    transport = MemoryNetwork(seed=17).new_transport()
    c = Cluster(Config.local(transport=transport))
    c.stop()
    assert transport.closed
    with pytest.raises(gossip.ClusterClosed):
        c.start()


def test_a_transport_that_cannot_start_is_closed_by_stop() -> None:
    class Unbindable(_ListensOnStart):
        def start(self, on_packets: Any, on_stream: Any = None) -> None:
            raise gossip.TransportError("address in use")

    transport = Unbindable(MemoryNetwork(seed=18).new_transport())
    c = Cluster(Config.local(transport=transport))
    with pytest.raises(gossip.TransportError):
        c.start()
    assert not c.running
    c.stop()
    assert transport.real.closed
