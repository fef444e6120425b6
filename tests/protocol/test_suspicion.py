"""Lifeguard's suspicion timeout: the pure formulas, table-tested as memberlist does, and the
running suspicions (start, confirmations, one timer per member, the verdict) on a table of their own."""

from __future__ import annotations

import heapq
import math

import pytest

from gossip.config import Config
from gossip.messages import Dead, Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol.outbox import T_SUSPICION, Outbox
from gossip.protocol.suspicion import (
    Suspicion, Suspicions, new_suspicion, remaining_suspicion_time, suspicion_timeouts,
)

from .parts import Recorder

ALIVE, SUSPECT, DEAD = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD


@pytest.mark.parametrize(
    "n, k, elapsed, low, high, expected",
    [
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 30.0 - 28.0 * math.log(3) / math.log(4) - 3.0),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        (0, 0, 1.0, 2.0, 30.0, 1.0),  # no confirmations expected: the minimum
    ],
)
def test_remaining_suspicion_time(n: int, k: int, elapsed: float, low: float, high: float, expected: float) -> None:
    assert remaining_suspicion_time(n, k, elapsed, low, high) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "n, scale",
    [(1, 1.0), (5, 1.0), (10, 1.0), (50, 1.69897), (100, 2.0), (500, 2.69897), (1000, 3.0)],
)
def test_suspicion_timeouts_scale_with_log10_of_size(n: int, scale: float) -> None:
    low, high = suspicion_timeouts(n, 1.0, 4, 6)
    assert low == pytest.approx(4 * scale, rel=1e-5)
    assert high == pytest.approx(6 * low)


def test_confirmations_shrink_the_deadline_to_the_minimum() -> None:
    accuser, a, b, c = (NodeID(int=i) for i in range(1, 5))
    s = Suspicion(incarnation=0, start=100.0, k=2, low=8.0, high=48.0, accuser=accuser)
    assert s.deadline() == pytest.approx(148.0)
    assert not s.confirm(accuser)            # the accuser does not confirm itself
    assert s.confirm(a)
    first = s.deadline()
    assert 108.0 < first < 148.0
    assert not s.confirm(a)                  # one confirmation per member
    assert s.confirm(b)
    assert s.deadline() == pytest.approx(108.0)
    assert not s.confirm(c)                  # k reached: no more count
    assert s.deadline() == pytest.approx(108.0)


def test_no_expected_confirmations_means_minimum_timeout() -> None:
    s = Suspicion(incarnation=0, start=0.0, k=0, low=4.0, high=24.0, accuser=NodeID(int=1))
    assert s.deadline() == 4.0
    assert not s.confirm(NodeID(int=2))


@pytest.mark.parametrize("n, lifeguard, k", [(10, True, 2), (3, True, 0), (10, False, 0)])
def test_a_new_suspicion_expects_confirmations_only_with_lifeguard_and_enough_members(
        n: int, lifeguard: bool, k: int) -> None:
    cfg = Config.lan(lifeguard_enabled=lifeguard)
    s = new_suspicion(cfg, n, 3, 10.0, NodeID(int=2))
    low, high = suspicion_timeouts(n, cfg.health_check_interval, cfg.suspicion_mult, cfg.suspicion_max_timeout_mult)
    assert (s.incarnation, s.start, s.k, s.low, s.high) == (3, 10.0, k, low, high)


def test_a_new_suspicion_never_outlasts_the_suspect_retention_period() -> None:
    s = new_suspicion(Config.lan(suspect_retention_period=5.0), 1000, 0, 0.0, NodeID(int=2))
    assert s.low == s.high == 5.0


# -- the running suspicions, on a table of their own ---------------------------------------------

SELF, X, P, Q, R = (NodeID(int=i) for i in (1, 0x10, 0x20, 0x30, 0x40))


class Rec:
    """A member record: what Suspicions reads and writes of one."""

    def __init__(self, node: NodeID, incarnation: int = 0) -> None:
        self.node, self.state, self.incarnation = node, ALIVE, incarnation
        self.suspicion: Suspicion | None = None
        self.timer_at = math.inf


