"""forget and tags in the simulator, on a virtual clock, with loss: a forgotten member leaves
every table within a few gossip rounds and stale news does not bring it back; a tag change
reaches every member."""

from __future__ import annotations

import pytest

from gossip.config import Config
from gossip.node import NodeState
from gossip.sim.network import LinkModel
from gossip.sim.simulation import Simulation


def cluster(n: int, seed: int, loss: float = 0.0) -> Simulation:
    sim = Simulation(Config.lan(), seed, LinkModel(loss=loss))
    for _ in range(n):
        sim.add_node()
    sim.bootstrap(list(range(n)))
    return sim


def holders(sim: Simulation, target: int) -> list[int]:
    gone = sim.nodes[target].id
    return [i for i, node in enumerate(sim.nodes) if node.running and gone in node.core.members]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_forgotten_member_leaves_every_table_within_a_few_rounds(seed: int) -> None:
    sim = cluster(24, seed, loss=0.05)
    sim.run_until(5.0)
    sim.crash(23)
    gone = sim.nodes[23].id

    def all_dead() -> bool:
        return all((m := n.core.members.get(gone)) is not None and m.state is NodeState.DEAD
                   for n in sim.nodes[:23])

    sim.run_until(60.0, stop=all_dead)
    assert all_dead()
    with pytest.raises(ValueError):
        sim.forget(0, 1)                     # alive: refused
    assert sim.forget(0, 23) is True
    start = sim.now
    sim.run_until(start + 30.0, stop=lambda: not holders(sim, 23))
    assert holders(sim, 23) == [], f"seed {seed}"
    # "A few gossip rounds" (0.2 s each), far from the retention period (hours).
    assert sim.now - start < 3.0
    sim.run_until(sim.now + 60.0)             # push/pull rounds: nothing brings it back
    assert holders(sim, 23) == []


def test_a_member_that_missed_the_forget_does_not_bring_the_record_back() -> None:
    sim = cluster(8, 7)
    sim.run_until(3.0)
    sim.crash(7)
    sim.run_until(40.0)
    sim.net.partition([[0, 1, 2, 3, 4, 5], [6]])   # 6 misses the forget, and still holds 7 dead
    sim.forget(0, 7)
    sim.run_until(sim.now + 10.0)
    assert holders(sim, 7) == [6]
    sim.net.heal()
    sim.run_until(sim.now + 120.0)           # push/pull with 6: dead news of 7 is ignored
    assert all(i in (6,) for i in holders(sim, 7))
    assert all(sim.nodes[7].id not in n.core.members for n in sim.nodes[:6])


@pytest.mark.parametrize("seed", [1, 2])
def test_a_tag_change_reaches_every_member(seed: int) -> None:
    sim = cluster(40, seed, loss=0.05)
    sim.run_until(2.0)
    sim.set_metadata(5, {"zone": "eu"}, frozenset({"gpu"}))
    me = sim.nodes[5].id

    def everyone_sees(tags: frozenset[str]) -> bool:
        return all(n.core.members[me].tags == tags for i, n in enumerate(sim.nodes) if i != 5)

    sim.run_until(sim.now + 30.0, stop=lambda: everyone_sees(frozenset({"gpu"})))
    assert everyone_sees(frozenset({"gpu"}))
    sim.set_metadata(5, {"zone": "eu"}, frozenset())
    sim.run_until(sim.now + 30.0, stop=lambda: everyone_sees(frozenset()))
    assert everyone_sees(frozenset())
