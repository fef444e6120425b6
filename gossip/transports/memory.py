"""An in-process network for tests: :class:`MemoryNetwork` and :class:`MemoryTransport`.

``MemoryNetwork.new_transport()`` hands out transports with unique addresses that are loopback
literals (``"127.77.0.1:7946"``, ``"127.77.0.2:7946"``...), as memberlist's mock network does: a
peer string given to ``join()`` is then an IP literal that no resolver looks up, and an address
that escaped the in-memory network by mistake could only reach this machine. Packets are delivered to the receiver's ``on_packets``
in batches on the *receiver's* delivery thread (``gossip-<name>-delivery``), never on the
sender's thread, so the engine sees the same threading as with sockets. Reliable sends and
requests travel over in-process :class:`MemoryConnection` pairs, with the same back-pressure
(a writer waits while the receiver holds too many undelivered frames) and pausing as sockets,
and streams over :class:`MemoryStreamConn` pairs.

Faults (all seeded by ``MemoryNetwork(seed=...)``):

- :meth:`MemoryNetwork.drop` loses best-effort packets from ``a`` to ``b`` with a probability;
- :meth:`MemoryNetwork.partition` cuts every link between two groups (both directions):
  best-effort packets are dropped, reliable sends and requests raise :class:`ConnectError`,
  frames on existing connections raise :class:`SendError`;
- :meth:`MemoryNetwork.delay` delays every packet *to* an address;
- :meth:`MemoryNetwork.heal` removes every fault.

Unknown addresses raise :class:`ConnectError` for reliable sends and requests and are dropped
(and counted in :attr:`MemoryNetwork.stats`) for best-effort sends.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Iterable

from gossip.errors import (
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    MessageTooLarge,
    SendError,
    SendQueueFull,
    TransportError,
)
from gossip.transports.base import Incoming, OnPackets, OnStream, StreamConn

__all__ = ["MemoryNetwork", "MemoryTransport", "MemoryConnection", "MemoryStreamConn", "MEMORY_PORT", "memory_address"]

_log = logging.getLogger("gossip.transports.memory")

MEMORY_PORT = 7946
"""The port every in-memory address carries (``127.77.x.y:7946``)."""


def memory_address(n: int) -> str:
    """Return the address of the ``n``-th in-memory transport (``n`` from 1): ``127.77.x.y:7946``.

    Loopback literals (127.77.0.0 upwards, past 127.77.255.255 into 127.78...), so that no name
    is ever looked up and nothing can leave the machine even if such an address escaped.
    """
    if not 1 <= n < (256 - 77) << 16:
        raise ValueError(f"no in-memory address for transport number {n}")
    return f"127.{77 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}:{MEMORY_PORT}"
_JOIN_TIMEOUT = 5.0


class MemoryNetwork:
    """A simulated network joining :class:`MemoryTransport` instances in one process.

    Args:
        seed: seeds the ``random.Random`` that decides probabilistic drops.
        max_queue: per-transport cap on undelivered packets (overflow is dropped, counted).
    """

    def __init__(self, seed: int | None = None, max_queue: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._transports: dict[str, MemoryTransport] = {}
        self._drops: dict[tuple[str, str], float] = {}
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._delays: dict[str, float] = {}
        self.max_queue = max_queue
        self._stats: dict[str, int] = {"delivered": 0, "dropped": 0, "unroutable": 0}

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters: ``delivered``, ``dropped`` (faults, overflow), ``unroutable``."""
        with self._lock:
            return dict(self._stats)

    def new_transport(self, name: str | None = None, max_udp_size: int = 1400) -> MemoryTransport:
        """Create a transport with a fresh unique address (:func:`memory_address`).

        Args:
            name: node name for the delivery thread (``gossip-<name>-delivery``);
                defaults to ``mem-<n>``.
            max_udp_size: best-effort packets over this size raise :class:`MessageTooLarge`,
                as with :class:`~gossip.transports.socket.SocketTransport`.
        """
        with self._lock:
            n = next(self._ids)
        addr = memory_address(n)
        return MemoryTransport(self, addr, name or f"mem-{n}", max_udp_size)

    def drop(self, a: str, b: str, probability: float) -> None:
        """Lose best-effort packets sent from ``a`` to ``b`` with ``probability`` (0..1)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in 0..1, got {probability}")
        with self._lock:
            self._drops[(a, b)] = probability

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every link between an address of ``group_a`` and one of ``group_b``."""
        with self._lock:
            self._partitions.append((frozenset(group_a), frozenset(group_b)))

    def delay(self, addr: str, seconds: float) -> None:
        """Delay every packet delivered to ``addr`` by ``seconds`` (0 removes the delay)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._lock:
            if seconds:
                self._delays[addr] = seconds
            else:
                self._delays.pop(addr, None)

    def heal(self) -> None:
        """Remove every drop, partition and delay."""
        with self._lock:
            self._drops.clear()
            self._partitions.clear()
            self._delays.clear()

    # ------------------------------------------------------------------ internals

    def _register(self, transport: MemoryTransport) -> None:
        with self._lock:
            self._transports[transport.local_addr] = transport

    def _unregister(self, transport: MemoryTransport) -> None:
        with self._lock:
            if self._transports.get(transport.local_addr) is transport:
                del self._transports[transport.local_addr]

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _cut_locked(self, src: str, dst: str) -> bool:
        for group_a, group_b in self._partitions:
            if (src in group_a and dst in group_b) or (src in group_b and dst in group_a):
                return True
        return False

    def _route(self, src: str, dst: str, reliable: bool) -> tuple[MemoryTransport | None, float]:
        """Return ``(target, delay)``; target is None when the packet is lost.

        Raises:
            ConnectError: for reliable traffic to an unknown or cut-off address.
        """
        with self._lock:
            target = self._transports.get(dst)
            if target is None:
                self._stats["unroutable"] += 1
                if reliable:
                    raise ConnectError(f"connect to {dst}: no route (unknown address)")
                return None, 0.0
            if self._cut_locked(src, dst):
                self._stats["dropped"] += 1
                if reliable:
                    raise ConnectError(f"connect to {dst}: no route (partitioned)")
                return None, 0.0
            if not reliable:
                p = self._drops.get((src, dst), 0.0)
                if p and self._rng.random() < p:
                    self._stats["dropped"] += 1
                    return None, 0.0
            return target, self._delays.get(dst, 0.0)


class MemoryConnection:
    """One end of an in-process connection; implements :class:`~gossip.transports.base.Connection`.

    Frames written on one end reach the other end's transport ``on_packets`` (with ``conn``
    set to the other end), or, for the requesting end of a :meth:`MemoryTransport.request`,
    its private reply slot. A writer waits (up to its timeout) while the receiving transport
    already holds :attr:`MemoryNetwork.max_queue` undelivered frames, as a socket writer waits
    for a slow reader; a paused end holds back what arrives for it until it is resumed.
    """

    def __init__(self, owner: MemoryTransport, peer: str) -> None:
        self._owner = owner
        self._peer = peer
        self.other: MemoryConnection | None = None
        self.reply_slot: queue.SimpleQueue[bytes] | None = None
        self.closed = False
        self.paused = False
        self.held: list[Incoming] = []  # frames that arrived while paused (owner's lock)

    @property
    def peer(self) -> str:
        """The address of the transport at the other end."""
        return self._peer

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Deliver one frame to the other end, waiting for room up to ``timeout``.

        Raises:
            SendError: this connection is closed, or the link is now partitioned.
            SendQueueFull: the receiver held too many undelivered frames for ``timeout``.
            ClusterClosed: the owning transport is closed.
        """
        if self._owner.closed:
            raise ClusterClosed(f"transport {self._owner.name} is closed")
        other = self.other
        if self.closed or other is None or other.closed:
            raise SendError(f"send to {self._peer}: connection closed")
        try:
            target, delay = self._owner.network._route(self._owner.local_addr, self._peer, True)
        except ConnectError as exc:
            raise SendError(f"send to {self._peer}: {exc}") from exc
        assert target is not None
        if other.reply_slot is not None:
            other.reply_slot.put(bytes(data))
            return
        target._enqueue_frame(
            Incoming(bytes(data), self._owner.local_addr, True, other, time.monotonic(), "memory"),
            delay, timeout,
        )

    def pause_reading(self) -> None:
        """Hold back frames arriving on this end until :meth:`resume_reading`."""
        self.paused = True

    def resume_reading(self) -> None:
        """Deliver the held frames, then the rest as they come."""
        if self.paused:
            self._owner._resume(self)

    def mark_trusted(self) -> None:
        """Nothing to lift: the in-memory transport has no pre-authentication limits."""

    def mark_rejected(self) -> None:
        """Nothing to count: the in-memory transport closes no connection for refused frames."""

    def close(self) -> None:
        """Close both ends (idempotent)."""
        self.closed = True
        if self.other is not None:
            self.other.closed = True

    def __repr__(self) -> str:
        return f"<MemoryConnection {self._owner.local_addr}->{self._peer} closed={self.closed}>"


