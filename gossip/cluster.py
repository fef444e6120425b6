"""The :class:`Cluster` facade: paularlott/gossip's API in Python idiom.

Durations are float seconds, errors are raised (never returned), and a cluster is a context
manager::

    with gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as c:
        c.join(["127.0.0.1:7946"])
        c.handle_func(gossip.USER_MSG, lambda sender, packet: print(packet.unmarshal()))
        c.send(gossip.USER_MSG, {"hello": "world"})

User message types: 0..63 are the protocol's own, 64..127 are for add-on packages, and
applications use :data:`USER_MSG` (128) and above.

This module imports the engine and the pure data layers, never a transport: the engine builds
the keyring, the codec and the transport from the configuration (:mod:`gossip.engine.wiring`).
It never touches the protocol core's internals except through :meth:`Engine.locked`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from .config import Config, FrozenConfig, default_config, secret_file_warning
from .engine import ClusterEventHandler, Engine, GossipHandler, MetadataHandler, StateHandler
from .engine import wiring
from .errors import (ClusterClosed, ConfigError, GossipError, JoinError, MetadataError,
                     NodeAliveError, NodeIDError)
from .joining import JOIN_IDLE, JoinOutcome, JoinStatus
from .handlers import (
    HANDLER_FORWARD,
    HANDLER_NO_FORWARD,
    HANDLER_REPLY,
    HANDLER_STREAM,
    HandlerID,
    MessageHandlers,
)
from .metadata import Metadata
from .node import Node, NodeID, NodeState
from .packet import Packet
from .protocol.messaging import calc_fan_out, calc_payload_size
from .protocol.provenance import Explanation
from .protocol.rtt import ProbeRtt
from .security import Keyring
from .tags import check_tags, tags_size
from .wire import USER_MSG, TransportType
from .wire import is_reliable as _reliable

if TYPE_CHECKING:
    from websockets.http11 import Request, Response
    from websockets.sync.server import ServerConnection

    from .engine.wiring import HostedConnection, Refusal, WebSocketTransport
    from .memberlist.serf import Serf
    from .streams import Stream
    from .placement import NodeSource
    from .rotation import RotationMember, RotationProgress, RotationReport

__all__ = ["Cluster", "MessageHandlerFunc", "ReplyHandlerFunc", "StreamHandlerFunc", "TransportType"]

logger = logging.getLogger("gossip.cluster")

MessageHandlerFunc = Callable[[Node, Packet], None]
"""``fn(sender, packet)``: handles a user message.

