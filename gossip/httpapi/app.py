"""The API's WSGI application: routes, the token, the browser checks (:func:`app`, :class:`ApiApp`)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import queue
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..cluster import Cluster
from ..counters import Counters
from ..errors import (
    AddressError,
    ClusterClosed,
    ConfigError,
    GossipError,
    GossipTimeout,
    JoinError,
    LocalProtocolError,
    MetadataError,
    NodeAliveError,
    NodeIDError,
    NotFoundError,
    ProtocolError,
    RemoteHandlerError,
    SendQueueFull,
    StreamRefused,
    TransportError,
)
from ..node import Node, NodeState
from ..wire import USER_MSG

from .events import EventHub, EventStream, Subscription, TooManySubscribers, sse_event
from .forms import dumps, explanation_json, node_json
from .types import StartResponse, WSGIApp

__all__ = ["app", "ApiApp", "error_status", "find_node"]

MAX_BODY = 1 << 20
_KEEPALIVE = 15.0


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
            "/api/forget": {"POST": self._forget},
            "/api/stats": {"GET": self._stats},
            "/api/explain": {"GET": self._explain},
            "/api/login": {"POST": self._login},
            "/api/keys/rotate": {"POST": self._rotate_key},
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
                yield sse_event("snapshot", {"members": self.members(), "at": time.time()})
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
        unknown = sorted(set(body) - {"type", "data", "node", "reliable", "tag"})
        if unknown:
            raise _HttpError("400 Bad Request", f"unknown field(s): {', '.join(unknown)}; "
                             "expected type, data, node, reliable, tag")
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
        tag = body.get("tag")
        c = self.cluster
        if tag is not None:
            if not isinstance(tag, str) or target is not None:
                raise _HttpError("400 Bad Request", "tag must be a string, and is for broadcasts "
                                 "(not with node)")
            (c.send_tagged_reliable if reliable else c.send_tagged)(tag, msg_type, data)
            return _json_response(start_response, "200 OK", {"sent": "tagged", "tag": tag})
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


    def _forget(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """``{"node": ID}``: forget a dead or left member everywhere (:meth:`Cluster.forget_node`);
        409 for a member held alive or suspect, 404 for an unknown one."""
        body = _read_json(environ)
        if not isinstance(body, dict) or set(body) != {"node"} or not isinstance(body["node"], str):
            raise _HttpError("400 Bad Request", 'the body must be {"node": "<id or short id>"}')
        node = _find_node(self.cluster, body["node"])
        try:
            forgotten = self.cluster.forget_node(node.id)
        except NodeAliveError as exc:
            raise _HttpError("409 Conflict", str(exc)) from None
        if not forgotten:
            raise _HttpError("404 Not Found", f"no known node has id {body['node']!r}")
        return _json_response(start_response, "200 OK", {"forgotten": str(node.id)})


    def _rotate_key(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """``{"key": HEX, "timeout": s, "drain": s, "force": bool}``: rotate the cluster to the
        key (:meth:`Cluster.rotate_key`). The answer is a stream of JSON lines: one
        ``{"progress": {"step", "done", "total"}}`` per member's answer, then ``{"report": ...}``
        (or ``{"error": ..., "kind": ...}``); blank lines keep a quiet stream alive. The key is
        never repeated in an answer."""
        body = _read_json(environ)
        if not isinstance(body, dict) or not isinstance(body.get("key"), str):
            raise _HttpError("400 Bad Request", 'the body must be {"key": "<the new key in hex>", '
                             '"timeout": seconds, "drain": seconds, "force": false}')
        unknown = sorted(set(body) - {"key", "timeout", "drain", "force"})
        if unknown:
            raise _HttpError("400 Bad Request", f"unknown field(s): {', '.join(unknown)}; "
                             "expected key, timeout, drain, force")
        text = body["key"].strip()
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise _HttpError("400 Bad Request", f"key must be hex digits ({len(text)} characters "
                             "that are not)") from None
        timeout, drain, force = body.get("timeout", 30.0), body.get("drain", 1.0), body.get("force", False)
        for name, value in (("timeout", timeout), ("drain", drain)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _HttpError("400 Bad Request", f"{name} must be a number of seconds, got {value!r}")
        if not isinstance(force, bool):
            raise _HttpError("400 Bad Request", f"force must be true or false, got {force!r}")
        from ..rotation import check_rotation

        key = check_rotation(self.cluster, key, float(timeout), float(drain))  # ConfigError: 400
        self.counters.inc("http.key_rotations")
        start_response("200 OK", [("Content-Type", "application/x-ndjson; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return self._rotation_lines(key, float(timeout), float(drain), force)

    def _rotation_lines(self, key: bytes, timeout: float, drain: float, force: bool) -> Iterator[bytes]:
        lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()

        def progress(step: str, done: int, total: int) -> None:
            lines.put({"progress": {"step": step, "done": done, "total": total}})

        def run() -> None:
            try:
                report = self.cluster.rotate_key(key, progress, timeout=timeout, drain=drain, force=force)
                lines.put({"report": report.to_dict()})
            except GossipError as exc:
                lines.put({"error": str(exc), "kind": type(exc).__name__})
            except Exception as exc:  # a bug: said, not left hanging
                logging.getLogger("gossip.http").exception("bug: the key rotation failed")
                lines.put({"error": f"the rotation failed: {type(exc).__name__}", "kind": "bug"})
            finally:
                lines.put(None)

        threading.Thread(target=run, name="gossip-http-rotate-key", daemon=True).start()
        while True:
            try:
                item = lines.get(timeout=self.keepalive)
            except queue.Empty:
                yield b"\n"
                continue
            if item is None:
                return
            yield json.dumps(item).encode() + b"\n"


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
    if length > MAX_BODY:
        raise _HttpError("413 Payload Too Large", f"the body is {length} bytes; at most {MAX_BODY}")
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



def _json_response(start_response: StartResponse, status: str, value: object,
                   headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (dumps(value) + "\n").encode()
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

        from ..metrics import register

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
