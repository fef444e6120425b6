"""The core against forged claims and strangers: the climb of our own incarnation is bounded in
time, answers go to where a packet came from, strangers' addresses are not dialed, forged
leaves are checked with the leaver, metadata stamps are bounded by our clock, and strangers
cannot fill the member table. Every test feeds the sans-I/O core by hand or through the
virtual-time harness: no sockets, no sleeps. The same attacks over real sockets are in
tests/integration/test_attacks_core.py.
"""

from __future__ import annotations

from gossip.config import Config
from gossip.hlc import COUNTER_BITS, MAX_TIMESTAMP
from gossip.messages import (
    Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Nack, Ping, PingReq, PushPullReply, Suspect,
)
from gossip.node import PROTOCOL_VERSION, NodeID, NodeState
from gossip.protocol import Protocol
from gossip.protocol.actions import Send

from . import harness
from .harness import A, B, CoreCluster, lone, sends

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
STRANGER = NodeID(int=0xBAD)
WS_FAKE = "ws://127.0.0.66:8123/gossip"


# -- 1. forged incarnations: the climb is bounded per message and per unit of time ---------------

def test_one_message_of_escalating_accusations_raises_us_once() -> None:
    core = lone()
    step = 3000   # each accusation within max_incarnation_jump of the one before
    core.receive(0.0, "127.0.0.9:1", Gossip(tuple(Suspect(core.id, i * step, STRANGER) for i in range(1, 401))),
                 STRANGER)
    # Only the first is within reach of our incarnation, and we refute once: 3001, not 1.2 M.
    assert core.incarnation == step + 1
    assert core.stats["refutations"] == 1
    assert core.stats["refused_incarnation_jump"] == 399


def test_a_stream_of_accusations_climbs_no_faster_than_the_budget() -> None:
    core = lone()
    now = 0.0
    for _ in range(240):        # one forged accusation every 0.25 s for a minute
        core.receive(now, "127.0.0.9:1", Gossip((Suspect(core.id, core.incarnation + 4000, STRANGER),)), STRANGER)
        now += 0.25
    bound = 4096 * (1 + now / 60.0)             # the default budget: 4096 per 60 s
    assert core.incarnation <= bound            # about 8 k, where each message used to add 4 k
    assert core.stats["refused_incarnation_budget"] > 0


def test_a_spent_budget_still_refutes_an_accusation_at_our_incarnation_soon_after() -> None:
    core = lone(Config.lan(incarnation_budget=100, incarnation_budget_window=10.0, max_incarnation_jump=90))
    core.receive(0.0, "x:1", Gossip((Suspect(core.id, 89, STRANGER),)), STRANGER)   # costs 90 of 100
    core.receive(0.0, "x:1", Gossip((Suspect(core.id, 170, STRANGER),)), STRANGER)  # 81 more: 10 left
    assert core.incarnation == 100 and core.stats["refused_incarnation_budget"] == 1
    core.receive(0.0, "x:1", Gossip((Suspect(core.id, 100, STRANGER),)), STRANGER)
    assert core.incarnation == 100 and core.stats["refused_incarnation_budget"] == 2
    # 0.1 s refills one incarnation: an honest accusation is refuted again at once.
    core.receive(0.1, "x:1", Gossip((Suspect(core.id, 100, B),)), B)
    assert core.incarnation == 101


def test_a_members_own_alive_that_jumped_is_taken_from_it_and_only_from_it() -> None:
    core = harness.with_member(inc=5, src="a:1")          # A at a:1, 5
    jump = core.config.max_incarnation_jump
    core.receive(1.0, "x:1", Gossip((Alive(A, 5 + jump + 50, "a:1"),)), B)
    assert core.members[A].incarnation == 5 and core.stats["refused_incarnation_jump"] == 1
    core.receive(1.0, "a:1", Gossip((Alive(A, 5 + jump + 50, "a:1"),)), A)
    assert core.members[A].incarnation == 5 + jump + 50


def test_the_answer_to_our_own_join_may_still_catch_us_up() -> None:
    core = lone()
    (seq,) = core.join(0.0, ["n0:1"])
    me = MemberState(core.id, core.addr, ALIVE, 90_000)
    core.receive(0.1, "n0:1", JoinReply(seq, True, "", (MemberState(B, "n0:1", ALIVE, 0), me)), B, True)
    assert core.incarnation == 90_001


