"""The pytest plugin ``gossip.testing``: registered by entry point, fixtures, leak check, knobs."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest

from gossip import NodeState
from gossip.leader import LeaderElection
from gossip.testing import ClusterFactory, GossipNetwork, fast_config, gossip_threads, scaled, wait_until

pytest_plugins = ["pytester"]

MANUAL_PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def readme_example() -> str:
    """The application test shown in the manual's plugin section (docs/testing.md)."""
    text = MANUAL_PAGE.read_text()
    section = text[text.index("## Testing applications"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m is not None, "the manual's plugin section has no python example"
    return m.group(1)


def test_the_readme_example_runs_with_nothing_but_the_installed_plugin(pytester: pytest.Pytester) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 12
    pytester.makepyfile(test_app=code)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_leaked_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leak="""
        from gossip.leader import LeaderElection

        def test_forgets_to_stop(gossip_cluster_factory):
            (c,) = gossip_cluster_factory(1)
            LeaderElection(c).start()      # never stopped
    """)
    try:
        result = pytester.runpytest("-q", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*gossip threads still running after the test*-leader*"])
    finally:
        # Stop the leaked election for the rest of this session (the inner module is gone).
        for obj in gc.get_objects():
            if isinstance(obj, LeaderElection):
                obj.stop()
    assert not [n for n in gossip_threads().values() if n.endswith("-leader")]


def test_factory_joins_batches_and_tracks_running_clusters(gossip_cluster_factory: ClusterFactory) -> None:
    a, b = gossip_cluster_factory(2)
    (c,) = gossip_cluster_factory(1, num_send_workers=1)    # joins the earlier batch
    assert c.config.num_send_workers == 1 and a.config.num_send_workers == 2
    for x in (a, b, c):
        assert x.num_alive_nodes() == 3
    (lone,) = gossip_cluster_factory(1, join=False, converge=False)
    assert lone.num_nodes() == 1
    assert gossip_cluster_factory.running() == [a, b, c, lone]
    b.stop()
    assert gossip_cluster_factory.running() == [a, c, lone]
    assert not b.running and a.running
    with pytest.raises(ValueError):
        gossip_cluster_factory(0)


def test_isolate_and_heal(gossip_cluster_factory: ClusterFactory, gossip_network: GossipNetwork) -> None:
    a, b, c = gossip_cluster_factory(3)
    gossip_network.isolate(c)
    cid = c.local_node().id
    wait_until(lambda: all(x.get_node(cid).state is not NodeState.ALIVE  # type: ignore[union-attr]
                           for x in (a, b)), 15.0, "a and b to lose sight of c")
    gossip_network.heal()
    gossip_cluster_factory.wait_converged(15.0)


def test_network_knobs_refuse_bad_input(gossip_network: GossipNetwork) -> None:
    t = gossip_network.new_transport()
    with pytest.raises(ValueError):
        gossip_network.loss(1.5)
    with pytest.raises(ValueError):
        gossip_network.latency(-1)
    with pytest.raises(ValueError, match="at least two groups"):
        gossip_network.partition([t.local_addr])
    with pytest.raises(ValueError, match="more than one group"):
        gossip_network.partition([t.local_addr], [t.local_addr])
    with pytest.raises(TypeError):
        gossip_network.isolate(42)  # type: ignore[arg-type]
    assert gossip_network.addresses() == [t.local_addr]


def test_loss_and_latency_apply_to_clusters_made_later(gossip_cluster_factory: ClusterFactory,
                                                       gossip_network: GossipNetwork) -> None:
    gossip_network.latency(0.01)
    gossip_network.loss(0.05)
    clusters = gossip_cluster_factory(3)                     # they still converge
    assert all(c.num_alive_nodes() == 3 for c in clusters)
    wait_until(lambda: gossip_network.stats["dropped"] > 0, 15.0, "some packet to be lost")


def test_fast_config_and_scaled() -> None:
    cfg = fast_config(None, suspicion_mult=3)
    cfg.validate()
    assert cfg.probe_interval == 0.5 and cfg.suspicion_mult == 3
    assert scaled(2.0) >= 2.0
