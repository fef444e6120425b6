"""The merge rules driven alone (with the table, our record, suspicions and dissemination they
are given): what updates and full states do, read from the table and the outbox."""

from __future__ import annotations

from typing import Any

from gossip.config import Config
from gossip.messages import Alive, Dead, Gossip, MemberState, Ping, Suspect
from gossip.protocol.actions import EVENT_CONFLICT, EVENT_METADATA, MemberEvent
from gossip.protocol.dissemination import Dissemination
from gossip.protocol.merge import Merger
from gossip.protocol.suspicion import Suspicions

from .parts import ALIVE, DEAD, LEAVING, SELF, SUSPECT, Parts, Recorder, addr, messages, node


class Merging:
    def __init__(self, n: int = 3, config: Config | None = None) -> None:
        p = self.p = Parts(config)
        self.ids = p.bootstrap(n)
        self.news = Dissemination(p.config, p.out, p.table)
        p.table.watch(p.watcher, self.news.forget)
        self.watcher = Recorder()
        self.suspicions = Suspicions(p.config, p.out, SELF, p.table, self.watcher, self.news.queue,
                                     p.local.accused)
        self.merge = Merger(p.config, p.out, p.table, p.inbound, p.local, self.suspicions, self.news,
                            self.watcher)

    def queued(self) -> list[Any]:
        return [u for u, _ in self.news.broadcasts.items() + self.news.broadcasts_low.items()]


def test_a_newcomer_is_admitted_and_passed_on() -> None:
    t = Merging()
    t.p.message_from("127.0.0.9:1")
    t.merge.updates(1.0, (Alive(node(7), 2, addr(7)),))
    assert t.p.table.members[node(7)].state is ALIVE
    assert Alive(node(7), 2, addr(7)) in t.queued()
    t.merge.updates(1.0, (Alive(node(8), 0, addr(8), pv=99),))
    assert node(8) not in t.p.table.members and t.p.out.stats["refused_protocol_version"] == 1


def test_an_alive_at_a_higher_incarnation_refutes_a_suspicion() -> None:
    t = Merging()
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Suspect(node(0), 0, node(1)),), node(1))
    m = t.p.table.members[node(0)]
    assert m.state is SUSPECT and m.suspicion is not None
    t.merge.updates(2.0, (Alive(node(0), 1, addr(0)),), node(1))
    assert m.state is ALIVE and m.incarnation == 1 and m.suspicion is None
    assert t.watcher.named("alive_again") == [(2.0, m, 1)]
    assert t.p.out.stats["suspicions_refuted"] == 1


def test_another_address_for_a_live_member_is_a_conflict_not_a_takeover() -> None:
    t = Merging()
    t.p.out.drain()
    t.merge.updates(1.0, (Alive(node(0), 3, "127.0.0.66:1"),))
    assert t.p.table.members[node(0)].addr == addr(0)
    (ev,) = [a for a in t.p.out.drain() if isinstance(a, MemberEvent)]
    assert (ev.kind, ev.conflict_addr) == (EVENT_CONFLICT, "127.0.0.66:1")
    assert t.p.out.stats["conflicts"] == 1


def test_an_incarnation_jump_is_refused_unless_the_member_speaks_for_itself() -> None:
    t = Merging(config=Config.lan(max_incarnation_jump=10))
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Alive(node(0), 11, addr(0)),), node(1))
    assert t.p.table.members[node(0)].incarnation == 0
    assert t.p.out.stats["refused_incarnation_jump"] == 1
    t.p.message_from(addr(0), node(0))
    t.merge.updates(1.0, (Alive(node(0), 11, addr(0)),), node(0))
    assert t.p.table.members[node(0)].incarnation == 11


def test_oversize_metadata_is_dropped_and_liveness_kept() -> None:
    t = Merging()
    t.p.out.drain()
    t.merge.updates(1.0, (Alive(node(0), 1, addr(0), {"blob": "x" * 5000}, 9),))
    m = t.p.table.members[node(0)]
    assert (m.incarnation, dict(m.meta), m.meta_stamp) == (1, {}, 0)
    assert t.p.out.stats["refused_metadata_size"] == 1
    assert not [a for a in t.p.out.drain() if isinstance(a, MemberEvent) and a.kind == EVENT_METADATA]


def test_a_peer_that_gossips_a_stale_accusation_is_told_what_is_newer() -> None:
    t = Merging()
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Alive(node(0), 4, addr(0)),), node(1))
    t.p.out.drain()
    t.merge.updates(2.0, (Suspect(node(0), 2, node(1)),), node(1))
    (correction,) = messages(t.p.sends(), Gossip)
    assert correction == Gossip((Alive(node(0), 4, addr(0)),))
    assert t.p.table.members[node(0)].state is ALIVE


