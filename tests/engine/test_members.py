"""Snapshots of the member table (gossip.engine.members), on a core hosted without threads."""

from __future__ import annotations

import random

from gossip.config import Config
from gossip.engine.host import CoreHost
from gossip.engine.members import MemberView
from gossip.messages import Dead, Gossip, MemberState
from gossip.metadata import Metadata
from gossip.node import NodeID, NodeState
from gossip.protocol import Protocol

ME = NodeID(int=1)
A, B = NodeID(int=0xA), NodeID(int=0xB)
ADDR = {ME: "127.0.0.1:7000", A: "127.0.0.2:7001", B: "127.0.0.3:7002"}


def view(members: tuple[NodeID, ...] = (A, B)) -> tuple[MemberView, CoreHost, Metadata]:
    """A view over a core that knows ``members`` alive (from a state exchange)."""
    cfg = Config.local(application_version="app-2")
    host, metadata = CoreHost(), Metadata()
    v = MemberView(host, ME, metadata, cfg)
    core = Protocol(cfg, ME, ADDR[ME], random.Random(1), 0.0)
    core.bootstrap(0.0, [MemberState(m, ADDR[m], NodeState.ALIVE, 1) for m in members])
    core.actions_to_perform()
    host.install(core)
    v.address = ADDR[ME]
    return v, host, metadata


def test_before_start_the_node_is_alone_and_unknown() -> None:
    cfg = Config.local()
    md = Metadata()
    md.set_string("role", "web")
    v = MemberView(CoreHost(), ME, md, cfg)
    me = v.local_node()
    assert (me.id, me.state, me.address, me.metadata.get_string("role")) == (ME, NodeState.UNKNOWN, "", "web")
    assert [n.id for n in v.nodes()] == [ME]
    assert v.state_counts()[NodeState.UNKNOWN] == 1 and sum(v.state_counts().values()) == 1
    assert v.get_node(A) is None and v.candidates(3) == []


def test_nodes_counts_and_lookups_show_the_member_table() -> None:
    v, host, _ = view()
    assert [n.id for n in v.nodes()][0] == ME
    assert {n.id for n in v.nodes()} == {ME, A, B}
    assert v.local_node().application_version == "app-2"
    counts = v.state_counts()
    assert counts[NodeState.ALIVE] == 3 and sum(counts.values()) == 3
    node = v.get_node(A)
    assert node is not None and (node.address, node.state) == (ADDR[A], NodeState.ALIVE)
    assert v.get_node(ME).state is NodeState.ALIVE and v.get_node(ME).id == ME  # type: ignore[union-attr]
    assert {n.id for n in v.candidates(5)} == {A, B}
    assert v.alive_count() == 3
    assert v.state_of(A) is NodeState.ALIVE and v.state_of(NodeID(int=0xC)) is None
    assert sorted(v.fan_out_addrs((ME,))) == sorted([ADDR[A], ADDR[B]])
    assert v.fan_out_addrs((ME, A, B)) == []


def test_a_flapping_member_held_by_damping_is_shown_as_suspect() -> None:
    v, host, _ = view()
    host.core.insight.held[A] = float("inf")
    assert v.get_node(A).state is NodeState.SUSPECT  # type: ignore[union-attr]
    counts = v.state_counts()
    assert (counts[NodeState.ALIVE], counts[NodeState.SUSPECT]) == (2, 1)


def test_the_sender_of_a_message_is_cached_until_the_member_changes() -> None:
    v, host, _ = view()
    first = v.node_for_sender(A.bytes)
    assert first.id == A and first.state is NodeState.ALIVE
    assert v.node_for_sender(A.bytes) is first  # unchanged member: the same snapshot
    host.core.receive(1.0, ADDR[B], Gossip((Dead(A, 1, B),)))
    host.core.actions_to_perform()
    after = v.node_for_sender(A.bytes)
    assert after is not first and after.state is NodeState.DEAD
    stranger = v.node_for_sender(NodeID(int=0xC).bytes)
    assert (stranger.state, stranger.address) == (NodeState.UNKNOWN, "")
    assert v.node_for_sender(ME.bytes).id == ME


def test_member_hosts_are_this_node_s_and_its_live_members_until_a_change() -> None:
    v, host, _ = view()
    assert v.is_member_host("127.0.0.1") and v.is_member_host("127.0.0.2")
    assert not v.is_member_host("127.0.0.9")
    host.core.receive(1.0, ADDR[B], Gossip((Dead(A, 1, B),)))
    host.core.actions_to_perform()
    assert v.is_member_host("127.0.0.2")  # cached until told of the change
    v.changed()
    assert not v.is_member_host("127.0.0.2")
