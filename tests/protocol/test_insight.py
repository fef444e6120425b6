"""Suspicion provenance, flap scores, damping and partition detection in the sans-I/O core.

Cores are fed by hand or wired through the virtual-time :class:`CoreCluster`: no sockets, no
sleeps, no wall clock.
"""

from __future__ import annotations

import random

import pytest

from gossip.config import Config
from gossip.messages import Alive, Dead, Gossip, Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import EVENT_STATE, MemberEvent
from gossip.protocol.flap import MAX_FLIPS, FlapTracker, MemberFlapping
from gossip.protocol.partition import PartitionDetector, PartitionHealed, PartitionSuspected
from gossip.protocol.provenance import ProvenanceBook

from .harness import CoreCluster

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
A, B, C, D = NodeID(int=0xA), NodeID(int=0xB), NodeID(int=0xC), NodeID(int=0xD)


def lone(config: Config | None = None) -> Protocol:
    core = Protocol(config or Config.lan(), NodeID(int=1), "self:1", random.Random(1), 0.0)
    for node, addr in ((A, "a:1"), (B, "b:1"), (C, "c:1"), (D, "d:1")):
        core.receive(0.0, addr, Gossip((Alive(node, 0, addr),)), node)
    core.actions_to_perform()
    return core


def state_events(core: Protocol, node: NodeID) -> list[tuple[NodeState, NodeState]]:
    return [(a.prev, a.state) for a in core.actions_to_perform()
            if isinstance(a, MemberEvent) and a.kind == EVENT_STATE and a.node == node]


# -- provenance ------------------------------------------------------------------------------------

def test_accusation_confirmations_and_death_by_timeout_are_recorded() -> None:
    core = lone()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)          # B accuses A itself
    core.receive(2.0, "b:1", Gossip((Suspect(A, 0, C),)), B)          # C confirms, relayed by B
    core.receive(2.5, "d:1", Gossip((Suspect(A, 0, D),)), D)          # D confirms itself
    susp = core.members[A].suspicion
    assert susp is not None
    deadline = susp.deadline()
    core.tick(deadline)
    exp = core.insight.explain(deadline, A)
    assert exp is not None and exp.state is DEAD and exp.address == "a:1"
    (ep,) = exp.episodes
    assert (ep.accuser, ep.via, ep.relayed_by, ep.started_at, ep.incarnation) == (B, "direct", None, 1.0, 0)
    assert ep.expected == susp.k == 2
    first, second = ep.confirmations
    assert (first.node, first.via, first.relayed_by, first.at) == (C, "gossip", B, 2.0)
    assert (second.node, second.via, second.relayed_by, second.at) == (D, "direct", None, 2.5)
    # Each confirmation shortened the timeout; the chain of timeouts is continuous.
    assert ep.timeout == first.timeout > first.new_timeout == second.timeout > second.new_timeout
    assert second.new_timeout == pytest.approx(deadline - 1.0)
    assert (ep.outcome, ep.ended_at, ep.declared_by, ep.by_timeout) == ("dead", deadline, core.id, True)


def test_repeated_and_self_accusations_do_not_count_as_confirmations() -> None:
    core = lone()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)
    core.receive(1.5, "c:1", Gossip((Suspect(A, 0, B),)), C)          # the accuser again
    exp = core.insight.explain(2.0, A)
    assert exp is not None and exp.episodes[0].confirmations == ()
    assert exp.episodes[0].outcome == "open"


def test_refuted_suspicion_shows_as_refuted() -> None:
    core = lone()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)
    core.receive(1.4, "a:1", Gossip((Alive(A, 1, "a:1"),)), A)        # A refutes at incarnation 1
    exp = core.insight.explain(2.0, A)
    assert exp is not None and exp.state is ALIVE and exp.incarnation == 1
    (ep,) = exp.episodes
    assert (ep.outcome, ep.refuted_incarnation, ep.ended_at, ep.declared_by) == ("refuted", 1, 1.4, None)


