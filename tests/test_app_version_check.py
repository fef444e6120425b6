"""The application version check is user code: it runs outside the core lock, so it may call
back into the cluster, and a check that raises refuses the join without harm."""

from __future__ import annotations

import threading

import pytest

import gossip
from gossip import Cluster, Config
from gossip.transports.memory import MemoryNetwork


def test_a_version_check_that_reads_the_cluster_does_not_deadlock() -> None:
    net = MemoryNetwork(seed=21)
    seen: list[int] = []
    holder: list[Cluster] = []

    def check(version: str) -> bool:
        seen.append(len(holder[0].alive_nodes()))      # takes the core lock: must not be held
        return version.startswith("2.")

    seed = Cluster(Config.local(transport=net.new_transport(), application_version_check=check))
    holder.append(seed)
    good = Cluster(Config.local(transport=net.new_transport(), application_version="2.1"))
    bad = Cluster(Config.local(transport=net.new_transport(), application_version="1.0"))
    with seed, good, bad:
        assert good.join(seed.address, timeout=5.0) == 1
        with pytest.raises(gossip.JoinError, match="application version"):
            bad.join(seed.address, timeout=5.0)
        assert seen == [1, 2]
        assert seed.num_alive_nodes() == 2


def test_a_version_check_that_raises_refuses_the_join() -> None:
    net = MemoryNetwork(seed=22)
    calls = threading.Event()

    def check(version: str) -> bool:
        calls.set()
        raise RuntimeError("broken check")

    seed = Cluster(Config.local(transport=net.new_transport(), application_version_check=check))
    joiner = Cluster(Config.local(transport=net.new_transport()))
    with seed, joiner:
        with pytest.raises(gossip.JoinError, match="application version"):
            joiner.join(seed.address, timeout=5.0)
        assert calls.is_set()
        assert seed.num_alive_nodes() == 1
