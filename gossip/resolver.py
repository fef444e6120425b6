"""Turning peer strings into ``ip:port`` addresses a transport can use.

:func:`resolve_peer` parses a peer with :meth:`gossip.address.Address.parse` and resolves it
through a :class:`Resolver`: an IP literal gives itself, a hostname every address it has, an
``srv+name`` every target of its SRV records (each expanded to all its addresses), a
``ws://`` / ``wss://`` URL is returned unchanged (the WebSocket transport resolves its host),
and ``srv+ws(s)://name/path`` one URL per SRV target.

:class:`DefaultResolver` uses :func:`socket.getaddrinfo` and dnspython; tests pass any object
with the two :class:`Resolver` methods instead.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Protocol, runtime_checkable

from gossip.address import Address, format_host_port
from gossip.errors import AddressError, GossipError, TransportError

__all__ = ["Resolver", "DefaultResolver", "resolve_peer"]

_log = logging.getLogger("gossip.resolver")


@runtime_checkable
class Resolver(Protocol):
    """Name lookups used to resolve peers."""

    def lookup_ip(self, host: str) -> list[str]:
        """Return every IP address (as text, without brackets) of ``host``.

        Raises:
            TransportError: the name does not resolve.
        """
        ...

    def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        """Return ``(ip, port)`` for every usable SRV record target of ``name``.

        Raises:
            AddressError: ``name`` is empty.
            TransportError: the lookup failed or left nothing usable.
        """
        ...


def _sort_ips(ips: list[str], prefer_ipv6: bool) -> list[str]:
    """Deduplicate, keeping order within a family, IPv4 first unless ``prefer_ipv6``."""
    seen: dict[str, None] = dict.fromkeys(ips)

    def is_v6(ip: str) -> bool:
        return ":" in ip

    return sorted(seen, key=lambda ip: is_v6(ip) != prefer_ipv6)


class DefaultResolver:
    """Resolve with :func:`socket.getaddrinfo` (addresses) and dnspython (SRV records).

    Args:
        prefer_ipv6: list IPv6 addresses before IPv4 ones.
    """

    def __init__(self, prefer_ipv6: bool = False) -> None:
        self.prefer_ipv6 = prefer_ipv6

    def lookup_ip(self, host: str) -> list[str]:
        """Return every address of ``host`` (deduplicated, IPv4 first unless ``prefer_ipv6``).

        Raises:
            AddressError: ``host`` is empty.
            TransportError: the name does not resolve.
        """
        if not host:
            raise AddressError("cannot resolve an empty host name")
        try:
            # An ASCII name goes as bytes: a str would load the idna codec (about 0.4 MiB).
            name: str | bytes = host.encode("ascii") if host.isascii() else host
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise TransportError(f"cannot resolve {host!r}: {exc}") from exc
        families = (socket.AF_INET, socket.AF_INET6)
        ips = [str(info[4][0]).split("%", 1)[0] for info in infos if info[0] in families]
        if not ips:
            raise TransportError(f"cannot resolve {host!r}: no addresses")
        return _sort_ips(ips, self.prefer_ipv6)

    def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        """Resolve the SRV records of ``name``; expand each target to all its addresses.

        Records with port 0 or the target ``"."`` ("service not available") are skipped,
        as are targets that do not resolve; records are taken in priority order.

        Raises:
            AddressError: ``name`` is empty.
            TransportError: the lookup failed or no usable record was left.
        """
        if not name:
            raise AddressError("cannot resolve an empty SRV name")
        try:
            import dns.exception
            import dns.resolver
        except ImportError as exc:  # pragma: no cover - dnspython is a dependency
            raise TransportError(f"cannot resolve SRV {name!r}: dnspython is missing") from exc
        try:
            answer = dns.resolver.resolve(name, "SRV")
        except dns.exception.DNSException as exc:
            raise TransportError(f"cannot resolve SRV {name!r}: {exc}") from exc
        records = sorted(answer, key=lambda r: (int(r.priority), -int(r.weight)))
        result: list[tuple[str, int]] = []
        for record in records:
            target = record.target.to_text(omit_final_dot=True)
            port = int(record.port)
            if port == 0 or target in ("", "."):
                continue
            try:
                ips = self.lookup_ip(target)
            except GossipError as exc:
                _log.debug("SRV %s: skipping target %s: %s", name, target, exc)
                continue
            result.extend((ip, port) for ip in ips)
        if not result:
            raise TransportError(f"cannot resolve SRV {name!r}: no usable records")
        return list(dict.fromkeys(result))


def _check_ip(peer: str, ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise TransportError(f"cannot resolve {peer!r}: resolver returned {ip!r}") from None


def resolve_peer(text: str, resolver: Resolver, default_port: int) -> list[str]:
    """Resolve a peer string to the ``"ip:port"`` addresses to try (``"[v6]:port"`` for IPv6).

    - an IP literal gives itself;
    - a hostname gives one entry per address, all with the given or default port;
    - ``srv+name`` gives the SRV results (their ports);
    - a ``ws://`` / ``wss://`` / ``http://`` / ``https://`` URL is returned unchanged, as one
      element;
    - ``srv+wss://name/path`` looks up the SRV records of ``name`` and gives one URL per
      target, ``wss://ip:port/path`` (with ``wss``, the certificate must then name the IP).

    Raises:
        AddressError: ``text`` cannot be parsed.
        TransportError: the resolver failed or found nothing; the message names the peer.
    """
    addr = Address.parse(text, default_port)
    if addr.kind in ("ws", "http"):
        return [addr.url]
    if addr.kind == "ip":
        return [format_host_port(addr.host, addr.port)]
    try:
        if addr.kind == "srv" and addr.url:
            import urllib.parse  # here: only URLs need it (ip:port peers never do)

            # srv+wss://_gossip._tcp.example.com/gossip: the URL's host is the SRV name, and
            # each record gives a URL with the target's address and port, path kept.
            parts = urllib.parse.urlsplit(addr.url)
            pairs = resolver.lookup_srv(addr.host)
            out = [urllib.parse.urlunsplit((parts.scheme, format_host_port(_check_ip(text, ip), port),
                                            parts.path, parts.query, ""))
                   for ip, port in pairs]
        elif addr.kind == "srv":
            pairs = resolver.lookup_srv(addr.host)
            out = [format_host_port(_check_ip(text, ip), port) for ip, port in pairs]
        else:
            ips = resolver.lookup_ip(addr.host)
            out = [format_host_port(_check_ip(text, ip), addr.port) for ip in ips]
    except AddressError as exc:
        raise TransportError(f"cannot resolve peer {text!r}: {exc}") from exc
    except TransportError as exc:
        if text in str(exc):
            raise
        raise TransportError(f"cannot resolve peer {text!r}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot resolve peer {text!r}: {exc}") from exc
    out = list(dict.fromkeys(out))
    if not out:
        raise TransportError(f"cannot resolve peer {text!r}: no addresses")
    return out