def test_a_suspicion_at_a_newer_incarnation_closes_the_old_one_as_refuted() -> None:
    core = lone()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)
    core.receive(2.0, "c:1", Gossip((Suspect(A, 3, C),)), C)          # A refuted, we missed it
    exp = core.insight.explain(2.0, A)
    assert exp is not None
    old, new = exp.episodes
    assert (old.outcome, old.refuted_incarnation) == ("refuted", 3)
    assert (new.accuser, new.incarnation, new.outcome) == (C, 3, "open")


def test_a_death_verdict_without_suspicion_names_who_declared_it_and_the_return() -> None:
    core = lone()
    core.receive(1.0, "c:1", Gossip((Dead(A, 0, B),)), C)             # B's verdict, through C
    exp = core.insight.explain(1.0, A)
    assert exp is not None and exp.state is DEAD
    (ep,) = exp.episodes
    assert (ep.accuser, ep.via, ep.relayed_by, ep.confirmations) == (B, "gossip", C, ())
    assert (ep.outcome, ep.declared_by, ep.by_timeout, ep.ended_at) == ("dead", B, False, 1.0)
    core.receive(5.0, "a:1", Gossip((Alive(A, 1, "a:1"),)), A)        # it was alive after all
    exp = core.insight.explain(5.0, A)
    assert exp is not None and exp.state is ALIVE
    assert (exp.episodes[0].returned_at, exp.episodes[0].returned_incarnation) == (5.0, 1)


def test_leave_ends_an_open_suspicion_as_left_and_a_plain_leave_records_nothing() -> None:
    core = lone()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)
    core.receive(1.5, "a:1", Gossip((Dead(A, 0, A),)), A)
    core.receive(1.5, "c:1", Gossip((Dead(C, 0, C),)), C)
    exp = core.insight.explain(2.0, A)
    assert exp is not None and exp.state is LEAVING
    assert [(e.outcome, e.ended_at) for e in exp.episodes] == [("left", 1.5)]
    exp_c = core.insight.explain(2.0, C)
    assert exp_c is not None and exp_c.episodes == ()


def test_own_failed_probe_is_via_probe_and_a_state_exchange_via_sync() -> None:
    cc = CoreCluster(5, seed=3)
    victim = cc.cores[4]
    cc.down.add(4)
    cc.run(4.0)
    vias = set()
    for core in cc.cores[:4]:
        exp = core.insight.explain(cc.now, victim.id)
        assert exp is not None and exp.episodes
        ep = exp.episodes[0]
        vias.add(ep.via)
        if ep.via == "probe":
            assert ep.accuser == core.id and ep.relayed_by is None
        elif ep.via == "gossip":
            assert ep.relayed_by not in (None, ep.accuser, core.id)
    assert "probe" in vias
    # A remote verdict arriving in a full-state exchange names the peer that held it.
    core = lone()
    from gossip.messages import MemberState, PushPull
    core.receive(3.0, "b:1", PushPull(1, "b:1", (MemberState(B, "b:1", ALIVE, 0),
                                                 MemberState(A, "a:1", DEAD, 0))), B, reliable=True)
    exp = core.insight.explain(3.0, A)
    assert exp is not None
    assert (exp.episodes[0].accuser, exp.episodes[0].via, exp.episodes[0].relayed_by) == (B, "sync", B)


def test_history_is_bounded_per_member_and_forgotten_with_the_member() -> None:
    core = lone(Config.lan(suspicion_history_size=3))
    for i in range(5):
        core.receive(10.0 * i, "b:1", Gossip((Suspect(A, i, B),)), B)
        core.receive(10.0 * i + 1, "a:1", Gossip((Alive(A, i + 1, "a:1"),)), A)
    exp = core.insight.explain(50.0, A)
    assert exp is not None and exp.history_size == 3
    assert [e.incarnation for e in exp.episodes] == [2, 3, 4]                # the oldest two went
    assert all(e.outcome == "refuted" for e in exp.episodes)
    core.receive(60.0, "a:1", Gossip((Dead(A, 5, A),)), A)                  # A leaves...
    later = 60.0 + core.config.gossip_to_the_dead_time + core.config.recovery_attempt_interval + 1
    core.tick(later)
    assert A not in core.members and core.insight.explain(later, A) is None   # ...and is forgotten
    assert A not in set(core.insight.book.members())


