"""A live dashboard of one cluster member's view: a WSGI application serving one page.

Mount it anywhere; it serves, relative to where it is mounted:

======================  =====================================================================
``GET /``               the page (``static/index.html``): members table, event log, a
                        member's suspicion provenance on click, plots of cluster size by state
                        and of probe round trips
``GET /dash/<file>``    the page's script and style sheet, shipped in the package
``GET /dash/stream``    server-sent events: ``snapshot`` (members, with last RTT and flap
                        score, and ``history``: the recent points of the plots), then the :class:`~gossip.httpapi.EventHub`'s events (``state``,
                        ``metadata``, ``message``, ``flapping``, ``partition``, ``healed``) and a
                        ``sample`` every ``sample_interval`` seconds (members per state, last
                        RTT and flap score per member, the RTT histogram)
``GET /dash/explain``   ``?node=ID``: :meth:`gossip.Cluster.explain` as JSON
======================  =====================================================================

The agent serves it at ``/`` behind its HTTP API (``gossip agent --http ADDR``)::

    api = gossip.httpapi.app(cluster)
    api.fallback = gossip.dashboard.app(cluster, hub=api.hub)

and it mounts in any WSGI host (it honours ``SCRIPT_NAME``; the page uses relative URLs). The
page fetches nothing else: no fonts, scripts or styles from anywhere but this application. It
keeps bounded histories (:data:`PAGE_LIMITS`): the last 200 log lines and 600 samples. The
application keeps the plots' points too (at most 600: members per state, median and largest
round trip), taken at each state change, each sample and each ``gossip_interval`` tick, so a
page opened or reloaded starts with the recent past rather than empty plots.

Behind :func:`gossip.httpapi.app` (as in the agent) every request passes the API's checks:
Host, Origin, and its token, which the page carries as a same-origin cookie.

This package uses only the public :class:`~gossip.Cluster` API and :mod:`gossip.httpapi`.
"""

from __future__ import annotations

import collections
import importlib.resources
import json
import logging
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

from ..cluster import Cluster
from ..errors import ClusterClosed
from ..httpapi import (
    EventHub,
    EventStream,
    StartResponse,
    Subscription,
    TooManySubscribers,
    explanation_json,
    find_node,
    node_json,
)
from ..node import Node, NodeState

__all__ = ["app", "DashboardApp", "PAGE_LIMITS", "ASSETS"]

logger = logging.getLogger("gossip.dashboard")

