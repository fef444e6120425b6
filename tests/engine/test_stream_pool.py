"""Cluster.open_stream and handle_stream_func end to end on the in-memory transport.

Waits are bounded polls or bounded event waits; nothing asserts on wall-clock speed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, Node, NodeState, Packet, Stream
from gossip.errors import (
    ClusterClosed,
    GossipTimeout,
    HandlerExistsError,
    LocalProtocolError,
    RemoteHandlerError,
    StreamRefused,
    TransportError,
)
from gossip.transports.base import StreamConn
from gossip.transports.memory import MemoryNetwork

WAIT = 10.0
KEY1, KEY2 = b"1" * 16, b"2" * 32
T = 300  # the stream type the tests serve


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def gossip_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("gossip-"))


def start(net: MemoryNetwork, **kw: Any) -> Cluster:
    c = Cluster(Config.local(transport=net.new_transport(), **kw))
    c.start()
    return c


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork(seed=11)


@pytest.fixture
def two(net: MemoryNetwork) -> Iterator[tuple[Cluster, Cluster]]:
    """A server and a client that joined it, both with KEY1."""
    server = start(net, encryption_key=KEY1)
    client = start(net, encryption_key=KEY1)
    assert client.join(server.address, timeout=5.0) == 1
    wait_until(lambda: server.get_node(client.local_node().id) is not None, "the join")
    yield server, client
    client.stop(timeout=2.0)
    server.stop(timeout=2.0)


def stream_stats(c: Cluster) -> dict[str, int]:
    return {k: v for k, v in c.stats().items() if k.startswith("streams.")}


def test_round_trip_with_opening_payload_sender_and_counters(two: tuple[Cluster, Cluster]) -> None:
    server, client = two
    seen: dict[str, Any] = {}

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        seen.update(sender=sender, opening=packet.unmarshal(), type=packet.msg_type,
                    thread=threading.current_thread().name, remote=stream.remote_node)
        msg = stream.read_msg(400)
        stream.write_msg(401, {"echo": msg, "n": len(msg)})
        stream.write(hashlib.sha256(stream.read()).digest())

    server.handle_stream_func(T, handler)
    with client.open_stream(server.local_node(), T, {"hello": "server"}) as s:
        assert s.remote_node is not None and s.remote_node.id == server.local_node().id
        assert s.encrypted and s.msg_type == T
        s.write_msg(400, "ping")
        assert s.read_msg(401) == {"echo": "ping", "n": 4}
        blob = os.urandom(500_000)
        s.write(blob)
        s.close_write()
        assert s.read() == hashlib.sha256(blob).digest()
    me = client.local_node().id
    assert seen["opening"] == {"hello": "server"} and seen["type"] == T
    assert seen["sender"].id == me and seen["remote"].id == me
    assert "-stream-" in seen["thread"]  # a stream pool thread, not a reader or a lane
    wait_until(lambda: stream_stats(server)["streams.active"] == 0, "the server's stream to end")
    got_c, got_s = stream_stats(client), stream_stats(server)
    assert got_c["streams.opened"] == 1 and got_s["streams.accepted"] == 1
    assert got_c["streams.bytes_out"] == got_s["streams.bytes_in"] > 500_000
    assert got_s["streams.bytes_out"] == got_c["streams.bytes_in"] > 32
    assert got_c["streams.active"] == 0


def test_unknown_opener_is_served_with_an_unknown_node(net: MemoryNetwork) -> None:
    server = start(net)
    stranger = start(net)  # never joined
    try:
        senders: list[Node] = []
        server.handle_stream_func(T, lambda sender, p, s: senders.append(sender))
        with stranger.open_stream(server.local_node(), T) as s:
            assert s.read() == b""
            assert not s.encrypted
        [sender] = senders
        assert sender.id == stranger.local_node().id and sender.state is NodeState.UNKNOWN
        assert sender.address == "" and sender.metadata.get_all() == {}
    finally:
        stranger.stop(timeout=2.0)
        server.stop(timeout=2.0)


def test_refused_without_a_stream_handler(two: tuple[Cluster, Cluster]) -> None:
    server, client = two
    with pytest.raises(StreamRefused, match="no stream handler") as err:
        client.open_stream(server.local_node(), T)
    assert "no stream handler" in err.value.reason
    server.handle_func(T, lambda sender, p: None)  # a message handler does not serve streams
    with pytest.raises(StreamRefused):
        client.open_stream(server.local_node(), T)
    assert stream_stats(server)["streams.refused"] == 2
    assert stream_stats(client)["streams.open_refused"] == 2
    assert stream_stats(client)["streams.active"] == 0


def test_a_stream_cut_for_too_many_openings_says_it_may_be_that(net: MemoryNetwork) -> None:
    """The per-source cut closes the connection unanswered (it costs no thread); the opener's
    error names that cause beside the others, so a user whose many threads open at once is
    not sent looking for a wrong key."""
    server = start(net, max_opening_streams_per_source=1, stream_open_timeout=30.0)
    transport = net.new_transport()
    client = Cluster(Config.local(transport=transport))
    client.start()
    try:
        server.handle_stream_func(T, lambda sender, packet, stream: stream.close())
        held = transport.dial_stream(server.address, WAIT)   # from the client's host, silent
        wait_until(lambda: server.stats().get("streams.refused_per_source", 0) == 0 and
                   len(server._engine.streams._opening_per_source) == 1, "the held opening")
        with pytest.raises(StreamRefused, match="max_opening_streams_per_source"):
            client.open_stream(server.local_node(), T)
        assert stream_stats(server)["streams.refused_per_source"] == 1
        held.close()
    finally:
        client.stop(timeout=2.0)
        server.stop(timeout=2.0)


def test_a_member_opening_many_streams_at_once_is_never_cut(two: tuple[Cluster, Cluster]) -> None:
    """Twelve threads of one member open streams to one peer at the same instant, three times
    the peer's max_opening_streams_per_source: the opener keeps its own openings to a host
    within that limit, and the peer counts an opening only until its OPEN is authentic, so
    none is cut."""
    server, client = two
    server.handle_stream_func(T, lambda sender, packet, stream: (stream.read_msg(T), stream.close()))
    start_all = threading.Barrier(12, timeout=WAIT)
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            start_all.wait()
            for _ in range(3):
                with client.open_stream(server.local_node(), T) as s:
                    s.write_msg(T, "x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert errors == [] and stream_stats(server)["streams.refused_per_source"] == 0
    assert stream_stats(client)["streams.opened"] == 36


def test_registration_rules(two: tuple[Cluster, Cluster]) -> None:
    server, client = two
    with pytest.raises(LocalProtocolError):
        server.handle_stream_func(63, lambda *a: None)
    server.handle_stream_func(T, lambda sender, p, s: s.write(b"served"))
    with pytest.raises(HandlerExistsError):
        server.handle_stream_func(T, lambda *a: None)
    with pytest.raises(HandlerExistsError):
        server.handle_func(T, lambda *a: None)
    with client.open_stream(server.local_node(), T) as s:
        assert s.read() == b"served"
    # A plain message of a stream type has no message handler: counted, no harm done.
    before = server.stats().get("user.unhandled", 0)
    client.send_to_reliable(server.local_node(), T, "not a stream")
    wait_until(lambda: server.stats().get("user.unhandled", 0) > before, "the message")
    assert server.unregister_message_type(T)
    with pytest.raises(StreamRefused):
        client.open_stream(server.local_node(), T)
    with pytest.raises(LocalProtocolError):
        client.open_stream(server.local_node(), 12)


def test_refused_when_the_pool_is_full(net: MemoryNetwork) -> None:
    server = start(net, max_concurrent_streams=1)
    client = start(net)
    release = threading.Event()
    try:
        server.handle_stream_func(T, lambda sender, p, s: release.wait(WAIT))
        first = client.open_stream(server.local_node(), T)
        with pytest.raises(StreamRefused, match="pool is full") as err:
            client.open_stream(server.local_node(), T)
        assert "max_concurrent_streams=1" in err.value.reason
        release.set()
        assert first.read() == b""
        first.close()
        # Once the handler returned its slot is free again.
        wait_until(lambda: stream_stats(server)["streams.active"] == 0, "the slot to free")
        with client.open_stream(server.local_node(), T) as again:
            assert again.read() == b""
        assert stream_stats(server)["streams.refused"] == 1
    finally:
        release.set()
        client.stop(timeout=2.0)
        server.stop(timeout=2.0)


def test_open_times_out_and_closes_the_connection(net: MemoryNetwork) -> None:
    silent = net.new_transport()
    held: list[StreamConn] = []
    silent.start(lambda batch: None, held.append)  # accepts streams, never answers
    client = start(net)
    try:
        target = Node(gossip.NodeID.generate(), silent.local_addr, gossip.NodeState.ALIVE, 0,
                      gossip.MetadataReader({}, 0))
        with pytest.raises(GossipTimeout, match="no answer within"):
            client.open_stream(target, T, timeout=0.2)
        assert len(held) == 1
        with pytest.raises(TransportError):  # the opener closed its end: nothing half open
            held[0].recv_frame(WAIT)
            held[0].recv_frame(WAIT)
        assert stream_stats(client)["streams.active"] == 0
    finally:
        client.stop(timeout=2.0)
        silent.close()


def test_handler_error_is_counted_and_aborts_the_stream(two: tuple[Cluster, Cluster]) -> None:
    server, client = two

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        stream.write(b"before")
        raise ValueError("broken handler")

    server.handle_stream_func(T, handler)
    with client.open_stream(server.local_node(), T) as s:
        assert s.read(6) == b"before"
        with pytest.raises(RemoteHandlerError, match="ValueError: broken handler"):
            s.read()
    wait_until(lambda: stream_stats(server)["streams.handler_errors"] == 1, "the error count")


def test_key_rotation_while_a_stream_is_open(two: tuple[Cluster, Cluster]) -> None:
    server, client = two
    chunks: list[bytes] = []

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        while True:
            try:
                msg = stream.read_msg(400)
            except EOFError:
                return
            stream.write_msg(401, msg[::-1])

    server.handle_stream_func(T, handler)
    with client.open_stream(server.local_node(), T) as s:
        s.write_msg(400, "before")
        chunks.append(s.read_msg(401))
        for c in (server, client):  # rotate: install, use, remove the old key
            assert c.keyring is not None
            c.keyring.add_key(KEY2)
        for c in (server, client):
            assert c.keyring is not None
            c.keyring.use_key(KEY2)
        for c in (server, client):
            assert c.keyring is not None
            c.keyring.remove_key(KEY1)
        s.write_msg(400, "after")
        chunks.append(s.read_msg(401))
        # A stream opened now uses the new key.
        with client.open_stream(server.local_node(), T) as s2:
            s2.write_msg(400, "new")
            chunks.append(s2.read_msg(401))
        s.close_write()
    assert chunks == ["erofeb", "retfa", "wen"]


@pytest.mark.parametrize("other", [{"encryption_key": KEY2}, {"encryption_key": KEY1,
                                                             "cluster_label": "other"}, {}],
                         ids=["other-key", "other-label", "no-key"])
def test_another_cluster_cannot_open_a_stream(net: MemoryNetwork, other: dict[str, Any]) -> None:
    server = start(net, encryption_key=KEY1)
    outsider = start(net, **other)
    try:
        served: list[object] = []
        server.handle_stream_func(T, lambda *a: served.append(a))
        with pytest.raises(StreamRefused, match="without answering"):
            outsider.open_stream(server.local_node(), T, timeout=2.0)
        wait_until(lambda: stream_stats(server)["streams.bad_opens"] == 1, "the bad open")
        assert served == []
    finally:
        outsider.stop(timeout=2.0)
        server.stop(timeout=2.0)


def test_stop_ends_open_streams_and_joins_every_thread(net: MemoryNetwork) -> None:
    before = gossip_threads()
    server = start(net)
    client = start(net)
    outcomes: list[str] = []
    entered = threading.Semaphore(0)

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        entered.release()
        try:
            stream.read()
            outcomes.append("clean end")
        except ClusterClosed:
            outcomes.append("cluster closed")

    server.handle_stream_func(T, handler)
    streams = [client.open_stream(server.local_node(), T) for _ in range(3)]
    for _ in streams:
        assert entered.acquire(timeout=WAIT)
    assert stream_stats(server)["streams.active"] == 3
    server.stop(timeout=5.0)
    assert sorted(outcomes) == ["cluster closed"] * 3
    for s in streams:
        with pytest.raises(TransportError):
            s.read()
    # A stream whose own cluster stops: its calls raise ClusterClosed.
    other = start(net)
    other.handle_stream_func(T, lambda sender, p, s: s.read())
    mine = client.open_stream(other.local_node(), T)
    client.stop(timeout=5.0)
    with pytest.raises(ClusterClosed):
        mine.write(b"x")
    with pytest.raises(ClusterClosed):
        mine.read(1)
    other.stop(timeout=5.0)
    for s in streams:
        s.close()
    wait_until(lambda: gossip_threads() == before, f"no gossip thread left ({gossip_threads()})")
    with pytest.raises(ClusterClosed):
        client.open_stream(server.local_node(), T)


# ---------------------------------------------------------------------------------- the pool alone


class _SilentConn:
    """An accepted stream connection whose opener never sends its OPEN (until closed)."""

    max_frame_size = 1 << 20

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed = threading.Event()

    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        if not self.closed.wait(timeout):
            raise GossipTimeout("no OPEN")
        raise TransportError("closed")

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        raise TransportError("closed")

    def close_write(self) -> None: ...

    def close(self) -> None:
        self.closed.set()


def test_a_pool_given_its_collaborators_cuts_one_host_s_excess_openings() -> None:
    from gossip.counters import Counters
    from gossip.engine.stream_pool import StreamPool
    from gossip.handlers import MessageHandlers
    from gossip.hlc import HLC
    from gossip.packet import PacketCodec

    counters, warnings = Counters(), []
    pool = StreamPool(
        Config.local(max_opening_streams_per_source=2, stream_open_timeout=30.0), PacketCodec(),
        sender_id=bytes(16), hlc=HLC(), handlers=MessageHandlers(),
        node_for_sender=lambda sender: pytest.fail("no opener got that far"),
        dial=lambda addr, timeout: pytest.fail("nothing dials"), check_open=lambda: None,
        counters=counters, log=logging.getLogger("gossip.test"),
        warn=lambda *args: warnings.append(args[0]), prefix="gossip-test")
    conns = [_SilentConn(f"127.0.0.2:{4000 + i}") for i in range(3)] + [_SilentConn("127.0.0.3:4000")]
    for conn in conns:
        pool.on_stream(conn)
    assert [c.closed.is_set() for c in conns] == [False, False, True, False]  # the third from .2
    assert counters.snapshot()["streams.refused_per_source"] == 1
    assert warnings == ["streams_per_source"]
    pool.close()
    for conn in conns:
        conn.close()
    assert pool.join(time.monotonic() + WAIT) == []


def test_when_refusals_back_up_new_stream_connections_are_cut_and_counted(
        net: MemoryNetwork, caplog: pytest.LogCaptureFixture) -> None:
    """The pool is full and the refuser's queue too: connections that never say what they want
    (each costs the refuser up to a second) are cut at once, counted and warned about."""
    server = start(net, max_concurrent_streams=1)
    silent = [net.new_transport() for _ in range(40)]
    conns: list[StreamConn] = []
    try:
        for t in silent:     # each from its own host, so the per-source limit plays no part
            t.start(lambda batch: None)
        with caplog.at_level(logging.WARNING, logger="gossip"):
            for t in silent:
                conns.append(t.dial_stream(server.address, WAIT))
            wait_until(lambda: stream_stats(server)["streams.refused"] >= 1, "a cut connection")
        assert any("refusals backed up" in r.getMessage() for r in caplog.records)
        assert stream_stats(server)["streams.refused_per_source"] == 0
    finally:
        for c in conns:
            c.close()
        for t in silent:
            t.close()
        server.stop(timeout=2.0)
