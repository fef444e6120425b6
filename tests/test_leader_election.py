"""The election state machine on a virtual clock, with membership views the test writes.

``Harness`` hosts N :class:`Election` cores: it ticks each every ``check_interval`` (each from
its own phase) and when its lease runs out, carries their messages with a fixed latency unless a
partition cuts the link (each through ``encode_message`` / msgpack / ``decode_message``, as on
the wire), and hands each core the view of the membership the test gave that node. Each node
may read a clock of its own that runs at ``rates[i]`` times the harness's time. It checks after
every step that no node's term ever goes down, and that no two nodes lead at once (in the
harness's time). Nothing here reads a clock or sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from gossip import ConfigError, NodeID, NodeState
from gossip.leader import (
    BECAME_LEADER, ELECTED, LOST, STEPPED_DOWN, Election, Heartbeat, LeaderConfig, LeaderEvent, Notify,
    Peer, quorum,
)
from gossip.leader.election import (
    MAX_TERM, SILENT_LEADER_FACTOR, Ack, SendAck, decode_message, encode_message,
)

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING
CFG = LeaderConfig()  # check 1 s, timeout 3 s, 51 %


class Harness:
    def __init__(self, n: int, cfg: LeaderConfig = CFG, eligible: set[int] | None = None,
                 latency: float = 0.001) -> None:
        self.cfg = cfg
        self.n = n
        self.ids = [NodeID(int=1000 + i) for i in range(n)]   # index order is id order
        self.eligible = set(range(n)) if eligible is None else eligible
        self.latency = latency
        self.now = 0.0
        self.cores = {i: Election(self.ids[i], cfg, 0.0) for i in range(n)}
        self.views: dict[int, dict[int, NodeState]] = {i: {j: ALIVE for j in range(n)} for i in range(n)}
        self.running = set(range(n))
        self.cut: set[frozenset[int]] = set()
        self.events: list[tuple[float, int, LeaderEvent, int]] = []
        self.acks_sent = 0
        self.undecodable = 0
        self.spans: list[list[Any]] = []          # [start, end | None, node] of each leadership
        self._open: dict[int, list[Any]] = {}
        self._deadline: dict[int, float] = {}
        self.rates = {i: 1.0 for i in range(n)}
        self.strict = True               # fail at once on two leaders (else count them)
        self.two_leaders = 0
        self.offsets = {i: 0.0 for i in range(n)}
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._terms = {i: 0 for i in range(n)}
        for i in range(n):
            self._at((i + 1) * cfg.check_interval / (n + 1), lambda i=i: self._tick(i))

    # -- plumbing
    def _at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def peers(self, i: int) -> list[Peer]:
        return [Peer(self.ids[j], st, j in self.eligible) for j, st in self.views[i].items()]

    def _tick(self, i: int) -> None:
        if i in self.running:
            self.cores[i].tick(self.clock(i), self.peers(i))
            self._drain(i)
            self._at(self.now + self.cfg.check_interval / self.rates[i], lambda: self._tick(i))

    def clock(self, i: int) -> float:
        """Node ``i``'s own clock."""
        return self.offsets[i] + self.rates[i] * self.now

    def set_rate(self, i: int, rate: float) -> None:
        """Make node ``i``'s clock run at ``rate`` from now on (its reading does not jump)."""
        self.offsets[i] = self.clock(i) - rate * self.now
        self.rates[i] = rate

    def _send(self, src: int, dst: int, msg: Any) -> None:
        if frozenset((src, dst)) in self.cut:
            return
        wire = msgpack.packb(encode_message(msg))       # what a real host puts on the wire
        self._at(self.now + self.latency, lambda: self._deliver(dst, src, wire))

    def _deliver(self, dst: int, src: int, wire: bytes) -> None:
        try:
            msg = decode_message(msgpack.unpackb(wire))
        except ValueError:
            self.undecodable += 1   # a real host counts it as malformed and drops it
            return
        self.inject(dst, src, msg)

    def inject(self, dst: int, src: int, msg: Any) -> None:
        """Deliver ``msg`` to ``dst`` now, in the name of node ``src``."""
        if dst in self.running:
            self.cores[dst].receive(self.clock(dst), self.ids[src], msg, self.peers(dst))
            self._drain(dst)

    def _wake(self, i: int, when: float) -> None:
        if i in self.running and self._deadline.get(i) == when:
            del self._deadline[i]
            self.cores[i].tick(max(self.clock(i), when), self.peers(i))
            self._drain(i)

    def _drain(self, i: int) -> None:
        for a in self.cores[i].actions_to_perform():
            if isinstance(a, Heartbeat):
                for j, st in self.views[i].items():
                    if j != i and st is not LEAVING:
                        self._send(i, j, a)
            elif isinstance(a, SendAck):
                self.acks_sent += 1
                self._send(i, self.ids.index(a.node), Ack(a.term, a.seq))
            else:
                assert isinstance(a, Notify)
                self.events.append((self.now, i, a.event, self.ids.index(a.node)))
                if a.event is BECAME_LEADER:
                    span = [self.now, None, i]
                    self.spans.append(span)
                    self._open[i] = span
                elif a.event is STEPPED_DOWN and i in self._open:
                    self._open.pop(i)[1] = self.now
        core = self.cores[i]
        term = core.term
        assert term >= self._terms[i], f"node {i}'s term went down"
        assert term <= MAX_TERM
        self._terms[i] = term
        deadline = core.next_deadline()
        if deadline < math.inf and self._deadline.get(i) != deadline:
            self._deadline[i] = deadline
            at = max(self.now, (deadline - self.offsets[i]) / self.rates[i])
            self._at(at, lambda: self._wake(i, deadline))
        self.assert_one_leader()

    def assert_one_leader(self) -> None:
        """No two leadership spans overlap (half-open: a hand-over at one instant is fine)."""
        live = [(s, e if e is not None else math.inf, n) for s, e, n in self.spans]
        overlaps = 0
        for k, (s1, e1, n1) in enumerate(live):
            for s2, e2, n2 in live[k + 1:]:
                if s1 < e2 and s2 < e1:
                    assert not self.strict, f"nodes {n1} and {n2} led at once: {live}"
                    overlaps += 1
        self.two_leaders = overlaps

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            self.now, _, fn = heapq.heappop(self._heap)
            fn()
        self.now = until

    def run_until(self, pred: Callable[[], bool], limit: float) -> float:
        """Run until ``pred()``; return the virtual time it became true (fails past ``limit``)."""
        while self._heap and self._heap[0][0] <= limit:
            self.now, _, fn = heapq.heappop(self._heap)
            fn()
            if pred():
                return self.now
        raise AssertionError(f"not true by t={limit}: leaders {self.leaders()}")

    # -- faults and queries
    def see(self, observers: Any, target: int, state: NodeState) -> None:
        for o in observers:
            self.views[o][target] = state

    def forget(self, observers: Any, target: int) -> None:
        for o in observers:
            self.views[o].pop(target, None)

    def partition(self, a: list[int], b: list[int]) -> None:
        self.cut = {frozenset((x, y)) for x in a for y in b}

    def heal(self) -> None:
        self.cut = set()

    def crash(self, i: int) -> None:
        self.running.discard(i)
        if i in self._open:
            self._open.pop(i)[1] = self.now

    def leaders(self, among: Any = None) -> list[int]:
        return [i for i in (self.running if among is None else among) if self.cores[i].is_leader]

    def followers_of(self, leader: int, among: Any = None) -> list[int]:
        return [i for i in (self.running if among is None else among)
                if self.cores[i].leader == self.ids[leader]]

    def agreed(self, among: Any = None) -> int | None:
        group = sorted(self.running if among is None else among)
        ls = self.leaders(group)
        if len(ls) == 1 and len(self.followers_of(ls[0], group)) == len(group):
            return ls[0]
        return None


