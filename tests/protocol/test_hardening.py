"""The core against hostile and faulty peers: bounded incarnations, bounded tables, validated
metadata, nacks in time. Every test feeds the sans-I/O core by hand or through the virtual-time
harness: no sockets, no sleeps."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gossip.config import Config
from gossip.errors import DecodeError
from gossip.messages import (
    MAX_INCARNATION, Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Message, Nack, Ping, PingReq,
    PushPull, PushPullReply, Suspect, from_wire, to_wire,
)
from gossip.node import PROTOCOL_VERSION, NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import Send
from gossip.wire import MessageType

from . import harness
from .harness import A, B, C, CoreCluster, lone, sends

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
TOP = MAX_INCARNATION
JUMP = Config.lan().max_incarnation_jump








def with_member(state: NodeState = ALIVE, inc: int = 5, config: Config | None = None) -> Protocol:
    """As :func:`harness.with_member`, member A introduced by its own host (it showed itself)."""
    return harness.with_member(state, inc, config, src="a:1")


def round_trip(msg: Message) -> Message:
    """What a peer decodes of a message we send (raises DecodeError if it cannot)."""
    mt, value = to_wire(msg)
    return from_wire(mt, value)


def assert_everything_sent_decodes(core: Protocol) -> None:
    # Our own full state and every queued update must stay within the wire's ranges.
    round_trip(PushPullReply(1, core.local_states()))
    round_trip(Gossip(tuple(u for u, _ in core.broadcasts.items() + core.broadcasts_low.items())))
    for s in sends(core):
        round_trip(s.msg)


# -- incarnations: decoder bounds -------------------------------------------------------------

@pytest.mark.parametrize("suspect_inc", [2**64 - 1, 2**32, -2, -(2**63)])
def test_decoder_refuses_a_suspect_incarnation_outside_the_wire_range(suspect_inc: int) -> None:
    with pytest.raises(DecodeError, match="suspect incarnation"):
        from_wire(MessageType.PING, [1, A.bytes, "p:1", [], suspect_inc])


@pytest.mark.parametrize("suspect_inc", [-1, 0, TOP])
def test_decoder_takes_every_suspect_incarnation_in_range(suspect_inc: int) -> None:
    msg = from_wire(MessageType.PING, [1, A.bytes, "p:1", [], suspect_inc])
    assert isinstance(msg, Ping) and msg.suspect_inc == suspect_inc


@pytest.mark.parametrize("msg", [
    Gossip((Suspect(A, TOP + 1, B),)),
    Gossip((Alive(A, TOP + 1, "a:1"),)),
    PushPull(1, "p:1", (MemberState(A, "a:1", ALIVE, TOP + 1),)),
])
def test_decoder_refuses_incarnations_past_u32(msg: Message) -> None:
    with pytest.raises(DecodeError, match="incarnation"):
        round_trip(msg)


# -- incarnations: the core ---------------------------------------------------------------------

def test_forged_suspicion_at_the_top_is_not_refuted_and_we_stay_decodable() -> None:
    core = lone()
    core.receive(0.0, "x", Gossip((Suspect(core.id, 0xFFFFFFFF, B),)))
    assert core.incarnation == 0
    core.receive(0.0, "x", Gossip((Suspect(core.id, JUMP * 10, B),)))
    assert core.incarnation == 0
    assert core.stats["refused_incarnation_jump"] == 2
    core.receive(1.0, "p:1", PushPull(1, "p:1", ()), reliable=True)
    assert_everything_sent_decodes(core)


def test_buddy_ping_with_a_huge_suspect_incarnation_never_raises() -> None:
    core = lone()
    # Past the decoder's range: a host that skipped it must not crash the core either.
    core.receive(0.0, "p:1", Ping(7, core.id, "p:1", (), suspect_inc=2**64 - 1))
    core.receive(0.0, "p:1", Ping(8, core.id, "p:1", (), suspect_inc=TOP))
    assert core.incarnation == 0
    assert [s.msg.seq for s in sends(core) if isinstance(s.msg, Ack)] == [7, 8]
    core.set_local_metadata(1.0, {"k": "v"}, 5)
    core.tick(5.0)
    assert core.incarnation == 1
    assert_everything_sent_decodes(core)


def test_updates_past_the_range_from_an_unchecked_host_are_ignored() -> None:
    core = with_member(ALIVE, 5)
    core.receive(1.0, "x", Gossip((Suspect(A, 2**40, B), Alive(C, 2**33, "c:1"), Suspect(core.id, 2**40, B))))
    core.receive(1.0, "x", PushPull(2, "x", (MemberState(C, "c:1", ALIVE, 2**40),)), reliable=True)
    assert core.members[A].state is ALIVE and C not in core.members and core.incarnation == 0
    assert core.stats["refused_incarnation_range"] == 4
    assert_everything_sent_decodes(core)


def test_accusation_within_the_jump_bound_is_refuted_past_it() -> None:
    core = lone()
    core.receive(0.0, "x", Gossip((Suspect(core.id, JUMP - 1, B),)))
    assert core.incarnation == JUMP          # at most max_incarnation_jump in one step
    core.receive(0.0, "x", Gossip((Suspect(core.id, 2 * JUMP, B),)))
    assert core.incarnation == JUMP          # one more would be a step of JUMP + 1
    assert core.stats["refused_incarnation_jump"] == 1


def test_refutation_stops_at_the_top_and_metadata_still_spreads() -> None:
    core = lone(incarnation=TOP - 1)
    core.receive(0.0, "x", Gossip((Suspect(core.id, TOP - 1, B),)))
    assert core.incarnation == TOP
    core.receive(0.0, "x", Gossip((Suspect(core.id, TOP, B),)))
    assert core.incarnation == TOP
    assert core.stats["incarnation_exhausted"] == 1
    core.set_local_metadata(1.0, {"role": "db"}, 99)
    assert core.incarnation == TOP
    queued = [u for u, _ in core.broadcasts.items() if u.node == core.id]
    assert queued == [Alive(core.id, TOP, "self:1", {"role": "db"}, 99)]
    assert_everything_sent_decodes(core)
    # A peer at the top takes the new metadata by its stamp.
    peer = Protocol(Config.lan(), NodeID(int=2), "peer:1", random.Random(2), 0.0)
    peer.receive(0.0, "self:1", Gossip((Alive(core.id, TOP, "self:1", {}, 1),)))
    peer.receive(1.0, "self:1", Gossip(tuple(queued)))
    assert peer.members[core.id].meta == {"role": "db"}


def test_protocol_refuses_a_starting_incarnation_past_the_wire_range() -> None:
    with pytest.raises(ValueError, match="incarnation"):
        lone(incarnation=TOP + 1)


@pytest.mark.parametrize("update", [
    Suspect(A, 5 + JUMP, B), Dead(A, 5 + JUMP, B), Dead(A, TOP, A), Suspect(A, TOP, B),
    Alive(A, 5 + JUMP + 1, "a:1"), Alive(A, TOP, "a:1"),
])
def test_claims_far_ahead_about_a_live_member_are_refused(update: Any) -> None:
    core = with_member(ALIVE, 5)
    core.receive(1.0, "x", Gossip((update,)))
    m = core.members[A]
    assert (m.state, m.incarnation) == (ALIVE, 5)
    assert core.stats["refused_incarnation_jump"] == 1


@pytest.mark.parametrize("update, expected", [
    (Suspect(A, 5 + JUMP - 1, B), (SUSPECT, 5 + JUMP - 1)),
    (Alive(A, 5 + JUMP, "a:1"), (ALIVE, 5 + JUMP)),        # a refutation of the accusation above
])
def test_claims_within_the_jump_bound_are_taken(update: Any, expected: tuple[NodeState, int]) -> None:
    core = with_member(ALIVE, 5)
    core.receive(1.0, "x", Gossip((update,)))
    m = core.members[A]
    assert (m.state, m.incarnation) == expected


def test_alive_far_ahead_revives_a_member_held_dead() -> None:
    # During a partition the other side moved on; healing must not depend on how far.
    core = with_member(DEAD, 5)
    core.receive(1.0, "a:1", Gossip((Alive(A, 5 + 100 * JUMP, "a:1"),)))
    assert (core.members[A].state, core.members[A].incarnation) == (ALIVE, 5 + 100 * JUMP)


def test_restarted_node_catches_up_through_its_own_join_only() -> None:
    core = lone()
    old = MemberState(core.id, "self:1", ALIVE, 10**6)       # what the previous process reached
    core.receive(0.0, "n0", PushPull(1, "n0", (old,)), reliable=True)        # anyone's push: refused
    assert core.incarnation == 0
    (seq,) = core.join(0.0, ["n0"])
    core.receive(0.1, "n0", JoinReply(seq, True, "", (MemberState(B, "n0", ALIVE, 0), old)))
    assert core.incarnation == 10**6 + 1


def test_reclaiming_an_id_at_the_top_does_not_overflow() -> None:
    core = lone()
    core.receive(0.0, "a:1", Gossip((Alive(A, TOP, "a:1"),)))
    core.receive(0.0, "x", Gossip((Dead(A, TOP, B),)))
    core.receive(1.0, "new:1", Gossip((Alive(A, 0, "new:1"),)))   # a new process takes the id
    assert core.members[A].incarnation <= TOP
    assert_everything_sent_decodes(core)


# -- bounded member tables ------------------------------------------------------------------------

def fakes(n: int, start: int = 1000, state: NodeState = ALIVE) -> tuple[MemberState, ...]:
    return tuple(MemberState(NodeID(int=start + i), f"127.9.{i >> 8 & 255}.{i & 255}:7946", state, 0)
                 for i in range(n))


def test_one_push_pull_with_60000_fake_members_does_not_fill_the_table() -> None:
    core = lone()
    cfg = core.config
    core.receive(0.0, "evil:1", PushPull(1, "evil:1", fakes(60_000)), reliable=True)
    assert len(core.members) == cfg.max_members_per_message
    assert core.stats["refused_members_per_message"] == 60_000 - cfg.max_members_per_message
    assert len(core._table.probe_list) == len(core.members) == len(set(core._table.probe_list))
    reply = [s.msg for s in sends(core) if isinstance(s.msg, PushPullReply)]
    assert len(reply) == 1


def test_join_brings_the_joiner_only() -> None:
    core = lone()
    joiner = MemberState(A, "a:1", ALIVE, 0)
    core.receive(0.0, "a:1", Join(1, "a:1", (joiner,) + fakes(60_000), PROTOCOL_VERSION, ""), reliable=True)
    assert set(core.members) == {A}
    assert core.stats["refused_join_extra_states"] == 1


def test_one_source_cannot_introduce_more_than_its_share() -> None:
    cfg = Config.lan(max_members_per_source=100, max_members_per_message=60)
    core = lone(cfg)
    for k in range(5):   # five messages from one host, on different ports
        core.receive(0.0, f"127.6.6.6:{4000 + k}", PushPull(k, "127.6.6.6:1", fakes(60, start=1000 + 100 * k)), reliable=True)
    assert len(core.members) == 100
    assert core.stats["refused_members_per_source"] == 5 * 60 - 100
    # Relayed news about them is no proof they exist ...
    core.receive(0.0, "127.7.7.7:1", PushPull(9, "127.7.7.7:1", fakes(10, start=1000)), reliable=True)
    assert core._table.unconfirmed == {"127.6.6.6": 100}
    # ... a packet from one of them, from its own host, is; so is an answer to our probe.
    core.receive(0.0, "127.9.0.0:7946", Gossip(()), sender=NodeID(int=1000))
    assert core._table.unconfirmed == {"127.6.6.6": 99}
    core.tick(5.0)
    ping = next(s.msg for s in sends(core) if isinstance(s.msg, Ping))
    core.receive(5.0, "elsewhere:1", Ack(ping.seq))
    confirmed = 1 + (ping.target != NodeID(int=1000))
    assert core._table.unconfirmed == {"127.6.6.6": 100 - confirmed}
    core.receive(6.0, "127.6.6.6:1", PushPull(10, "127.6.6.6:1", fakes(20, start=9000)), reliable=True)
    assert len(core.members) == 100 + confirmed
    assert core._table.unconfirmed == {"127.6.6.6": 100}


def test_the_whole_table_is_bounded_and_dead_members_make_room() -> None:
    cfg = Config.lan(max_members=64, max_members_per_message=64, max_unconfirmed_share=1.0)
    core = lone(cfg)
    for k in range(10):
        core.receive(0.0, f"127.0.0.{k}:1", PushPull(k, f"127.0.0.{k}:1", fakes(50, start=1000 * (k + 1))), reliable=True)
    assert len(core.members) == 64
    assert core.stats["refused_unconfirmed_full"] == 500 - 64
    victim = next(iter(core.members))
    core.receive(1.0, "x", Gossip((Dead(victim, 0, B),)))
    core.receive(2.0, "127.1.1.1:1", Gossip((Alive(A, 0, "a:1"),)))
    assert A in core.members and victim not in core.members and len(core.members) == 64
    assert core.stats["members_evicted"] == 1


def test_replies_to_our_own_requests_are_bounded_by_max_members_only() -> None:
    core = lone()
    (seq,) = core.join(0.0, ["n0"])
    core.receive(0.1, "n0", JoinReply(seq, True, "", fakes(5000)))
    assert len(core.members) == 5000
    assert "refused_members_per_message" not in core.stats


def test_unsolicited_replies_are_ignored() -> None:
    core = lone()
    core.receive(0.0, "evil:1", PushPullReply(77, fakes(10)))
    core.receive(0.0, "evil:1", JoinReply(78, True, "", fakes(10)))
    assert core.members == {}
    assert core.stats["refused_unsolicited_reply"] == 2


def test_our_push_pull_reply_is_merged_as_solicited() -> None:
    c = CoreCluster(2)
    c.cores[1].bootstrap(0.0, fakes(2000))          # node 1 knows many more members
    c.run(c.config.state_sync_interval * 1.01 + 1)
    assert c.cores[0].stats["push_pulls"] >= 1
    live = {m.node for m in c.cores[1].members.values() if m.state is ALIVE}
    assert live - {c.cores[0].id} <= set(c.cores[0].members)   # all of it, through our own push/pull


def test_fake_members_never_vouched_for_are_forgotten_soon_after_their_death() -> None:
    cfg = Config.lan()
    c = CoreCluster(3, cfg)
    c.deliver(0, Gossip(tuple(Alive(NodeID(int=500 + i), 0, f"nowhere{i}") for i in range(5))), src=None)
    assert len(c.cores[0].members) == 7
    c.run(60.0 + cfg.gossip_to_the_dead_time + cfg.recovery_attempt_interval)
    # Probed, found dead, and forgotten: no four-hour stay.
    assert set(c.cores[0].members) == {c.cores[1].id, c.cores[2].id}


def test_newcomers_go_to_random_places_of_the_probe_order() -> None:
    positions = set()
    for seed in range(20):
        core = Protocol(Config.lan(), NodeID(int=1), "self:1", random.Random(seed), 0.0)
        core.bootstrap(0.0, fakes(50))
        core.receive(0.0, "a:1", Gossip((Alive(A, 0, "a:1"),)))
        assert sorted(core._table.probe_list) == sorted(core.members)
        positions.add(core._table.probe_list.index(A))
    assert len(positions) > 10


# -- metadata from peers ---------------------------------------------------------------------------

def deep(n: int) -> Any:
    value: Any = "x"
    for _ in range(n):
        value = {"k": value}
    return value


@pytest.mark.parametrize("meta", [
    deep(300), {"k": [1, 2]}, {"k": b"raw"}, {"k": None}, {"": "empty key"}, {"x" * 256: "long key"},
    {"k": float("nan")}, {"k": float("inf")}, {"k": 2**64}, {"k": "v" * 70_000}, {1: "int key"},
])
def test_decoder_refuses_metadata_of_the_wrong_shape(meta: Any) -> None:
    value = [[0, A.bytes, 1, "a:1", meta, 1, PROTOCOL_VERSION, ""]]
    with pytest.raises(DecodeError, match="metadata"):
        from_wire(MessageType.GOSSIP, [value])


def test_decoder_takes_metadata_local_writes_produce() -> None:
    meta = {"s": "v", "b": True, "i": -(2**63), "u": 2**64 - 1, "f": 1.5}
    msg = round_trip(Gossip((Alive(A, 1, "a:1", meta, 3),)))
    assert isinstance(msg, Gossip) and msg.updates[0].meta == meta  # type: ignore[union-attr]


def test_oversize_metadata_from_a_peer_is_dropped_and_its_liveness_kept() -> None:
    core = with_member(ALIVE, 5)
    big = {"blob": "x" * 2000}
    core.receive(1.0, "a:1", Gossip((Alive(A, 6, "a:1", big, 50),)))
    m = core.members[A]
    assert (m.incarnation, m.meta, m.meta_stamp) == (6, {}, 0)
    core.receive(1.0, "p:1", PushPull(1, "p:1", (MemberState(B, "b:1", ALIVE, 0, big, 9),)), reliable=True)
    assert core.members[B].meta == {}
    assert core.stats["refused_metadata_size"] == 2
    queued = core.broadcasts.items() + core.broadcasts_low.items()
    assert {u.node for u, _ in queued if isinstance(u, Alive)} == {A, B}
    assert all(len(dict(u.meta)) == 0 for u, _ in queued if isinstance(u, Alive))


def wakeups(core: Protocol, now: float, seconds: float) -> int:
    n, end = 0, now + seconds
    while core.next_deadline() <= end:
        core.tick(core.next_deadline())
        core.actions_to_perform()
        n += 1
    return n


def test_an_update_that_cannot_fit_a_datagram_never_sits_in_the_queue() -> None:
    core = with_member(ALIVE, 5)
    wakeups(core, 0.0, 30.0)                          # let the queue drain
    big = Alive(B, 0, "b" * 1020 + ":1", {"m": "x" * 400}, 1)   # within every decoder bound ...
    round_trip(Gossip((big,)))
    core.receive(40.0, "x", Gossip((big,)))                     # ... but too large to gossip
    assert core.stats["refused_broadcast_oversize"] == 1
    assert all(u.node != B for u, _ in core.broadcasts.items() + core.broadcasts_low.items())
    # An idle node wakes for its probes, not five times a second for an unsendable update.
    assert wakeups(core, 40.0, 10.0) <= 25


def test_news_only_about_the_one_peer_does_not_keep_the_gossip_timer_running() -> None:
    c = CoreCluster(2)
    c.run(30.0)
    c.cores[0].receive(c.now, "n1", Gossip((Alive(c.cores[1].id, 1, "n1"),)))   # news about n1 itself
    assert len(c.cores[0].broadcasts) == 1
    assert wakeups(c.cores[0], c.now, 10.0) <= 25


# -- nacks ------------------------------------------------------------------------------------------

def helper_with_target() -> Protocol:
    core = lone()
    core.receive(0.0, "a:1", Gossip((Alive(A, 0, "a:1"),)))
    core.actions_to_perform()
    return core


@pytest.mark.parametrize("window", [0.5, 1.5, 3.5])
def test_helper_nacks_within_the_window_the_requester_names(window: float) -> None:
    core = helper_with_target()
    core.receive(1.0, "req:1", PingReq(43, A, "a:1", "req:1", True, window))
    sends(core)
    nack_at = None
    t = 1.0
    while t < 1.0 + window:
        t += 0.01
        core.tick(t)
        if any(isinstance(s.msg, Nack) for s in sends(core)):
            nack_at = t
            break
    assert nack_at is not None and nack_at - 1.0 <= 0.85 * window


def test_helper_without_a_named_window_nacks_within_its_own_configuration() -> None:
    core = helper_with_target()
    cfg = core.config
    core.receive(1.0, "req:1", PingReq(43, A, "a:1", "req:1", True))
    sends(core)
    core.tick(1.0 + 0.8 * (cfg.health_check_interval - cfg.ping_timeout))
    assert [s.msg for s in sends(core) if isinstance(s.msg, Nack)] == [Nack(43)]


def test_ping_req_for_an_unknown_target_is_not_relayed() -> None:
    core = lone()
    core.receive(0.0, "req:1", PingReq(9, A, "victim:80", "req:1", True, 0.5))
    out = sends(core)
    assert [s.msg for s in out] == [Nack(9)]           # told at once; nobody else pinged
    assert core.stats["refused_ping_req_target"] == 1


def test_pending_relays_are_bounded() -> None:
    core = helper_with_target()
    cfg = core.config
    for i in range(cfg.max_pending_relays + 50):
        core.receive(0.0, f"req{i}:1", PingReq(i, A, "a:1", f"req{i}:1", True, 0.5))
    assert len(core._probe.relays) == cfg.max_pending_relays
    assert core.stats["refused_relays_full"] == 50


@pytest.mark.parametrize("config", [Config.lan(), Config.wan(), Config.local()], ids=["lan", "wan", "local"])
def test_healthy_probers_of_a_dead_node_never_blame_themselves(config: Config) -> None:
    c = CoreCluster(5, config)
    c.down.add(4)
    worst = 0
    for _ in range(int(20 * config.health_check_interval / 0.05)):
        c.run(0.05)
        worst = max(worst, *(c.cores[i].health_score() for i in range(4)))
    assert worst == 0                                # checked during the run, not after decay
    assert all(c.state(i, 4) in (SUSPECT, DEAD) for i in range(4))


def test_degraded_prober_still_gets_its_nacks_in_time() -> None:
    c = CoreCluster(5)
    c.down.add(4)
    prober = c.cores[0]
    prober.awareness.apply_delta(3)                  # probes stretched to 4 s, timeouts to 2 s
    c.run(prober.config.health_check_interval * 4 * 6)
    assert prober.stats.get("failed_probes", 0) >= 1
    assert prober.health_score() <= 3                # missed nacks would have raised it


# -- leave ------------------------------------------------------------------------------------------

def test_leave_is_repeated_to_members_that_do_not_acknowledge_it() -> None:
    core = lone()
    core.bootstrap(0.0, [MemberState(A, "a:1", ALIVE, 0), MemberState(B, "b:1", ALIVE, 0)])
    core.leave(1.0)
    first = {s.addr: s.msg for s in sends(core) if isinstance(s.msg, Ping)}
    assert set(first) == {"a:1", "b:1"}
    assert all(Dead(core.id, 0, core.id) in p.updates for p in first.values())  # type: ignore[union-attr]
    core.receive(1.001, "a:1", Ack(first["a:1"].seq))             # type: ignore[union-attr]
    assert core.leave_pending()
    interval = min(core.config.ping_timeout, core.config.dissemination_interval)
    retried: list[str] = []
    t = 1.0
    for _ in range(10):
        t += interval
        core.tick(t)
        retried += [s.addr for s in sends(core) if isinstance(s.msg, Ping)]
    assert retried == ["b:1"] * (core.config.leave_attempts - 1)   # only the silent one, and bounded
    assert not core.leave_pending()
    assert core.stats["leave_unacknowledged"] == 1


def test_a_leaving_node_answers_probes_with_its_leave() -> None:
    core = lone()
    core.bootstrap(0.0, [MemberState(A, "a:1", ALIVE, 0)])
    core.leave(1.0)
    sends(core)
    core.receive(1.5, "a:1", Ping(9, core.id, "a:1"), sender=A)
    (ack,) = [s.msg for s in sends(core) if isinstance(s.msg, Ack)]
    assert Dead(core.id, 0, core.id) in ack.updates


def test_a_peer_that_missed_a_leave_and_suspects_the_leaver_is_told() -> None:
    core = with_member(ALIVE, 5)
    core.receive(0.0, "b:1", Gossip((Alive(B, 0, "b:1"),)))
    core.receive(1.0, "a:1", Gossip((Dead(A, 5, A),)))            # A left
    sends(core)
    core.receive(9.0, "b:1", Gossip((Suspect(A, 5, B),)), sender=B)   # B missed it
    fixes = [s.msg for s in sends(core) if s.addr == "b:1"]
    assert fixes == [Gossip((Dead(A, 5, A),))]
    core.receive(9.1, "b:1", Gossip((Suspect(A, 5, B),)), sender=B)   # told once
    assert [s for s in sends(core) if s.addr == "b:1"] == []


def test_a_member_introducing_itself_is_admitted_past_its_hosts_share() -> None:
    cfg = Config.lan(max_members_per_source=10, max_members_per_message=10)
    core = lone(cfg)
    core.receive(0.0, "127.6.6.6:1", PushPull(1, "127.6.6.6:1", fakes(10)), reliable=True)   # the host's share is used up
    joiner = MemberState(A, "127.6.6.6:7946", ALIVE, 0)
    core.receive(0.0, "127.6.6.6:50000", Join(2, "127.6.6.6:7946", (joiner,), PROTOCOL_VERSION, ""), sender=A, reliable=True)
    assert core.members[A].introducer is None
    (reply,) = [s.msg for s in sends(core) if isinstance(s.msg, JoinReply)]
    assert reply.accepted


def test_a_joiner_the_table_cannot_take_is_refused_not_accepted() -> None:
    # A table full of members that showed themselves has no room; one full of members nobody
    # showed to exist would (see test_attacks.py).
    cfg = Config.lan(max_members=16, max_members_per_message=16)
    core = lone(cfg)
    core.bootstrap(0.0, fakes(16))
    sends(core)
    core.receive(0.0, "a:1", Join(2, "a:1", (MemberState(A, "a:1", ALIVE, 0),), PROTOCOL_VERSION, ""), sender=A, reliable=True)
    (reply,) = [s.msg for s in sends(core) if isinstance(s.msg, JoinReply)]
    assert not reply.accepted and "member table" in reply.reason
    assert A not in core.members
