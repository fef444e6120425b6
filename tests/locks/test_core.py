"""The lock service's core, driven by hand: grants, hand-overs, leader changes, partitions,
crashed holders, tokens. No election, no sockets, no wall clock (tests/locks/harness.py)."""

from __future__ import annotations

import pytest

from gossip.errors import ConfigError
from gossip.locks import LockConfig, TooManyRequests
from gossip.locks.base import Answered, Failed, Granted, Renewed
from gossip.locks.grantor import GrantorState
from gossip.locks.messages import Accept, Ballot, FencingToken, Record, Reply
from gossip.node import NodeID

from .harness import LockNet


def test_a_grant_is_stored_by_a_quorum_before_it_is_answered() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    net.deliver()
    assert net.nodes["a"].core.grantor.state is GrantorState.ACTIVE
    net.partition("a", "bc")                      # a alone: it cannot store anything
    h = net.acquire("b", "x")
    net.advance(1.0)
    assert net.granted("b", h) is None
    hc = net.acquire("a", "y")                    # a's own request: no quorum either
    net.advance(1.0)
    assert net.granted("a", hc) is None and net.issued() == []
    net.heal()
    net.advance(0.5)
    g = net.granted("b", h)
    assert g is not None and g.name == "x" and g.token.term == 1
    for n in "abc":                                # every replica holds the record
        rec = net.nodes[n].core.replica.records["x"]
        assert rec.holder == net.id("b") and rec.token == g.token


def test_one_holder_at_a_time_and_a_release_hands_over_at_once() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    hb = net.acquire("b", "x")
    gb = net.granted("b", hb)
    assert gb is not None
    hc = net.acquire("c", "x", timeout=60.0)
    net.advance(2.0)
    assert net.granted("c", hc) is None           # busy: b holds it
    net.release("b", hb)
    gc = net.granted("c", hc)                     # woken by the leader, no retry wait
    assert gc is not None and gc.token > gb.token


def test_a_minority_side_never_grants() -> None:
    net = LockNet("abcde")
    net.elect("a", term=1)
    net.deliver()
    net.partition("ab", "cde")
    before = len(net.issued())
    handles = [net.acquire("b", f"lock-{i}", timeout=5.0) for i in range(5)]
    net.advance(10.0)                              # a still believes it leads
    assert len(net.issued()) == before
    for h in handles:
        out = net.outcome("b", h)
        assert isinstance(out, Failed) and out.reason == "timeout"
    assert net.nodes["a"].core.stats.get("writes_timed_out", 0) >= 5


def test_a_new_leader_waits_out_a_lease_it_cannot_confirm() -> None:
    net = LockNet("abcde")
    net.elect("a", term=1)
    he = net.acquire("e", "x", ttl=5.0)
    ge = net.granted("e", he)
    assert ge is not None
    net.crash("a")
    net.partition("abcd", "e")                    # the holder is cut off: it cannot renew
    net.elect("b", term=2)
    net.deliver()
    recovered_at = net.now
    assert net.nodes["b"].core.grantor.state is GrantorState.ACTIVE
    hd = net.acquire("d", "x", timeout=60.0)
    net.advance(4.9)
    assert net.granted("d", hd) is None           # e's lease may still be live
    net.advance(1.0)
    gd = net.granted("d", hd)
    assert gd is not None and gd.token > ge.token
    # ... and e's lease had ended on e's own clock before d's began.
    assert ge.expires < recovered_at + 5.0 <= net.now
    assert net.nodes["b"].core.stats["leases_waited_out"] == 1


def test_a_holder_that_renews_keeps_its_lock_across_a_leader_change() -> None:
    net = LockNet("abcde")
    net.elect("a", term=1)
    hc = net.acquire("c", "x", ttl=3.0)
    gc = net.granted("c", hc)
    assert gc is not None
    net.crash("a")
    net.elect("b", term=2)
    net.deliver()
    hd = net.acquire("d", "x", timeout=60.0)
    for _ in range(4):                             # c renews for 8 s: longer than the ttl
        net.advance(2.0)
        assert net.renew("c", hc, ttl=3.0)
        net.deliver()
        assert isinstance(net.outcome("c", hc), Renewed)
    assert net.granted("d", hd) is None
    assert net.nodes["b"].core.stats["leases_confirmed"] >= 1
    net.release("c", hc)
    gd = net.granted("d", hd)
    assert gd is not None and gd.token > gc.token and gd.token.term == 2


