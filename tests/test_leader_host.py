"""LeaderElection's host side, on in-memory clusters: its life cycle, the security check at
start, and the receive path's refusals (each counted), driven with crafted packets."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gossip import Cluster, NodeID, NodeState
from gossip.codecs import MsgpackCodec
from gossip.errors import ClusterClosed
from gossip.leader import LeaderConfig, LeaderElection
from gossip.leader.election import Ack, Heartbeat, encode_message
from gossip.leader.messages import SendAck
from gossip.metadata import MetadataReader
from gossip.node import Node
from gossip.packet import Packet
from gossip.testing import ClusterFactory, wait_until

CFG = LeaderConfig(check_interval=0.05, leader_timeout=0.5)
KEY = bytes(range(32))


def packet(e: LeaderElection, sender: NodeID, body: Any, encrypted: bool = False) -> Packet:
    codec = MsgpackCodec()
    return Packet(e.config.heartbeat_msg_type, sender.bytes, 1, 1, codec.encode(body), codec,
                  False, encrypted, 100)


def node(node_id: NodeID, state: NodeState = NodeState.ALIVE) -> Node:
    return Node(node_id, "127.0.0.1:7946", state, 1, MetadataReader({}, 1))


def test_the_life_cycle(gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1)
    e = LeaderElection(c, LeaderConfig(check_interval=0.05, leader_timeout=0.5,
                                       metadata_criteria={"role": "lead"}))
    assert e.quorum_size() == 0 and e.quorum_members() == [] and e.term == 0
    assert e.remove_members([NodeID.generate()]) == 0
    assert "elections" not in e.stats() and not e.authenticated
    assert e.get_node_group() is not None
    e.stop()                                              # never started: closes its group only
    e.stop()
    assert e.get_node_group().closed                      # type: ignore[union-attr]
    with pytest.raises(ClusterClosed, match="cannot be restarted"):
        e.start()
    with pytest.raises(ClusterClosed, match="group of eligible members is closed"):
        e.send_to_peers(200, "x")


def test_a_lone_node_leads_and_a_second_start_does_nothing(gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1)
    with LeaderElection(c, CFG) as e:
        e.start()
        wait_until(e.is_leader, 10.0, "the lone node to lead")
        assert e.quorum_size() == 1 and e.quorum_members() == [c.local_node().id]
        assert e.term >= 1 and e.stats().get("heartbeats_sent", 0) == 0   # no one to send to
        assert "leader" in repr(e)


def test_an_unencrypted_cluster_is_warned_about(gossip_cluster_factory: ClusterFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (c,) = gossip_cluster_factory(1)
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with LeaderElection(c, CFG) as e:
            assert not e.authenticated
    assert any("unencrypted cluster is not safe" in r.getMessage() for r in caplog.records)


def test_an_encrypted_cluster_that_still_sends_plain_is_warned_about(
        gossip_cluster_factory: ClusterFactory, caplog: pytest.LogCaptureFixture) -> None:
    (c,) = gossip_cluster_factory(1, encryption_key=KEY, encrypt_outgoing=False,
                                    require_encryption=False)
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with LeaderElection(c, CFG) as e:
            assert not e.authenticated
    assert any("encrypt_outgoing is False" in r.getMessage() for r in caplog.records)


def test_the_receive_path_refuses_and_counts(gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1, encryption_key=KEY)
    other, third = NodeID.generate(), NodeID.generate()
    with LeaderElection(c, CFG) as e:
        assert e.authenticated
        hb = encode_message(Heartbeat(term=1, seq=1, leader=other))
        e._on_message(node(other, NodeState.UNKNOWN), packet(e, other, hb, encrypted=True))
        e._on_message(node(other), packet(e, other, hb, encrypted=False))
        e._on_message(node(other), packet(e, other, {"kind": "nonsense"}, encrypted=True))
        e._on_message(node(other), packet(e, other, [1, 2], encrypted=True))
        forged = encode_message(Heartbeat(term=1, seq=1, leader=third))   # names someone else
        e._on_message(node(other), packet(e, other, forged, encrypted=True))
        stats = e.stats()
        assert stats["messages_from_unknown"] == 1
        assert stats["messages_unauthenticated"] == 1
        assert stats["messages_malformed"] == 2
        assert stats["messages_wrong_leader"] == 1
        assert stats.get("heartbeats_received", 0) == 0
        e._on_message(node(other), packet(e, other, hb, encrypted=True))
        assert e.stats()["heartbeats_received"] == 1
    # Once stopped, an acknowledgement is counted and otherwise ignored.
    e._on_message(node(other), packet(e, other, encode_message(Ack(1, 1)), encrypted=True))
    assert e.stats()["acks_received"] == 1


def test_an_ack_to_a_leader_that_is_gone_is_not_sent(gossip_cluster_factory: ClusterFactory) -> None:
    (c,) = gossip_cluster_factory(1)
    stranger = NodeID.generate()
    with LeaderElection(c, CFG) as e:
        e._perform([SendAck(stranger, 1, 1)])            # not a member: nothing to send to
        assert e.stats().get("acks_sent", 0) == 0