# -- 2, 23. answers go to the source; strangers' addresses are never dialed ---------------------

def test_a_ping_is_answered_at_its_source_not_at_the_address_it_names() -> None:
    core = lone()
    for named in (WS_FAKE, "127.0.0.77:9"):            # a URL to dial, a third party to hit
        core.receive(0.0, "127.0.0.9:4000", Ping(7, core.id, named), STRANGER)
        (ack,) = sends(core)
        assert isinstance(ack.msg, Ack) and ack.addr == "127.0.0.9:4000" and not ack.reliable


def test_a_member_that_showed_itself_is_answered_at_its_own_address() -> None:
    core = lone()
    core.bootstrap(0.0, [MemberState(A, "127.0.0.5:7946", ALIVE, 0)])
    core.receive(0.0, "127.0.0.5:40000", Ping(7, core.id, "127.0.0.5:7946"), A)
    assert [s.addr for s in sends(core)] == ["127.0.0.5:7946"]
    # The same claim from anyone else is answered at its source.
    core.receive(0.0, "127.0.0.9:1", Ping(8, core.id, "127.0.0.5:7946"), STRANGER)
    assert [s.addr for s in sends(core)] == ["127.0.0.9:1"]


def test_a_ping_on_a_connection_is_answered_on_it() -> None:
    core = lone()
    core.receive(0.0, "127.0.0.9:50123", Ping(7, core.id, WS_FAKE), STRANGER, reliable=True)
    (ack,) = sends(core)
    assert ack.reply and ack.addr == "127.0.0.9:50123"


def test_ping_req_answers_go_to_the_requester_source() -> None:
    core = lone()
    core.receive(0.0, "127.0.0.9:1", PingReq(3, A, "a:1", WS_FAKE, True), STRANGER)
    (nack,) = sends(core)
    assert isinstance(nack.msg, Nack) and nack.addr == "127.0.0.9:1"
    # On a connection, only a member that showed itself is served (its answer comes later).
    core.receive(0.0, "127.0.0.9:50000", PingReq(4, A, "a:1", WS_FAKE, True), STRANGER, reliable=True)
    assert sends(core) == [] and core.stats["refused_ping_req_requester"] == 1


def _sends_to(core: Protocol, addr: str, seconds: float, start: float = 0.0) -> list[Send]:
    out = []
    t = start
    while t < start + seconds:
        t += 0.05
        core.tick(t)
        out += [s for s in sends(core) if s.addr == addr]
    return out


def test_a_fake_member_at_a_websocket_url_is_never_dialed() -> None:
    core = lone()
    core.bootstrap(0.0, [MemberState(NodeID(int=100 + i), f"127.0.0.{10 + i}:7946", ALIVE, 0) for i in range(3)])
    fake = NodeID(int=0xFA4E)
    core.receive(0.0, "127.0.0.9:1", Gossip((Alive(fake, 0, WS_FAKE), Suspect(fake, 0, STRANGER))), STRANGER)
    assert fake in core.members
    cfg = core.config
    # Probe rounds, gossip rounds, state exchanges: nothing goes to the URL.
    assert _sends_to(core, WS_FAKE, 2 * cfg.state_sync_interval) == []
    assert core.stats["skipped_unproven_dials"] > 0
    core.leave(100.0)
    assert [s for s in sends(core) if s.addr == WS_FAKE] == []


def test_a_websocket_member_is_dialed_once_it_shows_itself() -> None:
    core = lone()
    fake = NodeID(int=0xFA4E)
    core.receive(0.0, "127.0.0.9:1", Gossip((Alive(fake, 0, WS_FAKE),)), STRANGER)
    core.receive(0.1, "127.0.0.66:51000", Gossip(()), fake)          # it speaks from its host
    assert any(s.addr == WS_FAKE for s in _sends_to(core, WS_FAKE, 3.0, 0.1))


def test_news_in_a_sealed_packet_may_be_dialed() -> None:
    core = lone()
    fake = NodeID(int=0xFA4E)
    core.receive(0.0, "127.0.0.9:1", Gossip((Alive(fake, 0, WS_FAKE),)), STRANGER, authenticated=True)
    assert any(s.addr == WS_FAKE for s in _sends_to(core, WS_FAKE, 3.0))