# ---------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("n, pct, expected", [
    (0, 51, 0), (1, 51, 1), (2, 51, 2), (3, 51, 2), (4, 51, 3), (5, 51, 3), (100, 51, 51),
    (100, 57, 57), (1000, 51.1, 511), (4, 75, 3), (10, 100, 10), (7, 50.5, 4), (1, 100, 1),
])
def test_quorum(n: int, pct: float, expected: int) -> None:
    assert quorum(n, pct) == expected


@pytest.mark.parametrize("field, value", [
    ("check_interval", 0), ("check_interval", -1.0), ("check_interval", math.nan),
    ("check_interval", "1"), ("leader_timeout", 1.0), ("leader_timeout", 0.5),
    ("leader_timeout", math.inf), ("heartbeat_msg_type", 63), ("heartbeat_msg_type", 65536),
    ("heartbeat_msg_type", True), ("heartbeat_msg_type", "65"), ("quorum_percentage", 50),
    ("quorum_percentage", 0), ("quorum_percentage", 101), ("quorum_percentage", True),
    ("metadata_criteria", {"role": ""}), ("metadata_criteria", {"role": 1}),
])
def test_leader_config_refuses_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        LeaderConfig(**{field: value})
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_leader_config_defaults_are_paularlotts() -> None:
    cfg = LeaderConfig()
    assert (cfg.check_interval, cfg.leader_timeout, cfg.heartbeat_msg_type, cfg.quorum_percentage,
            cfg.metadata_criteria) == (1.0, 3.0, 65, 51, None)
    assert LeaderConfig(metadata_criteria={"dc": "~eu"}).criteria() is not None


