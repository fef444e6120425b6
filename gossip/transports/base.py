"""The transport interface: what the engine asks of anything that moves bytes.

A transport sends and receives *packets* (opaque ``bytes``) between ``"ip:port"`` addresses,
best-effort (UDP-like) or reliable (length-prefixed frames on a stream), and supports one
request/reply exchange on a dedicated connection. It never decodes what it carries: choosing
UDP or TCP by size, encryption and codecs belong to the engine and :mod:`gossip.packet`.

This module owns :class:`Incoming`, the :class:`Connection` and :class:`Transport` protocols,
the :func:`map_errors` boundary that turns ``OSError`` into :mod:`gossip.errors` types,
address helpers for ``ip:port`` / ``[v6]:port`` strings and a monotonic :class:`Deadline`.

It imports nothing from :mod:`gossip` except :mod:`gossip.errors` (transports are layer L2 I/O).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gossip.errors import AddressError, GossipError, GossipTimeout

__all__ = [
    "Incoming",
    "Connection",
    "Transport",
    "map_errors",
    "Deadline",
    "split_host_port",
    "format_addr",
    "OnPacket",
    "ErrorMapping",
]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One packet received by a transport.

    Attributes:
        data: one whole packet (a UDP datagram, or one TCP frame without its length prefix).
        src: the remote ``"ip:port"`` (``"[v6]:port"`` for IPv6) as seen by the socket.
        reliable: True if it came over a stream (TCP or an in-memory connection).
        conn: for stream frames, the connection it arrived on (reply with
            :meth:`Connection.send_frame`); ``None`` for datagrams.
        received_at: ``time.monotonic()`` at receipt.
    """

    data: bytes
    src: str
    reliable: bool
    conn: Connection | None
    received_at: float


@runtime_checkable
class Connection(Protocol):
    """A stream connection handle (TCP or in-memory) on which whole frames can be written."""

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Write one frame (the transport adds any framing).

        Raises:
            SendError: the connection is broken or closed.
            GossipTimeout: the write did not finish within ``timeout``.
            PacketTooLarge: ``data`` exceeds the transport's frame size limit.
        """
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...

    @property
    def peer(self) -> str:
        """The remote ``"ip:port"`` of this connection."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Moves packets between addresses; see the module docstring."""

    def start(self, on_packet: Callable[[Incoming], None]) -> None:
        """Bind/listen and start reader threads.

        ``on_packet`` is called on a reader thread for every received packet and must not
        block (the engine enqueues with ``put_nowait``).

        Raises:
            TransportError: the address could not be bound.
            ClusterClosed: the transport was already closed.
        """
        ...

    @property
    def local_addr(self) -> str:
        """The bound ``"ip:port"`` (the real port if 0 was asked); valid after :meth:`start`."""
        ...

    def send(
        self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None
    ) -> None:
        """Send one packet to ``addr``, best-effort (datagram) or reliable (one frame).

        Raises:
            PacketTooLarge: a datagram is over the datagram limit or a frame over the frame limit.
            ConnectError: no connection to ``addr`` could be established (reliable sends).
            SendError: the bytes could not be written.
            GossipTimeout: the write did not finish in time.
            AddressError: ``addr`` is not an ``ip:port`` string.
            ClusterClosed: the transport is closed.
        """
        ...

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Write one frame to ``addr`` and return the single reply frame.

        Raises:
            GossipTimeout: no reply within ``timeout``.
            ConnectError, SendError, PacketTooLarge, AddressError, ClusterClosed: as :meth:`send`.
        """
        ...

    def close(self) -> None:
        """Stop readers, close every socket and join every thread started (idempotent)."""
        ...


ErrorMapping = Mapping[type[BaseException], type[GossipError]]


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
                raise dst_type(f"{what}: {exc or type(exc).__name__}") from exc
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
    """Split an ``"ip:port"`` / ``"[v6]:port"`` string into ``(ip, port, family)``.

    Transports take IP literals only: hostnames and SRV names are resolved earlier by
    :mod:`gossip.resolver`. Port 0 is accepted (for binding).

    Raises:
        AddressError: the string is not an IP literal with a port in 0..65535.
    """
    if not isinstance(addr, str):
        raise AddressError(f"invalid transport address {addr!r}: expected a string")
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not host:
        raise AddressError(f"invalid transport address {addr!r}: expected ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"invalid transport address {addr!r}: write IPv6 as [addr]:port")
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise AddressError(f"invalid transport address {addr!r}: bad port {port_text!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"invalid transport address {addr!r}: {host!r} is not an IP literal"
        ) from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return str(ip), int(port_text), family


def format_addr(host: str, port: int) -> str:
    """Format ``host`` and ``port`` as ``ip:port`` (``[v6]:port`` for IPv6).

    IPv4-mapped IPv6 addresses (``::ffff:1.2.3.4``, seen on dual-stack sockets) become
    plain IPv4, and scope ids (``%eth0``) are dropped.
    """
    host = host.split("%", 1)[0]
    if ":" in host:
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}]:{port}"
        if ip6.ipv4_mapped is not None:
            return f"{ip6.ipv4_mapped}:{port}"
        return f"[{ip6}]:{port}"
    return f"{host}:{port}"


OnPacket = Callable[[Incoming], None]
"""The callback type given to :meth:`Transport.start`."""