def test_explain_of_the_local_node_and_of_an_unknown_one() -> None:
    core = lone()
    me = core.insight.explain(0.0, core.id)
    assert me is not None and me.local and me.state is ALIVE and me.episodes == ()
    assert core.insight.explain(0.0, NodeID(int=0xFFFF)) is None


def test_book_alone_bounds_confirmations_by_what_the_core_counts() -> None:
    book = ProvenanceBook(2)
    book.confirmed(A, 1.0, B, "direct", None, 3.0)        # no open episode: ignored
    assert book.episodes(A) == ()
    book.suspected(A, 1.0, B, 0, "direct", None, 9.0, 1)
    book.confirmed(A, 2.0, C, "direct", None, 3.0)
    (ep,) = book.episodes(A)
    assert [(c.timeout, c.new_timeout) for c in ep.confirmations] == [(9.0, 3.0)]
    book.returned(A, 3.0, 1)                               # not dead: nothing to note
    assert book.episodes(A)[0].returned_at is None


# -- flap score --------------------------------------------------------------------------------------

def test_flap_score_counts_changes_in_a_sliding_window_and_fires_once_per_crossing() -> None:
    f = FlapTracker(window=10.0, threshold=3)
    assert [f.flip(A, t) for t in (0.0, 1.0)] == [None, None]
    assert f.flip(A, 2.0) == 3                          # reaches the threshold: fires
    assert f.flip(A, 3.0) is None                       # still flapping: no second event
    assert f.score(A, 3.0) == 4 and f.flapping(A, 3.0)
    assert f.score(A, 11.5) == 2 and not f.flapping(A, 11.5)    # 0.0 and 1.0 slid out
    assert f.flip(A, 30.0) is None                      # quiet for long: score 1, re-armed
    assert [f.flip(A, t) for t in (31.0, 32.0)] == [None, 3]
    assert f.scores(32.0) == {A: 3}
    f.forget(A)
    assert f.scores(32.0) == {} and f.score(A, 32.0) == 0


def test_flap_score_is_bounded() -> None:
    f = FlapTracker(window=1e9, threshold=64)
    for i in range(10 * MAX_FLIPS):
        f.flip(A, float(i))
    assert f.score(A, 1e6) == MAX_FLIPS


def test_core_fires_member_flapping_after_the_state_event() -> None:
    core = lone(Config.lan(flap_threshold=4, flap_window=100.0))
    t, inc, out = 1.0, 0, []
    for _ in range(2):
        core.receive(t, "b:1", Gossip((Suspect(A, inc, B),)), B)
        inc += 1
        core.receive(t + 1, "a:1", Gossip((Alive(A, inc, "a:1"),)), A)
        out += core.actions_to_perform()
        t += 10
    kinds = [type(a).__name__ if not isinstance(a, MemberEvent) else f"{a.prev}->{a.state}"
             for a in out if not hasattr(a, "msg")]
    assert kinds == ["alive->suspect", "suspect->alive", "alive->suspect", "suspect->alive", "MemberFlapping"]
    flap = out[-1]
    assert isinstance(flap, MemberFlapping)
    assert (flap.node, flap.score, flap.window, flap.threshold, flap.damped, flap.at) == (A, 4, 100.0, 4, False, 12.0)
    assert core.insight.flap_scores(12.0) == {A: 4}
    exp = core.insight.explain(12.0, A)
    assert exp is not None and exp.flapping and exp.flap_score == 4 and not exp.damped


# -- damping -----------------------------------------------------------------------------------------

def _flap(core: Protocol, t: float, inc: int) -> None:
    core.receive(t, "b:1", Gossip((Suspect(A, inc, B),)), B)
    core.receive(t + 1, "a:1", Gossip((Alive(A, inc + 1, "a:1"),)), A)


