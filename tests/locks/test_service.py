"""LockService on real clusters (in-memory network, the gossip.testing fixtures).

Timing bounds are proved on a virtual clock (tests/locks/test_core.py, tests/sim/test_locks.py);
here waits are bounded polls, and "not before the TTL" is checked against the holder's own
lease end on the one monotonic clock all these nodes share.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from gossip import Cluster, GossipTimeout, NodeGroup, NodeID, NodeState, USER_MSG
from gossip.codecs import MsgpackCodec
from gossip.leader import LeaderConfig
from gossip.locks import FencingToken, LockConfig
from gossip.locks.base import Send
from gossip.locks.messages import Wake
from gossip.locks.service import Lease, LockLost, LockRefused, LockService
from gossip.metadata import MetadataReader
from gossip.node import Node
from gossip.packet import Packet
from gossip.testing import ClusterFactory, GossipNetwork, wait_until

ELECTION = LeaderConfig(check_interval=0.1, leader_timeout=0.5, heartbeat_msg_type=66)
FAST = LockConfig(retry_interval=0.05, max_ttl=60.0)


@contextlib.contextmanager
def services(clusters: list[Cluster]) -> Iterator[list[LockService]]:
    started: list[LockService] = []
    try:
        for c in clusters:
            started.append(LockService(c, config=FAST, leader_config=ELECTION))
        yield started
    finally:
        for s in started:
            s.close()


def leader_index(svcs: list[LockService]) -> int:
    wait_until(lambda: sum(1 for s in svcs if s.election.is_leader()) == 1, 20.0, "one leader")
    return next(i for i, s in enumerate(svcs) if s.election.is_leader())


def test_acquire_renew_release_and_the_holder(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(3)
    with services(clusters) as (a, b, c):
        with b.acquire("report", ttl=5.0, timeout=20.0) as lease:
            assert lease.valid() and 4.0 < lease.remaining() <= 5.0
            holder = c.holder("report")
            assert holder is not None and holder.node_id == clusters[1].local_node().id
            assert holder.token == lease.token
            with pytest.raises(GossipTimeout):
                c.acquire("report", ttl=5.0, timeout=0.3)
            before = lease.expires_at()
            lease.renew(ttl=10.0)
            assert lease.expires_at() > before and lease.ttl == 10.0
        assert not lease.valid()
        # (the release reaches the leader in a moment; the question may overtake it)
        wait_until(lambda: c.holder("report") is None, 10.0, "the leader to see the release")
        with c.acquire("report", ttl=5.0, timeout=5.0) as second:
            assert second.token > lease.token
        with pytest.raises(LockLost):
            lease.renew()
        assert a.stats()["grants"] + b.stats().get("grants", 0) + c.stats().get("grants", 0) >= 2


def test_bad_requests_are_refused(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(2)
    with services(clusters) as (a, _):
        with pytest.raises(LockRefused):
            a.acquire("x", ttl=3600.0, timeout=10.0)         # above max_ttl
        with pytest.raises(ValueError):
            a.acquire("", ttl=1.0)
        with pytest.raises(ValueError):
            a.acquire("x", ttl=-1.0)


class FencedStore:
    """A storage that remembers the highest token it has seen and refuses older ones."""

    def __init__(self) -> None:
        self.highest = FencingToken(0, 0)
        self.rows: list[tuple[str, FencingToken]] = []
        self.refused = 0
        self._lock = threading.Lock()

    def write(self, row: str, token: FencingToken) -> bool:
        with self._lock:
            if token < self.highest:
                self.refused += 1
                return False
            self.highest = token
            self.rows.append((row, token))
            return True


def test_the_fencing_token_lets_storage_refuse_a_holder_whose_lease_ended(
        gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(3)
    store = FencedStore()
    with services(clusters) as (_, b, c):
        slow = b.acquire("table", ttl=0.5, timeout=20.0)
        assert store.write("b: first", slow.token)
        # b stalls (a long GC pause) past its lease without renewing; c takes the lock
        fast = c.acquire("table", ttl=5.0, timeout=20.0)
        assert not slow.valid() and fast.token > slow.token
        assert store.write("c: next", fast.token)
        assert not store.write("b: late write", slow.token)   # refused: an older token
        assert store.refused == 1 and [r for r, _ in store.rows] == ["b: first", "c: next"]
        fast.release()


def test_a_crashed_holder_loses_its_lock_after_its_lease_not_before(
        gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    with services(clusters) as svcs:
        lead = leader_index(svcs)
        holder = (lead + 1) % 4
        other = (lead + 2) % 4
        lease = svcs[holder].acquire("job", ttl=2.0, timeout=20.0)
        clusters[holder].stop(leave=False)                 # crashes: no release, no renewal
        second = svcs[other].acquire("job", ttl=2.0, timeout=30.0)
        granted_at = time.monotonic()
        assert granted_at >= lease.expires_at()          # never before the holder's lease ended
        assert second.token > lease.token
        second.release()


def test_a_new_leader_keeps_a_renewed_lock_and_tokens_grow(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    with services(clusters) as svcs:
        lead = leader_index(svcs)
        holder = (lead + 1) % 4
        other = (lead + 2) % 4
        lease = svcs[holder].acquire("job", ttl=15.0, timeout=20.0)
        old_term = svcs[lead].election.term
        clusters[lead].stop(leave=False)                    # the leader crashes
        svcs[lead].close()
        rest = [s for i, s in enumerate(svcs) if i != lead]
        wait_until(lambda: any(s.election.is_leader() and s.election.term > old_term for s in rest), 12.0,
                   "a new leader")
        # The holder still holds it under the new leader: its renewal confirms the lease the new
        # leader recovered (and would otherwise wait out); the others wait.
        wait_until(lambda: _renewed(lease), 10.0, "a renewal confirmed by the new leader")
        assert lease.valid()
        with pytest.raises(GossipTimeout):
            svcs[other].acquire("job", ttl=2.0, timeout=0.5)
        lease.release()
        nxt = svcs[other].acquire("job", ttl=2.0, timeout=10.0)
        assert nxt.token > lease.token and nxt.token.term > old_term
        nxt.release()


def _renewed(lease: Lease) -> bool:
    try:
        lease.renew(ttl=15.0, timeout=0.5)
        return True
    except GossipTimeout:
        return False


def test_a_minority_side_never_grants(gossip_network: GossipNetwork,
                                      gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(5)
    with services(clusters) as svcs:
        lead = leader_index(svcs)
        small = [lead, (lead + 1) % 5]
        big = [i for i in range(5) if i not in small]
        gossip_network.partition([clusters[i] for i in small], [clusters[i] for i in big])
        grants_before = svcs[lead].stats().get("grants", 0)
        with pytest.raises(GossipTimeout):
            svcs[small[1]].acquire("x", ttl=2.0, timeout=3.0)
        assert svcs[lead].stats().get("grants", 0) == grants_before
        lease = svcs[big[0]].acquire("x", ttl=2.0, timeout=30.0)   # the big side elects and grants
        assert lease.valid()
        lease.release()


def test_hostile_lock_messages_are_counted_and_dropped(gossip_cluster_factory: ClusterFactory) -> None:
    a, b = gossip_cluster_factory(2)
    with services([a]) as (svc,):
        node = a.local_node()
        b.send_to(node, FAST.msg_type, {"k": "acq", "q": -1, "n": "x", "t": 1.0})
        b.send_to(node, FAST.msg_type, ["not", "a", "mapping"])
        b.send_to(node, FAST.msg_type, {"k": "prom", "b": [1, 0, ""], "hi": [0, 0], "rs": [["x"] * 7]})
        wait_until(lambda: svc.stats().get("messages_malformed", 0) == 3, 10.0, "three refusals")
        b.send_to(node, USER_MSG, "unrelated")


def test_close_releases_what_it_holds(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(3)
    with services(clusters) as (a, b, c):
        lease = b.acquire("x", ttl=30.0, timeout=20.0)
        b.close()
        assert not lease.valid()
        with c.acquire("x", ttl=1.0, timeout=5.0) as nxt:     # freed at once, not in 30 s
            assert nxt.token > lease.token
        from gossip.errors import ClusterClosed
        with pytest.raises(ClusterClosed):
            b.acquire("y")


def _lock_packet(svc: LockService, sender: NodeID, body: object, encrypted: bool) -> Packet:
    codec = MsgpackCodec()
    return Packet(svc.config.msg_type, sender.bytes, 1, 1, codec.encode(body), codec, False,
                  encrypted, 100)


def test_the_lock_receive_path_refuses_and_counts(gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1, encryption_key=bytes(range(32)))
    other = NodeID.generate()
    alive = Node(other, "127.0.0.1:7946", NodeState.ALIVE, 1, MetadataReader({}, 1))
    unknown = Node(other, "127.0.0.1:7946", NodeState.UNKNOWN, 1, MetadataReader({}, 1))
    with services([c]) as (svc,):
        assert svc.authenticated
        svc._on_message(unknown, _lock_packet(svc, other, {"kind": "x"}, True))
        svc._on_message(alive, _lock_packet(svc, other, {"kind": "x"}, False))
        svc._on_message(alive, _lock_packet(svc, other, {"kind": "nonsense"}, True))
        svc._on_message(alive, _lock_packet(svc, other, [1, 2], True))
        stats = svc.stats()
        assert (stats["messages_from_unknown"], stats["messages_unauthenticated"],
                stats["messages_malformed"]) == (1, 1, 2)


def test_without_an_eligible_leader_questions_time_out_and_sends_to_strangers_are_skipped(
        gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1)
    group = NodeGroup(c, {"role": "lock-keeper"})     # nobody matches: no leader, ever
    svc = LockService(c, group=group, config=FAST, leader_config=ELECTION)
    try:
        with pytest.raises(GossipTimeout, match="no answer from the lock leader"):
            svc.holder("report", timeout=0.0)
        with pytest.raises(GossipTimeout, match="not acquired"):
            svc.acquire("report", ttl=1.0, timeout=0.0)
        svc._perform([Send((NodeID.generate(),), Wake("report"))])   # not a member: nothing sent
        assert svc.stats().get("send_errors", 0) == 0
    finally:
        svc.close()
        group.close()


def test_a_group_that_selects_by_tag_is_refused(gossip_cluster_factory: ClusterFactory) -> None:
    from gossip import NodeGroup
    from gossip.errors import ConfigError
    from gossip.groups import Criteria

    (a,) = gossip_cluster_factory(1)
    with NodeGroup(a, Criteria({"role": "locks"}, tags={"gpu"})) as group:
        with pytest.raises(ConfigError, match="tags"):
            LockService(a, group)
