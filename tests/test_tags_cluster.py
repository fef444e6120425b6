"""Tags and forget_node on real clusters (in-memory network): a tagged broadcast reaches every
node holding the tag over several hops and no other; set_tags refuses bad tags; forget_node's
refusals."""

from __future__ import annotations

import threading

import pytest

from gossip import USER_MSG, Cluster, Config, NodeID, Packet
from gossip.errors import ClusterClosed, MetadataError, NodeAliveError
from gossip.node import Node
from gossip.testing import ClusterFactory, wait_until

T = USER_MSG + 9


def test_a_tagged_broadcast_reaches_every_holder_and_no_one_else(gossip_cluster_factory: ClusterFactory) -> None:
    plain = gossip_cluster_factory(4)
    tagged = gossip_cluster_factory(5, tags={"gpu", "eu"})
    got: dict[NodeID, list[object]] = {}
    lock = threading.Lock()
    for c in plain + tagged:
        def handler(sender: Node, packet: Packet, me: NodeID = c.local_node().id) -> None:
            with lock:
                got.setdefault(me, []).append(packet.unmarshal())
        c.handle_func(T, handler)
    sender = plain[0]
    wait_until(lambda: len(sender.nodes_by_tag("gpu")) == 5, what="every holder seen by the sender")
    for i in range(5):
        sender.send_tagged("gpu", T, i)
    holders = {c.local_node().id for c in tagged}
    wait_until(lambda: all(len(got.get(h, [])) == 5 for h in holders), what="every holder got all 5")
    assert set(got) == holders
    assert sum(c.stats().get("user.tag_not_held", 0) for c in plain) == 0   # never even sent one
    assert all(sorted(got[h]) == list(range(5)) for h in holders)          # duplicates dropped
    assert sender.stats()["user.tagged_broadcasts"] == 5


def test_set_tags_validates_and_counts_against_the_metadata_bound(gossip_cluster_factory: ClusterFactory) -> None:
    c = Cluster(Config.local(bind_addr="127.0.0.1:0", max_metadata_size=96, tags={"a"}))
    assert c.local_node().tags == {"a"}
    c.add_tag("b")                                     # before start: kept for the start
    for bad in ({"two words"}, {""}, "gpu", [3], {f"t{i}" for i in range(65)}):
        with pytest.raises(MetadataError):
            c.set_tags(bad)  # type: ignore[arg-type]
    with pytest.raises(MetadataError, match="beside"):
        c.local_metadata().set_string("k", "v" * 88)   # 93 bytes alone, 98 with the tags: over 96
    with pytest.raises(MetadataError, match="over the limit"):
        c.set_tags({f"tag{i:03d}" for i in range(20)})
    assert c.local_node().tags == {"a", "b"}
    c.set_tags(iter(["x"]))
    c.remove_tag("x")
    c.remove_tag("absent")
    assert c.local_node().tags == frozenset()
    with pytest.raises(ClusterClosed):
        c.forget_node(NodeID.generate())
    c.stop()
    with pytest.raises(ClusterClosed):
        c.add_tag("late")


def test_forget_node_refusals(gossip_cluster_factory: ClusterFactory) -> None:
    a, b = gossip_cluster_factory(2)
    with pytest.raises(NodeAliveError, match="only a dead or left"):
        a.forget_node(b.local_node().id)
    with pytest.raises(NodeAliveError, match="local node"):
        a.forget_node(a.local_node().id)
    assert a.forget_node(NodeID.generate()) is False
    b.leave()
    b.stop()
    wait_until(lambda: (n := a.get_node(b.local_node().id)) is not None and n.is_dead_or_left, what="b left")
    assert a.forget_node(str(b.local_node().id)) is True
    assert a.forget_node(b.local_node()) is False   # a Node is accepted too
    assert a.get_node(b.local_node().id) is None and a.num_nodes() == 1
