"""OpenTelemetry spans (Config.tracing) and metrics (gossip.metrics.register_otel).

The core records each protocol step once it is over (a Trace action, only when tracing is on);
the engine turns it into a span. The core's part is driven on a virtual clock
(tests/protocol/harness.py); the spans and metrics through the SDK's in-memory exporter and
reader, on a cluster over the in-memory transport.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gossip import USER_MSG, Cluster, Config
from gossip.counters import Counters
from gossip.errors import ConfigError
from gossip.node import NodeState
from gossip.protocol.actions import Trace
from gossip.protocol.provenance import VIA
from gossip.transports.memory import MemoryNetwork
from tests.protocol.harness import CoreCluster

otel_sdk = pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed (the extra gossip-cluster[otel] "
                                "and the SDK are needed for the tracing tests)")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from gossip.engine.tracing import Tracing  # noqa: E402
from gossip.metrics import register_otel  # noqa: E402


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def traces(cc: CoreCluster, i: int, name: str) -> list[Trace]:
    return [a for j, a in cc.join_results if j == i and isinstance(a, Trace) and a.name == name]


def suspect_and_refute(config: Config) -> CoreCluster:
    """Three cores; node 2 is cut off until node 0 suspects it, then the links heal and node 2
    refutes the suspicion it hears of."""
    cc = CoreCluster(3, config=config)
    cc.run(3.0)
    cc.isolate(2)
    for _ in range(200):
        cc.run(0.1)
        if cc.state(0, 2) is NodeState.SUSPECT:
            break
    assert cc.state(0, 2) is NodeState.SUSPECT
    cc.heal()
    for _ in range(200):
        cc.run(0.1)
        if cc.state(0, 2) is NodeState.ALIVE:
            break
    assert cc.state(0, 2) is NodeState.ALIVE
    return cc


# ---------------------------------------------------------------------- the core's records

def test_the_core_records_a_suspicion_its_refutation_and_the_failed_probe() -> None:
    cc = suspect_and_refute(Config.lan(tracing=True, suspicion_mult=10))
    n0, n2 = cc.cores[0].id, cc.cores[2].id
    [susp] = [t for t in traces(cc, 0, "gossip.suspicion") if t.attrs["gossip.member.id"] == str(n2)]
    assert susp.attrs["gossip.suspicion.outcome"] == "refuted"
    assert susp.attrs["gossip.suspicion.incarnation"] == 0
    assert susp.attrs["gossip.suspicion.refuted_incarnation"] == 1
    assert susp.attrs["gossip.member.addr"] == "n2"
    # Who accused it and how: node 0's own failed probe, or node 1's accusation by gossip.
    if susp.attrs["gossip.suspicion.accuser"] == str(n0):
        assert susp.attrs["gossip.suspicion.via"] == "probe"
    else:
        assert susp.attrs["gossip.suspicion.accuser"] == str(cc.cores[1].id)
        assert susp.attrs["gossip.suspicion.via"] in ("direct", "gossip")
    assert susp.end > susp.start
    [refutation] = traces(cc, 2, "gossip.refutation")
    assert refutation.attrs["gossip.member.id"] == str(n2)
    assert refutation.attrs["gossip.refutation.accused_incarnation"] == 0
    assert refutation.attrs["gossip.refutation.incarnation"] == 1
    assert susp.start <= refutation.start <= susp.end
    # Node 0's probes of node 2 while it was cut off: direct ping, then helpers, no ack.
    failed = [t for t in traces(cc, 0, "gossip.probe")
              if t.attrs["gossip.member.id"] == str(n2) and t.attrs["gossip.probe.outcome"] == "timeout"]
    assert failed
    probe = failed[0]
    assert probe.attrs["gossip.probe.indirect"] is True
    [indirect] = probe.children
    assert indirect.name == "gossip.probe.indirect"
    assert indirect.attrs["gossip.probe.helpers"] == 1
    assert probe.start < indirect.start < indirect.end == probe.end
    acked = [t for t in traces(cc, 0, "gossip.probe") if t.attrs["gossip.probe.outcome"] == "ack"]
    assert acked and not acked[0].children


def test_no_records_without_tracing() -> None:
    cc = suspect_and_refute(Config.lan(suspicion_mult=10))
    assert not [a for _, a in cc.join_results if isinstance(a, Trace)]


def test_push_pull_records_its_reply_and_its_timeout() -> None:
    cc = CoreCluster(2, config=Config.lan(tracing=True, state_sync_interval=1.0))
    cc.run(3.0)
    replied = [t for t in traces(cc, 0, "gossip.push_pull") if t.attrs["gossip.push_pull.outcome"] == "reply"]
    assert replied and replied[0].attrs["gossip.push_pull.states"] == 2
    assert replied[0].attrs["gossip.peer.addr"] == "n1"
    cc.isolate(1)
    cc.run(5.0)
    assert [t for t in traces(cc, 0, "gossip.push_pull") if t.attrs["gossip.push_pull.outcome"] == "timeout"]


# ---------------------------------------------------------------------- spans

def test_records_become_spans_with_their_times_children_and_events() -> None:
    tp, exporter = provider()
    now = [100.0]
    tracing = Tracing(tp, "me", Counters(), lambda *a: None, clock=lambda: now[0])
    before = time.time()
    tracing.record(Trace("gossip.probe", 90.0, 91.0, {"gossip.probe.outcome": "timeout"},
                         children=(Trace("gossip.probe.indirect", 90.5, 91.0, {"gossip.probe.helpers": 2}),)))
    tracing.record(Trace("gossip.suspicion", 95.0, 99.0, {"gossip.suspicion.via": "gossip"},
                         events=(("gossip.suspicion.confirmation", 96.0, {"gossip.suspicion.confirmer": "x"}),)))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    probe, indirect, susp = spans["gossip.probe"], spans["gossip.probe.indirect"], spans["gossip.suspicion"]
    assert indirect.parent is not None and indirect.parent.span_id == probe.context.span_id
    assert probe.attributes is not None and probe.attributes["gossip.node.id"] == "me"
    assert probe.attributes["gossip.probe.outcome"] == "timeout"
    assert probe.start_time is not None and probe.end_time is not None
    # Times on the engine's clock move to wall-clock time: 10 s ago, 1 s long.
    assert before - 11.0 <= probe.start_time / 1e9 <= time.time() - 9.0
    assert probe.end_time - probe.start_time == pytest.approx(1e9, abs=1e3)
    assert susp.events[0].name == "gossip.suspicion.confirmation"
    assert susp.events[0].attributes == {"gossip.suspicion.confirmer": "x"}
    assert susp.start_time is not None and susp.events[0].timestamp - susp.start_time == pytest.approx(1e9, abs=1e3)


def test_a_failing_exporter_is_counted_not_raised() -> None:
    class Broken:
        def get_tracer(self, *args: Any, **kw: Any) -> Any:
            return self

        def start_span(self, *args: Any, **kw: Any) -> Any:
            raise RuntimeError("exporter down")

    counters = Counters()
    warned: list[Any] = []
    tracing = Tracing(Broken(), "me", counters, lambda *a: warned.append(a))
    tracing.record(Trace("gossip.probe", 1.0, 2.0, {}))
    assert counters.snapshot()["errors.tracing"] == 1
    assert warned and warned[0][0] == "tracing"


def test_joins_sent_without_blocking_are_traced_when_answered_or_failed() -> None:
    from concurrent.futures import Future

    from gossip.node import NodeID
    from gossip.protocol.actions import JoinResult

    tp, exporter = provider()
    tracing = Tracing(tp, "me", Counters(), lambda *a: None)
    ok: Future[JoinResult] = Future()
    failed: Future[JoinResult] = Future()
    tracing.join_future("127.0.0.1:1", ok)
    tracing.join_future("127.0.0.1:2", failed)
    assert not exporter.get_finished_spans()     # nothing until the join is answered
    ok.set_result(JoinResult("127.0.0.1:1", True, node=NodeID(int=7)))
    failed.set_exception(ConnectionError("refused"))
    spans = {(s.attributes or {})["gossip.peer.addr"]: s.attributes for s in exporter.get_finished_spans()}
    assert spans["127.0.0.1:1"] is not None and spans["127.0.0.1:1"]["gossip.join.accepted"] is True
    assert spans["127.0.0.1:1"]["gossip.peer.id"] == str(NodeID(int=7))
    assert spans["127.0.0.1:2"] is not None and spans["127.0.0.1:2"]["gossip.join.accepted"] is False
    assert spans["127.0.0.1:2"]["gossip.join.reason"] == "error"
    tracing.joined("127.0.0.1:3", 0.0, JoinResult("127.0.0.1:3", False, "wrong label"))
    [refused] = spans_of(exporter, "gossip.join", **{"gossip.peer.addr": "127.0.0.1:3"})
    assert refused.attributes is not None and refused.attributes["gossip.join.reason"] == "wrong label"


def spans_of(exporter: InMemorySpanExporter, name: str, **attrs: Any) -> list[ReadableSpan]:
    out = []
    for s in exporter.get_finished_spans():
        a = s.attributes or {}
        if s.name == name and all(a.get(k) == v for k, v in attrs.items()):
            out.append(s)
    return out


def test_a_cluster_traces_one_suspicion_and_its_refutation() -> None:
    """Three nodes on the in-memory network: node c is cut off until a suspects it, then the
    network heals; a's span of the suspicion carries its provenance, c's span its refutation."""
    net = MemoryNetwork(seed=28)
    tps = [provider() for _ in range(3)]
    # A long suspicion (suspicion_mult) leaves time to heal before c could be declared dead.
    nodes = [Cluster(Config.local(transport=net.new_transport(), tracing=tp, suspicion_mult=40))
             for tp, _ in tps]
    a, b, c = nodes
    try:
        for n in nodes:
            n.start()
        assert b.join(a.address, timeout=5.0) == 1
        assert c.join(a.address, timeout=5.0) == 1
        wait_until(lambda: all(n.num_alive_nodes() == 3 for n in nodes), what="3 nodes alive")
        joins = spans_of(tps[1][1], "gossip.join", **{"gossip.peer.addr": a.address})
        assert joins and joins[0].attributes is not None and joins[0].attributes["gossip.join.accepted"] is True
        c_id = str(c.local_node().id)
        net.partition([c.address], [a.address, b.address])

        def a_suspects_c() -> bool:
            node = a.get_node(c.local_node().id)
            return node is not None and node.state is NodeState.SUSPECT

        wait_until(a_suspects_c, timeout=20.0, what="a to suspect c")
        net.heal()
        wait_until(lambda: bool(spans_of(tps[0][1], "gossip.suspicion", **{"gossip.member.id": c_id})),
                   timeout=20.0, what="a's suspicion of c to end")
        susp = spans_of(tps[0][1], "gossip.suspicion", **{"gossip.member.id": c_id})[0]
        attrs = susp.attributes
        assert attrs is not None
        assert attrs["gossip.node.id"] == str(a.local_node().id)
        assert attrs["gossip.suspicion.outcome"] == "refuted"
        assert attrs["gossip.suspicion.accuser"] in (str(a.local_node().id), str(b.local_node().id))
        # From a's own failed probe, or b's accusation: from b, relayed, or b's full state.
        assert attrs["gossip.suspicion.via"] in VIA
        assert (attrs["gossip.suspicion.via"] == "probe") == (attrs["gossip.suspicion.accuser"] == str(a.local_node().id))
        refuted_at = attrs["gossip.suspicion.refuted_incarnation"]
        assert isinstance(refuted_at, int) and refuted_at > attrs["gossip.suspicion.incarnation"]
        wait_until(lambda: bool(spans_of(tps[2][1], "gossip.refutation")), what="c's refutation span")
        refutations = spans_of(tps[2][1], "gossip.refutation")
        assert all((r.attributes or {})["gossip.member.id"] == c_id for r in refutations)
        # The incarnation a saw c come back at is one c refuted at.
        assert refuted_at in {(r.attributes or {})["gossip.refutation.incarnation"] for r in refutations}
        # The accuser's own probe of c timed out (after its helpers were asked).
        accuser = [str(n.local_node().id) for n in nodes].index(str(attrs["gossip.suspicion.accuser"]))
        timeouts = spans_of(tps[accuser][1], "gossip.probe", **{"gossip.member.id": c_id,
                                                                "gossip.probe.outcome": "timeout"})
        assert timeouts and timeouts[0].attributes is not None
        assert timeouts[0].attributes["gossip.probe.indirect"] is True
        assert spans_of(tps[accuser][1], "gossip.probe.indirect", **{"gossip.member.id": c_id})
        assert a.stats().get("errors.tracing", 0) == 0
    finally:
        for n in nodes:
            n.stop(timeout=2.0)


def test_streams_are_traced() -> None:
    net = MemoryNetwork(seed=29)
    tp_a, exp_a = provider()
    tp_b, exp_b = provider()
    a = Cluster(Config.local(transport=net.new_transport(), tracing=tp_a))
    b = Cluster(Config.local(transport=net.new_transport(), tracing=tp_b))
    try:
        a.start()
        b.start()
        assert b.join(a.address, timeout=5.0) == 1
        wait_until(lambda: a.num_alive_nodes() == 2, what="2 nodes")
        got = threading.Event()

        def on_stream(sender: Any, packet: Any, stream: Any) -> None:
            got.set()

        b.handle_stream_func(USER_MSG, on_stream)
        node = a.get_node(b.local_node().id)
        assert node is not None
        s = a.open_stream(node, USER_MSG, timeout=5.0)
        s.close()
        assert got.wait(5.0)
        assert spans_of(exp_a, "gossip.stream.dial", **{"gossip.stream.outcome": "connected"})
        assert spans_of(exp_b, "gossip.stream.accept")
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


# ---------------------------------------------------------------------- metrics

def test_metrics_are_readable_through_an_in_memory_reader() -> None:
    net = MemoryNetwork(seed=30)
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    a = Cluster(Config.local(transport=net.new_transport()))
    b = Cluster(Config.local(transport=net.new_transport()))
    try:
        a.start()
        b.start()
        assert b.join(a.address, timeout=5.0) == 1
        wait_until(lambda: a.num_alive_nodes() == 2, what="2 nodes")
        handle = register_otel(a, meter_provider=mp)
        wait_until(lambda: a.stats().get("core.probes", 0) >= 1, what="a probe")
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "gossip"
                for m in sm.metrics:
                    points[m.name] = list(m.data.data_points)
        assert points["gossip.probes"][0].value >= 1
        assert {p.attributes["state"]: p.value for p in points["gossip.members"]}["alive"] == 2
        assert any(p.attributes.get("direction") == "in" for p in points["gossip.packets"])
        assert {p.attributes["outcome"] for p in points["gossip.suspicions"]} >= {"started", "refuted"}
        assert points["gossip.health_score"][0].value == 0
        handle.close()
        later = reader.get_metrics_data()
        names = {m.name for rm in later.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if list(m.data.data_points)} if later is not None else set()
        assert "gossip.members" not in names
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)


# ---------------------------------------------------------------------- config, cost

def test_tracing_config_is_validated() -> None:
    tp, _ = provider()
    Config.local(tracing=True).validate()
    Config.local(tracing=tp).validate()
    for bad in (None, "yes", 1, object()):
        with pytest.raises(ConfigError, match="tracing"):
            Config.local(tracing=bad).validate()


def test_off_by_default_never_imports_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from gossip import Cluster, Config\n"
        "from gossip.transports.memory import MemoryNetwork\n"
        "net = MemoryNetwork(seed=1)\n"
        "a = Cluster(Config.local(transport=net.new_transport()))\n"
        "b = Cluster(Config.local(transport=net.new_transport()))\n"
        "a.start(); b.start()\n"
        "assert b.join(a.address, timeout=5.0) == 1\n"
        "a.stop(timeout=2.0); b.stop(timeout=2.0)\n"
        "assert Config().tracing is False\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry') or m == 'gossip.engine.tracing')\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # And the check can see it: with tracing on, the module is loaded.
    on = code.replace("Config.local(transport=net.new_transport())",
                      "Config.local(transport=net.new_transport(), tracing=True)", 1)
    out = subprocess.run([sys.executable, "-c", on], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "opentelemetry.trace" in out.stdout and "gossip.engine.tracing" in out.stdout
