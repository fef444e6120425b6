"""A TCP connection dedicated to one stream (:class:`gossip.transports.tcp.stream.StreamSocket`):
its deadlines and what a peer can do wrong."""

from __future__ import annotations

import queue
import socket
from collections.abc import Iterator

import pytest

from gossip.errors import GossipTimeout, SendError, TransportError
from gossip.transports.base import StreamConn
from gossip.transports.socket import PREAMBLE_STREAM, SocketTransport

pytestmark = pytest.mark.integration

WAIT = 5.0


@pytest.fixture
def listener() -> Iterator[tuple[SocketTransport, queue.Queue[StreamConn]]]:
    streams: queue.Queue[StreamConn] = queue.Queue()
    t = SocketTransport("127.0.0.1:0", name="streams", preauth_max_frame_size=1024)
    t.start(lambda batch: None, streams.put)
    yield t, streams
    t.close()


def _port(t: SocketTransport) -> int:
    return int(t.local_addr.rsplit(":", 1)[1])


def test_a_write_the_peer_does_not_read_times_out_and_closes_the_stream(
        listener: tuple[SocketTransport, queue.Queue[StreamConn]]) -> None:
    t, streams = listener
    dialer = SocketTransport("127.0.0.1:0", name="dialer")
    dialer.start(lambda batch: None)
    try:
        s = dialer.dial_stream(t.local_addr, WAIT)
        s.send_frame(b"open")
        peer = streams.get(timeout=WAIT)  # never read from here on
        with pytest.raises(GossipTimeout):
            for _ in range(10_000):  # the kernel's buffers fill, then the write waits
                s.send_frame(bytes(1 << 20), timeout=0.2)
        with pytest.raises(SendError):
            s.send_frame(b"a frame cut in half cannot be resumed")
        peer.close()
    finally:
        dialer.close()


def test_a_peer_that_ends_inside_a_frame_or_announces_too_much_breaks_the_stream(
        listener: tuple[SocketTransport, queue.Queue[StreamConn]]) -> None:
    t, streams = listener
    with socket.create_connection(("127.0.0.1", _port(t)), timeout=WAIT) as raw:
        raw.sendall(PREAMBLE_STREAM + (100).to_bytes(4, "big") + b"only ten b")
        raw.shutdown(socket.SHUT_WR)
        peer = streams.get(timeout=WAIT)
        with pytest.raises(TransportError, match="inside a frame"):
            peer.recv_frame(WAIT)
        peer.close()
    with socket.create_connection(("127.0.0.1", _port(t)), timeout=WAIT) as raw:
        raw.sendall(PREAMBLE_STREAM + (1025).to_bytes(4, "big"))  # over the untrusted limit
        peer = streams.get(timeout=WAIT)
        with pytest.raises(TransportError, match="over the limit 1024"):
            peer.recv_frame(WAIT)
        raw.settimeout(WAIT)
        try:
            assert raw.recv(1) == b""  # and it is closed
        except ConnectionResetError:
            pass


def test_a_read_that_times_out_keeps_the_stream_and_its_bytes(
        listener: tuple[SocketTransport, queue.Queue[StreamConn]]) -> None:
    t, streams = listener
    with socket.create_connection(("127.0.0.1", _port(t)), timeout=WAIT) as raw:
        raw.sendall(PREAMBLE_STREAM + (6).to_bytes(4, "big") + b"hal")
        peer = streams.get(timeout=WAIT)
        with pytest.raises(GossipTimeout):
            peer.recv_frame(0.1)
        raw.sendall(b"ves")
        assert bytes(peer.recv_frame(WAIT) or b"") == b"halves"
        peer.close()
        with pytest.raises(TransportError, match="closed"):
            peer.recv_frame(WAIT)
