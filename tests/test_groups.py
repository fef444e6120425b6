"""Group semantics against a scripted cluster: criteria, metadata changes, suspect, dead, leave.

``ScriptedCluster`` offers the few public :class:`gossip.Cluster` methods a group uses and
delivers state and metadata events synchronously, when the test says so, so every transition
is checked exactly (the real cluster is exercised in test_groups_cluster.py).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, DataNodeGroup, MetadataReader, Node, NodeGroup, NodeID, NodeState
from gossip.groups import Criteria
from gossip.handlers import EventHandlers, HandlerID
from gossip.testing import wait_until

ALIVE, SUSPECT, DEAD, LEAVING, UNKNOWN = (NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD,
                                          NodeState.LEAVING, NodeState.UNKNOWN)


class ScriptedCluster:
    """A stand-in for :class:`gossip.Cluster`: a node table the test edits, events on demand."""

    def __init__(self) -> None:
        self.me = NodeID(int=1)
        self.table: dict[NodeID, Node] = {}
        self.state_handlers: EventHandlers[Callable[[Node, NodeState], None]] = EventHandlers()
        self.meta_handlers: EventHandlers[Callable[[Node], None]] = EventHandlers()
        self.sent: list[tuple[str, list[NodeID], int, Any]] = []
        self.keyring = object()     # as if encrypted: no warning about strangers joining groups
        self.put(self.me, ALIVE, {"role": "web"})

    # -- what the group calls
    def nodes(self) -> list[Node]:
        return list(self.table.values())

    def get_node(self, node_id: NodeID) -> Node | None:
        return self.table.get(node_id)

    def local_node(self) -> Node:
        return self.table[self.me]

    def handle_node_state_change_func(self, fn: Callable[[Node, NodeState], None]) -> HandlerID:
        return self.state_handlers.add(fn)

    def handle_node_metadata_change_func(self, fn: Callable[[Node], None]) -> HandlerID:
        return self.meta_handlers.add(fn)

    def remove_node_state_change_handler(self, hid: HandlerID) -> bool:
        return self.state_handlers.remove(hid)

    def remove_node_metadata_change_handler(self, hid: HandlerID) -> bool:
        return self.meta_handlers.remove(hid)

    def send_to_peers(self, nodes: Iterable[Node], msg_type: int, data: Any) -> None:
        self.sent.append(("best-effort", [n.id for n in nodes], msg_type, data))

    def send_to_peers_reliable(self, nodes: Iterable[Node], msg_type: int, data: Any) -> None:
        self.sent.append(("reliable", [n.id for n in nodes], msg_type, data))

    # -- what the test calls
    def put(self, nid: NodeID, state: NodeState, meta: dict[str, Any]) -> Node:
        node = Node(nid, f"127.0.10.{nid.int % 250}:7946", state, 0, MetadataReader(meta, 1))
        self.table[nid] = node
        return node

    def change_state(self, nid: NodeID, state: NodeState) -> None:
        old = self.table[nid]
        if state is UNKNOWN:  # forgotten: gone from the table, announced as a change to UNKNOWN
            del self.table[nid]
            node = Node(nid, old.address, UNKNOWN, 0, old.metadata)
        else:
            node = self.put(nid, state, old.metadata.get_all())
        for fn in self.state_handlers:
            fn(node, old.state)

    def change_meta(self, nid: NodeID, meta: dict[str, Any]) -> None:
        node = self.put(nid, self.table[nid].state, meta)
        for fn in self.meta_handlers:
            fn(node)

    def add(self, n: int, state: NodeState, meta: dict[str, Any]) -> Node:
        nid = NodeID(int=n)
        node = self.put(nid, state, meta)
        for fn in self.state_handlers:
            fn(node, UNKNOWN)
        return node


def nid(n: int) -> NodeID:
    return NodeID(int=n)


# ---------------------------------------------------------------------- criteria


@pytest.mark.parametrize("criteria, error", [
    ({"role": ""}, ValueError),
    ({"role": "~"}, ValueError),
    ({"": "web"}, ValueError),
    ({"role": 5}, TypeError),
    ({5: "web"}, ValueError),
    (["role", "web"], TypeError),
])
def test_bad_criteria_are_refused_at_construction(criteria: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Criteria(criteria)
    with pytest.raises(error):
        NodeGroup(ScriptedCluster(), criteria)  # type: ignore[arg-type]


def test_an_empty_value_error_says_what_to_write_instead() -> None:
    with pytest.raises(ValueError, match=r"'role' is empty: use '\*' for any value"):
        NodeGroup(ScriptedCluster(), {"role": ""})  # type: ignore[arg-type]


@pytest.mark.parametrize("criteria, meta, expected", [
    ({}, {}, True),
    ({"role": "*"}, {"role": "anything"}, True),
    ({"role": "*"}, {"role": ""}, True),
    ({"role": "*"}, {}, False),
    ({"role": "web"}, {"role": "web"}, True),
    ({"role": "web"}, {"role": "webs"}, False),
    ({"role": "web"}, {}, False),
    ({"zone": "~eu"}, {"zone": "eu-west-1"}, True),
    ({"zone": "~west"}, {"zone": "eu-west-1"}, True),
    ({"zone": "~us"}, {"zone": "eu-west-1"}, False),
    ({"zone": "~eu"}, {}, False),
    ({"n": "42"}, {"n": 42}, True),            # compared as strings (get_string)
    ({"ok": "true"}, {"ok": True}, True),
    ({"role": "web", "zone": "~eu"}, {"role": "web", "zone": "eu-1"}, True),
    ({"role": "web", "zone": "~eu"}, {"role": "web", "zone": "us-1"}, False),
    ({"role": "web", "zone": "~eu"}, {"role": "db", "zone": "eu-1"}, False),
])
def test_criteria_matching(criteria: dict[str, str], meta: dict[str, Any], expected: bool) -> None:
    assert Criteria(criteria).matches(MetadataReader(meta, 1)) is expected


def test_criteria_round_trip() -> None:
    c = Criteria({"a": "*", "b": "~x", "c": "y"})
    assert c.as_dict() == {"a": "*", "b": "~x", "c": "y"}
    assert Criteria(c).as_dict() == c.as_dict()
    assert gossip.METADATA_ANY_VALUE == "*" and gossip.METADATA_CONTAINS_PREFIX == "~"


# ---------------------------------------------------------------------- membership


def recorder() -> tuple[list[tuple[str, NodeID]], Callable[[Node], None], Callable[[Node], None]]:
    log: list[tuple[str, NodeID]] = []
    return log, (lambda n: log.append(("added", n.id))), (lambda n: log.append(("removed", n.id)))


# Each row: the starting state and metadata of node 2, the change, and whether node 2 is then a
# member (it matches {"role": "web"} when its metadata says so).
WEB, DB = {"role": "web"}, {"role": "db"}
TRANSITIONS = [
    # start,         meta, change,              in before, in after
    ("alive",        WEB, ("state", SUSPECT),  True,  True),    # a suspect stays
    ("suspect->alive", WEB, ("state", ALIVE),  True,  True),
    ("alive",        WEB, ("state", DEAD),     True,  False),   # dead leaves
    ("alive",        WEB, ("state", LEAVING),  True,  False),   # left leaves
    ("suspect",      WEB, ("state", DEAD),     True,  False),
    ("dead",         WEB, ("state", ALIVE),    False, True),    # back from the dead
    ("leaving",      WEB, ("state", UNKNOWN),  False, False),   # forgotten
    ("alive",        WEB, ("state", UNKNOWN),  True,  False),
    ("alive",        WEB, ("meta", DB),        True,  False),   # stops matching
    ("alive",        DB,  ("meta", WEB),       False, True),    # starts matching
    ("suspect",      DB,  ("meta", WEB),       False, True),    # a suspect's metadata counts too
    ("alive",        WEB, ("meta", {"role": "web", "x": "1"}), True, True),
    ("dead",         DB,  ("meta", WEB),       False, False),   # the dead do not come back this way
    ("alive",        DB,  ("state", SUSPECT),  False, False),
]
STATES = {"alive": ALIVE, "suspect": SUSPECT, "dead": DEAD, "leaving": LEAVING, "suspect->alive": SUSPECT}


@pytest.mark.parametrize("start, meta, change, before, after", TRANSITIONS,
                         ids=[f"{r[0]}-{r[2][0]}-{r[2][1]}-{r[4]}" for r in TRANSITIONS])
def test_membership_follows_events(start: str, meta: dict[str, Any], change: tuple[str, Any],
                                   before: bool, after: bool) -> None:
    c = ScriptedCluster()
    c.put(nid(2), STATES[start], meta)
    log, added, removed = recorder()
    g = NodeGroup(c, {"role": "web"}, on_node_added=added, on_node_removed=removed)
    assert g.contains(nid(2)) is before
    assert g.contains(c.me)  # the local node matches too
    log.clear()
    kind, value = change
    if kind == "state":
        c.change_state(nid(2), value)
    else:
        c.change_meta(nid(2), value)
    assert g.contains(nid(2)) is after
    expected = [] if before == after else [("added" if after else "removed", nid(2))]
    assert log == expected


def test_on_node_added_fires_once_per_arrival() -> None:
    c = ScriptedCluster()
    log, added, removed = recorder()
    g = NodeGroup(c, {"role": "web"}, on_node_added=added, on_node_removed=removed)
    assert log == [("added", c.me)]
    c.add(2, ALIVE, WEB)
    c.add(2, ALIVE, WEB)                       # a duplicate "new node" event
    c.change_state(nid(2), SUSPECT)
    c.change_state(nid(2), ALIVE)
    c.change_meta(nid(2), {"role": "web", "v": "2"})
    assert log == [("added", c.me), ("added", nid(2))]
    c.change_state(nid(2), DEAD)
    c.change_state(nid(2), ALIVE)
    assert log[2:] == [("removed", nid(2)), ("added", nid(2))]
    assert g.count() == len(g) == 2


def test_a_stale_event_is_judged_by_the_current_state() -> None:
    c = ScriptedCluster()
    g = NodeGroup(c, {"role": "web"})
    c.add(2, ALIVE, WEB)
    alive_snapshot = c.table[nid(2)]
    c.change_state(nid(2), DEAD)
    for fn in c.state_handlers:                # a late copy of the old "alive" event
        fn(alive_snapshot, UNKNOWN)
    assert not g.contains(nid(2))


def test_queries_len_in_iter_and_exclude() -> None:
    c = ScriptedCluster()
    for n in (2, 3, 4):
        c.put(nid(n), ALIVE, WEB)
    c.put(nid(5), ALIVE, DB)
    g = NodeGroup(c, {"role": "web"})
    assert {n.id for n in g} == {c.me, nid(2), nid(3), nid(4)}
    assert nid(3) in g and str(nid(3)) in g and c.table[nid(3)] in g
    assert nid(5) not in g and "not-a-uuid" not in g and 42 not in g
    assert {n.id for n in g.get_nodes(exclude=[c.me, str(nid(2))])} == {nid(3), nid(4)}
    assert "3 members" not in repr(g) and "4 members" in repr(g)


# ---------------------------------------------------------------------- sending


def test_send_to_peers_goes_to_members_only_each_once() -> None:
    c = ScriptedCluster()
    for n in (2, 3):
        c.put(nid(n), ALIVE, WEB)
    c.put(nid(4), ALIVE, DB)
    c.put(nid(5), SUSPECT, WEB)
    g = NodeGroup(c, {"role": "web"})
    assert g.send_to_peers(200, {"x": 1}) == 3
    assert g.send_to_peers_reliable(201, "y") == 3
    assert len(c.sent) == 2                      # one call each, no second "fan-out" packet
    for (kind, ids, mt, data), want in zip(c.sent, (("best-effort", 200, {"x": 1}), ("reliable", 201, "y"))):
        assert (kind, mt, data) == want
        assert sorted(ids) == [nid(2), nid(3), nid(5)]   # never ourselves, never node 4


def test_an_empty_group_sends_nothing() -> None:
    c = ScriptedCluster()
    c.put(nid(2), ALIVE, DB)
    g = NodeGroup(c, {"role": "nobody"})
    assert g.send_to_peers(200, "x") == 0
    assert g.send_to_peers_reliable(200, "x") == 0
    only_me = NodeGroup(c, {"role": "web"})
    assert only_me.count() == 1 and only_me.send_to_peers(200, "x") == 0
    assert c.sent == []


# ---------------------------------------------------------------------- lifecycle


def test_close_unregisters_and_empties() -> None:
    c = ScriptedCluster()
    log, added, removed = recorder()
    with NodeGroup(c, {"role": "web"}, on_node_added=added, on_node_removed=removed) as g:
        assert len(c.state_handlers) == 1 and len(c.meta_handlers) == 1
    assert g.closed and g.count() == 0
    assert len(c.state_handlers) == 0 and len(c.meta_handlers) == 0
    g.close()  # idempotent
    log.clear()
    c.add(2, ALIVE, WEB)
    assert log == [] and g.count() == 0


def test_a_raising_callback_is_logged_and_the_group_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    c = ScriptedCluster()

    def boom(node: Node) -> None:
        raise RuntimeError("bad handler")

    g = NodeGroup(c, {"role": "web"}, on_node_added=boom)
    c.add(2, ALIVE, WEB)
    assert g.contains(nid(2))
    assert "bad handler" in caplog.text


def test_callbacks_may_reenter_the_group() -> None:
    c = ScriptedCluster()
    seen: list[tuple[str, int, bool]] = []
    box: dict[str, NodeGroup] = {}

    def added(node: Node) -> None:
        g = box.get("g")
        if g is not None:
            seen.append(("added", g.count(), g.contains(node.id)))
            if node.id == nid(2):
                c.add(3, ALIVE, WEB)             # a change from inside a callback: queued, in order

    def removed(node: Node) -> None:
        g = box["g"]
        seen.append(("removed", g.count(), g.contains(node.id)))

    box["g"] = NodeGroup(c, {"role": "web"}, on_node_added=added, on_node_removed=removed)
    c.add(2, ALIVE, WEB)
    c.change_state(nid(2), DEAD)
    # The nested change is applied at once, its callback queued until the running one returns.
    assert seen == [("added", 2, True), ("added", 3, True), ("removed", 2, False)]


# ---------------------------------------------------------------------- DataNodeGroup


def test_data_group_initializes_updates_and_drops_data() -> None:
    c = ScriptedCluster()
    c.put(nid(2), ALIVE, WEB)
    events: list[tuple[str, NodeID, Any]] = []
    g: DataNodeGroup[dict[str, int]] = DataNodeGroup(
        c, {"role": "web"},
        data_initializer=lambda node: {"n": node.id.int},
        on_node_added=lambda node, d: events.append(("added", node.id, dict(d))),
        on_node_removed=lambda node, d: events.append(("removed", node.id, dict(d))),
        on_node_updated=lambda node, d: events.append(("updated", node.id, dict(d))),
    )
    assert g.get_node_data(nid(2)) == {"n": 2}
    assert sorted((n.id.int, d["n"]) for n, d in g.get_data_nodes()) == [(1, 1), (2, 2)]
    assert g.update_node_data(nid(2), lambda d: {"n": d["n"] + 10})
    assert g.get_node_data(nid(2)) == {"n": 12}
    c.change_meta(nid(2), {"role": "web", "v": "2"})
    c.change_state(nid(2), DEAD)
    assert events[-2:] == [("updated", nid(2), {"n": 12}), ("removed", nid(2), {"n": 12})]
    assert g.get_node_data(nid(2)) is None
    assert not g.update_node_data(nid(2), lambda d: d)
    c.change_state(nid(2), ALIVE)              # back: fresh data
    assert g.get_node_data(nid(2)) == {"n": 2}


def test_data_group_without_initializer_starts_with_none() -> None:
    c = ScriptedCluster()
    g: DataNodeGroup[int | None] = DataNodeGroup(c, {"role": "web"})
    assert g.get_node_data(c.me) is None and g.contains(c.me)
    assert g.update_node_data(c.me, lambda d: 5) and g.get_node_data(c.me) == 5


def test_data_group_concurrent_updates_lose_nothing_and_callbacks_reenter() -> None:
    c = ScriptedCluster()
    for n in range(2, 6):
        c.put(nid(n), ALIVE, WEB)
    box: dict[str, DataNodeGroup[int]] = {}
    reentered: list[int] = []

    def updated(node: Node, data: int) -> None:
        g = box["g"]
        # A callback that reads and writes the group it is called from.
        reentered.append(g.count())
        g.update_node_data(node.id, lambda d: d + 1000)
        assert g.get_node_data(node.id) is not None

    g = DataNodeGroup(c, {"role": "web"}, data_initializer=lambda node: 0, on_node_updated=updated)
    box["g"] = g
    threads_n, per_thread = 8, 300
    ids = [nid(n) for n in range(2, 6)]
    barrier = threading.Barrier(threads_n + 1)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            target = ids[(k + i) % len(ids)]
            assert g.update_node_data(target, lambda d: d + 1)
            if i % 50 == 0:
                g.get_data_nodes()

    threads = [threading.Thread(target=worker, args=(k,), name=f"test-updater-{k}") for k in range(threads_n)]
    for t in threads:
        t.start()
    barrier.wait()
    for _ in range(20):                          # metadata events on this thread meanwhile
        c.change_meta(ids[0], {"role": "web", "tick": str(_)})
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    total = sum(d for node, d in g.get_data_nodes() if node.id in ids)
    assert total == threads_n * per_thread + 20 * 1000
    assert len(reentered) == 20 and set(reentered) == {5}


def test_data_initializer_runs_outside_the_lock_and_may_use_the_group() -> None:
    c = ScriptedCluster()
    box: dict[str, DataNodeGroup[int]] = {}

    def init(node: Node) -> int:
        g = box.get("g")
        return -1 if g is None else g.count()    # would deadlock if run under the group lock

    box["g"] = g = DataNodeGroup(c, {"role": "web"}, data_initializer=init)
    c.add(2, ALIVE, WEB)
    assert g.get_node_data(nid(2)) == 1


def test_a_group_on_an_unencrypted_cluster_says_any_host_may_join(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gossip.groups"):
        with Cluster() as plain:
            NodeGroup(plain, {"role": "a"})
            NodeGroup(plain, {"role": "b"})
        with Cluster(Config(encryption_key=bytes(32))) as sealed:
            NodeGroup(sealed, {"role": "a"})
    said = [r for r in caplog.records if "unencrypted cluster admit any host" in r.getMessage()]
    assert len(said) == 1            # once per cluster, and not for the encrypted one


def test_criteria_by_tag() -> None:
    c = Criteria({"role": "web"}, tags={"gpu"})
    meta = MetadataReader({"role": "web"}, 1)
    node = Node(NodeID(int=5), "127.0.0.1:1", ALIVE, 0, meta)
    assert not c.matches_node(node)
    assert c.matches_node(dataclasses.replace(node, tags=frozenset({"gpu", "eu"})))
    assert Criteria(c, tags=["eu"]).tags == {"gpu", "eu"} and "tags=['gpu']" in repr(c)
    with pytest.raises(TypeError):
        Criteria({}, tags="gpu")


def test_a_group_by_tag_follows_tag_changes(gossip_cluster_factory: Any) -> None:
    a, b = gossip_cluster_factory(2)
    with NodeGroup(a, Criteria({}, tags={"gpu"})) as gpus:
        assert gpus.count() == 0
        b.add_tag("gpu")
        wait_until(lambda: gpus.count() == 1, what="b joins the group")
        a.add_tag("gpu")
        wait_until(lambda: gpus.count() == 2, what="a joins the group")
        b.remove_tag("gpu")
        wait_until(lambda: [n.id for n in gpus.get_nodes()] == [a.local_node().id], what="b leaves the group")
