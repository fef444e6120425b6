"""Opening a stream to a peer that misbehaves mid-opening, on the in-memory network: the peer
is a bare transport whose stream connections the test answers by hand, with packets built as a
node builds them. What the opener raises names what went wrong, and nothing stays open."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gossip import Cluster, Config, Node, NodeID, NodeState
from gossip.errors import AuthenticationError, DecodeError, GossipTimeout, StreamRefused
from gossip.metadata import MetadataReader
from gossip.packet import PacketCodec
from gossip.streams import (
    SALT_SIZE,
    STATUS_ACCEPTED,
    STATUS_BUSY,
    decode_open,
    encode_accept,
)
from gossip.transports.base import StreamConn
from gossip.transports.memory import MemoryNetwork
from gossip.wire import MessageType

WAIT = 10.0
T = 300
PEER_ID = bytes(range(16))


class Peer:
    """A bare transport on the network: each stream connection and its OPEN, for the test."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.codec = PacketCodec()
        self.transport = net.new_transport()
        self.conns: queue.Queue[tuple[StreamConn, Any]] = queue.Queue()
        self.transport.start(lambda batch: None, self._on_stream)

    def _on_stream(self, conn: StreamConn) -> None:
        def read() -> None:
            frame = conn.recv_frame(WAIT)
            assert frame is not None
            pkt = self.codec.decode(bytes(frame))
            self.conns.put((conn, decode_open(pkt.payload) if pkt.msg_type == MessageType.STREAM_OPEN
                            else None))

        threading.Thread(target=read, daemon=True).start()

    def packet(self, msg_type: int, body: bytes) -> bytes:
        return self.codec.encode_raw(msg_type, PEER_ID, 1, 1, body)

    def node(self) -> Node:
        return Node(NodeID(bytes=PEER_ID), self.transport.local_addr, NodeState.ALIVE, 1, MetadataReader())

    def next(self) -> tuple[StreamConn, Any]:
        return self.conns.get(timeout=WAIT)


@pytest.fixture
def setup() -> Iterator[tuple[Cluster, Peer]]:
    net = MemoryNetwork(seed=5)
    opener = Cluster(Config.local(transport=net.new_transport(), stream_open_timeout=WAIT))
    opener.start()
    peer = Peer(net)
    yield opener, peer
    opener.stop(timeout=2.0)
    peer.transport.close()


def opening_in_thread(opener: Cluster, node: Node, **kw: Any) -> Callable[[], BaseException | None]:
    """Open a stream on a thread; return a call that waits for what it raised (None: opened)."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            opener.open_stream(node, T, **kw).close()
            out.append(None)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()

    def result() -> BaseException | None:
        t.join(WAIT)
        assert out, "the opening did not end"
        return out[0]

    return result


def test_an_answer_of_another_message_type_is_a_decode_error(setup: tuple[Cluster, Peer]) -> None:
    opener, peer = setup
    result = opening_in_thread(opener, peer.node())
    conn, req = peer.next()
    conn.send_frame(peer.packet(MessageType.STREAM_OPEN, b"\x00"), WAIT)
    exc = result()
    assert isinstance(exc, DecodeError) and "answered with message type" in str(exc)
    assert opener.stats()["streams.active"] == 0


def test_an_acceptance_for_another_opening_is_refused(setup: tuple[Cluster, Peer]) -> None:
    opener, peer = setup
    result = opening_in_thread(opener, peer.node())
    conn, req = peer.next()
    other_salt = bytes(b ^ 0xFF for b in req.client_salt)
    conn.send_frame(peer.packet(MessageType.STREAM_OPEN_ACK,
                                encode_accept(STATUS_ACCEPTED, other_salt, os.urandom(SALT_SIZE))), WAIT)
    exc = result()
    assert isinstance(exc, AuthenticationError) and "not for this stream" in str(exc)


def test_a_busy_answer_is_a_refusal_with_its_reason(setup: tuple[Cluster, Peer]) -> None:
    opener, peer = setup
    result = opening_in_thread(opener, peer.node())
    conn, req = peer.next()
    conn.send_frame(peer.packet(MessageType.STREAM_OPEN_ACK,
                                encode_accept(STATUS_BUSY, req.client_salt, bytes(SALT_SIZE),
                                              "the stream pool is full")), WAIT)
    exc = result()
    assert isinstance(exc, StreamRefused) and exc.reason == "the stream pool is full"
    assert opener.stats()["streams.open_refused"] == 1


def test_a_peer_that_never_answers_times_out_and_the_next_opening_still_goes(
        setup: tuple[Cluster, Peer]) -> None:
    opener, peer = setup
    result = opening_in_thread(opener, peer.node(), timeout=0.3)
    peer.next()                                       # read, never answered
    exc = result()
    assert isinstance(exc, GossipTimeout) and "no answer within" in str(exc)
    result = opening_in_thread(opener, peer.node(), timeout=0.3)
    peer.next()                                       # its room among our openings came back
    assert isinstance(result(), GossipTimeout)


def test_openings_over_the_limit_wait_for_room_within_their_own_timeout(
        setup: tuple[Cluster, Peer]) -> None:
    """Four openings to a peer that never answers hold every room; a fifth waits for one and
    gives up at its own timeout, naming why, without ever dialing."""
    opener, peer = setup
    held = [opening_in_thread(opener, peer.node(), timeout=WAIT) for _ in range(4)]
    conns = [peer.next() for _ in range(4)]
    fifth = opening_in_thread(opener, peer.node(), timeout=0.3)
    exc = fifth()
    assert isinstance(exc, GossipTimeout) and "other openings to" in str(exc)
    assert peer.conns.empty(), "the fifth never dialed"
    for conn, req in conns:
        conn.send_frame(peer.packet(MessageType.STREAM_OPEN_ACK,
                                    encode_accept(STATUS_BUSY, req.client_salt, bytes(SALT_SIZE),
                                                  "busy")), WAIT)
    assert all(isinstance(r(), StreamRefused) for r in held)
