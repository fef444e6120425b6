"""User messages are never lost silently: back-pressure, counted drops, remote handler errors.

Real sockets on loopback. Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

import pytest

import gossip
from gossip import Cluster, Config, Node, NodeID, NodeState
from gossip.errors import RemoteHandlerError, SendQueueFull
from gossip.metadata import MetadataReader
from gossip.transports.socket import PREAMBLE_FRAMES

from . import scaled, wait_until

MT = gossip.USER_MSG + 40


def _pair(**kw: object) -> tuple[Cluster, Cluster]:
    a = Cluster(Config.local(bind_addr="127.0.0.1:0", **kw))
    b = Cluster(Config.local(bind_addr="127.0.0.1:0", **kw))
    a.start()
    b.start()
    assert b.join(a.address, timeout=scaled(5.0)) == 1
    wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10.0, "2 nodes")
    return a, b


def _wait_delivered(done: threading.Event, got: list[int], total: int, a: Cluster,
                    b: Cluster) -> None:
    """Wait for the whole flood while it moves: fail only when no message arrived for a minute
    (a stall), however slowly a loaded host delivers the rest."""
    stalled_after = scaled(60.0)
    last, since = -1, time.monotonic()
    while not done.wait(1.0):
        n = len(got)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stalled_after:
            # Enough to tell a lost connection (frames gone with it) from a stuck one.
            keys = ("transport.tcp_send_waits", "transport.tcp_paused", "transport.tcp_dials",
                    "transport.tcp_accepts", "transport.tcp_frame_timeouts", "transport.tcp_idle_closed",
                    "transport.tcp_frames_lost")
            pytest.fail(f"delivery stalled at {n} of {total} for {stalled_after:.0f} s; "
                        f"sender {dict((k[10:], a.stats().get(k)) for k in keys)}, "
                        f"receiver {dict((k[10:], b.stats().get(k)) for k in keys)}")


def test_reliable_flood_delivers_everything_in_order_and_paces_the_sender() -> None:
    # The receiver's handler blocks until the sender has been paced: its lane fills, the
    # receiver pauses reading the connection, the kernel buffers and then the sender's
    # connection buffer fill, and the sender waits. Only then is the handler released, so the
    # back-pressure is certain whatever the speed of the host, and everything must still
    # arrive, in order, with nothing dropped.
    a, b = _pair(connection_buffer_size=64 * 1024, incoming_packet_queue_depth=64,
                 send_timeout=scaled(60.0))
    total = 200_000
    pad = bytes(96)   # 100-byte payloads: 20 MB in all, far more than every buffer on the path
    got: list[int] = []
    done = threading.Event()
    release = threading.Event()
    paced = threading.Event()

    def handler(sender: Node | None, packet: gossip.Packet) -> None:
        release.wait()
        got.append(int.from_bytes(packet.unmarshal()[:4], "big"))
        if len(got) == total:
            done.set()

    def watch() -> None:
        end = time.monotonic() + scaled(60.0)
        while time.monotonic() < end:
            if (a.stats().get("transport.tcp_send_waits", 0) > 0
                    and b.stats().get("transport.tcp_paused", 0) > 0):
                paced.set()
                break
            time.sleep(0.01)
        release.set()

    watcher = threading.Thread(target=watch, name="test-watch-pacing", daemon=True)
    try:
        b.handle_func_no_forward(MT, handler)
        node_b = a.get_node(b.local_node().id)
        assert node_b is not None
        watcher.start()
        for i in range(total):
            a.send_to_reliable(node_b, MT, i.to_bytes(4, "big") + pad)
        _wait_delivered(done, got, total, a, b)
        assert paced.is_set(), "the sender was never paced and the receiver never paused"
        assert got == list(range(total))
        sa, sb = a.stats(), b.stats()
        assert sa["transport.tcp_send_waits"] > 0       # the sender was paced...
        assert sb["transport.tcp_paused"] > 0           # ...because the receiver paused reading
        assert not [k for k in (*sa, *sb) if k.startswith("dropped.") and k != "dropped.kernel_udp"]
        assert sa.get("transport.tcp_frames_lost", 0) == 0
    finally:
        release.set()
        if watcher.is_alive():
            watcher.join(scaled(5.0))
        a.stop(timeout=3.0)
        b.stop(timeout=3.0)


def test_a_peer_that_stops_reading_makes_reliable_sends_raise_and_loses_nothing() -> None:
    # The "peer" is a listener whose connections are never read from, until we decide to.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    peer = Node(NodeID.generate(), f"127.0.0.1:{port}", NodeState.ALIVE, 0, MetadataReader())
    a = Cluster(Config.local(bind_addr="127.0.0.1:0", connection_buffer_size=64 * 1024,
                             send_timeout=0.3))
    a.start()
    conn: socket.socket | None = None
    try:
        accepted = 0
        payload = b"y" * 1000
        with pytest.raises(SendQueueFull):
            for _ in range(100_000):
                a.send_to_reliable(peer, MT, payload)
                accepted += 1
        assert accepted > 0
        assert a.stats()["user.send_timeouts"] == 1
        # Now read everything: every accepted message is there, and nothing more.
        listener.settimeout(scaled(5.0))
        conn, _ = listener.accept()
        conn.settimeout(scaled(5.0))
        buf = bytearray()
        while len(buf) < 4:
            buf += conn.recv(65536)
        assert bytes(buf[:4]) == PREAMBLE_FRAMES
        del buf[:4]
        frames = 0
        deadline = time.monotonic() + scaled(20.0)
        while frames < accepted and time.monotonic() < deadline:
            while len(buf) >= 4:
                (n,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + n:
                    break
                del buf[:4 + n]
                frames += 1
            if frames < accepted:
                buf += conn.recv(1 << 20)
        assert frames == accepted
        assert a.stats().get("transport.tcp_frames_lost", 0) == 0
    finally:
        if conn is not None:
            conn.close()
        a.stop(timeout=3.0)
        listener.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RXQ_OVFL is Linux's")
def test_kernel_udp_drops_are_counted() -> None:
    b = Cluster(Config.local(bind_addr="127.0.0.1:0", udp_recv_buffer_size=2048))
    b.start()
    try:
        host, _, port = b.address.rpartition(":")
        blocker = threading.Event()
        b.handle_func_no_forward(MT, lambda s, p: blocker.wait(0.001))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            data = b._codec.encode(MT, NodeID.generate().bytes, 1, 1, b"z" * 512)
            for _ in range(20):
                for _ in range(500):  # a burst far bigger than a 2 KiB receive buffer
                    raw.sendto(data, (host, int(port)))
                if b.stats().get("transport.udp_kernel_drops", 0):
                    break
                time.sleep(0.01)
        wait_until(lambda: b.stats().get("dropped.kernel_udp", 0) > 0, 5.0,
                   "the kernel's drops are counted")
        assert b.stats()["transport.udp_rcvbuf"] < 65536  # what the kernel granted, reported
    finally:
        b.stop(timeout=3.0)


def test_a_raising_reply_handler_gives_remote_handler_error() -> None:
    a, b = _pair()
    try:
        def boom(sender: Node | None, packet: gossip.Packet) -> None:
            raise ValueError("no such key: " + packet.unmarshal())

        b.handle_func_with_reply(MT, boom)
        b.handle_func_no_forward(MT + 1, lambda s, p: None)  # not a reply handler
        node_b = a.get_node(b.local_node().id)
        assert node_b is not None
        with pytest.raises(RemoteHandlerError) as info:
            a.send_to_with_response(node_b, MT, "k1", timeout=scaled(5.0))
        assert "ValueError: no such key: k1" in info.value.remote_message
        assert info.value.msg_type == MT
        with pytest.raises(RemoteHandlerError, match="no reply handler"):
            a.send_to_with_response(node_b, MT + 1, "x", timeout=scaled(5.0))
        with pytest.raises(RemoteHandlerError, match="no handler"):
            a.send_to_with_response(node_b, MT + 2, "x", timeout=scaled(5.0))
        b.unregister_message_type(MT)
        b.handle_func_with_reply(MT, lambda s, p: None)
        assert a.send_to_with_response(node_b, MT, "k1", timeout=scaled(5.0)) is None
    finally:
        a.stop(timeout=3.0)
        b.stop(timeout=3.0)
