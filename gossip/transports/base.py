"""The transport interface: what the engine asks of anything that moves bytes.

A transport carries three kinds of traffic between addresses, and never decodes any of it
(choosing a datagram or a connection by size, encryption and codecs belong to the engine and
:mod:`gossip.packet`):

- *datagrams*: best-effort packets (UDP, or a best-effort frame where there is no UDP);
- *frames on pooled connections*: reliable packets, written through a bounded per-connection
  buffer that paces a writer whose peer does not keep up, and one request/reply exchange on a
  dedicated connection; a received frame carries its :class:`Connection` so that an answer goes
  back on the connection the request came in on;
- *streams*: a connection dedicated to one node-to-node stream (:class:`StreamConn`), dialed
  with :meth:`Transport.dial_stream` and accepted through the ``on_stream`` callback.

Received packets reach the engine in batches (``on_packets``), one call per read, so a burst
costs one hand-off, not one per packet.

This module owns :class:`Incoming`, the :class:`Connection`, :class:`StreamConn` and
:class:`Transport` protocols, the :func:`map_errors` boundary that turns ``OSError`` into
:mod:`gossip.errors` types, address helpers for ``ip:port`` / ``[v6]:port`` strings and a
monotonic :class:`Deadline`.

It imports nothing from :mod:`gossip` except :mod:`gossip.errors` (transports are layer L2 I/O).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, cast, runtime_checkable

from gossip.address import format_addr, is_websocket_url, split_ip_port
from gossip.errors import GossipError, GossipTimeout

__all__ = [
    "Incoming",
    "Connection",
    "StreamConn",
    "Transport",
    "RequestLine",
    "map_errors",
    "Deadline",
    "split_host_port",
    "is_websocket_url",
    "format_addr",
    "OnPackets",
    "OnStream",
    "ErrorMapping",
    "complete",
]


class Incoming:
    """One packet received by a transport.

    Attributes:
        data: one whole packet (a UDP datagram, or one stream frame without its length prefix).
        src: the remote address as seen by the transport (``"ip:port"``, ``"[v6]:port"``, or a
            WebSocket peer's address).
        reliable: True if it came over a connection (TCP, WebSocket, in-memory connection).
        conn: for frames that came over a connection, that connection (answer on it with
            :meth:`Connection.send_frame`); ``None`` for datagrams.
        received_at: ``time.monotonic()`` at receipt.
        transport: which transport carried it: ``"udp"``, ``"tcp"``, ``"ws"`` or ``"memory"``.
    """

    __slots__ = ("data", "src", "reliable", "conn", "received_at", "transport")

    def __init__(self, data: bytes, src: str, reliable: bool, conn: Connection | None,
                 received_at: float, transport: str = "") -> None:
        self.data = data
        self.src = src
        self.reliable = reliable
        self.conn = conn
        self.received_at = received_at
        self.transport = transport or ("tcp" if reliable else "udp")

    def __repr__(self) -> str:
        return (f"Incoming({len(self.data)} bytes from {self.src} over {self.transport}"
                f"{' on a connection' if self.conn is not None else ''})")


@runtime_checkable
class Connection(Protocol):
    """A connection on which whole frames arrive and can be answered (TCP, WebSocket, memory).

    Writes are buffered per connection: :meth:`send_frame` queues the frame and returns; the
    transport writes it as soon as the socket takes it, coalescing queued frames into few
    system calls. When the buffer holds more than its limit, ``send_frame`` waits for room up to
    ``timeout`` (``0`` never waits), which is how a slow reader paces a fast writer.
    """

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Queue one frame for writing (the transport adds any framing).

        Args:
            data: the frame.
            timeout: seconds to wait for room in the connection's buffer; ``0`` does not wait,
                ``None`` waits as long as it takes.

        Raises:
            SendQueueFull: the buffer stayed full for ``timeout`` seconds (nothing was queued).
            SendError: the connection is broken or closed.
            MessageTooLarge: ``data`` exceeds the transport's frame size limit.
            ClusterClosed: the transport is closed.
        """
        ...

    def pause_reading(self) -> None:
        """Stop reading from this connection until :meth:`resume_reading` (back-pressure).

        Frames already read are still delivered; the peer's writes then block in its kernel
        buffers and, through them, in its own send calls.
        """
        ...

    def resume_reading(self) -> None:
        """Read from this connection again (idempotent; safe from any thread)."""
        ...

    def mark_trusted(self) -> None:
        """The engine accepted a frame from this connection: lift its pre-authentication limits
        (the smaller frame limit, the deadline to become trusted, the untrusted counts).

        Idempotent; a transport without such limits does nothing.
        """
        ...

    def mark_rejected(self) -> None:
        """The engine refused a frame from this connection (it did not decode or authenticate).

        A transport closes a connection once it has had ``max_rejected_frames`` of them
        (:class:`gossip.transports.limits.ConnectionLimits`); one without that bound does nothing.
        """
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...

    @property
    def peer(self) -> str:
        """The remote address of this connection."""
        ...


@runtime_checkable
class StreamConn(Protocol):
    """A connection dedicated to one node-to-node stream: whole frames, written and read by the
    stream's own threads, with blocking calls under timeouts.

    It carries frames only; what a frame holds (sealed, compressed, typed) is the stream layer's
    business (:mod:`gossip.stream`). A transport hands accepted ones to the ``on_stream``
    callback given to :meth:`Transport.start` and dials them with :meth:`Transport.dial_stream`.
    """

    max_frame_size: int
    """The largest frame this connection sends or accepts."""

    @property
    def peer(self) -> str:
        """The remote address of this connection."""
        ...

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Write one whole frame, blocking while the peer does not read (up to ``timeout``).

        The transport keeps no reference to ``data`` once this returns (the caller may reuse
        the buffer for its next frame).

        Raises:
            GossipTimeout: the frame could not be written within ``timeout``; the connection is
                then closed (a frame cut in half cannot be resumed).
            SendError: the connection is broken or closed for writing.
            MessageTooLarge: ``data`` is over :attr:`max_frame_size`.
        """
        ...

    def recv_frame(self, timeout: float | None = None) -> bytes | bytearray | memoryview | None:
        """Return the next whole frame, or ``None`` once the peer has closed its writing side.

        The frame is any bytes-like object; it may be a view into the connection's own read
        buffer, valid only until the next call (the caller copies what it keeps).

        Raises:
            GossipTimeout: no whole frame within ``timeout`` (the connection stays usable).
            TransportError: the connection broke, or the peer announced a frame over
                :attr:`max_frame_size`.
        """
        ...

    def mark_trusted(self) -> None:
        """The stream layer authenticated the stream's opening: lift the pre-authentication
        frame limit of an accepted stream (idempotent; nothing to do on a dialed one)."""
        ...

    def close_write(self) -> None:
        """Close the writing side: the peer's :meth:`recv_frame` returns ``None`` after the rest."""
        ...

    def close(self) -> None:
        """Close both sides at once (idempotent); a blocked reader or writer fails fast."""
        ...


class RequestLine(Protocol):
    """One request/reply exchange on a borrowed connection, driven by a caller that never
    blocks (an event loop); a transport that can lend one has ``request_line(addr, data)``
    (None when it has no idle connection to lend) and ``prepare_request_line(addr, timeout)``
    (dials one for the next borrower and returns True, or returns False when it lends none to
    ``addr``; it blocks, so a worker thread calls it).

    The borrower calls :meth:`flush` until it returns True, waiting for :meth:`fileno` to be
    writable between calls; then :meth:`read` each time it is readable, until the reply comes;
    then, or when it gives up, :meth:`release` once.

    Attributes:
        what: names the exchange in error messages.
        retry: True while a failure means the peer had closed the idle connection before the
            request reached it (nothing of a reply read): the request may be sent another way.
    """

    what: str
    retry: bool

    def fileno(self) -> int:
        """The file descriptor to watch (-1 once released)."""
        ...

    @property
    def written(self) -> bool:
        """True once the whole request has been written."""
        ...

    def flush(self) -> bool:
        """Write what the socket takes now; True once the whole request is written.

        Raises:
            SendError: the connection broke.
        """
        ...

    def read(self) -> bytes | None:
        """Read what is there; the reply frame once it is whole, else None.

        Raises:
            SendError: the connection closed or broke, or the reply is malformed.
            ClusterClosed: the transport closed.
        """
        ...

    def release(self, clean: bool = True) -> None:
        """End the exchange (idempotent): keep the connection for another one if the reply
        was read whole and ``clean`` is True, else close it."""
        ...


OnPackets = Callable[[list[Incoming]], None]
"""The packet callback given to :meth:`Transport.start`: called on a reader thread with every
packet read in one go (a datagram burst, or the frames of one read on a connection)."""

OnStream = Callable[[StreamConn], None]
"""The stream callback given to :meth:`Transport.start`: called on a reader thread with each
accepted stream connection, which it must hand to another thread at once."""


@runtime_checkable
class Transport(Protocol):
    """Moves packets between addresses; see the module docstring."""

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Bind/listen and start reader threads.

        ``on_packets`` is called on a reader thread with a batch of received packets and must
        not block for long; ``on_stream`` (if given) with each accepted stream connection.
        Without ``on_stream``, stream connections are refused.

        Raises:
            TransportError: the address could not be bound.
            ClusterClosed: the transport was already closed.
        """
        ...

    @property
    def local_addr(self) -> str:
        """The bound address (the real port if 0 was asked); valid after :meth:`start`."""
        ...

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the transport's counters (the engine shows them as ``transport.*``)."""
        ...

    def link_kind(self, addr: str, reliable: bool) -> str:
        """Name the link a packet to ``addr`` takes, for the engine's counters (``udp``,
        ``tcp``, ``ws``, ``memory``...)."""
        ...

    def send(
        self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None
    ) -> None:
        """Send one packet to ``addr``, best-effort (datagram) or reliable (one frame).

        A reliable send queues the frame on the pooled connection to ``addr`` (dialing it if
        needed) and returns; it waits up to ``timeout`` for room while that connection's buffer
        is full, and never drops what it accepted. A datagram is written at once or refused.

        Raises:
            MessageTooLarge: a datagram is over the datagram limit or a frame over the frame limit.
            ConnectError: no connection to ``addr`` could be established (reliable sends).
            SendQueueFull: the connection's buffer stayed full for ``timeout`` seconds, or (for
                a datagram) the socket's send buffer is full.
            SendError: the bytes could not be written.
            AddressError: ``addr`` is not an address this transport can reach.
            ClusterClosed: the transport is closed.
        """
        ...

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Write one frame to ``addr`` on a dedicated connection and return the single reply.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            ConnectError, SendError, MessageTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        ...

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Open a connection dedicated to one stream to ``addr``.

        Raises:
            ConnectError: ``addr`` could not be reached within ``timeout``.
            AddressError, ClusterClosed: as :meth:`send`.
        """
        ...

    def close(self) -> None:
        """Stop readers, close every socket and join every thread started (idempotent)."""
        ...


ErrorMapping = Mapping[type[BaseException], type[GossipError]]


def complete(transport: Any) -> Transport:
    """Return ``transport`` with the whole :class:`Transport` interface.

    Every transport of this package implements it. A custom one written before :attr:`~Transport.stats`,
    :meth:`~Transport.link_kind`, :meth:`Connection.mark_trusted`, :meth:`Connection.mark_rejected`
    and :meth:`StreamConn.mark_trusted` were part of the interface is wrapped once, here, so that
    the engine calls them without asking whether they exist: no counters, ``tcp`` for reliable
    packets and ``udp`` for the others, and no pre-authentication limits to lift or enforce.
    """
    if isinstance(transport, Transport) and not callable(transport.stats):
        return transport
    return _Completed(transport)  # (an older one may have had ``stats()`` as a method too)


class _Completed:
    """A custom transport with the interface's defaults filled in (see :func:`complete`)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def local_addr(self) -> str:
        addr: str = self._inner.local_addr
        return addr

    @property
    def stats(self) -> dict[str, int]:
        stats = getattr(self._inner, "stats", None)
        if callable(stats):
            stats = stats()
        return dict(stats) if isinstance(stats, dict) else {}

    def link_kind(self, addr: str, reliable: bool) -> str:
        fn = getattr(self._inner, "link_kind", None)
        if callable(fn):
            kind: str = fn(addr, reliable)
            return kind
        return "tcp" if reliable else "udp"

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        def packets(batch: list[Incoming]) -> None:
            for inc in batch:
                if inc.conn is not None and not isinstance(inc.conn, Connection):
                    inc.conn = cast(Connection, _CompletedConn(inc.conn))
            on_packets(batch)

        def stream(conn: StreamConn) -> None:
            assert on_stream is not None
            on_stream(conn if isinstance(conn, StreamConn) else cast(StreamConn, _CompletedStream(conn)))

        self._inner.start(packets, None if on_stream is None else stream)

    def send(self, addr: str, data: bytes, reliable: bool = False,
             timeout: float | None = None) -> None:
        self._inner.send(addr, data, reliable, timeout)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        reply: bytes = self._inner.request(addr, data, timeout)
        return reply

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        conn = self._inner.dial_stream(addr, timeout)
        return conn if isinstance(conn, StreamConn) else cast(StreamConn, _CompletedStream(conn))

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)


