"""User handlers never run on a transport's I/O thread: a reply handler that blocks holds up
neither the protocol traffic nor the stream openings that share its transport.

The handler here blocks until the test releases it, so the outcome never depends on timing:
with a handler on the I/O thread, nothing else on that thread moves until the release.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

import gossip
from gossip import Cluster, Config, NodeID
from gossip import messages as m
from gossip.errors import StreamRefused
from gossip.packet import PacketCodec
from gossip.transports.socket import PREAMBLE_FRAMES

from . import scaled, wait_until
from .test_loopback import node_of, stop_all, wait_converged

SLOW = gossip.USER_MSG + 41
NO_STREAM_HANDLER = gossip.USER_MSG + 42


@pytest.fixture
def blocked_pair() -> Iterator[tuple[Cluster, Cluster, threading.Event]]:
    """Two socket nodes; the second one's reply handler for SLOW is blocked in a request of the
    first one until the event is set."""
    clusters = [Cluster(Config.local(bind_addr="127.0.0.1:0")) for _ in range(2)]
    release, entered = threading.Event(), threading.Event()
    asker: threading.Thread | None = None
    try:
        for c in clusters:
            c.start()
        a, b = clusters
        assert a.join(b.address, timeout=scaled(5.0)) == 1
        wait_converged(clusters)

        def slow(sender: gossip.Node | None, packet: gossip.Packet) -> str:
            entered.set()
            release.wait(scaled(60.0))
            return "late answer"

        b.handle_func_with_reply(SLOW, slow)
        target = node_of(a, b)
        asker = threading.Thread(
            target=lambda: a.send_to_with_response(target, SLOW, "question", timeout=scaled(70.0)),
            name="test-asker")
        asker.start()
        wait_until(lambda: entered.is_set(), 10.0, "the slow handler is running")
        yield a, b, release
    finally:
        release.set()
        if asker is not None:
            asker.join(scaled(10.0))
        stop_all(clusters)


def test_protocol_frames_are_read_while_a_reply_handler_blocks(
        blocked_pair: tuple[Cluster, Cluster, threading.Event]) -> None:
    a, b, release = blocked_pair
    codec = PacketCodec()
    mt, value = m.to_wire(m.Nack(4242))
    packet = codec.encode(mt, NodeID.generate().bytes, 1, 1, value)
    before = b.stats().get("packets_in.tcp.nack", 0)
    host, port = b.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=scaled(5.0)) as raw:
        raw.sendall(PREAMBLE_FRAMES + struct.pack(">I", len(packet)) + packet)
        wait_until(lambda: b.stats().get("packets_in.tcp.nack", 0) > before, 10.0,
                   "the node reads a protocol frame over TCP while the handler still blocks")
    assert not release.is_set()


def test_stream_opens_do_not_wait_for_a_blocked_reply_handler(
        blocked_pair: tuple[Cluster, Cluster, threading.Event]) -> None:
    a, b, release = blocked_pair
    with pytest.raises(StreamRefused, match="no stream handler"):
        a.open_stream(node_of(a, b), NO_STREAM_HANDLER, "open?", timeout=scaled(20.0))
    assert not release.is_set()