def test_damping_holds_a_flapping_member_suspect_for_users_only() -> None:
    cfg = Config.lan(flap_threshold=2, flap_window=100.0, flap_damping=True, flap_damping_hold=30.0)
    core = lone(cfg)
    core.receive(1.0, "b:1", Gossip((Suspect(A, 0, B),)), B)
    assert state_events(core, A) == [(ALIVE, SUSPECT)]
    core.receive(2.0, "a:1", Gossip((Alive(A, 1, "a:1"),)), A)    # refuted; score 2: flapping
    assert state_events(core, A) == []                              # users keep seeing it suspect
    m = core.members[A]
    assert m.state is ALIVE and m.suspicion is None                 # the protocol: alive at once
    assert core.insight.shown_state(A, m.state) is SUSPECT
    assert core.insight.explain(2.0, A).damped                      # type: ignore[union-attr]
    core.tick(31.9)
    assert state_events(core, A) == []
    core.tick(32.0)                                                 # 30 s alive: released
    assert state_events(core, A) == [(SUSPECT, ALIVE)]
    assert core.insight.shown_state(A, core.members[A].state) is ALIVE


def test_damping_suspect_again_is_silent_and_death_is_told() -> None:
    cfg = Config.lan(flap_threshold=2, flap_window=100.0, flap_damping=True, flap_damping_hold=30.0)
    core = lone(cfg)
    _flap(core, 1.0, 0)
    core.actions_to_perform()
    core.receive(5.0, "b:1", Gossip((Suspect(A, 1, B),)), B)       # suspected again while held
    assert state_events(core, A) == []
    core.receive(6.0, "a:1", Gossip((Alive(A, 2, "a:1"),)), A)     # and back: held anew
    core.receive(7.0, "c:1", Gossip((Dead(A, 2, C),)), C)           # then declared dead
    assert state_events(core, A) == [(SUSPECT, DEAD)]
    core.tick(100.0)
    assert state_events(core, A) == []                              # no stale release
    core.receive(101.0, "a:1", Gossip((Alive(A, 3, "a:1"),)), A)   # back from dead while flapping
    assert state_events(core, A) == [(DEAD, SUSPECT)]


def test_damping_is_off_by_default() -> None:
    core = lone(Config.lan(flap_threshold=2, flap_window=100.0))
    _flap(core, 1.0, 0)
    assert state_events(core, A) == [(ALIVE, SUSPECT), (SUSPECT, ALIVE)]


# -- partitions ----------------------------------------------------------------------------------------

def test_partition_detector_needs_both_the_share_and_the_count() -> None:
    ids = [NodeID(int=i) for i in range(1, 11)]
    dead: set[NodeID] = set()
    det = PartitionDetector(threshold=0.3, window=10.0, min_members=3)
    assert det.lost(ids[0], 0.0, 9, dead.__contains__) is None
    assert det.lost(ids[1], 1.0, 9, dead.__contains__) is None      # 2 < min_members
    ev = det.lost(ids[2], 2.0, 9, dead.__contains__)                 # 3 of 9 live: 33 %
    assert isinstance(ev, PartitionSuspected) and ev.members == tuple(ids[:3]) and det.active
    assert ev.share == pytest.approx(3 / 9)
    assert det.lost(ids[3], 3.0, 9, dead.__contains__) is None       # joins the partition
    assert det.back(ids[0], 4.0) is None                             # 3 still down
    assert det.back(ids[2], 5.0, gone=True) is None                  # left; 2 still down
    assert det.back(ids[1], 6.0) is None and det.active              # 1 still down
    healed = det.back(ids[3], 7.0)                                   # the last one: over
    assert isinstance(healed, PartitionHealed) and not det.active
    assert healed.members == tuple(ids[:4]) and healed.returned == (ids[0], ids[1], ids[3])
    assert healed.missing == (ids[2],) and healed.duration == 5.0
    assert "3 of its 4 members are back; not back: " in str(healed)
    assert det.back(ids[2], 8.0) is None                             # over: nothing more