def test_a_member_moved_to_a_new_address_by_a_stranger_is_not_dialed_there() -> None:
    core = lone(Config.lan(dead_node_reclaim_time=0.0))
    core.bootstrap(0.0, [MemberState(A, "127.0.0.5:7946", ALIVE, 3)])
    core.receive(0.0, "127.0.0.9:1", Gossip((Dead(A, 3, B),)), B)
    core.receive(0.1, "127.0.0.9:1", Gossip((Alive(A, 4, WS_FAKE),)), STRANGER)
    assert core.members[A].addr == WS_FAKE and core.members[A].introducer == "127.0.0.9"
    assert _sends_to(core, WS_FAKE, 3.0, 0.1) == []


# -- 7. a forged leave is an accusation: the leaver hears of it at once ---------------------------

def test_a_forged_leave_is_refuted_within_one_round_trip() -> None:
    c = CoreCluster(3)
    c.run(2.0)
    victim = c.cores[1]
    inc = victim.incarnation
    c.deliver(0, Gossip((Dead(victim.id, inc, victim.id),)), sender=STRANGER)
    assert c.state(0, 1) is LEAVING
    c.run(0.01)                  # one round trip (latency 1 ms each way)
    assert c.state(0, 1) is ALIVE and victim.incarnation == inc + 1
    assert c.cores[0].stats["leaves_checked"] == 1


def test_a_real_leave_is_not_questioned() -> None:
    c = CoreCluster(3)
    c.run(2.0)
    c.cores[1].leave(c.now)
    c._drain(1)
    c.run(0.5)
    assert c.state(0, 1) is LEAVING and c.state(2, 1) is LEAVING
    assert "leaves_checked" not in c.cores[0].stats


# -- 8. metadata stamps are bounded by our clock; a node reasserts its own -----------------------

NOW_STAMP = 1 << 60


def _clocked(**kw: object) -> Protocol:
    return Protocol(Config.lan(), NodeID(int=1), "self:1", harness.random.Random(1), 0.0,
                    stamp_clock=lambda: NOW_STAMP, **kw)   # type: ignore[arg-type]


def test_a_metadata_stamp_far_ahead_of_our_clock_is_refused() -> None:
    core = _clocked()
    core.receive(0.0, "a:1", Gossip((Alive(A, 1, "a:1", {"role": "db"}, NOW_STAMP - 5),)), A)
    drift = int(core.config.max_clock_drift * 1_000_000) << COUNTER_BITS
    for stamp in (NOW_STAMP + drift + 1, MAX_TIMESTAMP):
        core.receive(0.0, "x:1", Gossip((Alive(A, 2, "a:1", {"role": "evil"}, stamp),)), STRANGER)
        assert dict(core.members[A].meta) == {"role": "db"} and core.members[A].meta_stamp == NOW_STAMP - 5
    assert core.stats["refused_metadata_stamp"] == 2
    assert core.members[A].incarnation == 2       # liveness news is kept
    core.receive(0.0, "x:1", Gossip((Alive(A, 3, "a:1", {"role": "web"}, NOW_STAMP + drift),)), STRANGER)
    assert dict(core.members[A].meta) == {"role": "web"}


def test_a_node_reasserts_its_metadata_above_a_newer_stamp_of_its_own_record() -> None:
    core = _clocked(meta={"role": "db"}, meta_stamp=NOW_STAMP - 100)
    forged = NOW_STAMP + 1000
    core.receive(0.0, "x:1", Gossip((Alive(core.id, 0, core.addr, {"role": "evil"}, forged),)), STRANGER)
    assert core.meta_stamp == forged + 1 and dict(core.meta) == {"role": "db"} and core.incarnation == 1
    mine = [u for u, _ in core.broadcasts.items() if u.node == core.id]
    assert mine == [Alive(core.id, 1, core.addr, {"role": "db"}, forged + 1)]
    # The same in a state exchange, and a later local write stays above.
    core.receive(0.0, "x:1", PushPullReply(0, (MemberState(core.id, core.addr, ALIVE, 1, {}, forged + 50),)))
    core.set_local_metadata(1.0, {"role": "db2"}, NOW_STAMP)
    assert core.meta_stamp > forged + 1


