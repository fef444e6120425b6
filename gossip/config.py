"""Configuration of a gossip node: one dataclass, three presets, validation and env loading.

`Config` carries every field of paularlott/gossip's Config (snake_case, durations in float
seconds) plus the SWIM/Lifeguard knobs of hashicorp/memberlist that the failure detector needs.
Where the two libraries name the same concept, one field holds it and the other name is a
property alias:

======================================  =========================================================
paularlott name (field)                 SWIM / memberlist concept
======================================  =========================================================
``health_check_interval``               probe interval (alias ``probe_interval``)
``ping_timeout``                        probe (direct ack) timeout (alias ``probe_timeout``)
``state_sync_interval``                 push/pull anti-entropy interval (alias ``push_pull_interval``)
``enable_indirect_pings``               ping-req through ``indirect_checks`` helpers on/off
``suspect_retention_period``            hard cap on the suspicion timeout
``recovery_attempt_interval``           period of recovery probes of dead members and of re-joins
``dead_node_retention_period``          how long dead members are kept (and retried)
======================================  =========================================================

Two different periods are easy to confuse:

* ``gossip_interval`` (5 s, growing up to ``gossip_max_interval``) is paularlott's: the period at
  which *user* gossip callbacks (:meth:`gossip.Cluster.handle_gossip_func`) run.
* ``dissemination_interval`` (200 ms on LAN) is memberlist's ``GossipInterval``: the period of
  the protocol's own gossip rounds, which send queued membership updates to
  ``dissemination_fan_out`` random members.

A few paularlott fields configure its own detector, which SWIM replaces; they are accepted and
validated so existing configurations load, and documented as such on each field
(``health_check_sample_size``, ``activity_threshold_percent``, ``suspect_threshold``,
``suspect_attempt_interval``, ``refutation_threshold``, ``max_parallel_suspect_evaluations``,
``indirect_ping_multiplier``).

This module imports only :mod:`gossip.errors`, :mod:`gossip.address`, :mod:`gossip.tags` and
the standard library.
"""

from __future__ import annotations

import binascii
import dataclasses
import ipaddress
import logging
import math
import os
import re
import stat
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .address import is_http_url, is_loopback, is_websocket_url
from .errors import ConfigError
from .tags import check_tags, tags_size

__all__ = ["Config", "FrozenConfig", "default_config", "parse_duration", "format_duration", "ALIVE_OVERHEAD",
           "SECRET_FIELDS", "secret_file_warning"]

_MiB = 1024 * 1024
_log = logging.getLogger("gossip.config")

SECRET_FIELDS = frozenset({"encryption_key", "secondary_keys", "bearer_token"})
"""Fields whose values ``repr()`` and error messages never show (only their size)."""

ALIVE_OVERHEAD = 512
"""Bytes of a datagram reserved for an alive message's other fields (packet header, node id,
address, versions) next to its metadata: ``max_metadata_size`` leaves them room."""


