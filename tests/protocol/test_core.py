"""The protocol core, fed by hand and through a small virtual-time cluster: no sockets, no sleeps."""

from __future__ import annotations

import random

import pytest

from gossip.config import Config
from gossip.messages import (
    Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Nack, Ping, PingReq, PushPull, PushPullReply, Suspect,
)
from gossip.node import PROTOCOL_VERSION, NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, MemberEvent, Send

from .harness import A, B, C, CoreCluster, lone, sends, with_member

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING








# -- merge rules --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "start, update, expected",
    [
        (ALIVE, Alive(A, 6, "a:1"), (ALIVE, 6)),
        (ALIVE, Alive(A, 4, "a:1"), (ALIVE, 5)),          # older alive: ignored
        (ALIVE, Suspect(A, 5, B), (SUSPECT, 5)),          # suspect beats alive at equal incarnation
        (ALIVE, Suspect(A, 4, B), (ALIVE, 5)),            # an older suspicion is stale
        (ALIVE, Dead(A, 5, B), (DEAD, 5)),
        (ALIVE, Dead(A, 4, B), (ALIVE, 5)),
        (SUSPECT, Alive(A, 5, "a:1"), (SUSPECT, 5)),      # equal incarnation does not refute
        (SUSPECT, Alive(A, 6, "a:1"), (ALIVE, 6)),        # only a higher one does
        (SUSPECT, Dead(A, 5, B), (DEAD, 5)),              # dead beats suspect
        (DEAD, Alive(A, 5, "a:1"), (DEAD, 5)),
        (DEAD, Suspect(A, 9, B), (DEAD, 5)),              # suspicion never resurrects
        (DEAD, Alive(A, 6, "a:1"), (ALIVE, 6)),           # a newer incarnation does
        (ALIVE, Dead(A, 5, A), (LEAVING, 5)),             # dead from itself = left
        (DEAD, Dead(A, 5, A), (LEAVING, 5)),              # its own word is more precise
    ],
)
def test_merge_rules(start: NodeState, update: object, expected: tuple[NodeState, int]) -> None:
    core = with_member(start)
    core.receive(1.0, "x", Gossip((update,)))  # type: ignore[arg-type]
    m = core.members[A]
    assert (m.state, m.incarnation) == expected


def test_unknown_member_is_added_only_by_alive() -> None:
    core = lone()
    core.receive(0.0, "x", Gossip((Suspect(A, 1, B), Dead(C, 1, B))))
    assert core.members == {}
    core.receive(0.0, "x", Gossip((Alive(A, 0, "a:1", {"k": "v"}, 7),)))
    assert core.members[A].state is ALIVE and core.members[A].meta == {"k": "v"}
    events = [a for a in core.actions_to_perform() if isinstance(a, MemberEvent)]
    assert [(e.node, e.prev, e.state) for e in events] == [(A, NodeState.UNKNOWN, ALIVE)]


def test_state_changes_are_queued_for_gossip() -> None:
    core = with_member(ALIVE)
    core.receive(1.0, "x", Gossip((Suspect(A, 5, B),)))

    def queued() -> list[type]:
        return [type(u) for u, _ in core.broadcasts.items() + core.broadcasts_low.items() if u.node == A]

    assert queued() == [Suspect]
    core.receive(1.0, "x", Gossip((Dead(A, 5, B),)))
    assert queued() == [Dead]   # invalidated the suspect


def test_newer_metadata_wins_by_stamp() -> None:
    core = with_member(ALIVE)
    core.receive(1.0, "x", Gossip((Alive(A, 6, "a:1", {"v": 1}, 10),)))
    core.receive(1.0, "x", Gossip((Alive(A, 7, "a:1", {"v": 0}, 9),)))    # older stamp, newer incarnation
    assert core.members[A].meta == {"v": 1}
    assert core.members[A].incarnation == 7
    kinds = [a.kind for a in core.actions_to_perform() if isinstance(a, MemberEvent)]
    assert kinds.count(EVENT_METADATA) == 1


# -- refutation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("accusation", [Suspect, Dead])
def test_node_refutes_accusation_about_itself(accusation: type) -> None:
    core = lone()
    me = core.id
    core.receive(0.0, "x", Gossip((accusation(me, 3, B),)))
    assert core.incarnation == 4                       # skips past the accusation
    alive = [u for u, _ in core.broadcasts.items() if u.node == me]
    assert alive == [Alive(me, 4, "self:1")]
    assert core.health_score() == 1                    # Lifeguard: refuting costs health


