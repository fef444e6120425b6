"""The threaded host of the protocol core: threads, queues, timers and I/O, no protocol logic.

Thread layout (every thread is a daemon named ``gossip-<node short id>-<role>[-n]``)::

    transport readers ──on_packet──► incoming queue (bounded, drop newest)
                                         │
                              incoming workers (decode, authenticate)
                             ┌───────────┴──────────────┐
                   internal type (< 64)          user type (>= 64)
            core.receive() under the core lock   dedup, relay, user handler
                             │
                  actions drained under the lock, performed after releasing it:
            Send ──► send queue (bounded, drop oldest) ──► send workers ──► transport
            MemberEvent ──► event queue ──► event thread ──► state / metadata handlers
            JoinResult ──► waiting join() calls

    scheduler thread: sleeps until core.next_deadline(), core.tick(), message-history GC,
                      coalesced local-metadata propagation
    gossip thread:    user gossip callbacks every gossip_interval (adaptive)

The protocol core is not thread-safe: every call into it happens under ``self._lock`` (a
Condition's lock, so the scheduler sleeps on the same lock it protects), and no I/O or user code
ever runs while it is held.

This module imports the core, the packet codec, the transports and the workers; never the
cluster facade.
"""

from __future__ import annotations

import dataclasses

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import messages
from .config import Config
from .errors import (
    ClusterClosed,
    GossipError,
    GossipTimeout,
    LocalProtocolError,
    RemoteProtocolError,
)
from .handlers import (
    HANDLER_FORWARD,
    HANDLER_REPLY,
    EventHandlers,
    MessageHandlers,
    check_user_type,
    check_app_version,  # core API: the app version verdict is computed here, outside the core lock
)
from .hlc import HLC
from .metadata import Metadata, MetadataReader
from .node import PROTOCOL_VERSION, Node, NodeID, NodeState
from .packet import Packet, PacketCodec
from .protocol import JoinResult, MemberEvent, Protocol, Send
from .protocol.actions import EVENT_CONFLICT, EVENT_METADATA, EVENT_REMOVED, EVENT_STATE, Action
from .protocol.messaging import MessageHistory, calc_fan_out, max_ttl
from .transports.base import Incoming, Transport
from .wire import RESERVED_MSGS_START, MessageType
from .workers import BoundedQueue, QueueClosed, WorkerPool

__all__ = ["Engine", "StateHandler", "MetadataHandler", "GossipHandler"]

logger = logging.getLogger("gossip.engine")

T = TypeVar("T")

StateHandler = Callable[[Node, NodeState], None]
"""``fn(node, previous_state)``: called on the event thread when a node changes state."""
MetadataHandler = Callable[[Node], None]
"""``fn(node)``: called on the event thread when a node's metadata changes."""
GossipHandler = Callable[[], None]
"""``fn()``: called on the gossip thread every ``gossip_interval``."""

_DROP_LOG_INTERVAL = 10.0
_EVENT_QUEUE_SIZE = 65536
_META_COALESCE = 0.01  # seconds a burst of local metadata writes is gathered into one update


@dataclass(slots=True)
class _OutProto:
    """A protocol message to encode and send."""

    addr: str
    msg: messages.Message
    reliable: bool


@dataclass(slots=True)
class _OutRaw:
    """An already encoded packet to send."""

    addr: str
    data: bytes
    reliable: bool