def test_a_death_verdict_wins_and_a_leave_said_by_another_is_checked_with_the_member() -> None:
    t = Merging()
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Dead(node(0), 0, node(1)),), node(1))
    assert t.p.table.members[node(0)].state is DEAD and Dead(node(0), 0, node(1)) in t.queued()
    t.p.out.drain()
    t.merge.updates(1.0, (Dead(node(2), 0, node(2)),), node(1))      # "node(2) left", says node(1)
    assert t.p.table.members[node(2)].state is LEAVING
    (check,) = messages(t.p.sends(), Ping)
    assert check.target == node(2) and check.updates == (Dead(node(2), 0, node(2)),)
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Dead(node(1), 0, node(1)),), node(1))      # node(1) says it itself
    assert messages(t.p.sends(), Ping) == []


def test_in_a_full_state_a_remote_verdict_is_only_a_suspicion_in_the_peers_name() -> None:
    t = Merging(5)
    seen: list[bool] = []
    t.watcher.suspected = lambda now, m, s: seen.append(t.watcher.syncing)   # type: ignore[method-assign]
    states = (MemberState(node(0), addr(0), DEAD, 0), MemberState(node(9), addr(9), LEAVING, 0))
    t.merge.states(1.0, states, peer=node(1))
    m = t.p.table.members[node(0)]
    assert m.state is SUSPECT and m.suspicion is not None and m.suspicion.accuser == node(1)
    assert seen == [True] and not t.watcher.syncing                  # flagged while merging only
    assert node(9) not in t.p.table.members                          # a leaver we never knew: ignored


def test_in_a_full_state_a_member_held_suspect_is_hearsay_and_confirms_nothing() -> None:
    # Held suspect is not suspected by the peer itself (it most often heard the accusation by
    # gossip): in the peer's name it was a confirmation here and, passed on, everywhere else.
    # A member held dead is the peer's verdict, and still confirms.
    t = Merging(5)
    t.p.message_from(addr(1), node(1))
    t.merge.updates(1.0, (Suspect(node(0), 0, node(1)),), node(1))     # node(1)'s failed probe
    m = t.p.table.members[node(0)]
    assert m.suspicion is not None and m.suspicion.k == 2
    deadline = m.suspicion.deadline()
    t.merge.states(2.0, (MemberState(node(0), addr(0), SUSPECT, 0),), peer=node(2))
    assert m.suspicion.confirmers == set() and m.suspicion.deadline() == deadline
    assert [u.sender for u in t.queued() if isinstance(u, Suspect)] == [node(1)]
    t.merge.states(3.0, (MemberState(node(0), addr(0), DEAD, 0),), peer=node(3))
    assert m.suspicion.confirmers == {node(3)} and m.suspicion.deadline() < deadline


def test_a_flood_in_one_full_state_stops_at_the_per_message_bound() -> None:
    t = Merging(0, Config.lan(max_members_per_message=10))
    t.p.message_from("127.0.0.9:1")
    t.merge.states(0.0, [MemberState(node(i), addr(i % 250), ALIVE, 0) for i in range(100)])
    assert len(t.p.table.members) == 10
    assert t.p.out.stats["refused_members_per_message"] == 90


def test_a_full_state_merged_without_echo_enters_newcomers_without_gossiping_them() -> None:
    t = Merging(2)
    t.p.message_from(addr(1), node(1))
    refuted = Alive(node(0), 4, addr(0))
    t.merge.states(1.0, (MemberState(node(7), addr(7), ALIVE, 0), MemberState(node(0), addr(0), ALIVE, 4)),
                   peer=node(1), echo=False)
    assert t.p.table.members[node(7)].state is ALIVE
    queued = t.queued()
    assert not [u for u in queued if u.node == node(7)]              # new to us: not passed on
    assert refuted in queued                                         # news of a member we knew is
    t.merge.updates(1.5, (Alive(node(9), 0, addr(9)),), node(1))
    assert [u for u in t.queued() if u.node == node(9)]              # for that merge only
    t.merge.states(2.0, (MemberState(node(8), addr(8), ALIVE, 0),), peer=node(1))
    assert [u for u in t.queued() if u.node == node(8)]