class MemoryStreamConn:
    """One end of an in-process stream; implements :class:`~gossip.transports.base.StreamConn`.

    Each direction is a bounded list of frames: a writer waits while the reader's side holds
    more than ``window`` bytes, so streams have the same back-pressure as over sockets.
    """

    def __init__(self, owner: MemoryTransport, peer: str, max_frame_size: int,
                 window: int = 4 * 1024 * 1024) -> None:
        self._owner = owner
        self._peer = peer
        self.max_frame_size = max_frame_size
        self._window = window
        self._cond = threading.Condition()  # guards this end's inbound frames
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._eof = False
        self._closed = False
        self._write_closed = False
        self.other: MemoryStreamConn | None = None

    @property
    def peer(self) -> str:
        """The address of the transport at the other end."""
        return self._peer

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Queue one frame for the other end, waiting while its window is full.

        Raises:
            MessageTooLarge: over :attr:`max_frame_size`.
            GossipTimeout: no room within ``timeout`` (the stream is then closed).
            SendError: closed, or the link is partitioned.
        """
        n = len(data)
        if n > self.max_frame_size:
            raise MessageTooLarge(
                f"stream frame to {self._peer} is {n} bytes, over the limit {self.max_frame_size}")
        other = self.other
        if self._closed or self._write_closed or other is None:
            raise SendError(f"stream write to {self._peer}: the stream is closed for writing")
        try:
            self._owner.network._route(self._owner.local_addr, self._peer, True)
        except ConnectError as exc:
            self.close()
            raise SendError(f"stream write to {self._peer}: {exc}") from exc
        end = None if timeout is None else time.monotonic() + timeout
        with other._cond:
            while other._bytes and other._bytes + n > other._window:
                if other._closed or self._closed:
                    raise SendError(f"stream write to {self._peer}: the stream is closed")
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                other._cond.wait(left)
            else:
                if other._closed or self._closed:
                    raise SendError(f"stream write to {self._peer}: the stream is closed")
                other._frames.append(bytes(data))
                other._bytes += n
                other._cond.notify_all()
                return
        self.close()
        raise GossipTimeout(f"stream write to {self._peer}: timed out")

    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        """Return the next frame, ``None`` after the other end's half-close.

        Raises:
            GossipTimeout: nothing within ``timeout``.
            TransportError: the stream was closed.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._frames:
                if self._closed:
                    raise TransportError(f"stream read from {self._peer}: the stream is closed")
                if self._eof:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise GossipTimeout(f"stream read from {self._peer}: timed out")
                self._cond.wait(left)
            frame = self._frames.popleft()
            self._bytes -= len(frame)
            self._cond.notify_all()
            return frame

    def mark_trusted(self) -> None:
        """Nothing to lift: the in-memory transport has no pre-authentication limits."""

    def close_write(self) -> None:
        """Half-close: the other end reads what is queued, then ``None``."""
        other = self.other
        self._write_closed = True
        if other is not None:
            with other._cond:
                other._eof = True
                other._cond.notify_all()

    def close(self) -> None:
        """Close both directions at once (idempotent)."""
        for end in (self, self.other):
            if end is None:
                continue
            with end._cond:
                end._closed = True
                end._cond.notify_all()

    def __repr__(self) -> str:
        return f"<MemoryStreamConn {self._owner.local_addr}->{self._peer}>"


