"""A pytest plugin for applications that embed gossip: real clusters on an in-memory network.

It is registered through the ``pytest11`` entry point ``gossip``, so installing the package makes
its fixtures available in every pytest session, with nothing to import::

    def test_an_order_reaches_every_node(gossip_cluster_factory):
        a, b, c = gossip_cluster_factory(3)          # started, joined, seeing each other
        ...

Fixtures (function-scoped):

* ``gossip_network``: a :class:`GossipNetwork`, an in-memory network (seeded) whose knobs
  (:meth:`~GossipNetwork.loss`, :meth:`~GossipNetwork.latency`, :meth:`~GossipNetwork.partition`,
  :meth:`~GossipNetwork.isolate`, :meth:`~GossipNetwork.heal`) take clusters, nodes or addresses;
* ``gossip_cluster_factory``: a :class:`ClusterFactory` that builds started clusters on that
  network with fast timings (:func:`fast_config`), joins them to the clusters it made before
  and waits until all of them see each other alive. After the test it stops every cluster and
  fails the test if a ``gossip-`` thread started during it is still running (a forgotten
  :class:`~gossip.leader.LeaderElection`, say).

Helpers: :func:`wait_until` polls a condition within a bounded time, and :func:`scaled`
multiplies timeouts by the environment variable ``GOSSIP_TESTS_TIMEOUT_FACTOR`` (default 1) for
slow machines. Nothing here sleeps on hope or asserts on speed.

This module uses only the public :class:`gossip.Cluster` API and
:class:`gossip.transports.memory.MemoryNetwork`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from .cluster import Cluster
from .config import Config
from .node import Node, NodeState
from .transports.memory import MemoryNetwork, MemoryTransport

__all__ = [
    "FACTOR",
    "scaled",
    "wait_until",
    "fast_config",
    "gossip_threads",
    "GossipNetwork",
    "ClusterFactory",
    "gossip_network",
    "gossip_cluster_factory",
]

FACTOR = float(os.environ.get("GOSSIP_TESTS_TIMEOUT_FACTOR", "1") or "1")
"""Multiplier of every timeout here, from ``GOSSIP_TESTS_TIMEOUT_FACTOR`` (default 1)."""

_FAST: dict[str, Any] = dict(
    health_check_interval=0.5,
    ping_timeout=0.2,
    suspicion_mult=2,
    dissemination_interval=0.05,
    state_sync_interval=2.0,
    recovery_attempt_interval=1.0,
    gossip_to_the_dead_time=5.0,
    gossip_interval=0.5,
    join_timeout=5.0,
    leave_timeout=1.0,
    tcp_deadline=1.0,
    tcp_dial_timeout=1.0,
    num_incoming_workers=2,
    num_send_workers=2,
)


def scaled(seconds: float) -> float:
    """Return ``seconds`` multiplied by :data:`FACTOR`."""
    return seconds * FACTOR


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
               interval: float = 0.02) -> None:
    """Poll ``predicate()`` until it is true; fail the test after ``timeout`` (scaled) seconds.

    Args:
        predicate: a function whose truthy result ends the wait.
        timeout: the bound, in seconds before scaling by :data:`FACTOR`.
        what: names the condition in the failure message.
        interval: seconds between polls.

    Raises:
        pytest.fail.Exception: the condition did not become true in time.
    """
    limit = scaled(timeout)
    end = time.monotonic() + limit
    while not predicate():
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {limit:.1f}s waiting until {what}")
        time.sleep(interval)


def fast_config(transport: Any = None, **overrides: Any) -> Config:
    """Return a configuration for tests: the loopback preset with short timings.

    Probes every 0.5 s (ping timeout 0.2 s), suspicion multiplier 2, gossip rounds every 50 ms,
    push/pull every 2 s, recovery every 1 s, two workers of each kind. A crashed member is
    declared dead within a few seconds, a partition heals within a couple.

    Args:
        transport: the transport the cluster uses (e.g. ``network.new_transport()``).
        overrides: any :class:`~gossip.Config` field.
    """
    fields = dict(_FAST)
    fields.update(overrides)
    if transport is not None:
        fields["transport"] = transport
    return Config.local(**fields)


def gossip_threads() -> dict[int, str]:
    """Return the running threads whose name starts with ``gossip-``, by ident."""
    return {t.ident or 0: t.name for t in threading.enumerate()
            if t.name.startswith("gossip-") and t.is_alive()}


def _address(endpoint: Cluster | Node | str) -> str:
    if isinstance(endpoint, Cluster):
        if not endpoint.address:
            raise ValueError(f"{endpoint!r} has no address yet: start it first")
        return endpoint.address
    if isinstance(endpoint, Node):
        return endpoint.address
    if isinstance(endpoint, str):
        return endpoint
    raise TypeError(f"expected a Cluster, a Node or an address, got {type(endpoint).__name__}")


class GossipNetwork:
    """An in-memory network for clusters under test, with faults.

    Every knob takes clusters, nodes or transport addresses. Faults set for "every node" also
    apply to transports created later. :meth:`heal` removes them all.

    Args:
        seed: seeds the random drops, so a lossy test loses the same packets each run.
    """

    def __init__(self, seed: int | None = 0) -> None:
        self.memory = MemoryNetwork(seed=seed)
        """The underlying :class:`~gossip.transports.memory.MemoryNetwork`."""
        self._lock = threading.Lock()
        self._addrs: list[str] = []
        self._loss = 0.0
        self._latency = 0.0

    def new_transport(self, name: str | None = None) -> MemoryTransport:
        """Return a transport with a fresh address (``Config(transport=...)`` takes it)."""
        t = self.memory.new_transport(name)
        addr = t.local_addr
        with self._lock:
            for other in self._addrs:
                if self._loss:
                    self.memory.drop(addr, other, self._loss)
                    self.memory.drop(other, addr, self._loss)
            if self._latency:
                self.memory.delay(addr, self._latency)
            self._addrs.append(addr)
        return t

    def addresses(self) -> list[str]:
        """Return the address of every transport created here, oldest first."""
        with self._lock:
            return list(self._addrs)

    def loss(self, probability: float, src: Cluster | Node | str | None = None,
             dst: Cluster | Node | str | None = None) -> None:
        """Lose best-effort packets from ``src`` to ``dst`` with ``probability`` (0..1).

        Either end left out means every node (and, for both, nodes created later too).
        Reliable sends are never lost at random, as with TCP.

        Raises:
            ValueError: ``probability`` is outside 0..1.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in 0..1, got {probability}")
        with self._lock:
            everyone = list(self._addrs)
            if src is None and dst is None:
                self._loss = probability
        sources = everyone if src is None else [_address(src)]
        targets = everyone if dst is None else [_address(dst)]
        for a in sources:
            for b in targets:
                if a != b:
                    self.memory.drop(a, b, probability)

    def latency(self, seconds: float, to: Cluster | Node | str | None = None) -> None:
        """Delay every packet delivered to ``to`` by ``seconds`` (None: to every node).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._lock:
            if to is None:
                self._latency = seconds
            targets = list(self._addrs) if to is None else [_address(to)]
        for addr in targets:
            self.memory.delay(addr, seconds)

    def partition(self, *groups: Iterable[Cluster | Node | str]) -> None:
        """Cut every link between nodes of different ``groups`` (both directions).

        Raises:
            ValueError: fewer than two groups, or a node in two groups.
        """
        sets = [{_address(e) for e in g} for g in groups]
        if len(sets) < 2:
            raise ValueError("a partition needs at least two groups")
        seen: set[str] = set()
        for s in sets:
            if s & seen:
                raise ValueError(f"{sorted(s & seen)} in more than one group")
            seen |= s
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                self.memory.partition(a, b)

    def isolate(self, endpoint: Cluster | Node | str) -> None:
        """Cut ``endpoint`` off from every other node."""
        addr = _address(endpoint)
        self.partition([addr], [a for a in self.addresses() if a != addr])

    def heal(self) -> None:
        """Remove every loss, latency and partition."""
        with self._lock:
            self._loss = 0.0
            self._latency = 0.0
        self.memory.heal()

    @property
    def stats(self) -> dict[str, int]:
        """The network's counters: ``delivered``, ``dropped``, ``unroutable``."""
        return self.memory.stats