def test_a_partition_heals_when_it_is_over_not_at_the_first_return() -> None:
    ids = [NodeID(int=i) for i in range(1, 11)]
    never = lambda n: False  # noqa: E731
    det = PartitionDetector(threshold=0.3, window=10.0, min_members=3, settle=30.0)
    for i in range(5):
        det.lost(ids[i], 0.0, 10 - i, never)
    assert det.active
    assert det.back(ids[0], 50.0) is None            # the first of five is back: not over
    assert det.deadline == 80.0
    assert det.back(ids[1], 60.0) is None and det.deadline == 90.0
    assert det.settle_check(89.0) is None
    for i in (2, 3):
        assert det.back(ids[i], 61.0) is None
    # ids[4] crashed meanwhile: 30 s after the last return the partition is over without it.
    healed = det.settle_check(91.0)
    assert isinstance(healed, PartitionHealed) and not det.active
    assert healed.returned == tuple(ids[:4]) and healed.missing == (ids[4],)
    assert det.settle_check(200.0) is None
    # All forgotten, none back: it ends without an event.
    det2 = PartitionDetector(threshold=0.3, window=10.0, min_members=3)
    for i in range(3):
        det2.lost(ids[i], 0.0, 7, never)
    assert det2.back(ids[0], 9.0, gone=True) is None and det2.back(ids[1], 9.0, gone=True) is None
    assert det2.back(ids[2], 9.0, gone=True) is None and not det2.active


def test_partition_healed_waits_for_the_side_and_names_the_member_that_crashed() -> None:
    cfg = Config.local(state_sync_interval=5.0)
    cc = CoreCluster(7, cfg, seed=4)
    near, far, crashed = [0, 1, 2], [3, 4, 5, 6], 6
    for a in near:
        for b in far:
            cc.cut(a, b)
    cc.run(20.0)

    def events() -> list[PartitionSuspected | PartitionHealed]:
        return [a for j, a in cc.join_results if j == 0 and isinstance(a, (PartitionSuspected, PartitionHealed))]

    assert [type(e) for e in events()] == [PartitionSuspected]
    cc.down.add(crashed)             # one of the far side crashes during the split
    cc.heal()
    t0 = cc.now
    behind: list[int] = []           # far members not yet back when the heal was announced
    while cc.now < t0 + 60.0 and not any(isinstance(e, PartitionHealed) for e in events()):
        cc.run(0.01)
        if any(isinstance(e, PartitionHealed) for e in events()):
            behind = [j for j in far if j != crashed and cc.state(0, j) is not ALIVE]
    healed = [e for e in events() if isinstance(e, PartitionHealed)]
    assert len(healed) == 1, events()
    assert behind == []              # not announced while members were still on their way back
    ids = {j: cc.cores[j].id for j in far}
    # (near members that the far side's stale views accused join the partition, and come back)
    assert {ids[j] for j in far if j != crashed} <= set(healed[0].returned)
    assert healed[0].missing == (ids[crashed],)


def test_partition_detector_window_and_share() -> None:
    ids = [NodeID(int=i) for i in range(1, 30)]
    det = PartitionDetector(threshold=0.3, window=10.0, min_members=3)
    never = lambda n: False  # noqa: E731
    for i in range(5):                                                 # one loss every 5 s
        assert det.lost(ids[i], 5.0 * i, 10, never) is None            # never 3 within 10 s
    det2 = PartitionDetector(threshold=0.5, window=10.0, min_members=3)
    for i in range(4):
        assert det2.lost(ids[i], 0.1 * i, 10, never) is None           # 4 of 10 < 50 %
    # Dead members lost within the window still count as live at its start.
    det3 = PartitionDetector(threshold=0.5, window=10.0, min_members=3)
    gone = set(ids[:3])
    assert det3.lost(ids[0], 0.0, 3, gone.__contains__) is None
    assert det3.lost(ids[1], 0.0, 3, gone.__contains__) is None
    ev = det3.lost(ids[2], 0.0, 3, gone.__contains__)                  # 3 of (3 + 3 dead)
    assert isinstance(ev, PartitionSuspected) and ev.share == 0.5


def test_one_crash_in_a_small_cluster_is_no_partition() -> None:
    cc = CoreCluster(3, Config.local(), seed=5)
    cc.down.add(2)
    cc.run(30.0)
    assert all(cc.state(o, 2) is DEAD for o in (0, 1))
    # (the harness files every action that is neither a send nor a member event with the joins)
    assert [a for _, a in cc.join_results if isinstance(a, (PartitionSuspected, PartitionHealed))] == []
    assert cc.join_results == []
