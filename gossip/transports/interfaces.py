"""The address to advertise for a node bound to every interface (``0.0.0.0`` or ``::``).

Peers on other hosts cannot dial ``0.0.0.0``, and ``127.0.0.1`` sends them to themselves. Like
memberlist, a node bound to every interface advertises the address of the interface that
carries the default route; when there is none it refuses to start and asks for an advertise
address.

The parsing is pure (:func:`default_route_interface`, :func:`ipv6_default_route_interface`,
:func:`ipv6_interface_address`) and :func:`choose_advertise_host` takes the system's answers
as callables, so every rule is testable without touching a network. :func:`advertise_host`
wires it to Linux's ``/proc/net`` tables and the ``SIOCGIFADDR`` ioctl: it reads, it never
sends a packet.

This module imports only :mod:`gossip.errors` and the standard library.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["UNSPECIFIED_HOSTS", "default_route_interface", "ipv6_default_route_interface",
           "ipv6_interface_address", "choose_advertise_host", "advertise_host"]

UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", ""})
"""Hosts that mean "every interface" when bound."""

_RTF_UP = 0x1
_SIOCGIFADDR = 0x8915


def default_route_interface(route_table: str) -> str | None:
    """Return the interface of the IPv4 default route in ``/proc/net/route``'s text (the one of
    lowest metric), or None."""
    best: tuple[int, str] | None = None
    for line in route_table.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        iface, dest, flags, metric, mask = cols[0], cols[1], cols[3], cols[6], cols[7]
        try:
            if int(dest, 16) != 0 or int(mask, 16) != 0 or not int(flags, 16) & _RTF_UP:
                continue
            rank = int(metric)
        except ValueError:
            continue
        if best is None or rank < best[0]:
            best = (rank, iface)
    return None if best is None else best[1]


def ipv6_default_route_interface(route_table: str) -> str | None:
    """Return the interface of the IPv6 default route in ``/proc/net/ipv6_route``'s text (the
    one of lowest metric, loopback excluded), or None."""
    best: tuple[int, str] | None = None
    for line in route_table.splitlines():
        cols = line.split()
        if len(cols) < 10:
            continue
        dest, plen, metric, flags, iface = cols[0], cols[1], cols[5], cols[8], cols[9]
        try:
            if int(dest, 16) != 0 or int(plen, 16) != 0 or not int(flags, 16) & _RTF_UP or iface == "lo":
                continue
            rank = int(metric, 16)
        except ValueError:
            continue
        if best is None or rank < best[0]:
            best = (rank, iface)
    return None if best is None else best[1]


def ipv6_interface_address(if_inet6: str, iface: str) -> str | None:
    """Return the first global-scope address of ``iface`` in ``/proc/net/if_inet6``'s text."""
    for line in if_inet6.splitlines():
        cols = line.split()
        if len(cols) < 6 or cols[5] != iface or cols[3] != "00":   # scope 00: global
            continue
        try:
            return str(ipaddress.IPv6Address(bytes.fromhex(cols[0])))
        except ValueError:
            continue
    return None


def choose_advertise_host(bind_host: str, read: Callable[[str], str],
                          ipv4_of: Callable[[str], str | None]) -> str:
    """Return the host to advertise for a node bound to ``bind_host`` (an unspecified one).

    Args:
        bind_host: ``0.0.0.0`` (IPv4) or ``::`` (IPv6 first, then IPv4).
        read: returns the text of a ``/proc/net`` table by name (``route``, ``ipv6_route``,
            ``if_inet6``), ``""`` when it cannot be read.
        ipv4_of: returns an interface's IPv4 address, or None.

    Raises:
        ConfigError: no interface carries a default route (names ``advertise_addr``).
    """
    if bind_host == "::":
        iface6 = ipv6_default_route_interface(read("ipv6_route"))
        if iface6 is not None:
            addr6 = ipv6_interface_address(read("if_inet6"), iface6)
            if addr6 is not None:
                return addr6
    iface = default_route_interface(read("route"))
    addr = ipv4_of(iface) if iface is not None else None
    if addr is not None and not ipaddress.ip_address(addr).is_loopback:
        return addr
    raise ConfigError(
        "advertise_addr",
        f"is empty and the node binds every interface ({bind_host or '0.0.0.0'}), but no "
        "interface carries a default route to take the address peers should dial from: set "
        "advertise_addr (gossip agent --advertise) to this node's ip:port as other hosts reach it")


def _read_proc_net(name: str) -> str:
    try:
        with open(f"/proc/net/{name}", encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _ipv4_of(iface: str) -> str | None:
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # never sends
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(answer[20:24])


def advertise_host(bind_host: str) -> str:
    """Return the host to advertise for a node bound to ``bind_host`` (``0.0.0.0`` or ``::``):
    the address of the interface carrying the default route.

    Raises:
        ConfigError: there is no such interface (the message says to set ``advertise_addr``).
    """
    return choose_advertise_host(bind_host, _read_proc_net, _ipv4_of)
