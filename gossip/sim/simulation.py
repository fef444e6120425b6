"""Hosts N protocol cores on a virtual clock and measures what they do.

The event loop pops ``(time, seq, kind, ...)`` from one heap: packet deliveries, node wake-ups
(a core's next timer) and scenario steps. Each core call is followed by draining its actions:
sends become future deliveries, member events update the observers' bookkeeping, from which
convergence, detection times and false positives are computed exactly.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import math
import random
import struct
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import msgpack

from ..config import Config
from ..messages import Alive, Gossip, JoinReply, MemberState, Message, Ping, Ack, PushPull, PushPullReply, Join, \
    Update
from ..node import NodeID, NodeState
from ..protocol import Protocol
from ..protocol.actions import EVENT_REMOVED, EVENT_STATE, JoinResult, MemberEvent, Send, Trace
from ..protocol.insight import CLUSTER_EVENTS, ClusterEvent
from ..tags import tags_size
from ..wire import HEADER_OVERHEAD
from .compact import CompactStore, Registry
from .network import LinkModel, SimNetwork

__all__ = ["Simulation", "SimNode"]

_DELIVER, _WAKE, _STEP = 0, 1, 2
_ADDR, _META = attrgetter("addr"), attrgetter("meta")
_TRACE_RECORD = struct.Struct(">dIIbb").pack   # one member event in the trace digest
ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING


class SimNode:
    """One simulated process: a protocol core plus its fate (running, crashed, left, starved)."""

    __slots__ = ("index", "id", "addr", "core", "running", "left", "starve_delay", "starve_spread", "starve_timer_delay",
                 "wake_at", "rng", "started_at", "table_max", "queue_max", "relays_max")

    def __init__(self, index: int, node_id: NodeID, core: Protocol, rng: random.Random, now: float) -> None:
        self.index = index
        self.id = node_id
        self.addr = core.addr
        self.core = core
        self.running = True
        self.left = False
        self.starve_delay = 0.0
        self.starve_spread = 0.0
        self.starve_timer_delay = 0.0
        self.wake_at = math.inf
        self.rng = rng
        self.started_at = now
        # The largest member table, broadcast queue and relay table seen (hostile scenarios).
        self.table_max = 0
        self.queue_max = 0
        self.relays_max = 0

    def note_sizes(self) -> None:
        """Record the sizes of the core's tables if they are the largest seen so far."""
        sizes = self.core.sizes()
        self.table_max = max(self.table_max, sizes["members"])
        self.queue_max = max(self.queue_max, sizes["broadcasts"], sizes["broadcasts_low"])
        self.relays_max = max(self.relays_max, sizes["relays"])


def _members(view: bytearray) -> list[int]:
    """Return the observers a view's bytes mark (see ``Simulation.alive_view``)."""
    out = []
    i = view.find(1)
    while i >= 0:
        out.append(i)
        i = view.find(1, i + 1)
    return out


class _Target:
    """Per-target bookkeeping for detection after a crash or a leave."""

    __slots__ = ("index", "at", "remaining", "first", "all")

    def __init__(self, index: int, at: float, remaining: set[int]) -> None:
        self.index = index
        self.at = at
        self.remaining = remaining
        self.first: float | None = None
        self.all: float | None = None if remaining else at