def test_tokens_strictly_increase_across_leader_changes() -> None:
    net = LockNet("abc")
    tokens: list[FencingToken] = []
    for term, leader in enumerate("abcab", start=1):
        net.elect(leader, term=term)
        net.deliver()
        for client in "abc":
            h = net.acquire(client, "x")
            g = net.granted(client, h)
            assert g is not None, (leader, client)
            tokens.append(g.token)
            net.release(client, h)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert tokens[-1].term == 5


def test_two_leaders_of_one_term_cannot_both_grant() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    hc = net.acquire("c", "x", ttl=5.0)
    gc = net.granted("c", hc)
    assert gc is not None
    # b also believes it leads term 1 (the election's view lagging): its ballot (1, 0, b)
    # outranks a's (1, 0, a), the replicas follow b, and a's writes are refused.
    b = net.nodes["b"]
    net.set_view("b", leader=net.id("b"), leading=True)
    assert b.core.grantor.state is GrantorState.ACTIVE
    assert b.core.grantor.ballot > net.nodes["a"].core.grantor.ballot
    ha = net.acquire("a", "y")                     # a still thinks it leads: refused by the replicas
    net.advance(0.5)
    assert net.granted("a", ha) is None
    assert net.nodes["a"].core.stats["preempted"] == 1
    hd = net.acquire("b", "x", timeout=30.0)       # b must wait out c's lease, then go above its token
    net.advance(4.0)
    assert net.granted("b", hd) is None


def test_a_crashed_holder_loses_its_lock_after_the_ttl_not_before() -> None:
    net = LockNet("abcd")
    net.elect("a", term=1)
    net.advance(0.1)
    granted_at = net.now
    hc = net.acquire("c", "x", ttl=3.0)
    assert net.granted("c", hc) is not None
    net.crash("c")
    hd = net.acquire("d", "x", timeout=30.0)
    net.advance(2.9, step=0.01)
    assert net.granted("d", hd) is None            # not before the ttl
    net.advance(0.2, step=0.01)
    gd = net.granted("d", hd)
    assert gd is not None                          # at the ttl (the leader wakes d at once)
    assert granted_at + 3.0 <= net.now <= granted_at + 3.1


def test_a_released_lock_is_free_at_once_under_a_new_leader() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    hc = net.acquire("c", "x", ttl=30.0)
    assert net.granted("c", hc) is not None
    net.release("c", hc)
    net.crash("a")
    net.elect("b", term=2)
    net.deliver()
    hb = net.acquire("b", "x")
    assert net.granted("b", hb) is not None        # no 30 s wait: the release was stored


def test_an_acquire_given_up_on_frees_what_was_granted_to_it() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    dropped = []

    def answers_to_c(src: str, dst: str, msg: object) -> bool:
        lost = dst == "c" and isinstance(msg, Reply)
        dropped.append(lost)
        return lost

    net.drop = answers_to_c
    hc = net.acquire("c", "x", timeout=1.0)
    net.advance(1.2)
    assert isinstance(net.outcome("c", hc), Failed) and any(dropped)
    assert net.nodes["a"].core.grantor.holds() == {}   # freed when c gave up
    net.drop = None
    hb = net.acquire("b", "x")
    assert net.granted("b", hb) is not None        # the abandoned grant was freed


def test_a_node_asking_twice_for_one_name_waits_for_itself() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    h1 = net.acquire("b", "x")
    h2 = net.acquire("b", "x")
    g1 = net.granted("b", h1)
    assert g1 is not None and net.granted("b", h2) is None
    net.release("b", h1)
    g2 = net.granted("b", h2)
    assert g2 is not None and g2.token > g1.token


def test_the_holder_query_names_the_holder_and_its_token() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    hb = net.acquire("b", "x", ttl=5.0)
    g = net.granted("b", hb)
    q = net.query("c", "x")
    ans = net.outcome("c", q)
    assert isinstance(ans, Answered) and ans.holder == net.id("b") and ans.token == g.token  # type: ignore[union-attr]
    assert 4.9 <= ans.remaining <= 5.0
    q2 = net.query("c", "free")
    ans2 = net.outcome("c", q2)
    assert isinstance(ans2, Answered) and ans2.holder is None


