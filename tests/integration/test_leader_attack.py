"""Forged election heartbeats on loopback: raw datagrams built with ``gossip.leader`` messages
and a :class:`~gossip.packet.PacketCodec`, sent in the name of a real member.

Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

import pytest

from gossip import Cluster, Config, NodeID
from gossip.hlc import now as hlc_now
from gossip.leader import LeaderConfig, LeaderElection
from gossip.leader.election import MAX_TERM, Heartbeat, encode_message
from gossip.packet import PacketCodec
from gossip.security import Keyring

from . import scaled, wait_until

FAST = LeaderConfig(check_interval=0.1, leader_timeout=0.5)
KEY = bytes(range(32))


@contextlib.contextmanager
def cluster_of(n: int, **cfg: object) -> Iterator[tuple[list[Cluster], list[LeaderElection]]]:
    clusters = [Cluster(Config.local(bind_addr="127.0.0.1:0", **cfg)) for _ in range(n)]  # type: ignore[arg-type]
    elections: list[LeaderElection] = []
    try:
        for c in clusters:
            c.start()
        for c in clusters[1:]:
            assert c.join(clusters[0].address, timeout=scaled(5.0)) == 1
        wait_until(lambda: all(c.num_alive_nodes() == n for c in clusters), 10.0, f"{n} nodes")
        elections = [LeaderElection(c, FAST) for c in clusters]
        for e in elections:
            e.start()
        yield clusters, elections
    finally:
        for e in elections:
            e.stop()
        for c in clusters:
            c.stop(timeout=3.0)


def agreed(es: list[LeaderElection]) -> NodeID | None:
    leaders = [e for e in es if e.is_leader()]
    if len(leaders) != 1:
        return None
    lid = leaders[0].leader_id()
    return lid if all(e.leader_id() == lid for e in es) else None


def forge(codec: PacketCodec, clusters: list[Cluster], victim: NodeID, hb: Heartbeat, copies: int = 3) -> None:
    """Send ``hb`` to every node as a datagram that claims to come from ``victim``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for c in clusters:
            host, _, port = c.address.rpartition(":")
            for _ in range(copies):
                data = codec.encode(FAST.heartbeat_msg_type, victim.bytes, hlc_now(), 1, encode_message(hb))
                udp.sendto(data, (host, int(port)))


def test_a_forged_top_term_heartbeat_does_not_end_elections(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gossip.leader"):
        with cluster_of(3) as (clusters, es):
            assert any("unencrypted cluster is not safe" in r.getMessage() for r in caplog.records)
            assert not any(e.authenticated for e in es)
            wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
            before = max(e.term for e in es)
            victim = next(c.local_node().id for c, e in zip(clusters, es) if not e.is_leader())
            forge(PacketCodec(), clusters, victim, Heartbeat(MAX_TERM, seq=1, leader=victim))
            wait_until(lambda: sum(e.stats().get("heartbeats_received", 0) for e in es) > 0
                       and any(e.stats().get("ignored_term_jump", 0) or e.stats().get("ignored_promised", 0)
                               for e in es), 10.0, "the forged heartbeats to arrive")
            assert all(e.term <= before + FAST.max_term_jump + 2 for e in es)
            # Elections go on: a leader everyone follows, then another once it stops.
            wait_until(lambda: agreed(es) is not None, 30.0, "a leader after the attack")
            k = next(i for i, e in enumerate(es) if e.is_leader())
            es[k].stop()
            rest = [e for i, e in enumerate(es) if i != k]
            wait_until(lambda: agreed(rest) is not None, 30.0, "another leader after the first stops")
            assert all(e.term < MAX_TERM and e.stats().get("messages_malformed", 0) == 0 for e in rest)


def test_plain_election_messages_are_refused_on_a_cluster_that_seals_them(
        caplog: pytest.LogCaptureFixture) -> None:
    # Half-way through the move to encryption: every node seals what it sends but still opens
    # plain packets. A stranger without the key may send plain ones; elections must not take them.
    with caplog.at_level(logging.WARNING, logger="gossip.leader"):
        with cluster_of(3, encryption_key=KEY, require_encryption=False) as (clusters, es):
            assert all(e.authenticated for e in es)
            assert not any("not safe" in r.getMessage() for r in caplog.records)
            wait_until(lambda: agreed(es) is not None, 20.0, "a leader")
            before = [e.term for e in es]
            victim = next(c.local_node().id for c, e in zip(clusters, es) if not e.is_leader())
            forge(PacketCodec(), clusters, victim, Heartbeat(MAX_TERM, seq=1, leader=victim))
            wait_until(lambda: sum(e.stats().get("messages_unauthenticated", 0) for e in es) >= 3, 10.0,
                       "the plain heartbeats to be refused")
            assert [e.term for e in es] == before
            # The same heartbeat sealed with the key (a member's) names another leader than its
            # sender: refused too.
            sealed = PacketCodec(keyring=Keyring([KEY]))
            forge(sealed, clusters, victim, Heartbeat(MAX_TERM, seq=1, leader=clusters[0].local_node().id
                                                      if clusters[0].local_node().id != victim
                                                      else clusters[1].local_node().id))
            wait_until(lambda: sum(e.stats().get("messages_wrong_leader", 0) for e in es) >= 2, 10.0,
                       "the heartbeats naming another leader to be refused")
            assert [e.term for e in es] == before
            assert agreed(es) is not None
