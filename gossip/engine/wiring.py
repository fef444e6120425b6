"""From a :class:`~gossip.config.Config` to the parts it describes: the keyring, the packet codec
and the built-in transport, and the address a node advertises.

The facade (:mod:`gossip.cluster`) builds none of them: the engine asks here for its codec
(:func:`keyring_for`, :func:`codec_for`), for its transport at start (:func:`build_transport`,
:func:`advertise_host_for_any`, :func:`advertised_address`) and for the resolver of the peers
it joins (:func:`resolver_for`). This is the one module that copies ``Config`` fields into the
transports' constructors. The facade asks here only for the WebSocket side of a running node
that its host's server hands connections to (:func:`websocket_side`, :func:`not_running`).

The built-in transport is a :class:`~gossip.transports.multi.MultiTransport` over a
:class:`~gossip.transports.socket.SocketTransport`, a
:class:`~gossip.transports.websocket.WebSocketTransport` and an
:class:`~gossip.transports.http.transport.HTTPTransport`: the side the node advertises listens,
the other only dials, and starts on first use. The WebSocket transport (with ``websockets``,
``ssl`` and ``http``, several MiB) is imported only when a node needs it.

This module imports the configuration, the keyring, the codecs and the packet pipeline, and
the transports when it builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codecs import get_codec
from ..compression import get_compressor
from ..config import Config
from ..errors import GossipError, TransportError
from ..node import NodeID
from ..packet import PacketCodec
from ..security import Keyring
from ..transports.base import Transport

if TYPE_CHECKING:
    from ..transports.http.transport import HTTPTransport
    from ..transports.socket import SocketTransport
    from ..transports.websocket import HostedConnection as HostedConnection
    from ..transports.websocket import Refusal as Refusal
    from ..transports.websocket import WebSocketTransport as WebSocketTransport

__all__ = ["keyring_for", "codec_for", "names_for", "resolver_for", "build_transport", "advertise_host_for_any",
           "advertised_address", "with_host", "websocket_side", "http_side", "not_running"]

MemberCheck = Callable[[str], bool]
"""``member_check(host)``: whether ``host`` is a known member's (the transports' admission)."""


def keyring_for(cfg: Config) -> Keyring | None:
    """Return the keyring of ``encryption_key`` and ``secondary_keys`` (sealing with
    ``cipher``), None without a key (and on memberlist's wire, whose transport holds the keys)."""
    if cfg.wire_protocol == "memberlist":
        return None
    keys = ([cfg.encryption_key] if cfg.encryption_key else []) + list(cfg.secondary_keys)
    if not keys:
        return None
    return Keyring(keys, max_sender_keys=cfg.sender_key_cache_size, cipher=str(cfg.cipher).lower())


def codec_for(cfg: Config, keyring: Keyring | None) -> PacketCodec:
    """Return the packet pipeline the configuration asks for, sealing with ``keyring``
    (on memberlist's wire, its profile: :class:`~gossip.memberlist.profile.MemberlistCodec`,
    which the engine uses the same way)."""
    if cfg.wire_protocol == "memberlist":
        from ..memberlist.profile import MemberlistCodec

        return MemberlistCodec(cfg.name, serf=cfg.serf,  # type: ignore[return-value]
                               max_states=cfg.max_members + 1)
    return PacketCodec(
        codec=get_codec(cfg.msg_codec), keyring=keyring, label=cfg.cluster_label,
        compressor=get_compressor(cfg.compressor), compress_min_size=cfg.compress_min_size,
        max_packet_size=cfg.tcp_max_packet_size,
        # memberlist's GossipVerifyIncoming / GossipVerifyOutgoing (the upgrade path)
        require_encryption=keyring is not None and cfg.require_encryption,
        encrypt=keyring is not None and cfg.encrypt_outgoing,
    )


def names_for(codec: object) -> Callable[[NodeID], str] | None:
    """Return ``name_of(node_id)`` for a wire that names members (memberlist's), else None."""
    if isinstance(codec, PacketCodec):
        return None
    from ..memberlist.profile import MemberlistCodec

    return codec.names.name_of if isinstance(codec, MemberlistCodec) else None


def resolver_for(cfg: Config) -> Callable[[str], list[str]]:
    """Return ``resolve(peer)``: the addresses to try for a peer given to ``join``.

    ``config.resolver`` (else the default one, IPv6 first if ``prefer_ipv6``) resolves names,
    ``srv+`` records and bare hosts (given ``default_port``). A node with its own transport
    may understand addresses no resolver does: a peer the resolver refuses is then passed on
    as given, for the transport to judge. The built-in transports take what the resolver
    returns, so its error (bad URL, unknown host) is the one to report.

    The returned function raises :class:`~gossip.errors.GossipError` for a peer that cannot
    be resolved.
    """

    def resolve(peer: str) -> list[str]:
        from ..resolver import DefaultResolver, resolve_peer  # dnspython: only when joining

        resolver = cfg.resolver or DefaultResolver(cfg.prefer_ipv6)
        try:
            return list(resolve_peer(peer, resolver, cfg.default_port))
        except GossipError:
            if cfg.transport is not None and ":" in peer:
                return [peer]
            raise

    return resolve


def needs_lookup(peer: str) -> bool:
    """True if resolving ``peer`` (as :func:`resolver_for`'s function does) may block on a name
    lookup: a hostname or an SRV name. IP literals, URLs and peers that do not parse (refused
    at once) never do."""
    from ..address import Address

    try:
        return Address.parse(peer, 1).kind not in ("ip", "ws", "http")
    except GossipError:
        return False


def build_transport(cfg: Config, name: str, member_check: MemberCheck,
                    codec: object = None) -> Transport:
    """Build the router over the socket and WebSocket transports (see :mod:`.transports.multi`),
    or on memberlist's wire its own transport (:mod:`gossip.memberlist.transport`).

    The side the node advertises listens; the other only dials, and starts on first use.

    Args:
        cfg: the validated configuration.
        name: the node's short id (thread names, logs).
        member_check: tells the transports which hosts are members' (their admission).
        codec: the engine's codec (on memberlist's wire: which peers take a CRC).

    Raises:
        TransportError: the WebSocket side cannot be set up (unreadable TLS files, a bad path).
    """
    if cfg.wire_protocol == "memberlist":
        return _memberlist_transport(cfg, name, codec)
    from ..transports.multi import MultiTransport

    http_dialer = lambda: _http(cfg, name, member_check, "")  # noqa: E731
    if cfg.socket_transport_enabled:
        return MultiTransport(socket=_sockets(cfg, name, member_check, True),
                              websocket=lambda: _websockets(cfg, name, member_check, ""),
                              http=http_dialer, name=name)
    if cfg.listens_on_http():
        try:
            http_side = _http(cfg, name, member_check, cfg.http_bind_addr)
        except (OSError, ValueError) as exc:  # unreadable TLS files
            raise TransportError(f"cannot set up the HTTP transport: {exc}") from exc
        return MultiTransport(socket=lambda: _sockets(cfg, name, member_check, False),
                              websocket=lambda: _websockets(cfg, name, member_check, ""),
                              http=http_side, socket_dial_only=True, name=name)
    try:
        ws = _websockets(cfg, name, member_check, cfg.websocket_bind_addr)
    except (OSError, ValueError) as exc:  # unreadable TLS files, a bad path
        raise TransportError(f"cannot set up the WebSocket transport: {exc}") from exc
    return MultiTransport(socket=lambda: _sockets(cfg, name, member_check, False), websocket=ws,
                          http=http_dialer, socket_dial_only=True, name=name)


def _memberlist_transport(cfg: Config, name: str, codec: object) -> Transport:
    from ..memberlist.profile import MemberlistCodec
    from ..memberlist.security import MLKeyring
    from ..memberlist.transport import MemberlistTransport

    keys = ([cfg.encryption_key] if cfg.encryption_key else []) + list(cfg.secondary_keys)
    crc_for = codec.wants_crc if isinstance(codec, MemberlistCodec) else None
    return MemberlistTransport(
        cfg.bind_addr, keyring=MLKeyring(keys) if keys else None, label=cfg.cluster_label,
        encryption_version=cfg.memberlist_encryption_version, crc_for=crc_for,
        compress=cfg.memberlist_compress, require_encryption=cfg.require_encryption,
        tcp_timeout=cfg.tcp_deadline + cfg.tcp_dial_timeout, name=name)


def _sockets(cfg: Config, name: str, member_check: MemberCheck, listen: bool) -> SocketTransport:
    from ..transports.limits import limits_from_config
    from ..transports.socket import SocketTransport

    return SocketTransport(
        cfg.bind_addr if listen else "127.0.0.1:0", limits=limits_from_config(cfg),
        member_check=member_check, advertise_addr=cfg.advertise_addr if listen else "",
        udp=not cfg.force_reliable_transport, max_udp_size=cfg.udp_max_packet_size,
        name=name, recv_buffer_size=cfg.udp_recv_buffer_size,
        send_buffer_size=cfg.udp_send_buffer_size, listen=listen,
        dialer=cfg.dialer, listener=cfg.listener,
    )


def _tls(cfg: Config, listens: bool) -> tuple[Any, Any]:
    """Return the ``(server, client)`` TLS contexts the configuration asks for (the server's
    None unless the transport ``listens``)."""
    server_ssl = cfg.tls_server_context if listens else None
    if listens and server_ssl is None and cfg.tls_cert_file:
        from ..transports.websocket.endpoints import server_tls_context

        server_ssl = server_tls_context(cfg.tls_cert_file, cfg.tls_key_file)
    client_ssl = cfg.tls_client_context
    if client_ssl is None and cfg.tls_ca_file:
        from ..transports.websocket.endpoints import client_tls_context

        client_ssl = client_tls_context(cfg.tls_ca_file)
    return server_ssl, client_ssl


def _websockets(cfg: Config, name: str, member_check: MemberCheck, bind: str) -> WebSocketTransport:
    # Imported here: websockets, ssl and http pull in several MiB that a node which never
    # meets a WebSocket peer should not pay for.
    from ..transports.limits import limits_from_config
    from ..transports.websocket import WebSocketTransport

    server_ssl, client_ssl = _tls(cfg, True)
    return WebSocketTransport(
        bind, limits=limits_from_config(cfg), member_check=member_check, path=cfg.websocket_path,
        advertise_addr=cfg.advertise_addr if not cfg.socket_transport_enabled and not cfg.listens_on_http() else "",
        name=name, server_ssl=server_ssl, client_ssl=client_ssl,
        bearer_token=cfg.bearer_token, allow_insecure=cfg.allow_insecure_websockets,
        handshake_timeout=cfg.websocket_handshake_timeout,
        ping_interval=cfg.websocket_ping_interval,
        allowed_origins=cfg.websocket_allowed_origins,
        dialer=cfg.dialer, listener=cfg.listener,
    )


def _http(cfg: Config, name: str, member_check: MemberCheck, bind: str) -> HTTPTransport:
    from ..transports.http.transport import HTTPTransport
    from ..transports.limits import limits_from_config

    server_ssl, client_ssl = _tls(cfg, bool(bind))
    return HTTPTransport(
        bind, path=cfg.http_path, limits=limits_from_config(cfg), member_check=member_check,
        advertise_addr=cfg.advertise_addr if cfg.listens_on_http() and bind == cfg.http_bind_addr else "",
        name=name, server_ssl=server_ssl, client_ssl=client_ssl, bearer_token=cfg.bearer_token,
        allow_insecure=cfg.allow_insecure_http, reply_wait=cfg.http_reply_wait,
        pool_size=cfg.http_pool_size, auth_window=cfg.http_auth_window,
        max_frames_per_body=cfg.http_max_frames_per_body,
        allowed_origins=tuple(cfg.websocket_allowed_origins), dialer=cfg.dialer, listener=cfg.listener,
    )


def http_side(transport: Transport | None) -> HTTPTransport | None:
    """Return the HTTP transport of a node (None for a custom transport without one).

    The facade hands it the POSTs its host's server carries (:mod:`gossip.contrib.http`).
    """
    from ..transports.http.transport import HTTPTransport
    from ..transports.multi import MultiTransport

    if isinstance(transport, MultiTransport):
        side = transport.http
        if isinstance(side, HTTPTransport):
            return side
    return transport if isinstance(transport, HTTPTransport) else None


# ---------------------------------------------------------------------------------- addresses


def advertise_host_for_any(cfg: Config) -> str:
    """Return the host to advertise in place of an unspecified bind host, or ``""``.

    Only for the built-in transport of a node with no ``advertise_addr`` that binds every
    interface (``0.0.0.0``, ``::``): the host of the interface that carries the default route.

    Raises:
        ConfigError: no interface carries a default route.
    """
    if cfg.advertise_addr or cfg.transport is not None:
        return ""
    bind = (cfg.bind_addr if cfg.socket_transport_enabled
            else cfg.http_bind_addr if cfg.listens_on_http() else cfg.websocket_bind_addr)
    host = bind.rpartition(":")[0].strip("[]")
    if not bind or host not in ("0.0.0.0", "::"):
        return ""
    from ..transports import interfaces

    return interfaces.advertise_host(host)


def advertised_address(cfg: Config, local_addr: str, any_host: str = "") -> str:
    """Return the address a node advertises, once its transport listens on ``local_addr``.

    ``advertise_addr`` if set; else ``local_addr`` with ``any_host`` as its host (see
    :func:`advertise_host_for_any`); else ``local_addr``, an unspecified host replaced by
    127.0.0.1 so that the address is dialable.
    """
    if any_host:
        return with_host(local_addr, any_host)
    if cfg.advertise_addr:
        return cfg.advertise_addr
    host, _, port = local_addr.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        return f"127.0.0.1:{port}"
    return local_addr


def with_host(addr: str, host: str) -> str:
    """Return ``addr`` (``ip:port`` or a ``ws(s)://``/``http(s)://`` URL) with its host replaced."""
    from ..address import format_host_port

    if "://" in addr:
        import urllib.parse

        parts = urllib.parse.urlsplit(addr)
        return parts._replace(netloc=format_host_port(host, parts.port or 0)).geturl()
    return format_host_port(host, int(addr.rpartition(":")[2]))


# ---------------------------------------------------------------------------------- hosting


def websocket_side(transport: Transport | None) -> WebSocketTransport | None:
    """Return the WebSocket transport of a node (None for a custom transport without one).

    The facade serves connections that its host's WebSocket server accepted through it.
    """
    from ..transports.multi import MultiTransport
    from ..transports.websocket import WebSocketTransport

    if isinstance(transport, MultiTransport):
        side = transport.websocket
        if isinstance(side, WebSocketTransport):
            return side
    return transport if isinstance(transport, WebSocketTransport) else None


def not_running() -> Refusal:
    """Return the refusal of a connection offered to a node that does not run (503)."""
    from ..transports.websocket import Refusal

    return Refusal(503, "gossip is not running")
