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
                       ``partition``, ``healed``, ``joined`` and ``join_failed``
                       (:func:`cluster_event_json`); a comment
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

The package sits above the :class:`~gossip.Cluster` and uses only its public API: ``forms``
(the JSON of members, explanations and events), ``events`` (the hub and its streams), ``app``
(routes, token and browser checks), ``server`` (the threaded server), ``types`` (WSGI types).
"""

from .app import ApiApp, app, error_status, find_node
from .events import EventHub, EventStream, Subscription, TooManySubscribers
from .forms import cluster_event_json, explanation_json, node_json
from .server import HttpServer, parse_listen_addr
from .types import StartResponse, WSGIApp

__all__ = ["app", "ApiApp", "EventHub", "HttpServer", "WSGIApp", "StartResponse", "node_json",
           "parse_listen_addr", "explanation_json", "cluster_event_json", "find_node", "error_status",
           "EventStream", "Subscription", "TooManySubscribers"]
