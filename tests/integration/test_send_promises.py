"""The send table of the manual (docs/messages.md), kept over real sockets on loopback.

Each promise of "Sending messages: what each call promises" is driven the way a user meets it:
a compressible message bigger than a datagram may expand to, a member known dead, a frame lost
with its connection, a full socket buffer under the ``"raise"`` policy, a relay that finds the
send queue full, and the error paths of request/reply. Every condition is made certain (a
handler or transport that blocks until released, a buffer proven full), never hoped for; every
wait is bounded.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import gossip
from gossip import Cluster, Config, Keyring, Node, NodeID, NodeState
from gossip.errors import MessageTooLarge
from gossip.httpapi import app
from gossip.metadata import MetadataReader
from gossip.packet import PacketCodec
from gossip.wire import MessageType

from . import scaled, wait_until

MT = gossip.USER_MSG + 60

# Compresses to about 1 kB, decompresses to 200 kB: over the 64 KiB a datagram may expand to.
MATRIX = {"matrix": [[0] * 1000 for _ in range(100)]}


RAISE = {"best_effort_full_policy": "raise"}


def _start(*configs: dict[str, Any]) -> list[Cluster]:
    """Start one node per config, joined through the first; wait until all see all alive."""
    n = len(configs)
    clusters: list[Cluster] = []
    try:
        for kw in configs:
            c = Cluster(Config.local(bind_addr="127.0.0.1:0", **kw))
            c.start()
            clusters.append(c)
        for c in clusters[1:]:
            assert c.join(clusters[0].address, timeout=scaled(5.0)) == 1
        wait_until(lambda: all(c.num_alive_nodes() == n for c in clusters), 15.0,
                   f"{n} nodes alive everywhere")
    except BaseException:
        _stop(clusters)
        raise
    return clusters


def _stop(clusters: list[Cluster]) -> None:
    threads = [threading.Thread(target=c.stop, kwargs={"timeout": 3.0}) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _node(viewer: Cluster, target: Cluster) -> Node:
    node = viewer.get_node(target.local_node().id)
    assert node is not None
    return node


def _post(api: Any, path: str, body: Any) -> tuple[str, Any]:
    """Call the WSGI app ``api`` with a JSON POST; return the status and the JSON answer."""
    raw = json.dumps(body).encode()
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "",
                               "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json",
                               "wsgi.input": io.BytesIO(raw)}
    setup_testing_defaults(environ)
    got: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        got.append(status)
        return lambda data: None

    result = b"".join(api(environ, start_response))
    return got[0], json.loads(result)


@pytest.fixture
def trio() -> Iterator[list[Cluster]]:
    clusters = _start({}, {}, {})
    yield clusters
    _stop(clusters)


def _collect(c: Cluster, forward: bool = True) -> list[Any]:
    got: list[Any] = []
    register = c.handle_func if forward else c.handle_func_no_forward
    register(MT, lambda s, p: got.append(p.unmarshal()))
    return got


# ----------------------------------------------------------- big compressible best-effort sends


def test_a_compressible_message_over_64k_sent_best_effort_is_delivered(trio: list[Cluster]) -> None:
    a, b, _ = trio
    got = _collect(b, forward=False)
    a.send_to(_node(a, b), MT, MATRIX)
    wait_until(lambda: len(got) == 1, 10.0, "the 200 kB matrix arrived")
    assert got[0] == MATRIX
    assert "bad_packets.PacketTooLarge" not in b.stats()
    # It went over a connection, since no receiver takes a datagram that expands that much.
    assert a.stats().get("packets_out.tcp.user", 0) == 1
    assert a.stats().get("packets_out.udp.user", 0) == 0


def test_a_compressible_broadcast_over_64k_reaches_every_node_hop_by_hop(
        trio: list[Cluster]) -> None:
    a, b, c = trio
    got_b, got_c = _collect(b), _collect(c)
    # The first hop goes to b alone; c can only get it from b's relay.
    a.send_excluding(MT, MATRIX, [c.local_node().id])
    wait_until(lambda: got_b == [MATRIX] and got_c == [MATRIX], 10.0,
               "the broadcast reached b, then c through b's relay")
    assert b.stats().get("user.relayed", 0) >= 1
    for node in trio:
        assert "bad_packets.PacketTooLarge" not in node.stats()


def test_a_payload_a_receiver_would_refuse_decompressed_raises_at_the_sender(
        trio: list[Cluster]) -> None:
    # 8 MiB of zeros compresses to about 32 kB: a frame that fits, but a receiver decompresses
    # within tcp_max_packet_size (4 MiB) only. The sender must say so, not send it to be lost.
    a, b, _ = trio
    got = _collect(b, forward=False)
    blob = bytes(8 << 20)
    with pytest.raises(MessageTooLarge, match="max_packet_size"):
        a.send_to(_node(a, b), MT, blob)
    with pytest.raises(MessageTooLarge):
        a.send_to_reliable(_node(a, b), MT, blob)
    with pytest.raises(MessageTooLarge):
        a.send(MT, blob)
    assert got == []
    assert "bad_packets.PacketTooLarge" not in b.stats()


# ----------------------------------------------------------- best-effort sends to dead or left


def test_a_best_effort_send_to_a_dead_or_left_member_raises_or_is_counted() -> None:
    # a raises under the "raise" policy; c drops under "drop" (the default): both say why.
    clusters = b, d, a, c = _start({}, {}, RAISE, {})
    try:
        got = _collect(a, forward=False)
        b_id, d_id = b.local_node().id, d.local_node().id
        d.stop(timeout=3.0)  # leaves gracefully
        b._crash()           # gone without a word
        for x in (a, c):
            wait_until(lambda x=x: (x.get_node(b_id).state is NodeState.DEAD  # type: ignore[union-attr]
                                    and x.get_node(d_id).state is NodeState.LEAVING),  # type: ignore[union-attr]
                       30.0, "b is dead and d left, as a and c see it")

        for gone_id, state in ((b_id, "dead"), (d_id, "left")):
            node = a.get_node(gone_id)
            assert node is not None
            with pytest.raises(gossip.NodeUnavailable, match=f"is {state}") as info:
                a.send_to(node, MT, "hello")
            assert info.value.state == state and info.value.node_id == str(gone_id)
            assert isinstance(info.value, gossip.TransportError)
            assert a.stats()[f"dropped.node_{state}"] == 1
            c_node = c.get_node(gone_id)
            assert c_node is not None
            c.send_to(c_node, MT, "hello")  # the drop policy: no raise, but counted
            assert c.stats()[f"dropped.node_{state}"] == 1

        # Judged by the state now, not by the caller's old snapshot (taken while b was alive).
        stale = Node(b_id, a.get_node(b_id).address, NodeState.ALIVE, 0, MetadataReader())  # type: ignore[union-attr]
        with pytest.raises(gossip.NodeUnavailable):
            a.send_to(stale, MT, "hello")
        # The agent's API (and so `gossip send --to`) answers 409 with the reason, not "sent".
        api = app(c)
        try:
            status, answer = _post(api, "/api/send", {"type": MT, "data": "x", "node": str(b_id)})
        finally:
            api.close()
        assert status == "409 Conflict" and f"{b_id.short} is dead" in answer["error"]
        # send_to_peers sends to the live ones, then raises (or counts) for the others.
        a_node = c.get_node(a.local_node().id)
        assert a_node is not None
        c.send_to_peers([c.get_node(b_id), a_node], MT, "to a")  # type: ignore[list-item]
        wait_until(lambda: got == ["to a"], 10.0, "a got the message")
        assert c.stats()["dropped.node_dead"] == 2
    finally:
        _stop(clusters)


# ----------------------------------------------------------- request / reply: the error paths


def _fake_peer(port: int) -> Node:
    return Node(NodeID.generate(), f"127.0.0.1:{port}", NodeState.ALIVE, 0, MetadataReader())


class _RawPeer:
    """A TCP listener that reads one request frame and then does what a test says: close,
    answer with given bytes, or hold the connection open without answering until released."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.got_request = threading.Event()
        self._threads: list[threading.Thread] = []

    def serve_once(self, answer: bytes | None) -> None:
        t = threading.Thread(target=self._serve, args=(answer,), daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self, answer: bytes | None) -> None:
        self.listener.settimeout(scaled(10.0))
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(scaled(10.0))
            buf = b""
            while len(buf) < 4 + 4 or len(buf) < 8 + struct.unpack_from(">I", buf, 4)[0]:
                chunk = conn.recv(65536)  # the 4-byte preamble, then one length-prefixed frame
                if not chunk:
                    return
                buf += chunk
            self.got_request.set()
            if answer is not None:
                conn.sendall(struct.pack(">I", len(answer)) + answer)
            else:
                self.release.wait(scaled(10.0))

    def close(self) -> None:
        self.release.set()
        for t in self._threads:
            t.join(scaled(10.0))
        self.listener.close()


