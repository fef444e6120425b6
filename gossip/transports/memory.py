"""An in-process network for tests: :class:`MemoryNetwork` and :class:`MemoryTransport`.

``MemoryNetwork.new_transport()`` hands out transports with unique addresses
(``"mem-1:7946"``, ``"mem-2:7946"``...). Packets are delivered to the receiver's ``on_packet``
on the *receiver's* delivery thread (``gossip-<name>-delivery``), never on the sender's
thread, so the engine sees the same threading as with sockets. Reliable sends and requests
travel over in-process :class:`MemoryConnection` pairs.

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

import heapq
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable

from gossip.errors import (
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    PacketTooLarge,
    SendError,
    TransportError,
)
from gossip.transports.base import Incoming

__all__ = ["MemoryNetwork", "MemoryTransport", "MemoryConnection", "MEMORY_PORT"]

_log = logging.getLogger("gossip.transports.memory")

MEMORY_PORT = 7946
"""The port every in-memory address carries (``mem-<n>:7946``)."""
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
        """Create a transport with a fresh unique address (``mem-<n>:7946``).

        Args:
            name: node name for the delivery thread (``gossip-<name>-delivery``);
                defaults to ``mem-<n>``.
            max_udp_size: best-effort packets over this size raise :class:`PacketTooLarge`,
                as with :class:`~gossip.transports.socket.SocketTransport`.
        """
        with self._lock:
            n = next(self._ids)
        addr = f"mem-{n}:{MEMORY_PORT}"
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

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

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
    """One end of an in-process stream; implements :class:`~gossip.transports.base.Connection`.

    Frames written on one end reach the other end's transport ``on_packet`` (with ``conn``
    set to the other end), or, for the requesting end of a :meth:`MemoryTransport.request`,
    its private reply slot.
    """

    def __init__(self, owner: MemoryTransport, peer: str) -> None:
        self._owner = owner
        self._peer = peer
        self.other: MemoryConnection | None = None
        self.reply_slot: queue.SimpleQueue[bytes] | None = None
        self.closed = False

    @property
    def peer(self) -> str:
        """The address of the transport at the other end."""
        return self._peer

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Deliver one frame to the other end.

        Raises:
            SendError: this connection is closed, or the link is now partitioned.
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
        target._enqueue(
            Incoming(bytes(data), self._owner.local_addr, True, other, time.monotonic()), delay
        )

    def close(self) -> None:
        """Close both ends (idempotent)."""
        self.closed = True
        if self.other is not None:
            self.other.closed = True

    def __repr__(self) -> str:
        return f"<MemoryConnection {self._owner.local_addr}->{self._peer} closed={self.closed}>"


class MemoryTransport:
    """An in-process transport on a :class:`MemoryNetwork`; same interface as sockets.

    Create with :meth:`MemoryNetwork.new_transport`.
    """

    def __init__(self, network: MemoryNetwork, addr: str, name: str, max_udp_size: int) -> None:
        self.network = network
        self.name = name
        self.max_udp_size = max_udp_size
        self._addr = addr
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Incoming]] = []
        self._seq = itertools.count()
        self._on_packet: Callable[[Incoming], None] | None = None
        self._thread: threading.Thread | None = None
        self._out: dict[str, MemoryConnection] = {}
        self._started = False
        self.closed = False
        self.callback_errors = 0

    @property
    def local_addr(self) -> str:
        """This transport's unique address (``mem-<n>:7946``)."""
        return self._addr

    def start(self, on_packet: Callable[[Incoming], None]) -> None:
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
            self._on_packet = on_packet
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
            PacketTooLarge: a best-effort packet over ``max_udp_size``.
            ConnectError: reliable send to an unknown or partitioned address.
            SendError: the pooled connection broke.
            ClusterClosed: this transport is closed or not started.
        """
        self._check_open()
        if not reliable:
            if len(data) > self.max_udp_size:
                raise PacketTooLarge(
                    f"datagram to {addr} is {len(data)} bytes, over max_udp_size "
                    f"{self.max_udp_size}"
                )
            target, delay = self.network._route(self._addr, addr, False)
            if target is not None:
                target._enqueue(
                    Incoming(bytes(data), self._addr, False, None, time.monotonic()), delay
                )
            return
        with self._cond:
            conn = self._out.get(addr)
        if conn is None or conn.closed:
            conn = self._connect(addr)
            with self._cond:
                self._out[addr] = conn
        conn.send_frame(data, timeout)

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

    def close(self) -> None:
        """Leave the network, drop undelivered packets and join the delivery thread."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._heap.clear()
            self._cond.notify_all()
        self.network._unregister(self)
        with self._cond:
            conns = list(self._out.values())
            self._out.clear()
        for conn in conns:
            conn.close()
        if self._thread is not None:
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
            if len(self._heap) >= self.network.max_queue:
                self.network._count("dropped")
                return
            due = time.monotonic() + delay
            heapq.heappush(self._heap, (due, next(self._seq), incoming))
            self._cond.notify()

    def _deliver_loop(self) -> None:
        while True:
            with self._cond:
                while not self.closed:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                if self.closed:
                    return
                _due, _seq, incoming = heapq.heappop(self._heap)
            callback = self._on_packet
            if callback is None:
                continue
            self.network._count("delivered")
            try:
                callback(incoming)
            except Exception:
                self.callback_errors += 1
                _log.error("%s ! on_packet raised", self.name, exc_info=True)
