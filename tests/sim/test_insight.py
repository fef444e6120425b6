"""Provenance, flapping and partition events in the deterministic simulator (virtual time).

Each failure message carries what replays it.
"""

from __future__ import annotations

from gossip.config import Config
from gossip.messages import Suspect
from gossip.node import NodeID, NodeState
from gossip.protocol.flap import MemberFlapping
from gossip.protocol.insight import ClusterEvent
from gossip.protocol.partition import PartitionHealed, PartitionSuspected
from gossip.protocol.actions import Send, Trace
from gossip.sim import Simulation
from gossip.sim.network import LinkModel
from gossip.sim.scenarios import ScenarioParams, run_scenario

DEAD = NodeState.DEAD


def cluster(n: int, seed: int, config: Config | None = None) -> Simulation:
    sim = Simulation(config or Config.lan(), seed, LinkModel())
    for _ in range(n):
        sim.add_node()
    sim.bootstrap(list(range(n)))
    return sim


def test_provenance_of_a_crash_names_the_real_first_accuser_and_the_confirmers() -> None:
    n, seed = 40, 21
    sim = cluster(n, seed)
    victim = 17
    vid = sim.nodes[victim].id
    crash_at = 5.0
    # Ground truth, from the network: who sent the victim a suspicion of its own making after
    # the crash (a node whose probe of it failed), and when each one first did so.
    accused_at: dict[NodeID, float] = {}
    drain = sim._drain

    def spy(node: object) -> None:
        core = node.core  # type: ignore[attr-defined]
        actions = core.actions_to_perform()
        for a in actions:
            if isinstance(a, Send) and sim.now >= crash_at:
                for u in getattr(a.msg, "updates", ()):
                    if isinstance(u, Suspect) and u.node == vid and u.sender == core.id:
                        accused_at.setdefault(core.id, sim.now)
        core._out.actions[:0] = actions
        drain(node)  # type: ignore[arg-type]

    sim._drain = spy  # type: ignore[method-assign]
    sim.schedule(crash_at, lambda: sim.crash(victim))
    sim.run_until(60.0, stop=lambda: sim.targets.get(victim) is not None and sim.targets[victim].all is not None)
    replay = f"replay: Simulation(Config.lan(), {seed}) with {n} nodes, crash {victim} at {crash_at}"
    assert sim.targets[victim].all is not None, replay

    survivors = [nd for i, nd in enumerate(sim.nodes) if i != victim]
    first_accuser = min(accused_at, key=accused_at.__getitem__)
    seen_relays = 0
    for nd in survivors:
        exp = nd.core.insight.explain(sim.now, vid)
        assert exp is not None and exp.state is DEAD, replay
        ep = exp.episodes[-1]
        assert ep.outcome == "dead" and ep.started_at >= crash_at, replay
        # The accuser is a member that really accused it (or this node, from its own probe).
        if ep.via == "probe":
            assert ep.accuser == nd.id, replay
        else:
            assert ep.accuser in accused_at and accused_at[ep.accuser] <= ep.started_at, replay
            if ep.via == "gossip":
                assert ep.relayed_by not in (None, ep.accuser), replay
                seen_relays += 1
        for c in ep.confirmations:
            assert c.node != ep.accuser and c.node in accused_at and c.new_timeout < c.timeout, replay
            if c.via == "probe":
                assert c.node == nd.id, replay            # its own probe failed: it tells others later
            else:
                assert accused_at[c.node] <= c.at, replay
        assert len(ep.confirmations) <= ep.expected, replay
        # Who declared it dead: this node's timer, or a member whose own timer ran out.
        assert ep.declared_by is not None, replay
        if ep.by_timeout:
            assert ep.declared_by == nd.id, replay
        else:
            declarer = sim.nodes[sim.by_id[ep.declared_by]].core.insight.explain(sim.now, vid)
            assert declarer is not None and declarer.episodes[-1].by_timeout, replay
    # The first member whose probe failed names itself, from its own probe.
    own = sim.nodes[sim.by_id[first_accuser]].core.insight.explain(sim.now, vid)
    assert own is not None and (own.episodes[-1].accuser, own.episodes[-1].via) == (first_accuser, "probe")
    assert seen_relays > 0, "no accusation was relayed by gossip: the test proves less than it says"
    assert sum(len(nd.core.insight.explain(sim.now, vid).episodes[-1].confirmations)  # type: ignore[union-attr]
               for nd in survivors) > 0, replay


