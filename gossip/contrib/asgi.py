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

The cluster can live and die with the application instead: :func:`lifespan` is a lifespan for
Starlette's and FastAPI's ``lifespan=`` (and :func:`with_lifespan` runs one for any other ASGI
app). It starts a :class:`gossip.aio.Cluster` when the server starts the app, joins seeds if
given, exposes it as ``app.state.gossip`` (and in the lifespan state, ``request.state.gossip``),
and stops it, leaving gracefully, when the server shuts the app down::

    cluster = gossip.aio.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
    app = FastAPI(lifespan=gossip.contrib.asgi.lifespan(cluster, join=["127.0.0.1:7946"]))

With a node that listens through the server itself, the WebSocket bridge and the lifespan
share the one cluster, in one process::

    app = Starlette(routes=[WebSocketRoute("/gossip", GossipASGI(cluster))],
                    lifespan=gossip.contrib.asgi.lifespan(cluster))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, AsyncContextManager

from websockets.datastructures import Headers

from gossip.cluster import Cluster
from gossip.config import Config
from gossip.errors import JoinError
from gossip.transports.websocket import HostedConnection, Refusal

if TYPE_CHECKING:
    from gossip.aio import Cluster as AsyncCluster

__all__ = ["GossipASGI", "lifespan", "with_lifespan", "Lifespan", "Scope", "Receive", "Send",
           "ASGIApp"]

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
        cluster: a started (or soon started) cluster that listens on WebSocket through its host
            (a :class:`gossip.Cluster`, or a :class:`gossip.aio.Cluster`: its ``sync`` side).
        fallback: the ASGI application for everything else (HTTP requests, other paths).
    """

    def __init__(self, cluster: Cluster | AsyncCluster, fallback: ASGIApp | None = None) -> None:
        self.cluster: Cluster = cluster if isinstance(cluster, Cluster) else cluster.sync
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
                conn.kick()
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


Lifespan = Callable[[Any], AsyncContextManager[dict[str, Any]]]
"""A lifespan as Starlette and FastAPI take it: ``lifespan(app)`` is an async context manager
that yields the lifespan state."""


def lifespan(cluster: Config | Cluster | AsyncCluster, *, join: Sequence[str] = (),
             name: str = "gossip") -> Lifespan:
    """Return a lifespan that runs ``cluster`` with the application.

    On startup the cluster starts (built first from ``cluster`` if it is a
    :class:`~gossip.Config`), joins ``join`` if given (a failure is logged, not fatal: the
    seeds may start later and join this node), and is set as ``app.state.<name>`` (when the app
    has a ``state``, as Starlette's and FastAPI's do) and in the lifespan state (``name`` ->
    the cluster; Starlette copies it into ``request.state``). On shutdown it stops, leaving
    gracefully. The cluster is a :class:`gossip.aio.Cluster` (a :class:`gossip.Cluster` given
    is wrapped: :meth:`gossip.aio.Cluster.from_cluster`).

    Use it as ``Starlette(lifespan=lifespan(cluster))`` or ``FastAPI(lifespan=lifespan(cluster))``,
    or for any ASGI app through :func:`with_lifespan`.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        from gossip.aio import Cluster as AsyncCluster

        if isinstance(cluster, Config):
            node = AsyncCluster(cluster)
        elif isinstance(cluster, Cluster):
            node = AsyncCluster.from_cluster(cluster)
        else:
            node = cluster
        await node.start()
        try:
            if join:
                try:
                    await node.join(list(join))
                except JoinError as exc:
                    _log.warning("gossip: could not join %s at startup: %s", ", ".join(join), exc)
            state = getattr(app, "state", None)
            if state is not None:
                setattr(state, name, node)
            yield {name: node}
        finally:
            await node.stop()

    return run


def with_lifespan(app: ASGIApp, span: Lifespan) -> ASGIApp:
    """Return an ASGI app that runs ``span`` (a :func:`lifespan`) for the ASGI lifespan protocol
    and hands every other connection to ``app``: for an app without a ``lifespan=`` of its own.

    The lifespan state goes into ``scope["state"]`` when the server offers it (uvicorn does),
    from where the server copies it into every request's scope.
    """

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "lifespan":
            await app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        cm = span(app)
        try:
            state = await cm.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        shared = scope.get("state")
        if isinstance(shared, dict):
            shared.update(state)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        try:
            await cm.__aexit__(None, None, None)
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})

    return serve
