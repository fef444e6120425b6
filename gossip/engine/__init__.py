"""The threaded host of the protocol core: threads, queues, timers and I/O, no protocol logic.

The engine is split by concern; each module owns its threads and queues:

==========================  ===================================================================
module                      owns
==========================  ===================================================================
:mod:`.host`                the core, its one lock, the scheduler's wake-up condition
:mod:`.incoming`            the path of a received packet: decode, protocol lane, user lanes
:mod:`.outgoing`            the path of a sent packet: datagrams, connections, send workers
:mod:`.scheduler`           the protocol clock (``gossip-<node>-scheduler``)
:mod:`.events`              membership events and user gossip callbacks (two threads)
:mod:`.streams`             the stream pool: accepted streams' handlers, opening streams
==========================  ===================================================================

Threads (every one a daemon named ``gossip-<node short id>-<role>[-n]``): the transport's
readers (which also run the protocol lane), ``recv-<i>`` user lanes, ``send-<i>`` send workers,
``scheduler``, ``events``, ``gossip`` and the stream pool's ``stream-<n>`` workers (and
``stream-refuse``), which come and go with the streams.

:class:`Engine` wires them together and offers the operations the :class:`gossip.Cluster`
facade needs. This package imports the core, the packet codec, the transports' interface and
the workers; never the cluster facade.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import Config
from ..errors import ClusterClosed, NodeUnavailable
from ..handlers import EventHandlers, MessageHandlers, check_user_type
from ..hlc import HLC
from ..metadata import Metadata, MetadataReader
from ..node import PROTOCOL_VERSION, Node, NodeID, NodeState
from ..packet import PacketCodec
from ..protocol import JoinResult, MemberEvent, Protocol, Send
from ..protocol.actions import (
    EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, EVENT_STATE, JOIN_NO_ANSWER, Action,
)
from ..protocol.insight import CLUSTER_EVENTS, Insight
from ..protocol.messaging import calc_fan_out
from ..transports._admission import host_of
from ..transports.base import Incoming, StreamConn, Transport
from ..counters import STREAM_COUNTERS, Counters
from .events import ClusterEventHandler, EventLoop, GossipHandler, MetadataHandler, StateHandler
from .host import CoreHost
from .incoming import Receiver, broadcast_ttl
from .outgoing import Outgoing
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .streams import StreamPool

__all__ = ["Engine", "StateHandler", "MetadataHandler", "GossipHandler", "ClusterEventHandler"]

logger = logging.getLogger("gossip.engine")

T = TypeVar("T")

_WARN_INTERVAL = 10.0
_MEMBER_HOSTS_TTL = 2.0  # the hosts of members are recomputed at least this often


class _JoinWaiter:
    __slots__ = ("event", "result", "connected", "refused")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: JoinResult | None = None
        self.connected = False  # the join went out on a connection the seed accepted
        self.refused = ""  # why a packet from the seed was refused here, if one was


def _no_answer(waiter: _JoinWaiter, timeout: float) -> str:
    """Say why a join got no answer, as precisely as the joiner can know it."""
    if waiter.refused:
        return (f"no answer within {timeout:.1f}s that this node could read; the seed's packets "
                f"were refused: {waiter.refused}")
    if waiter.connected:
        return (f"no answer within {timeout:.1f}s, though the seed accepted the connection: it "
                "may have another encryption key or cluster label (its log says so), or be "
                "overloaded")
    return (f"no answer within {timeout:.1f}s: the seed may be down, or have another "
            "encryption key or cluster label")


class Engine:
    """Runs one node: a :class:`~gossip.protocol.Protocol` core driven by threads and a transport.

    Args:
        config: a validated configuration (not copied: the caller owns a private copy).
        node_id: this node's id.
        codec: the packet pipeline.
        metadata: the local node's writable metadata.
        rng: randomness for the core and peer selection (default: a fresh ``random.Random``).
    """

    def __init__(
        self,
        config: Config,
        node_id: NodeID,
        codec: PacketCodec,
        metadata: Metadata,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.id_bytes = node_id.bytes
        self.transport: Transport | None = None
        self.codec = codec
        self.metadata = metadata
        self.rng = rng if rng is not None else random.Random()
        self.hlc = HLC(max_drift=config.max_clock_drift)
        self.log = logger if config.logger is None else config.logger
        self.prefix = f"gossip-{node_id.short}"
        self.address = ""
        self.counters = Counters()
        self.host = CoreHost()
        self.message_handlers = MessageHandlers()
        self.events = EventLoop(self)
        self.receiver = Receiver(self)
        self.out = Outgoing(config, codec, self.id_bytes, self.hlc, self.counters, self.log,
                            self._join_send_failed, self.prefix, self._join_sent)
        self.scheduler = Scheduler(self)
        # The stream pool (and the stream layer it imports) is built by the first stream
        # opened or accepted: a node that never streams does not load it.
        self._stream_pool: StreamPool | None = None
        self._stream_lock = threading.Lock()
        self._streams_closed = False
        self.stop_event = threading.Event()
        self._last_warn: dict[str, float] = {}
        self._join_waiters: dict[str, list[_JoinWaiter]] = {}
        self._join_lock = threading.Lock()
        self._node_cache: dict[bytes, tuple[Any, Node, int]] = {}
        self._member_hosts: tuple[float, frozenset[str]] | None = None
        self._started = False
        self.closing = False
        self._stopped = False

    # ------------------------------------------------------------------ handler registries

    @property
    def state_handlers(self) -> EventHandlers[StateHandler]:
        """The node state change handlers."""
        return self.events.state_handlers

    @property
    def metadata_handlers(self) -> EventHandlers[MetadataHandler]:
        """The metadata change handlers."""
        return self.events.metadata_handlers

    @property
    def gossip_handlers(self) -> EventHandlers[GossipHandler]:
        """The user gossip callbacks."""
        return self.events.gossip_handlers

    @property
    def cluster_handlers(self) -> EventHandlers[ClusterEventHandler]:
        """The cluster event handlers (flapping members, partitions)."""
        return self.events.cluster_handlers

    @property
    def gossip_interval(self) -> float:
        """The current (adaptive) period of the user gossip callbacks."""
        return self.events.gossip_interval

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self.closing

    @property
    def core(self) -> Protocol:
        """The protocol core (only touch it under ``host.lock``, e.g. through :meth:`locked`).

        Raises:
            ClusterClosed: the engine was never started.
        """
        return self.host.core

    @property
    def streams(self) -> StreamPool:
        """The stream pool, built on first use (a stopped engine's is closed at once)."""
        pool = self._stream_pool
        if pool is None:
            from .streams import StreamPool

            with self._stream_lock:
                pool = self._stream_pool
                if pool is None:
                    pool = self._stream_pool = StreamPool(self)
                    if self._streams_closed:
                        pool.close()
        return pool

    def _on_stream(self, conn: StreamConn) -> None:
        self.streams.on_stream(conn)

    def start(self, transport: Transport, advertise_addr: str = "") -> None:
        """Start ``transport``, build the core and start every thread (a second call is a no-op).

        Raises:
            TransportError: the transport could not bind.
            ClusterClosed: the engine was stopped.
        """
        if self._stopped or self.closing:
            raise ClusterClosed("a stopped cluster cannot be restarted")
        if self._started:
            return
        self.transport = transport
        transport.start(self.receiver.on_packets, self._on_stream)
        self.address = advertise_addr or _loopback_if_any(transport.local_addr)
        now = time.monotonic()
        values, stamp = self.metadata.snapshot()
        clock = self.metadata.clock
        self.host.install(Protocol(
            self.config, self.node_id, self.address, self.rng, now,
            meta=values, meta_stamp=stamp, app_version=self.config.application_version,
            stamp_clock=clock.peek,
        ))
        self._started = True
        self.out.start(transport)
        self.receiver.lanes.start()
        self.scheduler.start()
        self.events.start()
        self.metadata.add_listener(self._on_local_metadata)
        self.emit(("state", self.local_node(), NodeState.UNKNOWN))
        self.log.info("node %s started at %s", self.node_id.short, self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything in a fixed order; idempotent. Does not leave (the caller does).

        Order: mark closing, cut open streams, close the transport (no more input, sockets
        released), close the queues (wake the workers), then join every thread under one
        deadline.
        """
        if self._stopped:
            return
        self._stopped = True
        self.closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.metadata.remove_listener(self._on_local_metadata)
        with self._stream_lock:
            self._streams_closed = True
            pool = self._stream_pool
        if pool is not None:
            pool.close()  # open streams end first: their handlers see ClusterClosed
        try:
            if self.transport is not None:
                self.transport.close()
        except Exception:  # a broken transport must not stop the shutdown
            self.log.exception("closing the transport failed")
        self.stop_event.set()
        self.receiver.lanes.close()
        self.events.close()
        if self._started:
            self.scheduler.stop()
        with self._join_lock:
            waiters = [w for ws in self._join_waiters.values() for w in ws]
        for w in waiters:
            w.event.set()
        stragglers = self.out.stop(max(0.0, deadline - time.monotonic()))
        if pool is not None:
            stragglers += pool.join(deadline)
        if self._started:
            stragglers += self.receiver.lanes.join(deadline)
            me = threading.current_thread()
            for t in [self.scheduler.thread, *self.events.threads]:
                if t is not me and t.ident is not None:
                    t.join(max(0.0, deadline - time.monotonic()))
                    if t.is_alive():
                        stragglers.append(t.name)
        if stragglers:
            self.log.warning("threads still running after stop(): %s", ", ".join(stragglers))
        self.log.info("node %s stopped", self.node_id.short)

    def check_open(self) -> None:
        """Raise :class:`ClusterClosed` unless the engine is running."""
        if not self._started:
            raise ClusterClosed("the cluster is not started")
        if self.closing:
            raise ClusterClosed("the cluster is stopped")

    # ------------------------------------------------------------------ core access

    def locked(self, fn: Callable[[Protocol], T]) -> T:
        """Run ``fn(core)`` under the core lock, then perform the actions it produced.

        Raises:
            ClusterClosed: the engine was never started.
        """
        result, actions = self.host.call(fn)
        self.perform(actions, None)
        return result

    def perform(self, actions: Sequence[Action], inc: Incoming | None) -> None:
        """Send, queue events and resolve joins; called with the core lock released.

        ``inc`` is the packet whose handling produced the actions (replies go back on its
        connection), or None for timers and commands.
        """
        for a in actions:
            t = type(a)
            if t is Send:
                self.out.protocol(a, inc)  # type: ignore[arg-type]
            elif t is MemberEvent:
                self._on_member_event(a)  # type: ignore[arg-type]
            elif t is JoinResult:
                self._resolve_join(a.addr, a)  # type: ignore[union-attr, arg-type]
            elif t in CLUSTER_EVENTS:
                # The core's clock is the monotonic one; users get wall-clock times.
                self.log.warning("%s", a)
                self.emit(("cluster", a.shifted(time.time() - time.monotonic()), None))  # type: ignore[union-attr]

    def emit(self, event: tuple[str, Any, Any]) -> None:
        """Queue an event for the event thread."""
        self.events.emit(event)

    def is_member_host(self, host: str) -> bool:
        """Return True if ``host`` is this node's host or that of an alive or suspect member
        that showed itself.

        The transports ask this to admit connections (slots reserved for members) and to
        budget their dials (see :mod:`gossip.transports._admission`). The set is rebuilt after
        membership changes and at least every couple of seconds, never under a transport's
        lock.
        """
        cached = self._member_hosts
        now = time.monotonic()
        if cached is None or now - cached[0] > _MEMBER_HOSTS_TTL:
            hosts = {host_of(self.address)} if self.address else set()
            if self.host.started:
                core = self.host.core
                with self.host.lock:
                    # Only members that showed themselves (no introducer left): a member
                    # planted by a stranger's packet never gets a member's admission.
                    hosts.update(host_of(m.addr) for m in core.members.values()
                                 if (m.state is NodeState.ALIVE or m.state is NodeState.SUSPECT)
                                 and getattr(m, "introducer", None) is None)
            cached = self._member_hosts = (now, frozenset(hosts))
        return host.lower() in cached[1]

    def _on_member_event(self, ev: MemberEvent) -> None:
        if ev.kind == EVENT_STATE or ev.kind == EVENT_REMOVED:
            self._member_hosts = None
        if ev.kind == EVENT_STATE:
            self.log.info("node %s@%s: %s -> %s", ev.node.short, ev.addr, ev.prev, ev.state)
            self.emit(("state", _event_node(ev), ev.prev))
        elif ev.kind == EVENT_METADATA:
            self.emit(("metadata", _event_node(ev), ev.prev))
        elif ev.kind == EVENT_REMOVED:
            # The member was forgotten (left long enough ago, or dead past its retention):
            # handlers see it go from its last state to UNKNOWN, so removal is never silent.
            self.log.debug("= node %s@%s forgotten (%s)", ev.node.short, ev.addr, ev.state)
            gone = dataclasses.replace(_event_node(ev), state=NodeState.UNKNOWN)
            self.emit(("state", gone, ev.state))
        elif ev.kind == EVENT_CONFLICT:
            self.warn("conflict", "node id %s is claimed by %s and %s", ev.node, ev.addr,
                      ev.conflict_addr)

    # ------------------------------------------------------------------ stats and logging

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the engine counter ``name``."""
        self.counters.inc(name, n)

    def stats(self) -> dict[str, int]:
        """Return the engine, transport and core counters (``transport.*``, ``core.*``) and the
        current queue depths (``queue.*``)."""
        out = self.counters.snapshot()
        tstats = getattr(self.transport, "stats", None)
        if callable(tstats):
            tstats = tstats()
        if isinstance(tstats, dict):
            for k, v in tstats.items():
                if isinstance(v, int):
                    out[f"transport.{k}"] = v
        drops = out.get("transport.udp_kernel_drops", 0)
        if drops:
            out["dropped.kernel_udp"] = drops
        lost = out.get("transport.tcp_frames_lost", 0)
        if lost:
            out["dropped.connection_lost"] = lost
        if self.host.started:
            with self.host.lock:
                core = self.host.core
                for k, v in core.stats.items():
                    out[f"core.{k}"] = v
                for k, v in core.sizes().items():
                    out[f"table.{k}"] = v
        receiver = self.receiver
        out["user.history_evicted"] = receiver.history.evicted
        if receiver.replay is not None:
            with receiver.replay_lock:
                for k, v in receiver.replay.stats.items():
                    out[f"replay.{k}"] = v
        if receiver.user_replay is not None:
            with receiver.user_replay_lock:
                for k, v in receiver.user_replay.stats.items():
                    out[f"user_replay.{k}"] = v
        pool = self._stream_pool
        if pool is not None:
            pool.add_stats(out)
        else:
            for name in STREAM_COUNTERS:
                out.setdefault(name, 0)
        out["queue.send"] = self.out.queued
        out["queue.events"] = len(self.events.queue)
        out["queue.incoming"] = sum(self.receiver.lanes.depths())
        return out

    def warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning at most once per interval per ``key``."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -math.inf) >= _WARN_INTERVAL:
            self._last_warn[key] = now
            self.log.warning(msg, *args)

    # ------------------------------------------------------------------ snapshots

    def local_node(self) -> Node:
        """Return a snapshot of the local node."""
        values, stamp = self.metadata.snapshot()
        if not self.host.started:
            return Node(self.node_id, self.address, NodeState.UNKNOWN, 0,
                        MetadataReader(values, stamp), PROTOCOL_VERSION,
                        self.config.application_version)
        core = self.host.core
        return Node(self.node_id, self.address, core.state, core.incarnation,
                    MetadataReader(values, stamp), PROTOCOL_VERSION,
                    self.config.application_version)

    def nodes(self) -> list[Node]:
        """Return snapshots of every known node, the local node first."""
        out = [self.local_node()]
        if not self.host.started:
            return out
        core = self.host.core
        with self.host.lock:
            out.extend(_member_node(m, core.insight) for m in core.members.values())
        return out

    def state_counts(self) -> dict[NodeState, int]:
        """Return how many known nodes are in each state, the local node included, as users
        see them (a member held by flap damping counts as suspect). O(1): the core keeps the
        counts as members change."""
        out = dict.fromkeys(NodeState, 0)
        if not self.host.started:
            out[NodeState.UNKNOWN] = 1
            return out
        core = self.host.core
        with self.host.lock:
            for state, n in core.counts.items():
                out[state] += n
            held = sum(1 for nid in core.insight.held
                       if (m := core.members.get(nid)) is not None and m.state is NodeState.ALIVE)
            out[core.state] += 1
        out[NodeState.ALIVE] -= held
        out[NodeState.SUSPECT] += held
        return out

    def candidates(self, k: int) -> list[Node]:
        """Return up to ``k`` random alive or suspect peers (not this node), sampled by the core."""
        if not self.host.started or k <= 0:
            return []
        core = self.host.core
        insight = core.insight
        with self.host.lock:
            return [_member_node(m, insight) for m in core.random_peers(k, (self.node_id,))]

    def get_node(self, node_id: NodeID) -> Node | None:
        """Return the snapshot of ``node_id`` (the local node included), None if unknown."""
        if node_id == self.node_id:
            return self.local_node()
        if not self.host.started:
            return None
        core = self.host.core
        with self.host.lock:
            m = core.members.get(node_id)
            return None if m is None else _member_node(m, core.insight)

    def node_for_sender(self, sender: bytes) -> Node:
        """Return the snapshot of the node whose 16-byte id is ``sender``.

        A sender not in the member table (not yet joined, or already forgotten) is returned as
        a node in state ``UNKNOWN``, with no address and empty metadata, so that handlers are
        always given a :class:`Node`.

        This runs for every user message handled, so snapshots are cached per member and
        reused while the member's address, state, incarnation and metadata stamp are unchanged
        (each is one atomic read; the snapshot itself is rebuilt under the core lock).
        """
        if sender == self.id_bytes:
            return self.local_node()
        core = self.host.core
        entry = self._node_cache.get(sender)
        if entry is not None:
            m, node, stamp = entry
            if (m.incarnation == node.incarnation and m.state is node.state
                    and m.meta_stamp == stamp and m.addr == node.address
                    and core.members.get(m.node) is m):
                return node
        nid = NodeID(bytes=sender)
        with self.host.lock:
            m = core.members.get(nid)
            if m is None:
                return Node(nid, "", NodeState.UNKNOWN, 0, _NO_METADATA)
            node = _member_node(m, core.insight)
            stamp = m.meta_stamp
        cache = self._node_cache
        if len(cache) > 2 * len(core.members) + 64:
            cache.clear()  # forgotten members' entries go
        cache[sender] = (m, node, stamp)
        return node

    # ------------------------------------------------------------------ join / leave / metadata

    def join_addr(self, addr: str, timeout: float | None) -> JoinResult:
        """Send a join to one resolved address and wait for the answer.

        Raises:
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        waiter = _JoinWaiter()
        with self._join_lock:
            self._join_waiters.setdefault(addr, []).append(waiter)
        try:
            self.locked(lambda core: core.join(time.monotonic(), [addr]))
            if not waiter.event.wait(timeout):
                return JoinResult(addr, False, _no_answer(waiter, timeout or 0.0))
            result = waiter.result
            if result is None:
                raise ClusterClosed("the cluster was stopped while joining")
            if not result.accepted and result.reason == JOIN_NO_ANSWER:  # the core's timer
                return JoinResult(addr, False, _no_answer(waiter, self.config.join_timeout))
            return result
        finally:
            with self._join_lock:
                waiters = self._join_waiters.get(addr, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._join_waiters.pop(addr, None)

    def _join_send_failed(self, addr: str, reason: str) -> None:
        self._resolve_join(addr, JoinResult(addr, False, reason))

    def _join_sent(self, addr: str) -> None:
        with self._join_lock:
            for w in self._join_waiters.get(addr, ()):
                w.connected = True

    def join_answer_refused(self, src: str, reason: str, on_connection: bool) -> None:
        """A packet from ``src`` failed authentication or carried another label (``reason``).

        A join waiting on ``src`` notes why; if the packet came on a connection (the answer
        to the join travels on the join's own connection, which a third party cannot write
        to as a datagram's source can be forged), the join fails at once with that reason.
        """
        if not self._join_waiters:  # one read, no lock: the common case is no join at all
            return
        with self._join_lock:
            waiters = list(self._join_waiters.get(src, ()))
            for w in waiters:
                w.refused = reason
        if on_connection and waiters:
            self._resolve_join(src, JoinResult(
                src, False, f"the seed answered, but this node refused its answer: {reason}"))

    def _resolve_join(self, addr: str, result: JoinResult) -> None:
        with self._join_lock:
            waiters = list(self._join_waiters.get(addr, ()))
        for w in waiters:
            if w.result is None:
                w.result = result
            w.event.set()

    def leave(self, timeout: float) -> None:
        """Announce a graceful leave and wait (up to ``timeout``) until it has been sent."""
        if not self._started or self.closing:
            return
        end = time.monotonic() + timeout
        self.locked(lambda core: core.leave(time.monotonic()))
        if not self.out.wait_flushed(timeout):
            self.log.warning("leave: the send queue did not flush within %.1fs", timeout)
        # The leave goes to every member as a ping that it acknowledges; the core repeats it to
        # those that did not (a lost leave is otherwise a long tail: a survivor suspecting the
        # leaver alone). The scheduler sends the repeats: wait for the acks, within the timeout.
        while time.monotonic() < end and self.host.call(lambda core: core.leave_pending())[0]:
            self.stop_event.wait(0.01)

    def _on_local_metadata(self, md: Metadata) -> None:
        """Metadata listener: the scheduler propagates after a short coalescing delay."""
        if self._started:
            self.scheduler.metadata_written()

    def update_metadata(self) -> None:
        """Propagate the local metadata now and fire the local metadata event."""
        self.check_open()
        with self.host.lock:
            self.scheduler.meta_dirty_at = 0.0
        values, stamp = self.metadata.snapshot()
        self.locked(lambda core: core.set_local_metadata(time.monotonic(), values, stamp))
        self.emit(("metadata", self.local_node(), NodeState.ALIVE))

    # ------------------------------------------------------------------ user messages

    def fan_out_addrs(self, exclude: Iterable[NodeID]) -> list[str]:
        """Return the addresses of the random peers one hop of a broadcast goes to."""
        core = self.host.core
        with self.host.lock:
            # Each hop sends to broadcast_redundancy x calc_fan_out peers: with the single fan-out
            # of paularlott/gossip, 2-10 % of broadcasts miss a node at 32-1,000 nodes; twice that
            # reaches everyone (see Config.broadcast_redundancy).
            k = calc_fan_out(core.num_members(), self.config.fan_out_multiplier) \
                * self.config.broadcast_redundancy
            return [m.addr for m in core.random_peers(k, exclude)]

    def broadcast(self, msg_type: int, data: Any, reliable: bool,
                  exclude: Iterable[NodeID] = ()) -> None:
        """Send a user message to a fan-out of random peers, who relay it while the ttl lasts.

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: as :meth:`Outgoing.user`, when no peer took it.
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        check_user_type(msg_type)
        core = self.host.core
        ttl = broadcast_ttl(core.counts[NodeState.ALIVE] + 1, self.config.ttl_multiplier)
        msg_id = self.hlc.now()
        payload = self.codec.codec.encode(data)
        pkt = self.codec.encode_raw(msg_type, self.id_bytes, msg_id, ttl, payload)
        self.receiver.remember(time.monotonic(), self.id_bytes, msg_id)
        self._send_all(self.fan_out_addrs((self.node_id, *exclude)), pkt, reliable, len(payload))
        self.counters.inc("user.broadcasts")

    def send_direct(self, nodes: Iterable[Node], msg_type: int, data: Any, reliable: bool) -> None:
        """Send a user message with ttl 1 to each node (never relayed further).

        A best-effort send skips a node known dead or left (by its current state here, else
        the snapshot's): counted as ``dropped.node_dead`` / ``dropped.node_left``, and raised
        as :class:`NodeUnavailable` under ``best_effort_full_policy="raise"``.

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: as :meth:`Outgoing.user` (after trying every node).
            NodeUnavailable: a best-effort send to a node known dead or left (``"raise"``).
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        check_user_type(msg_type)
        payload = self.codec.codec.encode(data)
        pkt = self.codec.encode_raw(msg_type, self.id_bytes, self.hlc.now(), 1, payload)
        targets = [n for n in nodes if n.id != self.node_id]
        first: Exception | None = None
        if not reliable:
            targets, first = self._skip_gone(targets)
        self._send_all([n.address for n in targets], pkt, reliable, len(payload), first)
        self.counters.inc("user.direct")

    def _skip_gone(self, nodes: list[Node]) -> tuple[list[Node], Exception | None]:
        """Split off the nodes known dead or left; count each, and return the error to raise
        under the ``"raise"`` policy (else None)."""
        members = self.host.core.members
        live: list[Node] = []
        error: Exception | None = None
        for n in nodes:
            # One dict read and one attribute read, atomic without the lock: a state a moment
            # old is as good as the caller's snapshot.
            m = members.get(n.id)
            state = n.state if m is None else m.state
            if state is not NodeState.DEAD and state is not NodeState.LEAVING:
                live.append(n)
                continue
            name = "dead" if state is NodeState.DEAD else "left"
            self.counters.inc(f"dropped.node_{name}")
            if self.config.best_effort_full_policy == "raise" and error is None:
                error = NodeUnavailable(
                    f"node {n.id.short}@{n.address} is {name}: the message was not sent",
                    str(n.id), name)
        return live, error

    def _send_all(self, addrs: list[str], pkt: bytes, reliable: bool, payload_size: int,
                  first: Exception | None = None) -> None:
        """Send ``pkt`` (whose payload is ``payload_size`` bytes before compression) to every
        address; raise the first failure (``first`` if given) after trying them all."""
        sent = 0
        for addr in addrs:
            try:
                self.out.user(addr, pkt, reliable, payload_size)
                sent += 1
            except ClusterClosed:
                raise
            except Exception as exc:  # GossipError subclasses; re-raised below
                if first is None:
                    first = exc
        self.counters.inc("user.sent", sent)
        if first is not None:
            raise first

    def request(self, node: Node, msg_type: int, payload: Any, response_type: type[Any] | None,
                timeout: float | None) -> Any:
        """Send a request to ``node`` over a dedicated connection and return its decoded reply.

        Raises:
            GossipTimeout: no reply within ``timeout`` (default ``tcp_deadline``).
            RemoteHandlerError: the node's reply handler raised, or it has none for the type.
            TransportError: the node could not be reached.
            DecodeError: the reply is malformed or does not fit ``response_type``.
            LocalProtocolError, ClusterClosed: as :meth:`send_direct`.
        """
        self.check_open()
        check_user_type(msg_type)
        timeout = self.config.tcp_deadline if timeout is None else timeout
        return self.out.request(node.address, f"{node.id.short}@{node.address}", msg_type,
                                payload, response_type, timeout)


def _loopback_if_any(addr: str) -> str:
    """Replace an unspecified host (0.0.0.0, ::) with 127.0.0.1 so the address is dialable."""
    host, _, port = addr.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        return f"127.0.0.1:{port}"
    return addr


def _event_node(ev: MemberEvent) -> Node:
    return Node(ev.node, ev.addr, ev.state, ev.incarnation, MetadataReader(ev.meta, ev.meta_stamp),
                ev.pv, ev.av, ev.at)


_NO_METADATA = MetadataReader()
"""The metadata of a sender the member table does not hold."""


def _member_node(m: Any, insight: Insight) -> Node:
    # The state users are shown: suspect while flap damping holds a member (gossip.protocol.flap).
    return Node(m.node, m.addr, insight.shown_state(m.node, m.state), m.incarnation,
                MetadataReader(m.meta, m.meta_stamp), m.pv, m.av, m.state_change)
