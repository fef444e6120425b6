"""The :class:`Engine`: one node's parts, built and wired together, and :meth:`Engine.perform`.

The engine builds its parts, hands each the collaborators it uses (never the engine itself),
starts and stops them in a fixed order, and carries out what the core decides:

::

    received packets ─► Receiver ──┐
    timers ───────────► Scheduler ─┼─► CoreHost ─► actions ─► perform() ─┬─► Outgoing: sends
    commands (join, leave...) ─────┘   (the lock)  (released)             ├─► EventLoop: events
                                                                          └─► Joins: answers

:meth:`Engine.perform` is that step: every action the core returns, from a received packet, a
timer or a command, is performed there, with the core's lock released.

This module imports the engine's parts, the core and the handler registries; never the
cluster facade, and no transport but through the interface it is given at start.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import Config
from ..counters import STREAM_COUNTERS, Counters
from ..errors import ClusterClosed, GossipError, JoinError
from ..handlers import EventHandlers, MessageHandlers
from ..hlc import HLC
from ..joining import Backoff, JoinOutcome, JoinStatus
from ..metadata import Metadata
from ..node import Node, NodeID, NodeState
from ..packet import Packet, PacketCodec
from ..tags import tags_size
from ..protocol import JoinResult, MemberEvent, Protocol, Send
from ..protocol.actions import EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, EVENT_STATE, Action, Trace
from ..protocol.insight import CLUSTER_EVENTS
from ..transports.base import Incoming, RequestLine, StreamConn, Transport, complete
from . import wiring
from .deadlines import Deadlines
from .events import ClusterEventHandler, EventLoop, GossipHandler, MetadataHandler, StateHandler
from .host import CoreHost
from .incoming import Receiver
from .joins import Joins, join_peers, join_peers_nowait
from .members import MemberView, event_node, removed_node
from .outgoing import Outgoing
from .user_messages import UserMessages
from .replies import Replies
from .scheduler import Scheduler
from .seeds import SeedJoiner

if TYPE_CHECKING:
    from .discovery import MulticastDiscovery
    from .stream_pool import StreamPool
    from .tracing import Tracing

__all__ = ["Engine"]

logger = logging.getLogger("gossip.engine")

T = TypeVar("T")

_WARN_INTERVAL = 10.0
_LEAVE_POLL = 0.01  # how often a leave that does not block checks for its acknowledgements


class Engine:
    """Runs one node: a :class:`~gossip.protocol.Protocol` core driven by threads and a transport.

    Args:
        config: a validated configuration (not copied: the caller owns a private copy).
        node_id: this node's id.
        metadata: the local node's writable metadata.
        rng: randomness for the core and peer selection (default: a fresh ``random.Random``).
        codec: the packet pipeline (default: the one the configuration describes, with its
            keyring: :func:`.wiring.codec_for`).

    The parts, each given what it uses: :attr:`host` (the core and its lock), :attr:`members`
    (snapshots of the member table), :attr:`receiver` (the receive path), :attr:`out` (the send
    path) and :attr:`messages` (user sends), :attr:`scheduler` (the protocol clock),
    :attr:`events` (the event and gossip threads), :attr:`joins` (joins under way),
    :attr:`deadlines` (the deadlines of calls that do not block), :attr:`replies` (requests
    waiting for their replies) and :attr:`streams` (the stream pool, built on first use).

    Every call that waits for the network or a peer has a form that does not block its caller
    (``*_nowait``): it returns a :class:`concurrent.futures.Future` that the engine's threads
    complete, and cancelling that future releases what the engine holds for it. The asyncio
    face (:mod:`gossip.aio`) is built on them.
    """

    def __init__(
        self,
        config: Config,
        node_id: NodeID,
        metadata: Metadata,
        rng: random.Random | None = None,
        *,
        codec: PacketCodec | None = None,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.id_bytes = node_id.bytes
        # A custom transport written before the interface's optional members is completed
        # once (gossip.transports.base.complete), so the engine never probes for them.
        self.transport: Transport | None = None if config.transport is None else complete(config.transport)
        if codec is None:
            codec = wiring.codec_for(config, wiring.keyring_for(config))
        self.codec = codec
        self.metadata = metadata
        self.rng = rng if rng is not None else random.Random()
        self.hlc = HLC(max_drift=config.max_clock_drift)
        self.log = logger if config.logger is None else config.logger
        self.prefix = prefix = f"gossip-{node_id.short}"
        self.counters = counters = Counters()
        self.stop_event = threading.Event()
        self._last_warn: dict[str, float] = {}
        self.host = host = CoreHost()
        self.message_handlers = MessageHandlers()
        self.members = members = MemberView(host, node_id, metadata, config, wiring.names_for(codec))
        self.joins = joins = Joins(config.join_timeout)
        self.deadlines = deadlines = Deadlines(counters, self.log, prefix)
        self.replies = replies = Replies(deadlines, counters)
        self._resolve = wiring.resolver_for(config)
        self.seeds = self._new_seed_joiner()
        self.discoveries: dict[tuple[str, int], MulticastDiscovery] = {}
        self._discovery_lock = threading.Lock()
        self.events = EventLoop(config.gossip_interval, config.gossip_max_interval,
                                self.stop_event, counters, self.log, self.warn, prefix)
        self.out = out = Outgoing(config, codec, self.id_bytes, self.hlc, counters, self.log,
                                  joins.failed, prefix, joins.sent)
        self.receiver = receiver = Receiver(
            config, codec, host, hlc=self.hlc, sender_id=self.id_bytes,
            handlers=self.message_handlers, members=members, perform=self.perform,
            relay=out.relay, on_refused=joins.refused, counters=counters, log=self.log,
            prefix=prefix, on_reply=replies.resolve)
        self.messages = UserMessages(out, config, codec, node_id, self.hlc, members,
                                     receiver.history.remember, counters, replies)
        self.scheduler = Scheduler(
            host, history=receiver.history, perform=self.perform, metadata=metadata.snapshot,
            on_metadata=self._local_metadata_sent, stop=self.stop_event,
            gc_interval=config.msg_history_gc_interval, counters=counters, log=self.log,
            prefix=prefix)
        # The stream pool (and the stream layer it imports) is built by the first stream
        # opened or accepted: a node that never streams does not load it.
        self._stream_pool: StreamPool | None = None
        self._stream_lock = threading.Lock()
        self._streams_closed = False
        # Spans (Config.tracing): the module, and opentelemetry, are loaded only when asked for.
        self.tracing: Tracing | None = None
        if config.tracing is not False:
            from .tracing import Tracing

            self.tracing = Tracing(config.tracing, str(node_id), counters, self.warn)
        self._started = False
        self.closing = False
        self._stopped = False

    # ------------------------------------------------------------------ handler registries

    def _new_seed_joiner(self) -> SeedJoiner:
        cfg = self.config
        rng = random.Random(self.rng.random())
        return SeedJoiner(self.join, self._isolated, lambda ev: self.emit(("cluster", ev, None)),
                          Backoff(cfg.join_retry_interval, cfg.join_retry_max_interval, rng),
                          cfg.join_timeout, rng, self.log, self.prefix)

    def _isolated(self) -> bool:
        counts = self.members.state_counts()
        return counts[NodeState.ALIVE] + counts[NodeState.SUSPECT] <= 1  # this node alone

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
    def address(self) -> str:
        """The advertised address (``""`` before :meth:`start`)."""
        return self.members.address

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
            from .stream_pool import StreamPool

            with self._stream_lock:
                pool = self._stream_pool
                if pool is None:
                    pool = self._stream_pool = StreamPool(
                        self.config, self.codec, sender_id=self.id_bytes, hlc=self.hlc,
                        handlers=self.message_handlers,
                        node_for_sender=self.members.node_for_sender, dial=self._dial_stream,
                        check_open=self.check_open, counters=self.counters, log=self.log,
                        warn=self.warn, prefix=self.prefix)
                    if self._streams_closed:
                        pool.close()
        return pool

    def _dial_stream(self, addr: str, timeout: float) -> StreamConn:
        transport = self.transport
        if transport is None or not self._started:
            raise ClusterClosed("the cluster is not started")
        if self.tracing is None:
            return transport.dial_stream(addr, timeout)
        return self.tracing.dial_stream(transport, addr, timeout)

    def _on_stream(self, conn: StreamConn) -> None:
        if self.tracing is not None:
            self.tracing.stream_accepted(conn.peer)
        self.streams.on_stream(conn)

    def start(self, transport: Transport | None = None) -> None:
        """Start the transport, build the core and start every thread (a second call is a
        no-op).

        Args:
            transport: the transport to use; default ``config.transport``, else the built-in
                one :func:`.wiring.build_transport` makes from the configuration.

        The advertised address is :func:`.wiring.advertised_address`'s: ``advertise_addr``,
        else the address the transport listens on (for a node bound to every interface, with
        the host of the interface that carries the default route).

        Raises:
            ConfigError: the node binds every interface, has no ``advertise_addr`` and no
                interface carries a default route (nothing was bound).
            TransportError: the transport could not be built or bind.
            ClusterClosed: the engine was stopped.
        """
        if self._stopped or self.closing:
            raise ClusterClosed("a stopped cluster cannot be restarted")
        if self._started:
            return
        cfg = self.config
        any_host = wiring.advertise_host_for_any(cfg)
        if transport is None:
            extra = (self.codec,) if cfg.wire_protocol == "memberlist" else ()
            transport = self.transport or wiring.build_transport(
                cfg, self.node_id.short, self.members.is_member_host, *extra)
        self.transport = transport  # kept before it starts: stop() closes it if it fails
        transport.start(self.receiver.on_packets, self._on_stream)
        address = wiring.advertised_address(cfg, transport.local_addr, any_host)
        self.members.address = address
        now = time.monotonic()
        values, stamp = self.metadata.snapshot()
        clock = self.metadata.clock
        self.host.install(Protocol(
            self.config, self.node_id, address, self.rng, now,
            meta=values, meta_stamp=stamp, app_version=self.config.application_version,
            stamp_clock=clock.peek, tags=self.members.tags,
        ))
        self._started = True
        self.out.start(transport)
        self.receiver.start()
        self.scheduler.start()
        self.events.start()
        self.metadata.add_listener(self._on_local_metadata)
        self.emit(("state", self.local_node(), NodeState.UNKNOWN))
        if cfg.discovery == "multicast":
            try:
                self.discover(cfg.multicast_group, cfg.multicast_port)
            except BaseException:
                self.stop(0.0)
                raise
        self.log.info("node %s started at %s", self.node_id.short, address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything in a fixed order; idempotent. Does not leave (the caller does).

        Order: mark closing and take no more input, cut open streams, close the transport
        (sockets released), close the queues (wake the workers), then join every thread under
        one deadline. A transport given or built for an engine that never started is closed
        too.
        """
        if self._stopped:
            return
        self._stopped = True
        self.closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.receiver.close()
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
        self.seeds.close()  # never waited for: a lookup under way ends it when it returns
        with self._discovery_lock:
            discoveries = list(self.discoveries.values())
        for d in discoveries:
            d.close()
        self.events.close()
        if self._started:
            self.scheduler.stop()
        self.joins.close()
        self.replies.close()
        self.deadlines.close()
        stragglers = self.out.stop(max(0.0, deadline - time.monotonic()))
        stragglers += self.deadlines.join(deadline)
        if pool is not None:
            stragglers += pool.join(deadline)
        if not self._started:
            return
        stragglers += self.receiver.join(deadline)
        me = threading.current_thread()
        for t in [self.scheduler.thread, *self.events.threads, *(d.thread for d in discoveries)]:
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

    # ------------------------------------------------------------------ the core's actions

    def locked(self, fn: Callable[[Protocol], T]) -> T:
        """Run ``fn(core)`` under the core lock, then perform the actions it produced.

        Raises:
            ClusterClosed: the engine was never started.
        """
        result, actions = self.host.call(fn)
        self.perform(actions)
        return result

    def perform(self, actions: Sequence[Action], inc: Incoming | None = None) -> None:
        """Carry out the core's actions, with the core lock released: send, queue events,
        resolve joins.

        Every action the core returns comes here: from the receive path (``inc`` is the
        packet whose handling produced them: replies go back on its connection), from the
        scheduler's timers and from commands (``inc`` is None).
        """
        for a in actions:
            t = type(a)
            if t is Send:
                self.out.protocol(a, inc)  # type: ignore[arg-type]
            elif t is MemberEvent:
                self._on_member_event(a)  # type: ignore[arg-type]
            elif t is JoinResult:
                self.joins.resolve(a.addr, a)  # type: ignore[union-attr, arg-type]
            elif t is Trace and self.tracing is not None:
                self.tracing.record(a)  # type: ignore[arg-type]
            elif t in CLUSTER_EVENTS:
                # The core's clock is the monotonic one; users get wall-clock times.
                self.log.warning("%s", a)
                self.emit(("cluster", a.shifted(time.time() - time.monotonic()), None))  # type: ignore[union-attr]

    def _on_member_event(self, ev: MemberEvent) -> None:
        if ev.kind == EVENT_STATE or ev.kind == EVENT_REMOVED:
            self.members.changed()
        if ev.kind == EVENT_STATE:
            self.log.info("node %s@%s: %s -> %s", ev.node.short, ev.addr, ev.prev, ev.state)
            self.emit(("state", event_node(ev, self.members.name_of), ev.prev))
            if ev.state is NodeState.DEAD or ev.state is NodeState.LEFT:
                self.seeds.member_lost()
        elif ev.kind == EVENT_METADATA:
            self.emit(("metadata", event_node(ev, self.members.name_of), ev.prev))
        elif ev.kind == EVENT_REMOVED:
            # The member was forgotten (left long enough ago, or dead past its retention):
            # handlers see it go from its last state to UNKNOWN, so removal is never silent.
            self.log.debug("= node %s@%s forgotten (%s)", ev.node.short, ev.addr, ev.state)
            self.emit(("state", removed_node(ev, self.members.name_of), ev.state))
        elif ev.kind == EVENT_CONFLICT:
            self.warn("conflict", "node id %s is claimed by %s and %s", ev.node, ev.addr,
                      ev.conflict_addr)

    def emit(self, event: tuple[str, Any, Any]) -> None:
        """Queue an event for the event thread."""
        self.events.emit(event)

    # ------------------------------------------------------------------ stats and logging

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the engine counter ``name``."""
        self.counters.inc(name, n)

    def stats(self) -> dict[str, int]:
        """Return the engine, transport and core counters (``transport.*``, ``core.*``) and the
        current queue depths (``queue.*``)."""
        out = self.counters.snapshot()
        if self.transport is not None:
            for k, v in self.transport.stats.items():
                if isinstance(v, int):
                    out[f"transport.{k}"] = v
        drops = out.get("transport.udp_kernel_drops", 0)
        if drops:
            out["dropped.kernel_udp"] = drops
        lost = out.get("transport.tcp_frames_lost", 0)
        if lost:
            out["dropped.connection_lost"] = lost
        if self.host.started:
            def core_stats(core: Protocol) -> None:
                for k, v in core.stats.items():
                    out[f"core.{k}"] = v
                for k, v in core.sizes().items():
                    out[f"table.{k}"] = v

            self.host.read(core_stats)
        self.receiver.add_stats(out)
        pool = self._stream_pool
        if pool is not None:
            pool.add_stats(out)
        else:
            for name in STREAM_COUNTERS:
                out.setdefault(name, 0)
        out["queue.send"] = self.out.queued
        out["queue.events"] = len(self.events.queue)
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
        return self.members.local_node()

    # ------------------------------------------------------------------ join / leave / metadata

    def join(self, peers: list[str], timeout: float) -> JoinOutcome:
        """Join through ``peers`` in parallel (see :func:`.joins.join_peers`).

        Raises:
            JoinError: no peer accepted.
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        return join_peers(peers, timeout, resolve=self._resolve, join_addr=self.join_addr,
                          own_addr=self.address, prefix=self.prefix)

    def join_in_background(self, peers: list[str]) -> JoinStatus:
        """Join through ``peers`` in the background (see :class:`.seeds.SeedJoiner`).

        Raises:
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        if self.seeds.closed:  # the node left, and joins again
            self.seeds = self._new_seed_joiner()
        return self.seeds.add(peers)

    def discover(self, group: str, port: int) -> MulticastDiscovery:
        """Announce this node on the multicast group ``group:port`` and join the members of
        its cluster heard there (see :mod:`.discovery`); a group already in use is reused.

        Raises:
            TransportError: the group cannot be joined.
            ClusterClosed: the engine is not running.
        """
        from ..transports.multicast import MulticastSocket
        from .discovery import MulticastDiscovery

        self.check_open()
        cfg = self.config
        with self._discovery_lock:
            found = self.discoveries.get((group, port))
            if found is not None:
                return found
            iface = cfg.multicast_interface
            if not iface:
                host = cfg.bind_addr.rpartition(":")[0] if cfg.socket_transport_enabled else ""
                iface = host if host.count(".") == 3 and host != "0.0.0.0" else ""
            sock = MulticastSocket(group, port, iface, cfg.multicast_ttl)
            keyring = self.codec.keyring
            d = MulticastDiscovery(
                sock, self.id_bytes, lambda: self.address, cfg.cluster_label,
                (lambda: keyring.keys) if keyring is not None else (lambda: ()),
                self._holds_live, lambda addr: self.join([addr], cfg.join_timeout),
                interval=cfg.multicast_interval, max_peers=cfg.multicast_max_peers,
                counters=self.counters, rng=random.Random(self.rng.random()), log=self.log,
                prefix=self.prefix)
            self.discoveries[(group, port)] = d
            if port == 0:
                self.discoveries[(group, sock.port)] = d
        d.start()
        return d

    def join_multicast(self, seeds: list[str], wait: float | None) -> JoinOutcome:
        """Start discovery on each ``mcast://group[:port]`` seed (see :meth:`discover`).

        With ``wait`` (seconds), wait until discovery joined a first member (or one that heard
        this node's announcement joined it).

        Returns:
            The seeds whose discovery joined someone (none without ``wait``), and why each
            other failed.

        Raises:
            JoinError: a seed is not a multicast group or cannot be joined; or, with ``wait``,
                no member was joined in time.
            ClusterClosed: the engine is not running, or stopped while waiting.
        """
        from .discovery import parse_multicast_seed

        failures: dict[str, str] = {}
        found = []
        for seed in seeds:
            try:
                found.append(self.discover(*parse_multicast_seed(seed, self.config.multicast_port)))
            except ClusterClosed:
                raise
            except GossipError as exc:
                failures[seed] = str(exc)
        if failures and (wait is None or not found):
            raise JoinError(failures)
        if wait is None:
            return JoinOutcome((), {})
        end = time.monotonic() + wait

        def joined() -> bool:  # we joined someone, or someone who heard us joined us
            return any(d.joined.is_set() for d in found) or not self._isolated()

        while time.monotonic() < end and not joined():
            if self.stop_event.wait(0.02):
                raise ClusterClosed("the cluster was stopped while joining")
        if joined():
            return JoinOutcome([s for s in seeds if s not in failures], failures)
        for seed in seeds:
            failures.setdefault(seed, f"no member of this cluster announced itself within {wait:.1f}s")
        raise JoinError(failures)

    def _holds_live(self, node: bytes) -> bool:
        n = self.members.get_node(NodeID(bytes=node))
        return n is not None and n.state in (NodeState.ALIVE, NodeState.SUSPECT)

    def join_addr(self, addr: str, timeout: float | None) -> JoinResult:
        """Send a join to one resolved address and wait for the answer.

        Raises:
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        start = time.monotonic()
        result: JoinResult | None = None
        try:
            result = self.joins.wait(addr, timeout, lambda: self.locked(
                lambda core: core.join(time.monotonic(), [addr])))
            return result
        finally:
            if self.tracing is not None:
                self.tracing.joined(addr, start, result)

    def join_nowait(self, peers: list[str], timeout: float) -> Future[JoinOutcome]:
        """:meth:`join` without blocking: return a future of its outcome (see
        :func:`.joins.join_peers_nowait`); it fails with :class:`JoinError` when no peer
        accepted. Cancelling it releases the joins under way.

        Raises:
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        return join_peers_nowait(peers, timeout, resolve=self._resolve,
                                 needs_lookup=wiring.needs_lookup,
                                 expect_join=self._expect_join, own_addr=self.address,
                                 deadlines=self.deadlines, prefix=self.prefix)

    def _expect_join(self, addr: str) -> Future[JoinResult]:
        self.check_open()
        fut = self.joins.expect(addr, lambda: self.locked(
            lambda core: core.join(time.monotonic(), [addr])))
        if self.tracing is not None:
            self.tracing.join_future(addr, fut)
        return fut

    def leave(self, timeout: float) -> None:
        """Announce a graceful leave and wait (up to ``timeout``) until it has been sent."""
        if not self._started or self.closing:
            return
        end = time.monotonic() + timeout
        self.seeds.close()  # a node that left does not go back to its seeds
        self.locked(lambda core: core.leave(time.monotonic()))
        if not self.out.wait_flushed(timeout):
            self.log.warning("leave: the send queue did not flush within %.1fs", timeout)
        # The leave goes to every member as a ping that it acknowledges; the core repeats it to
        # those that did not (a lost leave is otherwise a long tail: a survivor suspecting the
        # leaver alone). The scheduler sends the repeats: wait for the acks, within the timeout.
        while time.monotonic() < end and self.host.call(lambda core: core.leave_pending())[0]:
            self.stop_event.wait(0.01)

    def leave_nowait(self, timeout: float) -> Future[None]:
        """:meth:`leave` without blocking: announce the leave now and return a future that
        completes once it went out and was acknowledged, or ``timeout`` passed (never fails).

        It checks every few milliseconds on the deadlines thread, as :meth:`leave` does on its
        caller's.
        """
        done: Future[None] = Future()
        if not self._started or self.closing:
            done.set_result(None)
            return done
        end = time.monotonic() + timeout
        self.locked(lambda core: core.leave(time.monotonic()))

        def check() -> None:
            if done.done():
                return
            pending = False
            if not self.closing and time.monotonic() < end:
                try:
                    pending = (self.out.unsent > 0
                               or self.host.call(lambda core: core.leave_pending())[0])
                except ClusterClosed:
                    pending = False
            if pending:
                self.deadlines.after(_LEAVE_POLL, check)
                return
            try:
                done.set_result(None)
            except InvalidStateError:  # cancelled
                pass

        self.deadlines.after(0.0, check)
        return done

    def _on_local_metadata(self, md: Metadata) -> None:
        """Metadata listener: the scheduler propagates after a short coalescing delay."""
        if self._started:
            self.scheduler.metadata_written()

    def _local_metadata_sent(self) -> None:
        self.emit(("metadata", self.local_node(), NodeState.ALIVE))

    def update_metadata(self) -> None:
        """Propagate the local metadata now and fire the local metadata event."""
        self.check_open()
        self.scheduler.metadata_sent()
        values, stamp = self.metadata.snapshot()
        self.locked(lambda core: core.set_local_metadata(time.monotonic(), values, stamp))
        self._local_metadata_sent()

    def set_tags(self, tags: frozenset[str]) -> None:
        """Replace this node's tags (validated by the caller) and, if running, propagate them
        now with the metadata under a new stamp (they count against its size bound).

        Raises:
            MetadataError: the metadata and the tags together exceed ``max_metadata_size``.
            ClusterClosed: the metadata was closed (the cluster stopped).
        """
        values, stamp = self.metadata.reserve(tags_size(tags))
        self.members.tags = tags
        if not self._started or self.closing:
            return
        self.scheduler.metadata_sent()
        self.locked(lambda core: core.set_local_metadata(time.monotonic(), values, stamp, tags))
        self._local_metadata_sent()

    def forget(self, node: NodeID) -> bool:
        """Forget a dead or left member everywhere (see :meth:`Protocol.forget`).

        Raises:
            ValueError: ``node`` is this node or a member held alive or suspect.
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        forgotten = self.locked(lambda core: core.forget(time.monotonic(), node))
        if forgotten:
            self.log.info("node %s forgotten", node.short)
        return forgotten

    # ------------------------------------------------------------------ user messages

    def broadcast(self, msg_type: int, data: Any, reliable: bool,
                  exclude: Iterable[NodeID] = (), tag: str | None = None) -> None:
        """Send a user message to a fan-out of random peers (see :meth:`UserMessages.broadcast`);
        with ``tag``, to members holding it only.

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: when no peer took it.
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        self.messages.broadcast(msg_type, data, reliable, exclude, tag)

    def send_direct(self, nodes: Iterable[Node], msg_type: int, data: Any, reliable: bool) -> None:
        """Send a user message with ttl 1 to each node (see :meth:`UserMessages.send_direct`).

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: after trying every node.
            NodeUnavailable: a best-effort send to a node known dead or left (``"raise"``).
            ClusterClosed: the engine is not running.
        """
        self.check_open()
        self.messages.send_direct(nodes, msg_type, data, reliable)

    def request(self, node: Node, msg_type: int, payload: Any, response_type: type[Any] | None,
                timeout: float | None) -> Any:
        """Send a request to ``node`` and return its decoded reply (see
        :meth:`UserMessages.request`).

        Raises:
            GossipTimeout: no reply within ``timeout`` (default ``tcp_deadline``).
            RemoteHandlerError: the node's reply handler raised, or it has none for the type.
            TransportError: the node could not be reached.
            DecodeError: the reply is malformed or does not fit ``response_type``.
            LocalProtocolError, ClusterClosed: as :meth:`send_direct`.
        """
        self.check_open()
        return self.messages.request(node, msg_type, payload, response_type, timeout)

    # ------------------------------------------------------------------ calls that never block

    def broadcast_nowait(self, msg_type: int, data: Any, reliable: bool,
                         exclude: Iterable[NodeID] = ()) -> Future[None] | None:
        """:meth:`broadcast` without blocking (see :meth:`UserMessages.broadcast_nowait`):
        None when it went out at once, else a future for the packets still waiting."""
        self.check_open()
        return self.messages.broadcast_nowait(msg_type, data, reliable, exclude)

    def send_direct_nowait(self, nodes: Iterable[Node], msg_type: int, data: Any,
                           reliable: bool) -> Future[None] | None:
        """:meth:`send_direct` without blocking (see :meth:`UserMessages.send_direct_nowait`):
        None when it went out at once, else a future for the packets still waiting."""
        self.check_open()
        return self.messages.send_direct_nowait(nodes, msg_type, data, reliable)

    def request_nowait(self, node: Node, msg_type: int, payload: Any,
                       timeout: float | None) -> Future[Packet]:
        """:meth:`request` without blocking: a future of the reply packet (see
        :meth:`UserMessages.request_nowait`; decode it with
        :func:`~gossip.engine.replies.reply_value`)."""
        self.check_open()
        return self.messages.request_nowait(node, msg_type, payload, timeout)

    def request_start(self, node: Node, msg_type: int, payload: Any,
                      timeout: float | None) -> RequestLine | Future[Packet]:
        """Start a request without blocking: on a borrowed request connection for the caller
        to drive, or as :meth:`request_nowait` (see :meth:`UserMessages.request_start`)."""
        self.check_open()
        return self.messages.request_start(node, msg_type, payload, timeout)

    def decode_reply(self, raw: bytes, node: Node, msg_type: int) -> Packet:
        """Decode the reply ``raw`` read on a :class:`~gossip.transports.base.RequestLine`
        (see :meth:`Outgoing.decode_reply`)."""
        return self.out.decode_reply(raw, f"{node.id.short}@{node.address}", msg_type)