def test_event_names() -> None:
    assert [str(e) for e in LeaderEvent] == ["Leader Elected", "Leader Lost", "Became Leader", "Stepped Down"]
    assert [int(e) for e in (ELECTED, LOST, BECAME_LEADER, STEPPED_DOWN)] == [0, 1, 2, 3]


@pytest.mark.parametrize("msg", [Heartbeat(0), Heartbeat(7, resign=True), Heartbeat(9, True, True), Ack(3)])
def test_messages_round_trip(msg: Any) -> None:
    assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize("value", [
    None, [], {"kind": "heartbeat"}, {"kind": "heartbeat", "term": -1}, {"kind": "heartbeat", "term": True},
    {"kind": "heartbeat", "term": 1 << 63}, {"kind": "heartbeat", "term": 1, "resign": "yes"},
    {"kind": "vote", "term": 1}, {"term": 1},
])
def test_malformed_messages_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        decode_message(value)


# ---------------------------------------------------------------------- elections


def test_five_nodes_elect_exactly_one_the_smallest_id_after_leader_timeout() -> None:
    h = Harness(5)
    at = h.run_until(lambda: h.agreed() is not None, 10.0)
    assert h.agreed() == 0
    assert CFG.leader_timeout <= at <= CFG.leader_timeout + CFG.check_interval
    h.run(60.0)
    assert h.agreed() == 0 and h.cores[0].term == 1
    assert [(i, e, x) for _, i, e, x in h.events if i == 0] == [(0, BECAME_LEADER, 0), (0, ELECTED, 0)]
    assert sorted((i, e, x) for _, i, e, x in h.events if i != 0) == [(i, ELECTED, 0) for i in range(1, 5)]


def test_a_candidate_that_does_not_lead_is_passed_over_one_interval_later() -> None:
    h = Harness(5)
    h.crash(0)                       # the smallest id never runs, yet every view shows it alive
    at = h.run_until(lambda: h.agreed() is not None, 20.0)
    assert h.agreed() == 1
    assert at <= CFG.leader_timeout + 2 * CFG.check_interval


