"""The HTTP transport's edges, in process on loopback: the hosted ASGI and WSGI applications
driven with their own messages (lifespan, other scopes, a body in pieces, a client gone
mid-body), peer URLs the transport refuses, and its lifecycle (start twice, after close)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from gossip.errors import AddressError, ClusterClosed, StreamRefused, TransportError
from gossip.transports.http.hosted import asgi_app, reason_of, wsgi_app
from gossip.transports.http.transport import HTTPTransport

Message = dict[str, Any]


class Judge:
    """Plays ``serve``: records the request, reads the body in pieces as the real judge does."""

    def __init__(self, status: int = 200, close: bool = False) -> None:
        self.seen: list[tuple[str, Mapping[str, str], bytes, str]] = []
        self.status = status
        self.close = close

    def __call__(self, method: str, path: str, headers: Mapping[str, str],
                 read_body: Callable[[int], bytes], peer: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        length = int(headers.get("content-length", "0") or 0)
        body = b""
        while len(body) < length:
            piece = read_body(min(3, length - len(body)))
            if not piece:
                break
            body += piece
        self.seen.append((method, headers, body, peer))
        return self.status, [("X-Seen", str(len(body)))], b"answer", self.close


def drive(app: Any, scope: Message, incoming: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def run() -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        for m in incoming:
            queue.put_nowait(m)

        async def receive() -> Message:
            return await queue.get()

        async def send(m: Message) -> None:
            sent.append(m)

        await asyncio.wait_for(app(scope, receive, send), 10.0)

    asyncio.run(run())
    return sent


def test_the_asgi_app_reads_a_body_sent_in_pieces() -> None:
    judge = Judge()
    scope = {"type": "http", "method": "POST", "path": "/gossip", "client": ("::1", 5000),
             "headers": [(b"Content-Length", b"7"), (b"Gossip-Auth", b"x")]}
    sent = drive(asgi_app(judge), scope, [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"defg", "more_body": False},
    ])
    method, headers, body, peer = judge.seen[0]
    assert (method, body, peer) == ("POST", b"abcdefg", "[::1]:5000")
    assert headers["gossip-auth"] == "x"
    assert sent[0]["status"] == 200 and (b"x-seen", b"7") in sent[0]["headers"]
    assert (b"content-length", b"6") in sent[0]["headers"]
    assert sent[1] == {"type": "http.response.body", "body": b"answer"}


def test_the_asgi_app_stops_reading_when_the_client_is_gone() -> None:
    judge = Judge(status=400)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"9")]}
    sent = drive(asgi_app(judge), scope, [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ])
    assert judge.seen[0][2] == b"ab" and judge.seen[0][3] == ":0"
    assert sent[0]["status"] == 400


def test_the_asgi_app_acknowledges_a_lifespan_and_ignores_other_scopes() -> None:
    judge = Judge()
    sent = drive(asgi_app(judge), {"type": "lifespan"},
                 [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert drive(asgi_app(judge), {"type": "websocket"}, []) == [] and judge.seen == []


def test_the_wsgi_app_passes_headers_and_says_when_to_close() -> None:
    judge = Judge(status=413, close=True)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "4", "CONTENT_TYPE": "x/y",
               "HTTP_GOSSIP_AUTH": "proof", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000",
               "wsgi.input": io.BytesIO(b"wxyz")}
    out = wsgi_app(judge)(environ, lambda status, headers: started.append((status, headers)))
    assert list(out) == [b"answer"]
    method, headers, body, peer = judge.seen[0]
    assert body == b"wxyz" and headers["gossip-auth"] == "proof" and headers["content-type"] == "x/y"
    assert peer == "127.0.0.1:4000"
    assert started[0][0] == f"413 {reason_of(413)}" and ("Connection", "close") in started[0][1]
    assert reason_of(599) == "Error"


@pytest.mark.parametrize("url, words", [
    ("ftp://127.0.0.1:1/gossip", "expected http(s)://host[:port]/path"),
    ("http://user@127.0.0.1:1/gossip", "expected http(s)://host[:port]/path"),
    ("http://127.0.0.1:99999/gossip", "invalid HTTP peer URL"),
    ("http://gossip.invalid:80/gossip", "not loopback"),   # refused before any lookup
])
def test_peer_urls_the_transport_refuses(url: str, words: str) -> None:
    with HTTPTransport(name="edges") as t:
        t.start(lambda batch: None)
        with pytest.raises(AddressError, match=words.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            t.send(url, b"x", reliable=False)


def test_the_lifecycle_is_checked() -> None:
    t = HTTPTransport(name="edges")
    t.start(lambda batch: None)
    with pytest.raises(TransportError, match="already started"):
        t.start(lambda batch: None)
    with pytest.raises(StreamRefused, match="HTTP"):
        t.dial_stream("http://127.0.0.1:1/gossip", 1.0)
    t.close()
    t.close()
    with pytest.raises(ClusterClosed):
        t.start(lambda batch: None)
    with pytest.raises(ClusterClosed):
        t.send("http://127.0.0.1:1/gossip", b"x", reliable=False)
    assert "dial only" in repr(t)


def test_a_port_it_cannot_bind_is_a_transport_error() -> None:
    with HTTPTransport("127.0.0.1:0", name="first") as first:
        first.start(lambda batch: None)
        port = first.local_addr.split("//")[1].split("/")[0].rpartition(":")[2]
        second = HTTPTransport(f"127.0.0.1:{port}", name="second")
        with pytest.raises(TransportError, match="cannot listen"):
            second.start(lambda batch: None)
        second.close()


class CannedServer:
    """A loopback server that reads each request whole and writes one canned response."""

    def __init__(self, responses: list[bytes]) -> None:
        import socket
        import threading

        self.responses = list(responses)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/gossip"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import socket

        while self.responses:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(self.responses.pop(0))
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5.0)


@pytest.mark.parametrize("response, words, counter", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "without a bounded Content-Length",
     "http_bad_responses"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", "refused the POST: 503 busy",
     "http_refused_503"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\x00\x00\x09", "malformed body", "http_bad_responses"),
    (b"", "failed", "http_request_errors"),                 # closed with no answer at all
])
def test_a_peer_s_bad_answers_are_send_errors_naming_them(response: bytes, words: str, counter: str) -> None:
    from gossip.errors import SendError

    server = CannedServer([response])
    try:
        with HTTPTransport(name="edges") as t:
            t.start(lambda batch: None)
            with pytest.raises(SendError, match=words):
                t.request(server.url, b"ask", 5.0)
            assert t.stats.get(counter) == 1
    finally:
        server.close()
