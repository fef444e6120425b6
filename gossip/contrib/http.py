"""WSGI and ASGI applications that serve a gossip node's HTTP transport through its host.

A node behind a web application server listens through it instead of its own listener:
configure it with ``socket_transport_enabled=False``, no ``http_bind_addr``, and
``advertise_addr`` set to the URL the host serves (its path ``http_path``), start it, and
mount the application at that path::

    cluster = gossip.Cluster(gossip.Config.lan(
        socket_transport_enabled=False, advertise_addr="https://node1.example.com/gossip",
        bearer_token=token, encryption_key=key))
    cluster.start()
    app = GossipWSGI(cluster)          # a WSGI server: gunicorn, waitress, wsgiref...
    asgi = GossipHTTPASGI(cluster)     # an ASGI server: uvicorn, hypercorn...

    # or inside Starlette / FastAPI
    starlette_app = Starlette(routes=[Mount("/gossip", GossipHTTPASGI(cluster))])

Each POST is judged as the node's own listener judges it (:mod:`gossip.transports.http.server`):
the declared length is bounded before the body is read (by ``tcp_preauth_max_frame_size``:
a host's connections are never trusted), the bearer token's proof, the frames; the response
carries the engine's answers. A POST holds a worker of the host's server until the engine has
handled its frames (at most ``http_reply_wait``); under ASGI, that wait runs on a thread of
the event loop's default executor, whose size then bounds the POSTs served at once. The host's server times out slow clients
and bounds its connections; the cluster's lifecycle stays the host's.

This module imports :mod:`gossip.cluster` and the transports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gossip.cluster import Cluster
from gossip.transports.http.hosted import Receive, Scope, Send, asgi_app, wsgi_app

__all__ = ["GossipWSGI", "GossipHTTPASGI"]


class _Bound:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _serve(self, method: str, path: str, headers: Mapping[str, str], read_body: Callable[[int], bytes],
               peer: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        return self.cluster.serve_http(method, path, headers, read_body, peer)


class GossipWSGI(_Bound):
    """A WSGI application serving ``cluster``'s gossip POSTs (see the module docstring)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._app = wsgi_app(self._serve)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self._app(environ, start_response)


class GossipHTTPASGI(_Bound):
    """An ASGI application serving ``cluster``'s gossip POSTs (see the module docstring)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._app = asgi_app(self._serve)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