def test_leader_crash_new_leader_within_leader_timeout_plus_detection() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    h.run(h.now + 5.0)
    crash_at = h.now
    h.crash(0)
    detection = 1.5                  # the failure detector suspects it this much later
    h.run(crash_at + detection)
    h.see(range(1, 5), 0, SUSPECT)
    at = h.run_until(lambda: h.agreed() is not None, crash_at + 30.0)
    assert h.agreed() == 1 and h.cores[1].term == 2
    assert at - crash_at <= CFG.leader_timeout + detection + CFG.check_interval
    # Every survivor moved from node 0 to node 1 (one ELECTED; a LOST first only if it had
    # time to notice the gap).
    for i in range(1, 5):
        after = [(e, x) for t, j, e, x in h.events if j == i and t > crash_at]
        assert after[-1] == (ELECTED, 1)
        assert all(x in (0, 1) for _, x in after)


def test_a_silent_leader_still_seen_alive_is_replaced_only_after_the_long_wait() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    crash_at = h.now
    h.crash(0)                       # the detector never notices: heartbeats are the only clue
    at = h.run_until(lambda: h.agreed() is not None, crash_at + 60.0)
    assert h.agreed() == 1
    wait = SILENT_LEADER_FACTOR * CFG.leader_timeout
    assert wait <= at - crash_at <= wait + CFG.leader_timeout + 2 * CFG.check_interval


def test_minority_leader_steps_down_and_minority_never_elects_majority_does() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    minority, majority = [0, 1], [2, 3, 4]          # the leader is on the minority side
    h.run(h.now + 2.0)
    split = h.now
    h.partition(minority, majority)
    # Leadership needs acknowledgements: without the majority's, node 0 gives up.
    down = h.run_until(lambda: not h.leaders(minority), split + 20.0)
    assert down - split <= CFG.leader_timeout + CFG.check_interval
    # The failure detectors catch up 5 s after the split.
    detection = 5.0
    h.run(split + detection)
    for x in minority:
        for y in majority:
            h.see([x], y, SUSPECT)
    for y in majority:
        for x in minority:
            h.see([y], x, SUSPECT)
    elected = h.run_until(lambda: h.agreed(majority) is not None, split + 30.0)
    # A leader_timeout after the detector saw the old leader go.
    assert h.agreed(majority) == 2
    assert elected - split <= detection + CFG.leader_timeout + 2 * CFG.check_interval
    h.run(split + 20.0)
    for x in minority:
        for y in majority:
            h.see([x], y, DEAD)
    for y in majority:
        for x in minority:
            h.see([y], x, DEAD)
    h.run(split + 120.0)
    assert h.leaders(minority) == [] and all(h.cores[i].leader is None for i in minority)
    assert h.agreed(majority) == 2
    won = [(t, i) for t, i, e, _ in h.events if e is BECAME_LEADER and t > split]
    assert all(i in majority for _, i in won)
    # Heal: the majority leader's heartbeats reach the minority before its views do.
    heal = h.now
    h.heal()
    at = h.run_until(lambda: h.agreed() is not None, heal + 10.0)
    assert h.agreed() == 2 and at - heal <= CFG.check_interval + 0.01
    h.run(heal + 60.0)
    assert h.agreed() == 2


def test_a_leader_that_sees_a_higher_term_steps_down() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    core = h.cores[0]
    core.receive(h.now, h.ids[2], Heartbeat(core.term + 5), h.peers(0))
    acts = core.actions_to_perform()
    assert not core.is_leader and core.leader == h.ids[2] and core.term == 6
    assert Notify(STEPPED_DOWN, h.ids[0]) in acts and Notify(ELECTED, h.ids[2]) in acts
    assert SendAck(h.ids[2], 6) in acts


