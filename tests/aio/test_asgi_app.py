"""The ASGI bridge (:class:`gossip.contrib.asgi.GossipASGI`) driven as a server drives it, with
the ASGI messages themselves: what it answers on other paths and other scope types, how it denies
a connection with and without the ``websocket.http.response`` extension (close code 1008 then),
and that a client gone during the handshake leaves nothing open. The bridge under uvicorn is
tested in tests/integration/test_websocket_cluster.py and tests/aio/test_asgi.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gossip import Cluster, Config
from gossip.contrib.asgi import GossipASGI

Message = dict[str, Any]


def drive(app: Any, scope: Message, incoming: list[Message]) -> list[Message]:
    """Run one ASGI connection: ``incoming`` are what the server receives, in order (then the
    connection waits forever); return what the app sent."""
    sent: list[Message] = []

    async def run() -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        for message in incoming:
            queue.put_nowait(message)

        async def receive() -> Message:
            return await queue.get()

        async def send(message: Message) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 10.0)

    asyncio.run(run())
    return sent


def ws_scope(path: str = "/gossip", extensions: dict[str, Any] | None = None,
             headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "websocket", "path": path, "query_string": b"", "headers": headers or [],
            "client": ("127.0.0.1", 40000), "extensions": extensions or {}}


def unstarted() -> Cluster:
    """A node whose WebSocket connections a host would serve, not started (nothing to stop)."""
    return Cluster(Config.local(socket_transport_enabled=False, bearer_token="asgi-app-secret",
                                advertise_addr="ws://127.0.0.1:1/gossip"))


@pytest.fixture
def hosted() -> Iterator[Cluster]:
    """A started node whose WebSocket connections a host serves (no listener of its own)."""
    node = Cluster(Config.local(socket_transport_enabled=False, bearer_token="asgi-app-secret",
                                advertise_addr="ws://127.0.0.1:1/gossip"))
    node.start()
    try:
        yield node
    finally:
        node.stop(timeout=5.0)


def test_an_http_request_without_a_fallback_is_a_404() -> None:
    node = unstarted()
    sent = drive(GossipASGI(node), {"type": "http", "path": "/"}, [])
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 404
    assert sent[1] == {"type": "http.response.body", "body": b"Not Found\n"}


def test_a_websocket_on_another_path_is_closed_with_1008() -> None:
    node = unstarted()
    sent = drive(GossipASGI(node), ws_scope("/elsewhere"), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "not a gossip path"}]


def test_everything_else_goes_to_the_fallback() -> None:
    node = unstarted()
    seen: list[str] = []

    async def fallback(scope: Message, receive: Any, send: Any) -> None:
        seen.append(f"{scope['type']} {scope['path']}")
        await send({"type": "http.response.start", "status": 204, "headers": []})

    app = GossipASGI(node, fallback)
    assert drive(app, {"type": "http", "path": "/health"}, [])[0]["status"] == 204
    drive(app, ws_scope("/elsewhere"), [])
    assert seen == ["http /health", "websocket /elsewhere"]


def test_the_lifespan_alone_completes_startup_and_shutdown() -> None:
    node = unstarted()
    sent = drive(GossipASGI(node), {"type": "lifespan"},
                 [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_node_that_does_not_run_refuses_with_1008_without_the_extension() -> None:
    node = unstarted()
    sent = drive(GossipASGI(node), ws_scope(), [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "gossip is not running"}]


def test_a_missing_token_is_a_401_with_its_challenge_through_the_extension(hosted: Cluster) -> None:
    sent = drive(GossipASGI(hosted), ws_scope(extensions={"websocket.http.response": {}}),
                 [{"type": "websocket.connect"}])
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    names = [name for name, _ in sent[0]["headers"]]
    assert b"www-authenticate" in names
    assert sent[1]["type"] == "websocket.http.response.body"
    assert hosted.stats().get("transport.ws_connections", 0) == 0


def test_a_missing_token_is_closed_with_1008_without_the_extension(hosted: Cluster) -> None:
    """Without the extension the challenge cannot travel: the refusal's reason does, in the
    close frame, cut to what a close frame holds."""
    sent = drive(GossipASGI(hosted), ws_scope(), [{"type": "websocket.connect"}])
    assert len(sent) == 1 and sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008
    assert 0 < len(sent[0]["reason"]) <= 120


def test_a_scope_that_does_not_start_with_connect_sends_nothing(hosted: Cluster) -> None:
    assert drive(GossipASGI(hosted), ws_scope(), [{"type": "websocket.disconnect", "code": 1001}]) == []
