"""Groups on real clusters (in-memory network, the gossip.testing fixtures)."""

from __future__ import annotations

import threading

from gossip import USER_MSG, Cluster, DataNodeGroup, Node, NodeGroup, Packet
from gossip.testing import ClusterFactory, wait_until


def ids(nodes: list[Node]) -> set[str]:
    return {str(n.id) for n in nodes}


def test_group_follows_metadata_death_and_leave(gossip_cluster_factory: ClusterFactory) -> None:
    a, b, c, d = gossip_cluster_factory(4)
    added: list[str] = []
    removed: list[tuple[str, str]] = []
    threads: set[str] = set()

    def on_added(node: Node) -> None:
        threads.add(threading.current_thread().name)
        added.append(str(node.id))

    def on_removed(node: Node) -> None:
        removed.append((str(node.id), str(node.state)))

    with NodeGroup(a, {"role": "web"}, on_node_added=on_added, on_node_removed=on_removed) as g:
        assert g.count() == 0
        for x in (b, c, d):
            x.local_metadata().set_string("role", "web")
        wait_until(lambda: g.count() == 3, what="b, c and d to join the group")
        b.local_metadata().set_string("role", "db")            # stops matching
        wait_until(lambda: not g.contains(b.local_node().id), what="b to leave the group")
        c.stop(leave=False)                                     # crashes
        d.stop()                                                # leaves gracefully
        wait_until(lambda: g.count() == 0, what="the dead and the departed to leave the group")
        assert sorted(added) == sorted(str(x.local_node().id) for x in (b, c, d))
        assert dict(removed) == {str(b.local_node().id): "alive", str(c.local_node().id): "dead",
                                 str(d.local_node().id): "left"}
        assert all(t.startswith("gossip-") and t.endswith("-events") for t in threads), threads


def test_send_to_peers_reaches_members_only(gossip_cluster_factory: ClusterFactory) -> None:
    clusters = gossip_cluster_factory(4)
    a, b, c, d = clusters
    for x in (a, b, c):
        x.local_metadata().set_string("role", "web")
    d.local_metadata().set_string("role", "db")
    got: dict[int, list[object]] = {i: [] for i in range(4)}
    lock = threading.Lock()

    def handler(i: int):  # type: ignore[no-untyped-def]
        def fn(sender: Node | None, packet: Packet) -> None:
            with lock:
                got[i].append(packet.unmarshal())
        return fn

    for i, x in enumerate(clusters):
        x.handle_func(USER_MSG, handler(i))
    with NodeGroup(a, {"role": "web"}) as g:
        wait_until(lambda: g.count() == 3, what="a, b and c in the group")
        assert g.send_to_peers(USER_MSG, "to the group") == 2
        wait_until(lambda: got[1] and got[2], what="b and c to receive")
        # d is not a member: a marker sent to d after the group message arrives, and the group
        # message never did.
        a.send_to(d.local_node(), USER_MSG, "marker")
        wait_until(lambda: got[3], what="d to receive the marker")
    assert got[1] == ["to the group"] and got[2] == ["to the group"]
    assert got[3] == ["marker"] and got[0] == []


def test_data_group_callbacks_reenter_on_the_event_thread(gossip_cluster_factory: ClusterFactory) -> None:
    a, b, c = gossip_cluster_factory(3)
    box: dict[str, DataNodeGroup[list[str]]] = {}
    done = threading.Event()

    def on_added(node: Node, data: list[str]) -> None:
        g = box.get("g")
        if g is None:
            return
        g.update_node_data(node.id, lambda d: d + [f"seen by {g.count()}"])

    def on_updated(node: Node, data: list[str]) -> None:
        g = box["g"]
        g.update_node_data(node.id, lambda d: d + ["updated"])
        if node.id == b.local_node().id and node.metadata.get_string("v") == "2":
            done.set()

    g: DataNodeGroup[list[str]] = DataNodeGroup(a, {"app": "*"}, data_initializer=lambda n: ["init"],
                                                on_node_added=on_added, on_node_updated=on_updated)
    box["g"] = g
    try:
        b.local_metadata().set_string("app", "x")
        wait_until(lambda: g.contains(b.local_node().id), what="b in the data group")
        b.local_metadata().set_string("v", "2")
        wait_until(done.is_set, what="b's update to be seen")
        data = g.get_node_data(b.local_node().id)
        assert data is not None and data[0] == "init" and data[1].startswith("seen by ")
        assert data[-1] == "updated"
        assert not g.contains(c.local_node().id)
    finally:
        g.close()


def test_a_group_built_before_start_holds_the_local_node_once_started(
        gossip_cluster_factory: ClusterFactory) -> None:
    cluster = Cluster(gossip_cluster_factory.config())
    gossip_cluster_factory.clusters.append(cluster)   # the factory stops it after the test
    cluster.local_metadata().set_string("role", "web")
    with NodeGroup(cluster, {"role": "web"}) as g:
        assert g.count() == 0
        cluster.start()
        wait_until(lambda: g.contains(cluster.local_node().id), what="the local node in the group")