class MemoryTransport:
    """An in-process transport on a :class:`MemoryNetwork`; same interface as sockets.

    Create with :meth:`MemoryNetwork.new_transport`.
    """

    def __init__(self, network: MemoryNetwork, addr: str, name: str, max_udp_size: int) -> None:
        self.network = network
        self.name = name
        self.max_udp_size = max_udp_size
        self.max_stream_frame_size = 8 * 1024 * 1024
        self._addr = addr
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Incoming | MemoryStreamConn]] = []
        self._frames = 0  # reliable frames queued or held, bounded by network.max_queue
        self._seq = itertools.count()
        self._on_packets: OnPackets | None = None
        self._on_stream: OnStream | None = None
        self._thread: threading.Thread | None = None
        self._out: dict[str, MemoryConnection] = {}
        self._started = False
        self.closed = False
        self.callback_errors = 0

    @property
    def local_addr(self) -> str:
        """This transport's unique address (:func:`memory_address`)."""
        return self._addr

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Name the link a packet takes, for the engine's counters: always ``"memory"``."""
        return "memory"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``callback_errors`` and ``frames_queued`` (a current value)."""
        return {"callback_errors": self.callback_errors, "frames_queued": self._frames}

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Join the network and start the delivery thread.

        Raises:
            ClusterClosed: the transport was closed.
            TransportError: it is already started.
        """
        with self._cond:
            if self.closed:
                raise ClusterClosed(f"transport {self.name} is closed")
            if self._started:
                raise TransportError(f"transport {self.name} is already started")
            self._started = True
            self._on_packets = on_packets
            self._on_stream = on_stream
        self._thread = threading.Thread(
            target=self._deliver_loop, name=f"gossip-{self.name}-delivery", daemon=True
        )
        self._thread.start()
        self.network._register(self)

    def send(
        self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None
    ) -> None:
        """Send one packet to ``addr``; see :meth:`gossip.transports.base.Transport.send`.

        Raises:
            MessageTooLarge: a best-effort packet over ``max_udp_size``.
            ConnectError: reliable send to an unknown or partitioned address.
            SendQueueFull: the receiver held too many undelivered frames for ``timeout``.
            SendError: the pooled connection broke.
            ClusterClosed: this transport is closed or not started.
        """
        self._check_open()
        if not reliable:
            if len(data) > self.max_udp_size:
                raise MessageTooLarge(
                    f"datagram to {addr} is {len(data)} bytes, over max_udp_size "
                    f"{self.max_udp_size}"
                )
            target, delay = self.network._route(self._addr, addr, False)
            if target is not None:
                target._enqueue(
                    Incoming(bytes(data), self._addr, False, None, time.monotonic(), "memory"),
                    delay,
                )
            return
        with self._cond:
            conn = self._out.get(addr)
        if conn is None or conn.closed:
            conn = self._connect(addr)
            with self._cond:
                self._out[addr] = conn
        conn.send_frame(data, 2.0 if timeout is None else timeout)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Send ``data`` on a dedicated connection and wait for the one reply frame.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            ConnectError: unknown or partitioned address.
            ClusterClosed: this transport is closed or not started.
        """
        self._check_open()
        conn = self._connect(addr)
        slot: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        conn.reply_slot = slot
        try:
            conn.send_frame(data, timeout)
            try:
                return slot.get(timeout=max(0.0, timeout))
            except queue.Empty:
                raise GossipTimeout(f"request to {addr}: timed out after {timeout}s") from None
        finally:
            conn.close()

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Open an in-process stream to ``addr``; the target's ``on_stream`` gets the other end.

        Raises:
            ConnectError: unknown or partitioned address, or the target takes no streams.
            ClusterClosed: this transport is closed or not started.
        """
        self._check_open()
        target, delay = self.network._route(self._addr, addr, True)
        assert target is not None
        mine = MemoryStreamConn(self, addr, self.max_stream_frame_size)
        theirs = MemoryStreamConn(target, self._addr, target.max_stream_frame_size)
        mine.other, theirs.other = theirs, mine
        if not target._enqueue_stream(theirs, delay):
            raise ConnectError(f"connect to {addr}: it accepts no streams")
        return mine

    def close(self) -> None:
        """Leave the network, drop undelivered packets and join the delivery thread."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            pending = [item for _d, _s, item in self._heap if isinstance(item, MemoryStreamConn)]
            self._heap.clear()
            self._frames = 0
            self._cond.notify_all()
        for stream in pending:
            stream.close()
        self.network._unregister(self)
        with self._cond:
            conns = list(self._out.values())
            self._out.clear()
        for conn in conns:
            conn.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
            if self._thread.is_alive():
                _log.warning("%s ! delivery thread did not stop", self.name)

    def __enter__(self) -> MemoryTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.name} {self._addr} closed={self.closed}>"

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self.closed:
            raise ClusterClosed(f"transport {self.name} is closed")
        if not self._started:
            raise ClusterClosed(f"transport {self.name} is not started")

    def _connect(self, addr: str) -> MemoryConnection:
        target, _delay = self.network._route(self._addr, addr, True)
        assert target is not None
        mine = MemoryConnection(self, addr)
        theirs = MemoryConnection(target, self._addr)
        mine.other, theirs.other = theirs, mine
        return mine

    def _enqueue(self, incoming: Incoming, delay: float) -> None:
        with self._cond:
            if self.closed:
                self.network._count("unroutable")
                return
            if len(self._heap) - self._frames >= self.network.max_queue:
                self.network._count("dropped")
                return
            due = time.monotonic() + delay
            heapq.heappush(self._heap, (due, next(self._seq), incoming))
            self._cond.notify_all()

    def _enqueue_frame(self, incoming: Incoming, delay: float, timeout: float | None) -> None:
        """Queue a reliable frame, waiting up to ``timeout`` while too many are undelivered."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frames >= self.network.max_queue:
                if self.closed:
                    break
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise SendQueueFull(
                        f"send to {self._addr}: {self._frames} frames are waiting for the "
                        "receiver to read them")
                self._cond.wait(left)
            if self.closed:
                raise SendError(f"send to {self._addr}: the peer's transport is closed")
            self._frames += 1
            due = time.monotonic() + delay
            heapq.heappush(self._heap, (due, next(self._seq), incoming))
            self._cond.notify_all()

    def _enqueue_stream(self, stream: MemoryStreamConn, delay: float) -> bool:
        with self._cond:
            if self.closed or self._on_stream is None:
                return False
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), stream))
            self._cond.notify_all()
            return True

    def _resume(self, conn: MemoryConnection) -> None:
        with self._cond:
            conn.paused = False
            held, conn.held = conn.held, []
            # Held frames are older than anything still queued for this connection: deliver
            # them first, at once.
            for inc in held:
                heapq.heappush(self._heap, (-1.0, next(self._seq), inc))
            self._cond.notify_all()

    def _deliver_loop(self) -> None:
        while True:
            batch: list[Incoming] = []
            streams: list[MemoryStreamConn] = []
            with self._cond:
                while not self.closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                if self.closed:
                    return
                now = time.monotonic()
                heap = self._heap
                while heap and heap[0][0] <= now and len(batch) < 1024:
                    _due, _seq, item = heapq.heappop(heap)
                    if isinstance(item, MemoryStreamConn):
                        streams.append(item)
                        continue
                    conn = item.conn
                    if isinstance(conn, MemoryConnection) and conn.paused:
                        conn.held.append(item)
                        continue
                    if item.reliable:
                        self._frames -= 1
                    batch.append(item)
                if batch:
                    self._cond.notify_all()  # writers waiting for room
            if batch:
                self.network._count("delivered", len(batch))
                callback = self._on_packets
                if callback is not None:
                    try:
                        callback(batch)
                    except Exception:
                        self.callback_errors += 1
                        _log.error("%s ! on_packets raised", self.name, exc_info=True)
            for stream in streams:
                on_stream = self._on_stream
                if on_stream is None:
                    stream.close()
                    continue
                try:
                    on_stream(stream)
                except Exception:
                    self.callback_errors += 1
                    _log.error("%s ! on_stream raised", self.name, exc_info=True)
                    stream.close()
