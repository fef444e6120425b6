"""The threaded host of the election: :class:`LeaderElection` on top of a :class:`gossip.Cluster`.

It owns two threads: ``gossip-<node>-leader`` ticks the :class:`~gossip.leader.election.Election`
core every ``check_interval`` (and soon after each membership change), and sends the leader's
heartbeats; ``gossip-<node>-leader-events`` delivers the events to the application's handlers,
in order, one at a time, with no lock held. Heartbeats arrive on the cluster's incoming workers
through a message handler of type ``heartbeat_msg_type``.

The eligible members (those matching ``metadata_criteria``) are a :class:`~gossip.NodeGroup`,
built with the election and closed by :meth:`LeaderElection.stop`: :meth:`LeaderElection.get_node_group`
returns it, and :meth:`LeaderElection.send_to_peers` sends to it (to the whole cluster when
every node is eligible), as paularlott/gossip's ``GetNodeGroup`` and ``SendToPeers`` do.

Heartbeats go directly (never relayed) to every known member that has not left, dead ones
included: after a partition heals they reach the other side before the membership views have
merged, which keeps its nodes from standing against a leader that already exists. Followers
answer each with an acknowledgement to the leader, which needs a quorum of them to keep leading.
All election messages are best-effort datagrams of type ``heartbeat_msg_type``.

:meth:`LeaderElection.is_leader` reads the lease against the clock at each call, and the ticker
wakes when the lease runs out, so leadership ends on time even between two checks.

Authentication: on a cluster with an encryption key that seals what it sends, election messages
are accepted only from sealed packets, and a heartbeat only from the member it names. Without a
key, any host that can reach a node can forge heartbeats and acknowledgements, and so make
itself leader, depose the leader or keep a cut-off leader in office: :meth:`LeaderElection.start`
says so in a warning.

This module uses only the public :class:`gossip.Cluster` API.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ClusterClosed, ConfigError, GossipError
from ..handlers import EventHandlers, HandlerID
from ..node import Node, NodeID, NodeState
from ..wire import TransportType, is_reliable
from .election import (
    Ack, Action, Election, Heartbeat, LeaderConfig, LeaderEvent, Notify, Peer, SendAck, decode_message,
    encode_message, quorum,
)

if TYPE_CHECKING:
    from ..cluster import Cluster
    from ..groups import NodeGroup
    from ..packet import Packet

__all__ = ["LeaderElection", "LeaderEventHandler"]

logger = logging.getLogger("gossip.leader")

LeaderEventHandler = Callable[[LeaderEvent, NodeID], None]
"""``fn(event, node_id)``: ``node_id`` is the leader the event is about."""

_EVENT_QUEUE_SIZE = 1024
_HEARTBEAT_STATES = (NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD)


class LeaderElection:
    """Elect one leader among the nodes of a cluster, with a quorum of the known membership.

    Safe only on an encrypted cluster (``Config.encryption_key``): there, election messages are
    accepted only from sealed packets whose sender is the member the message names. On an
    unencrypted cluster any host that can send a packet to a node can make itself leader,
    depose the leader or keep a cut-off leader leading, so two nodes may lead at once;
    :meth:`start` logs a warning saying so.

    Args:
        cluster: the cluster whose nodes elect (started before or after :meth:`start`).
        config: the election settings (default :class:`LeaderConfig()`).

    Raises:
        ConfigError: the cluster speaks memberlist's wire, which carries no election messages.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with LeaderElection(cluster) as election:
            election.handle_event_func(BECAME_LEADER, lambda event, node_id: start_work())

    The election logic is :class:`gossip.leader.election.Election`; its module documentation
    states the rules.
    """

    def __init__(self, cluster: Cluster, config: LeaderConfig | None = None) -> None:
        if cluster.config.wire_protocol != "gossip":
            raise ConfigError("wire_protocol", "leader election needs wire_protocol='gossip': "
                              "memberlist's wire carries no election messages")
        self._cluster = cluster
        self.config = config if config is not None else LeaderConfig()
        self._criteria = self.config.criteria()
        self._id = cluster.local_node().id
        self._name = f"gossip-{self._id.short}-leader"
        self._lock = threading.Lock()
        self._wake = threading.Condition(threading.Lock())
        self._dirty = False
        self._core: Election | None = None
        self._handlers: dict[LeaderEvent, EventHandlers[LeaderEventHandler]] = {
            e: EventHandlers() for e in LeaderEvent}
        self._events: queue.Queue[Notify | None] = queue.Queue(_EVENT_QUEUE_SIZE)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._registered = False
        self._state_hid: HandlerID | None = None
        self._meta_hid: HandlerID | None = None
        self._is_leader = False
        self._lease_until = -math.inf
        self._leader: NodeID | None = None
        self._stats: dict[str, int] = {}
        self._authenticate = False
        self._warned_missing = -math.inf
        self._group: NodeGroup | None = None
        if self._criteria is not None:
            from ..groups import NodeGroup  # here: a node that elects no leader never loads it

            self._group = NodeGroup(cluster, self._criteria)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Register the heartbeat handler and start the election threads (idempotent).

        Raises:
            HandlerExistsError: ``heartbeat_msg_type`` already has a handler on this cluster.
            ClusterClosed: this election was stopped (create a new one instead).
        """
        with self._lock:
            if self._stopped:
                raise ClusterClosed("a stopped LeaderElection cannot be restarted; create a new one")
            if self._started:
                return
            self._authenticate = self._check_security()
            self._cluster.handle_func_no_forward(self.config.heartbeat_msg_type, self._on_message)
            self._registered = True
            self._state_hid = self._cluster.handle_node_state_change_func(self._on_membership)
            self._meta_hid = self._cluster.handle_node_metadata_change_func(self._on_metadata)
            self._core = Election(self._id, self.config, time.monotonic())
            self._started = True
            for name, target in ((self._name, self._tick_loop), (f"{self._name}-events", self._event_loop)):
                t = threading.Thread(target=target, name=name, daemon=True)
                self._threads.append(t)
                t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop electing: unregister every handler, resign if leading, join the threads.

        A leader tells the other nodes it resigns for good, so they elect a successor
        ``leader_timeout`` later without waiting for their failure detectors, and its handlers
        get ``STEPPED_DOWN`` before this returns. Idempotent; at most ``timeout`` seconds.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
        if self._group is not None:
            self._group.close()
        if not started:
            return
        end = time.monotonic() + timeout
        self._unregister()
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        me = threading.current_thread()
        ticker, deliverer = self._threads
        if ticker is not me:
            ticker.join(max(0.0, end - time.monotonic()))
        with self._lock:
            assert self._core is not None
            self._core.stop(time.monotonic())
            actions = self._take_actions()
        self._perform(actions)
        self._queue_event(None)
        if deliverer is not me:
            deliverer.join(max(0.0, end - time.monotonic()))
        stragglers = [t.name for t in self._threads if t.is_alive() and t is not me]
        if stragglers:
            logger.warning("leader election threads still running after stop(): %s", ", ".join(stragglers))

    def _check_security(self) -> bool:
        """Return whether election messages can be authenticated; warn when they cannot."""
        keyring = self._cluster.keyring
        if keyring is None:
            logger.warning(
                "leader election on an unencrypted cluster is not safe: any host that can send a "
                "packet to a node can make itself leader, depose the leader, or keep a cut-off "
                "leader leading, so two nodes may lead at once (set Config.encryption_key)")
            return False
        if not self._cluster.config.encrypt_outgoing:
            logger.warning(
                "leader election accepts plain election messages while encrypt_outgoing is False: "
                "it is not safe until every node seals what it sends (finish the move to encryption)")
            return False
        return True

    @property
    def authenticated(self) -> bool:
        """True if election messages are accepted only from sealed packets (an encrypted
        cluster); False before :meth:`start` and on an unencrypted cluster."""
        return self._authenticate

    def _unregister(self) -> None:
        c = self._cluster
        if self._registered:
            c.unregister_message_type(self.config.heartbeat_msg_type)
            self._registered = False
        if self._state_hid is not None:
            c.remove_node_state_change_handler(self._state_hid)
            self._state_hid = None
        if self._meta_hid is not None:
            c.remove_node_metadata_change_handler(self._meta_hid)
            self._meta_hid = None

    def __enter__(self) -> LeaderElection:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        role = "leader" if self._is_leader else (
            f"following {self._leader.short}" if self._leader else "no leader")
        return f"<LeaderElection {self._id.short}: {role}>"

    # ------------------------------------------------------------------ queries

    def is_leader(self) -> bool:
        """Return True if the local node is the leader now: it holds a lease (a quorum
        acknowledged it within the lease) that has not run out."""
        return self._is_leader and time.monotonic() < self._lease_until

    def leader_id(self) -> NodeID | None:
        """Return the leader's id, or None when there is no valid leader."""
        return self._leader

    def leader(self) -> Node | None:
        """Return the leader's node snapshot, or None when there is no valid leader."""
        nid = self._leader
        return None if nid is None else self._cluster.get_node(nid)

    def has_leader(self) -> bool:
        """Return True if there is a valid leader (the local node or another)."""
        return self._leader is not None

    def get_node_group(self) -> NodeGroup | None:
        """Return the group of the members eligible to lead (those matching
        :attr:`LeaderConfig.metadata_criteria`), None when every node is eligible (no criteria).

        The group follows the cluster from the election's construction until :meth:`stop`,
        which closes it (paularlott's ``GetNodeGroup``).
        """
        return self._group

    def send_to_peers(self, msg_type: int, data: Any,
                      transport: TransportType = TransportType.BEST_EFFORT) -> None:
        """Send ``data`` to the eligible members (:meth:`get_node_group`) but the local node,
        each once; without criteria, broadcast it to the cluster (:meth:`gossip.Cluster.send`),
        as paularlott's ``SendToPeers`` does.

        Args:
            msg_type: the message type (64 and up; not ``heartbeat_msg_type``, the election's).
            data: any value the codec can encode.
            transport: :attr:`~gossip.TransportType.BEST_EFFORT`, or
                :attr:`~gossip.TransportType.RELIABLE` (the same as
                :meth:`send_to_peers_reliable`).

        Raises:
            LocalProtocolError: ``msg_type`` is internal, ``data`` cannot be encoded, or
                ``transport`` is not a :class:`~gossip.TransportType`.
            ClusterClosed: the cluster is not running, or this election was stopped while it
                has a group (its group is closed).
        """
        reliable = is_reliable(transport)
        group = self._group
        if group is None:
            if reliable:
                self._cluster.send_reliable(msg_type, data)
            else:
                self._cluster.send(msg_type, data)
            return
        if group.closed:
            raise ClusterClosed("this leader election was stopped: its group of eligible "
                                "members is closed")
        group.send_to_peers(msg_type, data, transport=transport)

    def send_to_peers_reliable(self, msg_type: int, data: Any) -> None:
        """Like :meth:`send_to_peers`, over reliable connections."""
        self.send_to_peers(msg_type, data, transport=TransportType.RELIABLE)

    @property
    def term(self) -> int:
        """The highest election term this node has seen (0 before any election)."""
        with self._lock:
            return 0 if self._core is None else self._core.term

    def quorum_size(self) -> int:
        """Return how many eligible members, this node included, make a quorum now: the
        quorum percentage of the quorum's base (0 before :meth:`start`). Services that
        replicate to a quorum (:class:`gossip.locks.LockService`) use the same number, so that
        any two of their quorums, and any of theirs and the election's, share a member."""
        with self._lock:
            if self._core is None:
                return 0
            return quorum(self._core.quorum_base, self.config.quorum_percentage)

    def quorum_members(self) -> list[NodeID]:
        """Return the members confirmed alive that the quorum is measured against, those the
        membership has forgotten included (see :meth:`remove_members`)."""
        with self._lock:
            return [] if self._core is None else self._core.remembered()

    def remove_members(self, node_ids: list[NodeID]) -> int:
        """Stop counting members that are gone for good in the quorum; return how many were counted.

        The quorum is measured against every eligible member confirmed alive, even after the
        failure detector forgets it (``dead_node_retention_period``), so that the small side of a
        long partition never becomes a majority of what it remembers. Members that crashed and
        will not return (replaced under new ids) keep counting until removed here, or set
        :attr:`LeaderConfig.expected_members`. A member seen alive again counts again.
        """
        with self._lock:
            return 0 if self._core is None else self._core.remove_members(node_ids)

    def stats(self) -> dict[str, int]:
        """Return the election's counters (heartbeats sent, received, ignored; elections...)."""
        with self._lock:
            out = dict(self._stats)
            if self._core is not None:
                out.update(self._core.stats)
        return out

    # ------------------------------------------------------------------ event handlers

    def handle_event_func(self, event: LeaderEvent, fn: LeaderEventHandler) -> HandlerID:
        """Call ``fn(event, node_id)`` on every ``event``, in order, on the events thread.

        Raises:
            ValueError: ``event`` is not a :class:`LeaderEvent`.
        """
        try:
            kind = LeaderEvent(event)
        except ValueError:
            raise ValueError(f"not a leader event: {event!r}; expected one of "
                             f"{', '.join(e.name for e in LeaderEvent)}") from None
        return self._handlers[kind].add(fn)

    def remove_event_handler(self, handler_id: HandlerID) -> bool:
        """Remove a handler added by :meth:`handle_event_func`; return False if unknown."""
        return any(h.remove(handler_id) for h in self._handlers.values())

    # ------------------------------------------------------------------ driving the core

    def _view(self) -> tuple[list[Node], list[Peer]]:
        nodes = self._cluster.nodes()
        crit = self._criteria
        return nodes, [Peer(n.id, n.state, crit is None or crit.matches(n.metadata)) for n in nodes]

    def _take_actions(self) -> list[Action]:
        """Drain the core: queue its events in order (still under the lock), return the sends."""
        assert self._lock.locked() and self._core is not None
        core = self._core
        self._is_leader, self._leader = core.is_leader, core.leader
        self._lease_until = core.lease_until
        rest: list[Action] = []
        for a in core.actions_to_perform():
            if isinstance(a, Notify):
                self._queue_event(a)
            else:
                rest.append(a)
        return rest

    def _queue_event(self, note: Notify | None) -> None:
        """Queue an event (or the closing sentinel) without ever blocking: if the handlers are
        this far behind, the oldest event goes (counted, warned)."""
        while True:
            try:
                self._events.put_nowait(note)
                return
            except queue.Full:
                try:
                    self._events.get_nowait()
                except queue.Empty:
                    continue
                self._count("events_dropped")
                logger.warning("leader event queue full (%d): handlers are too slow, dropping "
                               "the oldest event", _EVENT_QUEUE_SIZE)

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + n

    def _step(self, fn: Callable[[Election, float, list[Peer]], None]) -> None:
        nodes, peers = self._view()
        with self._lock:
            if self._core is None or self._stopped:
                return
            fn(self._core, time.monotonic(), peers)
            actions = self._take_actions()
        self._perform(actions, nodes)

    def _perform(self, actions: list[Action], nodes: list[Node] | None = None) -> None:
        """Send what the core asked for (no lock held: this is I/O)."""
        mt = self.config.heartbeat_msg_type
        for a in actions:
            try:
                if isinstance(a, Heartbeat):
                    if nodes is None:
                        nodes = self._cluster.nodes()
                    targets = [n for n in nodes if n.state in _HEARTBEAT_STATES and n.id != self._id]
                    if targets:
                        self._cluster.send_to_peers(targets, mt, encode_message(a))
                        self._count_locked("heartbeats_sent", len(targets))
                elif isinstance(a, SendAck):
                    leader = self._cluster.get_node(a.node)
                    if leader is not None:
                        self._cluster.send_to(leader, mt, encode_message(Ack(a.term, a.seq)))
                        self._count_locked("acks_sent")
            except GossipError as exc:
                self._count_locked("send_errors")
                logger.debug("! election message not sent: %s", exc)

    def _count_locked(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._count(name, n)

    def _on_message(self, sender: Node, packet: Packet) -> None:
        if sender.state is NodeState.UNKNOWN:
            self._count_locked("messages_from_unknown")
            return
        if self._authenticate and not packet.encrypted:
            self._count_locked("messages_unauthenticated")
            logger.debug("! plain election message from %s refused: this cluster seals them",
                         sender.id.short)
            return
        try:
            msg = decode_message(packet.unmarshal())
        except (GossipError, ValueError) as exc:
            self._count_locked("messages_malformed")
            logger.debug("! malformed election message from %s: %s", sender.id.short, exc)
            return
        if isinstance(msg, Heartbeat) and msg.leader is not None and msg.leader.bytes != packet.sender:
            self._count_locked("messages_wrong_leader")
            logger.debug("! heartbeat from %s names another leader", sender.id.short)
            return
        if isinstance(msg, Ack):
            # O(1): the core only records it, so only the sender's record is needed.
            crit = self._criteria
            peer = Peer(sender.id, sender.state, crit is None or crit.matches(sender.metadata))
            with self._lock:
                self._count("acks_received")
                if self._core is None or self._stopped:
                    return
                self._core.receive(time.monotonic(), sender.id, msg, (peer,))
                actions = self._take_actions()
            self._perform(actions)
            return
        self._count_locked("heartbeats_received")
        self._step(lambda core, now, peers: core.receive(now, sender.id, msg, peers))

    def _on_membership(self, node: Node, prev: NodeState) -> None:
        self._poke()

    def _on_metadata(self, node: Node) -> None:
        self._poke()

    def _poke(self) -> None:
        """A member changed: have the ticker re-check soon (never on the cluster's event thread)."""
        with self._wake:
            self._dirty = True
            self._wake.notify()

    # ------------------------------------------------------------------ threads

    def _tick_loop(self) -> None:
        interval = float(self.config.check_interval)
        next_tick = time.monotonic()
        while True:
            with self._wake:
                while not self._stopping.is_set() and not self._dirty:
                    # Wake at the next check, or when the lease runs out if that is sooner.
                    until = self._lease_until if self._is_leader else math.inf
                    left = min(next_tick, until) - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                if self._stopping.is_set():
                    return
                self._dirty = False
            try:
                self._step(lambda core, now, peers: core.tick(now, peers))
                self._warn_missing()
            except Exception:
                logger.exception("bug: leader election tick failed")
            now = time.monotonic()
            while next_tick <= now:
                next_tick += interval

    def _warn_missing(self) -> None:
        """Say (once a minute) when members the membership forgot keep the quorum out of reach."""
        with self._lock:
            core = self._core
            if core is None or core.leader is not None or core.sees_quorum or core.missing == 0:
                return
            now = time.monotonic()
            if now - self._warned_missing < 60.0:
                return
            self._warned_missing = now
            missing, base = core.missing, core.quorum_base
        logger.warning(
            "leader election has no quorum: %d of the %d members it counts are no longer in the "
            "membership (forgotten after dead_node_retention_period). If they are gone for good, "
            "remove them (LeaderElection.remove_members) or set LeaderConfig.expected_members",
            missing, base)

    def _event_loop(self) -> None:
        while True:
            note = self._events.get()
            if note is None:
                return
            for fn in self._handlers[note.event]:
                try:
                    fn(note.event, note.node)
                except Exception:
                    with self._lock:
                        self._count("handler_errors")
                    logger.exception("leader event handler %r raised for %s", fn, note.event)
