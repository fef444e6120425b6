"""Prometheus metrics of a :class:`~gossip.Cluster`, read when scraped.

::

    import prometheus_client
    import gossip.metrics

    gossip.metrics.register(cluster)          # into prometheus_client.REGISTRY
    prometheus_client.start_http_server(9100)

:func:`register` adds a custom collector: nothing is counted twice and the hot path pays
nothing, because every figure is read from the cluster only when a scrape asks for it
(:meth:`Cluster.stats`, :meth:`Cluster.nodes`, :meth:`Cluster.health_score` and
:meth:`Cluster.probe_rtt`).

The flat counter names of :meth:`Cluster.stats` map to labelled families (``gossip_`` prefix,
``_total`` on counters, base units: seconds and bytes):

============================================  ==================================================
stats key                                     metric
============================================  ==================================================
``packets_in.<transport>.<type>``             ``gossip_packets_total{direction="in",transport,type}``
``packets_out.<transport>.<type>``            ``gossip_packets_total{direction="out",...}``
``bytes_in.*`` / ``bytes_out.*``              ``gossip_bytes_total{direction,transport,type}``
``dropped.<reason>``                          ``gossip_dropped_total{reason}``
``bad_packets.<ErrorClass>``                  ``gossip_bad_packets_total{error}``
``send_errors.<ErrorClass>``                  ``gossip_send_errors_total{error}``
``handler_errors.<handler>``                  ``gossip_handler_errors_total{handler}``: message,
                                              reply, state, metadata, gossip, stream
``errors.<where>``                            ``gossip_internal_errors_total{where}`` (bugs)
``user.<event>``                              ``gossip_user_messages_total{event}``
``streams.active``                            ``gossip_streams_active`` (gauge)
``streams.bytes_in`` / ``streams.bytes_out``  ``gossip_stream_bytes_total{direction}``
``streams.<event>``                           ``gossip_streams_total{event}``
``queue.<name>``                              ``gossip_queue_depth{queue}`` (gauge)
``core.probes`` (and ``failed_probes``,       ``gossip_probes_total`` (``gossip_failed_probes_total``,
``indirect_probes``, ``acks``, ``nacks``,     ``gossip_indirect_probes_total``, ``gossip_acks_total``,
``refutations``)                              ``gossip_nacks_total``, ``gossip_refutations_total``)
``core.suspicions_<outcome>``                 ``gossip_suspicions_total{outcome}``: started,
                                              refuted, confirmed
``core.<other>``                              ``gossip_core_events_total{event}``
``transport.<name>``                          ``gossip_transport_events_total{event}``
anything else                                 ``gossip_stat{key}`` (untyped): nothing is hidden
============================================  ==================================================

Beside the counters: ``gossip_members{state}`` (alive, suspect, dead, left; the local node is
one of the alive), ``gossip_health_score``, ``gossip_probe_rtt_seconds`` (a histogram of the
round trips of directly acked probes) and ``gossip_info{node_id,address,version}``.

One collector per cluster per registry: families have fixed names, so a second cluster in the
same process needs its own :class:`prometheus_client.CollectorRegistry`.

The same figures go to OpenTelemetry's metrics API with :func:`register_otel` (the extra
``gossip-cluster[otel]``): one observable instrument per family, named with dots
(``gossip.packets``, ``gossip.dropped``...; labels become attributes), read at each collection::

    gossip.metrics.register_otel(cluster)     # the global MeterProvider, or meter_provider=...

This module sits above the :class:`~gossip.Cluster` and uses only its public API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .cluster import Cluster
from .node import NodeState

__all__ = ["register", "ClusterCollector", "classify", "FAMILIES", "register_otel", "OtelMetrics"]

_COUNTER, _GAUGE, _UNTYPED = "counter", "gauge", "untyped"

FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gossip_packets": (_COUNTER, "Packets received (direction=in) and sent (out), by transport and "
                                 "message type (user: every type >= 64).",
                       ("direction", "transport", "type")),
    "gossip_bytes": (_COUNTER, "Bytes of packets received and sent, by transport and message type.",
                     ("direction", "transport", "type")),
    "gossip_dropped": (_COUNTER, "Packets, messages or events dropped, by reason.", ("reason",)),
    "gossip_bad_packets": (_COUNTER, "Malformed or unauthenticated packets dropped, by error class.",
                           ("error",)),
    "gossip_send_errors": (_COUNTER, "Sends the transport refused or failed, by error class.",
                           ("error",)),
    "gossip_handler_errors": (_COUNTER, "Exceptions raised by user handlers, by kind of handler.",
                              ("handler",)),
    "gossip_internal_errors": (_COUNTER, "Exceptions inside the library itself (bugs: each is "
                                         "logged with its traceback), by where.", ("where",)),
    "gossip_user_messages": (_COUNTER, "User messages: sent, received, duplicates, relayed, "
                                       "unhandled, broadcasts, direct, requests, replies...",
                             ("event",)),
    "gossip_streams": (_COUNTER, "Streams opened, accepted and refused.", ("event",)),
    "gossip_streams_active": (_GAUGE, "Streams open now.", ()),
    "gossip_stream_bytes": (_COUNTER, "Bytes carried by streams.", ("direction",)),
    "gossip_queue_depth": (_GAUGE, "Items waiting in each internal queue now.", ("queue",)),
    "gossip_probes": (_COUNTER, "Probes (direct pings) this node sent.", ()),
    "gossip_failed_probes": (_COUNTER, "Probes that got no ack, direct or indirect, in time.", ()),
    "gossip_indirect_probes": (_COUNTER, "Probes that needed helpers (ping-req) after the direct "
                                         "ping timed out.", ()),
    "gossip_acks": (_COUNTER, "Acks received for this node's probes.", ()),
    "gossip_nacks": (_COUNTER, "Nacks received from helpers of this node's indirect probes.", ()),
    "gossip_refutations": (_COUNTER, "Times this node refuted a suspicion or death of itself.", ()),
    "gossip_suspicions": (_COUNTER, "Suspicions of other members: started, refuted (it came back "
                                    "alive) and confirmed (declared dead by timeout).", ("outcome",)),
    "gossip_core_events": (_COUNTER, "Other counters of the protocol core.", ("event",)),
    "gossip_transport_events": (_COUNTER, "The transport's own counters.", ("event",)),
    "gossip_stat": (_UNTYPED, "A statistic of the cluster with no dedicated metric, by stats key.",
                    ("key",)),
}
"""Every labelled family fed from :meth:`Cluster.stats`: name -> (type, help, label names)."""

_CORE_OWN = {
    "probes": "gossip_probes", "failed_probes": "gossip_failed_probes",
    "indirect_probes": "gossip_indirect_probes", "acks": "gossip_acks", "nacks": "gossip_nacks",
    "refutations": "gossip_refutations",
}
_DIRECTIONS = {"packets_in": ("gossip_packets", "in"), "packets_out": ("gossip_packets", "out"),
               "bytes_in": ("gossip_bytes", "in"), "bytes_out": ("gossip_bytes", "out")}

# Labelled series present (at 0) before anything was counted.
_ALWAYS: dict[str, list[tuple[str, ...]]] = {
    **{name: [()] for name in _CORE_OWN.values()},
    "gossip_suspicions": [("started",), ("refuted",), ("confirmed",)],
}

_INFO = "This node: its id, advertised address and the library version (always 1)."
_MEMBERS = "Known members by state (the local node is one of the alive)."
_HEALTH = "Lifeguard local health score (0 is healthy; higher stretches probe intervals and timeouts)."
_RTT = "Round trip of directly acked probes (ping to ack), seconds."

_STATES = ((NodeState.ALIVE, "alive"), (NodeState.SUSPECT, "suspect"), (NodeState.DEAD, "dead"),
           (NodeState.LEAVING, "left"))


def classify(key: str) -> tuple[str, tuple[str, ...]]:
    """Return the family and label values that the stats key ``key`` is exported as.

    >>> classify("packets_in.udp.ping")
    ('gossip_packets', ('in', 'udp', 'ping'))
    >>> classify("no.such.thing")
    ('gossip_stat', ('no.such.thing',))
    """
    head, _, rest = key.partition(".")
    if rest:
        if head in _DIRECTIONS:
            transport, sep, mtype = rest.partition(".")
            if sep and transport and mtype:
                family, direction = _DIRECTIONS[head]
                return family, (direction, transport, mtype)
        elif head == "dropped":
            return "gossip_dropped", (rest,)
        elif head == "bad_packets":
            return "gossip_bad_packets", (rest,)
        elif head == "send_errors":
            return "gossip_send_errors", (rest,)
        elif head == "handler_errors":
            return "gossip_handler_errors", (rest,)
        elif head == "errors":
            return "gossip_internal_errors", (rest,)
        elif head == "user":
            return "gossip_user_messages", (rest,)
        elif head == "streams":
            if rest == "active":
                return "gossip_streams_active", ()
            if rest in ("bytes_in", "bytes_out"):
                return "gossip_stream_bytes", (rest[6:],)
            return "gossip_streams", (rest,)
        elif head == "queue":
            return "gossip_queue_depth", (rest,)
        elif head == "core":
            if rest in _CORE_OWN:
                return _CORE_OWN[rest], ()
            if rest.startswith("suspicions_"):
                return "gossip_suspicions", (rest[len("suspicions_"):],)
            return "gossip_core_events", (rest,)
        elif head == "transport":
            return "gossip_transport_events", (rest,)
    return "gossip_stat", (key,)


_Family = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily


def _family(name: str) -> _Family:
    kind, doc, labelnames = FAMILIES[name]
    if kind == _COUNTER:
        return CounterMetricFamily(name, doc, labels=labelnames)
    if kind == _GAUGE:
        return GaugeMetricFamily(name, doc, labels=labelnames)
    return UnknownMetricFamily(name, doc, labels=labelnames)


class ClusterCollector(Collector):
    """A Prometheus collector reading one cluster's figures at each scrape.

    Args:
        cluster: the cluster to read (started or not; a stopped one keeps its last figures).
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def describe(self) -> Iterable[Metric]:
        """Return the families this collector exports (without samples), for the registry."""
        out: list[Metric] = [_family(name) for name in FAMILIES]
        out += [GaugeMetricFamily("gossip_info", _INFO, labels=("node_id", "address", "version")),
                GaugeMetricFamily("gossip_members", _MEMBERS, labels=("state",)),
                GaugeMetricFamily("gossip_health_score", _HEALTH),
                HistogramMetricFamily("gossip_probe_rtt_seconds", _RTT, labels=())]
        return out

    def collect(self) -> Iterable[Metric]:
        """Read the cluster now and return every family with its samples."""
        from ._version import __version__

        c = self.cluster
        info = GaugeMetricFamily("gossip_info", _INFO, labels=("node_id", "address", "version"))
        info.add_metric((str(c.local_node().id), c.address, __version__), 1)
        yield info

        by_state = dict.fromkeys((s for s, _ in _STATES), 0)
        for node in c.nodes():
            if node.state in by_state:
                by_state[node.state] += 1
        members = GaugeMetricFamily("gossip_members", _MEMBERS, labels=("state",))
        for state, label in _STATES:
            members.add_metric((label,), by_state[state])
        yield members

        yield GaugeMetricFamily("gossip_health_score", _HEALTH, value=c.health_score())

        rtt = c.probe_rtt()
        buckets = [("+Inf" if bound == float("inf") else repr(bound), float(n))
                   for bound, n in rtt.cumulative()]
        yield HistogramMetricFamily("gossip_probe_rtt_seconds", _RTT, buckets=buckets,
                                    sum_value=rtt.sum)

        families: dict[str, _Family] = {}
        for key, value in c.stats().items():
            name, labels = classify(key)
            fam = families.get(name)
            if fam is None:
                fam = families[name] = _family(name)
            fam.add_metric(labels, float(value))
        # Series that exist from the first scrape, at 0 until something happens.
        for name, (_, _, labelnames) in FAMILIES.items():
            fam = families.get(name)
            defaults = _ALWAYS.get(name)
            if defaults:
                if fam is None:
                    fam = families[name] = _family(name)
                present = {tuple(smp.labels[n] for n in labelnames) for smp in fam.samples}
                for labels in defaults:
                    if labels not in present:
                        fam.add_metric(labels, 0.0)
            if fam is not None:
                yield fam


