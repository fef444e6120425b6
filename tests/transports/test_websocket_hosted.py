"""Connections a host's WebSocket server carries (:mod:`gossip.transports.websocket.hosted`): a
:class:`HostedConnection` driven by hand as a host (the ASGI bridge) drives it, and
connections of the host's own ``websockets`` server."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest
from websockets.sync.server import serve

from gossip.errors import SendError
from gossip.transports.base import Incoming, StreamConn
from gossip.transports.websocket import END_OF_STREAM, HostedConnection, Refusal, WebSocketTransport
from integration import scaled, wait_until, ws_connect

pytestmark = pytest.mark.integration

WAIT = scaled(5.0)
HEADERS = {"Host": "127.0.0.1"}


class Host:
    """A started transport without a listener, and what reached its engine."""

    def __init__(self, **kw: object) -> None:
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.streams: queue.Queue[StreamConn] = queue.Queue()
        self.t = WebSocketTransport("", name="host", **kw)  # type: ignore[arg-type]
        self.t.start(lambda batch: [self.inbox.put(p) for p in batch], self.streams.put)


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host(preauth_max_frame_size=1024)
    yield h
    h.t.close()


def test_a_hosted_connection_carries_frames_both_ways(host: Host) -> None:
    woken: list[int] = []
    conn = host.t.host_connection("/gossip", HEADERS, ("127.0.0.1", 5000), lambda: woken.append(1))
    assert isinstance(conn, HostedConnection)
    conn.start()
    conn.feed(b"from the host's peer")
    got = host.inbox.get(timeout=WAIT)
    assert got.data == b"from the host's peer" and got.src == "127.0.0.1:5000"
    assert got.conn is conn
    conn.send_frame(b"answer")
    assert woken  # the host was asked to look
    out, n = conn.take_outgoing()
    assert out == [b"answer"] and n == 6
    conn.sent(n)
    assert conn.queued == 0 and not conn.wants_close and not conn.reading_paused
    conn.pause_reading()
    assert conn.reading_paused
    conn.resume_reading()
    conn.close()
    assert conn.wants_close and not conn.aborted  # closed gracefully: nothing was pending
    conn.ended(1000)
    assert conn.is_closed and conn.clean_end
    assert conn.take_outgoing() == ([], 0)
    wait_until(lambda: host.t.stats["ws_connections"] == 0, 5.0, "its place is given back")


def test_text_and_oversized_messages_from_a_hosted_peer(host: Host) -> None:
    conn = host.t.host_connection("/gossip", HEADERS, None, lambda: None)
    assert isinstance(conn, HostedConnection)
    conn.start()
    conn.feed("a text message")
    assert host.t.stats["ws_text_dropped"] == 1
    conn.feed(bytes(1025))  # over the pre-authentication limit
    assert conn.aborted and conn.is_closed and host.t.stats["ws_too_large"] == 1
    with pytest.raises(SendError):
        conn.send_frame(b"too late")
    assert host.inbox.empty()


def test_a_hosted_stream_ends_with_its_marker(host: Host) -> None:
    conn = host.t.host_connection("/gossip", {**HEADERS, "Gossip-Channel": "stream"},
                                  ("127.0.0.1", 5001), lambda: None)
    assert isinstance(conn, HostedConnection)
    conn.start()
    stream = host.streams.get(timeout=WAIT)
    conn.feed(b"stream data")
    conn.feed(END_OF_STREAM)
    assert stream.recv_frame(WAIT) == b"stream data" and stream.recv_frame(WAIT) is None
    stream.send_frame(b"back")
    stream.close_write()
    out, n = conn.take_outgoing()
    assert out == [b"back", END_OF_STREAM]
    conn.sent(n)
    stream.close()
    conn.ended(1000)


def test_refusals_before_the_upgrade(host: Host) -> None:
    wrong = host.t.host_connection("/elsewhere", HEADERS, None, lambda: None)
    assert isinstance(wrong, Refusal) and wrong.status == 404
    browser = host.t.host_connection("/gossip", {**HEADERS, "Origin": "https://example.org"},
                                     None, lambda: None)
    assert isinstance(browser, Refusal) and browser.status == 403
    host.t.close()
    late = host.t.host_connection("/gossip", HEADERS, None, lambda: None)
    assert isinstance(late, Refusal) and late.status == 503


def test_the_hosts_websockets_server_counts_what_its_clients_do_wrong() -> None:
    node = Host()
    server = serve(node.t.serve_connection, "127.0.0.1", 0, compression=None, max_size=4096)
    thread = threading.Thread(target=server.serve_forever, name="test-host-server")
    thread.start()
    try:
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/gossip"
        with ws_connect(url, compression=None, open_timeout=WAIT) as ws:
            ws.send("text is not gossip")
            ws.send(b"binary is")
            assert node.inbox.get(timeout=WAIT).data == b"binary is"
            assert node.t.stats["ws_text_dropped"] == 1
            ws.send(bytes(8192))  # over the host server's max_size: it closes with 1009
            with pytest.raises(Exception):
                ws.recv(timeout=WAIT)
        wait_until(lambda: node.t.stats["ws_too_large"] == 1, 5.0, "the oversized message is counted")
        wait_until(lambda: node.t.stats["ws_connections"] == 0, 5.0, "the connection is released")
    finally:
        server.shutdown()
        thread.join(WAIT)
        node.t.close()
