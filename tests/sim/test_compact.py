"""The compact member tables (gossip.sim.compact) run the same protocol as the ordinary ones:
every scenario gives the same figures and the same trace of member events, seed after seed."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gossip.config import Config
from gossip.messages import Alive
from gossip.node import NodeID, NodeState
from gossip.protocol.tables import ObjectStore
from gossip.sim.compact import CompactIdList, CompactIdSet, CompactMembers, CompactProbeOrder, CompactStore, Registry
from gossip.sim.scenarios import ScenarioParams, run_scenario


def both(**kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    a = run_scenario(ScenarioParams(tables="objects", **kw))
    b = run_scenario(ScenarioParams(tables="compact", **kw))
    a.pop("wall_s"), b.pop("wall_s")
    return a, b


CASES = [
    dict(scenario="crash", nodes=12, duration=30.0, loss=0.05),
    dict(scenario="leave", nodes=12, duration=15.0),
    dict(scenario="join", nodes=16, duration=20.0),
    dict(scenario="churn", nodes=12, duration=60.0, quiet_tail=20.0, churn_interval=2.0),
    dict(scenario="starve", nodes=10, duration=60.0, starved=2, loss=0.03),
    dict(scenario="partition", nodes=10, duration=90.0, partition_duration=30.0),
]


@pytest.mark.parametrize("case", CASES, ids=[c["scenario"] for c in CASES])
def test_compact_tables_give_the_same_run(case: dict[str, Any]) -> None:
    for seed in (1, 2):
        a, b = both(seed=seed, **case)
        assert a == b, f"replay: python -m gossip.sim --scenario {case['scenario']} --seed {seed}"


def test_same_seed_same_trace_with_compact_tables() -> None:
    a = run_scenario(ScenarioParams(scenario="crash", nodes=30, seed=11, duration=30.0, tables="compact"))
    b = run_scenario(ScenarioParams(scenario="crash", nodes=30, seed=11, duration=30.0, tables="compact"))
    c = run_scenario(ScenarioParams(scenario="crash", nodes=30, seed=12, duration=30.0, tables="compact"))
    assert a["trace_hash"] == b["trace_hash"] != c["trace_hash"]


@pytest.mark.slow
def test_compact_tables_give_the_same_run_over_hundreds_of_seeds() -> None:
    rng = random.Random(26)
    for seed in range(1, 301):
        case = dict(CASES[seed % len(CASES)])
        case["nodes"] = rng.randrange(4, 13)
        a, b = both(seed=seed, **case)
        assert a == b, f"replay: python -m gossip.sim --scenario {case['scenario']} --seed {seed}"


def test_auto_tables_and_bad_tables() -> None:
    r = run_scenario(ScenarioParams(scenario="crash", nodes=8, seed=3, duration=20.0))
    assert r["trace_hash"] == run_scenario(
        ScenarioParams(scenario="crash", nodes=8, seed=3, duration=20.0, tables="compact"))["trace_hash"]
    with pytest.raises(ValueError, match="tables"):
        run_scenario(ScenarioParams(scenario="crash", nodes=8, tables="packed"))


def _ids(n: int) -> list[NodeID]:
    return [NodeID(int=i + 1) for i in range(n)]


def test_compact_records_read_back_what_was_written() -> None:
    reg = Registry()
    ids = _ids(4)
    for i, node in enumerate(ids):
        reg.intern(node, f"127.0.0.{i + 1}:7946")
    store = CompactStore(reg)
    members = store.members()
    m = store.new_member(members, ids[0], "127.0.0.9:7946", NodeState.ALIVE, 3, {"k": "v"}, 5, 2, "1.0", 1.5)
    assert (m.node, m.addr, m.state, m.incarnation, dict(m.meta), m.meta_stamp, m.pv, m.av, m.state_change) == \
        (ids[0], "127.0.0.9:7946", NodeState.ALIVE, 3, {"k": "v"}, 5, 2, "1.0", 1.5)
    assert m.suspicion is None and m.introducer is None and not m.vouched and m.rtt is None
    m.addr, m.meta, m.meta_stamp, m.pv, m.av = "127.0.0.1:7946", {}, 0, 1, ""
    m.state, m.incarnation, m.state_change, m.vouched = NodeState.SUSPECT, 4, 2.5, True
    m.introducer, m.rtt, m.timer_at = "127.0.0.2", 0.25, 9.0
    again = members[ids[0]]
    assert (again.addr, again.state, again.incarnation, again.vouched, again.introducer, again.rtt,
            again.timer_at, dict(again.meta)) == ("127.0.0.1:7946", NodeState.SUSPECT, 4, True, "127.0.0.2", 0.25,
                                                 9.0, {})
    again.timer_at = float("inf")
    assert members[ids[0]].timer_at == float("inf") and "Member(" in repr(again)
    store.new_member(members, ids[1], "127.0.0.2:7946", NodeState.ALIVE, 0, {}, 0, 1, "", 0.0)
    assert list(members) == ids[:2] and len(members) == 2 and ids[1] in members and ids[2] not in members
    assert members.get(ids[3]) is None
    with pytest.raises(KeyError):
        members[ids[3]]
    with pytest.raises(TypeError):
        members[ids[2]] = m
    del members[ids[0]]
    assert list(members) == ids[1:2] and m.incarnation == 4   # a held view still reads its record
    with pytest.raises(KeyError):
        del members[ids[0]]
    back = store.new_member(members, ids[0], "127.0.0.1:7946", NodeState.ALIVE, 7, {}, 0, 1, "", 3.0)
    assert back.introducer is None and back.rtt is None and [v.node for v in members.values()] == [ids[1], ids[0]]


def test_compact_members_order_survives_many_removals() -> None:
    reg = Registry()
    ids = _ids(200)
    store = CompactStore(reg)
    members = store.members()
    ordinary: dict[NodeID, None] = {}
    rng = random.Random(5)
    for step in range(2000):
        node = ids[rng.randrange(len(ids))]
        if node in ordinary:
            del ordinary[node]
            del members[node]
        else:
            ordinary[node] = None
            store.new_member(members, node, "127.0.0.1:7946", NodeState.ALIVE, 0, {}, 0, 1, "", float(step))
        assert len(members) == len(ordinary)
    assert list(members) == list(ordinary)


def test_compact_id_lists_behave_as_the_ordinary_ones() -> None:
    reg = Registry()
    ids = _ids(50)
    for node in ids:
        reg.intern(node, "127.0.0.1:7946")
    store, plain = CompactStore(reg), ObjectStore()
    a, b = store.id_list(), plain.id_list()
    rng = random.Random(7)
    for _ in range(500):
        node = ids[rng.randrange(len(ids))]
        for lst in (a, b):
            if node in lst:
                lst.remove(node)
            else:
                lst.add(node)
        assert list(a) == list(b) and len(a) == len(b)
        if len(a):
            i = rng.randrange(len(a))
            assert a[i] == b[i]
    assert isinstance(a, CompactIdList)
    with pytest.raises(KeyError):
        a.remove(next(n for n in ids if n not in a))
    order, plist = store.probe_order(ids[:10]), plain.probe_order(ids[:10])
    assert isinstance(order, CompactProbeOrder)
    random.Random(3).shuffle(order)
    random.Random(3).shuffle(plist)
    assert list(order) == plist and order[2:5] == plist[2:5]
    order.append(ids[20])
    order[0] = ids[21]
    order[1:3] = [ids[22]]
    del order[-1]
    plist.append(ids[20])
    plist[0] = ids[21]
    plist[1:3] = [ids[22]]
    del plist[-1]
    assert list(order) == plist and len(order) == len(plist)
    flags = store.id_set(ids[:3])
    assert isinstance(flags, CompactIdSet) and ids[2] in flags and ids[3] not in flags
    flags.add(ids[40])
    assert ids[40] in flags and NodeID(int=999) not in flags


def test_a_core_runs_on_the_compact_store() -> None:
    from gossip.protocol import Protocol

    reg = Registry()
    me, other = NodeID(int=1), NodeID(int=2)
    reg.intern(me, "127.0.0.1:7946")
    core = Protocol(Config.lan(), me, "127.0.0.1:7946", random.Random(1), 0.0, store=CompactStore(reg))
    core.bootstrap(0.0, [])
    core.receive(0.1, "127.0.0.2:7946", _gossip(other), other, False)
    m = core.member(other)
    assert m is not None and m.state is NodeState.ALIVE and isinstance(core.members, CompactMembers)


def _gossip(node: NodeID) -> Any:
    from gossip.messages import Gossip
    return Gossip((Alive(node, 1, "127.0.0.2:7946"),))


def _tables(store: Any) -> tuple[Any, ...]:
    return store.members(), store.id_list(), store.id_list(), store.probe_order(), store.id_set()


def _snapshot(members: Any, ids: Any, cids: Any, probe: Any) -> list[Any]:
    return [[(m.node, m.addr, m.state, m.incarnation, m.meta, m.vouched, m.state_change, m.introducer)
             for m in members.values()], list(ids), list(cids), list(probe), len(members)]


@pytest.mark.parametrize("layout", ["contiguous", "one_gap", "scattered", "known", "not_plain"])
def test_compact_bulk_add_enters_what_the_ordinary_store_enters(layout: str) -> None:
    """A bootstrap enters runs of consecutive registry numbers by array slices, other layouts
    member by member: every layout leaves the tables the ordinary store leaves, in the same order."""
    from gossip.messages import MemberState

    rng = random.Random(layout)
    ids = _ids(300)
    reg = Registry()
    for i, node in enumerate(ids):
        reg.intern(node, f"127.0.{i >> 8}.{i & 255}:7946")
    addrs = {node: reg.addrs[i] for i, node in enumerate(ids)}
    chosen = list(range(300))
    if layout == "one_gap":
        chosen.remove(117)
    elif layout == "scattered":
        chosen = rng.sample(chosen, 200)
    early = [ids[i] for i in rng.sample(range(300), 20)] if layout == "known" else []
    if early:
        chosen = [i for i in chosen if ids[i] not in early]
    states = [MemberState(ids[i], addrs[ids[i]], NodeState.ALIVE, rng.randrange(3),
                          {"k": "v"} if layout == "not_plain" and i % 7 == 0 else {}) for i in chosen]
    compact, ordinary = CompactStore(reg), ObjectStore()
    out = []
    for store in (compact, ordinary):
        members, a, b, probe, flags = _tables(store)
        for node in early:     # some members entered before, one at a time
            store.new_member(members, node, addrs[node], NodeState.SUSPECT, 4, {}, 0, 1, "", 0.5)
            a.add(node)
            flags.add(node)
            probe.append(node)
        for _ in range(2):     # the same states examined twice: the second time from the registry's memo
            if _ == 1:
                members, a, b, probe, flags = _tables(store)
            store.bulk_add(members, a, b, probe, flags, states, 2.0)
        out.append(_snapshot(members, a, b, probe))
    assert out[0] == out[1]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64, 1000])
def test_the_fast_shuffle_draws_what_random_shuffle_draws(n: int) -> None:
    from array import array

    from gossip.protocol.tables import shuffle

    for seed in range(3):
        want = list(range(n))
        r1 = random.Random(seed)
        r1.shuffle(want)
        after = r1.random()
        for x in (list(range(n)), array("i", range(n))):
            r2 = random.Random(seed)
            shuffle(r2, x)
            assert list(x) == want and r2.random() == after

    class Drawing(random.Random):
        def random(self) -> float:       # draws its own way: rng.shuffle is used as is
            return 0.5

    x = list(range(10))
    shuffle(Drawing(1), x)
    assert sorted(x) == list(range(10))


def test_full_states_and_their_news_are_those_of_the_ordinary_store() -> None:
    """The compact store's full state (shared records for plain members) equals the ordinary
    store's, record for record, and both drop the same records of a received full state."""
    from gossip.messages import MemberState

    rng = random.Random(5)
    ids = _ids(60)
    reg = Registry()
    for i, node in enumerate(ids):
        reg.intern(node, f"127.0.1.{i}:7946")
    compact, ordinary = CompactStore(reg), ObjectStore()
    tables = []
    for store in (compact, ordinary):
        members = store.members()
        for i, node in enumerate(ids[:50]):
            state = (NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD)[i % 3]
            addr = reg.addrs[i] if i % 11 else "127.0.9.9:7946"          # some moved
            meta = {"k": str(i)} if i % 7 == 0 else {}
            store.new_member(members, node, addr, state, i % 4, meta, 3 if meta else 0, 1, "", 0.0)
        del members[ids[20]]                                             # a hole in the order
        tables.append(members)
    a, b = (list(store.states(t)) for store, t in zip((compact, ordinary), tables))
    assert a == b and len(a) == 49
    again = list(compact.states(tables[0]))
    assert all(x is y for x, y in zip(a, again) if x.addr == reg.addrs[ids.index(x.node)] and not x.meta)
    # A received state: the peer's own records (shared ones among them), newer and older
    # incarnations, members we do not hold, another address, metadata.
    received = list(a)
    for i in rng.sample(range(60), 30):
        received.append(MemberState(ids[i], reg.addrs[i], NodeState.ALIVE, rng.randrange(5),
                                    {"m": 1} if i % 5 == 0 else {}, rng.randrange(4)))
    received.append(MemberState(ids[3], "127.0.8.8:7946", NodeState.ALIVE, 9))
    received.append(reg.shared(55, 2, 0))                              # shared, of a member not held
    rng.shuffle(received)
    kept = [compact.news(tables[0], received), ordinary.news(tables[1], received)]
    assert kept[0] == kept[1]
    assert 0 < len(kept[0]) < len(received)
    assert reg.shared(55, 2, 0) in kept[0]