PAGE_LIMITS = {"log_lines": 200, "samples": 600}
"""What the page keeps at most: event log lines, and samples per plot (10 minutes at 1 s)."""

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The files of ``gossip/dashboard/static`` and their content types."""

_STATES = ("alive", "suspect", "dead", "left")


def _asset(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


class DashboardApp:
    """The WSGI application of :func:`app` (call :meth:`close` when done with it)."""

    def __init__(self, cluster: Cluster, hub: EventHub | None, sample_interval: float,
                 keepalive: float) -> None:
        self.cluster = cluster
        self.hub = hub if hub is not None else EventHub(cluster)
        self._own_hub = hub is None
        self.sample_interval = sample_interval
        self.keepalive = keepalive
        self._assets = {name: _asset(name) for name in ASSETS}
        limits = json.dumps(PAGE_LIMITS).encode()
        self._assets["index.html"] = self._assets["index.html"].replace(b"{{LIMITS}}", limits)
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=PAGE_LIMITS["samples"])
        self._history_lock = threading.Lock()
        self._rtt: tuple[float | None, float | None] = (None, None)
        self._handlers = (cluster.handle_node_state_change_func(self._on_state),
                          cluster.handle_gossip_func(self._on_tick))
        self._record(rtt=True)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", f"{path} accepts GET, not {method}",
                         [("Allow", "GET, HEAD")])
        if path == "":
            # Mounted at /prefix and asked for /prefix: the page's relative URLs need the slash.
            where = urllib.parse.quote(environ.get("SCRIPT_NAME", "")) + "/"
            start_response("301 Moved Permanently", [("Location", where), ("Content-Length", "0")])
            return [b""]
        try:
            if path in ("/", "/index.html"):
                return self._file(start_response, "index.html")
            if path.startswith("/dash/") and path[6:] in ASSETS and path[6:] != "index.html":
                return self._file(start_response, path[6:])
            if path == "/dash/stream":
                return self._stream(environ, start_response)
            if path == "/dash/explain":
                return self._explain(environ, start_response)
        except ClusterClosed as exc:
            return _json(start_response, "503 Service Unavailable", {"error": str(exc)})
        return _text(start_response, "404 Not Found", f"no such page: {path}")

    def close(self) -> None:
        """Remove the cluster handlers; end every event stream (and the hub's cluster handlers,
        if this app made the hub)."""
        self.cluster.remove_node_state_change_handler(self._handlers[0])
        self.cluster.remove_gossip_handler(self._handlers[1])
        if self._own_hub:
            self.hub.close()

    # ------------------------------------------------------------------ the plots' history

    def history(self) -> list[dict[str, Any]]:
        """Return the recent points of the plots, oldest first: ``{"at", "counts", "med",
        "max"}`` (members per state; median and largest last round trip to an alive peer)."""
        with self._history_lock:
            return list(self._history)

    def _record(self, rtt: bool = False, at: float | None = None) -> None:
        c = self.cluster
        if rtt:
            last = c.probe_rtt().last
            alive = {n.id for n in c.nodes() if n.state is NodeState.ALIVE and not c.node_is_local(n)}
            rtts = sorted(v for k, v in last.items() if k in alive)
            self._rtt = (rtts[(len(rtts) - 1) // 2], rtts[-1]) if rtts else (None, None)
        alive_n, suspect, dead = c.num_alive_nodes(), c.num_suspect_nodes(), c.num_dead_nodes()
        left = max(0, c.num_nodes() - alive_n - suspect - dead)
        point = {"at": time.time() if at is None else at,
                 "counts": {"alive": alive_n, "suspect": suspect, "dead": dead, _STATES[3]: left},
                 "med": self._rtt[0], "max": self._rtt[1]}
        with self._history_lock:
            h = self._history
            if rtt and h and point["at"] - h[-1]["at"] < self.sample_interval / 2:
                h[-1] = point                    # several streams sampling at once: one point
            else:
                h.append(point)

    def _on_state(self, node: Node, previous: NodeState) -> None:
        self._record()

    def _on_tick(self) -> None:
        with self._history_lock:
            recent = bool(self._history) and time.time() - self._history[-1]["at"] < self.sample_interval
        if not recent:
            self._record(rtt=True)

    # ------------------------------------------------------------------ routes

    def _file(self, start_response: StartResponse, name: str) -> list[bytes]:
        body = self._assets[name]
        start_response("200 OK", [("Content-Type", ASSETS[name]), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-cache")])
        return [body]

    def _explain(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        text = query.get("node", [""])[-1]
        if not text:
            return _json(start_response, "400 Bad Request", {"error": "give ?node=ID"})
        node, error = find_node(self.cluster, text)
        exp = None if node is None else self.cluster.explain(node.id)
        if exp is None:
            status = "400 Bad Request" if node is None and "matches" in error else "404 Not Found"
            return _json(start_response, status, {"error": error or f"no known node has id {text!r}"})
        return _json(start_response, "200 OK", explanation_json(exp, self.cluster))

    def members(self) -> list[dict[str, Any]]:
        """Return every known member in its JSON form (with last RTT and flap score)."""
        c = self.cluster
        rtt, flap = c.probe_rtt().last, c.flap_scores()
        return [node_json(n, rtt.get(n.id), i == 0, flap.get(n.id, 0)) for i, n in enumerate(c.nodes())]

    def sample(self) -> dict[str, Any]:
        """Return one ``sample`` event: members per state, last RTT and flap score by id."""
        c = self.cluster
        counts = dict.fromkeys(_STATES, 0)
        for n in c.nodes():
            if n.state is not NodeState.UNKNOWN:
                counts[str(n.state)] = counts.get(str(n.state), 0) + 1
        probe = c.probe_rtt()
        self._record(rtt=True)
        return {"at": time.time(), "counts": counts,
                "rtt": {str(k): v for k, v in probe.last.items()},
                "flap": {str(k): v for k, v in c.flap_scores().items()},
                "hist": {"bounds": list(probe.bounds), "counts": list(probe.counts)}}

    def _stream(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            q = self.hub.subscribe()
        except TooManySubscribers as exc:
            return _json(start_response, "503 Service Unavailable", {"error": str(exc)})
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])
        return EventStream(self._events(q), lambda: self.hub.unsubscribe(q))

    def _events(self, q: Subscription) -> Iterator[bytes]:
        c = self.cluster
        try:
            yield b"retry: 2000\n\n"
            yield _sse("snapshot", {"node": str(c.local_node().id), "address": c.address,
                                    "members": self.members(), "at": time.time(),
                                    "flap_threshold": c.config.flap_threshold, "limits": PAGE_LIMITS,
                                    "history": self.history()})
            yield _sse("sample", self.sample())
            next_sample = time.monotonic() + self.sample_interval
            last_byte = time.monotonic()
            while True:
                wait = max(0.0, next_sample - time.monotonic())
                try:
                    item = q.get(timeout=wait)
                except queue.Empty:
                    pass
                else:
                    if item is None:
                        return
                    yield item[2]
                    last_byte = time.monotonic()
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + self.sample_interval
                    yield _sse("sample", self.sample())
                    last_byte = now
                elif now - last_byte >= self.keepalive:
                    yield b": keepalive\n\n"
                    last_byte = now
        except ClusterClosed:
            return
        finally:
            self.hub.unsubscribe(q)


def _json(start_response: StartResponse, status: str, value: object) -> list[bytes]:
    body = (json.dumps(value, separators=(",", ":"), default=str) + "\n").encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _text(start_response: StartResponse, status: str, text: str,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *(headers or [])])
    return [body]


def app(cluster: Cluster, *, hub: EventHub | None = None, sample_interval: float = 1.0,
        keepalive: float = 15.0) -> DashboardApp:
    """Return the dashboard of ``cluster`` as a WSGI application.

    Args:
        cluster: the cluster whose view to show.
        hub: the event hub to take live events from (the HTTP API's, to share it), else a new one
            (closed by :meth:`DashboardApp.close`).
        sample_interval: seconds between ``sample`` events on each stream (plots and RTTs).
        keepalive: seconds of silence after which a stream sends a keep-alive comment.
    """
    if sample_interval <= 0:
        raise ValueError(f"sample_interval must be positive, got {sample_interval!r}")
    return DashboardApp(cluster, hub, sample_interval, keepalive)

