"""The receive path: every packet this node receives arrives here, in batches.

::

    transport reader thread ── on_packets(batch) ──► decode + authenticate every packet
         │                                              │
         │      protocol (type < 64): protocol lane     │     user (type >= 64): user lanes
         │      on this same thread, one core-lock      │     lane = hash(source) % workers,
         │      acquisition for the batch, replies      │     one hand-off per batch and lane
         │      written at once (never behind user      ▼
         │      code, never behind a dial)          lane worker: duplicate check, relay,
         │                                          handler, reply on the connection
         ▼
    accepted stream connections ── on_stream ──► the stream pool (gossip.engine.stream_pool)

Protocol traffic therefore has its own lane: a flood of user messages or slow handlers can
delay no ack. User handlers, reply handlers included, run on the lane workers
(``num_incoming_workers`` threads) and never on a reader thread: a reader also reads the
protocol's frames and accepts stream connections, and a handler that blocks must hold up
neither. All packets from one source go to one lane, so they are handled in the order they
arrived.

Back-pressure on receive: a lane holds at most ``incoming_packet_queue_depth`` packets (and its
share of ``incoming_queue_max_bytes``). A datagram that finds its lane full is dropped and counted (``dropped.incoming_queue_full``); a
frame that arrived on a connection is never dropped: the connection's reading is paused
instead (:meth:`Connection.pause_reading`), so the sender's own send calls slow down, and it is
resumed once the lane has drained to a quarter.

Every malformed, oversized or unauthenticated packet is counted under ``bad_packets.<Error>``
and dropped; nothing a peer sends can raise out of here. A packet that fails authentication or
carries another cluster label is also logged as a warning, once a minute per source host (for
a bounded number of hosts at a time): a node with another key or label is an operator's
mistake to show, not a silence that looks like a dead seed. Protocol messages that always fit a
datagram are refused from their header when they claim more (a compressed frame that would
expand to megabytes costs nothing). Sealed packets are checked against replays on both lanes
(:mod:`gossip.protocol.replay`: ``replay.*`` and ``user_replay.*``), so a recorded user
message, request or election heartbeat cannot be played again.

This module imports the packet pipeline, the messages, the handlers and the transports'
interface. The :class:`Receiver` is given its collaborators (the core's host, the member
snapshots, where to perform the core's actions and to relay broadcasts, whom to tell of a
refused packet); it never holds the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .. import messages
from ..config import Config
from ..counters import Counters
from ..address import host_of
from ..errors import (
    AuthenticationError,
    CipherMismatch,
    ClusterClosed,
    EncryptionError,
    GossipError,
    LabelMismatch,
    LocalProtocolError,
    RemoteProtocolError,
    ReplayedPacket,
    SendQueueFull,
)
from ..handlers import HANDLER_FORWARD, HANDLER_REPLY, HANDLER_STREAM, MessageHandlers, check_app_version
from ..hlc import HLC
from ..messages import Message
from ..node import Node, NodeID
from ..packet import Packet, PacketCodec
from ..protocol.actions import Action
from ..protocol.messaging import MessageHistory
from ..protocol.replay import ReplayGuard
from ..transports.base import Connection, Incoming
from ..wire import MAX_DATAGRAM_PAYLOAD, RESERVED_MSGS_START, MessageType
from .host import CoreHost
from .outgoing import broadcast_ttl, type_key

__all__ = ["Receiver", "Members", "SeenMessages", "UserLanes", "SourceWarnings", "refusal_hint"]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

_CHUNK = 256  # packets a lane worker takes at once
# Protocol messages that are never larger than a datagram, whatever carries them (a gossip
# message, corrections included, is filled up to the datagram budget; a join carries one state).
_DATAGRAM_TYPES = (MessageType.PING, MessageType.ACK, MessageType.PING_REQ, MessageType.NACK,
                   MessageType.GOSSIP, MessageType.JOIN)
_REFUSED_WARN_INTERVAL = 60.0  # a source's unauthentic packets are logged at most this often
_REFUSED_WARN_SOURCES = 256  # ...for at most this many sources at a time


def refusal_hint(exc: EncryptionError) -> str:
    """Say what the sender of a packet refused with ``exc`` most likely has, for an operator:
    ``"another cluster label"``, ``"another encryption key"``..."""
    if isinstance(exc, LabelMismatch):
        return "another cluster label"
    if isinstance(exc, CipherMismatch):
        return "another cipher (Config.cipher)"
    if isinstance(exc, AuthenticationError):
        return "another encryption key"
    return "other encryption settings (one side encrypts, the other does not)"


class SourceWarnings:
    """Decide when a source's refused packets are worth a warning: once per ``interval`` per
    source, for at most ``max_sources`` sources at a time, so that a flood from many (spoofed)
    sources cannot flood the log or grow memory. Thread-safe (reader threads share it).
    """

    def __init__(self, interval: float, max_sources: int) -> None:
        self._interval = interval
        self._max = max_sources
        self._last: dict[str, float] = {}
        self._full_until = 0.0
        self._lock = threading.Lock()
        self.suppressed = 0
        """Warnings not given because ``max_sources`` sources were already being tracked."""

    def due(self, source: str, now: float) -> bool:
        """True if a warning about ``source`` should be logged now (then it is remembered)."""
        with self._lock:
            last = self._last.get(source)
            if last is not None:
                if now - last < self._interval:
                    return False
            elif len(self._last) >= self._max:
                if now < self._full_until:
                    self.suppressed += 1
                    return False
                cutoff = now - self._interval
                self._last = {k: t for k, t in self._last.items() if t > cutoff}
                if len(self._last) >= self._max:
                    self._full_until = min(self._last.values()) + self._interval
                    self.suppressed += 1
                    return False
            self._last[source] = now
            return True


class UserLanes:
    """``n`` worker threads, each with its own bounded queue of user packets.

    Args:
        n: number of lanes (and threads).
        depth: packets a lane holds before datagrams are dropped and connections paused.
        max_bytes: bytes all lanes together hold (each gets an even share) before the same.
        handle: ``handle(items)`` runs on the lane's thread for a chunk of ``(Incoming,
            Packet)`` pairs; it must not raise (it is wrapped all the same).
        counters: where drops and bugs are counted.
        prefix: thread names are ``<prefix>-recv-<i>``.
    """

    def __init__(self, n: int, depth: int, max_bytes: int,
                 handle: Callable[[list[tuple[Incoming, Packet]]], None],
                 counters: Counters, prefix: str,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self.n = n
        self.depth = depth
        self.max_bytes = max(1, max_bytes // n)
        self._bytes = [0] * n
        self._low = max(1, depth // 4)
        self._handle = handle
        self._counters = counters
        self._log = log
        self._conds = [threading.Condition(threading.Lock()) for _ in range(n)]
        self._queues: list[deque[tuple[Incoming, Packet]]] = [deque() for _ in range(n)]
        self._paused: list[dict[Connection, None]] = [{} for _ in range(n)]
        self._waiting = [False] * n  # the lane's thread sleeps (a put must wake it)
        self._closed = False
        self._started = False
        self._running = [False] * n  # a lane's thread starts with its first packet
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"{prefix}-recv-{i}") for i in range(n)]

    def start(self) -> None:
        """Let the lanes run: each lane's thread starts with the first packet it gets (a
        node whose user traffic comes from few sources runs few lane threads)."""
        self._started = True
        for lane, (cond, q) in enumerate(zip(self._conds, self._queues)):
            with cond:
                if q and not self._running[lane] and not self._closed:
                    self._running[lane] = True
                    self._threads[lane].start()

    def lane_of(self, src: str) -> int:
        """Return the lane of packets from ``src`` (the same lane every time)."""
        return hash(src) % self.n

    def idle(self, lane: int) -> bool:
        """True if ``lane`` holds nothing and its thread is waiting for work (or was never
        needed yet)."""
        return (self._waiting[lane] or not self._running[lane]) and not self._queues[lane]

    def depths(self) -> list[int]:
        """Return how many packets each lane holds."""
        return [len(q) for q in self._queues]

    def put(self, lane: int, items: list[tuple[Incoming, Packet]]) -> None:
        """Queue ``items`` on ``lane`` (one wake-up); see the module docstring for a full lane."""
        q = self._queues[lane]
        cond = self._conds[lane]
        dropped = 0
        with cond:
            if self._closed:
                return
            depth, max_bytes = self.depth, self.max_bytes
            held = self._bytes[lane]
            for item in items:
                inc = item[0]
                size = len(inc.data)
                if len(q) >= depth or held + size > max_bytes:
                    conn = inc.conn
                    if conn is None:
                        dropped += 1
                        continue
                    paused = self._paused[lane]
                    if conn not in paused:
                        paused[conn] = None
                        conn.pause_reading()
                q.append(item)
                held += size
            self._bytes[lane] = held
            if self._waiting[lane]:
                cond.notify()
            elif not self._running[lane] and self._started and q:
                self._running[lane] = True
                self._threads[lane].start()
        if dropped:
            self._counters.inc("dropped.incoming_queue_full", dropped)

    def close(self) -> None:
        """Stop taking packets and wake every lane thread (which then ends)."""
        self._closed = True
        for lane, (cond, q) in enumerate(zip(self._conds, self._queues)):
            with cond:
                q.clear()
                self._bytes[lane] = 0
                cond.notify_all()

    def join(self, deadline: float) -> list[str]:
        """Join the lane threads; return the names of those still running at ``deadline``."""
        me = threading.current_thread()
        for t in self._threads:
            if t is not me and t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive() and t is not me]

    def _run(self, lane: int) -> None:
        q = self._queues[lane]
        cond = self._conds[lane]
        paused = self._paused[lane]
        while True:
            resume: list[Connection] = []
            with cond:
                while not q and not self._closed:
                    self._waiting[lane] = True
                    cond.wait()
                    self._waiting[lane] = False
                if self._closed:
                    return
                if len(q) <= _CHUNK:
                    items = list(q)
                    q.clear()
                else:
                    items = [q.popleft() for _ in range(_CHUNK)]
                self._bytes[lane] -= sum(len(item[0].data) for item in items)
                if paused and len(q) <= self._low and self._bytes[lane] <= self.max_bytes // 4:
                    resume = list(paused)
                    paused.clear()
            if resume:
                # Resumed outside the lock (a transport may deliver held frames at once, to
                # this lane). A reader that filled the lane again meanwhile found the
                # connection still paused and held it without pausing it again: pause it
                # now, or it would be read while its lane is full, without bound.
                for conn in resume:
                    conn.resume_reading()
                with cond:
                    for conn in resume:
                        if conn in paused:
                            conn.pause_reading()
            try:
                self._handle(items)
            except Exception:
                self._counters.inc("errors.lane_worker")
                self._log.exception("bug: a user lane failed")


class Members(Protocol):
    """What the receive path reads of the member table (:class:`~.members.MemberView`)."""

    def node_for_sender(self, sender: bytes) -> Node:
        """The snapshot of the sender of a user message, as handlers are given it."""
        ...

    tags: frozenset[str]
    """This node's tags (a tagged broadcast is handled and relayed only if it holds the tag)."""

    def fan_out_addrs(self, exclude: Iterable[NodeID], tag: str | None = None) -> list[str]:
        """The addresses one hop of a broadcast goes to (members holding ``tag``, if given)."""
        ...

    def alive_count(self) -> int:
        """The alive members, this node included."""
        ...


