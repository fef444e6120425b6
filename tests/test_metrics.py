"""The Prometheus collector: stats keys to families, parsed back with prometheus_client.parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gossip import Cluster, Config, Node, NodeID, NodeState
from gossip import metrics
from gossip.metadata import MetadataReader
from gossip.protocol.rtt import RttHistogram

ME = NodeID(int=1)


class FakeCluster:
    """Just what the collector reads, with figures a test chooses."""

    def __init__(self, stats: dict[str, int], states: list[NodeState] | None = None) -> None:
        self._stats = stats
        self._states = states or [NodeState.ALIVE]
        self.address = "127.0.10.1:7946"
        self.rtt = RttHistogram()

    def local_node(self) -> Node:
        return self.nodes()[0]

    def nodes(self) -> list[Node]:
        return [Node(NodeID(int=i + 1), f"127.0.10.{i + 1}:7946", s, 0, MetadataReader({}, 0))
                for i, s in enumerate(self._states)]

    def health_score(self) -> int:
        return 2

    def probe_rtt(self) -> Any:
        return self.rtt.snapshot()

    def stats(self) -> dict[str, int]:
        return dict(self._stats)


def scrape(cluster: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Register ``cluster`` in a fresh registry, scrape, parse; return {(sample, labels): value}."""
    reg = CollectorRegistry()
    metrics.register(cluster, reg)
    text = generate_latest(reg).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.mark.parametrize("key, family, labels", [
    ("packets_in.udp.ping", "gossip_packets", ("in", "udp", "ping")),
    ("bytes_out.tcp.push_pull_reply", "gossip_bytes", ("out", "tcp", "push_pull_reply")),
    ("packets_out.ws.user", "gossip_packets", ("out", "ws", "user")),
    ("dropped.send_queue_full", "gossip_dropped", ("send_queue_full",)),
    ("bad_packets.AuthenticationError", "gossip_bad_packets", ("AuthenticationError",)),
    ("user.relayed", "gossip_user_messages", ("relayed",)),
    ("streams.active", "gossip_streams_active", ()),
    ("streams.bytes_in", "gossip_stream_bytes", ("in",)),
    ("streams.refused", "gossip_streams", ("refused",)),
    ("queue.send", "gossip_queue_depth", ("send",)),
    ("core.acks", "gossip_acks", ()),
    ("core.suspicions_confirmed", "gossip_suspicions", ("confirmed",)),
    ("core.push_pulls", "gossip_core_events", ("push_pulls",)),
    ("transport.tcp_dials", "gossip_transport_events", ("tcp_dials",)),
    ("packets_in.udp", "gossip_stat", ("packets_in.udp",)),      # malformed: kept, not lost
    ("worker_errors", "gossip_stat", ("worker_errors",)),
])
def test_classify(key: str, family: str, labels: tuple[str, ...]) -> None:
    assert metrics.classify(key) == (family, labels)
    assert len(labels) == len(metrics.FAMILIES[family][2])


def test_schema_names_become_labelled_families() -> None:
    fake = FakeCluster({
        "packets_in.udp.ping": 7, "packets_out.udp.ack": 5, "bytes_in.udp.ping": 700,
        "dropped.incoming_queue_full": 3, "bad_packets.DecodeError": 2, "user.received": 4,
        "streams.active": 1, "streams.bytes_out": 99, "queue.incoming": 6,
        "core.probes": 10, "core.failed_probes": 1, "core.suspicions_started": 2,
        "transport.udp_sent": 8, "mystery.counter": 42,
    }, [NodeState.ALIVE, NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING])
    fake.rtt.record(0.003)
    s = scrape(fake)
    assert value(s, "gossip_packets_total", direction="in", transport="udp", type="ping") == 7
    assert value(s, "gossip_packets_total", direction="out", transport="udp", type="ack") == 5
    assert value(s, "gossip_bytes_total", direction="in", transport="udp", type="ping") == 700
    assert value(s, "gossip_dropped_total", reason="incoming_queue_full") == 3
    assert value(s, "gossip_bad_packets_total", error="DecodeError") == 2
    assert value(s, "gossip_user_messages_total", event="received") == 4
    assert value(s, "gossip_streams_active") == 1
    assert value(s, "gossip_stream_bytes_total", direction="out") == 99
    assert value(s, "gossip_queue_depth", queue="incoming") == 6
    assert value(s, "gossip_probes_total") == 10 and value(s, "gossip_failed_probes_total") == 1
    assert value(s, "gossip_acks_total") == 0          # present before the first ack
    assert value(s, "gossip_suspicions_total", outcome="started") == 2
    assert value(s, "gossip_suspicions_total", outcome="confirmed") == 0
    assert value(s, "gossip_transport_events_total", event="udp_sent") == 8
    assert value(s, "gossip_stat", key="mystery.counter") == 42
    assert value(s, "gossip_members", state="alive") == 2
    assert value(s, "gossip_members", state="suspect") == 1
    assert value(s, "gossip_members", state="dead") == 1
    assert value(s, "gossip_members", state="left") == 1
    assert value(s, "gossip_health_score") == 2
    assert value(s, "gossip_probe_rtt_seconds_count") == 1
    assert value(s, "gossip_probe_rtt_seconds_sum") == pytest.approx(0.003)
    assert value(s, "gossip_probe_rtt_seconds_bucket", le="0.0025") == 0
    assert value(s, "gossip_probe_rtt_seconds_bucket", le="0.005") == 1
    assert value(s, "gossip_probe_rtt_seconds_bucket", le="+Inf") == 1
    assert value(s, "gossip_info", node_id=str(ME), address="127.0.10.1:7946",
                 version=__import__("gossip").__version__) == 1


def test_handler_and_internal_errors_have_their_own_families() -> None:
    s = scrape(FakeCluster({"handler_errors.reply": 2, "errors.scheduler": 1}))
    assert value(s, "gossip_handler_errors_total", handler="reply") == 2
    assert value(s, "gossip_internal_errors_total", where="scheduler") == 1


def test_one_collector_per_registry() -> None:
    reg = CollectorRegistry()
    metrics.register(FakeCluster({}), reg)
    with pytest.raises(ValueError):
        metrics.register(FakeCluster({}), reg)


@pytest.fixture
def pair() -> Iterator[list[Cluster]]:
    from gossip.transports.memory import MemoryNetwork

    net = MemoryNetwork(seed=3)
    clusters = [Cluster(Config.local(transport=net.new_transport())) for _ in range(2)]
    try:
        for c in clusters:
            c.start()
        assert clusters[1].join(clusters[0].address, timeout=5.0) == 1
        yield clusters
    finally:
        for c in clusters:
            c.stop(timeout=2.0)


def wait_for(pred: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_a_real_cluster_counts_probes_acks_and_round_trips(pair: list[Cluster]) -> None:
    a = pair[0]
    first = scrape(a)
    wait_for(lambda: a.probe_rtt().count >= 2)
    later = scrape(a)
    assert value(later, "gossip_members", state="alive") == 2
    assert value(later, "gossip_probes_total") > value(first, "gossip_probes_total")
    assert value(later, "gossip_acks_total") >= 2
    assert value(later, "gossip_probe_rtt_seconds_count") >= 2
    assert value(later, "gossip_probe_rtt_seconds_sum") > 0
    inbound = sum(v for (n, labels), v in later.items()
                  if n == "gossip_packets_total" and ("direction", "in") in labels)
    assert inbound > 0
