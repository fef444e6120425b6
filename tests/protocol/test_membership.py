"""The member table and this node's own record, driven alone: behaviour read from the outbox."""

from __future__ import annotations

from typing import Any

import pytest

from gossip.config import Config
from gossip.messages import MAX_INCARNATION, Alive, Dead, MemberState, Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol.actions import EVENT_REMOVED, EVENT_STATE

from .parts import ALIVE, DEAD, LEAVING, SELF, SUSPECT, Parts, addr, node


def test_a_newcomer_is_announced_and_watched_and_a_forgotten_one_too() -> None:
    p = Parts()
    p.message_from("127.0.0.9:1", node(0))
    assert p.admit(1.0, Alive(node(0), 3, addr(0)), itself=True)
    (added,) = p.events()
    assert (added.kind, added.node, added.prev, added.state, added.incarnation) == \
        (EVENT_STATE, node(0), NodeState.UNKNOWN, ALIVE, 3)
    assert p.watcher.named("added")[0][1].node == node(0)
    assert p.table.num_members() == 2
    m = p.table.members[node(0)]
    p.table.set_state(2.0, m, DEAD)
    assert p.watcher.named("state_changed")[0][2] is ALIVE       # told the previous state
    assert p.table.counts[DEAD] == 1 and p.table.num_members() == 1
    p.table.remove(3.0, m)
    (removed,) = p.events()
    assert (removed.kind, removed.node) == (EVENT_REMOVED, node(0))
    assert p.news.named("forget") == [(node(0),)]                 # its queued news is void
    assert p.reconnect.targets(3.0) == [addr(0)]                  # it existed: retried after a heal
    assert node(0) not in p.table.members and p.table.counts[DEAD] == 0