class Table:
    """The narrow table Suspicions is given: members, size, state changes, the jump bound."""

    def __init__(self, *recs: Rec, size: int = 10) -> None:
        self.members = {r.node: r for r in recs}
        self.size = size
        self.changes: list[tuple[float, NodeID, NodeState]] = []

    def num_members(self) -> int:
        return self.size

    def set_state(self, now: float, m: Rec, state: NodeState) -> None:
        m.state = state
        self.changes.append((now, m.node, state))

    def jump_refused(self, claimed: int, known: int, accusation: bool) -> bool:
        return claimed - known >= 100

    def invalidate(self, m: Rec) -> None:
        pass


def running(*recs: Rec) -> tuple[Suspicions[Rec], Table, Outbox, Recorder]:
    out, table, rec = Outbox(), Table(*recs), Recorder()
    return Suspicions(Config.lan(), out, SELF, table, rec, rec.queue, rec.accused), table, out, rec


def fire_due(s: Suspicions[Rec], out: Outbox, now: float) -> None:
    while out.timers and out.timers[0][0] <= now:
        when, _, kind, key = heapq.heappop(out.timers)
        assert kind == T_SUSPICION
        s.fire(now, key, when)


def test_a_suspicion_starts_spreads_and_ends_in_a_death_verdict_at_its_deadline() -> None:
    x = Rec(X)
    s, table, out, rec = running(x)
    s.on_suspect(1.0, Suspect(X, 0, P))
    assert x.state is SUSPECT and table.changes == [(1.0, X, SUSPECT)]
    assert rec.named("queue") == [(1.0, Suspect(X, 0, P))]          # passed on
    assert out.stats["suspicions_started"] == 1
    assert x.suspicion is not None
    deadline = x.suspicion.deadline()
    assert [(when, kind, key) for when, _, kind, key in out.timers] == [(deadline, T_SUSPICION, X)]
    fire_due(s, out, deadline - 0.001)
    assert x.state is SUSPECT
    fire_due(s, out, deadline)
    assert x.state is DEAD and rec.named("queue")[-1] == (deadline, Dead(X, 0, SELF))
    assert out.stats["suspicions_confirmed"] == 1
    assert out.stats["degraded_timeout"] == 1       # it expected confirmations and got none


def test_independent_confirmations_bring_the_verdict_forward_with_one_timer_per_member() -> None:
    x = Rec(X)
    s, table, out, rec = running(x)
    s.on_suspect(1.0, Suspect(X, 0, P))
    assert x.suspicion is not None
    first = x.suspicion.deadline()
    s.on_suspect(2.0, Suspect(X, 0, P))             # the accuser again: no confirmation
    s.on_suspect(2.0, Suspect(X, 0, Q))
    s.on_suspect(3.0, Suspect(X, 0, R))
    assert [args[2].sender for args in rec.named("confirmed")] == [Q, R]
    shorter = x.suspicion.deadline()
    assert shorter < first
    for _ in range(50):                              # a flood of repeats sets no more timers
        s.on_suspect(3.0, Suspect(X, 0, Q))
    assert len(out.timers) == 3                      # the first deadline and two shorter ones
    fire_due(s, out, shorter)
    assert x.state is DEAD and "degraded_timeout" not in out.stats
    fire_due(s, out, first)                          # the superseded timer does nothing more
    assert out.stats["suspicions_confirmed"] == 1


def test_a_suspicion_at_a_higher_incarnation_replaces_the_one_the_member_refuted() -> None:
    x = Rec(X)
    s, table, out, rec = running(x)
    s.on_suspect(1.0, Suspect(X, 0, P))
    s.on_suspect(5.0, Suspect(X, 1, Q))
    assert x.incarnation == 1 and x.suspicion is not None
    assert (x.suspicion.start, x.suspicion.accuser) == (5.0, Q)
    assert len(rec.named("suspected")) == 2