``sender`` is always a :class:`Node`: the member that sent it, as this node sees it, or, for a
sender this node's member table does not hold (one that has not joined yet, or was already
forgotten), a node in state :attr:`NodeState.UNKNOWN` with no address and empty metadata."""
ReplyHandlerFunc = Callable[[Node, Packet], Any]
"""``fn(sender, packet) -> reply``: its return value (any codec-able value) is the reply;
``sender`` as for :data:`MessageHandlerFunc`."""
StreamHandlerFunc = Callable[[Node, Packet, "Stream"], None]
"""``fn(sender, packet, stream)``: serves one accepted stream on a stream pool thread; the
stream is closed when it returns (or aborted if it raises); ``sender`` as for
:data:`MessageHandlerFunc`."""


class Cluster:
    """One member of a gossip cluster.

    Before :meth:`start`, and after :meth:`stop`, the rules are the same for every method:

    * queries answer for a node alone: :meth:`local_node` is in state ``UNKNOWN`` with no
      address yet (before start; after stop, its last state), :meth:`nodes` holds it alone (or
      the last membership), the counts and :meth:`stats` are those of that node, and handlers
      may be registered at any time;
    * actions that need the running node (:meth:`join`, :meth:`leave`, every send,
      :meth:`send_to_with_response`, :meth:`open_stream`, :meth:`update_metadata`) raise
      :class:`~gossip.errors.ClusterClosed`, saying "not started" or "stopped";
    * :meth:`stop` is allowed at any time and idempotent; a stopped cluster cannot start again.

    Args:
        config: the configuration (copied, then validated); default :func:`default_config`.

    Raises:
        ConfigError: a configuration field is invalid (the message names it).
    """

    def __init__(self, config: Config | None = None) -> None:
        cfg = (config if config is not None else default_config()).copy()
        cfg.validate()
        self._id = NodeID.parse(cfg.node_id) if cfg.node_id else NodeID.generate()
        if cfg.wire_protocol == "memberlist":
            # memberlist names members: the id derives from the name (gossip.memberlist.identity)
            from .memberlist.identity import name_to_id

            if not cfg.name:
                cfg.name = str(self._id)
            self._id = name_to_id(cfg.name)
        self._config = cfg
        self._frozen = cfg.frozen()
        self._metadata = Metadata(max_size=cfg.max_metadata_size)
        if cfg.tags:
            self._metadata.reserve(tags_size(cfg.tags))   # tags count against the bound
        # The engine builds the codec and its keyring from the configuration (engine.wiring).
        self._engine = Engine(cfg, self._id, self._metadata, random.Random())
        self._codec = self._engine.codec
        self._keyring = self._codec.keyring
        self._serf = _serf_for(self) if cfg.serf else None
        self._started = False
        self._lock = threading.Lock()
        self._left = False
        self._stopped = False
        self._tags_lock = threading.RLock()
        self.log = logger if cfg.logger is None else cfg.logger
        self._rotation: RotationMember | None = None
        if self._keyring is not None and cfg.wire_protocol != "memberlist":
            from .rotation import ROTATION_MSG_TYPE, RotationMember

            self._rotation = RotationMember(
                self._keyring, lambda reason: self._engine.counters.inc(f"key_rotation.{reason}"))
            self._handlers().register(ROTATION_MSG_TYPE, HANDLER_REPLY, self._rotation.handle)

    @property
    def config(self) -> FrozenConfig:
        """This cluster's configuration, validated and read-only.

        The engine reads it while running, so it cannot be changed behind ``validate()``'s
        back: setting a field raises ``AttributeError``. Build a new :class:`Config` (for
        example ``cluster.config.copy(field=value)``) for another cluster. What may change at
        run time has its own calls: :attr:`keyring` (key rotation) and
        :meth:`local_metadata`.
        """
        return self._frozen

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        addr = self._engine.address or self._config.bind_addr
        return f"<Cluster {self._id.short} {addr}>"

    def _websocket_transport(self) -> WebSocketTransport | None:
        """The WebSocket side of the running node's transport (None for a custom transport)."""
        return wiring.websocket_side(self._engine.transport)

    def start(self) -> None:
        """Bind the transport and start the background threads (a second call does nothing).

        The advertised address is ``config.advertise_addr``, else the listener's address: the
        bound ``ip:port``, or for a node that listens on WebSocket only the ``ws://``/``wss://``
        URL of its ``websocket_bind_addr`` (on HTTP only, the ``http://``/``https://`` URL of its
        ``http_bind_addr``). A node bound to every interface (``0.0.0.0``,
        ``::``) advertises the address of the interface that carries the default route.

        A node started with ``insecure=True`` and reachable beyond loopback logs a warning
        saying so.

        Raises:
            TransportError: the bind address is in use or invalid.
            ConfigError: the node binds every interface, has no ``advertise_addr`` and no
                interface carries a default route.
            ClusterClosed: the cluster was stopped (clusters are not restartable).
        """
        with self._lock:
            if self._stopped:
                raise ClusterClosed("a stopped cluster cannot be restarted")
            if self._started:
                return
            self._engine.start()
            self._started = True
        tls_key = self._config.tls_key_file or self._config.tls_cert_file
        warning = secret_file_warning(tls_key) if tls_key else None
        if warning:
            self.log.warning("TLS key: %s", warning.removeprefix("warning: "))
        exposed = self._config.exposed_address()
        if exposed and not self._config.encryption_key:
            self.log.warning(
                "insecure=True: node %s is reachable beyond loopback (%s) without encryption; "
                "anyone who can reach it can join, read members and metadata, send messages and "
                "forge accusations, leaves and leader heartbeats (set encryption_key to end this)",
                self._id.short, exposed)

    def stop(self, timeout: float = 5.0, leave: bool = True) -> None:
        """Leave gracefully (if ``leave`` and started), then stop every thread and socket.

        Idempotent. At most ``timeout`` seconds in total.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            engine = self._engine
            started = self._started
        self._metadata.close("the cluster is stopped: its metadata can no longer change")
        if not started:
            engine.stop(timeout)  # closes a transport it was given, or built before failing
            return
        end = time.monotonic() + timeout
        if leave and not self._left:
            try:
                if self._serf is not None:
                    self._serf.leaving()
                engine.leave(min(self._config.leave_timeout, timeout / 2))
            except GossipError as exc:
                self.log.debug("leave during stop failed: %s", exc)
        engine.stop(max(0.0, end - time.monotonic()))

    def _crash(self) -> None:
        """Stop abruptly, without leaving: peers must detect the failure (tests and demos)."""
        self.stop(timeout=2.0, leave=False)

    def _eng(self) -> Engine:
        engine = self._engine
        if not self._started:
            raise ClusterClosed("the cluster is not started; call start() first")
        if self._stopped:
            raise ClusterClosed("the cluster is stopped")
        return engine

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`: the cluster sends, receives and joins."""
        return self._started and not self._stopped

    @property
    def keyring(self) -> Keyring | None:
        """The encryption keyring (add, use and remove keys at runtime), None if unencrypted."""
        return self._keyring

    @property
    def address(self) -> str:
        """The advertised address (``""`` before :meth:`start`)."""
        return self._engine.address

    # ------------------------------------------------------------------ join / leave

    @overload
    def join(self, peers: str | Sequence[str], timeout: float | None = None, *,
             background: Literal[False] = False) -> JoinOutcome: ...

    @overload
    def join(self, peers: str | Sequence[str], timeout: float | None = None, *,
             background: Literal[True]) -> JoinStatus: ...

    def join(self, peers: str | Sequence[str], timeout: float | None = None, *,
             background: bool = False) -> JoinOutcome | JoinStatus:
        """Join the cluster through ``peers`` (``ip:port``, ``host[:port]``, ``srv+name``...).

        Every peer is contacted in parallel; for each, every resolved address is tried in turn.
        Our own advertised address is skipped. The caller's list is never modified. When some
        peers accepted and others failed, a warning names each failure and why.

        A ``mcast://group[:port]`` seed starts multicast discovery on that group (as
        ``config.discovery = "multicast"`` does on ``config.multicast_group``): this node
        announces itself there and joins the members of its cluster it hears. A join through
        such seeds alone waits for the first member discovery joins; beside other peers, or in
        the background, discovery goes on by itself.

        With ``background=True`` it returns at once and joins on a thread of its own: it
        retries until a peer accepts, waiting longer after each failed attempt (doubling from
        ``config.join_retry_interval`` up to ``config.join_retry_max_interval``, jittered),
        resolves every name and ``srv+`` record again at each attempt, and stops when joined
        or when the cluster stops or leaves. The peers stay this node's seeds: a node that
        later loses every live peer joins them again the same way. :meth:`join_status` says
        what it is doing; the cluster events :class:`~gossip.joining.JoinSucceeded` and
        :class:`~gossip.joining.JoinAttemptFailed` (with why) reach
        :meth:`handle_cluster_event_func`'s handlers.

        Args:
            peers: one peer string, or a sequence of them.
            timeout: seconds for the whole join (default ``config.join_timeout``); ignored in
                the background, where each attempt takes at most ``config.join_timeout``.
            background: join on a background thread, retrying until joined.

        Returns:
            The number of peers that accepted us (0 if the only peers given were ourselves):
            a :class:`~gossip.joining.JoinOutcome`, an ``int`` listing the failures too. In the
            background, the :class:`~gossip.joining.JoinStatus` as it starts.

        Raises:
            JoinError: no peer accepted (no peer given, in the background); ``failures`` maps
                each peer to why.
            ClusterClosed: the cluster is not started or is stopped.
        """
        engine = self._eng()
        plist = [peers] if isinstance(peers, str) else list(peers)
        plist = [p.strip() for p in plist if p and p.strip()]
        if not plist:
            raise JoinError({})
        groups = [p for p in plist if p[:8].lower() == "mcast://"]
        if groups:  # multicast discovery; a join through groups alone waits for its first join
            plist = [p for p in plist if p not in groups]
            wait = None if background or plist else timeout or self._config.join_timeout
            found = engine.join_multicast(groups, wait)
            if not plist:
                return engine.seeds.status() if background else found
            if not background:
                outcome = self.join(plist, timeout)
                return JoinOutcome(outcome.joined, {**outcome.failures, **found.failures},
                                   outcome.skipped)
        if background:
            return engine.join_in_background(plist)
        random.shuffle(plist)
        outcome = engine.join(plist, self._config.join_timeout if timeout is None else timeout)
        if outcome.failures:
            self.log.warning("joined through %d of %d peers; could not join %s", outcome, len(plist),
                             "; ".join(f"{p} ({why})" for p, why in outcome.failures.items()))
        return outcome

    def join_status(self) -> JoinStatus:
        """Return what the join in the background is doing (see :meth:`join`).

        Its ``state`` is ``"idle"`` (none asked for), ``"joining"``, ``"joined"``,
        ``"rejoining"`` (every peer was lost: back to the seeds) or ``"stopped"``; it also
        gives the seeds, the attempts made, the last failure's reason and the seconds until the
        next attempt.
        """
        if not self._started:
            return JoinStatus(JOIN_IDLE)
        return self._engine.seeds.status()

    def leave(self, timeout: float | None = None) -> None:
        """Announce that this node leaves, and wait until the announcement has been sent.

        Args:
            timeout: seconds to wait for the send queue to flush (default ``leave_timeout``).

        Raises:
            ClusterClosed: the cluster is not started or is stopped.
        """
        engine = self._eng()
        if self._serf is not None:
            self._serf.leaving()
        engine.leave(self._config.leave_timeout if timeout is None else timeout)
        self._left = True

    # ------------------------------------------------------------------ nodes

    def local_node(self) -> Node:
        """Return a snapshot of the local node."""
        return self._engine.members.local_node()

    def local_metadata(self) -> Metadata:
        """Return the local node's writable metadata; writes propagate automatically.

        Writes are allowed before :meth:`start` (they go out with the join); after
        :meth:`stop` they raise :class:`~gossip.errors.ClusterClosed`."""
        return self._metadata

    def update_metadata(self) -> None:
        """Propagate the local metadata now (writes also propagate by themselves).

        Raises:
            ClusterClosed: the cluster is not started or is stopped.
        """
        self._eng().update_metadata()

    def set_tags(self, tags: Iterable[str]) -> None:
        """Replace this node's tags (``Config.tags`` at start); the change spreads like a
        metadata write, and tagged broadcasts reach this node from then on for the tags it
        holds, never for those it dropped. Allowed before :meth:`start`.

        Raises:
            MetadataError: a tag is invalid (see ``Config.tags``), or the tags and the metadata
                together exceed ``max_metadata_size``.
            ClusterClosed: the cluster is stopped.
        """
        new, why = check_tags(tags if isinstance(tags, (str, set, frozenset, list, tuple)) else list(tags))
        if why is not None:
            raise MetadataError(why)
        with self._tags_lock:
            self._engine.set_tags(new)

    def add_tag(self, tag: str) -> None:
        """Add ``tag`` to this node's tags (see :meth:`set_tags`)."""
        with self._tags_lock:
            self.set_tags(self._engine.members.tags | {tag})

    def remove_tag(self, tag: str) -> None:
        """Remove ``tag`` from this node's tags, if it holds it (see :meth:`set_tags`)."""
        with self._tags_lock:
            self.set_tags(self._engine.members.tags - {tag})

    def nodes(self) -> list[Node]:
        """Return snapshots of every known node in any state, the local node first."""
        return self._engine.members.nodes()

    def nodes_by_tag(self, tag: str) -> list[Node]:
        """Return the alive and suspect nodes that hold ``tag`` (those a tagged broadcast
        reaches), the local node first if it holds it."""
        return [n for n in self.nodes() if tag in n.tags and n.state in
                (NodeState.ALIVE, NodeState.SUSPECT)]

    def forget_node(self, node_id: Node | NodeID | str) -> bool:
        """Remove a dead or left member's record from every node's table at once, rather than
        after ``dead_node_retention_period``: the operator's word that it will not come back.

        The removal is gossiped; each member applies it only if it holds the node dead or
        left too, and only from inside the cluster (a sealed packet, or a member speaking from
        its own host). If the node does come back, it joins as a new member. ``node_id`` is a
        :class:`Node`, or an id as for :meth:`get_node`.

        Returns:
            True if the record was removed here, False if this node does not know it.

        Raises:
            NodeAliveError: the node is this one, or is held alive or suspect.
            NodeIDError: ``node_id`` is not a node id.
            GossipError: on memberlist's wire, which carries no removal (memberlist reaps dead
                members itself).
            ClusterClosed: the cluster is not started or is stopped.
        """
        engine = self._eng()
        if self._config.wire_protocol == "memberlist":
            raise GossipError("forget_node: memberlist's wire carries no removal (its members "
                              "reap dead members after their own retention)")
        node = self.get_node(node_id.id if isinstance(node_id, Node) else node_id)
        if node is None:
            return False
        try:
            return engine.forget(node.id)
        except ValueError as exc:
            raise NodeAliveError(str(exc)) from None

    def alive_nodes(self) -> list[Node]:
        """Return the alive nodes, the local node included."""
        return [n for n in self.nodes() if n.state is NodeState.ALIVE]

    def get_node(self, node_id: NodeID | str) -> Node | None:
        """Return the node with this id, or None if unknown.

        ``node_id`` is a :class:`NodeID`, its full string, or its short id
        (:attr:`NodeID.short`: the last 8 hex characters, which logs, tables and the command
        line show).

        Raises:
            NodeIDError: ``node_id`` is a string that is neither a UUID nor a short id, or a short
                id that several known nodes share (give the full id).
        """
        if isinstance(node_id, str) and len(node_id.strip()) == 8:
            short = node_id.strip().lower()
            if all(c in "0123456789abcdef" for c in short):
                matches = [n for n in self.nodes() if n.id.short == short]
                if len(matches) > 1:
                    raise NodeIDError(f"{len(matches)} known nodes have the short id {short}: "
                                      "give the full id")
                return matches[0] if matches else None
        nid = NodeID.parse(node_id)
        return self._engine.members.get_node(nid)

    def get_node_by_id_string(self, node_id: str) -> Node | None:
        """Return the node whose id (or short id) is written ``node_id``, or None (also for a
        malformed id)."""
        try:
            return self.get_node(node_id)
        except GossipError:
            return None

    def num_nodes(self) -> int:
        """Return the number of known nodes in any state, the local node included (O(1))."""
        return sum(self._engine.members.state_counts().values())

    def num_alive_nodes(self) -> int:
        """Return the number of alive nodes, the local node included (O(1))."""
        return self._engine.members.state_counts()[NodeState.ALIVE]

    def num_suspect_nodes(self) -> int:
        """Return the number of suspect nodes (O(1))."""
        return self._engine.members.state_counts()[NodeState.SUSPECT]

    def num_dead_nodes(self) -> int:
        """Return the number of dead nodes (left nodes are not counted; O(1))."""
        return self._engine.members.state_counts()[NodeState.DEAD]

    @staticmethod
    def nodes_to_ids(nodes: Iterable[Node]) -> list[NodeID]:
        """Return the ids of ``nodes``."""
        return [n.id for n in nodes]

    def node_is_local(self, node: Node) -> bool:
        """Return True if ``node`` is this node."""
        return node.id == self._id

    def calc_fan_out(self) -> int:
        """Return paularlott's fan-out for the cluster's size now (alive + suspect, self
        included): ``min(n, max(1, min(ceil(log2 n * fan_out_multiplier), 10)))``.

        One hop of a broadcast goes to ``broadcast_redundancy`` times this many peers (twice,
        by default: see :attr:`Config.broadcast_redundancy`).
        """
        counts = self._engine.members.state_counts()
        n = counts[NodeState.ALIVE] + counts[NodeState.SUSPECT]
        return calc_fan_out(n, self._config.fan_out_multiplier)

    def calc_payload_size(self, total: int) -> int:
        """Return how many of ``total`` items to carry in one gossip payload."""
        return calc_payload_size(total, self._config.state_exchange_multiplier)

    def get_candidates(self) -> list[Node]:
        """Return up to :meth:`calc_fan_out` random alive or suspect peers (not this node),
        sampled by the core without building a snapshot of the whole membership."""
        return self._engine.members.candidates(self.calc_fan_out())

    def health_score(self) -> int:
        """Return the Lifeguard local health score (0 is healthy, higher is worse)."""
        if not self._started:
            return 0
        return self._engine.locked(lambda core: core.health_score())

    def probe_rtt(self) -> ProbeRtt:
        """Return the round-trip times of this node's directly acked probes.

        A snapshot, read under the core's lock: a histogram of every sample since start
        (``bounds``, per-bucket ``counts``, ``sum`` and ``count``; seconds) and ``last``, the
        last round trip measured to each member by id. Only acks from the probed member itself
        are samples (indirect acks through helpers are not). Before :meth:`start` it is empty.
        """
        if not self._started:
            return ProbeRtt()
        return self._engine.locked(lambda core: core.probe_rtt())

    def explain(self, node_id: NodeID | str) -> Explanation | None:
        """Return why this node holds ``node_id`` in its state: its suspicion provenance.

        The :class:`~gossip.protocol.provenance.Explanation` lists the member's last suspicion
        episodes (at most ``config.suspicion_history_size``, oldest first): who accused it
        first, when and at which incarnation, how the accusation arrived (this node's own
        probe, the accuser itself, gossip, a state exchange), each confirmation that shortened
        the timeout (from whom, when, how, the timeout before and after), and how it ended
        (refuted at an incarnation, declared dead by whom and when, or left). It also gives the
        member's flap score. Times are wall-clock (``time.time()``) seconds. None for a node
        this one does not know (or before :meth:`start`).

        Raises:
            NodeIDError: ``node_id`` is a string that is not a UUID.
        """
        nid = NodeID.parse(node_id)
        if not self._started:
            return None
        exp = self._engine.locked(lambda core: core.insight.explain(time.monotonic(), nid))
        return None if exp is None else exp.shifted(time.time() - time.monotonic())

    def flap_scores(self) -> dict[NodeID, int]:
        """Return each member's flap score: its state changes within the last
        ``config.flap_window`` seconds (members with none are absent)."""
        if not self._started:
            return {}
        return self._engine.locked(lambda core: core.insight.flap_scores(time.monotonic()))

    def stats(self) -> dict[str, int]:
        """Return the counters of the engine, the transport (``transport.*``) and the core
        (``core.*``): packets, drops, bad packets by reason, handler errors, streams
        (``streams.*``: see :mod:`gossip.engine.stream_pool`)...; with a key,
        ``keyring.primary_seals`` (packets this node sealed under its own key derived from the
        primary key: rotate the key well before any node reaches
        :data:`gossip.security.MAX_SEALS_PER_KEY`)."""
        out = self._engine.stats()
        if self._keyring is not None:
            out["keyring.primary_seals"] = self._keyring.primary_seals
        return out

    # ------------------------------------------------------------------ hosting WebSocket

    def websocket_handler(self, websocket: ServerConnection) -> None:
        """Serve one gossip connection accepted by the host's ``websockets.sync`` server.

        For a node that listens on WebSocket through its host's server instead of its own
        (``socket_transport_enabled=False``, no ``websocket_bind_addr``, ``advertise_addr`` the
        ``ws://`` or ``wss://`` URL the host serves)::

            from websockets.sync.server import serve
            with serve(cluster.websocket_handler, "0.0.0.0", 8080,
                       process_request=cluster.websocket_process_request,
                       max_size=cluster.config.tcp_max_packet_size, compression=None) as server:
                server.serve_forever()

        Only connections at ``config.websocket_path`` are served; others, and those without a
        proof of the bearer token, are closed with code 1008 and the reason
        (``process_request`` refuses them earlier, with an HTTP status, and carries the token's
        challenge: pass it whenever a token is set). Without a token, give the server a small
        ``max_size`` and state it in ``config.websocket_host_max_size``. It blocks until the
        connection ends (the server runs each handler on its own thread). A cluster not started
        closes the connection with 1013.
        """
        transport = self._websocket_transport() if self._started else None
        if transport is None or self._stopped:
            try:
                websocket.close(1013, "gossip is not running")
            except Exception:  # the connection may be gone already
                pass
            return
        transport.serve_connection(websocket)

    def websocket_process_request(self, websocket: ServerConnection, request: Request) -> Response | None:
        """``process_request`` for the host's ``websockets.sync`` server: answer a gossip
        handshake's bearer-token challenge, or refuse it, before the upgrade: 401 with
        ``WWW-Authenticate`` (the token's challenge, or a missing or wrong proof), 403 (a
        browser's origin, streams not accepted), 503.

        Returns None (go on) for paths other than ``config.websocket_path``, so that the host's
        own routes are untouched.
        """
        if request.path.split("?", 1)[0] != self._config.websocket_path:
            return None
        transport = self._websocket_transport() if self._started else None
        if transport is None or self._stopped:
            return websocket.respond(503, "gossip is not running\n")
        refusal = transport.screen(request.path, request.headers, request)
        if refusal is None:
            return None
        response = websocket.respond(refusal.status, refusal.reason + "\n")
        for name, value in refusal.headers:
            response.headers[name] = value
        return response

    def host_websocket_connection(self, path: str, headers: Any, peer: tuple[str, int] | None,
                                  wake: Callable[[], None]) -> HostedConnection | Refusal:
        """Accept a gossip connection that another WebSocket implementation carries.

        This is how a node listens through any WebSocket server or library (the ASGI bridge
        :mod:`gossip.contrib.asgi` is built on it): call it with the opening handshake's path
        (query included) and headers (a mapping with case-insensitive ``get``) before accepting
        the upgrade. On a :class:`~gossip.transports.websocket.HostedConnection`, accept the
        upgrade and drive it as its docstring says; on a
        :class:`~gossip.transports.websocket.Refusal` (bad path or token, limits, not started),
        deny the upgrade with its status and reason. ``wake`` is called, from any thread, when
        the connection has messages to send or its reading or closing state changed; it must
        not block.
        """
        transport = self._websocket_transport() if self._started else None
        if transport is None or self._stopped:
            return wiring.not_running()
        return transport.host_connection(path, headers, peer, wake)

    def serve_http(self, method: str, path: str, headers: Mapping[str, str],
                   read_body: Callable[[int], bytes], peer: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        """Answer one gossip POST that a host's web server carries (a node that listens on HTTP
        through its host: ``socket_transport_enabled=False``, no ``http_bind_addr``, and
        ``advertise_addr`` the ``http(s)://`` URL the host serves).

        The WSGI and ASGI applications of :mod:`gossip.contrib.http` are built on it. ``headers``
        has lower-case names; ``read_body(n)`` returns the body's next ``n`` bytes and is called
        only once the declared length passed the limits; ``path`` is ``""`` when the host routed
        the request here (it is then not judged); ``peer`` is the client's ``ip:port``.

        Returns:
            ``(status, headers, body, close)``: the response, and whether to close the
            connection. A node that does not run answers 503.
        """
        transport = wiring.http_side(self._engine.transport) if self._started and not self._stopped else None
        if transport is None:
            return 503, [("Content-Type", "text/plain")], b"gossip is not running\n", True
        return transport.exchanges.serve(method, path, {k.lower(): v for k, v in headers.items()},
                                         read_body, peer, False)

    # ------------------------------------------------------------------ message handlers

    def handle_func(self, msg_type: int, handler: MessageHandlerFunc) -> None:
        """Handle ``msg_type`` with ``handler(sender, packet)``; messages are also relayed on.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
        """
        self._handlers().register(msg_type, HANDLER_FORWARD, handler)

    def handle_func_no_forward(self, msg_type: int, handler: MessageHandlerFunc) -> None:
        """Handle ``msg_type`` with ``handler(sender, packet)``; messages are not relayed.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
        """
        self._handlers().register(msg_type, HANDLER_NO_FORWARD, handler)

    def handle_func_with_reply(self, msg_type: int, handler: ReplyHandlerFunc) -> None:
        """Answer requests of ``msg_type``: ``handler(sender, packet)`` returns the reply.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
        """
        self._handlers().register(msg_type, HANDLER_REPLY, handler)

    def handle_stream_func(self, msg_type: int, handler: StreamHandlerFunc) -> None:
        """Serve streams opened with ``msg_type``: ``handler(sender, packet, stream)``.

        The handler runs on a thread of the stream pool (at most ``max_concurrent_streams`` at
        once; openings beyond are refused), never on a packet worker. ``packet`` is the opening
        packet (``packet.unmarshal()`` gives the opener's payload); ``sender`` is in state
        ``UNKNOWN`` when the opener is not a known member. The stream is closed when the handler returns; if it
        raises, the exception is logged and counted (``streams.handler_errors``) and the
        stream is aborted, so the opener's reads raise :class:`~gossip.errors.RemoteHandlerError`.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler (of any kind).
        """
        self._handlers().register(msg_type, HANDLER_STREAM, handler)

    def unregister_message_type(self, msg_type: int) -> bool:
        """Remove the handler of ``msg_type``; return False if there was none."""
        return self._handlers().unregister(msg_type)

    def _handlers(self) -> MessageHandlers:
        return self._engine.message_handlers

    # ------------------------------------------------------------------ sending

    def send(self, msg_type: int, data: Any,
             transport: TransportType = TransportType.BEST_EFFORT) -> None:
        """Broadcast ``data`` to the cluster (epidemic).

        Args:
            msg_type: the message type (64 and up).
            data: any value the codec can encode.
            transport: :attr:`TransportType.BEST_EFFORT` (datagrams when they fit) or
                :attr:`TransportType.RELIABLE` (the same as :meth:`send_reliable`).

        Raises:
            LocalProtocolError: internal type, ``data`` cannot be encoded, or ``transport`` is
                not a :class:`TransportType`.
            ClusterClosed: the cluster is not started or is stopped.
        """
        self._eng().broadcast(msg_type, data, _reliable(transport))

    def send_excluding(self, msg_type: int, data: Any, exclude: Iterable[NodeID],
                       transport: TransportType = TransportType.BEST_EFFORT) -> None:
        """Like :meth:`send`, never sending directly to the nodes in ``exclude``."""
        self._eng().broadcast(msg_type, data, _reliable(transport), tuple(exclude))

    def send_reliable(self, msg_type: int, data: Any) -> None:
        """Like :meth:`send`, over reliable (TCP) connections."""
        self._eng().broadcast(msg_type, data, True)

    def send_reliable_excluding(self, msg_type: int, data: Any, exclude: Iterable[NodeID]) -> None:
        """Like :meth:`send_reliable`, never sending directly to the nodes in ``exclude``."""
        self._eng().broadcast(msg_type, data, True, tuple(exclude))

    def send_tagged(self, tag: str, msg_type: int, data: Any) -> None:
        """Broadcast ``data`` to the nodes holding ``tag`` (best effort, epidemic): only they
        are sent it, and only they handle and relay it (as paularlott's ``SendTagged``).

        Raises:
            LocalProtocolError: internal type, an invalid tag, or ``data`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        self._eng().broadcast(msg_type, data, False, tag=tag)

    def send_tagged_reliable(self, tag: str, msg_type: int, data: Any) -> None:
        """Like :meth:`send_tagged`, over reliable (TCP) connections."""
        self._eng().broadcast(msg_type, data, True, tag=tag)

    def send_to(self, node: Node, msg_type: int, data: Any,
                transport: TransportType = TransportType.BEST_EFFORT) -> None:
        """Send ``data`` to one node (never relayed further). A node known dead or left is
        not sent to: counted (``dropped.node_dead``, ``dropped.node_left``), or
        :class:`~gossip.errors.NodeUnavailable` under ``best_effort_full_policy="raise"``.

        ``transport=TransportType.RELIABLE`` is the same as :meth:`send_to_reliable`.
        """
        self._eng().send_direct((node,), msg_type, data, _reliable(transport))

    def send_to_reliable(self, node: Node, msg_type: int, data: Any) -> None:
        """Send ``data`` to one node over a reliable connection."""
        self._eng().send_direct((node,), msg_type, data, True)

    def send_to_peers(self, nodes: Iterable[Node], msg_type: int, data: Any,
                      transport: TransportType = TransportType.BEST_EFFORT) -> None:
        """Send ``data`` to each of ``nodes`` as :meth:`send_to`; then raise the first failure.

        ``transport=TransportType.RELIABLE`` is the same as :meth:`send_to_peers_reliable`.
        """
        self._eng().send_direct(nodes, msg_type, data, _reliable(transport))

    def send_to_peers_reliable(self, nodes: Iterable[Node], msg_type: int, data: Any) -> None:
        """Send ``data`` to each of ``nodes`` over reliable connections."""
        self._eng().send_direct(nodes, msg_type, data, True)

    def send_to_with_response(self, node: Node, msg_type: int, payload: Any,
                              response_type: type[Any] | None = None,
                              timeout: float | None = None) -> Any:
        """Send a request to ``node`` and return its reply, decoded as ``response_type``.

        Args:
            node: the node to ask (it registered ``msg_type`` with :meth:`handle_func_with_reply`).
            response_type: a dataclass or type to rebuild the reply as; None for plain values.
            timeout: seconds to wait (default ``config.tcp_deadline``).

        Raises:
            GossipTimeout: no reply in time (the message names the node).
            TransportError: the node could not be reached, or closed the connection unanswered.
            DecodeError, EncryptionError: the reply is malformed, does not fit
                ``response_type``, or is not authentic (the node seals with another key).
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        return self._eng().request(node, msg_type, payload, response_type, timeout)

    def open_stream(self, node: Node, msg_type: int, payload: Any = None,
                    timeout: float | None = None) -> Stream:
        """Open a stream to ``node``, served there by its :meth:`handle_stream_func` handler.

        A connection dedicated to the stream is dialed, the opening packet (``msg_type`` and
        ``payload``) is sent, and the peer's acceptance is awaited, all within ``timeout``. On
        any failure the connection is closed: nothing is left half open.

        Args:
            node: the node to stream with.
            msg_type: the type its stream handler is registered for (64..65535).
            payload: any codec-able value, given to the handler as the opening packet.
            timeout: seconds for the whole opening (default ``config.stream_open_timeout``).

        Returns:
            The open :class:`~gossip.Stream` (use it as a context manager).

        Raises:
            StreamRefused: the node has no stream handler for ``msg_type``, its stream pool is
                full, it does not hold our key, it is stopping, or it closed the connection
                without answering (``reason`` says which).
            GossipTimeout: no answer within ``timeout``.
            ConnectError: the node could not be reached.
            EncryptionError, DecodeError: the answer is not authentic or malformed.
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        return self._eng().streams.open(node, msg_type, payload, timeout)

    # ------------------------------------------------------------------ Serf

    def handle_serf_event_func(self, fn: Callable[[str, bytes], None]) -> None:
        """Call ``fn(name, payload)`` for each Serf user event (``Config.serf``).

        Raises:
            ConfigError: the node is not a Serf member.
        """
        self._serf_on().add_handler(fn)

    def serf_event(self, name: str, payload: bytes = b"") -> None:
        """Send a Serf user event to every live member (Serf agents pass it on).

        Raises:
            ConfigError: the node is not a Serf member.
            LocalProtocolError: name and payload over Serf's 9 KiB.
        """
        self._serf_on().event(name, payload)

    def _serf_on(self) -> Serf:
        if self._serf is None:
            raise ConfigError("serf", "Serf events need Config(wire_protocol='memberlist', serf=True)")
        return self._serf

    # ------------------------------------------------------------------ event handlers

    def handle_node_state_change_func(self, fn: StateHandler) -> HandlerID:
        """Call ``fn(node, previous_state)`` on every state change, in order, on one thread.

        Events are delivered asynchronously on the event thread: :meth:`get_node` may already
        show a newer state than the event being handled; ``node`` is the snapshot taken when
        the change happened. A member that is forgotten (left long ago, or dead past its
        retention) arrives as a change to ``NodeState.UNKNOWN``.
        """
        return self._engine.state_handlers.add(fn)

    def handle_node_metadata_change_func(self, fn: MetadataHandler) -> HandlerID:
        """Call ``fn(node)`` whenever a node's metadata changes (the local node's too)."""
        return self._engine.metadata_handlers.add(fn)

    def handle_cluster_event_func(self, fn: ClusterEventHandler) -> HandlerID:
        """Call ``fn(event)`` for each cluster event this node sees, on the event thread.

        Events are :class:`~gossip.protocol.flap.MemberFlapping` (a member's flap score reached
        ``config.flap_threshold``), :class:`~gossip.protocol.partition.PartitionSuspected` (a
        large share of the live members was lost within ``config.partition_window``) and
        :class:`~gossip.protocol.partition.PartitionHealed` (they came back),
        :class:`~gossip.protocol.actions.MemberRefused` (a member speaks no protocol version
        in common with ours: on memberlist's wire, its version range), and from a join in
        the background :class:`~gossip.joining.JoinSucceeded` and
        :class:`~gossip.joining.JoinAttemptFailed` (see :meth:`join`). They are delivered
        in order with the state and metadata events, never concurrently, right after the state
        change that caused them; their times are wall-clock seconds.
        """
        return self._engine.cluster_handlers.add(fn)

    def remove_cluster_event_handler(self, handler_id: HandlerID) -> bool:
        """Remove a cluster event handler; return False if the id is unknown."""
        return self._engine.cluster_handlers.remove(handler_id)

    def handle_gossip_func(self, fn: GossipHandler) -> HandlerID:
        """Call ``fn()`` every ``gossip_interval`` (adaptive) so the application can gossip."""
        return self._engine.gossip_handlers.add(fn)

    def remove_node_state_change_handler(self, handler_id: HandlerID) -> bool:
        """Remove a state handler; return False if the id is unknown."""
        return self._engine.state_handlers.remove(handler_id)

    def remove_node_metadata_change_handler(self, handler_id: HandlerID) -> bool:
        """Remove a metadata handler; return False if the id is unknown."""
        return self._engine.metadata_handlers.remove(handler_id)

    def remove_gossip_handler(self, handler_id: HandlerID) -> bool:
        """Remove a gossip handler; return False if the id is unknown."""
        return self._engine.gossip_handlers.remove(handler_id)


    # ------------------------------------------------------------------ key rotation

    def rotate_key(self, new_key: bytes, progress: RotationProgress | None = None, *,
                   timeout: float = 30.0, drain: float = 1.0, force: bool = False) -> RotationReport:
        """Rotate every alive member to ``new_key`` in one call (:mod:`gossip.rotation`).

        Installs the key on every alive member (over requests sealed under the current key),
        waits until all have it, makes it every member's primary, then removes the other keys
        once no member still receives packets sealed under them. Calling it again with the
        same key carries on from where the members are. Members that are down are listed in
        the report and the old key is kept for them, unless ``force``: see
        docs/key-rotation.md for how they catch up.

        Args:
            new_key: the new key (16, 24 or 32 bytes; 32 with XChaCha20-Poly1305).
            progress: called as ``progress(step, done, total)`` after each member's answer;
                ``step`` is ``"install"``, ``"switch"`` or ``"remove"``.
            timeout: seconds the whole rotation may take; a step not done by then is reported.
            drain: seconds to wait after the switch, and between asks to a member that still
                receives packets under the old key, before removing it.
            force: remove the old key even though some members are down (they then need the
                new key to come back).

        Returns:
            a :class:`~gossip.rotation.RotationReport`: per member, installed, switched,
            removed; the members that were down; whether the rotation is complete.

        Raises:
            ConfigError: the cluster is not encrypted, ``encrypt_outgoing`` is off, or the key
                has a bad length for the cipher (never quoting the key).
            LocalProtocolError: a rotation is already running here, or bad timeout/drain.
            ClusterClosed: the cluster is not started, or is stopped during the rotation.
        """
        from .rotation import rotate_key

        self._eng()
        if self._rotation is None and self._keyring is not None:
            raise ConfigError("wire_protocol", "key rotation runs on this library's own wire "
                              "(wire_protocol='gossip'), not on memberlist's")
        if self._rotation is None:
            raise ConfigError("encryption_key", "the cluster is not encrypted: there is no key "
                              "to rotate (start every node with an encryption_key first)")
        return rotate_key(self, self._rotation, new_key, progress=progress, timeout=timeout,
                          drain=drain, force=force)

    # ------------------------------------------------------------------ placement

    def owners(self, key: str | bytes, n: int = 1, group: NodeSource | None = None) -> list[Node]:
        """Return the ``n`` alive members that own ``key`` (rendezvous hashing), first owner first.

        Every node that sees the same alive members computes the same owners; when a member
        leaves only its keys move. ``group`` (a :class:`~gossip.NodeGroup`) narrows the
        candidates; a member's metadata ``weight`` (an int, default 1) scales its share. See
        :mod:`gossip.placement`.
        """
        from .placement import owners

        return owners(self, key, n, group)

    def owner(self, key: str | bytes, group: NodeSource | None = None) -> Node | None:
        """Return the alive member that owns ``key`` (:meth:`owners` with ``n=1``), or None."""
        found = self.owners(key, 1, group)
        return found[0] if found else None


def _serf_for(cluster: Cluster) -> Serf:
    """Build a Serf member on the cluster's public API (memberlist user messages)."""
    from .memberlist.serf import Serf as _Serf

    serf = _Serf(cluster.config.name, lambda node, data: cluster.send_to_reliable(node, USER_MSG, data),
                 cluster.alive_nodes)
    cluster.handle_func(USER_MSG, lambda node, pkt: serf.on_message(pkt.unmarshal()))
    cluster.handle_node_state_change_func(serf.on_state)
    return serf
