"""The agent's HTTP side: a WSGI application over a :class:`~gossip.Cluster`, and a small
threaded server for it.

Routes of :func:`app`:

=====================  ===============================================================================
``GET /metrics``       Prometheus exposition of :mod:`gossip.metrics` (plus process/platform metrics)
``GET /api/members``   ``{"node": local id, "members": [member, ...]}``; a member is ``id``, ``short``,
                       ``address``, ``state``, ``incarnation``, ``metadata`` (strings), ``rtt``
                       (seconds of the last probe round trip, or null), ``flap`` (its flap
                       score) and ``local``
``GET /api/events``    server-sent events: first a ``snapshot`` (``{"members": [...]}``; skip it
                       with ``?snapshot=0``), then ``state`` (``{"node": member, "previous": state}``),
                       ``metadata`` (``{"node": member}``), ``message`` events (user messages
                       of the types the host publishes), and the cluster events ``flapping``,
                       ``partition`` and ``healed`` (:func:`cluster_event_json`); a comment
                       line every 15 s keeps it open
``GET /api/explain``   ``?node=ID`` (an id, or a unique start or end of one):
                       :meth:`Cluster.explain` as JSON (:func:`explanation_json`)
``POST /api/send``     body ``{"type": 128, "data": ..., "node": id?, "reliable": false}``: sends
                       to one node if ``node`` is given, else broadcasts; answers
                       ``{"sent": "broadcast"}`` or ``{"sent": "node", "to": id}``
``GET /api/stats``     :meth:`Cluster.stats` as a JSON object
=====================  ===============================================================================

Errors are JSON ``{"error": "..."}`` with a 4xx/5xx status. Any other path goes to the
``fallback`` WSGI application if one is given (the dashboard mounts at ``/`` this way), else 404.

:class:`HttpServer` serves any WSGI application from ``wsgiref`` with one thread per request
(named ``gossip-http-*``), so event streams do not block other requests; :meth:`HttpServer.stop`
ends the streams, joins the threads and closes the socket.

This module sits above the :class:`~gossip.Cluster` and uses only its public API.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .address import Address
from .cluster import Cluster
from .errors import AddressError, ClusterClosed, GossipError, LocalProtocolError, TransportError
from .node import Node, NodeID
from .packet import Packet
from .protocol.flap import MemberFlapping
from .protocol.insight import ClusterEvent
from .protocol.partition import PartitionHealed, PartitionSuspected
from .protocol.provenance import Explanation, SuspicionEpisode
from .wire import USER_MSG

__all__ = ["app", "ApiApp", "EventHub", "HttpServer", "WSGIApp", "StartResponse", "node_json",
           "parse_listen_addr", "explanation_json", "cluster_event_json", "find_node"]

logger = logging.getLogger("gossip.http")

_MAX_BODY = 1 << 20
_KEEPALIVE = 15.0


class StartResponse(Protocol):
    """The WSGI ``start_response`` callable."""

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = None,
                 /) -> Callable[[bytes], object]:
        """Begin the response."""


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
"""A WSGI application."""


def _jsonable(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _dumps(value: object) -> str:
    return json.dumps(value, default=_jsonable, separators=(",", ":"))


def node_json(node: Node, rtt: float | None = None, local: bool = False, flap: int = 0) -> dict[str, Any]:
    """Return the JSON form of a node snapshot, as the API serves it."""
    return {
        "id": str(node.id),
        "short": node.id.short,
        "address": node.address,
        "state": str(node.state),
        "incarnation": node.incarnation,
        "metadata": node.metadata.get_all_as_string(),
        "rtt": rtt,
        "flap": flap,
        "local": local,
    }


def _names(cluster: Cluster | None, ids: set[NodeID]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for nid in ids:
        node = cluster.get_node(nid) if cluster is not None else None
        out[str(nid)] = {"short": nid.short, "address": node.address if node is not None else ""}
    return out


def _opt(nid: NodeID | None) -> str | None:
    return None if nid is None else str(nid)


def _episode_json(e: SuspicionEpisode) -> dict[str, Any]:
    opt = _opt
    return {
        "accuser": str(e.accuser), "started_at": e.started_at, "incarnation": e.incarnation,
        "via": e.via, "relayed_by": opt(e.relayed_by), "timeout": e.timeout, "expected": e.expected,
        "confirmations": [{"node": str(c.node), "at": c.at, "via": c.via, "relayed_by": opt(c.relayed_by),
                           "timeout": c.timeout, "new_timeout": c.new_timeout} for c in e.confirmations],
        "outcome": e.outcome, "ended_at": e.ended_at, "refuted_incarnation": e.refuted_incarnation,
        "declared_by": opt(e.declared_by), "by_timeout": e.by_timeout, "returned_at": e.returned_at,
        "returned_incarnation": e.returned_incarnation,
    }


def explanation_json(exp: Explanation, cluster: Cluster | None = None) -> dict[str, Any]:
    """Return the JSON form of an :class:`~gossip.protocol.provenance.Explanation`.

    Node ids are full strings; ``names`` maps every id mentioned to its short id and (when
    ``cluster`` knows it) its address; ``observer`` is ``cluster``'s own id (whose view this is).
    Times are as in ``exp`` (wall-clock seconds for :meth:`Cluster.explain`).
    """
    ids = {exp.node}
    for e in exp.episodes:
        ids.update(x for x in (e.accuser, e.relayed_by, e.declared_by) if x is not None)
        for c in e.confirmations:
            ids.update(x for x in (c.node, c.relayed_by) if x is not None)
    return {
        "node": str(exp.node), "short": exp.node.short, "address": exp.address, "state": str(exp.state),
        "incarnation": exp.incarnation, "local": exp.local, "at": exp.at,
        "flap": {"score": exp.flap_score, "window": exp.flap_window, "flapping": exp.flapping,
                 "damped": exp.damped},
        "history_size": exp.history_size,
        "episodes": [_episode_json(e) for e in exp.episodes],
        "names": _names(cluster, ids),
        "observer": None if cluster is None else str(cluster.local_node().id),
    }


def cluster_event_json(ev: ClusterEvent) -> tuple[str, dict[str, Any]]:
    """Return the server-sent event kind and data of a cluster event.

    ``flapping``: ``{"node", "short", "address", "score", "window", "threshold", "damped", "at"}``;
    ``partition``: ``{"members": [id...], "share", "window", "at"}``; ``healed``:
    ``{"members": [id...], "returned": [id...], "duration", "at"}``.
    """
    if isinstance(ev, MemberFlapping):
        return "flapping", {"node": str(ev.node), "short": ev.node.short, "address": ev.addr,
                            "score": ev.score, "window": ev.window, "threshold": ev.threshold,
                            "damped": ev.damped, "at": ev.at}
    if isinstance(ev, PartitionSuspected):
        return "partition", {"members": [str(n) for n in ev.members], "share": ev.share,
                             "window": ev.window, "at": ev.at}
    assert isinstance(ev, PartitionHealed)
    return "healed", {"members": [str(n) for n in ev.members], "returned": [str(n) for n in ev.returned],
                      "duration": ev.duration, "at": ev.at}


class EventHub:
    """Fans one cluster's state, metadata, message and cluster events out to any number of
    subscribers.

    Each subscriber has its own bounded queue; when a slow one falls ``max_queue`` events
    behind, its oldest events are dropped (and counted in :attr:`dropped`), so a stuck client
    never holds memory or slows the cluster's event thread.

    Args:
        cluster: the cluster whose events to publish (handlers are added at once).
        max_queue: the bound of each subscriber's queue.
    """

    def __init__(self, cluster: Cluster, max_queue: int = 1000) -> None:
        self.cluster = cluster
        self.max_queue = max_queue
        self.dropped = 0
        self._lock = threading.Lock()
        self._subs: set[queue.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self._closed = False
        self._handlers = (cluster.handle_node_state_change_func(self._on_state),
                          cluster.handle_node_metadata_change_func(self._on_metadata),
                          cluster.handle_cluster_event_func(self._on_cluster_event))

    def _member(self, node: Node) -> dict[str, Any]:
        return node_json(node, local=self.cluster.node_is_local(node))

    def _on_state(self, node: Node, previous: Any) -> None:
        self.publish("state", {"node": self._member(node), "previous": str(previous)})

    def _on_metadata(self, node: Node) -> None:
        self.publish("metadata", {"node": self._member(node)})

    def _on_cluster_event(self, ev: ClusterEvent) -> None:
        kind, data = cluster_event_json(ev)
        self.publish(kind, data)

    def on_message(self, sender: Node, packet: Packet) -> None:
        """A message handler (``cluster.handle_func(t, hub.on_message)``) publishing ``message``."""
        try:
            data: object = packet.unmarshal()
        except GossipError as exc:
            data = {"undecodable": str(exc)}
        self.publish("message", {"type": packet.msg_type, "data": data,
                                 "from": self._member(sender)})

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one event for every subscriber (``at`` is set to the wall-clock time)."""
        data = dict(data, at=time.time())
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            while True:
                try:
                    q.put_nowait((kind, data))
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                        with self._lock:
                            self.dropped += 1
                    except queue.Empty:
                        pass

    def subscribe(self) -> queue.Queue[tuple[str, dict[str, Any]] | None]:
        """Return a new subscriber queue; ``None`` on it means the hub closed.

        Raises:
            ClusterClosed: the hub is closed.
        """
        q: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(self.max_queue)
        with self._lock:
            if self._closed:
                raise ClusterClosed("the event hub is closed")
            self._subs.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        """Forget a subscriber queue."""
        with self._lock:
            self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        """How many subscribers are connected now."""
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """Remove the cluster handlers and end every subscription (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subs)
        self.cluster.remove_node_state_change_handler(self._handlers[0])
        self.cluster.remove_node_metadata_change_handler(self._handlers[1])
        self.cluster.remove_cluster_event_handler(self._handlers[2])
        for q in subs:
            while True:
                try:
                    q.put_nowait(None)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass


class _HttpError(Exception):
    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class ApiApp:
    """The WSGI application of :func:`app` (call :meth:`close` when done with it)."""

    def __init__(self, cluster: Cluster, hub: EventHub | None, registry: Any,
                 fallback: WSGIApp | None, keepalive: float) -> None:
        self.cluster = cluster
        self.hub = hub if hub is not None else EventHub(cluster)
        self._own_hub = hub is None
        self.registry = registry
        self.fallback = fallback
        self.keepalive = keepalive
        self._routes: dict[str, dict[str, Callable[[dict[str, Any], StartResponse], Iterable[bytes]]]] = {
            "/metrics": {"GET": self._metrics},
            "/api/members": {"GET": self._members},
            "/api/events": {"GET": self._events},
            "/api/send": {"POST": self._send},
            "/api/stats": {"GET": self._stats},
            "/api/explain": {"GET": self._explain},
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        path = environ.get("PATH_INFO", "") or "/"
        methods = self._routes.get(path.rstrip("/") or "/")
        if methods is None:
            if self.fallback is not None:
                return self.fallback(environ, start_response)
            return _json_response(start_response, "404 Not Found", {"error": f"no such path: {path}"})
        method = environ.get("REQUEST_METHOD", "GET").upper()
        handler = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        try:
            if handler is None:
                allow = ", ".join(sorted(methods))
                raise _HttpError("405 Method Not Allowed", f"{path} accepts {allow}, not {method}",
                                 [("Allow", allow)])
            return handler(environ, start_response)
        except _HttpError as exc:
            return _json_response(start_response, exc.status, {"error": str(exc)}, exc.headers)
        except ClusterClosed as exc:
            return _json_response(start_response, "503 Service Unavailable", {"error": str(exc)})

    def close(self) -> None:
        """End every event stream (and the hub's cluster handlers, if this app made the hub)."""
        if self._own_hub:
            self.hub.close()

    # ------------------------------------------------------------------ routes

    def _metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        body = encoder(self.registry)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def members(self) -> list[dict[str, Any]]:
        """Return every known member in its JSON form, the local node first."""
        c = self.cluster
        last, flap = c.probe_rtt().last, c.flap_scores()
        nodes = c.nodes()
        return [node_json(n, last.get(n.id), i == 0, flap.get(n.id, 0)) for i, n in enumerate(nodes)]

    def _members(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return _json_response(start_response, "200 OK", {"node": str(self.cluster.local_node().id),
                                                         "members": self.members()})

    def _explain(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        text = query.get("node", [""])[-1]
        if not text:
            raise _HttpError("400 Bad Request", "give the node: /api/explain?node=ID")
        node = _find_node(self.cluster, text)
        exp = self.cluster.explain(node.id)
        if exp is None:
            raise _HttpError("404 Not Found", f"no known node has id {text!r}")
        return _json_response(start_response, "200 OK", explanation_json(exp, self.cluster))

    def _stats(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return _json_response(start_response, "200 OK", dict(sorted(self.cluster.stats().items())))

    def _events(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        snapshot = query.get("snapshot", ["1"])[-1] not in ("0", "false", "no")
        q = self.hub.subscribe()
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return self._stream(q, snapshot)

    def _stream(self, q: queue.Queue[tuple[str, dict[str, Any]] | None], snapshot: bool) -> Iterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            if snapshot:
                yield _sse("snapshot", {"members": self.members(), "at": time.time()})
            while True:
                try:
                    item = q.get(timeout=self.keepalive)
                except queue.Empty:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    return
                yield _sse(*item)
        finally:
            self.hub.unsubscribe(q)

    def _send(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = _read_json(environ)
        if not isinstance(body, dict):
            raise _HttpError("400 Bad Request", "the body must be a JSON object")
        unknown = sorted(set(body) - {"type", "data", "node", "reliable"})
        if unknown:
            raise _HttpError("400 Bad Request", f"unknown field(s): {', '.join(unknown)}; "
                             "expected type, data, node, reliable")
        msg_type = body.get("type", USER_MSG)
        if isinstance(msg_type, bool) or not isinstance(msg_type, int):
            raise _HttpError("400 Bad Request", f"type must be an integer (a user message type, "
                             f"128 and above for applications), got {msg_type!r}")
        reliable = body.get("reliable", False)
        if not isinstance(reliable, bool):
            raise _HttpError("400 Bad Request", f"reliable must be true or false, got {reliable!r}")
        data = body.get("data")
        target = body.get("node")
        c = self.cluster
        try:
            if target is None:
                (c.send_reliable if reliable else c.send)(msg_type, data)
                return _json_response(start_response, "200 OK", {"sent": "broadcast"})
            if not isinstance(target, str):
                raise _HttpError("400 Bad Request", f"node must be a node id string, got {target!r}")
            node = _find_node(c, target)
            (c.send_to_reliable if reliable else c.send_to)(node, msg_type, data)
            return _json_response(start_response, "200 OK", {"sent": "node", "to": str(node.id)})
        except LocalProtocolError as exc:
            raise _HttpError("400 Bad Request", str(exc)) from None


def find_node(cluster: Cluster, text: str) -> tuple[Node | None, str]:
    """Find a node by full id, or by a unique start or end of it (``short`` is the end).

    Returns ``(node, "")``, or ``(None, why)`` when no node or several nodes match.
    """
    try:
        node = cluster.get_node(text)
    except GossipError:
        node = None
    if node is not None:
        return node, ""
    low = text.lower()
    matches = [n for n in cluster.nodes() if str(n.id).startswith(low) or str(n.id).endswith(low)] \
        if low else []
    if len(matches) == 1:
        return matches[0], ""
    if not matches:
        return None, f"no known node has id {text!r}"
    return None, f"{text!r} matches {len(matches)} nodes; give more of the id"


def _find_node(cluster: Cluster, text: str) -> Node:
    node, why = find_node(cluster, text)
    if node is None:
        raise _HttpError("400 Bad Request" if "matches" in why else "404 Not Found", why)
    return node


def _read_json(environ: dict[str, Any]) -> object:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _HttpError("400 Bad Request", "bad Content-Length") from None
    if length > _MAX_BODY:
        raise _HttpError("413 Payload Too Large", f"the body is {length} bytes; at most {_MAX_BODY}")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw:
        raise _HttpError("400 Bad Request", "the body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _HttpError("400 Bad Request", f"the body is not JSON: {exc}") from None


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {_dumps(data)}\n\n".encode()


def _json_response(start_response: StartResponse, status: str, value: object,
                   headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (_dumps(value) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


def app(cluster: Cluster, *, hub: EventHub | None = None, registry: Any = None,
        fallback: WSGIApp | None = None, keepalive: float = _KEEPALIVE) -> ApiApp:
    """Return the WSGI application serving ``cluster``'s metrics and JSON API.

    Args:
        cluster: the cluster to serve.
        hub: the event hub for ``/api/events`` (default: a new one on ``cluster``).
        registry: the Prometheus registry ``/metrics`` exposes (default: a new one holding this
            cluster's collector and the process, platform and GC collectors).
        fallback: a WSGI application for every other path (the dashboard), else 404.
        keepalive: seconds between keep-alive comments on an idle event stream.
    """
    if registry is None:
        from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

        from .metrics import register

        registry = CollectorRegistry()
        register(cluster, registry)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return ApiApp(cluster, hub, registry, fallback, keepalive)


# ---------------------------------------------------------------------------------- the server


def parse_listen_addr(text: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port``; port 0 picks a free one) for a listening socket.

    Raises:
        AddressError: the text is not an IP or host name with a port.
    """
    if text.startswith(("http://", "https://")):
        text = urllib.parse.urlsplit(text).netloc
    addr = Address.parse(text, default_port=0, allow_zero_port=True)
    if addr.kind not in ("ip", "host"):
        raise AddressError(f"invalid listen address {text!r}: expected host:port")
    if ":" not in text.strip().rstrip("]") and not text.strip().startswith("["):
        raise AddressError(f"invalid listen address {text!r}: no port (write host:port, port 0 "
                           "for any free one)")
    return addr.host, addr.port


class _Handler(ServerHandler):
    def log_exception(self, exc_info: Any) -> None:
        logger.error("bug: the HTTP application raised", exc_info=exc_info)


class _RequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def handle(self) -> None:
        # wsgiref's own handle(), with a handler that logs instead of printing tracebacks.
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _Handler(self.rfile, self.wfile, self.get_stderr(),  # type: ignore[arg-type]
                           self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], family: int, name: str) -> None:
        self.address_family = family
        self._name = name
        self._ids = itertools.count(1)
        self._threads_lock = threading.Lock()
        self.request_threads: set[threading.Thread] = set()
        super().__init__(addr, _RequestHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)   # wsgiref's would do a reverse DNS look-up
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._run_request, args=(request, client_address), daemon=True,
                             name=f"gossip-http-{self._name}-{next(self._ids)}")
        with self._threads_lock:
            self.request_threads.add(t)
        t.start()

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._threads_lock:
                self.request_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("! HTTP request from %s failed", client_address, exc_info=True)


class HttpServer:
    """Serves a WSGI application on ``host:port`` from background threads.

    Args:
        application: the WSGI application (see :func:`app`).
        addr: ``host:port`` to listen on; port 0 picks a free port.
        on_stop: called first by :meth:`stop`, to end long responses (``ApiApp.close``).

    Raises:
        AddressError: ``addr`` is malformed.
    """

    def __init__(self, application: WSGIApp, addr: str, on_stop: Callable[[], None] | None = None) -> None:
        self.application = application
        self.host, self.port = parse_listen_addr(addr)
        self.on_stop = on_stop
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The bound ``host:port`` (the real port if 0 was asked); ``""`` before :meth:`start`."""
        if self._server is None:
            return ""
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        """``http://`` + :attr:`address`."""
        return f"http://{self.address}"

    def start(self) -> None:
        """Bind and start serving (a second call does nothing).

        Raises:
            TransportError: the address cannot be bound (in use, not local...).
        """
        if self._server is not None:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            server = _Server((str(sockaddr[0]), int(sockaddr[1])), family, str(self.port))
        except OSError as exc:
            raise TransportError(f"cannot listen for HTTP on {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}") from exc
        server.set_app(self.application)
        server._name = str(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"gossip-http-{server._name}", daemon=True)
        self._thread.start()
        logger.info("HTTP API on %s", self.url)

    def stop(self, timeout: float = 3.0) -> None:
        """End long responses, stop serving, join every thread and close the socket (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        server = self._server
        if server is None:
            return
        end = time.monotonic() + timeout
        if self.on_stop is not None:
            self.on_stop()
        server.shutdown()
        if self._thread is not None:
            self._thread.join(max(0.0, end - time.monotonic()))
        with server._threads_lock:
            threads = list(server.request_threads)
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        server.server_close()
        left = [t.name for t in threads if t.is_alive()]
        if left:
            logger.warning("HTTP threads still running after stop(): %s", ", ".join(left))
