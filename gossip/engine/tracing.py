"""OpenTelemetry spans of one node's protocol steps (``Config.tracing``).

The core records each step once it is over (:class:`~gossip.protocol.actions.Trace`: a probe
and its indirect probe, a suspicion with its provenance, a refutation, a push/pull), with its
start and end on the engine's monotonic clock; :meth:`Tracing.record` turns it into a span with
those times moved to wall-clock time. No span of the core's is ever held open, so none can
leak. The engine's own steps that the core does not see (a join, a stream dialled or accepted)
are spans around the call (:meth:`Tracing.span`).

Built only when ``Config.tracing`` is set: this module is the only one that imports
``opentelemetry``, and the engine imports it only then, so a node without tracing pays nothing
and never loads the package.

This module imports ``opentelemetry`` (the extra ``gossip-cluster[otel]``) and the core's
records; never sockets or threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._version import __version__
from ..counters import Counters
from ..errors import ConfigError
from ..protocol.actions import JoinResult, Trace, TraceValue
from ..transports.base import StreamConn, Transport

__all__ = ["Tracing", "TRACER_NAME"]

TRACER_NAME = "gossip"
"""The instrumentation scope of every span (``gossip``, at the library's version)."""


def _ns(t: float) -> int:
    return int(t * 1e9)


class Tracing:
    """Makes the spans of one node.

    Args:
        setting: ``Config.tracing``: True (the global tracer provider) or a ``TracerProvider``.
        node: this node's id, as text (``gossip.node.id`` on every span).
        counters: where a span that could not be recorded is counted (``errors.tracing``).
        warn: ``warn(key, msg, *args)`` logs a rate-limited warning.
        clock: the clock the core's times are on (default ``time.monotonic``); its offset to
            wall-clock time is taken once per record.

    Raises:
        ConfigError: tracing is asked for and ``opentelemetry`` is not installed.
    """

    __slots__ = ("tracer", "node", "_counters", "_warn", "_clock", "_kind")

    def __init__(self, setting: Any, node: str, counters: Counters,
                 warn: Callable[..., None], clock: Callable[[], float] = time.monotonic) -> None:
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - the extra is installed where tests run
            raise ConfigError("tracing", "needs the opentelemetry-api package "
                              "(pip install 'gossip-cluster[otel]')") from None
        provider = trace.get_tracer_provider() if setting is True else setting
        self.tracer = provider.get_tracer(TRACER_NAME, __version__)
        self.node = node
        self._counters = counters
        self._warn = warn
        self._clock = clock
        self._kind = trace.SpanKind.INTERNAL

    def record(self, step: Trace) -> None:
        """Turn a step the core recorded into a span (and its children into child spans).

        A failing SDK or exporter is counted (``errors.tracing``) and logged at most once per
        interval, never raised into the engine's threads.
        """
        try:
            self._record(step, time.time() - self._clock(), None)
        except Exception as exc:
            self._counters.inc("errors.tracing")
            self._warn("tracing", "recording the span %s failed: %r", step.name, exc)

    def _record(self, step: Trace, offset: float, parent: Any) -> None:
        from opentelemetry import trace

        attrs: dict[str, TraceValue] = {"gossip.node.id": self.node}
        attrs.update(step.attrs)
        context = None if parent is None else trace.set_span_in_context(parent)
        span = self.tracer.start_span(step.name, context=context, kind=self._kind,
                                      attributes=attrs, start_time=_ns(step.start + offset))
        for name, at, ev_attrs in step.events:
            span.add_event(name, attributes=dict(ev_attrs), timestamp=_ns(at + offset))
        for child in step.children:
            self._record(child, offset, span)
        span.end(end_time=_ns(step.end + offset))

    # ------------------------------------------------------------------ the engine's own steps

    def joined(self, addr: str, start: float, result: JoinResult | None) -> None:
        """Record a join sent to ``addr`` at ``start`` (the clock's time) that ended now with
        ``result`` (None: it raised, or was cancelled)."""
        attrs: dict[str, TraceValue] = {"gossip.peer.addr": addr}
        if result is None:
            attrs["gossip.join.accepted"] = False
            attrs["gossip.join.reason"] = "error"
        else:
            attrs["gossip.join.accepted"] = result.accepted
            if result.reason:
                attrs["gossip.join.reason"] = result.reason
            if result.node is not None:
                attrs["gossip.peer.id"] = str(result.node)
        self.record(Trace("gossip.join", start, self._clock(), attrs))

    def join_future(self, addr: str, fut: Future[JoinResult]) -> None:
        """Record the join to ``addr`` that ``fut`` completes, when it completes."""
        start = self._clock()

        def done(f: Future[JoinResult]) -> None:
            ok = not f.cancelled() and f.exception() is None
            self.joined(addr, start, f.result() if ok else None)

        fut.add_done_callback(done)

    def dial_stream(self, transport: Transport, addr: str, timeout: float) -> StreamConn:
        """Dial a stream to ``addr`` through ``transport``, recording the dial.

        Raises:
            TransportError: as ``transport.dial_stream``.
        """
        start, outcome = self._clock(), "error"
        try:
            conn = transport.dial_stream(addr, timeout)
            outcome = "connected"
            return conn
        finally:
            self.record(Trace("gossip.stream.dial", start, self._clock(),
                              {"gossip.peer.addr": addr, "gossip.stream.outcome": outcome}))

    def stream_accepted(self, peer: str) -> None:
        """Record a stream accepted from ``peer``."""
        now = self._clock()
        self.record(Trace("gossip.stream.accept", now, now, {"gossip.peer.addr": peer}))