class SeenMessages:
    """The duplicate history of broadcasts: (sender, id) pairs seen lately; thread-safe.

    ``size`` is the number of entries after the last insert or garbage collection (the
    scheduler skips the collection at 0).
    """

    def __init__(self, max_age: float, shards: int, max_entries: int) -> None:
        self._history = MessageHistory(max_age, shards, max_entries)
        self._lock = threading.Lock()
        self.size = 0

    def seen(self, now: float, sender: bytes, msg_id: int) -> bool:
        """Record ``(sender, msg_id)``; True if it was already there (a duplicate)."""
        with self._lock:
            dup = self._history.seen(now, sender, msg_id)
            if not dup:
                self.size += 1
        return dup

    def remember(self, now: float, sender: bytes, msg_id: int) -> None:
        """Record a message we sent ourselves, so its echoes are dropped."""
        with self._lock:
            self._history.seen(now, sender, msg_id)
            self.size += 1

    def gc(self, now: float) -> None:
        """Forget (sender, id) pairs past their age (the scheduler calls this)."""
        with self._lock:
            self._history.gc(now)
            self.size = len(self._history)

    @property
    def evicted(self) -> int:
        """Entries dropped before their age because the history was full."""
        return self._history.evicted


class Receiver:
    """The receive path of one engine; see the module docstring.

    Args:
        config: the validated configuration.
        codec: the packet pipeline.
        host: the core's host (protocol messages are fed to the core through it).
        hlc: the clock that stamps message ids (replay checks, replies).
        sender_id: this node's id, as bytes (replies are sent as it).
        handlers: the user message handlers.
        members: the member snapshots (senders, a broadcast's next hop, the cluster's size).
        perform: ``perform(actions, inc)`` carries out the core's actions for the packet
            ``inc`` (lock released; replies go back on its connection).
        relay: ``relay(addr, packet, reliable, payload_size)`` sends a relayed broadcast.
        on_refused: ``on_refused(src, reason, on_connection)`` hears of a packet refused for
            its key or label (a join waiting on ``src`` learns why).
        counters: where every packet, drop and error is counted.
        log: the engine's logger.
        prefix: the thread name prefix (``gossip-<node>``).
        on_reply: ``on_reply(packet)`` takes every reply that arrives on a connection (the
            answers to requests sent on pooled connections: :mod:`.replies`); None counts them
            as ``dropped.stray_replies``.
    """

    def __init__(
        self, config: Config, codec: PacketCodec, host: CoreHost, *, hlc: HLC, sender_id: bytes,
        handlers: MessageHandlers, members: Members,
        perform: Callable[[Sequence[Action], Incoming | None], None],
        relay: Callable[[str, bytes, bool, int], None],
        on_refused: Callable[[str, str, bool], None], counters: Counters, log: Log, prefix: str,
        on_reply: Callable[[Packet], None] | None = None,
    ) -> None:
        cfg = config
        self.codec = codec
        self._host = host
        self._hlc = hlc
        self._sender_id = sender_id
        self._members = members
        self._perform = perform
        self._relay_to = relay
        self._on_refused = on_refused
        self._on_reply = on_reply
        self.counters = counters
        self.log = log
        self._debug = self.log.isEnabledFor(logging.DEBUG)
        self._closing = False
        self.handlers = handlers
        self.history = SeenMessages(cfg.msg_history_max_age, cfg.msg_history_shard_count,
                                    cfg.msg_history_max_entries)
        self.replay = (ReplayGuard(cfg.replay_window, cfg.replay_max_entries)
                       if cfg.replay_window > 0 else None)
        self.replay_lock = threading.Lock()
        # The user lane (user messages, and add-on packages' such as election heartbeats) has
        # its own guard: a flood of user messages never pushes protocol packets out of theirs.
        self.user_replay = (ReplayGuard(cfg.replay_window, cfg.replay_max_entries)
                            if cfg.replay_window > 0 else None)
        self.user_replay_lock = threading.Lock()
        self._broadcast_window = min(cfg.replay_window, cfg.msg_history_max_age)
        self._max_states = cfg.max_members + 1
        self._app_version_check = cfg.application_version_check
        self.lanes = UserLanes(cfg.num_incoming_workers, cfg.incoming_packet_queue_depth,
                               cfg.incoming_queue_max_bytes, self._user_batch, self.counters,
                               prefix, self.log)
        # A datagram decompresses to at most this much: it "stays a datagram" (senders send
        # bigger payloads over a connection, gossip.engine.outgoing).
        self._udp_payload = max(MAX_DATAGRAM_PAYLOAD, cfg.udp_max_packet_size)
        # Protocol messages built to fit a datagram stay that small on a connection too: a
        # frame claiming more (a compressed "bomb") is refused from its header alone.
        self._type_limits: dict[int, int] = {int(t): self._udp_payload for t in _DATAGRAM_TYPES}
        self._ttl_multiplier = cfg.ttl_multiplier
        self._refused_warnings = SourceWarnings(_REFUSED_WARN_INTERVAL, _REFUSED_WARN_SOURCES)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Let the user lanes run."""
        self.lanes.start()

    def close(self) -> None:
        """Take no more packets (the engine stops) and wake the lane threads, which end."""
        self._closing = True
        self.lanes.close()

    def join(self, deadline: float) -> list[str]:
        """Join the lane threads; return the names of those still running at ``deadline``."""
        return self.lanes.join(deadline)

    def add_stats(self, out: dict[str, int]) -> None:
        """Put the receive path's own figures into ``out``: the duplicate history's evictions,
        the replay guards' counters (``replay.*``, ``user_replay.*``) and the lanes' depth."""
        out["user.history_evicted"] = self.history.evicted
        if self.replay is not None:
            with self.replay_lock:
                for k, v in self.replay.stats.items():
                    out[f"replay.{k}"] = v
        if self.user_replay is not None:
            with self.user_replay_lock:
                for k, v in self.user_replay.stats.items():
                    out[f"user_replay.{k}"] = v
        out["queue.incoming"] = sum(self.lanes.depths())

    # ------------------------------------------------------------------ reader threads

    def on_packets(self, batch: list[Incoming]) -> None:
        """Transport callback (a reader thread): decode, run protocol packets, queue the rest."""
        if self._closing:
            return
        decode_all = self.codec.decode_all
        table = self.counters.table()
        protocol: list[tuple[Incoming, Packet]] = []
        lanes: dict[int, list[tuple[Incoming, Packet]]] = {}
        udp_payload = self._udp_payload
        type_limits = self._type_limits
        hlc_now = 0
        for inc in batch:
            try:
                pkts = decode_all(inc.data, inc.src, None if inc.reliable else udp_payload, type_limits)
            except RemoteProtocolError as exc:
                key = f"bad_packets.{type(exc).__name__}"
                table[key] = table.get(key, 0) + 1
                if self._debug:
                    self.log.debug("! bad packet from %s: %s", inc.src, exc)
                if isinstance(exc, EncryptionError):
                    self._refused(inc, exc)
                if inc.conn is not None:
                    inc.conn.mark_rejected()  # too many close it
                continue
            except Exception:  # a bug in the pipeline must not kill the reader
                table["errors.decode"] = table.get("errors.decode", 0) + 1
                self.log.exception("bug: decoding a packet from %s failed", inc.src)
                continue
            for pkt in pkts:
                hlc_now = self._sort(inc, pkt, table, protocol, lanes, hlc_now)
        if protocol:
            self._protocol(protocol)
        for lane, items in lanes.items():
            self.lanes.put(lane, items)
        if batch and batch[0].transport == "http":
            _http_done(batch, lanes)

    def _sort(self, inc: Incoming, pkt: Packet, table: dict[str, int],
              protocol: list[tuple[Incoming, Packet]],
              lanes: dict[int, list[tuple[Incoming, Packet]]], hlc_now: int) -> int:
        """Count one decoded packet and put it on the protocol lane or its user lane."""
        mt = pkt.msg_type
        name = "user" if mt >= RESERVED_MSGS_START else type_key(mt)
        key = f"packets_in.{inc.transport}.{name}"
        table[key] = table.get(key, 0) + 1
        key = f"bytes_in.{inc.transport}.{name}"
        table[key] = table.get(key, 0) + pkt.size
        conn = inc.conn
        if conn is not None:
            conn.mark_trusted()
        if mt < RESERVED_MSGS_START:
            protocol.append((inc, pkt))
            return hlc_now
        user_guard = self.user_replay
        if user_guard is not None and pkt.encrypted:
            if not hlc_now:
                hlc_now = self._hlc.peek()
            if not self._fresh(user_guard, pkt, hlc_now, inc):
                table["bad_packets.ReplayedPacket"] = table.get("bad_packets.ReplayedPacket", 0) + 1
                return hlc_now
        lanes.setdefault(self.lanes.lane_of(inc.src), []).append((inc, pkt))
        return hlc_now

    def _refused(self, inc: Incoming, exc: EncryptionError) -> None:
        """A packet failed authentication or carried another label: warn (rate-limited per
        source host), and tell a join waiting on that source why its answer never comes."""
        name = type(exc).__name__
        host = host_of(inc.src)
        hint = refusal_hint(exc)
        if self._refused_warnings.due(host, time.monotonic()):
            self.log.warning(
                "refused packets from %s: %s; is it a node with %s? (counted as "
                "bad_packets.%s; logged at most once a minute per source)", host, exc, hint, name)
        self._on_refused(inc.src, f"the seed has {hint} ({name}: {exc})", inc.conn is not None)

    def _fresh(self, guard: ReplayGuard, pkt: Packet, now: int, inc: Incoming) -> bool:
        """Is a sealed user-lane packet new? A direct message or a request (ttl 0 or 1) must be
        recent and never seen before; a broadcast (ttl 2 and up, which arrives several times
        by design) must be recent enough that the duplicate history still holds it."""
        try:
            with self.user_replay_lock:
                if pkt.ttl >= 2:
                    guard.check_fresh(pkt.msg_id, now, self._broadcast_window)
                else:
                    guard.check(pkt.sender, pkt.msg_id, now)
        except ReplayedPacket as exc:
            if self._debug:
                self.log.debug("! replayed message from %s: %s", inc.src, exc)
            return False
        return True

    def _protocol(self, items: list[tuple[Incoming, Packet]]) -> None:
        """Decode protocol messages and feed them to the core under one lock acquisition."""
        todo: list[tuple[str, Message, NodeID, bool, bool | None, bool]] = []
        incs: list[Incoming] = []
        guard = self.replay
        for inc, pkt in items:
            mt = pkt.msg_type
            if mt == MessageType.REPLY or mt == MessageType.REPLY_ERROR:
                on_reply = self._on_reply
                if on_reply is not None and inc.conn is not None:
                    on_reply(pkt)  # matched to its request, or counted (a late reply)
                else:
                    self.counters.inc("dropped.stray_replies")
                continue
            try:
                if guard is not None and pkt.encrypted:
                    # A sealed packet is authentic, but could be a recording: its HLC stamp
                    # must be recent and never seen before.
                    with self.replay_lock:
                        guard.check(pkt.sender, pkt.msg_id, self._hlc.now())
                msg = messages.from_wire(mt, pkt.unmarshal(), max_states=self._max_states)
            except RemoteProtocolError as exc:
                self.counters.inc(f"bad_packets.{type(exc).__name__}")
                if self._debug:
                    self.log.debug("! bad protocol message from %s: %s", inc.src, exc)
                continue
            app_ok = None
            if type(msg) is messages.Join:
                # The application's check is user code: it runs here, never under the lock.
                app_ok = check_app_version(self._app_version_check, msg.av)
            todo.append((inc.src, msg, NodeID(bytes=pkt.sender), inc.reliable, app_ok, pkt.encrypted))
            incs.append(inc)
        if not todo:
            return
        try:
            results, failed = self._host.receive(time.monotonic(), todo)
        except ClusterClosed:
            return
        for msg, error in failed:
            self.counters.inc("errors.core_receive")
            self.log.error("bug: the core failed on %s", type(msg).__name__, exc_info=error)
        perform = self._perform
        for inc, actions in zip(incs, results):
            if actions:
                perform(actions, inc)

    # ------------------------------------------------------------------ lane workers

    def _user_batch(self, items: list[tuple[Incoming, Packet]]) -> None:
        now = time.monotonic()
        for inc, pkt in items:
            deferred = False
            try:
                deferred = bool(self._user_packet(inc, pkt, now))
            except RemoteProtocolError as exc:
                self.counters.inc(f"bad_packets.{type(exc).__name__}")
            except ClusterClosed:
                return
            except Exception:
                self.counters.inc("errors.lane_worker")
                self.log.exception("bug: handling a user packet from %s failed", inc.src)
            if not deferred and inc.transport == "http":
                _handled(inc)

    def _user_packet(self, inc: Incoming, pkt: Packet, now: float) -> bool:
        """Handle one user packet; True if its reply is deferred (a future not done yet)."""
        counters = self.counters
        if pkt.tag is not None and pkt.tag not in self._members.tags:
            # A tagged broadcast for members holding a tag we do not (or no longer) hold:
            # neither handled nor relayed.
            counters.inc("user.tag_not_held")
            return False
        if pkt.ttl >= 2:
            # Only broadcasts (ttl >= 2 on every hop) can arrive twice, by several paths, so
            # only they are remembered; a direct message (ttl 1) or a request (ttl 0) has one
            # path, and remembering it would only cost memory at high rates.
            if self.history.seen(now, pkt.sender, pkt.msg_id):
                counters.inc("user.duplicates")
                return False
        counters.inc("user.received")
        pkt.reliable = inc.reliable
        handler = self.handlers.get(pkt.msg_type)
        if handler is not None and handler.kind == HANDLER_STREAM:
            handler = None  # stream handlers serve streams only (gossip.engine.stream_pool)
        if pkt.ttl > 2 and (handler is None or handler.kind == HANDLER_FORWARD):
            self._relay(inc, pkt)
        request = pkt.ttl == 0 and inc.conn is not None
        if handler is None:
            counters.inc("user.unhandled")
            if request:
                self._reply(inc, pkt.msg_id, MessageType.REPLY_ERROR,
                            f"no handler for message type {pkt.msg_type}")
            return False
        sender = self._members.node_for_sender(pkt.sender)
        if handler.kind != HANDLER_REPLY:
            try:
                handler.fn(sender, pkt)
            except Exception:
                counters.inc("handler_errors.message")
                self.log.exception("message handler for type %d raised", pkt.msg_type)
            if request:
                self._reply(inc, pkt.msg_id, MessageType.REPLY_ERROR,
                            f"message type {pkt.msg_type} has no reply handler")
            return False
        if inc.conn is None:
            counters.inc("user.reply_without_connection")
        try:
            value: Any = handler.fn(sender, pkt)
            kind = MessageType.REPLY
        except Exception as exc:
            counters.inc("handler_errors.reply")
            self.log.exception("reply handler for type %d raised", pkt.msg_type)
            value, kind = f"{type(exc).__name__}: {exc}", MessageType.REPLY_ERROR
        if isinstance(value, Future):
            # A reply computed elsewhere (an asyncio handler on its loop): answered when it is
            # done, by the thread that completes it, never waiting; the lane goes on meanwhile.
            value.add_done_callback(lambda f: self._deferred_reply(inc, pkt, f, request))
            return True
        if request:
            self._reply(inc, pkt.msg_id, kind, value)
        return False

    def _deferred_reply(self, inc: Incoming, pkt: Packet, done: Future[Any],
                        request: bool) -> None:
        """Answer a request whose reply handler returned a future, now done."""
        if done.cancelled():
            self.counters.inc("handler_errors.reply")
            value: Any = "the reply handler was cancelled"
            kind = MessageType.REPLY_ERROR
        elif (exc := done.exception()) is not None:
            self.counters.inc("handler_errors.reply")
            self.log.error("reply handler for type %d raised", pkt.msg_type, exc_info=exc)
            value, kind = f"{type(exc).__name__}: {exc}", MessageType.REPLY_ERROR
        else:
            value, kind = done.result(), MessageType.REPLY
        if request and not self._closing:
            self._reply(inc, pkt.msg_id, kind, value)
        if inc.transport == "http":
            _handled(inc)

    def _reply(self, inc: Incoming, request_id: int, kind: int, value: Any) -> None:
        """Answer a request on its connection, never waiting (a full buffer drops the reply).

        The reply carries the request's message id: a requester that sent several requests on
        one connection matches each reply to its request by it (:mod:`.replies`).
        """
        codec = self.codec
        sender_id = self._sender_id
        try:
            data = codec.encode(kind, sender_id, request_id, 1, value)
        except LocalProtocolError as exc:
            self.counters.inc("user.reply_encode_errors")
            data = codec.encode(MessageType.REPLY_ERROR, sender_id, request_id, 1,
                                f"the reply could not be encoded: {exc}")
            kind = MessageType.REPLY_ERROR
        conn = inc.conn
        assert conn is not None
        try:
            conn.send_frame(data, 0)
        except SendQueueFull:
            self.counters.inc("dropped.reply_buffer_full")
        except GossipError as exc:  # the requester went away or timed out: not our bug
            self.counters.inc(f"user.reply_errors.{type(exc).__name__}")
            if self._debug:
                self.log.debug("! reply to %s failed: %s", inc.src, exc)
        else:
            self.counters.inc("user.replies" if kind == MessageType.REPLY else "user.error_replies")

    def _relay(self, inc: Incoming, pkt: Packet) -> None:
        """Pass a broadcast on with one hop less (never more hops than the cluster needs).

        Broadcasts keep a ttl of at least 2 on every hop (the last hop delivers at 2), so ttl 1
        always means a direct message: see :func:`broadcast_ttl`.
        """
        members = self._members
        # Never more hops than the cluster's size calls for, whatever ttl a peer sent.
        ttl = min(pkt.ttl - 1, broadcast_ttl(members.alive_count(), self._ttl_multiplier))
        if ttl < 2:
            return
        data = self.codec.encode_raw(pkt.msg_type, pkt.sender, pkt.msg_id, ttl, pkt.payload, pkt.tag)
        relay = self._relay_to
        for addr in members.fan_out_addrs((NodeID(bytes=pkt.sender),), pkt.tag):
            relay(addr, data, inc.reliable, len(pkt.payload))
        self.counters.inc("user.relayed")


def _handled(inc: Incoming) -> None:
    """Tell an HTTP exchange that the engine is done with one of its frames: its response (the
    answers sent on it) can go (:mod:`gossip.transports.http.server`)."""
    done = getattr(inc.conn, "handled", None)
    if done is not None:
        done()


def _http_done(batch: list[Incoming], lanes: dict[int, list[tuple[Incoming, Packet]]]) -> None:
    """The frames of an HTTP batch that went to no user lane are done with once the reader
    returns (protocol packets were run, refused ones dropped); the lanes finish the others."""
    queued = {id(inc) for items in lanes.values() for inc, _ in items}
    for inc in batch:
        if id(inc) not in queued:
            _handled(inc)
