"""Probe round-trip times and the probe/suspicion counters of the core (no sockets, no sleeps)."""

from __future__ import annotations

import math
import random

import pytest

from gossip.config import Config
from gossip.messages import Ack, Alive, Gossip, Nack, Ping, PingReq, Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import Send
from gossip.protocol.rtt import RTT_BUCKETS, ProbeRtt, RttHistogram

from .harness import CoreCluster

A, B = NodeID(int=0xA), NodeID(int=0xB)


def core_with(*members: NodeID) -> Protocol:
    core = Protocol(Config.lan(), NodeID(int=1), "self:1", random.Random(1), 0.0)
    core.receive(0.0, "x", Gossip(tuple(Alive(m, 1, f"{m.int:x}:1") for m in members)))
    core.actions_to_perform()
    return core


def next_ping(core: Protocol) -> tuple[float, Send]:
    """Run timers until the core sends a ping; return when, and the send."""
    for _ in range(100):
        now = core.next_deadline()
        core.tick(now)
        pings = [a for a in core.actions_to_perform() if isinstance(a, Send) and isinstance(a.msg, Ping)]
        if pings:
            return now, pings[0]
    raise AssertionError("the core sent no ping")


# -- the histogram ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sample, bucket", [
    (0.0, 0), (0.0005, 0), (0.0006, 1), (0.001, 1), (0.02, 5), (5.0, len(RTT_BUCKETS) - 1),
    (5.01, len(RTT_BUCKETS)), (-1.0, 0),
])
def test_histogram_buckets_are_inclusive_upper_bounds(sample: float, bucket: int) -> None:
    h = RttHistogram()
    h.record(sample)
    snap = h.snapshot()
    assert snap.counts[bucket] == 1 and sum(snap.counts) == 1
    assert snap.count == 1 and snap.sum == max(0.0, sample)


def test_cumulative_ends_with_inf_and_the_count() -> None:
    h = RttHistogram()
    for s in (0.002, 0.002, 0.3, 9.0):
        h.record(s)
    cum = h.snapshot().cumulative()
    assert cum[-1] == (math.inf, 4)
    assert dict(cum)[0.0025] == 2 and dict(cum)[0.5] == 3 and dict(cum)[5.0] == 3
    assert [n for _, n in cum] == sorted(n for _, n in cum)


def test_empty_snapshot() -> None:
    snap = ProbeRtt()
    assert snap.count == 0 and sum(snap.counts) == 0 and len(snap.counts) == len(snap.bounds) + 1
    assert snap.cumulative()[-1] == (math.inf, 0)


# -- what the core records ------------------------------------------------------------------------------

def test_direct_ack_records_the_round_trip_and_counts_an_ack() -> None:
    core = core_with(A)
    sent_at, ping = next_ping(core)
    assert isinstance(ping.msg, Ping)
    core.receive(sent_at + 0.0123, ping.addr, Ack(ping.msg.seq), sender=A)
    rtt = core.probe_rtt()
    assert rtt.count == 1 and rtt.sum == pytest.approx(0.0123)
    assert rtt.last == {A: pytest.approx(0.0123)}
    assert core.members[A].rtt == pytest.approx(0.0123)
    assert core.stats["acks"] == 1 and core.stats["probes"] == 1
    # A duplicate ack of the same probe is neither a sample nor an ack.
    core.receive(sent_at + 0.02, ping.addr, Ack(ping.msg.seq), sender=A)
    assert core.probe_rtt().count == 1 and core.stats["acks"] == 1


def test_relayed_ack_counts_as_an_ack_but_not_as_a_round_trip() -> None:
    core = core_with(A, B)
    sent_at, ping = next_ping(core)
    assert isinstance(ping.msg, Ping)
    target = ping.msg.target
    helper = B if target == A else A
    core.tick(sent_at + core.config.ping_timeout)
    reqs = [a for a in core.actions_to_perform() if isinstance(a, Send) and isinstance(a.msg, PingReq)]
    assert reqs, "no indirect probe after the ping timeout"
    core.receive(sent_at + 0.7, reqs[0].addr, Ack(ping.msg.seq), sender=helper)
    assert core.stats["acks"] == 1
    assert core.probe_rtt().count == 0 and core.members[target].rtt is None


def test_nacks_for_our_probes_are_counted() -> None:
    core = core_with(A, B)
    sent_at, ping = next_ping(core)
    assert isinstance(ping.msg, Ping)
    core.receive(sent_at + 0.6, "x", Nack(ping.msg.seq), sender=B)
    core.receive(sent_at + 0.6, "x", Nack(999_999), sender=B)   # no such probe: not ours
    assert core.stats["nacks"] == 1


def test_suspicion_started_then_refuted() -> None:
    core = core_with(A)
    core.receive(1.0, "x", Gossip((Suspect(A, 1, B),)))
    assert core.members[A].state is NodeState.SUSPECT
    core.receive(1.5, "x", Gossip((Suspect(A, 1, NodeID(int=0xC)),)))   # a confirmation: same episode
    core.receive(2.0, "x", Gossip((Alive(A, 2, "a:1"),)))
    assert core.members[A].state is NodeState.ALIVE
    assert core.stats["suspicions_started"] == 1
    assert core.stats["suspicions_refuted"] == 1
    assert "suspicions_confirmed" not in core.stats


def test_suspicion_confirmed_by_timeout() -> None:
    c = CoreCluster(4)
    c.down.add(3)
    c.run(60.0)
    assert all(c.state(i, 3) is NodeState.DEAD for i in range(3))
    confirmed = sum(c.cores[i].stats.get("suspicions_confirmed", 0) for i in range(3))
    started = sum(c.cores[i].stats.get("suspicions_started", 0) for i in range(3))
    # At least one node's own timer declared it dead; the others may have heard it by gossip.
    assert confirmed >= 1 and started >= confirmed
    assert all(c.cores[i].stats.get("suspicions_refuted", 0) == 0 for i in range(3))


def test_cluster_of_cores_measures_its_link_latency() -> None:
    c = CoreCluster(3, latency=0.004)
    c.run(10.0)
    for i in range(3):
        rtt = c.cores[i].probe_rtt()
        assert rtt.count >= 5
        assert rtt.sum / rtt.count == pytest.approx(0.008)   # one hop each way
        assert set(rtt.last) == {c.cores[j].id for j in range(3) if j != i}