def test_a_candidate_cut_off_from_the_leader_cannot_win_a_quorum_promised_to_it() -> None:
    h = Harness(3)
    h.partition([0], [2])            # 0 and 2 cannot hear each other; 1 hears both
    h.run_until(lambda: h.cores[0].is_leader, 10.0)
    # 2 never hears 0: it stands in the same term, but 1 acknowledges 0 and promised it.
    h.run_until(lambda: h.cores[2].stats.get("elections", 0) >= 1, 20.0)
    assert h.cores[2].candidacy == h.cores[0].term == 1
    assert h.cores[2].term == 0      # a candidate's term counts once it leads
    h.run(h.now + 10.0)
    assert not h.cores[2].is_leader and h.cores[2].stats.get("stepped_down_no_quorum_acked", 0) >= 1
    assert h.followers_of(0, [1]) == [1]
    assert h.cores[1].stats["ignored_promised"] >= 1
    h.heal()
    h.run_until(lambda: h.agreed() is not None, h.now + 10.0 + SILENT_LEADER_FACTOR * CFG.leader_timeout)
    assert h.agreed() == 0 and h.cores[0].stats.get("stepped_down_for_heartbeat", 0) == 0


def test_two_candidates_of_one_term_resolve_to_the_smaller_id() -> None:
    h = Harness(3)
    for i in (0, 2):                 # both stand at once, neither has heard the other
        h.cores[i] = Election(h.ids[i], CFG, -10.0)
        h.cores[i].tick(-10.0, h.peers(i))  # silent, with a quorum, since long ago
        h.cores[i].tick(0.0, h.peers(i))
        h._drain(i)
    assert all(h.cores[i].candidacy == 1 for i in (0, 2)) and not h.leaders()
    at = h.run_until(lambda: h.agreed() is not None, 10.0)
    assert h.agreed() == 0 and at < CFG.check_interval
    assert h.cores[0].stats.get("ignored_outranked", 0) == 1     # 0 does not yield to 2


def test_stale_heartbeats_are_ignored_and_not_acknowledged() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    follower = h.cores[1]
    follower.receive(h.now, h.ids[2], Heartbeat(0), h.peers(1))
    assert follower.leader == h.ids[0] and follower.actions_to_perform() == []
    assert follower.stats["ignored_promised"] == 1       # it acknowledged 0 within leader_timeout
    lone = Election(h.ids[1], CFG, 0.0)
    lone.receive(1.0, h.ids[0], Heartbeat(4), h.peers(1))
    assert lone.term == 4 and lone.actions_to_perform() == [SendAck(h.ids[0], 4), Notify(ELECTED, h.ids[0])]
    lone.receive(1.0 + CFG.leader_timeout, h.ids[2], Heartbeat(3), h.peers(1))   # promise over
    assert lone.actions_to_perform() == [] and lone.stats["ignored_stale_term"] == 1
    lone.receive(1.0 + CFG.leader_timeout, h.ids[2], Heartbeat(4, candidate=True), h.peers(1))
    assert lone.actions_to_perform() == [] and lone.stats["ignored_stale_term"] == 2   # stand above 4


def test_a_leader_without_acknowledgements_steps_down_and_holds_off() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    t0 = h.now
    h.partition([0], [1, 2])         # views unchanged: only the missing acks tell
    down = h.run_until(lambda: not h.cores[0].is_leader, t0 + 10.0)
    # The lease counts from the last heartbeat acknowledged, sent before the split.
    assert down - t0 <= CFG.lease
    assert h.cores[0].stats["lease_lapsed"] == 1
    # A candidate again, in the same term; with no quorum answering, it resigns and holds off.
    gave_up = h.run_until(lambda: h.cores[0].stats.get("stepped_down_no_quorum_acked", 0) == 1, down + 10.0)
    assert gave_up - down <= CFG.leader_timeout + 2 * CFG.check_interval
    h.run(gave_up + SILENT_LEADER_FACTOR * CFG.leader_timeout - CFG.check_interval)
    assert not h.cores[0].is_leader  # its view still shows a quorum, but it does not stand
    assert h.cores[0].stats["elections"] == 1