class _JoinWaiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: JoinResult | None = None


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
        self._id_bytes = node_id.bytes
        self.transport: Transport | None = None
        self.codec = codec
        self.metadata = metadata
        self.rng = rng if rng is not None else random.Random()
        self.hlc = HLC()
        self.log = logger if config.logger is None else config.logger
        self._debug = self.log.isEnabledFor(logging.DEBUG)
        self._prefix = f"gossip-{node_id.short}"
        self.address = ""

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._core: Protocol | None = None
        self._planned = math.inf
        self._meta_dirty_at = 0.0  # monotonic time of the first unpropagated local write, 0 if none

        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._last_warn: dict[str, float] = {}

        self.state_handlers: EventHandlers[StateHandler] = EventHandlers()
        self.metadata_handlers: EventHandlers[MetadataHandler] = EventHandlers()
        self.gossip_handlers: EventHandlers[GossipHandler] = EventHandlers()
        self.message_handlers = MessageHandlers()

        self.history = MessageHistory(config.msg_history_max_age, config.msg_history_shard_count)
        self._history_lock = threading.Lock()
        self._history_size = 0  # entries at the last GC or insert; the scheduler skips GC at 0

        self._incoming: BoundedQueue[Incoming] = BoundedQueue(
            config.incoming_packet_queue_depth, policy="drop_newest", name=f"{self._prefix}-incoming")
        self._sendq: BoundedQueue[_OutProto | _OutRaw] = BoundedQueue(
            config.send_queue_size, policy="drop_oldest", name=f"{self._prefix}-send")
        # Membership events for the event thread. Bounded like every queue here: if handlers fall
        # this far behind, the oldest events are dropped (counted, warned) rather than memory grow.
        self._events: BoundedQueue[tuple[str, Node, NodeState]] = BoundedQueue(
            _EVENT_QUEUE_SIZE, policy="drop_oldest", name=f"{self._prefix}-events")
        self._inflight = 0
        self._inflight_cv = threading.Condition()
        self._join_waiters: dict[str, list[_JoinWaiter]] = {}

        self._recv_pool: WorkerPool[Incoming] | None = None
        self._send_pool: WorkerPool[_OutProto | _OutRaw] | None = None
        self._threads: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self._started = False
        self._closing = False
        self._stopped = False
        self.gossip_interval = config.gossip_interval

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._closing

    @property
    def core(self) -> Protocol:
        """The protocol core (only touch it under :meth:`locked`).

        Raises:
            ClusterClosed: the engine was never started.
        """
        if self._core is None:
            raise ClusterClosed("the cluster is not started")
        return self._core

    def start(self, transport: Transport, advertise_addr: str = "") -> None:
        """Start ``transport``, build the core and start every thread (a second call is a no-op).

        Raises:
            TransportError: the transport could not bind.
            ClusterClosed: the engine was stopped.
        """
        if self._stopped or self._closing:
            raise ClusterClosed("a stopped cluster cannot be restarted")
        if self._started:
            return
        self.transport = transport
        transport.start(self._on_packet)
        self.address = advertise_addr or _loopback_if_any(transport.local_addr)
        now = time.monotonic()
        values, stamp = self.metadata.snapshot()
        self._core = Protocol(
            self.config, self.node_id, self.address, self.rng, now,
            meta=values, meta_stamp=stamp, app_version=self.config.application_version,
        )
        self._started = True
        self._recv_pool = WorkerPool(f"{self._prefix}-recv", self.config.num_incoming_workers,
                                     self._incoming, self._handle_incoming)
        self._send_pool = WorkerPool(f"{self._prefix}-send", self.config.num_send_workers,
                                     self._sendq, self._handle_send)
        self._recv_pool.start()
        self._send_pool.start()
        for role, target in (("scheduler", self._scheduler_loop), ("events", self._event_loop),
                             ("gossip", self._gossip_loop)):
            t = threading.Thread(target=target, name=f"{self._prefix}-{role}", daemon=True)
            self._threads.append(t)
            t.start()
        self.metadata.add_listener(self._on_local_metadata)
        self._emit(("state", self.local_node(), NodeState.UNKNOWN))
        self.log.info("node %s started at %s", self.node_id.short, self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything in a fixed order; idempotent. Does not leave (the caller does).

        Order: mark closing, close the transport (no more input, sockets released), close the
        queues (wake the workers), then join every thread under one deadline.
        """
        if self._stopped:
            return
        self._stopped = True
        self._closing = True
        deadline = time.monotonic() + max(0.0, timeout)
        self.metadata.remove_listener(self._on_local_metadata)
        try:
            if self.transport is not None:
                self.transport.close()
        except Exception:  # a broken transport must not stop the shutdown
            self.log.exception("closing the transport failed")
        self._stop_event.set()
        self._incoming.close()
        self._sendq.close()
        self._events.close()
        with self._wake:
            self._wake.notify_all()
        with self._inflight_cv:
            self._inflight_cv.notify_all()
        for waiters in list(self._join_waiters.values()):
            for w in waiters:
                w.event.set()
        stragglers: list[str] = []
        for pool in (self._recv_pool, self._send_pool):
            if pool is not None:
                stragglers += pool.stop(max(0.0, deadline - time.monotonic()))
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    stragglers.append(t.name)
        if stragglers:
            self.log.warning("threads still running after stop(): %s", ", ".join(stragglers))
        self.log.info("node %s stopped", self.node_id.short)

    def _check_open(self) -> None:
        if not self._started:
            raise ClusterClosed("the cluster is not started")
        if self._closing:
            raise ClusterClosed("the cluster is stopped")

    # ------------------------------------------------------------------ core access

    def locked(self, fn: Callable[[Protocol], T]) -> T:
        """Run ``fn(core)`` under the core lock, then perform the actions it produced.

        Raises:
            ClusterClosed: the engine was never started.
        """
        core = self.core
        with self._lock:
            result = fn(core)
            actions = core.actions_to_perform()
            self._maybe_wake(core)
        self._perform(actions)
        return result

    def _maybe_wake(self, core: Protocol) -> None:
        if core.next_deadline() < self._planned:
            self._wake.notify()

    def _perform(self, actions: Sequence[Action]) -> None:
        """Queue sends, queue events and resolve joins; called with the core lock released."""
        for a in actions:
            if type(a) is Send:
                self._enqueue(_OutProto(a.addr, a.msg, a.reliable), priority=True)
            elif type(a) is MemberEvent:
                self._on_member_event(a)
            elif type(a) is JoinResult:
                self._resolve_join(a.addr, a)

    def _emit(self, item: tuple[str, Node, NodeState]) -> None:
        """Queue an event for the event thread; count and warn if the oldest had to go."""
        if not self._events.put(item) and not self._events.closed:
            self.count("events_dropped")
            self._warn("events_dropped", "event queue full (%d): handlers are too slow, "
                       "dropping the oldest events", _EVENT_QUEUE_SIZE)

    def _on_member_event(self, ev: MemberEvent) -> None:
        if ev.kind == EVENT_STATE:
            self.log.info("node %s@%s: %s -> %s", ev.node.short, ev.addr, ev.prev, ev.state)
            self._emit(("state", _event_node(ev), ev.prev))
        elif ev.kind == EVENT_METADATA:
            self._emit(("metadata", _event_node(ev), ev.prev))
        elif ev.kind == EVENT_REMOVED:
            # The member was forgotten (left long enough ago, or dead past its retention):
            # handlers see it go from its last state to UNKNOWN, so removal is never silent.
            self.log.debug("= node %s@%s forgotten (%s)", ev.node.short, ev.addr, ev.state)
            gone = dataclasses.replace(_event_node(ev), state=NodeState.UNKNOWN)
            self._emit(("state", gone, ev.state))
        elif ev.kind == EVENT_CONFLICT:
            self._warn("conflict", "node id %s is claimed by %s and %s", ev.node, ev.addr,
                       ev.conflict_addr)

    # ------------------------------------------------------------------ stats and logging

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the engine counter ``name``."""
        with self._stats_lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def stats(self) -> dict[str, int]:
        """Return the engine, transport and core counters (``transport.*``, ``core.*``)."""
        with self._stats_lock:
            out = dict(self._stats)
        tstats = getattr(self.transport, "stats", None)
        if callable(tstats):
            tstats = tstats()
        if isinstance(tstats, dict):
            for k, v in tstats.items():
                if isinstance(v, int):
                    out[f"transport.{k}"] = v
        if self._core is not None:
            with self._lock:
                for k, v in self._core.stats.items():
                    out[f"core.{k}"] = v
        return out

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning at most once per interval per ``key``."""
        now = time.monotonic()
        if now - self._last_warn.get(key, -math.inf) >= _DROP_LOG_INTERVAL:
            self._last_warn[key] = now
            self.log.warning(msg, *args)

    # ------------------------------------------------------------------ snapshots

    def local_node(self) -> Node:
        """Return a snapshot of the local node."""
        core = self._core
        values, stamp = self.metadata.snapshot()
        if core is None:
            return Node(self.node_id, self.address, NodeState.UNKNOWN, 0,
                        MetadataReader(values, stamp), PROTOCOL_VERSION,
                        self.config.application_version)
        return Node(self.node_id, self.address, core.state, core.incarnation,
                    MetadataReader(values, stamp), PROTOCOL_VERSION,
                    self.config.application_version)

    def nodes(self) -> list[Node]:
        """Return snapshots of every known node, the local node first."""
        out = [self.local_node()]
        core = self._core
        if core is None:
            return out
        with self._lock:
            out.extend(_member_node(m) for m in core.members.values())
        return out

    def get_node(self, node_id: NodeID) -> Node | None:
        """Return the snapshot of ``node_id`` (the local node included), None if unknown."""
        if node_id == self.node_id:
            return self.local_node()
        core = self._core
        if core is None:
            return None
        with self._lock:
            m = core.members.get(node_id)
            return None if m is None else _member_node(m)

    # ------------------------------------------------------------------ incoming path

    def _on_packet(self, inc: Incoming) -> None:
        """Transport reader callback: enqueue without blocking."""
        if not self._incoming.put(inc):
            self.count("incoming_dropped")
            self._warn("incoming_dropped", "incoming queue full (%d): dropping packets",
                       self.config.incoming_packet_queue_depth)

    def _handle_incoming(self, inc: Incoming) -> None:
        try:
            self._process(inc)
        except RemoteProtocolError as exc:
            self.count(f"bad_packets.{type(exc).__name__}")
            if self._debug:
                self.log.debug("! bad packet from %s: %s", inc.src, exc)
        except ClusterClosed:
            pass
        except Exception:
            self.count("worker_errors")
            self.log.exception("bug: processing a packet from %s failed", inc.src)

    def _process(self, inc: Incoming) -> None:
        if self._closing:
            return
        pkt = self.codec.decode(inc.data)
        self.count("packets_received")
        mt = pkt.msg_type
        if mt < RESERVED_MSGS_START:
            if mt == MessageType.REPLY:
                self.count("stray_replies")
                return
            msg = messages.from_wire(mt, pkt.unmarshal())
            sender = NodeID(bytes=pkt.sender)
            now = time.monotonic()
            core = self.core
            ok = check_app_version(self.config.application_version_check, msg.av) if type(msg) is messages.Join else None  # core API: verdict outside the lock
            with self._lock:
                core.receive(now, inc.src, msg, sender, inc.reliable, app_version_ok=ok)
                actions = core.actions_to_perform()
                self._maybe_wake(core)
            self._perform(actions)
        else:
            self._user_packet(inc, pkt)

    def _user_packet(self, inc: Incoming, pkt: Packet) -> None:
        now = time.monotonic()
        with self._history_lock:
            dup = self.history.seen(now, pkt.sender, pkt.msg_id)
            self._history_size += not dup
        if dup:
            self.count("user_duplicates")
            return
        self.count("user_received")
        handler = self.message_handlers.get(pkt.msg_type)
        if (handler is None or handler.kind == HANDLER_FORWARD) and pkt.ttl > 1:
            origin = NodeID(bytes=pkt.sender)
            data = self.codec.encode_raw(pkt.msg_type, pkt.sender, pkt.msg_id, pkt.ttl - 1,
                                         pkt.payload)
            for addr in self._fan_out_addrs((origin,)):
                self._send_user(addr, data, inc.reliable)
            self.count("user_relayed")
        if handler is None:
            self.count("user_unhandled")
            return
        sender = self.get_node(NodeID(bytes=pkt.sender))
        if handler.kind == HANDLER_REPLY:
            if inc.conn is None:
                self.count("reply_without_connection")
                return
            try:
                reply = handler.fn(sender, pkt)
            except Exception:
                self.count("handler_errors")
                self.log.exception("message handler for type %d raised", pkt.msg_type)
                reply = None
            data = self.codec.encode(MessageType.REPLY, self._id_bytes, self.hlc.now(), 1, reply)
            try:
                inc.conn.send_frame(data, self.config.tcp_deadline)
            except GossipError as exc:  # the requester went away or timed out: not our bug
                self.count(f"reply_errors.{type(exc).__name__}")
                if self._debug:
                    self.log.debug("! reply to %s failed: %s", inc.src, exc)
            return
        try:
            handler.fn(sender, pkt)
        except Exception:
            self.count("handler_errors")
            self.log.exception("message handler for type %d raised", pkt.msg_type)

    # ------------------------------------------------------------------ send path

    def _enqueue(self, item: _OutProto | _OutRaw, priority: bool = False) -> None:
        if self._closing:
            return
        with self._inflight_cv:
            self._inflight += 1
        ok = self._sendq.put_priority(item) if priority else self._sendq.put(item)
        if not ok:
            self._done_one()
            self.count("send_dropped")
            self._warn("send_dropped", "send queue full (%d): dropping packets",
                       self.config.send_queue_size)

    def _send_user(self, addr: str, data: bytes, reliable: bool) -> None:
        """Send a user packet from the caller's thread when it is one UDP datagram, else queue it.

        A datagram write does not wait on the peer, so it goes out at once: one thread hand-off
        less per message (about twice the throughput on loopback). Anything that may block
        (TCP: dialing, a slow reader) goes through the bounded send queue and its workers.
        Errors are counted and logged, never raised, as for queued sends.
        """
        cfg = self.config
        if reliable or cfg.force_reliable_transport or len(data) > cfg.udp_max_packet_size:
            self._enqueue(_OutRaw(addr, data, reliable))
            return
        try:
            assert self.transport is not None
            self.transport.send(addr, data, False, cfg.udp_deadline)
            self.count("packets_sent")
        except GossipError as exc:
            self.count(f"send_errors.{type(exc).__name__}")
            if self._debug:
                self.log.debug("! send to %s failed: %s", addr, exc)

    def _done_one(self) -> None:
        with self._inflight_cv:
            self._inflight -= 1
            if self._inflight <= 0:
                self._inflight_cv.notify_all()

    def _handle_send(self, item: _OutProto | _OutRaw) -> None:
        try:
            if type(item) is _OutProto:
                mt, value = messages.to_wire(item.msg)
                data = self.codec.encode(mt, self._id_bytes, self.hlc.now(), 1, value)
            else:
                assert isinstance(item, _OutRaw)
                data = item.data
            cfg = self.config
            reliable = item.reliable or cfg.force_reliable_transport or len(data) > cfg.udp_max_packet_size
            assert self.transport is not None
            self.transport.send(item.addr, data, reliable,
                                cfg.tcp_deadline if reliable else cfg.udp_deadline)
            self.count("packets_sent")
        except GossipError as exc:
            self.count(f"send_errors.{type(exc).__name__}")
            if self._debug:
                self.log.debug("! send to %s failed: %s", item.addr, exc)
            if type(item) is _OutProto and type(item.msg) is messages.Join:
                self._resolve_join(item.addr, JoinResult(item.addr, False, f"{type(exc).__name__}: {exc}"))
        except Exception:
            self.count("worker_errors")
            self.log.exception("bug: sending to %s failed", item.addr)
        finally:
            self._done_one()

    def wait_flushed(self, timeout: float) -> bool:
        """Wait until every queued packet has been handed to the transport; False on timeout."""
        end = time.monotonic() + timeout
        with self._inflight_cv:
            while self._inflight > 0 and not self._closing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._inflight_cv.wait(left)
        return True

    # ------------------------------------------------------------------ join / leave / metadata

    def join_addr(self, addr: str, timeout: float | None) -> JoinResult:
        """Send a join to one resolved address and wait for the answer.

        Raises:
            ClusterClosed: the engine is not running.
        """
        self._check_open()
        waiter = _JoinWaiter()
        with self._lock:
            self._join_waiters.setdefault(addr, []).append(waiter)
        try:
            self.locked(lambda core: core.join(time.monotonic(), [addr]))
            if not waiter.event.wait(timeout):
                return JoinResult(addr, False, f"no answer within {timeout:.1f}s")
            if waiter.result is None:
                raise ClusterClosed("the cluster was stopped while joining")
            return waiter.result
        finally:
            with self._lock:
                waiters = self._join_waiters.get(addr, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._join_waiters.pop(addr, None)

    def _resolve_join(self, addr: str, result: JoinResult) -> None:
        with self._lock:
            waiters = list(self._join_waiters.get(addr, ()))
        for w in waiters:
            if w.result is None:
                w.result = result
            w.event.set()

    def leave(self, timeout: float) -> None:
        """Announce a graceful leave and wait (up to ``timeout``) until it has been sent."""
        if not self._started or self._closing:
            return
        self.locked(lambda core: core.leave(time.monotonic()))
        if not self.wait_flushed(timeout):
            self.log.warning("leave: the send queue did not flush within %.1fs", timeout)

    def _on_local_metadata(self, md: Metadata) -> None:
        """Metadata listener: mark dirty; the scheduler propagates after a short coalescing delay."""
        with self._wake:
            if not self._meta_dirty_at:
                self._meta_dirty_at = time.monotonic()
                self._wake.notify()

    def update_metadata(self) -> None:
        """Propagate the local metadata now and fire the local metadata event."""
        self._check_open()
        with self._lock:
            self._meta_dirty_at = 0.0
        values, stamp = self.metadata.snapshot()
        self.locked(lambda core: core.set_local_metadata(time.monotonic(), values, stamp))
        self._emit(("metadata", self.local_node(), NodeState.ALIVE))

    # ------------------------------------------------------------------ user messages

    def _fan_out_addrs(self, exclude: Iterable[NodeID]) -> list[str]:
        core = self.core
        with self._lock:
            # Each hop sends to broadcast_redundancy x calc_fan_out peers: with the single fan-out
            # of paularlott/gossip, 2-10 % of broadcasts miss a node at 32-1,000 nodes; twice that
            # reaches everyone (see Config.broadcast_redundancy).
            k = calc_fan_out(core.num_members(), self.config.fan_out_multiplier) * self.config.broadcast_redundancy
            peers = core.random_peers(k, exclude)
            return [m.addr for m in peers]

    def broadcast(self, msg_type: int, data: Any, reliable: bool,
                  exclude: Iterable[NodeID] = ()) -> None:
        """Send a user message to a fan-out of random peers, who relay it while the ttl lasts.

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            ClusterClosed: the engine is not running.
        """
        self._check_open()
        check_user_type(msg_type)
        core = self.core
        with self._lock:
            ttl = max_ttl(core.counts[NodeState.ALIVE] + 1, self.config.ttl_multiplier)
        msg_id = self.hlc.now()
        pkt = self.codec.encode(msg_type, self._id_bytes, msg_id, ttl, data)
        with self._history_lock:
            self.history.seen(time.monotonic(), self._id_bytes, msg_id)
            self._history_size += 1
        for addr in self._fan_out_addrs((self.node_id, *exclude)):
            self._send_user(addr, pkt, reliable)
        self.count("user_broadcasts")

    def send_direct(self, nodes: Iterable[Node], msg_type: int, data: Any, reliable: bool) -> None:
        """Send a user message with ttl 1 to each node (never relayed further).

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            ClusterClosed: the engine is not running.
        """
        self._check_open()
        check_user_type(msg_type)
        pkt = self.codec.encode(msg_type, self._id_bytes, self.hlc.now(), 1, data)
        for node in nodes:
            if node.id == self.node_id:
                continue
            self._send_user(node.address, pkt, reliable)
        self.count("user_direct")

    def request(self, node: Node, msg_type: int, payload: Any, response_type: type[Any] | None,
                timeout: float | None) -> Any:
        """Send a request to ``node`` over a dedicated connection and return its decoded reply.

        Raises:
            GossipTimeout: no reply within ``timeout`` (default ``tcp_deadline``).
            TransportError: the node could not be reached.
            DecodeError: the reply is malformed or does not fit ``response_type``.
            LocalProtocolError, ClusterClosed: as :meth:`send_direct`.
        """
        self._check_open()
        check_user_type(msg_type)
        timeout = self.config.tcp_deadline if timeout is None else timeout
        data = self.codec.encode(msg_type, self._id_bytes, self.hlc.now(), 1, payload)
        try:
            assert self.transport is not None
            raw = self.transport.request(node.address, data, timeout)
        except GossipTimeout as exc:
            raise GossipTimeout(
                f"no reply from node {node.id.short}@{node.address} to message type {msg_type} "
                f"within {timeout:.3g}s") from exc
        pkt = self.codec.decode(raw)
        if pkt.msg_type != MessageType.REPLY:
            raise LocalProtocolError(f"expected a reply from {node.id.short}, got type {pkt.msg_type}")
        return pkt.unmarshal(response_type)

    # ------------------------------------------------------------------ threads

    def _scheduler_loop(self) -> None:
        core = self.core
        gc_every = self.config.msg_history_gc_interval
        next_gc = time.monotonic() + gc_every
        while not self._stop_event.is_set():
            actions: list[Action] = []
            propagate_meta = False
            with self._wake:
                now = time.monotonic()
                deadline = core.next_deadline()
                if self._history_size:
                    deadline = min(deadline, next_gc)   # nothing to forget: no wake-up for it
                if self._meta_dirty_at:
                    deadline = min(deadline, self._meta_dirty_at + _META_COALESCE)
                if deadline > now:
                    self._planned = deadline
                    self._wake.wait(min(deadline - now, 5.0))
                    self._planned = math.inf
                    continue
                if self._stop_event.is_set():
                    break
                try:
                    core.tick(now)
                except Exception:
                    self.count("scheduler_errors")
                    self.log.exception("bug: core.tick failed")
                if self._meta_dirty_at and now >= self._meta_dirty_at + _META_COALESCE:
                    self._meta_dirty_at = 0.0
                    values, stamp = self.metadata.snapshot()
                    core.set_local_metadata(now, values, stamp)
                    propagate_meta = True
                actions = core.actions_to_perform()
            self._perform(actions)
            if propagate_meta:
                self._emit(("metadata", self.local_node(), NodeState.ALIVE))
            if now >= next_gc:
                next_gc = now + gc_every
                with self._history_lock:
                    self.history.gc(now)
                    self._history_size = len(self.history)

    def _event_loop(self) -> None:
        while True:
            try:
                item = self._events.get()
            except QueueClosed:
                return
            kind, node, prev = item
            if kind == "state":
                for fn in self.state_handlers:
                    self._call(fn, "state", node, prev)
            else:
                for md_fn in self.metadata_handlers:
                    self._call(md_fn, "metadata", node)

    def _call(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.count("handler_errors")
            self.log.exception("%s handler %r raised", what, fn)

    def _gossip_loop(self) -> None:
        base = self.config.gossip_interval
        cap = self.config.gossip_max_interval
        while not self._stop_event.wait(self.gossip_interval):
            handlers = self.gossip_handlers.handlers()
            if not handlers:
                continue
            start = time.monotonic()
            for fn in handlers:
                if self._stop_event.is_set():
                    return
                self._call(fn, "gossip")
            d = time.monotonic() - start
            interval = self.gossip_interval
            if d > interval:
                interval = min(1.25 * d, cap)
            elif interval > base and d < 0.8 * interval:
                interval = max(base, (d + interval) / 2)
            self.gossip_interval = interval


def _loopback_if_any(addr: str) -> str:
    """Replace an unspecified host (0.0.0.0, ::) with 127.0.0.1 so the address is dialable."""
    host, _, port = addr.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        return f"127.0.0.1:{port}"
    return addr


def _event_node(ev: MemberEvent) -> Node:
    return Node(ev.node, ev.addr, ev.state, ev.incarnation, MetadataReader(ev.meta, ev.meta_stamp),
                ev.pv, ev.av, ev.at)


def _member_node(m: Any) -> Node:
    return Node(m.node, m.addr, m.state, m.incarnation, MetadataReader(m.meta, m.meta_stamp),
                m.pv, m.av, m.state_change)