def test_request_error_paths_say_what_went_wrong() -> None:
    a = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    a.start()
    peer = _RawPeer()
    try:
        node = _fake_peer(peer.port)
        # The peer closes the connection without answering: the public SendError (never a
        # private type), naming the address.
        peer.serve_once(None)
        peer.release.set()
        with pytest.raises(gossip.SendError, match="closed by peer") as closed:
            a.send_to_with_response(node, MT, "q", timeout=scaled(5.0))
        assert type(closed.value) is gossip.SendError and f":{peer.port}" in str(closed.value)
        peer.release.clear()
        # It answers garbage, then a packet that is not a reply: DecodeError naming the node.
        peer.serve_once(b"hello")
        with pytest.raises(gossip.DecodeError, match=f"node {node.id.short}@.*refused here"):
            a.send_to_with_response(node, MT, "q", timeout=scaled(5.0))
        assert a.stats()["bad_packets.DecodeError"] == 1
        peer.serve_once(a._codec.encode(MT, NodeID.generate().bytes, 1, 1, "x"))
        with pytest.raises(gossip.DecodeError, match="not a reply"):
            a.send_to_with_response(node, MT, "q", timeout=scaled(5.0))
        # An answer sealed with a key this node does not hold.
        sealed = PacketCodec(keyring=Keyring([os.urandom(32)]))
        peer.serve_once(sealed.encode(int(MessageType.REPLY), NodeID.generate().bytes, 1, 1, "x"))
        with pytest.raises(gossip.EncryptionError, match=f"node {node.id.short}@"):
            a.send_to_with_response(node, MT, "q", timeout=scaled(5.0))
        # It reads the request and never answers: GossipTimeout naming the node.
        peer.serve_once(None)
        with pytest.raises(gossip.GossipTimeout, match=f"no reply from node {node.id.short}@"):
            a.send_to_with_response(node, MT, "q", timeout=0.3)
        assert peer.got_request.is_set()
        peer.release.set()
        # Nobody listens: ConnectError.
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))
            with pytest.raises(gossip.ConnectError):
                a.send_to_with_response(_fake_peer(closed_port.getsockname()[1]), MT, "q",
                                        timeout=scaled(5.0))
    finally:
        peer.close()
        a.stop(timeout=3.0)