@dataclasses.dataclass
class Config:
    """Every setting of a gossip node. Build one with :func:`default_config` or a preset.

    All durations are float seconds and all sizes are bytes. :meth:`validate` checks every
    field (``gossip.Cluster`` calls it); :meth:`from_env` reads ``GOSSIP_<FIELD>`` variables.
    """

    # -- identity -------------------------------------------------------------------------
    node_id: str = ""
    """UUID of this node; empty generates a new (time-ordered) one at start."""
    name: str = ""
    """This member's name on memberlist's wire (``wire_protocol="memberlist"``), unique in the
    cluster; its node id derives from it (:mod:`gossip.memberlist.identity`). Empty: the node
    id's text (``node_id``, or a generated one)."""
    wire_protocol: str = "gossip"
    """``"gossip"`` (this library's wire) or ``"memberlist"`` (hashicorp/memberlist's, byte for
    byte: joins Go memberlist programs and Serf agents; see docs/memberlist-wire.md, which
    lists what it does not carry)."""
    serf: bool = False
    """On memberlist's wire: speak as a Serf member (Serf's delegate versions, tags in
    ``Meta``). Needs ``wire_protocol="memberlist"``."""
    memberlist_compress: bool = False
    """On memberlist's wire: LZW-compress what we send when it gets smaller (memberlist's
    ``EnableCompression``). Compressed messages are always decoded."""
    memberlist_encryption_version: int = 1
    """On memberlist's wire: AES-GCM message format 0 (padded) or 1; memberlist speaks 1 from
    protocol version 2."""
    bind_addr: str = "127.0.0.1:7946"
    """``ip:port`` to listen on (UDP and TCP): an IP address, not a name. Port 0 picks a free
    port. Any address but loopback needs an ``encryption_key`` (or ``insecure=True``)."""
    advertise_addr: str = ""
    """Address other nodes use to reach us; empty means the bound address. A node bound to
    every interface (``0.0.0.0`` or ``::``) advertises the address of the interface that
    carries the default route, as memberlist does, and refuses to start if there is none."""
    application_version: str = ""
    """Free-form version of the embedding application, sent at join."""
    application_version_check: Callable[[str], bool] | None = None
    """Called with a joiner's application version; returning False refuses the join."""
    tags: Collection[str] = frozenset()
    """This node's tags (a set of words such as ``{"gpu", "zone=eu-1"}``): carried in its member
    record, so that members are found by tag (``Cluster.nodes_by_tag``) and tagged broadcasts
    reach only those that hold it (``Cluster.send_tagged``). At most 64 tags of 1..64 ASCII
    letters, digits and ``. _ : / = + -`` (a letter or digit first); they count against
    ``max_metadata_size``. Changed at run time with ``Cluster.set_tags``. ``GOSSIP_TAGS`` is a
    comma-separated list."""
    default_port: int = 7946
    """Port assumed for peer addresses given without one (memberlist's 7946, the port of
    ``bind_addr`` and of ``gossip agent`` by default too)."""
    cluster_label: str = ""
    """Label bound into every packet: nodes with different labels never talk (at most 255 bytes)."""

    # -- security and encoding ------------------------------------------------------------
    encryption_key: bytes | None = None
    """Primary encryption key (16, 24 or 32 bytes for AES-GCM, exactly 32 for
    XChaCha20-Poly1305: see ``cipher``; ``gossip keygen`` makes one); None disables encryption,
    which only a node on loopback, or one with ``insecure=True``, may do."""
    insecure: bool = False
    """Let a node listen on an address other than loopback without an ``encryption_key``.

    Anyone who can reach such a node can then join the cluster, read its members and their
    metadata, send it messages, and forge accusations, leaves and leader heartbeats: only a
    network where every host is trusted makes that safe. Without this flag such a node refuses
    to start; with it, it logs a warning at start. Loopback needs neither key nor flag."""
    secondary_keys: list[bytes] = dataclasses.field(default_factory=list)
    """More keys accepted for decryption (key rotation); require ``encryption_key``."""
    require_encryption: bool = True
    """With a key: refuse plain packets (memberlist's GossipVerifyIncoming). Turn off, with
    ``encrypt_outgoing``, to move a running plain cluster to encryption (docs/security.md)."""
    encrypt_outgoing: bool = True
    """With a key: encrypt every packet sent (memberlist's GossipVerifyOutgoing). Off, packets go
    out plain while encrypted ones are still accepted: the first step of an upgrade."""
    replay_window: float = 60.0
    """Protocol packets whose HLC stamp is further than this from our clock are refused as
    replays, and so are duplicates inside it (0 disables the check)."""
    replay_max_entries: int = 65536
    """Most (sender, stamp) pairs the replay guard remembers; past it, older stamps are refused."""
    cipher: str = "aes-gcm"
    """Cipher of packets and streams: ``"aes-gcm"`` (default; 16, 24 or 32-byte keys) or
    ``"xchacha20-poly1305"`` (32-byte keys only; needs PyNaCl, the extra
    ``gossip-cluster[xchacha]``). Every node of a cluster uses the same one: a packet sealed
    with the other is refused and counted (``bad_packets.CipherMismatch``)."""
    msg_codec: str = "msgpack"
    """Payload codec: ``"msgpack"`` (default) or ``"json"``."""
    compressor: Any = "lz4"
    """Payload compression: ``"lz4"``, ``"snappy"`` (Snappy's block format, as the Go library
    writes it; needs cramjam, the extra ``gossip-cluster[snappy]``), None (or ``"none"``), or an
    object implementing the :class:`gossip.compression.Compressor` protocol (``name``,
    ``compress``, ``decompress``). Snappy payloads are flagged as such, so a node reads lz4 and
    Snappy payloads whatever its own compressor (Snappy ones only with cramjam installed)."""
    compress_min_size: int = 256
    """Payloads at least this large are compressed (when it helps)."""
    max_metadata_size: int = 512
    """Upper bound of a node's encoded metadata, for local writes and for peers' metadata alike
    (a peer's larger metadata is dropped, its liveness kept)."""

    # -- pluggable parts ------------------------------------------------------------------
    transport: Any = None
    """A :class:`gossip.transports.Transport` to use instead of the built-in UDP/TCP one."""
    logger: Any = None
    """A ``logging.Logger``/``LoggerAdapter`` to log through; None uses ``gossip.*`` loggers."""
    resolver: Any = None
    """Resolver for peer host names and ``srv+`` names; None uses the system and dnspython."""
    prefer_ipv6: bool = False
    """Try IPv6 addresses first when a name resolves to both families."""
    dialer: Any = None
    """``dialer(host, port, timeout) -> socket``: makes the connected stream socket of every
    dial of the built-in transports (TCP, and the TCP under WebSocket), for overlay networks
    and tests (paularlott's ``DialHook``); it raises ``OSError`` when it cannot connect. None
    connects directly. See :data:`gossip.transports._sockets.DialHook`."""
    listener: Any = None
    """``listener(kind, host, port) -> socket``: makes the bound sockets the built-in transports
    listen on, ``kind`` being ``"tcp"``, ``"udp"``, ``"websocket"`` or ``"http"`` (paularlott's
    ``ListenHook``). None binds directly. See :data:`gossip.transports._sockets.ListenHook`."""

    # -- tracing (OpenTelemetry) ----------------------------------------------------------
    tracing: Any = False
    """OpenTelemetry spans of the protocol's steps (probes, indirect probes, suspicions with
    their provenance, refutations, push/pulls, joins, streams): False (the default) records
    none and never imports ``opentelemetry``; True uses the global tracer provider; a
    ``TracerProvider`` (any object with ``get_tracer``) uses that one. Needs the extra
    ``gossip-cluster[otel]``. See the manual's page on tracing."""

    # -- transport ------------------------------------------------------------------------
    socket_transport_enabled: bool = True
    """Listen on UDP/TCP at ``bind_addr`` and advertise that ``ip:port``.

    False opens no UDP or TCP listener at all: the node then listens on WebSocket
    (``websocket_bind_addr``, or connections its host serves through
    :meth:`gossip.Cluster.websocket_handler` or :mod:`gossip.contrib.asgi`) and advertises a
    ``ws://``/``wss://`` URL. Either way the node can dial peers of both kinds."""
    websocket_bind_addr: str = ""
    """``ip:port`` of the node's own WebSocket listener (port 0 picks one); empty for none.
    Needs ``socket_transport_enabled=False``: a node listens only on what it advertises."""
    websocket_path: str = "/gossip"
    """URL path of gossip WebSocket connections (own listener and hosted connections)."""
    websocket_handshake_timeout: float = 5.0
    """Deadline of a whole WebSocket dial (TCP, TLS and WebSocket handshakes), and for an
    accepted connection to complete its handshake."""
    websocket_ping_interval: float = 10.0
    """A WebSocket connection silent this long is pinged, and dropped if it stays silent twice
    as long (how a vanished peer's connection is noticed); 0 disables pings."""
    allow_insecure_websockets: bool = False
    """Permit plain ``ws://`` to peers that are not on loopback (``wss://`` is always allowed)."""
    bearer_token: str = ""
    """Shared secret of the WebSocket connections, never sent: every dial and every accepted
    connection prove they hold it with a mutual challenge-response (an HMAC of each side's
    nonce, the listener proving first, so a dial to a stranger shows it nothing usable; see
    :mod:`gossip.transports._wsauth`); empty disables both."""
    tls_server_context: Any = None
    """``ssl.SSLContext`` of the WebSocket listener, which then serves ``wss://``."""
    tls_client_context: Any = None
    """``ssl.SSLContext`` for dialing ``wss://`` peers; None verifies the server against the
    system's certificate authorities (or ``tls_ca_file``)."""
    tls_cert_file: str = ""
    """PEM certificate chain of the WebSocket listener (instead of ``tls_server_context``)."""
    tls_key_file: str = ""
    """PEM private key for ``tls_cert_file`` (empty if the key is in that file)."""
    tls_ca_file: str = ""
    """PEM certificate authorities that ``wss://`` peers are verified against (instead of the
    system's; ignored when ``tls_client_context`` is set, which is refused together with it)."""
    force_reliable_transport: bool = False
    """Send everything over TCP, never UDP."""
    tcp_dial_timeout: float = 2.0
    """Deadline for establishing a TCP connection."""
    tcp_deadline: float = 2.0
    """Deadline for one TCP read or write, and for a push/pull or request/reply exchange."""
    udp_deadline: float = 2.0
    """Deadline for one UDP write."""
    udp_max_packet_size: int = 1400
    """Largest packet sent by UDP; anything larger goes over TCP automatically."""
    tcp_max_packet_size: int = 4 * _MiB
    """Largest packet accepted or sent over TCP."""
    stream_max_packet_size: int = 8 * _MiB
    """Largest frame on a node-to-node stream (bigger writes are split into frames this big)."""
    max_concurrent_streams: int = 64
    """Accepted streams whose handlers run at once (one pool thread each); more are refused."""
    stream_open_timeout: float = 5.0
    """Deadline for opening a stream: dial, OPEN, ACCEPT and HELLO (either side)."""
    stream_timeout: float = 60.0
    """Default per-operation timeout of a stream's reads and writes (0: wait forever);
    :meth:`gossip.Stream.settimeout` changes it per stream."""
    send_timeout: float = 5.0
    """How long a reliable send waits for room while the peer's connection buffer is full.

    A reliable send never drops what it accepted: it waits for the peer to read, up to this
    long, and then raises :class:`~gossip.errors.SendQueueFull` (nothing was queued). 0 raises
    at once when the buffer is full."""
    best_effort_full_policy: str = "drop"
    """What a best-effort datagram does when the socket's send buffer is full (or the send
    fails): ``"drop"`` it (counted as ``dropped.udp_send_buffer_full`` or ``send_errors.*`` in
    :meth:`gossip.Cluster.stats`), or ``"raise"`` :class:`~gossip.errors.SendQueueFull` (or the
    error). Datagrams never wait. A best-effort send too big for a datagram goes over a
    connection and is then paced like a reliable one."""
    connection_buffer_size: int = 4 * _MiB
    """Bytes queued per connection before reliable senders wait for the peer to read."""
    udp_recv_buffer_size: int = 4 * _MiB
    """``SO_RCVBUF`` asked for the UDP socket (the kernel caps it at ``net.core.rmem_max``;
    ``stats()["transport.udp_rcvbuf"]`` shows what was granted); 0 keeps the system default."""
    udp_send_buffer_size: int = 1 * _MiB
    """``SO_SNDBUF`` asked for the UDP socket (capped at ``net.core.wmem_max``); 0 keeps the
    system default."""
    idle_timeout: float = 60.0
    """Connections unused this long are closed (pooled, accepted and idle request ones)."""
    tcp_max_connections: int = 1024
    """Accepted connections held at once; more are closed at once (counted)."""
    tcp_max_connections_per_source: int = 64
    """Accepted connections held at once from one remote IP; more are closed (counted)."""
    tcp_preauth_max_frame_size: int = 1 * _MiB
    """Largest frame a new connection may announce before one of its frames was accepted."""
    tcp_preauth_buffer_limit: int = 64 * _MiB
    """Bytes all not-yet-accepted connections together may hold buffered, on TCP and WebSocket
    alike: TCP measures what each holds and closes the largest holder when over; WebSocket
    reserves each one's worst case (``tcp_preauth_max_frame_size``), so at most
    ``tcp_preauth_buffer_limit // tcp_preauth_max_frame_size`` of them are held."""
    tcp_frame_timeout: float = 10.0
    """A frame (a WebSocket message) must arrive whole within this long of its first byte, on
    TCP and WebSocket alike: slow trickles are cut (counted ``transport.tcp_frame_timeouts`` /
    ``transport.ws_frame_timeouts``). Time a connection spends paused by this node's full
    receive lanes does not count."""

    # -- admission of connections (UDP/TCP and WebSocket alike) ----------------------------
    # A connection is *trusted* once the engine accepted one of its frames (or, on WebSocket
    # with a bearer token, once it proved the token); until then the bounds below apply.
    preauth_timeout: float = 10.0
    """An accepted connection must become trusted within this long, or it is closed (counted
    ``transport.tcp_preauth_timeouts`` / ``transport.ws_preauth_timeouts``). Frames the engine
    refuses do not count."""
    max_rejected_frames: int = 16
    """An accepted connection is closed once the engine has refused this many of its frames
    (counted ``transport.tcp_rejected_frames_closed`` / ``ws_rejected_frames_closed``)."""
    max_untrusted_connections_per_source: int = 8
    """Accepted connections not yet trusted held at once per remote IP (WebSocket handshakes
    under way included); hosts of known members are exempt. All of them together are bounded
    by ``tcp_preauth_buffer_limit // tcp_preauth_max_frame_size``."""
    tcp_preauth_buffer_per_source: int = 8 * _MiB
    """Bytes the untrusted connections of one remote IP may hold buffered; beyond it (or beyond
    ``tcp_preauth_buffer_limit`` for all), the TCP connection holding the most is closed
    (WebSocket reserves each one's worst case, as for ``tcp_preauth_buffer_limit``)."""
    reserved_member_connections: int = 64
    """Of ``tcp_max_connections``, slots that only the hosts of known members may take, so
    that strangers filling the rest never lock members out."""
    max_member_dials: int = 1024
    """Connections this node dials to members' hosts held at once (per transport)."""
    max_member_dials_per_host: int = 256
    """The same, per host."""
    max_other_dials: int = 64
    """Connections this node dials to hosts that are not members' (seeds, joiners) held at
    once, apart from the members' budget, so addresses from strangers cannot use it up."""
    max_other_dials_per_host: int = 4
    """The same, per host."""
    max_opening_streams_per_source: int = 4
    """Accepted stream connections from one remote IP still opening (before their OPEN proved
    authentic) at once; more are closed at once (counted ``streams.refused_per_source``). This
    node's own openings to one host wait for room within the same number, so a member whose
    threads open many streams at once is not cut by a peer with the same setting."""
    websocket_allowed_origins: list[str] = dataclasses.field(default_factory=list)
    """``Origin`` values (``scheme://host[:port]``) whose WebSocket handshakes are accepted.
    A handshake that carries an ``Origin`` header (every browser sends one) or a cross-site
    ``Sec-Fetch-Site`` is refused with 403 unless its origin is listed (counted
    ``transport.ws_origin_refused``): a web page must not speak gossip to a node."""
    websocket_host_max_size: int = 0
    """The largest message the host's WebSocket server accepts, for a node whose connections
    the host serves (uvicorn ``ws_max_size``, websockets ``max_size``): without a
    ``bearer_token``, ``validate()`` requires it to be stated and at most
    ``tcp_preauth_max_frame_size``, since the host buffers a stranger's message whole before
    the node sees it. 0: not stated."""

    # -- HTTP transport (gossip frames as POSTs to http:// and https:// URLs) ---------------
    http_bind_addr: str = ""
    """``ip:port`` of the node's own HTTP listener (port 0 picks one); empty for none. Needs
    ``socket_transport_enabled=False`` and no ``websocket_bind_addr``: the node then listens on
    HTTP only and advertises ``http://ip:port`` + ``http_path`` (or ``advertise_addr``). A node
    whose host's server carries its POSTs (:mod:`gossip.contrib.http`) sets no listener and
    advertises the ``http(s)://`` URL the host serves. Every node dials ``http(s)://`` peers."""
    http_path: str = "/gossip"
    """URL path that gossip POSTs go to (own listener and a host's server alike)."""
    http_reply_wait: float = 10.0
    """The longest this node holds a POST's response open for its engine's answers (an ack, a
    join reply, the reply to a request): a request over HTTP waits at most this long."""
    http_pool_size: int = 4
    """Idle keep-alive connections kept per HTTP peer for requests (besides the one its queued
    packets are POSTed on)."""
    http_auth_window: float = 60.0
    """With a ``bearer_token``: how far (seconds) the time in a POST's proof may be from this
    node's clock; nonces are remembered this long to refuse replays."""
    http_max_frames_per_body: int = 1024
    """Frames one POST (or its response) may carry; a body with more is refused (400)."""
    allow_insecure_http: bool = False
    """Permit plain ``http://`` to peers that are not on loopback (``https://`` is always allowed)."""

    # -- user gossip, history and queues --------------------------------------------------
    gossip_interval: float = 5.0
    """Period of user gossip callbacks (paularlott's GossipInterval); grows when they are slow."""
    gossip_max_interval: float = 20.0
    """Upper bound the user gossip period may grow to."""
    msg_history_gc_interval: float = 1.0
    """How often expired entries leave the duplicate-suppression history."""
    msg_history_max_age: float = 30.0
    """How long a (sender, message id) pair is remembered to suppress duplicates."""
    msg_history_shard_count: int = 16
    """Shards of the message history (a power of two)."""
    msg_history_max_entries: int = 65536
    """Most (sender, message id) pairs remembered; past it the oldest are forgotten (counted)."""
    node_shard_count: int = 4
    """Not used: paularlott shards its node table, this library's is one dict under the core's
    lock. Accepted (a power of two) so that paularlott configurations load."""
    num_send_workers: int = 8
    """Most threads for sends that may have to dial a peer (joins, push/pulls, relays over TCP),
    so that a dial that hangs never delays a datagram. One runs from the start; another starts
    when a send is queued while none is idle."""
    send_queue_size: int = 512
    """Capacity of the send workers' queue; when full the oldest packet is dropped (counted
    as ``dropped.send_queue_full``). User sends do not go through it: they run on the caller's
    thread with back-pressure (see :attr:`send_timeout`)."""
    num_incoming_workers: int = 8
    """User lanes: threads running user message handlers. Packets from one source always go to
    the same lane, so they are handled in the order they arrived. A lane's thread starts with
    its first packet (a node that gets user messages from few peers runs few)."""
    incoming_packet_queue_depth: int = 4096
    """Packets one user lane holds. A datagram finding its lane full is dropped (counted as
    ``dropped.incoming_queue_full``); a frame from a connection is never dropped: reading that
    connection pauses until the lane drains, which slows the sender down. (paularlott's 512
    is too few for one fast sender's bursts.)"""
    async_handler_limit: int = 1024
    """Messages of one type that an asyncio handler (:mod:`gossip.aio`) holds at once: waiting
    for its loop, or running there. Past it, a datagram is dropped (counted as
    ``dropped.async_handler_full``) and a message that came over a connection waits on its
    user lane until one ends (counted as ``async.handler_waits``), which pauses that connection
    and so the sender, as a slow blocking handler does."""
    incoming_queue_max_bytes: int = 32 * _MiB
    """Bytes of user packets all lanes together hold (split evenly); beyond it, as when a lane
    is full."""

    # -- failure detection (paularlott names that map onto SWIM) ---------------------------
    health_check_interval: float = 1.0
    """SWIM probe interval: one member is probed per interval (alias ``probe_interval``)."""
    ping_timeout: float = 0.5
    """Time to wait for a direct ack before asking helpers (alias ``probe_timeout``)."""
    adaptive_ping_timeout: bool = False
    """Give each member its own direct-probe timeout, from its recent round trips: the
    :attr:`adaptive_ping_percentile` of its last :attr:`adaptive_ping_samples` times
    :attr:`adaptive_ping_factor`, clamped between :attr:`ping_timeout` and
    :attr:`ping_timeout_max` (Lifeguard's awareness still stretches it). A member behind a
    steady slow link is then not probed indirectly at every round; a fast one keeps
    ``ping_timeout``, so its crash is found as fast as before."""
    ping_timeout_max: float = 0.0
    """The longest adaptive direct-probe timeout; 0 is halfway between :attr:`ping_timeout`
    and :attr:`health_check_interval` (the rest of the round is left to the helpers). Must be
    at least ``ping_timeout`` and shorter than ``health_check_interval``."""
    adaptive_ping_percentile: float = 0.9
    """The quantile (0.5..1) of a member's recent round trips its adaptive timeout starts from."""
    adaptive_ping_factor: float = 1.5
    """How far above that quantile the adaptive timeout lies (1..10)."""
    adaptive_ping_samples: int = 16
    """Round trips kept per member for its adaptive timeout (4..1024; memory per member)."""
    enable_indirect_pings: bool = True
    """Ask ``indirect_checks`` helpers to probe a member whose direct ack is late."""
    suspect_retention_period: float = 300.0
    """Hard cap on how long a member may stay suspect before it is declared dead."""
    recovery_attempt_interval: float = 10.0
    """Period of recovery probes to dead members and of re-joins when isolated."""
    dead_node_retention_period: float = 4 * 3600.0
    """How long dead members stay in the table (and are retried) before being forgotten."""
    state_sync_interval: float = 30.0
    """Push/pull anti-entropy interval (alias ``push_pull_interval``); scaled up above 32 nodes."""
    fan_out_multiplier: float = 1.0
    """Scales :meth:`gossip.Cluster.calc_fan_out` (user broadcast fan-out)."""
    state_exchange_multiplier: float = 0.8
    """Scales :meth:`gossip.Cluster.calc_payload_size`."""
    ttl_multiplier: float = 1.0
    """Scales the hop limit of user broadcasts."""
    broadcast_redundancy: int = 2
    """Each hop of a user broadcast goes to this many times ``calc_fan_out()`` peers.

    1 is paularlott/gossip's behaviour, where (measured with its formulas) 2-10 % of broadcasts
    miss at least one node in clusters of 32 to 1,000; 2 reaches every node in practice, at
    twice the messages (still fewer than memberlist's 4-16 retransmissions per broadcast)."""
    # paularlott fields that configure its own detector; SWIM replaces it (see module doc).
    health_check_sample_size: int = 7
    """Compatibility only: SWIM probes one member per interval, round robin."""
    activity_threshold_percent: float = 0.5
    """Compatibility only: SWIM always probes; any packet from a member is not proof enough."""
    suspect_threshold: int = 3
    """Compatibility only: SWIM suspects after one failed probe round (direct + indirect)."""
    suspect_attempt_interval: float = 5.0
    """Compatibility only: suspicion ends by its Lifeguard timer, not by periodic votes."""
    refutation_threshold: int = 2
    """Compatibility only: only the suspect itself refutes, by raising its incarnation."""
    max_parallel_suspect_evaluations: int = 4
    """Compatibility only: suspicion timers need no evaluation workers."""
    indirect_ping_multiplier: float = 0.7
    """Compatibility only: the number of helpers is ``indirect_checks``."""

    # -- SWIM / Lifeguard knobs (memberlist names) ----------------------------------------
    indirect_checks: int = 3
    """Helpers asked to ping a member whose direct ack is late (SWIM's k)."""
    suspicion_mult: int = 4
    """Minimum suspicion timeout = suspicion_mult * max(1, log10 N) * probe interval."""
    suspicion_max_timeout_mult: int = 6
    """Suspicion starts at this multiple of the minimum and shrinks with confirmations."""
    retransmit_mult: int = 4
    """Each update is sent retransmit_mult * ceil(log10(N + 1)) times."""
    awareness_max_multiplier: int = 8
    """Lifeguard: a degraded node stretches its probe interval/timeout up to this factor."""
    dissemination_interval: float = 0.2
    """Period of protocol gossip rounds (memberlist's GossipInterval)."""
    dissemination_fan_out: int = 3
    """Members each protocol gossip round sends to (memberlist's GossipNodes)."""
    gossip_to_the_dead_time: float = 30.0
    """Dead members keep receiving gossip this long, so a falsely declared one can refute."""
    dead_node_reclaim_time: float = 0.0
    """A dead or left node's id may move to a new address after this long (0: at once)."""
    broadcast_queue_size: int = 4096
    """Bound of the membership update queue; the most-sent updates are dropped first."""
    max_members: int = 16384
    """Most members in the table, every state included. A newcomer beyond it takes the place of
    the longest-dead member, or is refused (counted)."""
    max_members_per_message: int = 1024
    """Most new members one unsolicited message may introduce (a reply to our own join or
    push/pull is bounded by ``max_members`` only)."""
    max_members_per_source: int = 1024
    """Most members one unsolicited source host may have named that have not shown themselves yet
    (no packet from them, no answer to a probe); a member introducing itself does not count."""
    max_incarnation_jump: int = 4096
    """Most a single claim may raise a member's incarnation above what we know of it (our own
    included). Claims further ahead are refused (counted): a forged accusation cannot push a
    node to the top of the wire's u32 range."""
    max_pending_relays: int = 1024
    """Most ping-req probes this node runs for others at once (each one pings a member)."""
    lifeguard_enabled: bool = True
    """Lifeguard extensions (awareness, dynamic suspicion, nacks, buddy); off gives plain SWIM."""
    tcp_pings: bool = True
    """Also try a ping over TCP when UDP probes fail (tells UDP-blocked from dead)."""
    leave_timeout: float = 5.0
    """How long :meth:`gossip.Cluster.leave` waits for the leave to be sent."""
    leave_attempts: int = 4
    """Times a leaving node tells each member, until the member acknowledges (LAN: within 0.6 s)."""
    join_timeout: float = 10.0
    """How long :meth:`gossip.Cluster.join` waits for the peers' answers (in the background:
    how long each attempt waits)."""
    join_retry_interval: float = 1.0
    """A join in the background (``join(peers, background=True)``) waits up to this long
    before its second attempt, then twice as long before each next one (jittered: each wait
    is drawn from the upper half of its bound), up to :attr:`join_retry_max_interval`."""
    join_retry_max_interval: float = 60.0
    """The longest wait between two attempts of a join in the background."""

    # -- insight: provenance, flaps, partitions (gossip.protocol.insight) -----------------
    suspicion_history_size: int = 8
    """Suspicion episodes kept per member for :meth:`gossip.Cluster.explain` (oldest dropped)."""
    flap_window: float = 120.0
    """Sliding window of a member's flap score (its state changes within it)."""
    flap_threshold: int = 6
    """Flap score at which a member is flapping and ``MemberFlapping`` fires (2..64)."""
    flap_damping: bool = False
    """Hold a flapping member's return to alive: users see it suspect until it has stayed alive
    for ``flap_damping_hold`` (the protocol itself is unaffected; see gossip.protocol.flap)."""
    flap_damping_hold: float = 60.0
    """How long a damped member must stay alive before users see it alive again."""
    partition_threshold: float = 0.3
    """Share of the live members whose loss within ``partition_window`` suspects a partition."""
    partition_window: float = 10.0
    """Window within which that share must be lost (suspect or dead) for ``PartitionSuspected``."""
    partition_min_members: int = 3
    """Fewer lost members than this are never a partition; a partition heals when fewer than
    this many of its members are still lost."""

    # -- forged claims and strangers: bounds of the protocol core and the packet layer -----
    incarnation_budget: int = 4096
    """Most this node's own incarnation may rise, in answer to what others say of it, within
    ``incarnation_budget_window`` (a token bucket that refills evenly). One received message
    raises it once at most; an accusation beyond the budget is refused (counted as
    ``core.refused_incarnation_budget``), so forged accusations cannot drive a node to the top
    of the u32 range, where it could no longer refute. The answer to its own join and its own
    metadata changes are not counted."""
    incarnation_budget_window: float = 60.0
    """The window of ``incarnation_budget``: the bucket refills completely in this time."""
    max_clock_drift: float = 60.0
    """Seconds a peer's HLC stamp (metadata stamps) may lie ahead of this node's clock. A
    metadata stamp further ahead is refused (``core.refused_metadata_stamp``): otherwise one
    forged stamp near 2**64 would outrank every later write of the real member."""
    max_unconfirmed_share: float = 0.5
    """Share of ``max_members`` that members named only by others (not yet shown to exist:
    no packet from them, no answer to a probe) may fill. Beyond it they are refused
    (``core.refused_unconfirmed_full``); and when the table is full, a member that shows itself
    (a join, its own packet) takes the place of the oldest unconfirmed one, so strangers can
    never keep real joins out."""
    sender_key_cache_size: int = 4096
    """Per-sender packet keys (derived from each keyring key) kept ready; a sender beyond it
    has its key derived again when its next packet arrives."""

    # -- reconnect: re-merging after long partitions (gossip.protocol.reconnect) ----------
    reconnect_interval: float = 30.0
    """Period at which a node may retry one forgotten member or seed (Serf's
    ``ReconnectInterval``): after a split longer than ``dead_node_retention_period`` each side has
    forgotten the other, and only this brings them together again once the network heals.
    0 turns it off."""
    reconnect_timeout: float = 24 * 3600.0
    """How long the address of a member forgotten while dead is retried (Serf's
    ``ReconnectTimeout``). Only members that showed themselves (spoke from their own address or
    answered a probe) are retried, and the seeds this node joined through."""
    max_reconnect_targets: int = 1024
    """Most forgotten addresses kept for retrying (the longest forgotten are dropped first)."""

    # -- multicast discovery (gossip.engine.discovery) -----------------------------------
    discovery: str = ""
    """``"multicast"``: announce this node on :attr:`multicast_group` and join the members of
    its cluster (same label, same key) heard there, without seeds; ``""``: seeds only. A
    ``mcast://group:port`` seed given to :meth:`gossip.Cluster.join` does the same."""
    multicast_group: str = "239.192.79.46"
    """The IPv4 multicast group of discovery (239.0.0.0/8 is for private use)."""
    multicast_port: int = 7947
    """The UDP port of the multicast group (0: any free port; tests then read it back)."""
    multicast_interval: float = 5.0
    """Seconds between two announcements of this node (jittered by up to a quarter)."""
    multicast_ttl: int = 1
    """Time to live of the announcements: 1 stays on the local network, 0 on this host."""
    multicast_interface: str = ""
    """IPv4 address of the interface to announce and listen on (``""``: the host of
    ``bind_addr`` if it names one, else the system's choice)."""
    multicast_max_peers: int = 256
    """Addresses heard by discovery that are remembered (each is joined at most once per
    :attr:`multicast_interval`); the oldest are forgotten first."""

    # -- the HTTP API and dashboard (gossip.httpapi, gossip agent --http) -------------------
    # Bounds of the agent's HTTP server and event streams; the node itself never reads them.
    http_read_timeout: float = 10.0
    """A client of the HTTP API must send its whole request (line, headers and body) within
    this long of connecting, or the connection is closed (counted as ``http.read_timeouts``)."""
    http_max_connections: int = 64
    """Connections the HTTP API serves at once, event streams included (one thread each);
    beyond it a connection is answered 503 and closed (``http.refused_busy``)."""
    http_max_event_streams: int = 16
    """Event streams (``/api/events``, the dashboard's) open at once; more are answered 503
    (``http.refused_event_streams``). Less than ``http_max_connections``, so that the API
    still answers while every stream is taken."""
    http_event_queue_bytes: int = 1 * _MiB
    """Bytes of events held for one event-stream client; when a slow client is this far
    behind its oldest events are dropped (``http.events_dropped``)."""
    http_event_payload_bytes: int = 4096
    """Largest message payload shown whole in a ``message`` event (as JSON); a larger one is
    replaced by its size and a prefix (``http.payloads_truncated``)."""

    # -- aliases ---------------------------------------------------------------------------
    @property
    def probe_interval(self) -> float:
        """SWIM name of :attr:`health_check_interval`."""
        return self.health_check_interval

    @probe_interval.setter
    def probe_interval(self, value: float) -> None:
        self.health_check_interval = value

    @property
    def effective_ping_timeout_max(self) -> float:
        """:attr:`ping_timeout_max`, or for 0 halfway between ``ping_timeout`` and
        ``health_check_interval``."""
        if self.ping_timeout_max > 0:
            return self.ping_timeout_max
        return (self.ping_timeout + self.health_check_interval) / 2

    @property
    def probe_timeout(self) -> float:
        """SWIM name of :attr:`ping_timeout`."""
        return self.ping_timeout

    @probe_timeout.setter
    def probe_timeout(self, value: float) -> None:
        self.ping_timeout = value

    @property
    def push_pull_interval(self) -> float:
        """memberlist name of :attr:`state_sync_interval`."""
        return self.state_sync_interval

    @push_pull_interval.setter
    def push_pull_interval(self, value: float) -> None:
        self.state_sync_interval = value

    def __repr__(self) -> str:
        """Every field, secrets (:data:`SECRET_FIELDS`) shown only by their size."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            text = _redacted(value) if f.name in SECRET_FIELDS else repr(value)
            parts.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def lan(cls, **overrides: Any) -> Config:
        """Return the LAN preset (memberlist's DefaultLANConfig timings); the default.

        probe 1 s / 500 ms, 3 indirect checks, retransmit 4, suspicion 4 (max x6),
        gossip rounds of 3 members every 200 ms, push/pull 30 s, gossip to the dead 30 s.
        """
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> Config:
        """Return the WAN preset (memberlist's DefaultWANConfig timings).

        probe 5 s / 3 s, 3 indirect checks, retransmit 4, suspicion 6 (max x6),
        gossip rounds of 4 members every 500 ms, push/pull 60 s, gossip to the dead 60 s,
        TCP deadline 30 s; flap window 10 min, partition window 60 s.
        """
        base: dict[str, Any] = dict(
            health_check_interval=5.0,
            ping_timeout=3.0,
            suspicion_mult=6,
            state_sync_interval=60.0,
            dissemination_interval=0.5,
            dissemination_fan_out=4,
            gossip_to_the_dead_time=60.0,
            tcp_deadline=30.0,
            tcp_dial_timeout=10.0,
            recovery_attempt_interval=30.0,
            flap_window=600.0,
            partition_window=60.0,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def local(cls, **overrides: Any) -> Config:
        """Return the loopback preset (memberlist's DefaultLocalConfig timings).

        probe 1 s / 200 ms, 1 indirect check, retransmit 2, suspicion 3 (max x6),
        gossip rounds of 3 members every 100 ms, push/pull 15 s, gossip to the dead 15 s,
        TCP deadline 1 s.
        """
        base: dict[str, Any] = dict(
            health_check_interval=1.0,
            ping_timeout=0.2,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            state_sync_interval=15.0,
            dissemination_interval=0.1,
            dissemination_fan_out=3,
            gossip_to_the_dead_time=15.0,
            tcp_deadline=1.0,
            tcp_dial_timeout=1.0,
            recovery_attempt_interval=5.0,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Config:
        """Return the preset called ``"lan"``, ``"wan"`` or ``"local"``."""
        presets = {"lan": cls.lan, "wan": cls.wan, "local": cls.local}
        try:
            factory = presets[name.lower()]
        except KeyError:
            raise ConfigError("preset", f"unknown preset {name!r}; expected lan, wan or local") from None
        return factory(**overrides)

    def frozen(self) -> FrozenConfig:
        """Return a read-only copy (see :class:`FrozenConfig`)."""
        out = object.__new__(FrozenConfig)
        out.__dict__.update(self.copy().__dict__)
        return out

    def copy(self, **changes: Any) -> Config:
        """Return a copy with some fields changed (aliases accepted)."""
        cfg = dataclasses.replace(self)
        cfg.secondary_keys = list(self.secondary_keys)
        cfg.websocket_allowed_origins = list(self.websocket_allowed_origins)
        if isinstance(self.tags, (set, list)):
            cfg.tags = frozenset(self.tags)
        for name, value in changes.items():
            if name not in _FIELD_NAMES and name not in _ALIASES:
                raise ConfigError(name, "no such Config field")
            setattr(cfg, name, value)
        return cfg

    # -- validation --------------------------------------------------------------------------
    def _validate_wire(self) -> None:
        """memberlist's wire carries less than ours: refuse what it cannot carry."""
        if self.wire_protocol != "memberlist":
            if self.serf:
                raise ConfigError("serf", "Serf membership needs wire_protocol='memberlist'")
            return
        if not self.socket_transport_enabled or self.websocket_bind_addr or self.http_bind_addr:
            raise ConfigError("wire_protocol", "memberlist's wire runs on UDP and TCP only, not "
                              "WebSocket or HTTP (socket_transport_enabled=True, no "
                              "websocket_bind_addr or http_bind_addr)")
        if self.transport is not None:
            raise ConfigError("wire_protocol", "memberlist's wire brings its own transport; "
                              "a custom transport is not supported on it")
        if self.force_reliable_transport:
            raise ConfigError("force_reliable_transport",
                              "memberlist's wire sends probes and gossip as UDP datagrams")
        if len(self.cluster_label.encode("utf-8")) > 255:
            raise ConfigError("cluster_label", "a memberlist label is at most 255 bytes")
        if str(self.cipher).lower() != "aes-gcm":
            raise ConfigError("cipher", "memberlist's wire seals with AES-GCM only")
        if str(self.compressor).lower() == "snappy":
            raise ConfigError("compressor", "memberlist's wire compresses with LZW "
                              "(memberlist_compress), not Snappy")
        if self.tags:
            raise ConfigError("tags", "memberlist's wire carries no tags (with serf=True, Serf's "
                              "tags travel in the member's metadata)")

    def validate(self) -> None:
        """Check every field; raise :class:`~gossip.errors.ConfigError` naming the first bad one.

        Raises:
            ConfigError: a field is of the wrong type, out of range, or contradicts another.
        """
        self._validate_cipher_keys()  # first: the per-field rule would speak of AES only
        for f in dataclasses.fields(self):
            rule = _RULES.get(f.name)
            if rule is not None:
                rule(f.name, getattr(self, f.name))
        self._validate_relations()

    def _validate_relations(self) -> None:
        self._validate_wire()
        if self.ping_timeout >= self.health_check_interval:
            raise ConfigError(
                "ping_timeout",
                f"must be shorter than health_check_interval ({self.health_check_interval}s), "
                f"got {self.ping_timeout}s",
            )
        if self.gossip_max_interval < self.gossip_interval:
            raise ConfigError(
                "gossip_max_interval",
                f"must be >= gossip_interval ({self.gossip_interval}s), got {self.gossip_max_interval}s",
            )
        for hook in ("dialer", "listener"):
            if getattr(self, hook) is not None and self.transport is not None:
                raise ConfigError(hook, "is used by the built-in transports; a custom transport "
                                        "makes its own sockets")
        if self.ping_timeout_max and not (
                self.ping_timeout <= self.ping_timeout_max < self.health_check_interval):
            raise ConfigError(
                "ping_timeout_max",
                f"must be 0, or >= ping_timeout ({self.ping_timeout}s) and shorter than "
                f"health_check_interval ({self.health_check_interval}s), got {self.ping_timeout_max}s",
            )
        if self.join_retry_max_interval < self.join_retry_interval:
            raise ConfigError(
                "join_retry_max_interval",
                f"must be >= join_retry_interval ({self.join_retry_interval}s), "
                f"got {self.join_retry_max_interval}s",
            )
        if self.udp_max_packet_size > self.tcp_max_packet_size:
            raise ConfigError(
                "udp_max_packet_size",
                f"must be <= tcp_max_packet_size ({self.tcp_max_packet_size}), got {self.udp_max_packet_size}",
            )
        if self.tcp_max_packet_size > self.stream_max_packet_size:
            raise ConfigError(
                "tcp_max_packet_size",
                f"must be <= stream_max_packet_size ({self.stream_max_packet_size}), "
                f"got {self.tcp_max_packet_size}",
            )
        if self.secondary_keys and not self.encryption_key:
            raise ConfigError("secondary_keys", "need an encryption_key (the primary) as well")
        self._validate_cipher()
        self._validate_http()
        self._validate_websocket()
        self._validate_admission()
        if self.max_metadata_size > self.udp_max_packet_size - ALIVE_OVERHEAD:
            raise ConfigError(
                "max_metadata_size",
                f"must be at most udp_max_packet_size - {ALIVE_OVERHEAD} "
                f"({self.udp_max_packet_size - ALIVE_OVERHEAD}: an alive message with it must fit "
                f"one datagram), got {self.max_metadata_size}",
            )
        if tags_size(self.tags) > self.max_metadata_size:
            raise ConfigError(
                "tags", f"take {tags_size(self.tags)} bytes encoded, over max_metadata_size "
                        f"({self.max_metadata_size}), which they count against")
        if self.msg_history_max_entries < self.msg_history_shard_count:
            raise ConfigError(
                "msg_history_max_entries",
                f"must be >= msg_history_shard_count ({self.msg_history_shard_count}), "
                f"got {self.msg_history_max_entries}",
            )
        if self.max_members_per_message > self.max_members:
            raise ConfigError(
                "max_members_per_message",
                f"must be <= max_members ({self.max_members}), got {self.max_members_per_message}",
            )
        self._validate_door()
        if self.http_max_event_streams >= self.http_max_connections:
            raise ConfigError(
                "http_max_event_streams",
                f"must be less than http_max_connections ({self.http_max_connections}): event "
                f"streams hold their connection, and the API must keep one free; got "
                f"{self.http_max_event_streams}")
        if self.http_event_payload_bytes * 4 > self.http_event_queue_bytes:
            raise ConfigError(
                "http_event_payload_bytes",
                f"must be at most a quarter of http_event_queue_bytes ({self.http_event_queue_bytes}), "
                f"got {self.http_event_payload_bytes}")
        if self.encryption_key and self.require_encryption and not self.encrypt_outgoing:
            raise ConfigError(
                "encrypt_outgoing",
                "is False while require_encryption is True: this node would refuse the plain "
                "packets it sends (upgrade order: both off, then encrypt_outgoing, then "
                "require_encryption)",
            )

    def _validate_cipher_keys(self) -> None:
        """XChaCha20-Poly1305 takes 32-byte keys only."""
        if not isinstance(self.cipher, str) or self.cipher.lower() != "xchacha20-poly1305":
            return
        keys = self.secondary_keys if isinstance(self.secondary_keys, (list, tuple)) else []
        for name, key in (("encryption_key", self.encryption_key),
                          *((f"secondary_keys[{i}]", k) for i, k in enumerate(keys))):
            if isinstance(key, (bytes, bytearray)) and len(key) != 32:
                raise ConfigError(name, f"must be exactly 32 bytes long with cipher "
                                        f"'xchacha20-poly1305', got {len(key)} bytes")

    def _validate_cipher(self) -> None:
        """XChaCha20-Poly1305 needs PyNaCl installed."""
        if str(self.cipher).lower() != "xchacha20-poly1305":
            return
        from .security import XCHACHA_EXTRA, cipher_available

        if not cipher_available("xchacha20-poly1305"):
            raise ConfigError("cipher", "'xchacha20-poly1305' needs PyNaCl (libsodium), which is "
                                        f"not installed: {XCHACHA_EXTRA}")

    def _validate_admission(self) -> None:
        """Refuse admission bounds that contradict each other."""
        if self.reserved_member_connections >= self.tcp_max_connections:
            raise ConfigError(
                "reserved_member_connections",
                f"must be < tcp_max_connections ({self.tcp_max_connections}), "
                f"got {self.reserved_member_connections}")
        if self.tcp_preauth_buffer_per_source > self.tcp_preauth_buffer_limit:
            raise ConfigError(
                "tcp_preauth_buffer_per_source",
                f"must be <= tcp_preauth_buffer_limit ({self.tcp_preauth_buffer_limit}), "
                f"got {self.tcp_preauth_buffer_per_source}")
        for per_host, total in (("max_member_dials_per_host", "max_member_dials"),
                                ("max_other_dials_per_host", "max_other_dials")):
            if getattr(self, per_host) > getattr(self, total):
                raise ConfigError(per_host, f"must be <= {total} ({getattr(self, total)}), "
                                            f"got {getattr(self, per_host)}")

    def exposed_address(self) -> str:
        """Return the first address this node listens on or advertises that is not loopback
        (an unspecified host such as ``0.0.0.0`` included), or ``""`` if it keeps to loopback.

        A node given its own ``transport`` is not judged (``""``): where it listens is the
        transport's business.
        """
        if self.transport is not None:
            return ""
        candidates = [self.advertise_addr]
        candidates.append(self.bind_addr if self.socket_transport_enabled
                          else self.http_bind_addr or self.websocket_bind_addr)
        for addr in candidates:
            if not isinstance(addr, str) or not addr:
                continue
            host = (_url_parts(addr)[1] if is_websocket_url(addr) or is_http_url(addr)
                    else addr.rpartition(":")[0].strip("[]"))
            if host and not is_loopback(host):
                return addr
        return ""

    def _validate_door(self) -> None:
        """Refuse a node reachable from other hosts that has no key, unless told ``insecure``."""
        if self.encryption_key or self.insecure:
            return
        exposed = self.exposed_address()
        if exposed:
            raise ConfigError(
                "encryption_key",
                f"is not set, yet this node is reachable beyond loopback ({exposed}): anyone who "
                "can reach it could join the cluster, read its members and forge their state. "
                "Make a key with `gossip keygen` and give it to every node (encryption_key, "
                "GOSSIP_ENCRYPTION_KEY, or `gossip agent --key-file`), or set insecure=True "
                "(GOSSIP_INSECURE=1, `gossip agent --insecure`) to run unencrypted on a network "
                "where every host is trusted")

    def listens_on_http(self) -> bool:
        """True if the node listens on HTTP only: no sockets, and an ``http_bind_addr`` or an
        ``http(s)://`` ``advertise_addr`` (a host's server carries its POSTs)."""
        return (self.transport is None and not self.socket_transport_enabled
                and (bool(self.http_bind_addr) or is_http_url(self.advertise_addr)))

    def _validate_http(self) -> None:
        """Refuse HTTP settings that cannot work together (see http_bind_addr)."""
        if self.transport is not None:
            return
        http_advertise = is_http_url(self.advertise_addr)
        if self.socket_transport_enabled and (self.http_bind_addr or http_advertise):
            name = "http_bind_addr" if self.http_bind_addr else "advertise_addr"
            raise ConfigError(name, "needs socket_transport_enabled=False: a node listens only on "
                                    "what it advertises (UDP/TCP, WebSocket or HTTP); it dials peers "
                                    "of every kind either way")
        if not self.listens_on_http():
            return
        if self.websocket_bind_addr:
            raise ConfigError("websocket_bind_addr", "is set, but the node listens on HTTP "
                                                     "(http_bind_addr or an http(s):// advertise_addr): "
                                                     "a node listens on one transport")
        if self.advertise_addr and not http_advertise:
            raise ConfigError("advertise_addr", f"must be an http:// or https:// URL when the node "
                                                f"listens on HTTP only, got {self.advertise_addr!r}")
        if http_advertise:
            scheme, host, path = _url_parts(self.advertise_addr)
            tls_server = self.tls_server_context is not None or bool(self.tls_cert_file)
            if self.http_bind_addr and scheme == "https" and not tls_server:
                raise ConfigError("advertise_addr", "is https:// but the HTTP listener has no TLS: "
                                                    "set tls_cert_file and tls_key_file, or tls_server_context")
            if (path or "/") != self.http_path:
                raise ConfigError("advertise_addr", f"has the path {path or '/'!r}, but gossip POSTs "
                                                    f"are served at http_path {self.http_path!r}")
            if scheme == "http" and not self.allow_insecure_http and not is_loopback(host):
                raise ConfigError("advertise_addr", f"is plain http:// on {host}, which is not "
                                                    "loopback: peers refuse to dial it; advertise "
                                                    "https://, or set allow_insecure_http=True")
        elif self.http_bind_addr and not self.allow_insecure_http and not (
                self.tls_server_context is not None or self.tls_cert_file):
            host = self.http_bind_addr.rpartition(":")[0].strip("[]")
            if host not in ("", "0.0.0.0", "::") and not is_loopback(host):
                raise ConfigError("http_bind_addr", f"serves plain http:// on {host}, which is not "
                                                    "loopback: peers refuse to dial it; set "
                                                    "tls_cert_file (https://), or allow_insecure_http=True")

    def _validate_websocket(self) -> None:
        """Refuse transport settings that cannot work together (see socket_transport_enabled)."""
        tls_server = self.tls_server_context is not None or bool(self.tls_cert_file)
        if self.tls_key_file and not self.tls_cert_file:
            raise ConfigError("tls_key_file", "needs tls_cert_file (the certificate it belongs to)")
        if self.tls_cert_file and self.tls_server_context is not None:
            raise ConfigError("tls_cert_file", "set either tls_cert_file or tls_server_context, not both")
        if self.tls_ca_file and self.tls_client_context is not None:
            raise ConfigError("tls_ca_file", "set either tls_ca_file or tls_client_context, not both")
        if self.transport is not None:
            return
        ws_advertise = is_websocket_url(self.advertise_addr)
        if self.listens_on_http():
            return
        if self.socket_transport_enabled:
            if self.websocket_bind_addr:
                raise ConfigError(
                    "websocket_bind_addr",
                    "needs socket_transport_enabled=False: a node listens only on what it "
                    "advertises (UDP/TCP or WebSocket); it dials peers of both kinds either way")
            if ws_advertise:
                raise ConfigError(
                    "advertise_addr",
                    f"is a WebSocket URL ({self.advertise_addr}) but the node listens on UDP/TCP; "
                    "set socket_transport_enabled=False to listen on WebSocket")
            if tls_server:
                name = "tls_cert_file" if self.tls_cert_file else "tls_server_context"
                raise ConfigError(name, "is used only by a WebSocket listener (websocket_bind_addr)")
            return
        if not self.websocket_bind_addr and not ws_advertise:
            raise ConfigError(
                "socket_transport_enabled",
                "is False but there is no websocket_bind_addr (the node's own WebSocket listener), "
                "no ws:// or wss:// advertise_addr (connections served by the host) and no "
                "transport: no way to talk")
        if self.advertise_addr and not ws_advertise:
            raise ConfigError(
                "advertise_addr",
                f"must be a ws:// or wss:// URL when the node listens on WebSocket only, got "
                f"{self.advertise_addr!r}")
        if tls_server and not self.websocket_bind_addr:
            name = "tls_cert_file" if self.tls_cert_file else "tls_server_context"
            raise ConfigError(name, "is used only by the node's own WebSocket listener "
                                    "(websocket_bind_addr); a host's server does its own TLS")
        if ws_advertise:
            scheme, host, path = _url_parts(self.advertise_addr)
            if self.websocket_bind_addr and scheme == "wss" and not tls_server:
                raise ConfigError(
                    "advertise_addr",
                    "is wss:// but the WebSocket listener has no TLS: set tls_cert_file and "
                    "tls_key_file, or tls_server_context")
            if self.websocket_bind_addr and scheme == "ws" and tls_server:
                raise ConfigError("advertise_addr", "is ws:// but the listener serves TLS: advertise wss://")
            if (path or "/") != self.websocket_path:
                raise ConfigError(
                    "advertise_addr",
                    f"has the path {path or '/'!r}, but gossip WebSocket connections are served "
                    f"at websocket_path {self.websocket_path!r}")
            if scheme == "ws" and not self.allow_insecure_websockets and not is_loopback(host):
                raise ConfigError(
                    "advertise_addr",
                    f"is plain ws:// on {host}, which is not loopback: peers refuse to dial it; "
                    "advertise wss://, or set allow_insecure_websockets=True")
        elif not tls_server and not self.allow_insecure_websockets:
            host = self.websocket_bind_addr.rpartition(":")[0].strip("[]")
            if host not in ("", "0.0.0.0", "::") and not is_loopback(host):
                raise ConfigError(
                    "websocket_bind_addr",
                    f"serves plain ws:// on {host}, which is not loopback: peers refuse to dial "
                    "it; set tls_cert_file (wss://), or allow_insecure_websockets=True")
        if not self.websocket_bind_addr and not self.bearer_token and not (
                0 < self.websocket_host_max_size <= self.tcp_preauth_max_frame_size):
            raise ConfigError(
                "bearer_token",
                "is required when the host's server carries the node's WebSocket connections "
                "(ASGI, websocket_handler): the host buffers a stranger's message whole before "
                "the node sees it. Set a bearer_token (strangers are then refused before the "
                "upgrade), or give the host's server a small message limit and state it in "
                f"websocket_host_max_size (at most tcp_preauth_max_frame_size, "
                f"{self.tcp_preauth_max_frame_size}; got {self.websocket_host_max_size})")

    # -- environment -------------------------------------------------------------------------
    @classmethod
    def from_env(
        cls,
        prefix: str = "GOSSIP_",
        environ: Mapping[str, str] | None = None,
        base: Config | None = None,
        *,
        strict: bool = False,
    ) -> Config:
        """Build a Config from ``GOSSIP_<FIELD>`` environment variables.

        ``GOSSIP_PRESET`` (lan, wan, local) picks the starting preset unless ``base`` is given.
        Durations accept ``200ms``, ``1.5s``, ``2m``, ``1h``, ``250us`` or plain seconds;
        booleans ``1/0, true/false, yes/no, on/off``; ``encryption_key`` hex or base64;
        ``secondary_keys`` a comma-separated list of keys. Aliases (``GOSSIP_PROBE_INTERVAL``...)
        work too.

        Other ``GOSSIP_*`` variables are ignored (other tools, and this project's own examples,
        use the prefix too), but one whose name is close to a field's (a typo, such as
        ``GOSSIP_PROBE_INTERVL``) is logged as a warning naming the field meant. With
        ``strict`` every name must be a field (how the agent reads a settings file).

        Raises:
            ConfigError: a variable's value cannot be parsed (names the variable; a secret's
                value is never repeated), it names a field that cannot be set from text, or
                (``strict``) it names no field.
        """
        env = os.environ if environ is None else environ
        if base is not None:
            cfg = base.copy()
        else:
            cfg = cls.preset(env.get(prefix + "PRESET", "lan"))
        for key, raw in sorted(env.items()):
            if not key.startswith(prefix) or key == prefix + "PRESET":
                continue
            name = key[len(prefix):].lower()
            field_name = _ALIASES.get(name, name)
            kind = _ENV_KINDS.get(field_name)
            if kind is None:
                if field_name in _FIELD_NAMES:
                    raise ConfigError(field_name, f"cannot be set from the environment ({key})")
                meant = _near_miss(name)
                hint = f" (did you mean {prefix}{meant.upper()}?)" if meant else ""
                if strict:
                    raise ConfigError(field_name, f"{key} names no Config field{hint}")
                if meant:
                    _log.warning("%s names no Config field and is ignored%s", key, hint)
                continue
            try:
                value = kind(raw)
            except ConfigError:
                raise
            except (ValueError, binascii.Error) as exc:
                shown = key if field_name in SECRET_FIELDS else f"{key}={raw!r}"
                raise ConfigError(field_name, f"{shown} is not valid: {exc}") from None
            setattr(cfg, field_name, value)
        return cfg

    def to_env(self, prefix: str = "GOSSIP_") -> dict[str, str]:
        """Return the ``GOSSIP_*`` variables that :meth:`from_env` turns back into this Config."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            kind = _ENV_KINDS.get(f.name)
            if kind is None:
                continue
            value = getattr(self, f.name)
            if f.name == "compressor" and value is not None and not isinstance(value, str):
                continue  # a Compressor object has no text form
            if value is None:
                if f.name == "encryption_key":
                    continue
                out[prefix + f.name.upper()] = ""
            elif isinstance(value, bool):
                out[prefix + f.name.upper()] = "true" if value else "false"
            elif f.name in _DURATION_FIELDS:
                out[prefix + f.name.upper()] = format_duration(value)
            elif isinstance(value, bytes):
                out[prefix + f.name.upper()] = value.hex()
            elif isinstance(value, (set, frozenset)):
                out[prefix + f.name.upper()] = ",".join(sorted(value))
            elif isinstance(value, list):
                out[prefix + f.name.upper()] = ",".join(
                    k if isinstance(k, str) else k.hex() for k in value)
            else:
                out[prefix + f.name.upper()] = str(value)
        return out


class FrozenConfig(Config):
    """A read-only :class:`Config` (:attr:`gossip.Cluster.config`): setting a field raises
    ``AttributeError``; :meth:`copy` returns an ordinary, writable Config."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"{name}: this configuration belongs to a Cluster and is read-only; build another "
            f"with config.copy({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{name}: this configuration is read-only")

    def copy(self, **changes: Any) -> Config:
        """Return a writable copy with some fields changed (aliases accepted)."""
        plain = object.__new__(Config)
        plain.__dict__.update(self.__dict__)
        return Config.copy(plain, **changes)


def default_config() -> Config:
    """Return the default configuration: the LAN preset.

    It stands where paularlott's ``DefaultConfig()`` does, but its defaults differ where this
    library works differently:

    * ``state_sync_interval`` is 30 s (memberlist's push/pull period) instead of 5 s: SWIM
      disseminates by gossip, the full-state exchange only repairs what gossip missed;
    * ``msg_codec`` is msgpack and ``compressor`` is lz4, both set (paularlott requires a codec
      and compresses nothing by default);
    * the failure-detection timings are memberlist's ``DefaultLANConfig`` (probe 1 s, ack
      timeout 500 ms, suspicion multiplier 4), which paularlott's own detector does not have;
    * ``incoming_packet_queue_depth`` is 4096 (per lane) instead of 512.
    """
    return Config.lan()


# ----------------------------------------------------------------------------------------------
# durations

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Parse ``"200ms"``, ``"1.5s"``, ``"2m"``, ``"1h"``, ``"250us"`` or ``"3"`` into seconds.

    Raises:
        ValueError: the text is not a non-negative duration.
    """
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 200ms, 1.5s, 2m, 1h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def format_duration(seconds: float) -> str:
    """Format seconds the way :func:`parse_duration` reads them back exactly."""
    return f"{seconds!r}s"


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on", "t", "y"):
        return True
    if low in ("0", "false", "no", "off", "f", "n"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


def _parse_key(text: str) -> bytes:
    """Parse a key written in hex or base64; errors describe the text, never repeat it."""
    text = text.strip()
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text) and len(text) in (32, 48, 64):
        return bytes.fromhex(text)
    import base64  # here: only a base64 key needs it

    try:
        key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"not a key ({len(text)} characters that are neither 32, 48 or 64 hex "
                         "digits nor base64; `gossip keygen` makes one)") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(f"decodes to {len(key)} bytes; a key is 16, 24 or 32 bytes "
                         "(`gossip keygen` makes one)")
    return key


def _parse_optional_key(text: str) -> bytes | None:
    return _parse_key(text) if text.strip() else None


def _parse_keys(text: str) -> list[bytes]:
    return [_parse_key(part) for part in text.split(",") if part.strip()]


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_optional_str(text: str) -> str | None:
    return text if text.strip() and text.strip().lower() != "none" else None


def secret_file_warning(path: str) -> str | None:
    """Return a warning if the file ``path`` (a key) can be read by its group or by everyone."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("everyone", stat.S_IROTH)) if mode & bit]
    if not readers:
        return None
    return (f"warning: {path} can be read by {' and '.join(readers)} (mode {stat.S_IMODE(mode):04o}); "
            f"a key file should be readable by its owner only: chmod 600 {path}")


def _near_miss(name: str) -> str | None:
    """Return the field (or alias) ``name`` is probably a typo of, if any."""
    import difflib  # here: only an unknown variable needs it

    close = difflib.get_close_matches(name, sorted(set(_ENV_KINDS) | set(_ALIASES)), n=1, cutoff=0.85)
    return close[0] if close else None


def _redacted(value: Any) -> str:
    """A secret's repr that shows its presence and size, never its value."""
    if value is None or value == "" or value == []:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_redacted(v) for v in value) + "]"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)}-byte key>"
    return "'<redacted>'"