def test_leaving_members_do_not_count_dead_ones_do() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    for x in (3, 4):                 # two leave gracefully: known is 3, quorum 2
        h.crash(x)
        h.see(range(3), x, LEAVING)
    h.run(h.now + 30.0)
    assert h.agreed() == 0
    h.crash(2)                       # one crashes: known 3 (2 alive + 1 dead), quorum 2
    h.see(range(2), 2, DEAD)
    h.run(h.now + 30.0)
    assert h.agreed() == 0
    h2 = Harness(5)
    h2.run_until(lambda: h2.agreed() == 0, 10.0)
    for x in (2, 3, 4):              # three crash: known 5, 2 alive < quorum 3
        h2.crash(x)
        h2.see(range(2), x, DEAD)
    h2.run(h2.now + 30.0)
    assert h2.leaders() == [] and h2.cores[1].leader is None


def test_only_eligible_nodes_lead_and_count() -> None:
    h = Harness(5, eligible={2, 3, 4})
    h.run_until(lambda: h.agreed() is not None, 10.0)
    assert h.agreed() == 2           # 0 and 1 have smaller ids but are not eligible
    h.run(h.now + 30.0)
    assert h.agreed() == 2
    assert all(not h.cores[i].is_leader for i in (0, 1))
    # Ineligible nodes do not make a quorum: with 3 and 4 gone, 2 is alone among 3 eligible.
    for x in (3, 4):
        h.crash(x)
        h.see(range(3), x, DEAD)
    h.run(h.now + 30.0)
    assert h.leaders() == []


def test_a_leader_that_becomes_ineligible_steps_down() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    h.eligible.discard(0)
    at = h.run_until(lambda: h.agreed() == 1, h.now + 20.0)
    assert h.cores[0].stats["stepped_down_ineligible"] == 1 and at > 0


def test_stop_resigns_and_followers_elect_without_the_long_wait() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    t0 = h.now
    core = h.cores[0]
    core.stop(h.now)
    acts = core.actions_to_perform()
    assert acts == [Heartbeat(1, resign=True, retire=True, leader=h.ids[0]), Notify(STEPPED_DOWN, h.ids[0])]
    for j in range(1, 5):
        h._send(0, j, acts[0])
    h.crash(0)                       # its election is gone; the node itself stays alive in views
    h.run(t0 + 0.01)
    assert all(h.cores[i].leader is None for i in range(1, 5))
    at = h.run_until(lambda: h.agreed() is not None, t0 + 30.0)
    assert h.agreed() == 1 and at - t0 <= CFG.leader_timeout + 2 * CFG.check_interval
    core.tick(h.now, h.peers(0))
    assert core.actions_to_perform() == [] and not core.is_leader


def test_a_leader_keeps_leading_while_new_members_join() -> None:
    h = Harness(4)
    for x in (1, 2, 3):              # nodes 1..3 have not joined yet: only 0 knows 0
        h.forget([0], x)
        h.crash(x)
    h.run_until(lambda: h.cores[0].is_leader, 10.0)
    h.run(h.now + 10.0)              # long past the new leader's grace
    t0 = h.now
    for x in (1, 2, 3):              # they join: each knows everyone, and 0 learns of them
        h.running.add(x)
        h.cores[x] = Election(h.ids[x], CFG, h.now)
        h._at(h.now + 0.1 * x, lambda x=x: h._tick(x))
        h.see([0], x, ALIVE)
        h.cores[0].tick(h.now, h.peers(0))    # the membership change reaches the leader at once
        h._drain(0)
    h.run(t0 + 60.0)
    assert h.agreed() == 0 and h.cores[0].stats.get("stepped_down_no_quorum_acked", 0) == 0


def test_a_lone_node_leads_itself() -> None:
    h = Harness(1)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    assert h.acks_sent == 0


# ---------------------------------------------------------------------- hostile heartbeats


