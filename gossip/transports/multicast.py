"""The socket of multicast discovery: one IPv4 UDP socket that has joined a group.

:class:`MulticastSocket` binds the group's port (``SO_REUSEADDR``, and ``SO_REUSEPORT`` where
the system has it, so that every node on a host shares it), joins the group on one interface,
and sends on that interface with a given TTL, hearing its own datagrams too (the receiver
skips its own). A TTL of 0 keeps every datagram on the host; 1 (the default of
``Config.multicast_ttl``) on the local network. Port 0 takes a free port (tests: the other
nodes then use :attr:`MulticastSocket.port`).

This module imports nothing from :mod:`gossip` but the socket helpers and the errors.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from gossip.errors import TransportError
from gossip.transports._sockets import close_quietly, wait_fd

__all__ = ["MulticastSocket"]

RECV_SIZE = 2048


class MulticastSocket:
    """A UDP socket in multicast group ``group:port``, on the interface ``interface``.

    Args:
        group: an IPv4 multicast address (224.0.0.0/4; 239.x is for private use).
        port: the group's port (0: any free one).
        interface: the IPv4 address of the interface to join and send on (``""``: the
            system's choice).
        ttl: the datagrams' time to live (0 stays on the host).

    Raises:
        TransportError: the socket could not be bound or could not join the group.
    """

    def __init__(self, group: str, port: int, interface: str = "", ttl: int = 1) -> None:
        self.group = group
        iface = socket.inet_aton(interface or "0.0.0.0")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(AttributeError, OSError):  # platforms and kernels without it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((group, port))  # the group's address: only its datagrams arrive here
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            struct.pack("4s4s", socket.inet_aton(group), iface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot join multicast group {group}:{port}"
                                 f"{' on ' + interface if interface else ''}: {exc}") from exc
        self._sock = sock
        self.port: int = sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        """Send one datagram to the group (errors are the caller's to count).

        Raises:
            OSError: the kernel refused it.
        """
        self._sock.sendto(data, (self.group, self.port))

    def recv(self, timeout: float) -> tuple[bytes, str] | None:
        """Return the next datagram and its source IP, or None if none came within ``timeout``.

        Raises:
            OSError: the socket was closed.
        """
        try:
            data, src = self._sock.recvfrom(RECV_SIZE)
            return data, str(src[0])
        except BlockingIOError:
            pass
        wait_fd(self._sock, False, timeout)
        try:
            data, src = self._sock.recvfrom(RECV_SIZE)
        except BlockingIOError:
            return None
        return data, str(src[0])

    def close(self) -> None:
        """Close the socket (a thread waiting in :meth:`recv` wakes within its timeout)."""
        close_quietly(self._sock)