def test_old_accusation_is_not_refuted() -> None:
    core = lone()
    core.receive(0.0, "x", Gossip((Suspect(core.id, 0, B),)))
    assert core.incarnation == 1
    core.receive(0.0, "x", Gossip((Suspect(core.id, 0, B),)))
    assert core.incarnation == 1


def test_buddy_ping_makes_suspect_refute_at_once() -> None:
    core = lone()
    core.receive(0.0, "p:1", Ping(7, core.id, "p:1", (), suspect_inc=0))
    assert core.incarnation == 1
    ack = sends(core)[0]
    assert ack.addr == "p:1" and isinstance(ack.msg, Ack) and ack.msg.seq == 7
    assert Alive(core.id, 1, "self:1") in ack.msg.updates  # the refutation rides on the ack


def _refuted_and_gossiped_out() -> Protocol:
    """A lone core that refuted an accusation at incarnation 0 (it is at 1) and whose
    refutation has since been sent its whole retransmit limit (piggybacked on acks)."""
    core = lone()
    core.receive(0.0, "x", Gossip((Suspect(core.id, 0, B),)))
    assert core.incarnation == 1
    for seq in range(100, 120):                        # bounded: the limit is a few sends
        if not core.broadcasts.items():
            break
        core.receive(0.1, "p:1", Ping(seq, core.id, "p:1"))
    assert core.broadcasts.items() == []               # the refutation has left the queue
    core.actions_to_perform()
    return core


def test_buddy_ping_with_a_stale_suspicion_gets_our_alive_back() -> None:
    # The prober suspects us at an incarnation we already refuted: it missed the refutation,
    # whose epidemic is over. Its suspicion would run out and declare us dead; the ack it asked
    # for must carry what it missed (Lifeguard's buddy system: the suspect refutes at once).
    core = _refuted_and_gossiped_out()
    core.receive(1.0, "p:1", Ping(7, core.id, "p:1", (Suspect(core.id, 0, C),), suspect_inc=0))
    assert core.incarnation == 1                       # a stale accusation raises nothing
    ack = sends(core)[0]
    assert isinstance(ack.msg, Ack) and ack.msg.seq == 7
    assert ack.msg.updates == (Alive(core.id, 1, "self:1"),)


def test_a_prober_we_hold_dead_with_a_stale_suspicion_is_told_both() -> None:
    core = _refuted_and_gossiped_out()
    core.receive(1.0, "x", Gossip((Alive(B, 0, "b:1"), Dead(B, 0, C))))
    assert core.members[B].state is DEAD
    core.actions_to_perform()
    core.receive(2.0, "b:1", Ping(8, core.id, "b:1", (), suspect_inc=0), sender=B)
    ack = sends(core)[0]
    assert isinstance(ack.msg, Ack)
    assert Alive(core.id, 1, "self:1") in ack.msg.updates and Dead(B, 0, core.id) in ack.msg.updates


def test_plain_ping_does_not_carry_our_alive() -> None:
    core = _refuted_and_gossiped_out()
    core.receive(1.0, "p:1", Ping(7, core.id, "p:1"))
    ack = sends(core)[0]
    assert isinstance(ack.msg, Ack) and ack.msg.updates == ()


def test_ping_for_another_node_is_not_answered() -> None:
    core = lone()
    core.receive(0.0, "x", Ping(7, A, "p:1"))
    assert sends(core) == []
    assert core.stats["misdirected_pings"] == 1


# -- probing, nacks, awareness -------------------------------------------------------------------

def test_failed_probe_without_nacks_raises_awareness_and_suspects() -> None:
    cfg = Config.lan()
    c = CoreCluster(3, cfg)
    c.down.add(2)                                    # node 2 crashed; node 1 can still answer
    c.cut(0, 1)                                      # ... but node 0 hears nobody: it is the problem
    c.run(0.0)
    core = c.cores[0]
    for _ in range(10):
        c.run(1.0)
    assert core.health_score() > 0
    assert c.state(0, 2) in (SUSPECT, DEAD)


def test_nacks_keep_awareness_healthy_when_target_is_really_down() -> None:
    c = CoreCluster(5)
    c.down.add(4)
    c.run(12.0)
    # Probes of node 4 failed, but helpers answered with nacks: nobody blames itself.
    assert all(c.cores[i].health_score() == 0 for i in range(4))
    assert all(c.state(i, 4) in (SUSPECT, DEAD) for i in range(4))