def register(cluster: Cluster, registry: CollectorRegistry | None = None) -> ClusterCollector:
    """Export ``cluster``'s figures to Prometheus; return the collector (to unregister it later).

    Args:
        cluster: the cluster to read at each scrape.
        registry: where to register (default :data:`prometheus_client.REGISTRY`).

    Raises:
        ValueError: the registry already has a collector with these metric names (another
            cluster: give each its own :class:`~prometheus_client.CollectorRegistry`).
    """
    collector = ClusterCollector(cluster)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


# ---------------------------------------------------------------------- OpenTelemetry

_OTEL_UNITS = {"gossip_bytes": "By", "gossip_stream_bytes": "By"}
_SNAPSHOT_AGE = 0.5  # one collection reads the stats once: its callbacks share a snapshot


def otel_name(family: str) -> str:
    """Return the OpenTelemetry instrument name of the Prometheus family ``family``.

    >>> otel_name("gossip_bad_packets")
    'gossip.bad_packets'
    """
    return "gossip." + family[len("gossip_"):]


class OtelMetrics:
    """The OpenTelemetry instruments of one cluster (made by :func:`register_otel`).

    Args:
        cluster: the cluster to read at each collection.
        meter: the OpenTelemetry ``Meter`` to make the instruments with.

    Each collection reads :meth:`Cluster.stats` once (the callbacks of one collection share a
    snapshot) and :meth:`Cluster.nodes` once; nothing is counted twice and the hot path pays
    nothing. :meth:`close` stops reporting (the API has no way to remove an instrument).
    """

    def __init__(self, cluster: Cluster, meter: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self.cluster = cluster
        self._observation = Observation
        self._lock = threading.Lock()
        self._snapshot: dict[str, list[tuple[dict[str, str], int]]] = {}
        self._read_at = -float("inf")
        self._closed = False
        self.instruments: dict[str, Any] = {}
        for name, (kind, doc, _) in FAMILIES.items():
            make = meter.create_observable_counter if kind == _COUNTER else meter.create_observable_gauge

            def callback(options: CallbackOptions, family: str = name) -> Iterable[Any]:
                return self._observe(family)

            self.instruments[name] = make(otel_name(name), callbacks=[callback],
                                          unit=_OTEL_UNITS.get(name, "1"), description=doc)

        def members(options: CallbackOptions) -> Iterable[Any]:
            if self._closed:
                return []
            by_state = dict.fromkeys((s for s, _ in _STATES), 0)
            for node in self.cluster.nodes():
                if node.state in by_state:
                    by_state[node.state] += 1
            return [Observation(by_state[s], {"state": label}) for s, label in _STATES]

        def health(options: CallbackOptions) -> Iterable[Any]:
            return [] if self._closed else [Observation(self.cluster.health_score())]

        self.instruments["gossip_members"] = meter.create_observable_gauge(
            "gossip.members", callbacks=[members], unit="1", description=_MEMBERS)
        self.instruments["gossip_health_score"] = meter.create_observable_gauge(
            "gossip.health_score", callbacks=[health], unit="1", description=_HEALTH)

    def _observe(self, family: str) -> list[Any]:
        if self._closed:
            return []
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= _SNAPSHOT_AGE:
                self._snapshot = self._read()
                self._read_at = now
            series = self._snapshot.get(family, ())
        return [self._observation(value, attrs) for attrs, value in series]

    def _read(self) -> dict[str, list[tuple[dict[str, str], int]]]:
        out: dict[str, list[tuple[dict[str, str], int]]] = {}
        seen: dict[str, set[tuple[str, ...]]] = {}
        for key, value in self.cluster.stats().items():
            name, labels = classify(key)
            out.setdefault(name, []).append((dict(zip(FAMILIES[name][2], labels)), value))
            seen.setdefault(name, set()).add(labels)
        for name, defaults in _ALWAYS.items():
            for labels in defaults:
                if labels not in seen.get(name, set()):
                    out.setdefault(name, []).append((dict(zip(FAMILIES[name][2], labels)), 0))
        return out

    def close(self) -> None:
        """Stop reporting: every instrument observes nothing from now on."""
        self._closed = True


def register_otel(cluster: Cluster, meter_provider: Any = None) -> OtelMetrics:
    """Export ``cluster``'s figures through OpenTelemetry's metrics API; return the instruments.

    Args:
        cluster: the cluster to read at each collection.
        meter_provider: the ``MeterProvider`` to use (default: the global one).

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (the extra ``gossip-cluster[otel]``).
    """
    from opentelemetry import metrics

    from ._version import __version__

    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    return OtelMetrics(cluster, provider.get_meter("gossip", __version__))
