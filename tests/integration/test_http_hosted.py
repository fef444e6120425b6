"""Nodes whose gossip POSTs their host's web server carries: a WSGI server (wsgiref, threaded)
and an ASGI server (uvicorn, in this process), each in a cluster with UDP and HTTP nodes; and
the applications' refusals, driven directly.

Every address is loopback, every port picked by the kernel; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from gossip import Cluster, Config
from gossip.contrib.http import GossipHTTPASGI, GossipWSGI
from gossip.transports.http import frames as http_frames

from . import scaled, wait_until
from .test_loopback import node_of, stop_all, wait_converged


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgi_host() -> Iterator[tuple[Cluster, str]]:
    server = make_server("127.0.0.1", 0, lambda e, s: [], server_class=_ThreadingWSGIServer,
                         handler_class=_Quiet)
    url = f"http://127.0.0.1:{server.server_port}/gossip"
    cluster = Cluster(Config.local(socket_transport_enabled=False, advertise_addr=url))
    server.set_app(GossipWSGI(cluster))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield cluster, url
    finally:
        cluster.stop()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def asgi_host() -> Iterator[tuple[Cluster, str]]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/gossip"
    cluster = Cluster(Config.local(socket_transport_enabled=False, advertise_addr=url))
    server = uvicorn.Server(uvicorn.Config(GossipHTTPASGI(cluster), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10.0, "uvicorn started")
        yield cluster, url
    finally:
        cluster.stop()
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("host", [wsgi_host, asgi_host], ids=["wsgi", "asgi"])
def test_hosted_node_joins_a_mixed_cluster(host: Any) -> None:
    with host() as (hosted, url):
        hosted.start()
        assert hosted.address == url
        others = [Cluster(Config.local(bind_addr="127.0.0.1:0")),
                  Cluster(Config.local(socket_transport_enabled=False, http_bind_addr="127.0.0.1:0"))]
        try:
            for c in others:
                c.start()
                assert c.join(url, timeout=scaled(5.0)) == 1
            clusters = [hosted, *others]
            wait_converged(clusters, scaled(20.0))
            for i, c in enumerate(clusters):
                c.handle_func_with_reply(210, lambda s, p, i=i: i)
            for i, a in enumerate(clusters):
                for j, b in enumerate(clusters):
                    if i != j:
                        assert a.send_to_with_response(node_of(a, b), 210, None, timeout=scaled(5.0)) == j
            assert hosted.stats().get("transport.http_requests", 0) > 0
        finally:
            stop_all(others)


def test_a_stopped_node_answers_503_through_its_host() -> None:
    cluster = Cluster(Config.local(socket_transport_enabled=False, advertise_addr="http://127.0.0.1:1/gossip"))
    app = GossipWSGI(cluster)
    seen: list[str] = []
    body = app({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0", "REMOTE_ADDR": "127.0.0.1"},
               lambda status, headers: seen.append(status))
    assert seen == ["503 Service Unavailable"] and b"not running" in b"".join(body)


def run_asgi(app: Any, scope: dict[str, Any], chunks: list[bytes]) -> tuple[int, bytes, int]:
    """Drive an ASGI app with one request; return the status, the body and how many body
    messages it pulled."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled <= len(chunks):
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], pulled


def test_asgi_refusals_come_before_the_body_is_read() -> None:
    cluster = Cluster(Config.local(socket_transport_enabled=False, advertise_addr="http://127.0.0.1:1/gossip"))
    cluster.start()
    try:
        app = GossipHTTPASGI(cluster)
        scope: dict[str, Any] = {"type": "http", "method": "POST", "client": ("127.0.0.1", 5000),
                                 "headers": [(b"content-length", str(8 << 20).encode())]}
        status, _, pulled = run_asgi(app, scope, [b"x" * 1024] * 4)
        assert status == 413 and pulled == 0
        body = b"\x00\x00\x00\x09trunc"
        scope["headers"] = [(b"content-length", str(len(body)).encode())]
        status, _, pulled = run_asgi(app, scope, [body[:4], body[4:]])   # the body comes in two parts
        assert status == 400 and pulled == 2
        good = http_frames.pack_frames([b"not a gossip packet"])
        scope["headers"] = [(b"content-length", str(len(good)).encode())]
        status, answer, _ = run_asgi(app, scope, [good])
        assert status == 200 and answer == b""    # refused by the engine: no answer
        stats = cluster.stats()
        assert stats["transport.http_refused_too_large"] == 1 and stats["transport.http_bad_bodies"] == 1
        assert sum(v for k, v in stats.items() if k.startswith("bad_packets.")) >= 1
        # other scope types
        asyncio.run(app({"type": "websocket"}, None, None))  # type: ignore[arg-type]
    finally:
        cluster.stop()
