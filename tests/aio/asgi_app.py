"""An ASGI app whose lifespan runs a gossip node, served by uvicorn on loopback; run by
tests/aio/test_asgi.py in a subprocess: ``python asgi_app.py MODE TOKEN``.

MODE ``starlette-ws``: a Starlette app with ``lifespan=gossip.contrib.asgi.lifespan(cluster)``
whose node listens through uvicorn itself (the WebSocket bridge, :class:`GossipASGI`, mounted
at ``/gossip``). MODE ``raw``: a bare ASGI app wrapped by :func:`with_lifespan`, the node on
its own sockets. Either way ``GET /members`` answers the node's view as JSON, and when uvicorn
has shut the app down the script prints one JSON line: is the node still running, which
``gossip-`` threads are left (uvicorn then raises the signal that stopped it again).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

import gossip
import gossip.aio
from gossip.contrib.asgi import (GossipASGI, Lifespan, Receive, Scope, Send, lifespan,
                                 with_lifespan)
from gossip.testing import gossip_threads


def view(cluster: gossip.aio.Cluster) -> bytes:
    return json.dumps({"address": cluster.address, "running": cluster.running,
                       "members": sorted(str(n.id) for n in cluster.alive_nodes())}).encode()


def reporting(span: Lifespan) -> Lifespan:
    """``span``, and one JSON line once it ended: the node's state, the threads left."""
    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with span(app) as state:
            node = next(iter(state.values()))
            yield state
        print(json.dumps({"running": node.running,
                          "threads": sorted(gossip_threads().values())}), flush=True)

    return run


def main() -> None:
    mode, token = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app: Any
    if mode == "starlette-ws":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route, WebSocketRoute

        cluster = gossip.aio.Cluster(gossip.Config.local(
            socket_transport_enabled=False, bearer_token=token,
            advertise_addr=f"ws://127.0.0.1:{port}/gossip"))

        async def members(request: Request) -> Response:
            return Response(view(request.app.state.gossip), media_type="application/json")

        app = Starlette(routes=[Route("/members", members),
                                WebSocketRoute("/gossip", GossipASGI(cluster))],
                        lifespan=reporting(lifespan(cluster)))
    else:
        async def bare(scope: Scope, receive: Receive, send: Send) -> None:
            assert scope["type"] == "http" and scope["path"] == "/members"
            body = view(scope["state"]["node"])  # the lifespan state, copied by uvicorn
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})

        app = with_lifespan(bare, reporting(lifespan(gossip.Config.local(
            bind_addr="127.0.0.1:0", bearer_token=token), name="node")))
    print(json.dumps({"http": port}), flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           ws="websockets-sansio"))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
