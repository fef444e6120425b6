"""The outbox the core's parts write to: actions in order, timers in time order, counters."""

from __future__ import annotations

import heapq

from gossip.messages import Ack, Ping
from gossip.node import NodeID, NodeState
from gossip.protocol.actions import JoinResult, MemberEvent, Send
from gossip.protocol.outbox import T_GOSSIP, T_PROBE, T_SUSPICION, Outbox


def test_actions_come_out_once_in_the_order_they_were_written() -> None:
    out = Outbox()
    out.send("127.0.0.1:1", Ping(1, NodeID(int=2), "127.0.0.1:2"))
    out.reply("127.0.0.1:3", Ack(1), True)
    out.reply("127.0.0.1:4", Ack(2), False)
    ev = MemberEvent("state", NodeID(int=2), "127.0.0.1:2", NodeState.ALIVE, NodeState.UNKNOWN, 0, {}, 0, 1, "", 0.0)
    out.emit(ev)
    out.send("127.0.0.1:5", Ping(2, NodeID(int=2), "127.0.0.1:2"), True)
    out.emit(JoinResult("127.0.0.1:6", False, "no"))
    actions = out.drain()
    assert actions == [
        Send("127.0.0.1:1", Ping(1, NodeID(int=2), "127.0.0.1:2")),
        Send("127.0.0.1:3", Ack(1), True, True),          # an answer on its connection
        Send("127.0.0.1:4", Ack(2), False, False),        # an answer by datagram
        ev,
        Send("127.0.0.1:5", Ping(2, NodeID(int=2), "127.0.0.1:2"), True, False),
        JoinResult("127.0.0.1:6", False, "no"),
    ]
    assert out.drain() == []


def test_a_drained_list_is_the_callers_and_later_actions_go_to_a_new_one() -> None:
    out = Outbox()
    out.send("127.0.0.1:1", Ack(1))
    first = out.drain()
    out.send("127.0.0.1:1", Ack(2))
    assert [s.msg for s in first] == [Ack(1)]          # type: ignore[union-attr]
    assert [s.msg for s in out.drain()] == [Ack(2)]    # type: ignore[union-attr]


def test_timers_run_in_time_order_and_ties_in_the_order_they_were_set() -> None:
    out = Outbox()
    assert out.next_deadline() == float("inf")
    out.schedule(2.0, T_PROBE, None)
    out.schedule(1.0, T_SUSPICION, NodeID(int=9))
    out.schedule(1.0, T_GOSSIP, None)                  # same instant, set later: runs later
    out.schedule(1.0, T_PROBE, "a key that does not compare with a NodeID")
    assert out.next_deadline() == 1.0
    fired = []
    while out.timers:
        when, _, kind, key = heapq.heappop(out.timers)
        fired.append((when, kind))
    assert fired == [(1.0, T_SUSPICION), (1.0, T_GOSSIP), (1.0, T_PROBE), (2.0, T_PROBE)]


def test_counters_and_request_numbers() -> None:
    out = Outbox()
    out.count("probes")
    out.count("probes")
    out.count("refused_x")
    assert out.stats == {"probes": 2, "refused_x": 1}
    assert [out.next_seq() for _ in range(3)] == [1, 2, 3]
    out._seq = 0xFFFFFFFF - 1
    assert [out.next_seq() for _ in range(3)] == [0xFFFFFFFF, 0, 1]   # u32 on the wire: wraps