def test_peers_take_the_reasserted_metadata_back() -> None:
    c = CoreCluster(3)
    c.run(2.0)
    owner = c.cores[1]
    owner.set_local_metadata(c.now, {"role": "db"}, 100)
    c._drain(1)
    c.run(2.0)
    forged = Alive(owner.id, owner.incarnation, owner.addr, {"role": "evil"}, 10_000)
    for i in (0, 2, 1):
        c.deliver(i, Gossip((forged,)), sender=STRANGER)
    c.run(2.0)
    assert all(dict(core.members[owner.id].meta) == {"role": "db"} for core in (c.cores[0], c.cores[2]))


# -- 13. strangers cannot fill the member table; joins always find room ---------------------------

def _fake_alives(n: int, start: int) -> Gossip:
    return Gossip(tuple(Alive(NodeID(int=start + i), 0, f"127.0.50.{i % 250}:7") for i in range(n)))


def test_strangers_fill_at_most_their_share_of_the_table_and_joins_still_get_in() -> None:
    cfg = Config.lan(max_members=40, max_members_per_message=40, max_members_per_source=9)
    core = lone(cfg)
    for k in range(7):                                  # 7 source hosts x 9 fakes = 63 > 40
        core.receive(0.0, f"127.0.1.{k}:1", _fake_alives(9, 1000 * (k + 1)), NodeID(int=500 + k))
    assert len(core.members) <= 20 and core.sizes()["unconfirmed"] <= 20
    assert core.stats["refused_unconfirmed_full"] > 0
    core.receive(1.0, "127.0.0.5:40000", Join(9, "127.0.0.5:7946", (MemberState(A, "127.0.0.5:7946", ALIVE, 0),),
                                              PROTOCOL_VERSION, ""), A, True)
    (reply,) = [s.msg for s in sends(core) if isinstance(s.msg, JoinReply)]
    assert reply.accepted and A in core.members


def test_a_full_table_of_strangers_gives_way_to_a_joiner() -> None:
    cfg = Config.lan(max_members=24, max_members_per_message=24, max_members_per_source=24,
                     max_unconfirmed_share=1.0)
    core = lone(cfg)
    core.receive(0.0, "127.0.1.1:1", _fake_alives(24, 1000), STRANGER)
    assert len(core.members) == 24
    core.receive(1.0, "127.0.0.5:40000", Join(9, "127.0.0.5:7946", (MemberState(A, "127.0.0.5:7946", ALIVE, 0),),
                                              PROTOCOL_VERSION, ""), A, True)
    (reply,) = [s.msg for s in sends(core) if isinstance(s.msg, JoinReply)]
    assert reply.accepted and A in core.members and len(core.members) == 24
    assert core.stats["members_evicted_unconfirmed"] == 1


def test_the_peer_we_joined_through_has_shown_itself_at_the_address_we_dialed() -> None:
    core = lone()
    (seq,) = core.join(0.0, [WS_FAKE])
    seed = MemberState(A, WS_FAKE, ALIVE, 0)
    other = MemberState(B, "ws://127.0.0.67:8123/gossip", ALIVE, 0)
    core.receive(0.1, "127.0.0.66:50000", JoinReply(seq, True, "", (seed, other)), A, True)
    assert core.members[A].introducer is None          # it answered where we dialed it
    assert core.members[B].introducer is not None      # the one it named has yet to show itself


def test_news_from_a_member_is_dialed_but_not_a_stranger_borrowing_its_id() -> None:
    core = lone()
    core.bootstrap(0.0, [MemberState(A, "127.0.0.5:7946", ALIVE, 0)])
    fake, other = NodeID(int=0xFA4E), NodeID(int=0xFA4F)
    other_ws = "ws://127.0.0.67:8123/gossip"
    core.receive(0.0, "127.0.0.9:1", Gossip((Alive(fake, 0, WS_FAKE),)), A)      # A's id, not A's host
    core.receive(0.0, "127.0.0.5:7946", Gossip((Alive(other, 0, other_ws),)), A)  # A itself
    assert not core.members[fake].vouched and core.members[other].vouched
    sends(core)
    out: set[str] = set()
    t = 0.0
    while t < 5.0:
        t += 0.05
        core.tick(t)
        out |= {s.addr for s in sends(core)}
    assert other_ws in out and WS_FAKE not in out