# ----------------------------------------------------------------------------------------------
# validation rules

def _require_type(name: str, value: Any, types: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(name, f"must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(name, f"must be {what}, got {value!r} ({type(value).__name__})")


def _duration(lo: float, hi: float, *, allow_zero: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        _require_type(name, value, (int, float), "a duration in seconds")
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value!r}")
        if allow_zero and value == 0:
            return
        if not lo <= value <= hi:
            zero = " (or 0)" if allow_zero else ""
            raise ConfigError(name, f"must be between {lo}s and {hi}s{zero}, got {value!r}s")

    return check


def _integer(lo: int, hi: int, *, power_of_two: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        _require_type(name, value, (int,), "an integer")
        if not lo <= value <= hi:
            raise ConfigError(name, f"must be between {lo} and {hi}, got {value!r}")
        if power_of_two and value & (value - 1):
            raise ConfigError(name, f"must be a power of two, got {value!r}")

    return check


def _number(lo: float, hi: float) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        _require_type(name, value, (int, float), "a number")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ConfigError(name, f"must be between {lo} and {hi}, got {value!r}")

    return check


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be True or False, got {value!r}")


def _string(max_len: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        _require_type(name, value, (str,), "a string")
        if len(value.encode()) > max_len:
            raise ConfigError(name, f"must be at most {max_len} bytes, got {len(value.encode())}")

    return check


def _choice(*choices: str | None) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, str):
            value = value.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")

    return check


def _check_codec(name: str, value: Any) -> None:
    if isinstance(value, str):
        _choice("msgpack", "json")(name, value)
        return
    for attr in ("encode", "decode", "codec_id", "name"):
        if not hasattr(value, attr):
            raise ConfigError(name, f"must be 'msgpack', 'json' or a Codec object, got {value!r}")


def _check_compressor(name: str, value: Any) -> None:
    if value is None or isinstance(value, str):
        _choice("lz4", "snappy", "none", None)(name, value)
        if isinstance(value, str) and value.lower() == "snappy":
            from .compression import SNAPPY_EXTRA, snappy_available

            if not snappy_available():
                raise ConfigError(name, f"'snappy' needs cramjam, which is not installed: {SNAPPY_EXTRA}")
        return
    for attr in ("compress", "decompress", "name"):
        if not hasattr(value, attr):
            raise ConfigError(name, f"must be 'lz4', 'snappy', None or a Compressor object, got {value!r}")


def _check_node_id(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "a UUID string")
    if value:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ConfigError(name, f"must be a UUID (or empty to generate one), got {value!r}") from None


def _check_key(name: str, value: Any) -> None:
    if value is None:
        return
    _require_type(name, value, (bytes, bytearray), "bytes of length 16, 24 or 32")
    if len(value) not in (16, 24, 32):
        raise ConfigError(name, f"must be 16, 24 or 32 bytes long (AES-128/192/256), got {len(value)} bytes")


def _check_keys(name: str, value: Any) -> None:
    _require_type(name, value, (list, tuple), "a list of keys")
    for i, key in enumerate(value):
        _check_key(f"{name}[{i}]", key)


def _check_host_port(*, allow_empty: bool, allow_zero: bool) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        _require_type(name, value, (str,), "an address string")
        if not value:
            if allow_empty:
                return
            raise ConfigError(name, "must not be empty")
        if value.startswith(("ws://", "wss://", "http://", "https://", "srv+")):
            if name == "bind_addr":
                raise ConfigError(name, f"must be ip:port, got {value!r}")
            if is_websocket_url(value) or is_http_url(value):
                _check_ws_url(name, value)
            elif not value.startswith("srv+"):
                raise ConfigError(name, f"must be ip:port, a host name or a ws://, wss://, http:// "
                                        f"or https:// URL, got {value!r}")
            return
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        if port_text:
            if not port_text.isdigit() or not (0 if allow_zero else 1) <= int(port_text) <= 65535:
                lo = 0 if allow_zero else 1
                raise ConfigError(name, f"port must be {lo}..65535, got {value!r}")
        elif name == "bind_addr":
            raise ConfigError(name, f"needs a port (ip:port), got {value!r}")
        if name == "bind_addr":
            # What the socket transport binds: an IP literal, IPv6 in brackets (no name look-up).
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                hint = " (write 127.0.0.1 for this machine only)" if host.lower().startswith("localhost") \
                    else " (127.0.0.1 for this machine only, 0.0.0.0 for every interface)" if not host else ""
                raise ConfigError(name, f"must be an IP address and port{hint}, got {value!r}") from None
            if ip.version == 6 and not bracketed:
                raise ConfigError(name, f"write IPv6 as [addr]:port, got {value!r}")
        if not host and name != "bind_addr":
            raise ConfigError(name, f"has no host, got {value!r}")

    return check


def _url_parts(url: str) -> tuple[str, str, str]:
    """Return ``(scheme, host, path)`` of a URL already checked by :func:`_check_ws_url`."""
    import urllib.parse  # here: only URLs need it (a node addressed by ip:port never does)

    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname or "", parts.path


def _check_ws_url(name: str, value: str) -> None:
    import urllib.parse  # here: only URLs need it (a node addressed by ip:port never does)

    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(name, f"is not a valid URL ({exc}), got {value!r}") from None
    if parts.scheme.lower() not in ("ws", "wss", "http", "https"):
        raise ConfigError(name, f"must use the ws://, wss://, http:// or https:// scheme, got {value!r}")
    if not parts.hostname:
        raise ConfigError(name, f"has no host, got {value!r}")
    if port == 0:
        raise ConfigError(name, f"port must be 1..65535, got {value!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(name, f"must not carry user info, a query or a fragment, got {value!r}")


def _check_ws_bind(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "an ip:port string")
    if not value:
        return
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(name, f"must be ip:port with a port in 0..65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(name, f"write IPv6 as [addr]:port, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(name, f"must be an IP address and port, got {value!r}") from None


def _check_ws_path(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "a URL path")
    if not value.startswith("/") or len(value) > 1024 or not value.isprintable() \
            or any(c in value for c in " ?#"):
        raise ConfigError(name, f"must be a URL path starting with '/', without spaces, query or "
                                f"fragment, got {value!r}")


def _check_token(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "a string")
    if len(value) > 4096:
        raise ConfigError(name, f"must be at most 4096 characters, got {len(value)}")
    if any(not (33 <= ord(c) <= 126) for c in value):
        raise ConfigError(name, "must be printable ASCII without spaces (it travels in an HTTP header)")


def _check_origins(name: str, value: Any) -> None:
    _require_type(name, value, (list, tuple), "a list of origins")
    for i, origin in enumerate(value):
        if not isinstance(origin, str) or not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/?#\s]+", origin.lower()):
            raise ConfigError(f"{name}[{i}]", f"must be an origin such as 'https://app.example.com' "
                                              f"(scheme://host[:port], no path), got {origin!r}")


def _check_tags(name: str, value: Any) -> None:
    _, why = check_tags(value)
    if why is not None:
        raise ConfigError(name, why)


def _check_tls_context(name: str, value: Any) -> None:
    if value is not None and not callable(getattr(value, "wrap_socket", None)):
        raise ConfigError(name, f"must be an ssl.SSLContext or None, got {value!r}")


def _check_file(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "a file path")
    if value and not os.path.isfile(value):
        raise ConfigError(name, f"names no readable file: {value!r}")


def _check_multicast_group(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "an IPv4 multicast address")
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(name, f"must be an IPv4 multicast address (224.0.0.0/4), got {value!r}") from None
    if not ip.is_multicast:
        raise ConfigError(name, f"must be an IPv4 multicast address (224.0.0.0/4), got {value!r}")


def _check_ipv4_or_empty(name: str, value: Any) -> None:
    _require_type(name, value, (str,), "an IPv4 address")
    if value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ConfigError(name, f"must be an IPv4 address or empty, got {value!r}") from None


def _check_callable_or_none(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(name, f"must be callable or None, got {value!r}")


def _check_tracing(name: str, value: Any) -> None:
    if value is True or value is False:
        return
    if not callable(getattr(value, "get_tracer", None)):
        raise ConfigError(name, f"must be True, False or a TracerProvider (with get_tracer), got {value!r}")


def _check_logger(name: str, value: Any) -> None:
    if value is None:
        return
    for method in ("debug", "info", "warning", "error", "isEnabledFor"):
        if not callable(getattr(value, method, None)):
            raise ConfigError(name, f"must be a logging.Logger or LoggerAdapter, got {value!r}")


def _check_transport(name: str, value: Any) -> None:
    if value is None:
        return
    for method in ("start", "send", "close"):
        if not callable(getattr(value, method, None)):
            raise ConfigError(name, f"must implement the Transport interface, got {value!r}")


def _check_resolver(name: str, value: Any) -> None:
    if value is None:
        return
    for method in ("lookup_ip", "lookup_srv"):
        if not callable(getattr(value, method, None)):
            raise ConfigError(name, f"must have lookup_ip() and lookup_srv(), got {value!r}")


_DAY = 86400.0
_RULES: dict[str, Callable[[str, Any], None]] = {
    "node_id": _check_node_id,
    "bind_addr": _check_host_port(allow_empty=False, allow_zero=True),
    "advertise_addr": _check_host_port(allow_empty=True, allow_zero=False),
    "application_version": _string(255),
    "application_version_check": _check_callable_or_none,
    "tags": _check_tags,
    "default_port": _integer(1, 65535),
    "cluster_label": _string(255),
    "name": _string(512),
    "wire_protocol": _choice("gossip", "memberlist"),
    "serf": _boolean,
    "memberlist_compress": _boolean,
    "memberlist_encryption_version": _integer(0, 1),
    "encryption_key": _check_key,
    "insecure": _boolean,
    "secondary_keys": _check_keys,
    "cipher": _choice("aes-gcm", "xchacha20-poly1305"),
    "msg_codec": _check_codec,
    "compressor": _check_compressor,
    "compress_min_size": _integer(0, 1 << 30),
    "max_metadata_size": _integer(64, 1 << 20),
    "require_encryption": _boolean,
    "encrypt_outgoing": _boolean,
    "replay_window": _duration(0.1, 3600.0, allow_zero=True),
    "replay_max_entries": _integer(16, 1 << 24),
    "transport": _check_transport,
    "logger": _check_logger,
    "tracing": _check_tracing,
    "resolver": _check_resolver,
    "prefer_ipv6": _boolean,
    "dialer": _check_callable_or_none,
    "discovery": _choice("", "multicast"),
    "multicast_group": _check_multicast_group,
    "multicast_port": _integer(0, 65535),
    "multicast_interval": _duration(0.01, 3600.0),
    "multicast_ttl": _integer(0, 255),
    "multicast_interface": _check_ipv4_or_empty,
    "multicast_max_peers": _integer(1, 1 << 16),
    "listener": _check_callable_or_none,
    "socket_transport_enabled": _boolean,
    "websocket_bind_addr": _check_ws_bind,
    "websocket_path": _check_ws_path,
    "websocket_handshake_timeout": _duration(0.01, 300.0),
    "websocket_ping_interval": _duration(0.1, 3600.0, allow_zero=True),
    "allow_insecure_websockets": _boolean,
    "bearer_token": _check_token,
    "http_bind_addr": _check_ws_bind,
    "http_path": _check_ws_path,
    "http_reply_wait": _duration(0.01, 300.0),
    "http_pool_size": _integer(0, 1024),
    "http_auth_window": _duration(1.0, 3600.0),
    "http_max_frames_per_body": _integer(1, 1 << 20),
    "allow_insecure_http": _boolean,
    "tls_server_context": _check_tls_context,
    "tls_client_context": _check_tls_context,
    "tls_cert_file": _check_file,
    "tls_key_file": _check_file,
    "tls_ca_file": _check_file,
    "force_reliable_transport": _boolean,
    "tcp_dial_timeout": _duration(0.001, 300.0),
    "tcp_deadline": _duration(0.001, 300.0),
    "udp_deadline": _duration(0.001, 300.0),
    "udp_max_packet_size": _integer(512, 65000),
    "tcp_max_packet_size": _integer(1024, 1 << 30),
    "stream_max_packet_size": _integer(1024, 1 << 30),
    "max_concurrent_streams": _integer(1, 65536),
    "stream_open_timeout": _duration(0.001, 3600.0),
    "stream_timeout": _duration(0.001, _DAY, allow_zero=True),
    "send_timeout": _duration(0.0, 3600.0),
    "best_effort_full_policy": _choice("drop", "raise"),
    "connection_buffer_size": _integer(64 * 1024, 1 << 30),
    "udp_recv_buffer_size": _integer(0, 1 << 30),
    "udp_send_buffer_size": _integer(0, 1 << 30),
    "idle_timeout": _duration(0.1, _DAY),
    "tcp_max_connections": _integer(1, 1 << 20),
    "tcp_max_connections_per_source": _integer(1, 1 << 20),
    "tcp_preauth_max_frame_size": _integer(1024, 1 << 30),
    "tcp_preauth_buffer_limit": _integer(64 * 1024, 1 << 40),
    "tcp_frame_timeout": _duration(0.01, 3600.0),
    "preauth_timeout": _duration(0.01, 3600.0),
    "max_rejected_frames": _integer(1, 1 << 20),
    "max_untrusted_connections_per_source": _integer(1, 1 << 20),
    "tcp_preauth_buffer_per_source": _integer(64 * 1024, 1 << 40),
    "reserved_member_connections": _integer(0, 1 << 20),
    "max_member_dials": _integer(1, 1 << 20),
    "max_member_dials_per_host": _integer(1, 1 << 20),
    "max_other_dials": _integer(1, 1 << 20),
    "max_other_dials_per_host": _integer(1, 1 << 20),
    "max_opening_streams_per_source": _integer(1, 65536),
    "websocket_allowed_origins": _check_origins,
    "websocket_host_max_size": _integer(0, 1 << 30),
    "gossip_interval": _duration(0.01, _DAY),
    "gossip_max_interval": _duration(0.01, _DAY),
    "msg_history_gc_interval": _duration(0.01, 3600.0),
    "msg_history_max_age": _duration(0.1, _DAY),
    "msg_history_shard_count": _integer(1, 4096, power_of_two=True),
    "msg_history_max_entries": _integer(16, 1 << 24),
    "node_shard_count": _integer(1, 4096, power_of_two=True),
    "num_send_workers": _integer(1, 256),
    "send_queue_size": _integer(1, 1 << 20),
    "num_incoming_workers": _integer(1, 256),
    "incoming_packet_queue_depth": _integer(1, 1 << 20),
    "async_handler_limit": _integer(1, 1 << 20),
    "incoming_queue_max_bytes": _integer(64 * 1024, 1 << 40),
    "health_check_interval": _duration(0.01, 3600.0),
    "ping_timeout": _duration(0.001, 3600.0),
    "enable_indirect_pings": _boolean,
    "adaptive_ping_timeout": _boolean,
    "ping_timeout_max": _duration(0.001, 3600.0, allow_zero=True),
    "adaptive_ping_percentile": _number(0.5, 1.0),
    "adaptive_ping_factor": _number(1.0, 10.0),
    "adaptive_ping_samples": _integer(4, 1024),
    "suspect_retention_period": _duration(0.01, 30 * _DAY),
    "recovery_attempt_interval": _duration(0.01, _DAY),
    "dead_node_retention_period": _duration(0.0, 365 * _DAY),
    "state_sync_interval": _duration(0.01, _DAY, allow_zero=True),
    "fan_out_multiplier": _number(0.01, 100.0),
    "state_exchange_multiplier": _number(0.01, 100.0),
    "ttl_multiplier": _number(0.01, 100.0),
    "broadcast_redundancy": _integer(1, 8),
    "health_check_sample_size": _integer(1, 1024),
    "activity_threshold_percent": _number(0.0, 1.0),
    "suspect_threshold": _integer(1, 1024),
    "suspect_attempt_interval": _duration(0.01, _DAY),
    "refutation_threshold": _integer(1, 1024),
    "max_parallel_suspect_evaluations": _integer(0, 1024),
    "indirect_ping_multiplier": _number(0.0, 100.0),
    "indirect_checks": _integer(0, 32),
    "suspicion_mult": _integer(1, 100),
    "suspicion_max_timeout_mult": _integer(1, 100),
    "retransmit_mult": _integer(1, 100),
    "awareness_max_multiplier": _integer(1, 100),
    "dissemination_interval": _duration(0.001, 3600.0),
    "dissemination_fan_out": _integer(1, 64),
    "gossip_to_the_dead_time": _duration(0.0, _DAY),
    "dead_node_reclaim_time": _duration(0.0, _DAY),
    "broadcast_queue_size": _integer(16, 1 << 20),
    "max_members": _integer(16, 1 << 22),
    "max_members_per_message": _integer(1, 1 << 22),
    "max_members_per_source": _integer(1, 1 << 22),
    "max_incarnation_jump": _integer(1, 1 << 31),
    "max_pending_relays": _integer(1, 1 << 20),
    "lifeguard_enabled": _boolean,
    "tcp_pings": _boolean,
    "leave_timeout": _duration(0.0, 3600.0),
    "leave_attempts": _integer(1, 100),
    "join_timeout": _duration(0.01, 3600.0),
    "join_retry_interval": _duration(0.001, 3600.0),
    "join_retry_max_interval": _duration(0.001, _DAY),
    "suspicion_history_size": _integer(1, 1024),
    "flap_window": _duration(0.1, _DAY),
    "flap_threshold": _integer(2, 64),
    "flap_damping": _boolean,
    "flap_damping_hold": _duration(0.01, _DAY),
    "partition_threshold": _number(0.01, 1.0),
    "partition_window": _duration(0.01, _DAY),
    "partition_min_members": _integer(1, 1 << 20),
    "incarnation_budget": _integer(1, 1 << 31),
    "incarnation_budget_window": _duration(0.1, _DAY),
    "max_clock_drift": _duration(0.001, _DAY),
    "max_unconfirmed_share": _number(0.01, 1.0),
    "sender_key_cache_size": _integer(16, 1 << 20),
    "reconnect_interval": _duration(0.01, _DAY, allow_zero=True),
    "reconnect_timeout": _duration(0.0, 365 * _DAY),
    "max_reconnect_targets": _integer(0, 1 << 20),
    "http_read_timeout": _duration(0.1, 3600.0),
    "http_max_connections": _integer(2, 1 << 16),
    "http_max_event_streams": _integer(1, 1 << 16),
    "http_event_queue_bytes": _integer(64 * 1024, 1 << 30),
    "http_event_payload_bytes": _integer(64, 1 << 20),
}

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Config))
_ALIASES = {"probe_interval": "health_check_interval", "probe_timeout": "ping_timeout",
            "push_pull_interval": "state_sync_interval"}
_DURATION_FIELDS = frozenset(
    name for name, f in Config.__dataclass_fields__.items() if f.type in ("float",)
) - {"fan_out_multiplier", "state_exchange_multiplier", "ttl_multiplier",
     "activity_threshold_percent", "indirect_ping_multiplier", "partition_threshold",
     "adaptive_ping_percentile", "adaptive_ping_factor",
     "max_unconfirmed_share"}


def _env_kind(name: str, annotation: str) -> Callable[[str], Any] | None:
    if name == "encryption_key":
        return _parse_optional_key
    if name == "secondary_keys":
        return _parse_keys
    if name == "websocket_allowed_origins":
        return _parse_list
    if name == "tags":
        return lambda text: frozenset(_parse_list(text))
    if name == "compressor":
        return _parse_optional_str
    if name == "msg_codec":
        return str
    if annotation == "bool":
        return _parse_bool
    if annotation == "int":
        return int
    if annotation == "float":
        return parse_duration if name in _DURATION_FIELDS else float
    if annotation == "str":
        return str
    return None


_ENV_KINDS: dict[str, Callable[[str], Any]] = {
    name: kind
    for name, f in Config.__dataclass_fields__.items()
    if (kind := _env_kind(name, str(f.type))) is not None
}