class Simulation:
    """A whole cluster in one process.

    Args:
        config: the protocol configuration every node uses.
        seed: the one seed all randomness derives from.
        link: the network model.
        compact: keep every core's member table in arrays (:mod:`gossip.sim.compact`): the
            same protocol and the same run, about a tenth of the memory per (node, member)
            pair, somewhat slower.
    """

    observer: Callable[[Simulation], None] | None = None
    """Called with the simulation every :data:`OBSERVE_EVERY` events of :meth:`run_until`, if
    set (``python -m gossip.sim`` shows its progress this way); it must not change the run."""

    OBSERVE_EVERY = 8192
    """Events between two calls of :attr:`observer`."""

    def __init__(self, config: Config, seed: int, link: LinkModel | None = None, compact: bool = False) -> None:
        self.config = config
        # Compact member tables (gossip.sim.compact): the same cores, a fraction of the memory.
        self.registry: Registry | None = Registry() if compact else None
        self.seed = seed
        self.root = random.Random(seed)
        self.net = SimNetwork(link or LinkModel(), random.Random(self.root.getrandbits(64)))
        # Per-packet starvation delays draw from their own source (the others' draws unchanged).
        self._starve_rng = random.Random(f"starve-{seed}")
        self.now = 0.0
        self.nodes: list[SimNode] = []
        self.by_addr: dict[str, int] = {}
        self.by_id: dict[NodeID, int] = {}
        self._by_int: dict[int, int] = {}     # the same by NodeID.int (hashed in C)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        # observers' views: target -> a byte per observer, 1 if it sees the target ALIVE;
        # observer -> live targets it sees alive
        self.alive_view: dict[int, bytearray] = {}
        self.view_count: dict[int, int] = {}
        self.live: set[int] = set()
        self.good_pairs = 0
        self.converged_at: float | None = None
        self.watching = False
        self.converge_from = 0.0
        self.targets: dict[int, _Target] = {}
        self.false_dead: set[int] = set()
        self.false_suspect: set[int] = set()
        self.false_dead_events = 0
        self.false_suspect_events = 0
        self.msgs = 0
        self.bytes = 0
        self.node_seconds = 0.0
        self._last_live_change = 0.0
        self.events = 0
        self._trace = hashlib.sha256()
        self._trace_buf: list[bytes] = []   # records not yet hashed (hashed in batches: the same digest)
        self.join_results: list[JoinResult] = []
        self.on_event: Callable[[int, MemberEvent], None] | None = None
        # Cluster events (flapping members, partitions): counted by kind, and passed on.
        self.cluster_events: dict[str, int] = {}
        self.on_cluster_event: Callable[[int, ClusterEvent], None] | None = None
        # With Config.tracing: the steps each core records (probes, suspicions...), passed on.
        self.on_trace: Callable[[int, Trace], None] | None = None
        self.extra: dict[str, Any] = {}   # a scenario's own figures, added to the summary
        self.attack_report: Callable[[], dict[str, Any]] | None = None
        self.track_sizes = False
        self._size_cache: dict[int, tuple[Any, int]] = {}

    # ------------------------------------------------------------------ building the cluster

    def add_node(self, start: bool = True) -> SimNode:
        """Create a node (a fresh process with a new id) at the current time."""
        index = len(self.nodes)
        node_id = NodeID(int=self.root.getrandbits(128))
        rng = random.Random(self.root.getrandbits(64))
        addr = f"127.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}:7946"
        store = None
        if self.registry is not None:
            self.registry.intern(node_id, addr)
            store = CompactStore(self.registry)
        core = Protocol(self.config, node_id, addr, rng, self.now, store=store)
        node = SimNode(index, node_id, core, rng, self.now)
        self.nodes.append(node)
        self.by_addr[addr] = index
        self.by_id[node_id] = index
        self._by_int[node_id.int] = index
        self.alive_view[index] = bytearray()
        self.view_count[index] = 0
        self._account_live()
        self.live.add(index)
        self._reschedule(node)
        return node

    def bootstrap(self, indices: list[int]) -> None:
        """Make the given nodes know each other as alive, as after a completed join."""
        states = [MemberState(self.nodes[i].id, self.nodes[i].addr, ALIVE, 0) for i in indices]
        for i in indices:
            node = self.nodes[i]
            node.core.bootstrap(self.now, states)
            self._reschedule(node)
        self._view_all_alive(indices)

    def _view_all_alive(self, indices: list[int]) -> None:
        """Mark every node of ``indices`` as seeing every other one alive (after a bootstrap)."""
        size = len(self.nodes)
        mark = bytearray(size)
        for i in indices:
            mark[i] = 1
        live = sorted({i for i in indices if i in self.live})
        fresh: set[int] = set()       # live targets whose view was empty
        for j in sorted(set(indices)):
            view = self.alive_view[j]
            if view.find(1) >= 0:       # not a fresh view: one pair at a time
                for i in indices:
                    if i != j:
                        self._view_alive(i, j, True)
                continue
            view[:] = mark
            view[j] = 0
            if j in self.live:
                fresh.add(j)
                self.good_pairs += len(live) - 1
        for i in live:
            self.view_count[i] += len(fresh) - (i in fresh)

    # ------------------------------------------------------------------ view bookkeeping

    def _view_alive(self, observer: int, target: int, alive: bool) -> None:
        view = self.alive_view[target]
        if observer >= len(view):
            if not alive:
                return
            view.extend(bytes(max(observer + 1, len(self.nodes)) - len(view)))
        if alive:
            if view[observer]:
                return
            view[observer] = 1
            delta = 1
        else:
            if not view[observer]:
                return
            view[observer] = 0
            delta = -1
        if observer in self.live and target in self.live:
            self.good_pairs += delta
            self.view_count[observer] += delta

    def _account_live(self) -> None:
        self.node_seconds += len(self.live) * (self.now - self._last_live_change)
        self._last_live_change = self.now

    def _remove_live(self, index: int) -> None:
        if index not in self.live:
            return
        self._account_live()
        for observer in _members(self.alive_view[index]):
            if observer in self.live and observer != index:
                self.good_pairs -= 1
                self.view_count[observer] -= 1
        self.good_pairs -= self.view_count[index]
        self.view_count[index] = 0
        self.live.discard(index)
        for t in self.targets.values():
            if index in t.remaining:
                t.remaining.discard(index)
                self._check_target(t)

    def converged(self) -> bool:
        """True when every live node sees every other live node alive."""
        n = len(self.live)
        return self.good_pairs == n * (n - 1)

    def watch_convergence(self) -> None:
        """Measure convergence from now on (``converged_s`` counts from this moment)."""
        self.watching = True
        self.converge_from = self.now
        self.converged_at = self.now if self.converged() else None

    # ------------------------------------------------------------------ faults and fates

    def crash(self, index: int) -> None:
        """Kill a node without a word (SIGKILL)."""
        node = self.nodes[index]
        if not node.running:
            return
        node.running = False
        self._track_target(index)
        self._remove_live(index)

    def leave(self, index: int, linger: float = 1.0) -> None:
        """Make a node leave gracefully, then stop it ``linger`` seconds later."""
        node = self.nodes[index]
        if not node.running or node.left:
            return
        node.left = True
        node.core.leave(self.now)
        self._track_target(index)
        self._remove_live(index)
        self._drain(node)
        self.schedule(self.now + linger, lambda: self._stop(index))

    def _stop(self, index: int) -> None:
        self.nodes[index].running = False

    def starve(self, index: int, delay: float, timer_delay: float = 0.0, spread: float = 0.0) -> None:
        """Make a node handle every message ``delay`` s late (timers up to ``timer_delay`` late).

        With ``spread``, each message is late by ``delay`` plus a uniform draw in
        ``[0, spread)`` (from the simulation's own starvation random source)."""
        self.nodes[index].starve_delay = delay
        self.nodes[index].starve_spread = spread
        self.nodes[index].starve_timer_delay = timer_delay

    def inject(self, dst: int, src_addr: str, msg: Message, sender: NodeID, reliable: bool = False) -> None:
        """Deliver a crafted message to node ``dst`` now, as if it came from ``src_addr``.

        For hostile scenarios: the sender needs no core, and replies to ``src_addr`` are lost.
        The network model applies (latency, loss, partitions).
        """
        self.msgs += 1
        self.bytes += self._size(msg)
        d = self.net.delay(-1, dst, self.now, reliable)
        if d is not None:
            self._push(self.now + d, _DELIVER, (dst, src_addr, msg, sender, reliable, False))

    def set_metadata(self, index: int, meta: dict[str, Any], tags: frozenset[str] | None = None) -> None:
        """Make a node change its metadata (and its tags, unless None) now: it raises its
        incarnation and gossips them."""
        node = self.nodes[index]
        if not node.running:
            return
        stamp = node.core.meta_stamp + 1
        node.core.set_local_metadata(self.now, meta, stamp, tags)
        self._drain(node)
        self._reschedule(node)

    def forget(self, index: int, target: int) -> bool:
        """Make node ``index`` forget member ``target`` (dead or left) now, as an operator's
        ``forget_node`` does; return whether it knew it.

        Raises:
            ValueError: ``target`` is held alive or suspect by ``index`` (or is ``index``).
        """
        node = self.nodes[index]
        done = node.core.forget(self.now, self.nodes[target].id)
        self._drain(node)
        self._reschedule(node)
        return done

    def join(self, index: int, seeds: list[int]) -> None:
        """Make a node join through the given seed nodes."""
        node = self.nodes[index]
        node.core.join(self.now, [self.nodes[s].addr for s in seeds])
        self._drain(node)
        self._reschedule(node)

    def _track_target(self, index: int) -> None:
        remaining = {o for o in _members(self.alive_view[index]) if o in self.live and o != index}
        # Suspect is not "dropped": count observers that hold it suspect too.
        for o in self.live:
            if o != index:
                m = self.nodes[o].core.members.get(self.nodes[index].id)
                if m is not None and m.state is SUSPECT:
                    remaining.add(o)
        self.targets[index] = _Target(index, self.now, remaining)

    def _check_target(self, t: _Target) -> None:
        if not t.remaining and t.all is None:
            t.all = self.now

    # ------------------------------------------------------------------ event loop

    def schedule(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``when`` (scenario steps)."""
        self._push(when, _STEP, fn)

    def _push(self, when: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, data))

    def _reschedule(self, node: SimNode) -> None:
        deadline = node.core.next_deadline()
        if deadline < node.wake_at:
            node.wake_at = deadline
            late = node.starve_timer_delay * node.rng.random() if node.starve_timer_delay else 0.0
            # A timer already due (a suspicion shortened by confirmations) runs now: virtual
            # time never goes back.
            self._push(max(deadline, self.now) + late, _WAKE, (node.index, deadline))

    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events up to virtual time ``end`` (or until ``stop()`` is true)."""
        # Millions of long-lived records: the default collector thresholds would rescan them
        # all every few thousand allocations (a third of the wall time of a 1,000-node join).
        thresholds = gc.get_threshold()
        gc.set_threshold(*self.GC_THRESHOLDS)
        try:
            self._run(end, stop)
        finally:
            gc.set_threshold(*thresholds)
        self._account_live()

    GC_THRESHOLDS = (100_000, 50, 1000)
    """The collector's thresholds while :meth:`run_until` runs (the previous ones come back after)."""

    def _run(self, end: float, stop: Callable[[], bool] | None) -> None:
        heap = self._heap
        nodes = self.nodes
        observer = Simulation.observer
        every = self.OBSERVE_EVERY
        while heap and heap[0][0] <= end:
            when, _, kind, data = heapq.heappop(heap)
            self.now = when
            self.events += 1
            if observer is not None and not self.events % every:
                observer(self)
            if kind == _DELIVER:
                index, src, msg, sender, reliable, delayed = data
                node = nodes[index]
                if not node.running:
                    continue
                if node.starve_delay and not delayed:
                    # A starved node's receive path is backlogged: it sees the packet late.
                    late = node.starve_delay
                    if node.starve_spread:
                        late += node.starve_spread * self._starve_rng.random()
                    self._push(when + late, _DELIVER, (index, src, msg, sender, reliable, True))
                    continue
                node.core.receive(when, src, msg, sender, reliable)
                if self.track_sizes:
                    node.note_sizes()
                self._drain(node)
                self._reschedule(node)
            elif kind == _WAKE:
                index, deadline = data
                node = nodes[index]
                if not node.running or deadline != node.wake_at:
                    continue
                node.wake_at = math.inf
                node.core.tick(when)
                if self.track_sizes:
                    node.note_sizes()
                self._drain(node)
                self._reschedule(node)
            else:
                data()
            if stop is not None and stop():
                break
        else:
            self.now = max(self.now, end)

    # ------------------------------------------------------------------ actions

    def _drain(self, node: SimNode) -> None:
        actions = node.core.actions_to_perform()
        if not actions:
            return
        now = self.now
        src_index = node.index
        for a in actions:
            t = type(a)
            if t is Send:
                assert isinstance(a, Send)
                self.msgs += 1
                self.bytes += self._size(a.msg)
                dst = self.by_addr.get(a.addr)
                if dst is None:
                    continue
                d = self.net.delay(src_index, dst, now, a.reliable)
                if d is None:
                    continue
                self._push(now + d, _DELIVER, (dst, node.addr, a.msg, node.id, a.reliable, False))
            elif t is MemberEvent:
                assert isinstance(a, MemberEvent)
                self._on_event(node.index, a)
            elif isinstance(a, CLUSTER_EVENTS):
                name = type(a).__name__
                self.cluster_events[name] = self.cluster_events.get(name, 0) + 1
                if self.on_cluster_event is not None:
                    self.on_cluster_event(node.index, a)
            elif t is Trace:
                assert isinstance(a, Trace)
                if self.on_trace is not None:
                    self.on_trace(node.index, a)
            else:
                assert isinstance(a, JoinResult)
                self.join_results.append(a)

    def _on_event(self, observer: int, ev: MemberEvent) -> None:
        target = self._by_int.get(ev.node.int)
        if target is None:
            return
        buf = self._trace_buf
        buf.append(_TRACE_RECORD(ev.at, observer, target, ev.state, ev.prev))
        if len(buf) >= 4096:
            self._trace.update(b"".join(buf))
            buf.clear()
        kind = ev.kind
        if kind == EVENT_STATE or kind == EVENT_REMOVED:
            self._view_alive(observer, target, kind == EVENT_STATE and ev.state is ALIVE)
            if self.watching and self.converged_at is None and self.converged():
                self.converged_at = self.now
            if kind == EVENT_STATE and target in self.live and observer in self.live:
                if ev.state is DEAD:
                    self.false_dead.add(target)
                    self.false_dead_events += 1
                elif ev.state is SUSPECT:
                    self.false_suspect.add(target)
                    self.false_suspect_events += 1
            t = self.targets.get(target)
            if t is not None and observer in t.remaining and (
                    kind == EVENT_REMOVED or ev.state is DEAD or ev.state is LEAVING):
                t.remaining.discard(observer)
                if t.first is None:
                    t.first = self.now
                self._check_target(t)
        if self.on_event is not None:
            self.on_event(observer, ev)

    def _size(self, msg: Message) -> int:
        """Encoded size of a message: header plus its msgpack payload (updates cached)."""
        if isinstance(msg, (Gossip, Ping, Ack)):
            total = 24
            for u in msg.updates:
                total += self._update_size(u)
            return HEADER_OVERHEAD + total + (40 if type(msg) is Ping else 0)
        if isinstance(msg, (PushPull, PushPullReply, JoinReply, Join)):
            # 36 + len(addr) + the metadata's size, per state (in C loops: full states are long)
            states = msg.states
            metas = list(filter(None, map(_META, states)))
            size = 37 * len(states) + sum(map(len, map(_ADDR, states))) - len(metas)
            return HEADER_OVERHEAD + 24 + size + sum(self._meta_size(m) for m in metas)
        return HEADER_OVERHEAD + 40

    def _update_size(self, u: Update) -> int:
        key = id(u)
        hit = self._size_cache.get(key)
        if hit is not None and hit[0] is u:
            return hit[1]
        if isinstance(u, Alive):
            size = 40 + len(u.addr) + self._meta_size(u.meta) + tags_size(u.tags)
        else:
            size = 42
        if len(self._size_cache) > 200_000:
            self._size_cache.clear()
        self._size_cache[key] = (u, size)
        return size

    @staticmethod
    def _meta_size(meta: Any) -> int:
        return 1 if not meta else len(msgpack.packb(dict(meta), use_bin_type=True))

    # ------------------------------------------------------------------ results

    def trace_hash(self) -> str:
        """A digest of every member event so far: equal digests mean identical runs."""
        if self._trace_buf:
            self._trace.update(b"".join(self._trace_buf))
            self._trace_buf.clear()
        return self._trace.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Figures measured so far (see ``python -m gossip.sim --help``)."""
        self._account_live()
        firsts = [t.first - t.at for t in self.targets.values() if t.first is not None]
        alls = [t.all - t.at for t in self.targets.values() if t.all is not None]
        undetected = sum(1 for t in self.targets.values() if t.all is None)
        ns = max(self.node_seconds, 1e-9)
        return {
            "converged_s": None if self.converged_at is None else round(self.converged_at - self.converge_from, 3),
            "detect_first_s": round(max(firsts), 3) if firsts else None,
            "detect_all_s": round(max(alls), 3) if alls else None,
            "detect_all_mean_s": round(sum(alls) / len(alls), 3) if alls else None,
            "detected": len(alls),
            "undetected": undetected,
            "false_dead": len(self.false_dead),
            "false_dead_events": self.false_dead_events,
            "false_suspect": len(self.false_suspect),
            "false_suspect_events": self.false_suspect_events,
            "msgs_per_node_s": round(self.msgs / ns, 2),
            "bytes_per_node_s": round(self.bytes / ns, 1),
            "live_nodes": len(self.live),
            "events": self.events,
            "dropped_packets": self.net.dropped,
            "cluster_events": dict(sorted(self.cluster_events.items())),
            **self.extra,
            "trace_hash": self.trace_hash(),
        }

    @staticmethod
    def wall_clock() -> float:
        """The host's clock, for the ``wall_s`` figure only."""
        return time.perf_counter()