def test_one_message_brings_a_bounded_number_of_newcomers() -> None:
    p = Parts(Config.lan(max_members_per_message=3))
    p.message_from("127.0.0.9:1")
    admitted = [p.admit(0.0, Alive(node(i), 0, addr(i))) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    assert p.out.stats["refused_members_per_message"] == 2
    p.message_from("127.0.0.9:1")                                 # the next message: room again
    assert p.admit(0.0, Alive(node(9), 0, addr(9)))


def test_one_source_names_a_bounded_number_of_members_until_they_show_themselves() -> None:
    p = Parts(Config.lan(max_members_per_source=2))
    for i in range(3):
        p.message_from(f"127.0.0.9:{1000 + i}")                 # one host, any port
        p.admit(0.0, Alive(node(i), 0, addr(i)))
    assert set(p.table.members) == {node(0), node(1)}
    assert p.out.stats["refused_members_per_source"] == 1
    assert p.table.unconfirmed == {"127.0.0.9": 2}
    p.table.confirm(p.table.members[node(0)])                     # it showed itself
    assert p.table.unconfirmed == {"127.0.0.9": 1}
    p.message_from("127.0.0.9:1")
    assert p.admit(0.0, Alive(node(2), 0, addr(2)))


def test_a_full_table_makes_room_by_forgetting_the_longest_gone() -> None:
    p = Parts(Config.lan(max_members=3))
    ids = p.bootstrap(3)
    p.table.set_state(1.0, p.table.members[ids[1]], DEAD)
    p.table.set_state(2.0, p.table.members[ids[2]], LEAVING)
    p.message_from("127.0.0.8:1")
    assert p.admit(3.0, Alive(node(3), 0, addr(3)))               # ids[1], gone longest, makes room
    assert set(p.table.members) == {ids[0], ids[2], node(3)}
    assert p.out.stats["members_evicted"] == 1


def test_in_a_full_table_strangers_give_way_to_a_member_that_shows_itself() -> None:
    p = Parts(Config.lan(max_members=3, max_unconfirmed_share=1.0))
    p.bootstrap(1)
    p.message_from("127.0.0.9:1")
    p.admit(0.0, Alive(node(1), 0, addr(1)))
    p.admit(0.0, Alive(node(2), 0, addr(2)))
    p.message_from("127.0.0.7:1")
    assert not p.admit(1.0, Alive(node(4), 0, addr(4)))           # another stranger: refused
    assert p.out.stats["refused_members_table_full"] == 1
    p.message_from(addr(5), node(5))
    assert p.admit(1.0, Alive(node(5), 0, addr(5)), itself=True)  # one that shows itself: in,
    assert set(p.table.members) == {node(0), node(2), node(5)}    # in the oldest stranger's place
    assert p.out.stats["members_evicted_unconfirmed"] == 1


def test_an_address_only_a_stranger_named_is_not_dialed() -> None:
    p = Parts()
    p.message_from("127.0.0.9:1")
    p.admit(0.0, Alive(node(0), 0, "ws://127.0.0.5:80/gossip"))
    p.admit(0.0, Alive(node(1), 0, addr(1)))
    ws, udp = p.table.members[node(0)], p.table.members[node(1)]
    assert not p.table.dialable(ws)            # a WebSocket URL is a dial
    assert p.table.dialable(udp)               # a datagram probe is how it shows itself
    p.table.confirm(ws)
    assert p.table.dialable(ws)
    p.message_from("127.0.0.9:1", authenticated=True)   # named from inside the cluster
    p.admit(0.0, Alive(node(2), 0, "ws://127.0.0.6:80/gossip"))
    assert p.table.dialable(p.table.members[node(2)])


def test_probe_order_is_a_shuffled_round_robin_over_live_members() -> None:
    p = Parts()
    ids = p.bootstrap(5)
    p.table.set_state(0.0, p.table.members[ids[2]], DEAD)
    first = [p.table.next_probe_target() for _ in range(4)]
    assert sorted(m.node for m in first if m is not None) == sorted(set(ids) - {ids[2]})
    second = [p.table.next_probe_target() for _ in range(4)]
    assert {m.node for m in second if m is not None} == set(ids) - {ids[2]}


def test_full_state_lists_this_node_first_and_is_rebuilt_after_a_change() -> None:
    p = Parts()
    p.bootstrap(2)
    states = p.table.full_state(p.local)
    assert states[0] == MemberState(SELF, "127.0.0.1:7946", ALIVE, 0, {}, 0, states[0].pv, "")
    assert [s.node for s in states[1:]] == [node(0), node(1)]
    assert p.table.full_state(p.local) is states
    p.local.set_address("127.0.0.2:7946")
    assert p.table.full_state(p.local)[0].addr == "127.0.0.2:7946"


def test_the_kept_full_state_follows_every_change_of_the_table() -> None:
    # The records are kept between exchanges and made again only for the members that
    # changed: after additions, state changes, metadata, removals (holes, then many) and a
    # change of our own record, the full state is still what it would be made anew.
    p = Parts()
    ids = p.bootstrap(40)

    def fresh() -> tuple[MemberState, ...]:
        return (p.local.self_state(),) + tuple(m.to_state() for m in p.table.members.values())

    assert p.table.full_state(p.local) == fresh()
    members = p.table.members
    p.table.set_state(1.0, members[ids[3]], SUSPECT)
    m = members[ids[5]]
    m.incarnation, m.meta, m.meta_stamp = 4, {"k": 1}, 9
    p.table.invalidate(m)
    p.table.add(1.0, Alive(node(50), 2, addr(50)))
    assert p.table.full_state(p.local) == fresh()
    p.table.remove(2.0, members[ids[7]])
    p.table.set_state(2.0, members[ids[8]], DEAD)
    p.local.set_address("127.0.0.2:7946")
    assert p.table.full_state(p.local) == fresh()
    for i in range(9, 40):                  # most of the table goes: the records are made anew
        p.table.remove(3.0, members[ids[i]])
        if i % 7 == 0:
            assert p.table.full_state(p.local) == fresh()
    p.table.add(4.0, Alive(node(7), 1, addr(7)))   # a member that left comes back: last
    states = p.table.full_state(p.local)
    assert states == fresh() and states[-1].node == node(7)
    assert p.table.full_state(p.local) is states     # unchanged: the same tuple


# -- this node's own record ---------------------------------------------------------------------------

def test_an_accusation_is_refuted_once_per_message_above_the_highest_one() -> None:
    p = Parts()
    p.local.in_receive = True
    p.local.accused(1.0, 0)
    p.local.accused(1.0, 4)
    p.local.accused(1.0, 2)
    assert p.news.named("queue") == []          # nothing until the message is handled
    p.local.in_receive = False
    p.local.settle(1.0)
    ((now, alive),) = p.news.named("queue")
    assert isinstance(alive, Alive) and (alive.node, alive.incarnation, now) == (SELF, 5, 1.0)
    assert p.local.incarnation == 5 and p.out.stats["refutations"] == 1
    assert p.awareness.score == 1               # Lifeguard: being accused hints at our own health


def test_outside_a_message_an_accusation_is_refuted_at_once() -> None:
    p = Parts()
    p.local.accused(2.0, 0)
    assert p.local.incarnation == 1 and len(p.news.named("queue")) == 1
    p.local.accused(2.0, 0)                     # stale now
    assert p.local.incarnation == 1 and len(p.news.named("queue")) == 1


def test_the_incarnation_budget_bounds_how_far_accusations_raise_us() -> None:
    p = Parts(Config.lan(incarnation_budget=10, incarnation_budget_window=10.0, max_incarnation_jump=100))
    p.local.accused(0.0, 50)
    assert p.local.incarnation == 10            # as far as the budget allows
    assert p.out.stats["refused_incarnation_budget"] == 1
    p.local.accused(0.0, 50)
    assert p.local.incarnation == 10            # nothing left
    p.local.accused(5.0, 50)                    # half the window later: half the budget back
    assert p.local.incarnation == 15


def test_an_accusation_too_far_ahead_is_refused_unless_it_answers_our_own_join() -> None:
    p = Parts(Config.lan(max_incarnation_jump=10))
    p.local.accused(0.0, 10)
    assert p.local.incarnation == 0 and p.out.stats["refused_incarnation_jump"] == 1
    p.local.claimed_state(0.0, MemberState(SELF, "127.0.0.1:7946", DEAD, 9000), catch_up=True)
    assert p.local.incarnation == 9001


def test_at_the_top_of_the_range_an_accusation_cannot_be_outbid() -> None:
    p = Parts()
    p.local.incarnation = MAX_INCARNATION - 1
    p.local.accused(0.0, MAX_INCARNATION)
    assert p.local.incarnation == MAX_INCARNATION - 1
    assert p.out.stats["incarnation_exhausted"] == 1


def test_metadata_written_in_our_name_is_reasserted_above_its_stamp() -> None:
    p = Parts()
    p.local.set_metadata(1.0, {"role": "db"}, 100)
    assert (p.local.incarnation, p.local.meta_stamp) == (1, 100)
    p.local.claimed_alive(2.0, Alive(SELF, 1, "127.0.0.1:7946", {"role": "evil"}, 500))
    assert p.local.meta_stamp == 501 and dict(p.local.meta) == {"role": "db"}
    assert p.out.stats["metadata_reasserted"] == 1
    last = p.news.named("queue")[-1][1]
    assert isinstance(last, Alive) and (last.meta_stamp, last.incarnation) == (501, 2)


def test_a_leaving_node_refutes_nothing() -> None:
    p = Parts()
    p.local.leaving()
    p.local.accused(0.0, 3)
    p.local.claimed_alive(0.0, Alive(SELF, 7, "127.0.0.1:7946"))
    assert p.local.incarnation == 0 and p.news.named("queue") == []
    assert p.local.left_update() == Dead(SELF, 0, SELF)


@pytest.mark.parametrize("update", [Suspect(SELF, 0, node(0)), Dead(SELF, 0, node(0))], ids=["suspect", "dead"])
def test_the_announcement_carries_the_new_incarnation(update: Suspect | Dead) -> None:
    p = Parts()
    p.local.accused(0.0, update.incarnation)
    ((_, alive),) = p.news.named("queue")
    assert alive == p.local.self_alive() and alive.incarnation == 1
    assert p.local.state is not LEAVING


def _table_with_dead(n: int, dead: list[int], seed: int) -> Any:
    import random as _random

    from gossip.messages import MemberState as _MS
    from gossip.protocol import Protocol as _P

    core = _P(Config.lan(), NodeID(int=10_000), "127.0.0.1:7946", _random.Random(seed), 0.0)
    ids = [NodeID(int=i + 1) for i in range(n)]
    core.bootstrap(0.0, [_MS(node, f"127.0.0.{i % 250 + 1}:7946", NodeState.ALIVE, 0) for i, node in enumerate(ids)])
    table = core._table
    for i in dead:
        table.set_state(1.0 + i, table.members[ids[i]], NodeState.DEAD)
    return table


def test_sampling_among_the_gone_draws_as_the_full_scan_does() -> None:
    import random as _random

    for seed in range(30):
        dead = _random.Random(seed).sample(range(200), seed % 5)
        a, b = _table_with_dead(200, dead, seed), _table_with_dead(200, dead, seed)
        for _ in range(20):
            x = a.sample(1, lambda m: m.state is NodeState.DEAD, set(), a.cids)
            y = b.sample(1, lambda m: m.state is NodeState.DEAD, set(), b.cids, b.gone())
            assert [m.node for m in x] == [m.node for m in y]
            assert a.rng.random() == b.rng.random()


def test_expiry_forgets_the_due_in_table_order() -> None:
    table = _table_with_dead(50, [30, 4, 17], 1)
    order = [m.node for m in table.members.values() if m.state is NodeState.DEAD]
    table.out.drain()
    table.expire(1e9)
    removed = [a.node for a in table.out.drain() if getattr(a, "kind", None) == EVENT_REMOVED]
    assert removed == order and len(table.members) == 47 and not list(table.gone())
