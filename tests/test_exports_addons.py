"""The add-on modules (groups, leader election, the pytest plugin) export documented names, and
the top-level package exports the groups."""

from __future__ import annotations

import importlib
import inspect

import pytest

import gossip
from gossip.testing import ClusterFactory, GossipNetwork


@pytest.mark.parametrize("module", ["gossip.groups", "gossip.leader", "gossip.leader.election",
                                    "gossip.leader.host", "gossip.testing", "gossip.sim.leader",
                                    "gossip.placement", "gossip.locks", "gossip.locks.base", "gossip.locks.core",
                                    "gossip.locks.grantor", "gossip.locks.messages", "gossip.locks.requester",
                                    "gossip.locks.service", "gossip.replicated", "gossip.replicated.core",
                                    "gossip.replicated.host", "gossip.sim.locks", "gossip.sim.replicated"])
def test_public_names_exist_and_are_documented(module: str) -> None:
    mod = importlib.import_module(module)
    assert (mod.__doc__ or "").strip()
    undocumented = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(name)
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not (member.__doc__ or "").strip():
                    undocumented.append(f"{name}.{attr}")
    assert not undocumented


def test_groups_are_exported_from_the_package() -> None:
    for name in ("NodeGroup", "DataNodeGroup", "METADATA_ANY_VALUE", "METADATA_CONTAINS_PREFIX"):
        assert name in gossip.__all__ and hasattr(gossip, name)


def test_cluster_running_is_true_between_start_and_stop() -> None:
    factory = ClusterFactory(GossipNetwork())
    c = gossip.Cluster(factory.config())
    assert not c.running
    c.start()
    try:
        assert c.running
    finally:
        c.stop(leave=False)
    assert not c.running
    unstarted = gossip.Cluster(factory.config())
    unstarted.stop()
    assert not unstarted.running