class _CompletedConn:
    """A custom transport's connection with no-op ``mark_trusted`` and ``mark_rejected``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def mark_trusted(self) -> None:
        fn = getattr(self._inner, "mark_trusted", None)
        if callable(fn):
            fn()

    def mark_rejected(self) -> None:
        fn = getattr(self._inner, "mark_rejected", None)
        if callable(fn):
            fn()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CompletedStream(_CompletedConn):
    """A custom transport's stream connection with a no-op ``mark_trusted``."""




@contextmanager
def map_errors(mapping: ErrorMapping, peer: str = "", action: str = "") -> Iterator[None]:
    """Translate low-level exceptions raised in the block into :mod:`gossip.errors` types.

    The first entry of ``mapping`` whose key matches (``isinstance``) wins, so list specific
    types such as ``socket.timeout`` before ``OSError``. Exceptions that already are
    :class:`~gossip.errors.GossipError` pass through unchanged. The new exception is raised
    ``from`` the original and its message names ``action`` and ``peer``.

    Example::

        with map_errors({socket.timeout: GossipTimeout, OSError: SendError}, peer, "send to"):
            sock.sendall(frame)
    """
    try:
        yield
    except GossipError:
        raise
    except BaseException as exc:
        for src_type, dst_type in mapping.items():
            if isinstance(exc, src_type):
                what = f"{action} {peer}".strip() or "transport"
                raise dst_type(f"{what}: {str(exc) or type(exc).__name__}") from exc
        raise


class Deadline:
    """One timeout spread over several blocking steps, on the monotonic clock.

    ``Deadline(None)`` never expires and :meth:`remaining` returns ``None``.
    """

    __slots__ = ("_end",)

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def remaining(self, what: str = "operation") -> float | None:
        """Return the seconds left (``None`` if unbounded).

        Raises:
            GossipTimeout: the deadline has passed; the message names ``what``.
        """
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise GossipTimeout(f"{what}: timed out")
        return left

    @property
    def expired(self) -> bool:
        """True once the deadline has passed (never for an unbounded deadline)."""
        return self._end is not None and time.monotonic() >= self._end


def split_host_port(addr: str) -> tuple[str, int, int]:
    """Split an ``"ip:port"`` / ``"[v6]:port"`` string into ``(ip, port, socket family)``
    (:func:`gossip.address.split_ip_port`, with the family a socket takes).

    Raises:
        AddressError: the string is not an IP literal with a port in 0..65535.
    """
    import socket  # here: importing the interface must not load the socket machinery

    ip, port, version = split_ip_port(addr)
    return ip, port, socket.AF_INET6 if version == 6 else socket.AF_INET


