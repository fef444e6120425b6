"""A gossip frame that arrives as a fragmented WebSocket message (RFC 6455 section 5.4).

A peer may split one binary message into a first frame and continuation frames; the node
must deliver the reassembled frame, hold the size limits over the whole message, not over
one fragment, and never take a text message for a frame. Real sockets on loopback.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

import gossip
from gossip import Cluster, Config, Node, NodeID, Packet

from . import scaled, wait_until

MT = gossip.USER_MSG + 31


@pytest.fixture
def node() -> Iterator[Cluster]:
    c = Cluster(Config.local(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0",
                             tcp_preauth_max_frame_size=64 * 1024))
    c.start()
    try:
        yield c
    finally:
        c.stop(timeout=3.0)


def _stat(c: Cluster, name: str) -> int:
    return sum(v for k, v in c.stats().items() if k.endswith(name))


def test_a_fragmented_message_is_delivered_whole(node: Cluster) -> None:
    got: list[bytes] = []
    node.handle_func_no_forward(MT, lambda sender, packet: got.append(packet.unmarshal()))
    payload = random.Random(7).randbytes(10 * 1024)         # 10 KiB that does not compress
    frame = node._codec.encode(MT, NodeID.generate().bytes, 1, 1, payload)
    parts = [frame[i:i + 1500] for i in range(0, len(frame), 1500)]
    assert len(parts) > 5
    with connect(node.address, compression=None, proxy=None, open_timeout=scaled(5.0)) as ws:
        ws.send(parts)                                       # one message, many frames
        wait_until(lambda: got == [payload], 5.0, "the reassembled frame delivered")
    assert not [k for k in node.stats() if k.startswith("errors.")]


def test_the_size_limit_holds_over_the_whole_fragmented_message(node: Cluster) -> None:
    got: list[Packet] = []
    node.handle_func_no_forward(MT, lambda sender, packet: got.append(packet))
    frame = node._codec.encode(MT, NodeID.generate().bytes, 2, 1, random.Random(8).randbytes(100 * 1024))
    parts = [frame[i:i + 16 * 1024] for i in range(0, len(frame), 16 * 1024)]
    assert all(len(p) <= 64 * 1024 for p in parts)          # each fragment is under the limit
    with connect(node.address, compression=None, proxy=None, open_timeout=scaled(5.0)) as ws:
        try:
            ws.send(parts)                                   # the whole is over it
            ws.recv(timeout=scaled(5.0))
        except Exception:
            pass                                             # the node closes the connection
    wait_until(lambda: _stat(node, "ws_too_large") >= 1, 5.0, "the oversized message counted")
    assert got == []


def test_a_fragmented_text_message_is_no_frame(node: Cluster) -> None:
    seen: list[Node] = []
    node.handle_func_no_forward(MT, lambda sender, packet: seen.append(sender))
    with connect(node.address, compression=None, proxy=None, open_timeout=scaled(5.0)) as ws:
        ws.send(["not ", "a ", "gossip ", "frame"])
        wait_until(lambda: _stat(node, "ws_text_dropped") >= 1, 5.0, "the text message dropped")
        # The connection still carries frames afterwards.
        ws.send(node._codec.encode(MT, NodeID.generate().bytes, 3, 1, b"after"))
        wait_until(lambda: len(seen) == 1, 5.0, "the next frame delivered")