@dataclass
class Point:
    x: int
    y: int


def test_reply_encoding_errors_reach_the_requester(trio: list[Cluster]) -> None:
    a, b, _ = trio
    answers: dict[str, Any] = {"unencodable": object(), "too big": os.urandom(5 << 20),
                               "wrong shape": {"x": "not an int"}}
    b.handle_func_with_reply(MT, lambda s, p: answers[p.unmarshal()])
    node = _node(a, b)
    with pytest.raises(gossip.RemoteHandlerError, match="could not be encoded.*object"):
        a.send_to_with_response(node, MT, "unencodable", timeout=scaled(5.0))
    with pytest.raises(gossip.RemoteHandlerError, match="could not be encoded.*max_packet_size"):
        a.send_to_with_response(node, MT, "too big", timeout=scaled(5.0))
    assert b.stats()["user.reply_encode_errors"] == 2
    # Counted once the answer is written, which may be after the requester read it.
    wait_until(lambda: b.stats().get("user.error_replies") == 2, 5.0, "two error replies counted")
    with pytest.raises(gossip.DecodeError):
        a.send_to_with_response(node, MT, "wrong shape", Point, timeout=scaled(5.0))


# ----------------------------------------------------------- drops, each made certain


def test_frames_accepted_on_a_connection_that_breaks_are_counted_as_lost() -> None:
    # The peer never reads, so the connection's buffer fills and stays full; then it crashes
    # (a reset): what the buffer held is lost, and counted as dropped.connection_lost.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    peer = _fake_peer(listener.getsockname()[1])
    a = Cluster(Config.local(bind_addr="127.0.0.1:0", connection_buffer_size=64 * 1024,
                             send_timeout=0.0))
    a.start()
    payload = os.urandom(1000)  # incompressible: the kernel's buffers fill with real bytes

    def fill() -> int:
        """Send until the connection's buffer is full (SendQueueFull); return how many went."""
        n = 0
        while True:
            try:
                a.send_to_reliable(peer, MT, payload)
            except gossip.SendQueueFull:
                return n
            n += 1

    try:
        accepted = fill()
        # The buffer was full, but the I/O thread may still move it into the kernel's: fill
        # again until it stays full, i.e. until the kernel, which the peer never drains, is.
        end = time.monotonic() + scaled(20.0)
        full_in_a_row = 0
        while full_in_a_row < 10:
            assert time.monotonic() < end, "the connection's buffer never stayed full"
            time.sleep(0.02)
            more = fill()
            accepted += more
            full_in_a_row = full_in_a_row + 1 if more == 0 else 0
        assert "dropped.connection_lost" not in a.stats()
        listener.settimeout(scaled(5.0))
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # with linger 0: a reset, as from a crashed peer's kernel
        wait_until(lambda: a.stats().get("dropped.connection_lost", 0) > 0, 10.0,
                   "the frames lost with the connection are counted")
        # At least the buffer's worth (64 KiB of 1 kB frames), at most what was accepted.
        assert 50 <= a.stats()["dropped.connection_lost"] <= accepted
    finally:
        a.stop(timeout=3.0)
        listener.close()


