"""forget: an operator removes a dead or left member from every table at once (sans-I/O)."""

from __future__ import annotations

import pytest

from gossip.config import Config
from gossip.errors import DecodeError
from gossip.messages import Alive, Dead, Forget, Gossip, Ping, from_wire, to_wire
from gossip.node import NodeID, NodeState
from gossip.protocol.actions import EVENT_REMOVED, MemberEvent

from .harness import A, B, CoreCluster, lone, sends, with_member

DEAD, ALIVE = NodeState.DEAD, NodeState.ALIVE


def _dead_everywhere(n: int = 5) -> CoreCluster:
    """A cluster of ``n`` cores in which the last one crashed and is held dead by all."""
    c = CoreCluster(n)
    c.down.add(n - 1)
    c.run(30.0)
    assert all(c.state(i, n - 1) is DEAD for i in range(n - 1))
    return c


def test_forget_removes_the_record_from_every_table_within_a_few_rounds() -> None:
    c = _dead_everywhere()
    gone = c.cores[4].id
    assert c.cores[0].forget(c.now, gone) is True
    c.drain_all()
    assert gone not in c.cores[0].members
    c.run(2.0)   # a few gossip rounds (dissemination_interval 0.2 s), far below the retention
    assert c.config.dead_node_retention_period > 60
    for i in range(4):
        assert gone not in c.cores[i].members, i
        assert c.cores[i].stats.get("members_forgotten") == 1
        # Handlers see the member go (EVENT_REMOVED), and it is not retried after a heal.
        assert any(isinstance(ev, MemberEvent) and ev.kind == EVENT_REMOVED and ev.node == gone
                   for j, ev in c.events if j == i)
        assert len(c.cores[i].reconnect) == 0


def test_forget_travels_in_gossip_messages_never_on_probes() -> None:
    c = _dead_everywhere()
    start = len(c.sent)
    c.cores[0].forget(c.now, c.cores[4].id)
    c.drain_all()
    c.run(2.0)
    carried = [type(s.msg).__name__ for i, s in c.sent[start:]
               if any(isinstance(u, Forget) for u in getattr(s.msg, "updates", ()))]
    assert carried and set(carried) == {"Gossip"}


def test_a_live_or_suspect_member_cannot_be_forgotten() -> None:
    for state in (NodeState.ALIVE, NodeState.SUSPECT):
        core = with_member(state)
        with pytest.raises(ValueError, match="only a dead or left member"):
            core.forget(1.0, A)
        assert A in core.members
    core = lone()
    with pytest.raises(ValueError, match="local node"):
        core.forget(0.0, core.id)
    assert core.forget(0.0, B) is False   # unknown: nothing to forget


def test_a_forged_forget_of_a_live_member_is_refused() -> None:
    # A cluster member (shown itself, speaking from its own host) forges a forget of A, alive.
    core = with_member(NodeState.ALIVE, src="a")
    core.receive(1.0, "b:1", Gossip((Alive(B, 1, "b:1"),)), sender=B)
    core.receive(2.0, "b:1", Gossip((Forget(A, 5, B),)), sender=B)
    assert core.members[A].state is ALIVE
    assert core.stats["refused_forget_live"] == 1


def test_a_stranger_cannot_forget_even_a_dead_member() -> None:
    core = with_member(NodeState.DEAD)
    # An unsealed packet from a host that is no member's: not from inside the cluster.
    core.receive(1.0, "evil:1", Gossip((Forget(A, 5, B),)))
    assert A in core.members and core.stats["refused_forget_stranger"] == 1
    # The same news sealed with a cluster key is authentic: it is applied.
    core.receive(2.0, "b:1", Gossip((Forget(A, 5, B),)), sender=B, authenticated=True)
    assert A not in core.members


def test_a_stale_forget_is_refused() -> None:
    core = with_member(NodeState.DEAD, inc=7)
    core.receive(1.0, "b:1", Gossip((Forget(A, 6, B),)), sender=B, authenticated=True)
    assert A in core.members and core.stats["refused_forget_stale"] == 1


def test_stale_news_does_not_bring_a_forgotten_member_back_but_its_own_word_does() -> None:
    core = with_member(NodeState.DEAD, inc=5)
    assert core.forget(1.0, A) is True
    core.actions_to_perform()
    # A peer that missed the death gossips A alive at its old incarnation: refused.
    core.receive(2.0, "b:1", Gossip((Alive(A, 5, "a:1"),)), sender=B, authenticated=True)
    assert A not in core.members and core.stats["refused_forgotten"] == 1
    # A itself comes back (a restarted process, incarnation 0): it joins as a new member.
    core.receive(3.0, "a:1", Gossip((Alive(A, 0, "a:1"),)), sender=A, authenticated=True)
    assert core.members[A].state is ALIVE and core.members[A].incarnation == 0
    assert not core._table.forgotten


def test_forgotten_marks_expire_and_are_bounded() -> None:
    cfg = Config.lan()
    cfg.max_members = 2
    core = with_member(NodeState.DEAD, config=cfg)
    core.forget(1.0, A)
    assert A in core._table.forgotten
    core._table.expire(1.0 + cfg.dead_node_retention_period)
    assert not core._table.forgotten
    table = core._table
    for k in range(3):   # more marks than max_members: the oldest go
        table.forgotten[NodeID(int=100 + k)] = (0, 0.0)
    core.receive(5.0, "x", Gossip((Alive(B, 0, "b:1"), Dead(B, 0, A))))
    assert B in core.members                   # news of another member passes the marks
    core.forget(5.0, B)
    assert len(table.forgotten) == cfg.max_members and B in table.forgotten
    assert NodeID(int=100) not in table.forgotten and NodeID(int=101) not in table.forgotten


def test_a_forget_of_this_node_is_refuted() -> None:
    core = lone()
    inc = core.incarnation
    core.receive(1.0, "b:1", Gossip((Forget(core.id, inc, B),)), sender=B, authenticated=True)
    assert core.incarnation == inc + 1


def test_forget_round_trips_on_the_wire() -> None:
    f = Forget(A, 3, B)
    t, v = to_wire(Gossip((f,)))
    assert from_wire(t, v) == Gossip((f,))
    t, v = to_wire(Ping(1, A, "a:1", (f,)))
    assert from_wire(t, v).updates == (f,)
    with pytest.raises(DecodeError, match="forget update"):
        from_wire(t, [1, A.bytes, "a:1", [[3, A.bytes, 3]], -1])