class ClusterFactory:
    """Builds started clusters on a :class:`GossipNetwork` and cleans up after them.

    Args:
        network: where the clusters live.
        defaults: :class:`~gossip.Config` fields applied to every cluster it builds (on top of
            :func:`fast_config`).
    """

    def __init__(self, network: GossipNetwork, **defaults: Any) -> None:
        self.network = network
        self.defaults = defaults
        self.clusters: list[Cluster] = []
        """Every cluster built so far, oldest first."""
        self._threads_before = set(gossip_threads())

    def config(self, **overrides: Any) -> Config:
        """Return a fast configuration on a new transport of the network."""
        fields = dict(self.defaults)
        fields.update(overrides)
        return fast_config(self.network.new_transport(), **fields)

    def __call__(self, n: int = 1, *, join: bool = True, converge: bool = True,
                 timeout: float = 10.0, **overrides: Any) -> list[Cluster]:
        """Start ``n`` clusters and return them.

        Args:
            n: how many.
            join: join each to the clusters this factory built before (or, for the first
                batch, to the first of the batch).
            converge: wait until every running cluster of this factory sees every other alive.
            timeout: seconds (scaled) to wait for the joins and the convergence.
            overrides: :class:`~gossip.Config` fields for these clusters.

        Raises:
            ValueError: ``n`` is below 1.
            pytest.fail.Exception: they did not converge in time.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        seeds = [c.address for c in self.running()]
        made: list[Cluster] = []
        for _ in range(n):
            cluster = Cluster(self.config(**overrides))
            self.clusters.append(cluster)
            cluster.start()
            made.append(cluster)
            if join and (seeds or made[0] is not cluster):
                cluster.join(seeds or [made[0].address], timeout=scaled(timeout))
        if converge:
            self.wait_converged(timeout)
        return made

    def running(self) -> list[Cluster]:
        """Return the clusters built here that are started and not stopped."""
        return [c for c in self.clusters if c.running and c.local_node().state is NodeState.ALIVE]

    def wait_converged(self, timeout: float = 10.0) -> None:
        """Wait until every running cluster sees every other running one alive.

        Raises:
            pytest.fail.Exception: not within ``timeout`` (scaled) seconds.
        """
        def converged() -> bool:
            live = self.running()
            ids = [c.local_node().id for c in live]
            for c in live:
                for nid in ids:
                    node = c.get_node(nid)
                    if node is None or node.state is not NodeState.ALIVE:
                        return False
            return True

        wait_until(converged, timeout, f"{len(self.running())} clusters see each other alive")

    def close(self, timeout: float = 5.0) -> None:
        """Stop every cluster (without leaving), then check that no ``gossip-`` thread started
        since this factory was made is still running.

        Raises:
            pytest.fail.Exception: a thread leaked (its name says whose).
        """
        for c in self.clusters:
            c.stop(timeout=timeout, leave=False)
        end = time.monotonic() + scaled(3.0)
        while True:
            leaked = sorted(n for i, n in gossip_threads().items() if i not in self._threads_before)
            if not leaked or time.monotonic() >= end:
                break
            time.sleep(0.05)
        if leaked:
            pytest.fail(f"gossip threads still running after the test: {leaked}")


@pytest.fixture
def gossip_network() -> Iterator[GossipNetwork]:
    """An in-memory network (seed 0) with knobs for loss, latency and partitions."""
    net = GossipNetwork(seed=0)
    yield net
    net.heal()


@pytest.fixture
def gossip_cluster_factory(gossip_network: GossipNetwork) -> Iterator[ClusterFactory]:
    """Builds started clusters on ``gossip_network`` with fast timings; after the test it stops
    them and fails if a ``gossip-`` thread leaked."""
    factory = ClusterFactory(gossip_network)
    yield factory
    factory.close()
