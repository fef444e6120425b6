"""The send path: every packet this node sends leaves through here.

Three kinds of sends, each on the cheapest thread that cannot be blocked by a slow peer:

* **User sends** (``send_to*``, broadcasts) run on the caller's thread. A best-effort packet
  that fits in one datagram goes out as one, at once, and never waits (it fits when it is at
  most ``udp_max_packet_size`` bytes *and* its payload, decompressed, is at most
  :data:`~gossip.wire.MAX_DATAGRAM_PAYLOAD`: a receiver refuses a datagram that expands past
  it, so such a payload travels over a connection however small it compresses). A full
  socket buffer drops it and counts it (``dropped.udp_send_buffer_full``), or
  raises, as ``Config.best_effort_full_policy`` says. Every other send (asked to be reliable,
  or too big for a datagram) is queued on the pooled connection to the peer and never drops
  what it accepted: while the connection's buffer is full the caller waits, up to
  ``Config.send_timeout``, and then gets :class:`~gossip.errors.SendQueueFull`.
* **Protocol sends** (the core's :class:`~gossip.protocol.Send` actions) run on the thread that
  ran the core (a reader, the scheduler, a caller). Datagrams (probes, acks, gossip) are written
  at once; answers to a request go back on the connection it came in on without waiting
  (``reply``); the rest (joins, push/pulls, TCP fallback pings, which may dial a peer) are
  handed to the send workers, so that a dial that hangs never delays a datagram.
* **Relays** of broadcasts (from the user lanes) are written at once when they fit in a
  datagram, else handed to the send workers, whose queue drops its oldest item when full
  (counted as ``dropped.send_queue_full``).

Requests (``send_to_with_response``) write and read on the caller's thread, on a dedicated
connection (:meth:`Outgoing.request`).

Sends that must never block their caller (the asyncio face, :mod:`gossip.aio`) use the
``*_nowait`` variants: they return None when the packet went out at once, else a
:class:`concurrent.futures.Future` that the engine's threads complete. A reliable packet goes
straight onto the pooled connection when one is known to be open and has room (no wait, no
dial: :meth:`Outgoing.user_nowait`); otherwise it waits in the :class:`~.backlog.Backlog`,
behind any earlier packet to the same address, for room or for the connection to be dialed,
up to ``send_timeout``. A request sent so (:meth:`~.user_messages.UserMessages.request_nowait`) travels on the
pooled connection too, and its reply is matched to it by the request's message id
(:mod:`.replies`); or, when the transport holds an idle request connection to the node,
:meth:`~.user_messages.UserMessages.request_start` lends it to the caller, whose event loop writes the request
and reads the reply itself (a :class:`~gossip.transports.base.RequestLine`), and otherwise has
a send worker dial one for the next request.

:class:`~.user_messages.UserMessages` sits on top (its own module).

This module imports the packet pipeline, the messages and the transports' interface; its
classes are given what they use (never the engine).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from .. import messages
from ..config import Config
from ..errors import (
    ClusterClosed,
    GossipError,
    GossipTimeout,
    RemoteProtocolError,
    SendQueueFull,
)
from ..hlc import HLC
from ..packet import Packet, PacketCodec
from ..protocol import Send
from ..protocol.messaging import max_ttl
from ..transports.base import Incoming, RequestLine, Transport
from ..wire import MAX_DATAGRAM_PAYLOAD, RESERVED_MSGS_START, MessageType
from ..workers import BoundedQueue, WorkerPool
from ..counters import Counters
from .backlog import Backlog
from .replies import reply_value

__all__ = ["Outgoing", "type_key", "link_kind", "broadcast_ttl"]

_TYPE_KEYS = {int(t): t.name.lower() for t in MessageType}
_WARM_MAX = 4096  # addresses remembered as having an open pooled connection


def type_key(msg_type: int) -> str:
    """Return the name a message type is counted under (``ping``..., ``user`` from 64 up)."""
    if msg_type >= RESERVED_MSGS_START:
        return "user"
    return _TYPE_KEYS.get(msg_type, "unknown")


def broadcast_ttl(n_alive: int, multiplier: float = 1.0) -> int:
    """Return the ttl a broadcast starts with: one more than its hop limit (:func:`max_ttl`).

    Every hop takes one off and the last hop delivers at 2, so a broadcast never travels with
    ttl 1, which is reserved for direct messages (never relayed, never remembered).
    """
    return min(255, max_ttl(n_alive, multiplier) + 1)


def link_kind(transport: Transport | None, addr: str, reliable: bool) -> str:
    """Return the name of the link a packet to ``addr`` takes (``udp``, ``tcp``, ``memory``...)."""
    if transport is None:
        return "tcp" if reliable else "udp"
    return transport.link_kind(addr, reliable)


@dataclass(slots=True)
class _Out:
    """A job for the send workers: an encoded packet, a protocol message to encode, or a
    request connection to dial (``line``)."""

    addr: str
    data: bytes | None
    msg: messages.Message | None
    msg_type: int
    line: bool = False  # no packet: dial a request connection for the next borrower


class Outgoing:
    """The send path of one engine; see the module docstring.

    Args:
        config: the validated configuration.
        codec: the packet pipeline.
        sender_id: this node's id, as bytes.
        hlc: the clock that stamps message ids.
        counters: where every send, drop and error is counted.
        log: the engine's logger.
        on_join_failed: called with ``(addr, reason)`` when a join request could not be sent.
        prefix: the thread name prefix (``gossip-<node>``).
        on_join_sent: called with ``addr`` when a join request went out on a connection.
    """

    def __init__(
        self, config: Config, codec: PacketCodec, sender_id: bytes, hlc: HLC, counters: Counters,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        on_join_failed: Callable[[str, str], None], prefix: str,
        on_join_sent: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.codec = codec
        self.sender_id = sender_id
        self.hlc = hlc
        self.counters = counters
        self.log = log
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._on_join_failed = on_join_failed
        self._on_join_sent = on_join_sent
        self.transport: Transport | None = None
        self._udp_max = config.udp_max_packet_size
        self._force_reliable = config.force_reliable_transport
        self._raise_when_full = config.best_effort_full_policy == "raise"
        self._queue: BoundedQueue[_Out] = BoundedQueue(
            config.send_queue_size, policy="drop_oldest", name=f"{prefix}-send")
        self._pool: WorkerPool[_Out] | None = None
        self._pool_name = f"{prefix}-send"
        self._inflight = 0
        self._inflight_cv = threading.Condition()
        self._closing = False
        # Addresses whose pooled connection was open at the last reliable send (and when): a
        # non-blocking send only hands a frame to the transport itself when the transport
        # will neither dial nor wait (a connection idle for idle_timeout may be closed).
        self._warm: dict[str, float] = {}
        self._warm_kind: dict[str, str] = {}  # the link kind of each warm address
        self._warm_for = config.idle_timeout / 2
        self.backlog = Backlog(self._send_slice, config.num_send_workers, log, prefix,
                               lambda: counters.inc("user.send_timeouts"))
        # Request connections being dialed for a borrower, and addresses whose transport
        # lends none (both bounded: cleared when full).
        self._preparing: set[str] = set()
        self._no_lines: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self, transport: Transport) -> None:
        """Use ``transport`` and start the send workers (one; more as the queue needs them)."""
        self.transport = transport
        self._pool = WorkerPool(self._pool_name, self.config.num_send_workers, self._queue,
                                self._work)
        self._pool.start()

    def stop(self, timeout: float) -> list[str]:
        """Stop the send workers and the backlog's threads (its frames fail with
        ClusterClosed); return the names of those still running after ``timeout``."""
        self._closing = True
        end = time.monotonic() + timeout
        self._queue.close()
        self.backlog.close()
        with self._inflight_cv:
            self._inflight_cv.notify_all()
        stragglers = self._pool.stop(timeout) if self._pool is not None else []
        return stragglers + self.backlog.join(end)

    @property
    def queued(self) -> int:
        """Packets waiting for a send worker."""
        return len(self._queue)

    @property
    def unsent(self) -> int:
        """Packets handed to the send workers and not yet given to the transport."""
        return self._inflight

    def wait_flushed(self, timeout: float) -> bool:
        """Wait until every packet handed to the send workers went to the transport."""
        end = time.monotonic() + timeout
        with self._inflight_cv:
            while self._inflight > 0 and not self._closing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._inflight_cv.wait(left)
        return True

    # ------------------------------------------------------------------ encoding

    def encode_protocol(self, msg: messages.Message) -> tuple[int, bytes]:
        """Return ``(message type, packet)`` for a protocol message."""
        mt, data, _ = self._encode_sized(msg)
        return mt, data

    def _encode_sized(self, msg: messages.Message) -> tuple[int, bytes, int]:
        """Return ``(message type, packet, payload size before compression)``."""
        mt, value = messages.to_wire(msg)
        payload = self.codec.codec.encode(value)
        return mt, self.codec.encode_raw(mt, self.sender_id, self.hlc.now(), 1, payload), \
            len(payload)

    def fits_datagram(self, data: bytes, payload_size: int) -> bool:
        """True if a packet of ``data`` whose payload is ``payload_size`` bytes before
        compression may travel as a datagram: it fits ``udp_max_packet_size``, and a receiver
        will not refuse it for expanding past :data:`~gossip.wire.MAX_DATAGRAM_PAYLOAD`."""
        return len(data) <= self._udp_max and payload_size <= MAX_DATAGRAM_PAYLOAD

    def _count_out(self, kind: str, msg_type: int, size: int) -> None:
        table = self.counters.table()
        name = type_key(msg_type)
        key = f"packets_out.{kind}.{name}"
        table[key] = table.get(key, 0) + 1
        key = f"bytes_out.{kind}.{name}"
        table[key] = table.get(key, 0) + size

    def _count_error(self, exc: BaseException, addr: str) -> None:
        self.counters.inc(f"send_errors.{type(exc).__name__}")
        if self._debug:
            self.log.debug("! send to %s failed: %s", addr, exc)

    # ------------------------------------------------------------------ protocol sends

    def protocol(self, action: Send, inc: Incoming | None) -> None:
        """Send one protocol message as the core asked (see the module docstring)."""
        transport = self.transport
        if transport is None or self._closing:
            return
        msg = action.msg
        if action.reply:
            conn = inc.conn if inc is not None else None
            if conn is None:
                self.counters.inc("dropped.reply_without_connection")
                return
            try:
                mt, data = self.encode_protocol(msg)
                conn.send_frame(data, 0)
            except SendQueueFull:
                self.counters.inc("dropped.reply_buffer_full")
            except GossipError as exc:
                self._count_error(exc, conn.peer)
            else:
                assert inc is not None
                self._count_out(inc.transport, mt, len(data))
            return
        if not action.reliable and not self._force_reliable:
            try:
                mt, data, payload_size = self._encode_sized(msg)
            except GossipError as exc:
                self._count_error(exc, action.addr)
                return
            if self.fits_datagram(data, payload_size):
                self._datagram(transport, action.addr, data, mt)
                return
            self._hand_off(_Out(action.addr, data, None, mt))
            return
        self._hand_off(_Out(action.addr, None, msg, 0))

    def _datagram(self, transport: Transport, addr: str, data: bytes, msg_type: int) -> None:
        try:
            transport.send(addr, data, False)
        except SendQueueFull:
            self.counters.inc("dropped.udp_send_buffer_full")
        except GossipError as exc:
            self._count_error(exc, addr)
        else:
            self._count_out(link_kind(transport, addr, False), msg_type, len(data))

    def _hand_off(self, item: _Out) -> None:
        """Queue ``item`` for the send workers (the oldest queued one goes if it is full)."""
        if self._closing:
            return
        with self._inflight_cv:
            self._inflight += 1
        if not self._queue.put(item):
            self._done_one()
            if not self._queue.closed:
                self.counters.inc("dropped.send_queue_full")
        pool = self._pool
        if pool is not None:
            pool.grow()

    def _done_one(self) -> None:
        with self._inflight_cv:
            self._inflight -= 1
            if self._inflight <= 0:
                self._inflight_cv.notify_all()

    def _work(self, item: _Out) -> None:
        """A send worker's job: encode if needed, then send over a connection (may dial)."""
        transport = self.transport
        try:
            if item.line:
                self._prepare_line(item.addr)
                return
            if item.msg is not None:
                mt, data = self.encode_protocol(item.msg)
            else:
                assert item.data is not None
                data, mt = item.data, item.msg_type
            assert transport is not None
            transport.send(item.addr, data, True, self.config.tcp_deadline)
            self._count_out(link_kind(transport, item.addr, True), mt, len(data))
            if self._on_join_sent is not None and type(item.msg) is messages.Join:
                self._on_join_sent(item.addr)
        except GossipError as exc:
            self._count_error(exc, item.addr)
            if type(item.msg) is messages.Join:
                self._on_join_failed(item.addr, f"{type(exc).__name__}: {exc}")
        except Exception:
            self.counters.inc("errors.send_worker")
            self.log.exception("bug: sending to %s failed", item.addr)
        finally:
            self._done_one()

    # ------------------------------------------------------------------ user sends

    def user(self, addr: str, data: bytes, reliable: bool, payload_size: int) -> None:
        """Send a user packet from the caller's thread (see the module docstring).

        ``payload_size`` is the packet's payload size before compression (it decides, with
        the packet's size, whether a best-effort packet may travel as a datagram).

        Raises:
            SendQueueFull: a send over a connection found no room within ``send_timeout``; or
                a datagram found the socket buffer full under the ``"raise"`` policy.
            TransportError: a send over a connection could not reach the peer (or a datagram
                could not be sent, under the ``"raise"`` policy).
            ClusterClosed: the engine is stopping.
        """
        transport = self.transport
        if transport is None or self._closing:
            raise ClusterClosed("the cluster is stopped")
        if not reliable and not self._force_reliable and self.fits_datagram(data, payload_size):
            self._user_datagram(transport, addr, data)
            return
        # Over a connection (asked for, or because the packet is too big for a datagram), a
        # send is reliable: it waits for room, up to send_timeout, and never drops.
        try:
            self._send_slice(addr, data, self.config.send_timeout)
        except SendQueueFull:
            self.counters.inc("user.send_timeouts")
            raise

    def _user_datagram(self, transport: Transport, addr: str, data: bytes) -> None:
        """Send a user datagram: never waits; a full buffer drops it or raises, as the
        ``best_effort_full_policy`` says."""
        try:
            transport.send(addr, data, False)
        except SendQueueFull:
            self.counters.inc("dropped.udp_send_buffer_full")
            if self._raise_when_full:
                raise
            return
        except GossipError as exc:
            self._count_error(exc, addr)
            if self._raise_when_full:
                raise
            return
        self._count_out(link_kind(transport, addr, False), RESERVED_MSGS_START, len(data))

    def _send_slice(self, addr: str, data: bytes, timeout: float) -> None:
        """Queue a frame on the pooled connection to ``addr``, waiting up to ``timeout`` for
        room (dials if needed); :class:`SendQueueFull` if there was none (not counted here)."""
        transport = self.transport
        if transport is None or self._closing:
            raise ClusterClosed("the cluster is stopped")
        try:
            transport.send(addr, data, True, timeout)
        except SendQueueFull:
            raise
        except GossipError as exc:
            self._warm.pop(addr, None)
            self._count_error(exc, addr)
            raise
        self._mark_warm(addr)
        self._count_out(link_kind(transport, addr, True), RESERVED_MSGS_START, len(data))

    def _mark_warm(self, addr: str) -> None:
        warm = self._warm
        if len(warm) >= _WARM_MAX and addr not in warm:
            warm.clear()
            self._warm_kind.clear()
        warm[addr] = time.monotonic()

    def user_nowait(self, addr: str, data: bytes, reliable: bool,
                    payload_size: int) -> Future[None] | None:
        """Send a user packet without ever blocking the caller (see the module docstring).

        Returns None when the packet went out at once (a datagram, or a frame queued on an open
        pooled connection that had room), else a future that completes once the transport took
        the frame, or fails as :meth:`user` raises (:class:`SendQueueFull` after
        ``send_timeout``). A packet to an address with packets still waiting goes behind them.
        Cancelling the future before the frame went to the transport takes it back.

        Raises:
            SendQueueFull, TransportError: a datagram under the ``"raise"`` policy; or the open
                connection refused the frame (it broke).
            ClusterClosed: the engine is stopping.
        """
        transport = self.transport
        if transport is None or self._closing:
            raise ClusterClosed("the cluster is stopped")
        if not reliable and not self._force_reliable and self.fits_datagram(data, payload_size):
            self._user_datagram(transport, addr, data)
            return None
        backlog = self.backlog
        if not backlog.busy(addr):
            warm = self._warm.get(addr)
            now = time.monotonic()
            if warm is not None and now - warm < self._warm_for:
                try:
                    transport.send(addr, data, True, 0)  # an open connection: no dial, no wait
                except SendQueueFull:
                    pass  # no room now: wait for it below
                except GossipError as exc:
                    self._warm.pop(addr, None)
                    self._count_error(exc, addr)
                    raise
                else:
                    self._warm[addr] = now  # known already: the table does not grow
                    kinds = self._warm_kind
                    kind = kinds.get(addr)
                    if kind is None:
                        if len(kinds) >= _WARM_MAX:
                            kinds.clear()
                        kind = kinds[addr] = link_kind(transport, addr, True)
                    self._count_out(kind, RESERVED_MSGS_START, len(data))
                    return None
        return backlog.put(addr, data, self.config.send_timeout)

    def relay(self, addr: str, data: bytes, reliable: bool, payload_size: int) -> None:
        """Send a relayed broadcast: at once as a datagram (when it fits, as :meth:`user`
        decides), else through the send workers."""
        transport = self.transport
        if transport is None or self._closing:
            return
        if not reliable and not self._force_reliable and self.fits_datagram(data, payload_size):
            self._datagram(transport, addr, data, RESERVED_MSGS_START)
            return
        self._hand_off(_Out(addr, data, None, RESERVED_MSGS_START))

    # ------------------------------------------------------------------ request / reply

    def request(self, addr: str, label: str, msg_type: int, payload: Any,
                response_type: type[Any] | None, timeout: float) -> Any:
        """Send a request (ttl 0: "answer me") and return its decoded reply.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            RemoteHandlerError: the peer's handler raised, or it has no reply handler.
            DecodeError: the answer is malformed, not a reply, or does not fit
                ``response_type``.
            EncryptionError: the answer is not authentic (the peer seals with another key).
            TransportError: the peer could not be reached (:class:`ConnectError`), or closed
                the connection without answering (:class:`SendError`).
            LocalProtocolError: ``payload`` cannot be encoded.
        """
        transport = self.transport
        if transport is None or self._closing:
            raise ClusterClosed("the cluster is stopped")
        data = self.codec.encode(msg_type, self.sender_id, self.hlc.now(), 0, payload)
        try:
            raw = transport.request(addr, data, timeout)
        except GossipTimeout as exc:
            raise GossipTimeout(
                f"no reply from node {label} to message type {msg_type} within {timeout:.3g}s"
            ) from exc
        self.counters.inc("user.requests")
        return reply_value(self.decode_reply(raw, label, msg_type), response_type, label, msg_type)

    def decode_reply(self, raw: bytes, label: str, msg_type: int) -> Packet:
        """Decode the reply ``raw`` that node ``label`` sent to a request of ``msg_type``.

        Raises:
            DecodeError, EncryptionError: the reply is malformed or not authentic (counted
                ``bad_packets.<error>``).
        """
        try:
            return self.codec.decode(raw)
        except RemoteProtocolError as exc:  # every decode error takes one message
            self.counters.inc(f"bad_packets.{type(exc).__name__}")
            raise type(exc)(f"node {label} answered message type {msg_type} with a packet "
                            f"refused here: {exc}") from exc

    def request_line(self, addr: str, data: bytes) -> RequestLine | None:
        """Borrow an idle request connection to ``addr`` for the request ``data``, without
        blocking (see :class:`~gossip.transports.base.RequestLine`); None when the transport
        has none idle, or lends none. Finding none, it has a send worker dial one, so that
        the next request finds it.

        Raises:
            MessageTooLarge, AddressError: as the transport's ``send``.
            ClusterClosed: the engine is stopping.
        """
        transport = self.transport
        if transport is None or self._closing:
            raise ClusterClosed("the cluster is stopped")
        if addr in self._no_lines:
            return None
        lend = getattr(transport, "request_line", None)
        if lend is None:
            return None
        line: RequestLine | None = lend(addr, data)
        if line is None and addr not in self._preparing:
            if len(self._preparing) >= _WARM_MAX:
                self._preparing.clear()
            self._preparing.add(addr)
            self._hand_off(_Out(addr, None, None, 0, line=True))
        return line

    def _prepare_line(self, addr: str) -> None:
        """A send worker's job: dial a request connection to ``addr`` for the next borrower."""
        prepare = getattr(self.transport, "prepare_request_line", None)
        try:
            if prepare is None or not prepare(addr, self.config.tcp_deadline):
                if len(self._no_lines) >= _WARM_MAX:
                    self._no_lines.clear()
                self._no_lines.add(addr)
        finally:
            self._preparing.discard(addr)