def test_stale_unknown_dead_and_too_far_ahead_accusations_are_ignored() -> None:
    x, d = Rec(X, incarnation=5), Rec(P)
    d.state = DEAD
    s, table, out, rec = running(x, d)
    s.on_suspect(1.0, Suspect(X, 4, Q))              # older than what we know
    s.on_suspect(1.0, Suspect(R, 0, Q))              # not a member
    s.on_suspect(1.0, Suspect(P, 0, Q))              # dead already
    s.on_suspect(1.0, Suspect(X, 105, Q))            # past the jump bound
    assert x.state is ALIVE and table.changes == [] and out.timers == [] and rec.calls == []


def test_an_accusation_of_this_node_goes_to_its_own_record() -> None:
    s, table, out, rec = running()
    s.on_suspect(1.0, Suspect(SELF, 3, P))
    assert rec.calls == [("accused", (1.0, 3))]


def test_a_suspicion_seen_in_a_full_state_confirms_nothing_and_is_not_passed_on() -> None:
    # A peer holding X suspect has most often heard the accusation by gossip, like everyone:
    # counted as its confirmation, two peers exchanging full states confirmed each other's
    # hearsay and cut a live member's suspicion to the minimum (seed 44 of the Lifeguard
    # grid's 50-node, 5 % loss, 10 % starved cell: a false death).
    x = Rec(X)
    s, table, out, rec = running(x)
    s.on_suspect(1.0, Suspect(X, 0, P))              # P's failed probe
    assert x.suspicion is not None
    first = x.suspicion.deadline()
    s.on_hearsay(2.0, Suspect(X, 0, Q))              # Q's full state holds X suspect
    assert x.suspicion.confirmers == set() and x.suspicion.deadline() == first
    assert rec.named("confirmed") == [] and rec.named("queue") == [(1.0, Suspect(X, 0, P))]
    assert len(out.timers) == 1 and out.stats["hearsay_not_confirmed"] == 1
    s.on_suspect(3.0, Suspect(X, 0, Q))              # Q's own accusation does confirm
    assert [args[2].sender for args in rec.named("confirmed")] == [Q]
    assert x.suspicion.deadline() < first


def test_a_suspicion_started_on_hearsay_takes_the_first_accusation_as_its_accuser() -> None:
    x = Rec(X)
    s, table, out, rec = running(x)
    s.on_hearsay(1.0, Suspect(X, 0, Q))
    assert x.state is SUSPECT and table.changes == [(1.0, X, SUSPECT)]
    assert x.suspicion is not None and x.suspicion.hearsay
    longest = x.suspicion.deadline()
    assert longest == pytest.approx(1.0 + x.suspicion.high)    # no confirmation: the longest
    assert rec.named("queue") == [] and out.stats["suspicions_started"] == 1   # not passed on
    s.on_suspect(2.0, Suspect(X, 0, P))              # the first accusation heard: the accuser
    assert (x.suspicion.accuser, x.suspicion.hearsay) == (P, False)
    assert rec.named("confirmed") == [] and x.suspicion.deadline() == longest
    assert rec.named("queue") == [(2.0, Suspect(X, 0, P))]   # passed on, as if heard first
    s.on_suspect(3.0, Suspect(X, 0, Q))              # a second accuser confirms
    assert [args[2].sender for args in rec.named("confirmed")] == [Q]
    assert x.suspicion.deadline() < longest
    s.on_hearsay(4.0, Suspect(X, 1, R))              # at a higher incarnation: a new one
    assert x.incarnation == 1 and x.suspicion.hearsay and (x.suspicion.start, x.suspicion.accuser) == (4.0, R)
    assert table.changes == [(1.0, X, SUSPECT)] and [a[0] for a in rec.named("queue")] == [2.0, 3.0]
    s.on_hearsay(5.0, Suspect(X, 0, R))              # stale: nothing
    assert x.suspicion.start == 4.0