def test_a_heartbeat_of_the_top_term_does_not_end_elections() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    # Anyone may send a heartbeat in the name of an eligible member (no key): the largest term
    # the wire carries, to everyone, leader included.
    for dst in range(5):
        h.inject(dst, 3, decode_message(msgpack.unpackb(msgpack.packb(
            encode_message(Heartbeat(MAX_TERM, leader=h.ids[3]))))))
    assert all(h.cores[i].term <= 1 + CFG.max_term_jump for i in range(5))
    # Elections go on: whoever leads next leads in a term every node can still decode.
    at = h.run_until(lambda: h.agreed() is not None, h.now + 30.0)
    leader = h.agreed()
    assert leader is not None and at > 0
    h.run(h.now + 10.0)
    h.crash(leader)
    for i in range(5):
        h.see(range(5), leader, SUSPECT)
    h.run_until(lambda: h.agreed() not in (None, leader), h.now + 30.0)
    assert h.undecodable == 0
    assert max(c.term for c in h.cores.values()) < MAX_TERM


def test_a_resign_counts_only_for_the_current_term() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    h.crash(0)
    h.see(range(1, 3), 0, SUSPECT)
    h.run_until(lambda: h.agreed([1, 2]) == 1, h.now + 20.0)
    term = h.cores[1].term
    assert term == 2
    # An old resign of the new leader (its term-1 candidacy, say), replayed to a follower.
    h.inject(2, 1, Heartbeat(term - 1, resign=True, leader=h.ids[1]))
    assert h.cores[2].leader == h.ids[1] and h.cores[2].stats["ignored_resign"] == 1
    h.inject(2, 1, Heartbeat(term, resign=True, leader=h.ids[1]))
    assert h.cores[2].leader is None


def test_a_heartbeat_naming_another_leader_is_ignored() -> None:
    h = Harness(3)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    h.inject(1, 2, Heartbeat(7, leader=h.ids[0]))
    assert h.cores[1].term == 1 and h.cores[1].stats["ignored_wrong_leader"] == 1


def test_a_fresh_node_catches_up_with_a_term_far_ahead() -> None:
    cfg = LeaderConfig(max_term_jump=100)
    core = Election(NodeID(int=2), cfg, 0.0)
    leader = NodeID(int=1)
    peers = [Peer(leader, ALIVE), Peer(NodeID(int=2), ALIVE)]
    t, acked_at = 0.0, None
    while acked_at is None and t < 60.0:
        core.receive(t, leader, Heartbeat(250, seq=1), peers)
        if any(isinstance(a, SendAck) for a in core.actions_to_perform()):
            acked_at = t
        t += cfg.check_interval
    # 100 per leader_timeout window: 100, 200, then 250 in the third window.
    assert acked_at is not None and 2 * cfg.leader_timeout <= acked_at < 3 * cfg.leader_timeout
    assert core.term == 250 and core.stats["ignored_term_jump"] >= 2


# ---------------------------------------------------------------------- splits and leases


def test_a_minority_node_whose_view_is_stale_stands_but_never_leads() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    split = h.now
    h.partition([3, 4], [0, 1, 2])
    # The minority's failure detector suspects the leader at once, but still shows the rest
    # of the majority alive: its view holds a quorum, so it stands.
    h.see([3, 4], 0, SUSPECT)
    h.run_until(lambda: h.cores[3].stats.get("elections", 0) >= 1, split + 20.0)
    h.run(split + 30.0)              # the Harness fails at once if 3 and 0 ever lead together
    assert h.leaders([3, 4]) == [] and h.agreed([0, 1, 2]) == 0
    assert h.cores[3].stats.get("stepped_down_no_quorum_acked", 0) >= 1


