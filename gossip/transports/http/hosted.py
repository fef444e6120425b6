"""WSGI and ASGI applications that carry a node's gossip POSTs through its host's web server.

Both wrap one function, ``serve(method, path, headers, read_body, peer) -> (status, headers,
body, close)`` (:meth:`gossip.Cluster.serve_http`, which hands the request to
:class:`~gossip.transports.http.server.Exchanges`): the judge reads ``Content-Length`` and
refuses a body over the limit BEFORE reading it, then reads exactly that many bytes. The path
is the host's business (it mounted the application where the node's advertised URL points):
any path reaching the application is served.

:func:`wsgi_app` runs on the WSGI server's thread; :func:`asgi_app` runs the exchange on a
worker thread (``asyncio.to_thread``), pulling the body from the event loop as the judge reads
it, so the loop never waits for the engine. Slow clients are the host server's to time out.

This module imports nothing from :mod:`gossip` but the transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from gossip.transports.http.server import REASONS

__all__ = ["Serve", "wsgi_app", "asgi_app", "reason_of"]

Serve = Callable[[str, str, Mapping[str, str], Callable[[int], bytes], str],
                 tuple[int, list[tuple[str, str]], bytes, bool]]
"""``serve(method, path, headers, read_body, peer)``: see the module docstring."""


_BODY_TIMEOUT = 60.0


def reason_of(status: int) -> str:
    """The reason phrase of ``status``."""
    return REASONS.get(status, "Error")


def _peer(host: object, port: object) -> str:
    host = str(host or "")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wsgi_app(serve: Serve) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """Return a WSGI application serving gossip POSTs through ``serve``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items()
                   if k.startswith("HTTP_")}
        for key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = str(environ[key])
        stream = environ.get("wsgi.input")

        def read_body(n: int) -> bytes:
            data: bytes = stream.read(n) if stream is not None and n else b""
            return data

        status, extra, body, close = serve(str(environ.get("REQUEST_METHOD", "")), "", headers, read_body,
                                           _peer(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT", 0)))
        out = [*extra, ("Content-Length", str(len(body)))]
        if close:
            out.append(("Connection", "close"))
        start_response(f"{status} {reason_of(status)}", out)
        return [body]

    return app


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_app(serve: Serve) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Return an ASGI application serving gossip POSTs through ``serve`` (``http`` scopes; a
    ``lifespan`` scope is acknowledged, anything else refused)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            while True:
                message = await receive()
                if message.get("type") == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message.get("type") == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            return
        loop = asyncio.get_running_loop()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client") or ("", 0)
        pending = bytearray()
        more = True

        async def pull(n: int) -> bytes:
            nonlocal more
            while more and len(pending) < n:
                message = await receive()
                if message.get("type") != "http.request":
                    more = False
                    break
                pending.extend(message.get("body", b""))
                more = bool(message.get("more_body", False))
            data = bytes(pending[:n])
            del pending[:n]
            return data

        def read_body(n: int) -> bytes:
            return asyncio.run_coroutine_threadsafe(pull(n), loop).result(_BODY_TIMEOUT)

        status, extra, body, _ = await asyncio.to_thread(
            serve, str(scope.get("method", "")), "", headers, read_body, _peer(client[0], client[1]))
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    return app