def test_a_flapping_member_fires_member_flapping() -> None:
    n, seed = 20, 5
    cfg = Config.lan(flap_threshold=6, flap_window=120.0)
    sim = cluster(n, seed, cfg)
    flappy = 3
    events: list[tuple[int, ClusterEvent]] = []
    sim.on_cluster_event = lambda observer, ev: events.append((observer, ev))
    others = [i for i in range(n) if i != flappy]
    dead_flappy: list[int] = []
    sim.on_event = lambda observer, ev: dead_flappy.append(observer) if (
        ev.node == sim.nodes[flappy].id and ev.state is DEAD) else None
    # Cut it off for 3 s (suspected, not yet dead: the timeout is over 5 s), then let it back
    # for 7 s (it refutes), four times over.
    for k in range(4):
        t = 5.0 + 10.0 * k
        sim.schedule(t, lambda: sim.net.partition([[flappy], others]))
        sim.schedule(t + 3.0, sim.net.heal)
    sim.run_until(50.0)
    replay = f"replay: Simulation(Config.lan(flap_threshold=6), {seed}) with {n} nodes"
    flapping = [(o, ev) for o, ev in events if isinstance(ev, MemberFlapping)]
    assert flapping, replay
    fid = sim.nodes[flappy].id
    assert all(ev.node == fid and ev.score >= 6 and ev.threshold == 6 for _, ev in flapping), replay
    assert len({o for o, _ in flapping}) >= n // 2, replay          # most members saw it flap
    assert len(flapping) == len({o for o, _ in flapping}), replay   # once per observer
    assert not dead_flappy, replay                                  # it was never declared dead
    scores = [sim.nodes[o].core.insight.flap_scores(sim.now).get(fid, 0) for o in others]
    assert max(scores) >= 6, replay
    assert not [ev for _, ev in events if isinstance(ev, (PartitionSuspected, PartitionHealed))], replay


def test_a_60_40_partition_is_suspected_on_both_sides_and_heals() -> None:
    r = run_scenario(ScenarioParams(scenario="partition", nodes=50, seed=3, split=0.6,
                                    partition_duration=40.0, duration=200.0))
    replay = (f"replay: python -m gossip.sim --scenario partition --nodes 50 --seed 3 --split 0.6 "
              f"--partition-duration 40 --duration 200")
    assert r["partition_sides"] == [30, 20], replay
    assert r["partition_suspected"] == [30, 20], replay   # every node, on both sides
    assert r["partition_own_side_named"] == 0, replay     # each named only the other side
    assert r["converged_s"] is not None, replay
    assert r["partition_healed"] == [30, 20], replay      # and every node saw it heal
    assert r["cluster_events"].get("MemberFlapping", 0) == 0, replay  # type: ignore[union-attr]


def test_a_traced_simulation_passes_on_the_suspicion_of_a_crashed_member() -> None:
    """With Config.tracing the cores record their steps; the simulator hands them to on_trace
    (and a run without it ignores them): the crash of a member ends every survivor's
    suspicion of it as dead."""
    n, seed = 8, 3
    sim = cluster(n, seed, Config.lan(tracing=True))
    steps: list[tuple[int, Trace]] = []
    sim.run_until(5.0)        # no observer yet: the records are dropped
    sim.on_trace = lambda observer, step: steps.append((observer, step))
    victim = 5
    sim.crash(victim)
    sim.run_until(60.0)
    vid = str(sim.nodes[victim].id)
    ended = {i for i, st in steps if st.name == "gossip.suspicion" and st.attrs["gossip.member.id"] == vid
             and st.attrs["gossip.suspicion.outcome"] == "dead"}
    assert ended == set(range(n)) - {victim}
    assert any(st.name == "gossip.probe" and st.attrs["gossip.probe.outcome"] == "timeout"
               and st.attrs["gossip.member.id"] == vid for _, st in steps)
