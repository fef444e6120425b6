"""Reconnecting after a partition longer than ``dead_node_retention_period``: the pure
:class:`Reconnector`, then cores on a virtual clock that forget each other and meet again."""

from __future__ import annotations

import random

from gossip.config import Config
from gossip.messages import Alive, Dead, Gossip, PushPull
from gossip.node import NodeID, NodeState
from gossip.protocol.reconnect import Reconnector

from .harness import A, B, C, CoreCluster, lone, sends

ALIVE, DEAD = NodeState.ALIVE, NodeState.DEAD


class NeverTry(random.Random):
    def random(self) -> float:
        return 0.999999


def test_forgotten_addresses_are_kept_until_their_timeout() -> None:
    r = Reconnector(timeout=100.0, limit=8)
    r.forgotten(A, "a:1", 10.0)
    r.forgotten(B, "b:1", 20.0)
    assert r.targets(50.0) == ["a:1", "b:1"]
    r.known(A)                               # back in the table: not a target any more
    assert r.targets(50.0) == ["b:1"]
    assert r.targets(120.0) == [] and len(r) == 0
    r.forgotten(C, "c:1", 0.0)
    r.forgotten(C, "c:2", 1.0)               # one address per member, the latest
    assert r.targets(2.0) == ["c:2"]


def test_the_longest_forgotten_go_first_beyond_the_limit() -> None:
    r = Reconnector(timeout=1000.0, limit=2)
    for i in range(5):
        r.forgotten(NodeID(int=100 + i), f"m{i}:1", float(i))
    assert r.targets(10.0) == ["m3:1", "m4:1"]
    assert Reconnector(timeout=0.0, limit=8).targets(0.0) == []


def test_pick_skips_addresses_in_use_and_adds_the_seeds() -> None:
    r = Reconnector(timeout=100.0, limit=8)
    r.forgotten(A, "a:1", 0.0)
    r.forgotten(B, "b:1", 0.0)
    # As many targets as live members: a try every round.
    picked = {r.pick(1.0, random.Random(k), ["seed:1", "a:1"], {"b:1"}, live=1) for k in range(40)}
    assert picked == {"a:1", "seed:1"}
    assert r.pick(1.0, random.Random(1), [], {"a:1", "b:1"}, live=1) is None
    # Serf's damping: 2 targets among 100 live members: a try in about 2 % of the rounds.
    rng = random.Random(7)
    tries = sum(r.pick(1.0, rng, [], set(), live=100) is not None for _ in range(2000))
    assert 20 <= tries <= 70
    assert r.pick(1.0, NeverTry(1), [], set(), live=1) is not None    # 2 targets, 1 live: always


def config(**kw: object) -> Config:
    values: dict[str, object] = {"dead_node_retention_period": 5.0, "reconnect_interval": 10.0, **kw}
    return Config.lan(**values)


def test_a_member_forgotten_while_dead_is_retried_one_only_named_is_not() -> None:
    core = lone(config())
    core.receive(0.0, "a:1", Gossip((Alive(A, 1, "a:1"),)), sender=A)     # A shows itself
    core.receive(0.0, "a:1", Gossip((Alive(C, 1, "c:1"),)), sender=A)     # C: only A names it
    core.receive(0.0, "a:1", Gossip((Alive(B, 1, "b:1"),)), sender=A)
    core.receive(0.1, "b:1", Gossip((Alive(B, 1, "b:1"),)), sender=B)     # B shows itself
    core.receive(1.0, "x:1", Gossip((Dead(A, 1, B), Dead(C, 1, B))))
    core.receive(1.0, "b:1", Gossip((Dead(B, 1, B),)), sender=B)          # B leaves
    core.actions_to_perform()
    core.tick(60.0)                  # long past the retention: every one of them is forgotten
    assert not core.members
    assert core.reconnect.targets(60.0) == ["a:1"]
    pushed = [s.addr for s in sends(core) if isinstance(s.msg, PushPull)]
    core.tick(200.0)
    pushed += [s.addr for s in sends(core) if isinstance(s.msg, PushPull)]
    assert pushed and set(pushed) == {"a:1"} and core.stats["reconnect_attempts"] >= 1


def test_two_sides_that_forgot_each_other_merge_after_the_heal() -> None:
    cfg = config()
    cc = CoreCluster(4, cfg, seed=3)
    for a in (0, 1):
        for b in (2, 3):
            cc.cut(a, b)
    cc.run(60.0)
    assert all(cc.state(a, b) is NodeState.UNKNOWN and cc.state(b, a) is NodeState.UNKNOWN
               for a in (0, 1) for b in (2, 3))
    cc.heal()
    cc.run(cfg.reconnect_interval + 20.0)
    assert all(cc.state(i, j) is ALIVE for i in range(4) for j in range(4) if i != j)
    assert sum(c.stats.get("reconnect_attempts", 0) for c in cc.cores) >= 1


def test_reconnect_off_leaves_them_apart() -> None:
    cfg = config(reconnect_interval=0.0)
    cc = CoreCluster(4, cfg, seed=3)
    for a in (0, 1):
        for b in (2, 3):
            cc.cut(a, b)
    cc.run(60.0)
    cc.heal()
    cc.run(120.0)
    assert cc.state(0, 2) is NodeState.UNKNOWN and cc.state(2, 0) is NodeState.UNKNOWN
