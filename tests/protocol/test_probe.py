"""Probing driven alone: pings, ping-reqs, nacks and verdicts, read from the outbox."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from gossip.config import Config
from gossip.messages import Ack, Dead, Nack, Ping, PingReq, Suspect, Update
from gossip.node import NodeID
from gossip.protocol.outbox import T_PROBE, T_PROBE_END, T_PROBE_TIMEOUT, T_RELAY_TIMEOUT
from gossip.protocol.probe import NACK_SHARE, Prober
from gossip.protocol.rtt import RttHistogram

from .parts import DEAD, SELF, SUSPECT, Parts, Recorder, addr, messages, node


class Probing:
    def __init__(self, n: int, config: Config | None = None) -> None:
        self.p = Parts(config)
        self.ids = self.p.bootstrap(n)
        self.rec = Recorder()
        self.rtt = RttHistogram()

        def piggyback(extra: Iterable[Update], to: NodeID | None) -> tuple[Update, ...]:
            return tuple(extra)

        self.probe = Prober(self.p.config, self.p.out, self.p.table, self.p.local, self.p.awareness, self.rtt,
                            piggyback, self.rec.merge, self.rec.suspect, self.rec.leave_acked)

    def run(self, until: float) -> list[Any]:
        """Run the prober's timers due by ``until``; return the sends."""
        out, probe = self.p.out, self.probe
        sent = []
        while out.timers and out.timers[0][0] <= until:
            when, _, kind, key = heapq.heappop(out.timers)
            if kind == T_PROBE:
                probe.round(when)
            elif kind == T_PROBE_TIMEOUT:
                probe.timeout(when, key)
            elif kind == T_PROBE_END:
                probe.end(when, key)
            elif kind == T_RELAY_TIMEOUT:
                probe.relay_timeout(key)
            sent += self.p.sends()
        return sent


def test_a_round_pings_one_member_and_an_acked_probe_ends_quietly() -> None:
    t = Probing(4)
    t.probe.start(0.0, 0.25)
    assert t.p.timers(T_PROBE) == [(0.25, None)]
    (ping,) = messages(t.run(0.25), Ping)
    assert ping.target in t.ids and ping.source_addr == t.p.local.addr
    target = t.p.table.members[ping.target]
    assert t.p.timers(T_PROBE_TIMEOUT) == [(0.25 + t.p.config.ping_timeout, ping.seq)]
    t.probe.on_ack(0.27, Ack(ping.seq), ping.target)
    assert messages(t.run(1.25), PingReq) == []
    assert t.rec.named("suspect") == []
    assert target.rtt is not None and abs(target.rtt - 0.02) < 1e-9
    assert t.p.out.stats["acks"] == 1 and t.p.out.stats["probes"] == 2


def test_an_unanswered_ping_asks_helpers_then_suspects_the_target() -> None:
    t = Probing(5)
    t.probe.start(0.0, 0.0)
    (ping,) = messages(t.run(0.0), Ping)
    sent = t.run(t.p.config.ping_timeout)
    reqs = messages(sent, PingReq)
    assert len(reqs) == t.p.config.indirect_checks
    assert all(r.target == ping.target and r.seq == ping.seq for r in reqs)
    assert all(r.timeout == t.p.config.health_check_interval - t.p.config.ping_timeout for r in reqs)
    tcp = [s for s in sent if isinstance(s.msg, Ping)]
    assert len(tcp) == 1 and tcp[0].reliable                    # and once over a connection
    t.probe.on_nack(ping.seq)                                   # one helper is fine; two are silent
    t.run(t.p.config.health_check_interval)
    ((now, suspect),) = t.rec.named("suspect")
    assert suspect == Suspect(ping.target, 0, SELF) and now == t.p.config.health_check_interval
    assert t.p.awareness.score == 2                             # the missing nacks count against us
    assert t.p.out.stats["failed_probes"] == 1


def test_a_ping_to_a_suspect_carries_the_suspicion_so_it_refutes_at_once() -> None:
    t = Probing(1)
    x = t.p.table.members[t.ids[0]]
    t.p.table.set_state(0.0, x, SUSPECT)
    t.probe.start(0.0, 0.0)
    (ping,) = messages(t.run(0.0), Ping)
    assert ping.suspect_inc == 0 and ping.updates == (Suspect(x.node, 0, SELF),)


def test_a_ping_is_acked_where_it_came_from_with_our_refutation() -> None:
    t = Probing(2)
    t.probe.on_ping(1.0, "127.0.0.9:5", Ping(7, SELF, "127.0.0.9:1", (), 0), None, False)
    (ack,) = t.p.sends()
    assert ack.addr == "127.0.0.9:5" and ack.msg == Ack(7)     # never to an address it merely names
    assert t.p.local.incarnation == 1                           # the buddy system: refuted at once
    t.probe.on_ping(1.0, "127.0.0.9:5", Ping(8, node(99), "127.0.0.9:1"), None, False)
    assert t.p.sends() == [] and t.p.out.stats["misdirected_pings"] == 1


def test_a_member_we_hold_dead_is_told_so_in_the_ack() -> None:
    t = Probing(2)
    x = t.p.table.members[t.ids[0]]
    t.p.table.set_state(0.0, x, DEAD)
    t.probe.on_ping(1.0, addr(0), Ping(3, SELF, addr(0), (Suspect(SELF, 0, x.node),)), x.node, True)
    (ack,) = t.p.sends()
    assert ack.reply and ack.msg == Ack(3, (Dead(x.node, 0, SELF),))
    assert t.rec.named("merge") == [(1.0, (Suspect(SELF, 0, x.node),), x.node)]


def test_a_relayed_ping_forwards_the_ack_or_nacks_in_time() -> None:
    t = Probing(3)
    target = t.ids[0]
    t.probe.on_ping_req(0.0, addr(1), PingReq(40, target, addr(0), addr(1), True, 0.5), t.ids[1], False)
    (ping,) = messages(t.p.sends(), Ping)
    assert t.p.timers(T_RELAY_TIMEOUT) == [(NACK_SHARE * 0.5, ping.seq)]
    t.probe.on_ack(0.1, Ack(ping.seq), target)
    (fwd,) = t.p.sends()
    assert fwd.addr == addr(1) and fwd.msg == Ack(40)
    t.probe.on_ping_req(1.0, addr(1), PingReq(41, target, addr(0), addr(1), True, 0.5), t.ids[1], False)
    t.p.sends()
    sent = t.run(1.0 + NACK_SHARE * 0.5)
    assert [s.msg for s in sent] == [Nack(41)]


def test_a_ping_req_for_an_unknown_member_is_nacked_and_not_run() -> None:
    t = Probing(1)
    t.probe.on_ping_req(0.0, addr(1), PingReq(5, node(77), "127.0.0.77:1", addr(1), True, 0.5), None, False)
    assert [s.msg for s in t.p.sends()] == [Nack(5)]
    assert t.p.out.stats["refused_ping_req_target"] == 1


def test_an_ack_of_no_probe_or_relay_may_acknowledge_our_leave() -> None:
    t = Probing(1)
    t.probe.on_ack(0.0, Ack(1234), t.ids[0])
    assert t.rec.named("leave_acked") == [(1234,)]
