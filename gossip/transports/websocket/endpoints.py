"""Where a WebSocket node listens and how it is reached: URLs and TLS contexts.

- :func:`websocket_url` builds the URL a listener serves;
- :func:`parse_peer_url` parses a peer's URL and applies the plain-``ws://`` policy (plain
  WebSocket only to loopback unless allowed);
- :func:`server_tls_context` and :func:`client_tls_context` make the TLS contexts of ``wss://``.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports.base`.
"""

from __future__ import annotations

import ipaddress
import ssl

from websockets.exceptions import InvalidURI
from websockets.uri import WebSocketURI, parse_uri

from gossip.address import is_loopback as is_loopback  # re-exported (it was defined here)
from gossip.errors import AddressError, ConnectError
from gossip.transports.base import format_addr

__all__ = ["websocket_url", "parse_peer_url", "server_tls_context", "client_tls_context",
           "is_loopback", "is_ip"]


def websocket_url(host: str, port: int, path: str = "/gossip", secure: bool = False) -> str:
    """Build the URL a listener on ``host:port`` serves (IPv6 bracketed).

    An unspecified host (``0.0.0.0``, ``::``) becomes ``127.0.0.1``: right on loopback; set an
    advertise address on real networks.
    """
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    hostport = format_addr(host, port) if is_ip(host) else f"{host}:{port}"
    return f"{'wss' if secure else 'ws'}://{hostport}{path}"


def server_tls_context(cert_file: str, key_file: str = "") -> ssl.SSLContext:
    """Return a TLS server context from a PEM certificate chain and key (``key_file`` may be
    empty when the key is in ``cert_file``). It issues no TLS 1.3 session tickets (set
    ``num_tickets = 0`` on a context of your own too).

    Raises:
        ssl.SSLError, OSError: the files cannot be read or do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file or None)
    # No TLS 1.3 session tickets: a client would read them while its first write is under
    # way, and a TLS connection must not be read and written by two threads at that moment.
    # (Our dialers never resume sessions anyway.)
    ctx.num_tickets = 0
    return ctx


def client_tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Return a verifying TLS client context: the system's CAs, or only those in ``ca_file``.

    Raises:
        ssl.SSLError, OSError: ``ca_file`` cannot be read.
    """
    return ssl.create_default_context(cafile=ca_file or None)


def is_ip(host: str) -> bool:
    """True if ``host`` is an IP literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_peer_url(addr: str, allow_insecure: bool) -> WebSocketURI:
    """Parse a peer URL and apply the plain-``ws://`` policy.

    Raises:
        AddressError: not a valid ``ws://`` / ``wss://`` URL (or one with user info).
        ConnectError: plain ``ws://`` to a host not on loopback without ``allow_insecure``.
    """
    try:
        uri = parse_uri(addr)
    except (InvalidURI, ValueError) as exc:
        raise AddressError(f"invalid WebSocket URL {addr!r}: {exc}") from None
    if uri.user_info is not None:
        raise AddressError(f"invalid WebSocket URL {addr!r}: user info is not allowed")
    if not uri.secure and not allow_insecure and not is_loopback(uri.host):
        raise ConnectError(
            f"connect to {addr}: plain ws:// to {uri.host}, which is not on loopback, is "
            f"refused (use wss://, or set allow_insecure_websockets)")
    return uri