def test_a_leader_split_off_at_any_phase_ends_its_lease_before_another_leads() -> None:
    for k in range(10):              # the split at every tenth of the heartbeat interval
        h = Harness(5)
        h.run_until(lambda: h.agreed() == 0, 10.0)
        h.run(h.now + 2.0 + k * CFG.check_interval / 10)
        split = h.now
        h.partition([0, 1], [2, 3, 4])
        h.see([2, 3, 4], 0, SUSPECT)  # the majority's detector is as fast as can be
        h.see([2, 3, 4], 1, SUSPECT)
        at = h.run_until(lambda: h.agreed([2, 3, 4]) is not None, split + 20.0)
        old_end = max(e for s, e, n in h.spans if n == 0 and e is not None)
        assert old_end <= at and old_end - split <= CFG.lease, (k, old_end, at)


def test_the_quorum_does_not_shrink_when_the_membership_forgets() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    minority, majority = [0, 1], [2, 3, 4]
    h.partition(minority, majority)
    for side, other in ((minority, majority), (majority, minority)):
        for x in other:
            h.see(side, x, DEAD)
    h.run(h.now + 20.0)
    for side, other in ((minority, majority), (majority, minority)):
        for x in other:
            h.forget(side, x)        # dead_node_retention_period passed: forgotten
    h.run(h.now + 120.0)             # the Harness fails at once on two leaders
    assert h.leaders(minority) == [] and h.agreed(majority) == 2
    assert h.cores[0].quorum_base == 5 and h.cores[0].missing == 3
    assert sorted(h.cores[0].remembered()) == sorted(h.ids)


def test_members_gone_for_good_count_until_the_operator_removes_them() -> None:
    h = Harness(5)
    h.run_until(lambda: h.agreed() == 0, 10.0)
    for x in (2, 3, 4):              # three crash and are forgotten: two cannot make a quorum
        h.crash(x)
        h.forget([0, 1], x)
    h.run(h.now + 60.0)
    assert h.leaders() == []
    for i in (0, 1):
        assert h.cores[i].remove_members([h.ids[x] for x in (2, 3, 4)]) == 3
    h.run_until(lambda: h.agreed() is not None, h.now + 60.0)


def test_expected_members_sets_the_least_base() -> None:
    cfg = LeaderConfig(expected_members=5)
    h = Harness(3, cfg)              # only 3 of the 5 expected exist: quorum(5) = 3, met
    h.run_until(lambda: h.agreed() == 0, 10.0)
    assert h.cores[0].quorum_base == 5
    h2 = Harness(2, cfg)             # 2 of 5: no quorum, nobody leads
    h2.run(60.0)
    assert h2.leaders() == []


def test_the_remembered_members_are_bounded_and_the_base_never_below_the_view() -> None:
    h = Harness(5, LeaderConfig(max_remembered=3))
    h.run_until(lambda: h.agreed() == 0, 10.0)
    core = h.cores[0]
    assert len(core.remembered()) == 3 and core.quorum_base == 5
    assert core.stats["quorum_members_evicted"] >= 2


@pytest.mark.parametrize("assumed, safe", [(0.3, True), (0.01, False)])
def test_the_lease_holds_while_clocks_drift_within_the_assumed_bound(assumed: float, safe: bool) -> None:
    # The leader's clock runs 30 % slow (its lease lasts longer in real time), every other
    # node's 30 % fast (their promises end sooner), and the majority's failure detector sees the
    # split at once. With max_clock_drift_rate at 0.3 the lease is short enough; at 0.01 it is not,
    # which is why the bound must cover the real clocks.
    cfg = LeaderConfig(max_clock_drift_rate=assumed)
    found = 0
    for k in range(10):
        h = Harness(5, cfg)
        h.strict = safe
        h.run_until(lambda: h.agreed() == 0, 10.0)
        h.set_rate(0, 0.7)
        for i in range(1, 5):
            h.set_rate(i, 1.3)
        h.run(h.now + 3.0 + k * CFG.check_interval / 10)
        h.partition([0, 1], [2, 3, 4])
        for i in (0, 1):
            h.see([2, 3, 4], i, SUSPECT)
        h.run_until(lambda: h.agreed([2, 3, 4]) is not None, h.now + 20.0)
        found += h.two_leaders
    assert (found == 0) == safe, found
