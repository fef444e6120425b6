"""State exchange driven alone: joins, leaves, push/pull and maintenance, read from the outbox."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from gossip.config import Config
from gossip.messages import Alive, Join, JoinReply, MemberState, Ping, PushPull, PushPullReply
from gossip.node import PROTOCOL_VERSION, NodeID
from gossip.protocol.actions import JOIN_NO_ANSWER, JoinResult, Send
from gossip.protocol.outbox import (
    T_JOIN_TIMEOUT, T_LEAVE_RETRY, T_MAINTENANCE, T_PUSH_PULL, T_PUSH_PULL_TIMEOUT, T_RECONNECT, T_SYNC,
)
from gossip.protocol.sync import Sync

from .parts import ALIVE, DEAD, LEAVING, SELF, Parts, Recorder, addr, messages, node


class Merge:
    """Stands in for the merge rules: admits the alive states it is given, notes every call."""

    def __init__(self, p: Parts) -> None:
        self.p = p
        self.calls: list[tuple[tuple[NodeID, ...], bool, NodeID | None]] = []
        self.echoes: list[bool] = []

    def states(self, now: float, states: Iterable[MemberState], catch_up: bool = False,
               peer: NodeID | None = None, echo: bool = True) -> None:
        states = tuple(states)
        self.calls.append((tuple(s.node for s in states), catch_up, peer))
        self.echoes.append(echo)
        for s in states:
            if s.state is ALIVE and s.node not in self.p.table.members and s.node != SELF:
                self.p.admit(now, Alive(s.node, s.incarnation, s.addr))


class Syncing:
    def __init__(self, n: int = 0, config: Config | None = None) -> None:
        self.p = Parts(config)
        self.ids = self.p.bootstrap(n) if n else []
        self.merge = Merge(self.p)
        self.news = Recorder()
        self.sync = Sync(self.p.config, self.p.out, self.p.rng, self.p.table, self.p.inbound, self.p.local,
                         self.merge, self.news.queue, self.p.reconnect)  # type: ignore[arg-type]

    def run(self, until: float) -> list[Any]:
        """Run the timers due by ``until`` as the core does; return every action."""
        out, sync = self.p.out, self.sync
        actions = []
        while out.timers and out.timers[0][0] <= until:
            when, _, kind, key = heapq.heappop(out.timers)
            if kind == T_PUSH_PULL:
                sync.push_pull_round(when)
            elif kind == T_MAINTENANCE:
                sync.maintenance(when)
            elif kind == T_JOIN_TIMEOUT:
                sync.join_timeout(key)
            elif kind == T_SYNC:
                sync.follow_up(when, key)
            elif kind == T_PUSH_PULL_TIMEOUT:
                sync.push_pull_timeout(key, when)
            elif kind == T_LEAVE_RETRY:
                sync.leave_retry(when)
            elif kind == T_RECONNECT:
                sync.reconnect_round(when)
            actions += out.drain()
        return actions


def test_a_join_goes_to_every_seed_but_ourselves_and_times_out_without_an_answer() -> None:
    s = Syncing()
    seqs = s.sync.join(0.0, [addr(1), s.p.local.addr, addr(2)])
    sent = s.p.sends()
    assert [(x.addr, x.reliable) for x in sent] == [(addr(1), True), (addr(2), True)]
    joins = messages(sent, Join)
    assert [j.seq for j in joins] == seqs and all(j.states == (s.p.local.self_state(),) for j in joins)
    assert s.sync.join_peers == [addr(1), s.p.local.addr, addr(2)]   # remembered for a re-join
    results = [a for a in s.run(s.p.config.join_timeout) if isinstance(a, JoinResult)]
    assert results == [JoinResult(addr(1), False, JOIN_NO_ANSWER), JoinResult(addr(2), False, JOIN_NO_ANSWER)]


def test_the_answer_to_our_join_is_merged_as_solicited_and_followed_by_one_more_exchange() -> None:
    s = Syncing()
    (seq,) = s.sync.join(0.0, [addr(1)])
    s.p.sends()
    states = (MemberState(node(1), addr(1), ALIVE, 0), MemberState(node(2), addr(2), ALIVE, 0))
    s.p.message_from(addr(1), node(1))
    s.sync.on_join_reply(1.0, JoinReply(seq, True, "", states))
    assert s.merge.calls == [((node(1), node(2)), True, node(1))]
    assert s.p.inbound.solicited and s.p.inbound.vouching
    assert node(1) not in s.p.table.unproven                     # it answered where we asked
    assert node(2) in s.p.table.unproven                         # the others it only named
    assert s.p.out.drain()[-1] == JoinResult(addr(1), True, "", node(1))
    assert s.news.named("queue") == [(1.0, s.p.local.self_alive())]
    ((when, key),) = s.p.timers(T_SYNC)
    hci = s.p.config.health_check_interval
    assert key == addr(1) and 1.0 + hci <= when <= 1.0 + 2 * hci
    s.sync.on_join_reply(2.0, JoinReply(seq, True, "", states))   # a second answer is nobody's
    assert s.p.out.stats["refused_unsolicited_reply"] == 1


def _join_and_follow_up(s: Syncing) -> tuple[bool, bool, bool]:
    """Join through addr(1), take its answer, run the follow-up exchange and then a periodic
    one; return the ``echo`` of the three merges."""
    (seq,) = s.sync.join(0.0, [addr(1)])
    s.p.sends()
    states = (MemberState(node(1), addr(1), ALIVE, 0), MemberState(node(2), addr(2), ALIVE, 0))
    s.p.message_from(addr(1), node(1))
    s.sync.on_join_reply(1.0, JoinReply(seq, True, "", states))
    ((when, _),) = s.p.timers(T_SYNC)
    sends = [a for a in s.run(when) if isinstance(a, Send)]
    (follow,) = messages(sends, PushPull)
    s.sync.on_push_pull_reply(when, PushPullReply(follow.seq, states), node(1))
    s.sync.send_push_pull(when + 1, addr(2))
    (later,) = messages(s.p.sends(), PushPull)
    s.sync.on_push_pull_reply(when + 1, PushPullReply(later.seq, states), node(2))
    assert s.sync._quiet == set() and s.sync._quiet_follow_up == set()   # nothing left over
    echoes = s.merge.echoes[-3:]
    return echoes[0], echoes[1], echoes[2]


def test_a_node_that_knew_nobody_does_not_pass_on_what_its_join_taught_it() -> None:
    # The answer to its join and the follow-up exchange are merged without echo: the cluster
    # knows it all; a later exchange is merged as any other.
    assert _join_and_follow_up(Syncing()) == (False, False, True)


def test_a_node_that_knew_live_members_passes_on_what_its_join_taught_it() -> None:
    # A rejoin, or two clusters joined: its old peers may not know what it learned.
    assert _join_and_follow_up(Syncing(2)) == (True, True, True)


def test_a_follow_up_exchange_that_times_out_leaves_nothing_behind() -> None:
    s = Syncing()
    (seq,) = s.sync.join(0.0, [addr(1)])
    s.p.sends()
    s.p.message_from(addr(1), node(1))
    s.sync.on_join_reply(1.0, JoinReply(seq, True, "", (MemberState(node(1), addr(1), ALIVE, 0),)))
    s.run(1.0 + 2 * s.p.config.health_check_interval)
    assert len(s.sync._quiet) == 1
    s.run(100.0)
    assert s.sync._quiet == set() and s.sync.push_pulls == {}


def test_a_join_request_is_answered_on_its_connection_and_refused_with_a_reason() -> None:
    s = Syncing(1)
    joiner = MemberState(node(5), addr(5), ALIVE, 0)
    s.sync.on_join(0.0, Join(1, addr(5), (joiner,), PROTOCOL_VERSION, ""), False, None)
    assert s.p.sends() == [] and s.p.out.stats["dropped_join_datagram"] == 1
    s.sync.on_join(0.0, Join(2, addr(5), (joiner,), PROTOCOL_VERSION, "v0"), True, False)
    (no,) = s.p.sends()
    assert no.reply and isinstance(no.msg, JoinReply) and not no.msg.accepted
    assert "application version" in no.msg.reason
    s.p.message_from(addr(5), node(5))
    s.sync.on_join(0.0, Join(3, addr(5), (joiner,), PROTOCOL_VERSION, ""), True, True)
    (yes,) = s.p.sends()
    assert yes.addr == addr(5) and yes.reply and isinstance(yes.msg, JoinReply) and yes.msg.accepted
    assert [x.node for x in yes.msg.states] == [SELF, s.ids[0], node(5)]


def test_a_leave_tells_every_live_member_until_it_acknowledges() -> None:
    s = Syncing(3)
    s.p.table.set_state(0.0, s.p.table.members[s.ids[2]], DEAD)
    s.sync.leave(0.0)
    assert s.p.local.state is LEAVING
    left = s.p.local.left_update()
    assert s.news.named("queue") == [(0.0, left)]
    pings = messages(s.p.sends(), Ping)
    assert sorted(p.target for p in pings) == sorted(s.ids[:2])   # not the dead one
    assert all(p.updates == (left,) for p in pings)
    s.sync.leave_acked(pings[0].seq)
    retry = s.sync._leave_retry_interval()
    again = messages([a for a in s.run(retry)], Ping)
    assert [p.target for p in again] == [pings[1].target]
    actions = s.run(100.0)
    assert len(messages(actions, Ping)) == s.p.config.leave_attempts - 2
    assert s.p.out.stats["leave_unacknowledged"] == 1 and not s.sync.leave_pending
    s.sync.leave(200.0)                                               # once only
    assert s.p.sends() == []


def test_a_full_state_travels_only_on_a_connection_and_only_solicited_replies_are_merged() -> None:
    s = Syncing(1)
    push = PushPull(9, addr(4), (MemberState(node(4), addr(4), ALIVE, 0),))
    s.sync.on_push_pull(0.0, push, False, node(4))
    assert s.p.sends() == [] and s.p.out.stats["dropped_push_pull_datagram"] == 1
    s.sync.on_push_pull(0.0, push, True, node(4))
    (reply,) = s.p.sends()
    assert reply.reply and reply.msg == PushPullReply(9, s.sync.full_state())
    assert s.merge.calls == [((node(4),), False, node(4))]
    s.sync.on_push_pull_reply(0.0, PushPullReply(77, ()), node(4))
    assert s.p.out.stats["refused_unsolicited_reply"] == 1


def test_a_push_pull_round_asks_one_member_and_its_late_reply_is_not_merged() -> None:
    s = Syncing(3)
    s.sync.start(0.0, 1.0, 1.0)
    sent = [a for a in s.run(s.p.config.state_sync_interval) if hasattr(a, "msg")]
    (push,) = [x for x in sent if isinstance(x.msg, PushPull)]
    assert push.reliable and push.addr in {addr(i) for i in range(3)}
    cfg = s.p.config
    s.run(s.p.config.state_sync_interval + cfg.tcp_dial_timeout + cfg.tcp_deadline)
    s.sync.on_push_pull_reply(100.0, PushPullReply(push.msg.seq, ()), None)
    assert s.p.out.stats["refused_unsolicited_reply"] == 1 and s.merge.calls == []


def test_maintenance_forgets_the_long_dead_and_re_joins_when_alone() -> None:
    s = Syncing(2)
    s.sync.join(0.0, [addr(9)])
    s.run(s.p.config.join_timeout)                              # that join went unanswered
    s.p.sends()
    for m in list(s.p.table.members.values()):
        s.p.table.set_state(0.0, m, DEAD)
    cfg = s.p.config
    s.sync.maintenance(1.0)
    sent = s.p.sends()
    assert [x.addr for x in sent if isinstance(x.msg, Join)] == [addr(9)]   # alone: re-join
    assert s.p.out.stats["rejoins"] == 1
    assert len(messages(sent, PushPull)) == 1                    # and try to recover a dead one
    s.sync.maintenance(cfg.dead_node_retention_period + 1.0)
    assert s.p.table.members == {}                              # the dead are forgotten in time
    assert sorted(s.p.reconnect.targets(cfg.dead_node_retention_period + 1.0)) == [addr(0), addr(1)]


def test_maintenance_exchanges_state_with_one_dead_member() -> None:
    s = Syncing(3)
    s.p.table.set_state(0.0, s.p.table.members[s.ids[1]], DEAD)
    s.sync.maintenance(1.0)
    (push,) = s.p.sends()
    assert isinstance(push.msg, PushPull) and push.addr == addr(1) and push.reliable
    assert s.p.out.stats["recovery_attempts"] == 1
