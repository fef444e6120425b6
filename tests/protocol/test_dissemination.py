"""Dissemination driven alone: what the queues send, where, how often, and when rounds sleep."""

from __future__ import annotations

import heapq

from gossip.config import Config
from gossip.messages import Alive, Dead, Gossip, Suspect, update_size
from gossip.protocol.dissemination import Dissemination
from gossip.protocol.outbox import T_GOSSIP

from .parts import ALIVE, DEAD, SELF, Parts, addr, messages, node


def gossiping(n: int, config: Config | None = None) -> tuple[Parts, Dissemination]:
    p = Parts(config)
    p.bootstrap(n)
    news = Dissemination(p.config, p.out, p.table)
    p.table.watch(p.watcher, news.forget)
    return p, news


def run_rounds(p: Parts, news: Dissemination, until: float) -> list[tuple[float, str, Gossip]]:
    """Run gossip rounds as the core's tick does; return (when, to, gossip) of every send."""
    sent = []
    while p.out.timers and p.out.timers[0][0] <= until:
        when, _, kind, _ = heapq.heappop(p.out.timers)
        if kind == T_GOSSIP:
            news.round(when)
            sent += [(when, s.addr, s.msg) for s in p.sends() if isinstance(s.msg, Gossip)]
    return sent


def test_an_update_goes_to_fan_out_members_a_limited_number_of_times_then_rounds_sleep() -> None:
    p, news = gossiping(20)
    news.start(0.0, 0.05)                       # the ticker beats at 0.05 + k * interval
    heapq.heappop(p.out.timers)
    news.armed = False                          # as after an idle round
    update = Suspect(node(3), 0, SELF)
    news.queue(1.0, update)
    # The update waits for the ticker's next beat, not a whole interval from now.
    interval = p.config.dissemination_interval
    tick = news.next_tick(1.0)
    assert p.timers(T_GOSSIP) == [(tick, None)] and 1.0 <= tick < 1.0 + interval
    assert abs((tick - 0.05) / interval - round((tick - 0.05) / interval)) < 1e-9
    sent = run_rounds(p, news, 60.0)
    assert all(g.updates == (update,) for _, _, g in sent)
    assert len(sent) == news.retransmit_limit()             # log-scaled retransmissions
    per_round: dict[float, set[str]] = {}
    for when, to, _ in sent:
        per_round.setdefault(when, set()).add(to)
    assert all(len(tos) <= p.config.dissemination_fan_out for tos in per_round.values())
    assert not news.armed and p.timers(T_GOSSIP) == []      # nothing left: no timer spins
    news.queue(70.0, update)
    assert p.timers(T_GOSSIP) == [(news.next_tick(70.0), None)]
    assert 70.0 <= news.next_tick(70.0) < 70.0 + interval


def test_in_a_small_cluster_every_live_peer_may_hear_each_update() -> None:
    p, news = gossiping(3, Config.local())
    assert news.retransmit_limit() >= 3


def test_an_update_too_large_for_a_datagram_is_refused_not_queued() -> None:
    p, news = gossiping(3)
    news.queue(0.0, Alive(node(9), 0, "127.0.0.1:" + "9" * 1400))
    assert p.out.stats["refused_broadcast_oversize"] == 1
    assert len(news.broadcasts) == len(news.broadcasts_low) == 0


def test_news_about_strangers_waits_behind_news_about_members_that_showed_themselves() -> None:
    p, news = gossiping(3)
    p.message_from("127.0.0.9:1")
    p.admit(0.0, Alive(node(7), 0, addr(7)))                      # only a stranger named it
    news.queue(0.0, Suspect(node(7), 0, SELF))
    news.queue(0.0, Suspect(node(1), 0, SELF))
    assert len(news.broadcasts) == 1 and len(news.broadcasts_low) == 1
    taken = news.take(news.budget(), news.retransmit_limit(), None)
    assert [u.node for u in taken] == [node(1), node(7)]


def test_a_member_is_not_sent_news_of_its_own_liveness_but_is_told_what_it_is_accused_of() -> None:
    p, news = gossiping(3)
    news.queue(0.0, Alive(node(0), 1, addr(0)))
    news.queue(0.0, Suspect(node(0), 1, SELF))      # replaces the alive (newer news, same member)
    news.queue(0.0, Alive(node(1), 1, addr(1)))
    to_0 = news.piggyback((), node(0))
    assert {type(u) for u in to_0 if u.node == node(0)} == {Suspect}
    assert news.piggyback((), node(1)) == (Suspect(node(0), 1, SELF),)
    extra = (Dead(node(2), 0, SELF),)
    assert news.piggyback(extra, None)[:1] == extra


def test_extra_updates_are_not_repeated_and_take_their_room_in_the_packet() -> None:
    p, news = gossiping(60)
    for i in range(1, 60):                          # more news than one packet holds
        news.queue(0.0, Suspect(node(i), 1, SELF))
    mine = Alive(node(0), 3, addr(0), {"k": "v" * 300})
    news.queue(0.0, mine)                           # the newest: taken first
    out = news.piggyback((mine,), None)
    assert out.count(mine) == 1 and out[0] == mine  # queued too: sent once, as the extra
    assert sum(map(update_size, out)) <= news.budget()


def test_packets_to_members_held_dead_carry_news_without_using_it_up() -> None:
    p, news = gossiping(3)
    p.table.set_state(0.0, p.table.members[node(0)], DEAD)
    news.queue(0.0, Suspect(node(1), 0, SELF))
    limit = news.retransmit_limit()
    for _ in range(limit + 2):
        assert news.piggyback((), node(0)) == (Suspect(node(1), 0, SELF),)
    assert p.table.members[node(1)].state is ALIVE
    for _ in range(limit):
        assert news.piggyback((), node(2))
    assert news.piggyback((), node(2)) == ()


def test_a_peer_gossiping_a_stale_accusation_is_corrected_once() -> None:
    p, news = gossiping(3)
    fresher = [Alive(node(1), 4, addr(1))]
    news.correct(node(0), fresher)
    news.correct(node(0), fresher)
    (gossip,) = messages(p.sends(), Gossip)
    assert gossip == Gossip(tuple(fresher))
    assert p.out.stats["corrections"] == 1
    news.correct(node(0), [Alive(node(1), 5, addr(1))])           # newer still: told again
    assert len(messages(p.sends(), Gossip)) == 1


def test_forgetting_a_member_drops_its_queued_news() -> None:
    p, news = gossiping(3)
    news.queue(0.0, Suspect(node(2), 0, SELF))
    p.table.remove(0.0, p.table.members[node(2)])
    assert len(news.broadcasts) == 0
