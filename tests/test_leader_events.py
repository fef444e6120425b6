"""LeaderElection's event delivery: a raising handler and handlers too slow for the queue.

Clusters on the in-memory network (the gossip.testing fixtures); every wait is a bounded poll.
"""

from __future__ import annotations

import logging
import threading

import pytest

import gossip.leader.host as leader_host
from gossip import Cluster, NodeID
from gossip.leader import (
    BECAME_LEADER, ELECTED, STEPPED_DOWN, LeaderConfig, LeaderElection, LeaderEvent,
)
from gossip.testing import ClusterFactory, wait_until

CFG = LeaderConfig(check_interval=0.05, leader_timeout=0.5, metadata_criteria={"role": "lead"})


def _toggle(cluster: Cluster, election: LeaderElection, times: int) -> None:
    """Make the lone node step down and lead again ``times`` times (eligibility by metadata)."""
    for _ in range(times):
        cluster.local_metadata().set_string("role", "none")
        wait_until(lambda: not election.is_leader(), 10.0, "the node to step down")
        cluster.local_metadata().set_string("role", "lead")
        wait_until(election.is_leader, 10.0, "the node to lead again")


def test_a_raising_handler_is_counted_and_the_others_still_run(
        gossip_cluster_factory: ClusterFactory, caplog: pytest.LogCaptureFixture) -> None:
    (c,) = gossip_cluster_factory(1)
    c.local_metadata().set_string("role", "lead")
    got: list[tuple[LeaderEvent, NodeID]] = []
    with LeaderElection(c, CFG) as e:
        def boom(event: LeaderEvent, node: NodeID) -> None:
            raise RuntimeError(f"handler failed on {event.name}")

        e.handle_event_func(BECAME_LEADER, boom)
        e.handle_event_func(BECAME_LEADER, lambda ev, nid: got.append((ev, nid)))
        e.handle_event_func(STEPPED_DOWN, lambda ev, nid: got.append((ev, nid)))
        with caplog.at_level(logging.ERROR, logger="gossip"):
            wait_until(e.is_leader, 10.0, "the lone node to lead")
            _toggle(c, e, 1)
            wait_until(lambda: len(got) == 3, 10.0, "every event after the raising handler")
        assert [ev for ev, _ in got] == [BECAME_LEADER, STEPPED_DOWN, BECAME_LEADER]
        assert all(nid == c.local_node().id for _, nid in got)
        assert e.stats()["handler_errors"] == 2
        assert sum("handler failed on BECAME_LEADER" in (r.exc_text or "") for r in caplog.records) == 2


def test_handlers_too_slow_for_the_queue_lose_the_oldest_events_counted(
        gossip_cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(leader_host, "_EVENT_QUEUE_SIZE", 3)
    (c,) = gossip_cluster_factory(1)
    c.local_metadata().set_string("role", "lead")
    release = threading.Event()
    seen: list[LeaderEvent] = []

    def slow(event: LeaderEvent, node: NodeID) -> None:
        seen.append(event)
        release.wait(30.0)

    e = LeaderElection(c, CFG)
    try:
        for ev in (BECAME_LEADER, STEPPED_DOWN, ELECTED):
            e.handle_event_func(ev, slow)
        with caplog.at_level(logging.WARNING, logger="gossip"):
            e.start()
            wait_until(e.is_leader, 10.0, "the lone node to lead")
            wait_until(lambda: len(seen) == 1, 10.0, "the handler to hold the first event")
            # Each round adds at least two events (stepped down, became leader) behind the one
            # the handler holds: three rounds overflow a queue of three.
            _toggle(c, e, 3)
            assert e.stats().get("events_dropped", 0) >= 3
        assert any("leader event queue full (3)" in r.getMessage() for r in caplog.records)
        release.set()
        # The newest events were kept: the last one delivered says the node leads.
        wait_until(lambda: seen[-1] in (BECAME_LEADER, ELECTED) and e.is_leader(), 10.0,
                   "the kept events delivered")
    finally:
        release.set()
        e.stop()