class _FullUdpBuffer:
    """Stands in for a UDP socket whose send buffer is full for user packets: ``sendto``
    raises what a full non-blocking socket raises (``BlockingIOError``); the rest is the real
    socket's. The condition is certain, where filling a real loopback buffer is a race."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def sendto(self, data: bytes, addr: Any) -> int:
        (msg_type,) = struct.unpack_from(">H", data, 8)  # plain packets: after the prefix
        if msg_type >= gossip.RESERVED_MSGS_START:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return self.real.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_full_udp_send_buffer_drops_and_counts_or_raises_under_the_raise_policy() -> None:
    clusters = b, a, c = _start({}, RAISE, {})
    try:
        got = _collect(b, forward=False)
        sides = [x._engine.transport.socket for x in (a, c)]  # type: ignore[union-attr]
        for side in sides:
            side._udp.sock = _FullUdpBuffer(side._udp.sock)  # type: ignore[union-attr]
        with pytest.raises(gossip.SendQueueFull, match="UDP send buffer is full"):
            a.send_to(_node(a, b), MT, "raised")
        assert a.stats()["dropped.udp_send_buffer_full"] == 1
        with pytest.raises(gossip.SendQueueFull):
            a.send_excluding(MT, "broadcast", [c.local_node().id])  # the first hop, as send_to
        assert a.stats()["dropped.udp_send_buffer_full"] == 2
        c.send_to(_node(c, b), MT, "dropped")  # the drop policy: no raise, counted
        assert c.stats()["dropped.udp_send_buffer_full"] == 1
        for side in sides:
            side._udp.sock = side._udp.sock.real  # type: ignore[union-attr]
        a.send_to(_node(a, b), MT, "sent")
        wait_until(lambda: got == ["sent"], 10.0, "the message sent once the buffer had room")
    finally:
        _stop(clusters)