def _reply_merged(direct: bool, echo: bool) -> tuple[Merging, list[Any]]:
    """A node holding two members merges a varied answer to its own request: with ``direct``
    false, one forgotten member keeps every record on the path of on_alive."""
    t = Merging(2)
    t.p.local._stamp_clock = lambda: 1 << 40
    if not direct:
        t.p.table.forgotten[node(99)] = (0, 0.0)
    t.p.out.drain()
    t.p.message_from(addr(1), node(1))
    t.p.inbound.solicited = True
    t.p.inbound.vouching = True
    states = [MemberState(node(1), addr(1), ALIVE, 3)]                     # the sender's own
    states += [MemberState(node(i), addr(i), ALIVE, i % 3) for i in range(10, 20)]
    states += [
        MemberState(node(20), addr(20), ALIVE, 0, {"blob": "x" * 5000}, 5),   # too large: dropped
        MemberState(node(21), addr(21), ALIVE, 0, {"k": 1}, 1 << 62),         # stamped far ahead
        MemberState(node(22), addr(22), ALIVE, 0, {"k": 2}, 7, tags=frozenset({"db"})),
        MemberState(node(23), addr(23), ALIVE, 0, pv=99),                   # another protocol
        MemberState(node(12), addr(12), ALIVE, 5),                          # named twice
        MemberState(node(24), addr(24), SUSPECT, 0),
        MemberState(node(25), addr(25), DEAD, 0),
        MemberState(node(0), addr(0), ALIVE, 2),                            # known: news
        MemberState(node(26), addr(26), ALIVE, -1),                         # out of range
    ]
    t.merge.states(1.0, states, peer=node(1), echo=echo)
    return t, t.p.out.drain()


def test_the_members_a_reply_names_enter_as_through_on_alive() -> None:
    # A reply to our own request enters newcomers directly when they all fit: the table, the
    # probe order, the events, the counters and what is passed on are those of the path
    # through on_alive, record for record.
    for echo in (True, False):
        fast, fast_out = _reply_merged(True, echo)
        slow, slow_out = _reply_merged(False, echo)
        tf, ts = fast.p.table, slow.p.table
        assert list(tf.members) == list(ts.members)
        for n, m in tf.members.items():
            o = ts.members[n]
            assert (m.addr, m.state, m.incarnation, dict(m.meta), m.meta_stamp, m.tags, m.pv,
                    m.introducer, m.vouched) == \
                (o.addr, o.state, o.incarnation, dict(o.meta), o.meta_stamp, o.tags, o.pv,
                 o.introducer, o.vouched)
        assert list(tf.probe_list) == list(ts.probe_list)
        assert fast_out == slow_out
        assert fast.p.out.stats == slow.p.out.stats
        assert fast.queued() == slow.queued()
        assert tf.counts == ts.counts and dict(tf.unconfirmed) == dict(ts.unconfirmed)
        # What the checks did, on either path:
        assert tf.members[node(20)].meta == {} and tf.members[node(21)].meta_stamp == 0
        assert tf.members[node(22)].tags == frozenset({"db"})
        assert node(23) not in tf.members and tf.members[node(12)].incarnation == 5
        assert fast.p.out.stats["refused_metadata_size"] == 1
        assert fast.p.out.stats["refused_metadata_stamp"] == 1
        assert fast.p.out.stats["refused_protocol_version"] == 1
        assert fast.p.out.stats["refused_incarnation_range"] == 1
        assert tf.members[node(10)].introducer is not None               # named, not shown
        assert bool([u for u in fast.queued() if u.node == node(10)]) is echo


def test_a_reply_larger_than_the_room_left_goes_through_admission() -> None:
    # When the answer does not fit, every newcomer passes admit, which makes room.
    t = Merging(2, Config.lan(max_members=6))
    t.p.message_from(addr(1), node(1))
    t.p.inbound.solicited = True
    t.merge.states(1.0, [MemberState(node(i), addr(i), ALIVE, 0) for i in range(10, 20)], peer=node(1))
    assert len(t.p.table.members) == 6
    assert t.p.out.stats["members_evicted_unconfirmed"] == 6


def test_what_is_said_of_us_goes_to_our_own_record() -> None:
    t = Merging()
    t.p.local.in_receive = True
    t.merge.updates(1.0, (Suspect(SELF, 0, node(1)), Dead(SELF, 2, node(1))), node(1))
    t.merge.states(1.0, (MemberState(SELF, t.p.local.addr, SUSPECT, 1),))
    t.p.local.in_receive = False
    t.p.local.settle(1.0)
    assert t.p.local.incarnation == 3                                # past the highest, once
    assert t.p.out.stats["refutations"] == 1
