"""An ASGI application that serves a gossip node's WebSocket connections.

A node behind an ASGI server (uvicorn, hypercorn...) listens through the host's server instead
of its own: configure it with ``socket_transport_enabled=False``, no ``websocket_bind_addr``,
and ``advertise_addr`` set to the URL the host serves, start it, and mount the app::

    cluster = gossip.Cluster(gossip.Config.lan(
        socket_transport_enabled=False, advertise_addr="wss://node1.example.com/gossip",
        bearer_token=token))
    cluster.start()
    app = GossipASGI(cluster)                      # alone: uvicorn.run(app, ...)

    # or inside Starlette / FastAPI
    starlette_app = Starlette(routes=[WebSocketRoute("/gossip", GossipASGI(cluster))])

The application bridges the server's event loop to the node's threads: received messages go
straight to the engine (whose callbacks never block for long), and messages the engine sends
are queued in the connection's bounded buffer and written by the connection's coroutine, which
the engine wakes with ``loop.call_soon_threadsafe``. While the engine pauses a connection (its
queues are full), the coroutine stops receiving, so the server's own flow control pushes back.

A handshake that fails the checks (path, a browser's origin, the proof of the bearer token,
connection limits) is denied with an HTTP status, its reason and headers when the server
supports the ASGI "websocket.http.response" extension (uvicorn does), else closed with code
1008. With a bearer token, that extension is needed: the token's challenge travels in a 401's
``WWW-Authenticate`` header (:mod:`gossip.transports._wsauth`), and a stranger never gets
past it. The largest message is the server's setting (uvicorn ``ws_max_size``, 16 MiB by
default), which it buffers whole before the node sees it: without a bearer token,
``Config.validate()`` requires that setting to be small and stated
(``websocket_host_max_size``). A connection the node gives up on (no frame it accepts within
``preauth_timeout``, too many refused frames) is dropped at once, without a closing handshake,
so the server frees what it buffered for it. Keepalive pings are the server's too (uvicorn
``ws_ping_interval``).

Requests of other types (``http``, other paths) go to ``fallback`` if given, else get a 404 (or a
close). The cluster's lifecycle stays the host's: this app neither starts nor stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from websockets.datastructures import Headers

from gossip.cluster import Cluster
from gossip.transports.websocket import HostedConnection, Refusal

__all__ = ["GossipASGI", "Scope", "Receive", "Send", "ASGIApp"]

_log = logging.getLogger("gossip.contrib.asgi")

Scope = MutableMapping[str, Any]
"""An ASGI connection scope."""
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
"""The ASGI ``receive`` callable."""
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI application."""


class GossipASGI:
    """Serve ``cluster``'s WebSocket connections as an ASGI application (see the module doc).

    Args:
        cluster: a started (or soon started) cluster that listens on WebSocket through its host.
        fallback: the ASGI application for everything else (HTTP requests, other paths).
    """

    def __init__(self, cluster: Cluster, fallback: ASGIApp | None = None) -> None:
        self.cluster = cluster
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        kind = scope.get("type")
        path = scope.get("path", "")
        if kind == "websocket" and path == self.cluster.config.websocket_path:
            await self._websocket(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif kind == "http":
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"Not Found\n"})
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "not a gossip path"})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()
        readable = asyncio.Event()

        def set_both() -> None:
            wakeup.set()
            readable.set()

        def wake() -> None:  # called by the engine's threads
            loop.call_soon_threadsafe(set_both)

        headers = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ()))
        client = scope.get("client")
        peer = (str(client[0]), int(client[1])) if client else None
        query = scope.get("query_string", b"")
        full = scope.get("path", "") + ("?" + query.decode("latin-1") if query else "")
        conn = self.cluster.host_websocket_connection(full, headers, peer, wake)
        if isinstance(conn, Refusal):
            await self._deny(scope, send, conn)
            return
        try:
            await send({"type": "websocket.accept"})
        except Exception as exc:  # the client went away during the handshake
            conn.ended(None, f"accept failed: {exc}")
            return
        conn.start()
        reader = asyncio.ensure_future(self._read(conn, receive, readable))
        code: int | None = None
        try:
            while True:
                wakeup.clear()
                items, size = conn.take_outgoing()
                for item in items:
                    if isinstance(item, str):
                        await send({"type": "websocket.send", "text": item})
                    else:
                        await send({"type": "websocket.send", "bytes": item})
                conn.sent(size)
                if conn.wants_close or reader.done():
                    break
                await wakeup.wait()
            # A connection the node aborted (an untrusted one past its deadline...) ends without
            # a closing handshake: the app returns and the server drops the connection at once,
            # with whatever it buffered for it, instead of waiting for the peer's close frame.
            if not reader.done() and not conn.aborted:
                await send({"type": "websocket.close", "code": 1000})
        except Exception as exc:  # the server refuses to send: the client is gone
            _log.debug("! websocket send to %s failed: %s", conn.peer, exc)
        finally:
            if reader.done() and not reader.cancelled() and reader.exception() is None:
                code = reader.result()
            else:
                reader.cancel()
            conn.ended(code)

    async def _read(self, conn: HostedConnection, receive: Receive, readable: asyncio.Event) -> int | None:
        """Receive until the client disconnects; return its close code."""
        while True:
            while conn.reading_paused and not conn.is_closed:
                readable.clear()
                if conn.reading_paused:
                    await readable.wait()
            if conn.is_closed:
                return None
            message = await receive()
            kind = message.get("type")
            if kind == "websocket.receive":
                data = message.get("bytes")
                if data is not None:
                    conn.feed(data)
                else:
                    conn.feed(message.get("text") or "")
            elif kind == "websocket.disconnect":
                code: int | None = message.get("code")
                conn.ended(code)
                conn._kick()
                return code

    @staticmethod
    async def _deny(scope: Scope, send: Send, refusal: Refusal) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            headers += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in refusal.headers]
            await send({"type": "websocket.http.response.start", "status": refusal.status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": refusal.reason.encode() + b"\n"})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason[:120]})
