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
``GET /api/explain``   ``?node=ID`` (an id, its short id, or a unique end of one):
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

import collections
import hmac
import io
import ipaddress
import itertools
import json
import logging
import queue
import secrets
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
from .counters import Counters
from .errors import (
    AddressError,
    ClusterClosed,
    ConfigError,
    GossipError,
    GossipTimeout,
    JoinError,
    LocalProtocolError,
    MetadataError,
    NodeIDError,
    NotFoundError,
    ProtocolError,
    RemoteHandlerError,
    SendQueueFull,
    StreamRefused,
    TransportError,
)
from .node import Node, NodeID, NodeState
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
    ``{"members": [id...], "returned": [id...], "missing": [id...], "duration", "at"}``.
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
                      "missing": [str(n) for n in ev.missing], "duration": ev.duration, "at": ev.at}


class TooManySubscribers(GossipError):
    """The event hub already has its most subscribers (``Config.http_max_event_streams``)."""


class Subscription:
    """One subscriber's queue of encoded events, bounded in bytes (see :class:`EventHub`).

    Items are ``(kind, data, encoded)``: the event's kind, its JSON-able data and its
    server-sent-event bytes. :meth:`get` returns the next one, ``None`` once the hub closed.
    """

    __slots__ = ("max_bytes", "_items", "_bytes", "_cond", "_closed", "_on_drop")

    def __init__(self, max_bytes: int, on_drop: Callable[[int], None]) -> None:
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[str, dict[str, Any], bytes]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._on_drop = on_drop

    @property
    def queued_bytes(self) -> int:
        """Bytes of the events waiting."""
        return self._bytes

    def put(self, item: tuple[str, dict[str, Any], bytes]) -> None:
        """Queue an event, dropping the oldest ones while the queue is over its bytes."""
        dropped = 0
        with self._cond:
            if self._closed:
                return
            self._items.append(item)
            self._bytes += len(item[2])
            while self._bytes > self.max_bytes and len(self._items) > 1:
                old = self._items.popleft()
                self._bytes -= len(old[2])
                dropped += 1
            self._cond.notify()
        if dropped:
            self._on_drop(dropped)

    def get(self, timeout: float | None = None) -> tuple[str, dict[str, Any], bytes] | None:
        """Return the next event (``None`` when the hub closed).

        Raises:
            queue.Empty: nothing came within ``timeout`` seconds.
        """
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._bytes -= len(item[2])
                return item
            if self._closed:
                return None
        raise queue.Empty

    def close(self) -> None:
        """End the subscription: :meth:`get` returns ``None`` once the queue is empty."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()


class EventStream:
    """A WSGI response body of server-sent events that gives back its subscription when closed,
    whether or not the server ever started reading it (a client that left at once)."""

    __slots__ = ("_events", "_unsubscribe")

    def __init__(self, events: Iterator[bytes], unsubscribe: Callable[[], None]) -> None:
        self._events = events
        self._unsubscribe = unsubscribe

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        """End the stream and unsubscribe (idempotent)."""
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
        self._unsubscribe()


class EventHub:
    """Fans one cluster's state, metadata, message and cluster events out to any number of
    subscribers (at most ``max_subscribers``).

    Each event is encoded once; each subscriber holds at most ``max_queue_bytes`` of them, and
    when a slow one falls that far behind its oldest events are dropped (counted in
    :attr:`dropped`), so a stuck client never holds memory or slows the cluster's event thread.
    A message payload whose JSON is longer than ``max_payload_bytes`` is replaced by
    ``{"truncated": true, "bytes": n, "prefix": "..."}`` (counted in :attr:`truncated`).

    Args:
        cluster: the cluster whose events to publish (handlers are added at once).
        max_queue_bytes: the bound of each subscriber's queue (default
            ``cluster.config.http_event_queue_bytes``).
        max_subscribers: the most subscribers at once (default ``http_max_event_streams``).
        max_payload_bytes: the longest message payload shown whole (default
            ``http_event_payload_bytes``).
    """

    def __init__(self, cluster: Cluster, max_queue_bytes: int | None = None,
                 max_subscribers: int | None = None, max_payload_bytes: int | None = None) -> None:
        cfg = cluster.config
        self.cluster = cluster
        self.max_queue_bytes = cfg.http_event_queue_bytes if max_queue_bytes is None else max_queue_bytes
        self.max_subscribers = cfg.http_max_event_streams if max_subscribers is None else max_subscribers
        self.max_payload_bytes = (cfg.http_event_payload_bytes if max_payload_bytes is None
                                  else max_payload_bytes)
        self.dropped = 0
        self.truncated = 0
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
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
        data: object
        limit = self.max_payload_bytes
        truncated = True
        if len(packet.payload) > 64 * limit:     # not worth decoding to show a prefix
            data = {"truncated": True, "bytes": len(packet.payload), "prefix": ""}
        else:
            try:
                data = packet.unmarshal()
            except GossipError as exc:
                data = {"undecodable": str(exc)[:200]}
            text = _dumps(data)
            truncated = len(text) > limit
            if truncated:
                data = {"truncated": True, "bytes": len(text), "prefix": text[:limit]}
        if truncated:
            with self._lock:
                self.truncated += 1
        self.publish("message", {"type": packet.msg_type, "data": data, "from": self._member(sender)})

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one event for every subscriber (``at`` is set to the wall-clock time)."""
        data = dict(data, at=time.time())
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        item = (kind, data, _sse(kind, data))
        for sub in subs:
            sub.put(item)

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n

    def subscribe(self) -> Subscription:
        """Return a new subscription (its :meth:`~Subscription.get` gives ``None`` once the hub
        closed).

        Raises:
            ClusterClosed: the hub is closed.
            TooManySubscribers: ``max_subscribers`` are subscribed already.
        """
        sub = Subscription(self.max_queue_bytes, self._count_dropped)
        with self._lock:
            if self._closed:
                raise ClusterClosed("the event hub is closed")
            if len(self._subs) >= self.max_subscribers:
                raise TooManySubscribers(f"{len(self._subs)} event streams are open already, the most "
                                         "allowed (http_max_event_streams); try again later")
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription."""
        with self._lock:
            self._subs.discard(sub)
        sub.close()

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
        for sub in subs:
            sub.close()


class _HttpError(Exception):
    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def error_status(exc: GossipError) -> str:
    """Return the HTTP status that answers a request which failed with ``exc``.

    The caller's mistakes are 4xx (a bad value 400, an unknown node 404); a peer that could
    not be reached or failed is 502, one that did not answer in time 504; a node that is
    stopping, or a send that found no room, 503; anything else 500.
    """
    if isinstance(exc, (LocalProtocolError, ConfigError, AddressError, NodeIDError, MetadataError)):
        return "400 Bad Request"
    if isinstance(exc, NotFoundError):
        return "404 Not Found"
    if isinstance(exc, (ClusterClosed, SendQueueFull, TooManySubscribers)):
        return "503 Service Unavailable"
    if isinstance(exc, GossipTimeout):
        return "504 Gateway Timeout"
    if isinstance(exc, (TransportError, JoinError, RemoteHandlerError, StreamRefused, ProtocolError)):
        return "502 Bad Gateway"
    return "500 Internal Server Error"


class ApiApp:
    """The WSGI application of :func:`app` (call :meth:`close` when done with it).

    Every request, the ``fallback``'s included, passes :meth:`check_request` first (see
    :func:`app`); refusals are counted in :attr:`counters` (``http.refused_*``), which
    ``/api/stats`` and ``/metrics`` show.
    """

    def __init__(self, cluster: Cluster, hub: EventHub | None, registry: Any,
                 fallback: WSGIApp | None, keepalive: float, token: str | None = None,
                 allowed_hosts: Iterable[str] = (), login_lifetime: float = 600.0) -> None:
        self.cluster = cluster
        self.hub = hub if hub is not None else EventHub(cluster)
        self._own_hub = hub is None
        self.registry = registry
        self.fallback = fallback
        self.keepalive = keepalive
        self.token = token or None
        self.allowed_hosts = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip())
        self.login_lifetime = login_lifetime
        self.counters = Counters()
        self._logins: dict[str, float] = {}
        self._logins_lock = threading.Lock()
        self._routes: dict[str, dict[str, Callable[[dict[str, Any], StartResponse], Iterable[bytes]]]] = {
            "/metrics": {"GET": self._metrics},
            "/api/members": {"GET": self._members},
            "/api/events": {"GET": self._events},
            "/api/send": {"POST": self._send},
            "/api/stats": {"GET": self._stats},
            "/api/explain": {"GET": self._explain},
            "/api/login": {"POST": self._login},
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        try:
            self._check_site(environ)
            login = self._login_redirect(environ, start_response)
            if login is not None:
                return login
            self._check_auth(environ)
        except _HttpError as exc:
            return _json_response(start_response, exc.status, {"error": str(exc)}, exc.headers)
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
        except GossipError as exc:
            self.counters.inc(f"http.errors.{type(exc).__name__}")
            return _json_response(start_response, error_status(exc),
                                  {"error": str(exc), "kind": type(exc).__name__})

    # ------------------------------------------------------------------ who may ask

    def check_request(self, environ: dict[str, Any]) -> None:
        """Refuse a request that a web page, rather than the operator, could have made.

        In order: a ``Host`` that is neither an IP address, ``localhost`` nor an allowed host
        (DNS rebinding: a page whose name now points at this agent); a request a browser marks
        as coming from another site (``Sec-Fetch-Site``) or carrying another ``Origin``; a
        missing or wrong token (``Authorization: Bearer`` or the dashboard's cookie), when the
        app has one; a ``POST`` whose body is not ``application/json`` (a plain form or
        ``text/plain`` post needs no CORS preflight, a JSON one does).

        Raises:
            _HttpError: 403, 401 or 415 with the reason.
        """
        self._check_site(environ)
        self._check_auth(environ)

    def _check_site(self, environ: dict[str, Any]) -> None:
        host = _host_name(environ.get("HTTP_HOST", ""))
        if host and not self._host_allowed(host):
            self.counters.inc("http.refused_host")
            raise _HttpError("403 Forbidden", f"the Host header names {host!r}, which is neither an IP "
                             "address nor localhost nor an allowed host of this agent (a page may "
                             "have pointed its own name here); add it with --http-host if it is yours")
        site = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
        if site and site not in ("same-origin", "none"):
            self.counters.inc("http.refused_origin")
            raise _HttpError("403 Forbidden", f"refused a request a browser made for another site "
                             f"(Sec-Fetch-Site: {site})")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not self._origin_allowed(origin.strip(), environ):
            self.counters.inc("http.refused_origin")
            raise _HttpError("403 Forbidden", f"refused a request from the page of another origin "
                             f"({origin.strip()[:100]!r})")

    def _check_auth(self, environ: dict[str, Any]) -> None:
        if self.token is not None and not self._authorized(environ):
            self.counters.inc("http.refused_token")
            raise _HttpError("401 Unauthorized", "this agent's API needs its token: the agent writes it "
                             "to a file readable by its user only, which `gossip members`, `send` and "
                             "`watch` read; `gossip dashboard` prints a login link for the page",
                             [("WWW-Authenticate", 'Bearer realm="gossip"')])
        if environ.get("REQUEST_METHOD", "GET").upper() == "POST":
            ctype = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                self.counters.inc("http.refused_content_type")
                raise _HttpError("415 Unsupported Media Type",
                                 f"the body must be sent as Content-Type: application/json, not "
                                 f"{ctype or 'nothing'!r}")

    def _host_allowed(self, host: str) -> bool:
        if host in ("localhost", "localhost.") or host in self.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True                    # an address, not a name: no DNS rebinding

    def _origin_allowed(self, origin: str, environ: dict[str, Any]) -> bool:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False                # "null" (sandboxed pages, file://) included
        here = environ.get("HTTP_HOST", "").strip().lower()
        if here and parts.netloc.lower() == here:
            return True                 # the page this agent served
        return (parts.hostname or "") in self.allowed_hosts and bool(self.allowed_hosts)

    def _authorized(self, environ: dict[str, Any]) -> bool:
        assert self.token is not None
        given = ""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        else:
            given = _cookies(environ).get(_cookie_name(environ), "")
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    # ------------------------------------------------------------------ the dashboard's login

    def login_path(self) -> str:
        """Return ``/?login=CODE``: a path that, opened once within :attr:`login_lifetime`
        seconds, sets the token as a cookie (``HttpOnly``, ``SameSite=Strict``) and redirects
        to ``/``, so that the dashboard page can use the API without the token in its URL."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._logins_lock:
            self._logins = {c: t for c, t in self._logins.items() if t > now}
            while len(self._logins) >= 64:            # bounded: the oldest codes go first
                self._logins.pop(min(self._logins, key=self._logins.__getitem__))
            self._logins[code] = now + self.login_lifetime
        return f"/?login={code}"

    def _login_redirect(self, environ: dict[str, Any],
                        start_response: StartResponse) -> Iterable[bytes] | None:
        query = environ.get("QUERY_STRING", "")
        if "login=" not in query or self.token is None:
            return None
        params = urllib.parse.parse_qs(query)
        code = params.pop("login", [""])[-1]
        with self._logins_lock:
            expires = self._logins.pop(code, 0.0)
        if expires < time.monotonic():
            self.counters.inc("http.refused_login")
            raise _HttpError("401 Unauthorized", "this login link was used already or has expired; "
                             "`gossip dashboard` prints a new one")
        secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
        cookie = f"{_cookie_name(environ)}={self.token}; Path=/; HttpOnly; SameSite=Strict{secure}"
        where = urllib.parse.quote(environ.get("SCRIPT_NAME", "") + (environ.get("PATH_INFO") or "/"))
        rest = urllib.parse.urlencode(params, doseq=True)
        start_response("303 See Other", [("Location", where + (f"?{rest}" if rest else "")),
                                         ("Set-Cookie", cookie), ("Cache-Control", "no-store"),
                                         ("Referrer-Policy", "no-referrer"), ("Content-Length", "0")])
        return [b""]

    def _login(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.token is None:
            raise _HttpError("404 Not Found", "this API has no token: nothing to log in to")
        return _json_response(start_response, "200 OK", {"path": self.login_path(),
                                                         "expires_in": self.login_lifetime})

    def close(self) -> None:
        """End every event stream (and the hub's cluster handlers, if this app made the hub)."""
        if self._own_hub:
            self.hub.close()

    def stats(self) -> dict[str, int]:
        """The API's own counters: refusals (``http.refused_*``), errors answered
        (``http.errors.<Error>``), and the hub's dropped and truncated events."""
        out = self.counters.snapshot()
        out["http.events_dropped"] = self.hub.dropped
        out["http.payloads_truncated"] = self.hub.truncated
        out["http.event_streams"] = self.hub.subscribers
        return out

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
        stats = {**self.cluster.stats(), **self.stats()}
        return _json_response(start_response, "200 OK", dict(sorted(stats.items())))

    def _events(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        snapshot = query.get("snapshot", ["1"])[-1] not in ("0", "false", "no")
        try:
            q = self.hub.subscribe()
        except TooManySubscribers:
            self.counters.inc("http.refused_event_streams")
            raise
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return EventStream(self._stream(q, snapshot), lambda: self.hub.unsubscribe(q))

    def _stream(self, q: Subscription, snapshot: bool) -> Iterator[bytes]:
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
                yield item[2]
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
        if msg_type < USER_MSG:
            self.counters.inc("http.refused_reserved_type")
            raise _HttpError("403 Forbidden", f"type {msg_type} is reserved (below {USER_MSG}: the "
                             f"protocol's and add-on packages' own, such as leader election); the API "
                             f"sends application types, {USER_MSG} and above")
        reliable = body.get("reliable", False)
        if not isinstance(reliable, bool):
            raise _HttpError("400 Bad Request", f"reliable must be true or false, got {reliable!r}")
        data = body.get("data")
        target = body.get("node")
        c = self.cluster
        if target is None:
            (c.send_reliable if reliable else c.send)(msg_type, data)
            return _json_response(start_response, "200 OK", {"sent": "broadcast"})
        if not isinstance(target, str):
            raise _HttpError("400 Bad Request", f"node must be a node id string, got {target!r}")
        node = _find_node(c, target)
        if not reliable and node.state in (NodeState.DEAD, NodeState.LEFT):
            # The library drops such a send (counted) under the default policy: the caller
            # is told so rather than answered "sent".
            gone = "dead" if node.state is NodeState.DEAD else "left"
            raise _HttpError("409 Conflict", f"node {node.id.short} is {gone}: the message "
                             "was not sent (a best-effort send skips nodes known dead or "
                             "left; a reliable send tries them)")
        (c.send_to_reliable if reliable else c.send_to)(node, msg_type, data)
        return _json_response(start_response, "200 OK", {"sent": "node", "to": str(node.id)})


def find_node(cluster: Cluster, text: str) -> tuple[Node | None, str]:
    """Find a node by its full id, its short id (:attr:`NodeID.short`, the end shown in tables)
    or any unique end of its id.

    Returns ``(node, "")``, or ``(None, why)`` when no node or several nodes match.
    """
    try:
        node = cluster.get_node(text)
    except GossipError:
        node = None
    if node is not None:
        return node, ""
    low = text.strip().lower()
    matches = [n for n in cluster.nodes() if str(n.id).endswith(low)] if low else []
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


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, lowercase, without port, brackets or final dot."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0].rstrip(".") if ":" in text else text.rstrip(".")


def _cookies(environ: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


def _cookie_name(environ: dict[str, Any]) -> str:
    """The dashboard's cookie; named after the server's port, as cookies ignore ports."""
    port = "".join(c for c in str(environ.get("SERVER_PORT", "")) if c.isdigit())
    return f"gossip_token_{port}"


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {_dumps(data)}\n\n".encode()


def _json_response(start_response: StartResponse, status: str, value: object,
                   headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (_dumps(value) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


def app(cluster: Cluster, *, hub: EventHub | None = None, registry: Any = None,
        fallback: WSGIApp | None = None, keepalive: float = _KEEPALIVE, token: str | None = None,
        allowed_hosts: Iterable[str] = ()) -> ApiApp:
    """Return the WSGI application serving ``cluster``'s metrics and JSON API.

    Every request (the ``fallback``'s too) must come with a ``Host`` that is an IP address,
    ``localhost`` or one of ``allowed_hosts``, must not be marked by a browser as coming from
    another site or origin, and, when ``token`` is set, must carry it (``Authorization: Bearer
    <token>``, or the cookie a :meth:`ApiApp.login_path` link sets); a ``POST`` must be
    ``application/json``. So a web page the operator visits can neither read the API (DNS
    rebinding) nor drive it (cross-site requests). ``gossip agent`` always sets a token.

    Args:
        cluster: the cluster to serve.
        hub: the event hub for ``/api/events`` (default: a new one on ``cluster``).
        registry: the Prometheus registry ``/metrics`` exposes (default: a new one holding this
            cluster's collector, the API's own counters and the process, platform and GC
            collectors).
        fallback: a WSGI application for every other path (the dashboard), else 404.
        keepalive: seconds between keep-alive comments on an idle event stream.
        token: the API token (None: no token is asked, for a host that authenticates itself).
        allowed_hosts: host names besides IP addresses and ``localhost`` that requests may
            name in ``Host`` (and pages in ``Origin``).
    """
    own_registry = registry is None
    if registry is None:
        from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

        from .metrics import register

        registry = CollectorRegistry()
        register(cluster, registry)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    api = ApiApp(cluster, hub, registry, fallback, keepalive, token=token, allowed_hosts=allowed_hosts)
    if own_registry:
        registry.register(_ApiCollector(api))
    return api


class _ApiCollector:
    """``gossip_http_events_total{event}``: the API's refusals, errors and event losses."""

    def __init__(self, api: ApiApp) -> None:
        self.api = api

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.api.stats()
        family = CounterMetricFamily("gossip_http_events", "Refusals, errors and event losses of the "
                                     "HTTP API", labels=("event",))
        for key, value in sorted(stats.items()):
            if key != "http.event_streams":
                family.add_metric((key.removeprefix("http."),), value)
        yield family
        yield GaugeMetricFamily("gossip_http_event_streams", "Event streams open now",
                                value=stats["http.event_streams"])


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
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # each read and write, besides the deadline

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def handle(self) -> None:
        # wsgiref's own handle(), with a handler that logs instead of printing tracebacks, and
        # the whole request (body included) read before the application runs, within the
        # server's read deadline.
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "bad Content-Length")
            return
        if length > _MAX_BODY:
            self.send_error(413, f"the body is {length} bytes; at most {_MAX_BODY}")
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            return                                      # the client left (or ran out of time)
        self.server.request_read(self.request)
        handler = _Handler(io.BytesIO(body), self.wfile, self.get_stderr(),  # type: ignore[arg-type]
                           self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[arg-type]


_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\n"
         b'{"error":"the agent serves as many connections as it may (http_max_connections)"}\n')


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], family: int, name: str, read_timeout: float,
                 max_connections: int, counters: Counters) -> None:
        self.address_family = family
        self._name = name
        self._ids = itertools.count(1)
        self._threads_lock = threading.Lock()
        self.request_threads: set[threading.Thread] = set()
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.counters = counters
        self._reading: dict[Any, float] = {}           # connections still sending their request
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
            busy = len(self.request_threads) >= self.max_connections
            if not busy:
                self.request_threads.add(t)
                self._reading[request] = time.monotonic() + self.read_timeout
        if busy:
            self.counters.inc("http.refused_busy")
            try:
                request.setblocking(False)
                request.send(_BUSY)                    # a fresh socket's buffer takes it whole
            except OSError:
                pass
            self.shutdown_request(request)
            return
        t.start()

    def request_read(self, request: Any) -> None:
        """The request on this connection arrived whole: its read deadline no longer applies."""
        with self._threads_lock:
            self._reading.pop(request, None)

    def service_actions(self) -> None:
        # Runs on the serving thread between polls: cut connections still sending their
        # request past the deadline (a trickle of bytes resets no timer).
        now = time.monotonic()
        with self._threads_lock:
            late = [r for r, deadline in self._reading.items() if deadline <= now]
            for r in late:
                del self._reading[r]
        for r in late:
            self.counters.inc("http.read_timeouts")
            try:
                r.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._threads_lock:
                self.request_threads.discard(threading.current_thread())
                self._reading.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("! HTTP request from %s failed", client_address, exc_info=True)


class HttpServer:
    """Serves a WSGI application on ``host:port`` from background threads.

    Each connection gets a thread, at most ``max_connections`` at once (more are answered 503
    and closed at once), and must send its whole request within ``read_timeout`` seconds.

    Args:
        application: the WSGI application (see :func:`app`).
        addr: ``host:port`` to listen on; port 0 picks a free port.
        on_stop: called first by :meth:`stop`, to end long responses (``ApiApp.close``).
        read_timeout: the deadline of a request, from connection to its last body byte (and of
            each read and write after it).
        max_connections: connections served at once, event streams included.
        counters: where refusals are counted (``http.refused_busy``, ``http.read_timeouts``);
            an :class:`ApiApp`'s own by default, if ``application`` is one.

    Raises:
        AddressError: ``addr`` is malformed.
    """

    def __init__(self, application: WSGIApp, addr: str, on_stop: Callable[[], None] | None = None, *,
                 read_timeout: float = 10.0, max_connections: int = 64,
                 counters: Counters | None = None) -> None:
        self.application = application
        self.host, self.port = parse_listen_addr(addr)
        self.on_stop = on_stop
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        if counters is None:
            counters = application.counters if isinstance(application, ApiApp) else Counters()
        self.counters = counters
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
            server = _Server((str(sockaddr[0]), int(sockaddr[1])), family, str(self.port),
                             self.read_timeout, self.max_connections, self.counters)
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
