"""A FastAPI service that is also a gossip node: the cluster lives and dies with the app.

Needs FastAPI and uvicorn (``pip install 'gossip-cluster[asgi]'``). Run two or more::

    python examples/fastapi_app.py --port 8000 --http-port 8080
    python examples/fastapi_app.py --port 8001 --http-port 8081 --peers 127.0.0.1:8000

then ask either one::

    curl http://127.0.0.1:8080/members                         # the members it knows
    curl 'http://127.0.0.1:8080/ask/<node id>?q=hello'         # a request to one member

``/members`` reads the member table (plain calls: they never wait). ``/ask/{node_id}`` sends a
request with :meth:`gossip.aio.Cluster.send_to_with_response` and returns the member's reply;
every node answers those requests with a coroutine handler, on the same loop as the HTTP
endpoints. :func:`gossip.contrib.asgi.lifespan` starts the node when uvicorn starts the app
(joining ``--peers``) and stops it, leaving gracefully, when uvicorn shuts the app down
(Ctrl-C, SIGTERM, or ``--run-for`` elapsing).

The gossip flags and settings are the other examples' (``--port`` for UDP and TCP on
127.0.0.1, 0 picks a free one; LAN timings; the examples' shared key), so this node can join
them too; ``--http-port`` is the HTTP port on 127.0.0.1 (0 picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from _common import build_config, say

import gossip
import gossip.aio
from gossip.contrib.asgi import lifespan as gossip_lifespan

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request
except ImportError as exc:  # pragma: no cover - a hint for a missing optional dependency
    raise SystemExit(f"this example needs FastAPI and uvicorn: pip install "
                     f"'gossip-cluster[asgi]' ({exc})") from None

ASK = gossip.USER_MSG + 1
"""The type of the requests ``/ask`` sends."""


def node_json(node: gossip.Node) -> dict[str, Any]:
    """A member as JSON."""
    return {"id": str(node.id), "address": node.address, "state": str(node.state),
            "metadata": node.metadata.get_all_as_string()}


def build_app(config: gossip.Config, peers: list[str]) -> FastAPI:
    """The FastAPI app; its lifespan runs the gossip node (``app.state.gossip``)."""
    span = gossip_lifespan(config, join=peers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with span(app) as state:
            cluster: gossip.aio.Cluster = state["gossip"]
            me = str(cluster.local_node().id)

            async def answer(sender: gossip.Node, packet: gossip.Packet) -> dict[str, Any]:
                # A request from another member, answered on the app's loop.
                question = str(packet.unmarshal())
                return {"answered_by": me, "question": question, "answer": question.upper()}

            cluster.handle_func_with_reply(ASK, answer)
            say(f"node {me} listening on {cluster.address}")
            yield state
            say("leaving the cluster")
        say("stopped")

    app = FastAPI(title="gossip node", lifespan=lifespan)

    @app.get("/members")
    async def members(request: Request) -> list[dict[str, Any]]:
        cluster: gossip.aio.Cluster = request.app.state.gossip
        return [node_json(n) for n in cluster.nodes()]

    @app.get("/ask/{node_id}")
    async def ask(node_id: str, request: Request, q: str = "hello") -> Any:
        cluster: gossip.aio.Cluster = request.app.state.gossip
        node = cluster.get_node(node_id)
        if node is None:
            raise HTTPException(404, f"no member {node_id}")
        try:
            return await cluster.send_to_with_response(node, ASK, q, timeout=5.0)
        except gossip.GossipError as exc:
            raise HTTPException(502, f"{type(exc).__name__}: {exc}") from None

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, default=8000, help="gossip UDP/TCP port on 127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port on 127.0.0.1")
    p.add_argument("--peers", default="", help="comma-separated peers to join")
    p.add_argument("--node-id", default="", help="node id (a UUID; random if omitted)")
    p.add_argument("--run-for", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds")
    args = p.parse_args()
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    app = build_app(build_config(args), peers)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.http_port))
    say(f"http on http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def serve() -> None:
        if args.run_for is not None:
            asyncio.get_running_loop().call_later(
                args.run_for, lambda: setattr(server, "should_exit", True))
        await server.serve(sockets=[sock])

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it shut the app down
        pass


if __name__ == "__main__":
    main()