def test_helper_relays_ack_or_sends_nack() -> None:
    core = lone()
    core.receive(0.0, "x", Gossip((Alive(A, 0, "a:1"),)))
    core.actions_to_perform()
    core.receive(0.0, "req:1", PingReq(42, A, "a:1", "req:1", nack=True))
    ping = sends(core)[0]
    assert ping.addr == "a:1" and isinstance(ping.msg, Ping)
    core.receive(0.1, "a:1", Ack(ping.msg.seq))
    relayed = sends(core)
    assert relayed == [Send("req:1", Ack(42))]
    # Without an answer, a nack goes back after the probe timeout.
    core.receive(1.0, "req:1", PingReq(43, A, "a:1", "req:1", nack=True))
    sends(core)
    core.tick(1.0 + core.config.ping_timeout)
    assert [s for s in sends(core) if isinstance(s.msg, Nack)] == [Send("req:1", Nack(43))]


def test_successful_probe_lowers_awareness() -> None:
    c = CoreCluster(2)
    c.cores[0].awareness.apply_delta(3)
    c.run(10.0)
    assert c.cores[0].health_score() == 0


def test_lifeguard_off_never_changes_awareness() -> None:
    c = CoreCluster(3, Config.lan(lifeguard_enabled=False))
    c.isolate(0)
    c.run(10.0)
    assert c.cores[0].health_score() == 0


# -- suspicion to death ---------------------------------------------------------------------------

def test_suspicion_times_out_to_dead_within_bounds() -> None:
    cfg = Config.lan()
    c = CoreCluster(10, cfg)
    c.down.add(9)
    c.run(60.0)
    assert all(c.state(i, 9) is DEAD for i in range(9))
    deaths = [e.at for _, e in c.events if e.node == c.cores[9].id and e.state is DEAD]
    first_suspect = min(e.at for _, e in c.events if e.node == c.cores[9].id and e.state is SUSPECT)
    low = cfg.suspicion_mult * 1.0 * cfg.health_check_interval   # log10(10) = 1
    assert min(deaths) - first_suspect >= low - 1e-6
    assert min(deaths) - first_suspect <= 6 * low


def test_confirmations_shorten_suspicion_in_core() -> None:
    core = lone()
    peers = [NodeID(int=100 + i) for i in range(9)]
    core.receive(0.0, "x", Gossip(tuple(Alive(p, 0, f"p{i}") for i, p in enumerate(peers))))
    core.receive(0.0, "x", Gossip((Suspect(peers[0], 0, peers[1]),)))
    susp = core.members[peers[0]].suspicion
    assert susp is not None and susp.deadline() == pytest.approx(susp.high)
    core.receive(1.0, "x", Gossip((Suspect(peers[0], 0, peers[2]),)))
    core.receive(1.0, "x", Gossip((Suspect(peers[0], 0, peers[3]),)))
    assert susp.deadline() == pytest.approx(susp.low)
    core.tick(susp.low - 0.01)
    assert core.members[peers[0]].state is SUSPECT
    core.tick(susp.low)
    assert core.members[peers[0]].state is DEAD


# -- push/pull, leave, reclaim, recovery, rejoin --------------------------------------------------

def test_push_pull_merges_and_downgrades_remote_deaths_to_suspicion() -> None:
    core = with_member(ALIVE, inc=2)
    core.receive(1.0, "p:1", PushPull(1, "p:1", (
        MemberState(B, "b:1", ALIVE, 0, {"x": 1}, 3),
        MemberState(A, "a:1", DEAD, 2),
        MemberState(C, "c:1", DEAD, 0),
    )), reliable=True)
    assert core.members[B].state is ALIVE and core.members[B].meta == {"x": 1}
    assert core.members[A].state is SUSPECT           # not dead: a remote verdict is only a suspicion
    assert C not in core.members                      # an unknown dead node is not learnt
    reply = [s for s in sends(core) if isinstance(s.msg, PushPullReply)]
    assert reply and reply[0].addr == "p:1" and reply[0].reliable and reply[0].reply
    assert {s.node for s in reply[0].msg.states} == {core.id, A, B}


def test_full_state_and_join_requests_as_datagrams_are_dropped() -> None:
    # A full-state exchange and a join travel, and are answered, on a connection only: as a
    # datagram they would make us send the whole table to whatever address they name.
    core = with_member(ALIVE, inc=2)
    core.receive(1.0, "p:1", PushPull(1, "p:1", (MemberState(B, "b:1", ALIVE, 0),)))
    core.receive(1.0, "p:1", Join(2, "p:1", (MemberState(B, "b:1", ALIVE, 0),)))
    assert sends(core) == [] and B not in core.members
    assert core.stats["dropped_push_pull_datagram"] == 1
    assert core.stats["dropped_join_datagram"] == 1


