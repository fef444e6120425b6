"""Cluster.probe_rtt(): the core's round-trip figures, read through the public API."""

from __future__ import annotations

import time

from gossip import Cluster, Config, ProbeRtt
from gossip.transports.memory import MemoryNetwork


def test_probe_rtt_measures_the_link_to_each_member() -> None:
    net = MemoryNetwork(seed=5)
    a = Cluster(Config.local(transport=net.new_transport()))
    b = Cluster(Config.local(transport=net.new_transport()))
    assert a.probe_rtt() == ProbeRtt()            # not started: empty, no error
    try:
        a.start()
        b.start()
        net.delay(b.address, 0.05)                # every packet to b arrives 50 ms late
        assert b.join(a.address, timeout=5.0) == 1
        bid = b.local_node().id
        end = time.monotonic() + 10.0
        while bid not in a.probe_rtt().last:
            assert time.monotonic() < end, "a never measured a round trip to b"
            time.sleep(0.02)
        rtt = a.probe_rtt()
        assert rtt.last[bid] >= 0.05
        assert rtt.count >= 1 and sum(rtt.counts) == rtt.count
        assert rtt.sum >= 0.05 * rtt.count
        # Nothing at or below 25 ms: every sample carries the 50 ms delay.
        assert dict(rtt.cumulative())[0.025] == 0
    finally:
        a.stop(timeout=2.0)
        b.stop(timeout=2.0)
    assert a.probe_rtt().count >= rtt.count       # still readable after stop