def test_a_lease_ends_first_on_the_holders_clock() -> None:
    net = LockNet("abc", drift=0.01)
    net.elect("a", term=1)
    net.advance(1.0)
    sent = net.now
    h = net.acquire("b", "x", ttl=10.0)
    g = net.granted("b", h)
    assert g is not None
    assert g.expires == pytest.approx(sent + 10.0 * 0.99 / 1.01)
    lease = net.nodes["a"].core.grantor.holds()["x"]
    assert lease[2] >= sent + 10.0                 # the leader keeps it longer


def test_bounds_are_refused_and_counted() -> None:
    cfg = LockConfig(max_locks=2, max_requests=3, max_ttl=60.0)
    net = LockNet("abc", config=cfg)
    net.elect("a", term=1)
    h = net.acquire("b", "x", ttl=3600.0)
    out = net.outcome("b", h)
    assert isinstance(out, Failed) and out.reason.startswith("refused: ttl")
    assert all(net.granted("b", net.acquire("b", n)) is not None for n in ("x", "y"))
    h3 = net.acquire("c", "z")
    out3 = net.outcome("c", h3)
    assert isinstance(out3, Failed) and "full" in out3.reason
    assert net.nodes["a"].core.stats["refused_table_full"] == 1
    with pytest.raises(TooManyRequests):
        for i in range(5):
            net.nodes["c"].core.acquire(net.now, "w", 5.0, 10.0)
    assert net.nodes["c"].core.stats["refused_too_many_requests"] == 1


def test_a_node_that_is_not_the_leader_redirects() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    net.deliver()
    net.set_view("c", leader=net.id("b"))           # c wrongly believes b leads; b names a
    h = net.acquire("c", "x")
    net.advance(0.1)
    g = net.outcome("c", h)
    assert isinstance(g, Granted)
    assert net.nodes["b"].core.stats.get("grants", 0) == 0


def test_only_the_node_asked_may_answer_and_only_replicas_may_write() -> None:
    net = LockNet("abc")
    net.elect("a", term=1)
    net.partition("a", "bc")                       # b's request waits at a: no answer comes
    h = net.acquire("b", "x")
    b = net.nodes["b"]
    req = max(b.core.requester._sent)
    b.core.receive(net.now, net.id("c"), Reply(req, "granted", FencingToken(9, 9), 5.0))
    assert net.granted("b", h) is None and b.core.stats["replies_from_elsewhere"] == 1
    stranger = NodeID(int=99)
    c = net.nodes["c"]
    c.core.receive(net.now, stranger, Accept(Ballot(9, 0, stranger.hex), (
        Record("x", FencingToken(9, 1), stranger, 5.0, False, Ballot(9, 0, stranger.hex), 1),)))
    assert "x" not in c.core.replica.records and c.core.stats["replica_messages_not_eligible"] == 1
    assert c.core.actions_to_perform() == []


@pytest.mark.parametrize("field, value", [
    ("msg_type", 63), ("msg_type", 65536), ("msg_type", True), ("msg_type", 67.0),
    ("election_msg_type", 10),
    ("retry_interval", 0.0), ("retry_interval", float("nan")), ("retry_interval", "1"),
    ("write_timeout", 601.0), ("write_timeout", False),
    ("min_ttl", float("inf")), ("max_ttl", 0.0),
    ("max_locks", 0), ("max_waiters", (1 << 20) + 1), ("max_requests", 1.0),
    ("max_requests", True),
])
def test_a_lock_config_out_of_range_names_its_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        LockConfig(**{field: value})                  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_lock_config_refuses_equal_types_and_a_max_ttl_below_min_ttl() -> None:
    with pytest.raises(ConfigError) as same:
        LockConfig(msg_type=100, election_msg_type=100)
    assert same.value.field == "election_msg_type"
    with pytest.raises(ConfigError) as ttl:
        LockConfig(min_ttl=10.0, max_ttl=5.0)
    assert ttl.value.field == "max_ttl"
    ok = LockConfig(msg_type=65535, election_msg_type=64, min_ttl=5, max_ttl=5)
    assert ok.max_ttl == ok.min_ttl == 5                 # the bounds themselves are valid