def test_push_pull_telling_us_we_are_dead_makes_us_refute() -> None:
    core = lone()
    core.receive(1.0, "p:1", PushPull(1, "p:1", (MemberState(core.id, "self:1", DEAD, 4),)), reliable=True)
    assert core.incarnation == 5


def test_leave_is_seen_then_forgotten() -> None:
    cfg = Config.lan()
    c = CoreCluster(4, cfg)
    c.run(2.0)
    c.cores[3].leave(c.now)
    c.drain_all()
    c.run(0.1)
    assert all(c.state(i, 3) is LEAVING for i in range(3))
    c.down.add(3)
    c.run(cfg.gossip_to_the_dead_time + cfg.recovery_attempt_interval + 1)
    assert all(c.state(i, 3) is NodeState.UNKNOWN for i in range(3))
    assert any(e.kind == EVENT_REMOVED and e.node == c.cores[3].id for _, e in c.events)


def test_conflicting_address_for_a_live_member_is_refused() -> None:
    core = with_member(ALIVE, inc=1)
    core.receive(1.0, "x", Gossip((Alive(A, 2, "elsewhere:1"),)))
    assert core.members[A].addr == "a:1"
    events = [a for a in core.actions_to_perform() if isinstance(a, MemberEvent)]
    assert [(e.kind, e.conflict_addr) for e in events] == [(EVENT_CONFLICT, "elsewhere:1")]


def test_dead_member_id_is_reclaimed_by_a_new_address() -> None:
    core = with_member(DEAD, inc=3)
    core.receive(1.0, "x", Gossip((Alive(A, 0, "new:1"),)))    # a new process, incarnation 0
    m = core.members[A]
    assert (m.state, m.addr) == (ALIVE, "new:1")
    assert m.incarnation > 3


def test_reclaim_waits_for_dead_node_reclaim_time() -> None:
    core = Protocol(Config.lan(dead_node_reclaim_time=60.0), NodeID(int=1), "self:1", random.Random(1), 0.0)
    core.receive(0.0, "x", Gossip((Alive(A, 0, "a:1"), Dead(A, 0, B))))
    core.receive(10.0, "x", Gossip((Alive(A, 1, "new:1"),)))
    assert core.members[A].state is DEAD
    core.receive(61.0, "x", Gossip((Alive(A, 1, "new:1"),)))
    assert core.members[A].state is ALIVE and core.members[A].addr == "new:1"


def test_partition_heals_through_recovery_of_dead_members() -> None:
    cfg = Config.lan()
    c = CoreCluster(6, cfg)
    for a in (0, 1, 2):
        for b in (3, 4, 5):
            c.cut(a, b)
    c.run(90.0)
    assert c.state(0, 4) is DEAD and c.state(4, 0) is DEAD
    c.heal()
    c.run(cfg.recovery_attempt_interval * 3)
    assert all(c.state(i, j) is ALIVE for i in range(6) for j in range(6) if i != j)


def test_isolated_node_rejoins_through_its_join_peers() -> None:
    cfg = Config.lan()
    c = CoreCluster(3, cfg, bootstrap=False)
    c.cores[1].join(c.now, ["n0"])
    c.cores[2].join(c.now, ["n0"])
    c.drain_all()
    c.run(5.0)
    assert all(c.state(i, j) is ALIVE for i in range(3) for j in range(3) if i != j)
    c.isolate(2)
    c.run(80.0)
    assert c.state(2, 0) is DEAD and c.state(2, 1) is DEAD
    assert c.cores[2].counts[ALIVE] + c.cores[2].counts[SUSPECT] == 0
    c.heal()
    c.run(cfg.recovery_attempt_interval * 2)
    assert c.cores[2].stats.get("rejoins", 0) >= 1
    assert all(c.state(i, j) is ALIVE for i in range(3) for j in range(3) if i != j)


# -- join -------------------------------------------------------------------------------------------

def test_join_exchanges_state_and_reports_result() -> None:
    c = CoreCluster(4, bootstrap=False)
    c.cores[1].join(0.0, ["n0"])
    c.drain_all()
    c.run(0.5)
    c.cores[2].join(c.now, ["n0"])
    c.cores[3].join(c.now, ["n1"])
    c.drain_all()
    c.run(3.0)
    assert [(i, r.accepted) for i, r in c.join_results] == [(1, True), (2, True), (3, True)]
    assert all(c.state(i, j) is ALIVE for i in range(4) for j in range(4) if i != j)


