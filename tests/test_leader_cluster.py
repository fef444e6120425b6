"""LeaderElection on real clusters (in-memory network, the gossip.testing fixtures).

The timing bounds of the election are proved on a virtual clock (test_leader_election.py,
tests/sim/test_leader.py); here waits are generous bounded polls and nothing asserts on speed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import pytest

from gossip import Cluster, Config, HandlerExistsError, NodeID
from gossip.leader import (
    BECAME_LEADER, ELECTED, LOST, STEPPED_DOWN, LeaderConfig, LeaderElection, LeaderEvent,
)
from gossip.testing import ClusterFactory, GossipNetwork, gossip_threads, wait_until

FAST = LeaderConfig(check_interval=0.1, leader_timeout=0.5)


@contextlib.contextmanager
def elections(clusters: list[Cluster], config: LeaderConfig = FAST) -> Iterator[list[LeaderElection]]:
    started = [LeaderElection(c, config) for c in clusters]
    try:
        for e in started:
            e.start()
        yield started
    finally:
        for e in started:
            e.stop()


def agreed(es: list[LeaderElection]) -> NodeID | None:
    """The one leader every election in ``es`` follows, or None."""
    leaders = [e for e in es if e.is_leader()]
    if len(leaders) != 1:
        return None
    lid = leaders[0].leader_id()
    return lid if all(e.leader_id() == lid for e in es) else None


def test_five_nodes_elect_exactly_one(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(5)
    log: list[tuple[int, LeaderEvent, NodeID, str]] = []
    lock = threading.Lock()
    with elections(clusters) as es:
        for i, e in enumerate(es):
            for ev in LeaderEvent:
                e.handle_event_func(ev, lambda event, nid, i=i: (
                    lock.acquire(), log.append((i, event, nid, threading.current_thread().name)),
                    lock.release()))
        wait_until(lambda: agreed(es) is not None, 20.0, "the five nodes agree on one leader")
        lid = agreed(es)
        assert lid is not None
        leader = next(i for i, e in enumerate(es) if e.is_leader())
        assert clusters[leader].local_node().id == lid
        node = es[0].leader()
        assert node is not None and node.id == lid and all(e.has_leader() for e in es)
        wait_until(lambda: sum(1 for x in log if x[1] is ELECTED and x[2] == lid) == 5, 10.0,
                   "every node's handlers to hear ELECTED")
        with lock:
            mine = [(ev, nid) for i, ev, nid, _ in log if i == leader]
            assert (BECAME_LEADER, lid) in mine
            assert mine.index((BECAME_LEADER, lid)) < mine.index((ELECTED, lid))
            for i, _, _, thread in log:
                assert thread == f"gossip-{clusters[i].local_node().id.short}-leader-events"
        assert es[leader].term >= 1 and es[leader].stats()["heartbeats_sent"] > 0


def test_after_the_leader_crashes_another_is_elected(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(5)
    with elections(clusters) as es:
        wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
        old = agreed(es)
        i = next(k for k, e in enumerate(es) if e.is_leader())
        old_term = es[i].term
        clusters[i].stop(leave=False)        # a crash: no leave, no resignation gets out
        es[i].stop()
        rest = [e for k, e in enumerate(es) if k != i]
        wait_until(lambda: agreed(rest) not in (None, old), 30.0, "the survivors to elect another")
        # The new leader leads a later term than the crashed one, and every survivor follows it.
        new = next(e for e in rest if e.is_leader())
        assert new.term > old_term
        assert all(e.term == new.term for e in rest if e.leader_id() == new.leader_id())


def test_minority_side_has_no_leader_and_the_heal_leaves_one(
        gossip_cluster_factory: ClusterFactory, gossip_network: GossipNetwork) -> None:
    clusters = gossip_cluster_factory(5)
    with elections(clusters) as es:
        wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
        first = next(k for k, e in enumerate(es) if e.is_leader())
        minority = [first, (first + 1) % 5]          # the leader is on the minority side
        majority = [k for k in range(5) if k not in minority]
        gossip_network.partition([clusters[k] for k in minority], [clusters[k] for k in majority])
        wait_until(lambda: all(not es[k].is_leader() and es[k].leader_id() is None for k in minority)
                   and agreed([es[k] for k in majority]) is not None, 30.0,
                   "the minority to have no leader and the majority one")
        gossip_network.heal()
        wait_until(lambda: agreed(es) is not None, 30.0, "one leader for all five after the heal")


def test_only_eligible_nodes_lead(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    eligible = {1, 3}
    for k in eligible:
        clusters[k].local_metadata().set_string("role", "scheduler")
    ids = {k: clusters[k].local_node().id for k in range(4)}
    wait_until(lambda: all(c.get_node(ids[k]) is not None
                           and c.get_node(ids[k]).metadata.get_string("role") == "scheduler"  # type: ignore[union-attr]
                           for c in clusters for k in eligible), 10.0, "the roles to spread")
    cfg = LeaderConfig(check_interval=0.1, leader_timeout=0.5, metadata_criteria={"role": "scheduler"})
    with elections(clusters, cfg) as es:
        wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
        assert agreed(es) in {ids[k] for k in eligible}
        # The leader stops being eligible: the other scheduler takes over.
        k = next(k for k in eligible if es[k].is_leader())
        clusters[k].local_metadata().set_string("role", "worker")
        other = ids[(eligible - {k}).pop()]
        wait_until(lambda: agreed(es) == other, 30.0, "the other scheduler to lead")
        assert not any(es[j].is_leader() for j in range(4) if j not in eligible)


def test_stop_unregisters_its_handlers_and_resigns(gossip_cluster_factory: ClusterFactory) -> None:
    a, b, c = gossip_cluster_factory(3)
    # Only the node holding the role may lead: at first that is a alone, so a is the leader
    # whose stop() is checked, whatever the timing.
    ids = [x.local_node().id for x in (a, b, c)]
    a.local_metadata().set_string("role", "lead")
    wait_until(lambda: all(x.get_node(ids[0]) is not None
                           and x.get_node(ids[0]).metadata.get_string("role") == "lead"  # type: ignore[union-attr]
                           for x in (b, c)), 10.0, "a's role to spread")
    cfg = LeaderConfig(check_interval=0.1, leader_timeout=0.5, metadata_criteria={"role": "lead"})
    with elections([b, c], cfg) as others:
        e = LeaderElection(a, cfg)
        with pytest.raises(HandlerExistsError):
            with LeaderElection(a, cfg):
                e.start()                    # a second election on one message type
        e.stop()
        assert a.unregister_message_type(cfg.heartbeat_msg_type) is False
        steps: list[LeaderEvent] = []
        with LeaderElection(a, cfg) as again:   # no "handler exists": the first one let go
            again.handle_event_func(STEPPED_DOWN, lambda ev, nid: steps.append(ev))
            wait_until(lambda: agreed([again, *others]) == ids[0], 20.0, "a to lead")
            assert again.is_leader()
        assert not again.is_leader() and again.leader_id() is None
        assert steps == [STEPPED_DOWN]       # delivered before stop() returned
        # Now another may take over: a stops being eligible (a member that still matches the
        # criteria counts towards the quorum even while its election is stopped) and b becomes so.
        a.local_metadata().set_string("role", "none")
        b.local_metadata().set_string("role", "lead")
        wait_until(lambda: agreed(others) == ids[1], 30.0, "b to lead after a resigned")
        with pytest.raises(Exception, match="cannot be restarted"):
            again.start()


def test_a_handler_may_stop_the_election_from_the_events_thread(
        gossip_cluster_factory: ClusterFactory) -> None:
    (a,) = gossip_cluster_factory(1)
    e = LeaderElection(a, FAST)
    done = threading.Event()

    def on_elected(event: LeaderEvent, nid: NodeID) -> None:
        e.stop()                             # re-enters from the election's own events thread
        done.set()

    e.handle_event_func(ELECTED, on_elected)
    e.start()
    wait_until(done.is_set, 10.0, "a lone node to elect itself")
    name = f"gossip-{a.local_node().id.short}-leader"
    wait_until(lambda: not any(n.startswith(name) for n in gossip_threads().values()), 10.0,
               "the election threads to end")


def test_event_handler_registration() -> None:
    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as c:  # only the API is checked
        e = LeaderElection(c, FAST)
        hid = e.handle_event_func(LOST, lambda ev, nid: None)
        assert e.remove_event_handler(hid) and not e.remove_event_handler(hid)
        with pytest.raises(ValueError, match="not a leader event"):
            e.handle_event_func(9, lambda ev, nid: None)  # type: ignore[arg-type]
        assert not e.is_leader() and e.leader() is None and e.term == 0
        e.stop()


def test_start_says_an_unencrypted_election_is_not_safe(
        gossip_cluster_factory: ClusterFactory, caplog: pytest.LogCaptureFixture) -> None:
    (a,) = gossip_cluster_factory(1)
    with caplog.at_level(logging.WARNING, logger="gossip.leader"):
        with LeaderElection(a, FAST) as e:
            assert not e.authenticated
    assert any("unencrypted cluster is not safe" in r.getMessage() for r in caplog.records)



def test_the_leaders_group_and_its_sends(gossip_cluster_factory: ClusterFactory) -> None:
    from gossip import USER_MSG, NodeGroup, TransportType

    clusters = gossip_cluster_factory(4)
    eligible = {0, 2}
    for k in eligible:
        clusters[k].local_metadata().set_string("role", "scheduler")
    ids = [c.local_node().id for c in clusters]
    wait_until(lambda: all(c.get_node(ids[k]) is not None
                           and c.get_node(ids[k]).metadata.get_string("role") == "scheduler"  # type: ignore[union-attr]
                           for c in clusters for k in eligible), 10.0, "the roles to spread")
    got: list[tuple[int, str]] = []
    lock = threading.Lock()
    for k, c in enumerate(clusters):
        c.handle_func_no_forward(USER_MSG, lambda s, p, k=k: (lock.acquire(), got.append((k, p.unmarshal())),
                                                             lock.release()))
    cfg = LeaderConfig(check_interval=0.1, leader_timeout=0.5, metadata_criteria={"role": "scheduler"})
    e = LeaderElection(clusters[0], cfg)
    group = e.get_node_group()
    # The group exists from construction on (as in Go), holding the eligible members only.
    assert isinstance(group, NodeGroup) and e.get_node_group() is group
    wait_until(lambda: {n.id for n in group.get_nodes()} == {ids[0], ids[2]}, 10.0, "the group")
    with e:
        e.send_to_peers(USER_MSG, "best effort")
        e.send_to_peers_reliable(USER_MSG, "reliable")
        e.send_to_peers(USER_MSG, "reliable too", transport=TransportType.RELIABLE)
        wait_until(lambda: len(got) == 3, 10.0, "three messages")
        # Only the other eligible member heard them (the local node is not sent to).
        assert sorted(got) == [(2, "best effort"), (2, "reliable"), (2, "reliable too")]
    assert group.closed                        # stop() closes the group
    from gossip import ClusterClosed

    with pytest.raises(ClusterClosed, match="stopped"):
        e.send_to_peers(USER_MSG, "too late")
    # Without criteria every node is eligible: no group, and a send reaches the whole cluster.
    got.clear()
    every = LeaderElection(clusters[1], FAST)
    try:
        assert every.get_node_group() is None
        every.send_to_peers(USER_MSG, "to all")
        wait_until(lambda: len(got) == 3, 10.0, "the broadcast everywhere")
        every.send_to_peers_reliable(USER_MSG, "to all, reliably")
        wait_until(lambda: len(got) == 6, 10.0, "the reliable broadcast everywhere")
        assert sorted(k for k, _ in got) == [0, 0, 2, 2, 3, 3]
    finally:
        every.stop()


def test_members_gone_for_good_can_be_removed_from_the_quorum(
        gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(3)
    idle = LeaderElection(clusters[0], FAST)
    assert idle.remove_members([clusters[1].local_node().id]) == 0   # not started: nothing counted
    with elections(clusters) as es:
        wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
        gone = clusters[2].local_node().id
        # Every started election counts the three members; a node removed for good counts once,
        # and removing it again or removing a stranger counts nothing.
        assert es[0].remove_members([gone]) == 1
        assert es[0].remove_members([gone, NodeID(int=0xDEAD)]) == 0
