"""Adaptive direct-probe timeouts (``Config.adaptive_ping_timeout``) in the core: a member with a
steady slow round trip gets the time it needs, a fast one keeps ``ping_timeout``, awareness
still stretches both. No sockets, no sleeps."""

from __future__ import annotations

import random

import pytest

from gossip.config import Config
from gossip.messages import Ack, Alive, Gossip, Ping, PingReq
from gossip.node import NodeID
from gossip.protocol import Protocol
from gossip.protocol.actions import Send
from gossip.protocol.rtt import MIN_SAMPLES, RttWindow, adaptive_timeout

SLOW, HELPER = NodeID(int=0xA), NodeID(int=0xB)


def core(adaptive: bool, helper: bool = True, **kw: object) -> Protocol:
    cfg = Config.lan(ping_timeout=0.2, health_check_interval=1.0, adaptive_ping_timeout=adaptive,
                     **kw)
    c = Protocol(cfg, NodeID(int=1), "127.0.0.1:1", random.Random(1), 0.0)
    members = [Alive(SLOW, 1, "127.0.0.10:1")] + ([Alive(HELPER, 1, "127.0.0.11:1")] if helper else [])
    c.receive(0.0, "x", Gossip(tuple(members)))
    c.actions_to_perform()
    return c


def probe_slow(c: Protocol, rtt: float) -> tuple[float, bool]:
    """Run the core until it pings the slow member (the helper acks its own pings at once);
    the slow member's ack comes ``rtt`` later. Return how long the direct ping waited before
    helpers were asked (``inf`` if they were not), and whether they were."""

    def step(now: float) -> list[Send]:
        out = [a for a in c.actions_to_perform() if isinstance(a, Send)]
        for a in out:
            if isinstance(a.msg, Ping) and a.msg.target == HELPER:
                c.receive(now, a.addr, Ack(a.msg.seq), sender=HELPER)
        return out

    while True:
        now = c.next_deadline()
        c.tick(now)
        pings = [a for a in step(now) if isinstance(a.msg, Ping) and a.msg.target == SLOW]
        if pings:
            break
    ping = pings[0]
    assert isinstance(ping.msg, Ping)
    waited = float("inf")
    while c.next_deadline() <= now + rtt:
        t = c.next_deadline()
        c.tick(t)
        # Past the direct timeout: ping-reqs to helpers, and a ping over a connection.
        late = [a for a in step(t) if isinstance(a.msg, PingReq) or (a.reliable and isinstance(a.msg, Ping))]
        if late and waited == float("inf"):
            waited = t - now
    c.receive(now + rtt, ping.addr, Ack(ping.msg.seq), sender=SLOW)
    step(now + rtt)
    return waited, waited != float("inf")


def test_a_steady_slow_member_stops_being_probed_indirectly() -> None:
    fixed = core(adaptive=False)
    adaptive = core(adaptive=True)
    fixed_runs = [probe_slow(fixed, 0.3) for _ in range(12)]
    adaptive_runs = [probe_slow(adaptive, 0.3) for _ in range(12)]
    assert all(asked for _, asked in fixed_runs)  # every round falls back to helpers
    assert all(t == pytest.approx(0.2) for t, _ in fixed_runs)
    # The first rounds use ping_timeout until enough round trips are known; then 0.3 x 1.5.
    assert all(asked for _, asked in adaptive_runs[:MIN_SAMPLES])
    assert not any(asked for _, asked in adaptive_runs[MIN_SAMPLES:])
    assert adaptive._probe.ping_timeout(adaptive.members[SLOW]) == pytest.approx(0.45)  # 0.3 x 1.5
    assert fixed.stats["indirect_probes"] > adaptive.stats["indirect_probes"]


def test_the_adaptive_timeout_is_clamped_and_still_scaled_by_awareness() -> None:
    c = core(adaptive=True, ping_timeout_max=0.4)
    for _ in range(MIN_SAMPLES):
        probe_slow(c, 0.5)                 # slower than the cap allows
    waited, asked = probe_slow(c, 0.5)
    assert waited == pytest.approx(0.4) and asked
    alone = core(adaptive=True, helper=False, ping_timeout_max=0.4)  # nobody lowers its score
    for _ in range(MIN_SAMPLES):
        probe_slow(alone, 0.5)
    alone.awareness.score = 0
    assert probe_slow(alone, 0.5) == (pytest.approx(0.4), True)
    alone.awareness.score = 2              # Lifeguard: an unhealthy node waits longer
    assert probe_slow(alone, 1.5) == (pytest.approx(0.4 * 3), True)
    fast = core(adaptive=True)
    for _ in range(MIN_SAMPLES):
        probe_slow(fast, 0.001)            # a fast member keeps ping_timeout
    assert fast._probe.ping_timeout(fast.members[SLOW]) == pytest.approx(0.2)
    assert probe_slow(fast, 0.25)[0] == pytest.approx(0.2)


def test_off_keeps_no_history() -> None:
    c = core(adaptive=False)
    probe_slow(c, 0.3)
    assert c.members[SLOW].rtts is None and c.members[SLOW].rtt == pytest.approx(0.3)


def test_window_keeps_the_last_samples_and_reads_a_percentile() -> None:
    w = RttWindow()
    assert w.percentile(0.9) == 0.0
    assert adaptive_timeout(None, 0.2, 0.6, 0.9, 1.5) == 0.2
    for s in (0.1, 0.2, 0.3, -1.0):
        w.add(s, 4)
    assert sorted(w.samples) == [0.0, 0.1, 0.2, 0.3]
    assert w.percentile(1.0) == 0.3 and w.percentile(0.5) == 0.1
    for s in (0.5, 0.5, 0.5):
        w.add(s, 4)                         # the oldest three go
    assert sorted(w.samples) == [0.0, 0.5, 0.5, 0.5]
    assert adaptive_timeout(w, 0.2, 0.6, 0.9, 1.5) == 0.6
    assert adaptive_timeout(w, 0.2, 10.0, 0.9, 1.5) == pytest.approx(0.75)
    few = RttWindow()
    few.add(0.5, 4)
    assert adaptive_timeout(few, 0.2, 0.6, 0.9, 1.5) == 0.2  # too few samples yet


def test_ping_timeout_max_defaults_to_halfway_to_the_probe_interval() -> None:
    assert Config.lan(ping_timeout=0.2, health_check_interval=1.0).effective_ping_timeout_max == 0.6
    assert Config.lan(ping_timeout_max=0.7).effective_ping_timeout_max == 0.7