def test_join_refused_for_protocol_or_application_version() -> None:
    # The host runs the application's version check (outside its lock) and passes the verdict.
    core = lone()
    joiner = MemberState(A, "a:1", ALIVE, 0)
    core.receive(0.0, "a:1", Join(1, "a:1", (joiner,), PROTOCOL_VERSION + 1, "2.0"), reliable=True, app_version_ok=True)
    core.receive(0.0, "a:1", Join(2, "a:1", (joiner,), PROTOCOL_VERSION, "1.9"), reliable=True, app_version_ok=False)
    core.receive(0.0, "a:1", Join(3, "a:1", (MemberState(core.id, "a:1", ALIVE, 0),), PROTOCOL_VERSION, "2.0"),
                 reliable=True, app_version_ok=True)
    replies = [s.msg for s in sends(core)]
    assert [r.accepted for r in replies] == [False, False, False]   # type: ignore[union-attr]
    assert "protocol version" in replies[0].reason                  # type: ignore[union-attr]
    assert "application version" in replies[1].reason              # type: ignore[union-attr]
    assert "self" in replies[2].reason                              # type: ignore[union-attr]
    assert core.members == {}
    core.receive(0.0, "a:1", Join(4, "a:1", (joiner,), PROTOCOL_VERSION, "2.1"), reliable=True, app_version_ok=True)
    ok = sends(core)[0].msg
    assert isinstance(ok, JoinReply) and ok.accepted and ok.states[0].node == core.id
    assert core.members[A].state is ALIVE


def test_join_without_answer_times_out() -> None:
    core = lone()
    core.join(0.0, ["nobody:1"])
    core.actions_to_perform()
    core.tick(core.config.join_timeout)
    results = [a for a in core.actions_to_perform() if not isinstance(a, (Send, MemberEvent))]
    assert len(results) == 1 and not results[0].accepted and results[0].addr == "nobody:1"


def test_metadata_change_raises_incarnation_and_spreads() -> None:
    c = CoreCluster(3)
    c.cores[0].set_local_metadata(c.now, {"dc": "eu"}, 99)
    c.drain_all()
    c.run(3.0)
    for i in (1, 2):
        m = c.cores[i].members[c.cores[0].id]
        assert m.meta == {"dc": "eu"} and m.meta_stamp == 99 and m.incarnation == 1


def test_same_seed_same_actions() -> None:
    def run() -> tuple[list[str], set[int]]:
        c = CoreCluster(8, seed=5)
        c.down.add(7)
        c.run(30.0)
        dead_seen_by = {i for i, e in c.events if e.node == c.cores[7].id and e.state is DEAD}
        return [f"{i}:{e.at:.6f}{e.node}{e.state}" for i, e in c.events], dead_seen_by

    first, dead_seen_by = run()
    # The run did something: the crash of node 7 was detected by every other node...
    assert dead_seen_by == set(range(7))
    # ... and the same seed gives the same events, in the same order, at the same times.
    assert first == run()[0]


def test_newer_suspicion_of_a_suspect_restarts_the_timer() -> None:
    # We suspect A at incarnation 5; A refutes (6) but we miss its alive message, then hear a new
    # suspicion at 6. The old suspicion must not run on and kill a member that refuted it.
    core = with_member(SUSPECT, inc=5)
    old = core.members[A].suspicion
    assert old is not None
    core.receive(4.0, "x", Gossip((Suspect(A, 6, C),)))
    m = core.members[A]
    assert (m.state, m.incarnation) == (SUSPECT, 6)
    assert m.suspicion is not old and m.suspicion is not None and m.suspicion.start == 4.0
    core.tick(old.deadline() + 0.01)
    assert core.members[A].state is SUSPECT           # the old deadline passed harmlessly


def test_stale_accusation_is_answered_with_the_newer_alive() -> None:
    core = with_member(ALIVE, inc=5)
    core.receive(0.0, "x", Gossip((Alive(B, 0, "b:1"),)))
    core.actions_to_perform()
    core.receive(1.0, "b:1", Gossip((Suspect(A, 4, C),)), sender=B)     # B missed A's refutation
    fixes = [s for s in sends(core) if s.addr == "b:1"]
    assert [f.msg for f in fixes] == [Gossip((Alive(A, 5, "a:1"),))]
    core.receive(1.1, "b:1", Gossip((Suspect(A, 4, C),)), sender=B)     # corrected once only
    assert [s for s in sends(core) if s.addr == "b:1"] == []
    assert core.members[A].state is ALIVE
