""":class:`Cluster`: the asyncio face of a gossip node, over the same engine as
:class:`gossip.Cluster`.

::

    async with gossip.aio.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as cluster:
        await cluster.join(["127.0.0.1:7946"])
        cluster.handle_func(gossip.USER_MSG, on_message)       # async def on_message(node, pkt)
        await cluster.send_to_reliable(node, gossip.USER_MSG, {"hello": "world"})

The engine keeps its own threads and its own protocol clock: nothing of the protocol runs on
the loop, so a loop that is blocked or slow never makes this node, or anyone's view of it,
suspect. What waits for the network or a peer (a reliable send that meets back-pressure, a
request, a join, a leave, a stream's reads and writes) is a :class:`concurrent.futures.Future`
that the engine's threads complete and the loop awaits; no thread is held per waiting call,
and cancelling the await releases what the engine held for it. A request to a node the
transport holds an idle request connection to is exchanged by the loop itself on that
connection (:mod:`._lines`), as a blocking request is by its caller's thread. Reads of the
member table do not wait and stay plain methods.

This module imports the facade and the engine's public parts; nothing below the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster as SyncCluster
from ..config import Config, FrozenConfig
from ..engine import Engine
from ..engine.replies import reply_value
from ..errors import JoinError, SendError
from ..handlers import HANDLER_FORWARD, HANDLER_NO_FORWARD, HANDLER_REPLY, HANDLER_STREAM
from ..joining import JoinOutcome
from ..metadata import Metadata
from ..node import Node, NodeID
from ._futures import wait, wait_maybe
from ._lines import Exchanges
from .events import Events
from .handlers import Dispatcher, MessageHandler, ReplyHandler, StreamHandler, stream_handler
from .stream import AsyncStream

if TYPE_CHECKING:
    from ..placement import NodeSource
    from ..protocol.provenance import Explanation
    from ..protocol.rtt import ProbeRtt
    from ..security import Keyring

__all__ = ["Cluster"]

logger = logging.getLogger("gossip.aio")


class Cluster:
    """One member of a gossip cluster, for asyncio programs.

    ``async with gossip.aio.Cluster(config) as cluster:`` starts it on entry and stops it on
    exit (leaving gracefully), with no thread left behind. :attr:`sync` is the blocking
    :class:`gossip.Cluster` underneath, for anything this face does not wrap (its blocking
    calls must not be made from the loop).

    Before :meth:`start` and after :meth:`stop`, the rules are the blocking API's: reads answer
    for this node alone, actions raise :class:`~gossip.errors.ClusterClosed`, handlers may be
    registered at any time (from the loop that is to run them).

    Args:
        config: the configuration (copied, then validated); default
            :func:`gossip.default_config`.

    Raises:
        ConfigError: a configuration field is invalid (the message names it).
    """

    def __init__(self, config: Config | None = None) -> None:
        self._init(SyncCluster(config))

    @classmethod
    def from_cluster(cls, cluster: SyncCluster) -> Cluster:
        """The asyncio face of an existing :class:`gossip.Cluster` (started or not); stopping
        either stops both."""
        self = cls.__new__(cls)
        self._init(cluster)
        return self

    def _init(self, sync: SyncCluster) -> None:
        self.sync = sync
        """The blocking :class:`gossip.Cluster` underneath."""
        self._engine: Engine = sync._engine  # the face drives the engine's calls that never block
        self._dispatchers: dict[int, Dispatcher] = {}
        self._subscriptions: weakref.WeakSet[Events] = weakref.WeakSet()
        self._left = False
        counters = self._engine.counters
        self._exchanges = Exchanges(lambda: counters.inc("dropped.late_replies"))

    def __repr__(self) -> str:
        return f"<aio.Cluster {self.sync.local_node().id.short} {self.address or '-'}>"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the transport and start the engine's threads (a second call does nothing).

        Binding and starting threads do not wait for any peer; see :meth:`gossip.Cluster.start`.

        Raises:
            TransportError: the bind address is in use or invalid.
            ConfigError: the node binds every interface and no interface has a default route.
            ClusterClosed: the cluster was stopped (clusters are not restartable).
        """
        self.sync.start()

    async def stop(self, timeout: float = 5.0, leave: bool = True) -> None:
        """Leave gracefully (if ``leave`` and running: the leave is awaited, up to
        ``leave_timeout``), then stop every thread and socket. Idempotent; at most ``timeout``
        seconds in total.

        Event subscriptions end (after what they hold) and handlers still running on the loop
        are cancelled.
        """
        end = time.monotonic() + timeout
        try:
            if leave and self.sync.running and not self._left:
                cfg = self.sync.config
                self._left = True
                try:
                    await wait(self._engine.leave_nowait(min(cfg.leave_timeout, timeout / 2)))
                except Exception as exc:  # a leave that fails must not stop the shutdown
                    logger.debug("leave during stop failed: %s", exc)
        finally:
            # Also when the leave's await was cancelled (a cancelled main() that stops its
            # cluster on the way out): the threads and sockets go regardless.
            for d in list(self._dispatchers.values()):
                d.close()
            for sub in list(self._subscriptions):
                sub.end()
            self._exchanges.abort_all()  # before the transport closes their connections
            # Every thread was told to end: joining them is short, and waits for no peer.
            self.sync.stop(timeout=max(0.0, end - time.monotonic()), leave=False)
            for d in list(self._dispatchers.values()):
                d.cancel_tasks()

    def _eng(self) -> Engine:
        self._engine.check_open()
        return self._engine

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self.sync.running

    @property
    def config(self) -> FrozenConfig:
        """This cluster's configuration, validated and read-only."""
        return self.sync.config

    @property
    def address(self) -> str:
        """The advertised address (``""`` before :meth:`start`)."""
        return self.sync.address

    @property
    def keyring(self) -> Keyring | None:
        """The encryption keyring (add, use and remove keys at runtime), None if unencrypted."""
        return self.sync.keyring

    # ------------------------------------------------------------------ join / leave

    async def join(self, peers: str | Sequence[str], timeout: float | None = None) -> JoinOutcome:
        """Join the cluster through ``peers``, all contacted at once; see
        :meth:`gossip.Cluster.join`.

        Raises:
            JoinError: no peer accepted; ``failures`` maps each peer to why.
            ClusterClosed: the cluster is not started or is stopped.
        """
        engine = self._eng()
        plist = [peers] if isinstance(peers, str) else list(peers)
        plist = [p.strip() for p in plist if p and p.strip()]
        if not plist:
            raise JoinError({})
        random.shuffle(plist)
        seconds = self.sync.config.join_timeout if timeout is None else timeout
        outcome = await wait(engine.join_nowait(plist, seconds))
        if outcome.failures:
            logger.warning("joined through %d of %d peers; could not join %s", outcome,
                           len(plist), "; ".join(f"{p} ({why})"
                                                 for p, why in outcome.failures.items()))
        return outcome

    async def leave(self, timeout: float | None = None) -> None:
        """Announce that this node leaves, and wait (on the loop, without blocking it) until the
        announcement went out and was acknowledged, up to ``timeout`` (default
        ``leave_timeout``).

        Raises:
            ClusterClosed: the cluster is not started or is stopped.
        """
        engine = self._eng()
        seconds = self.sync.config.leave_timeout if timeout is None else timeout
        await wait(engine.leave_nowait(seconds))
        self._left = True

    # ------------------------------------------------------------------ nodes (plain reads)

    def local_node(self) -> Node:
        """Return a snapshot of the local node."""
        return self.sync.local_node()

    def local_metadata(self) -> Metadata:
        """Return the local node's writable metadata; writes propagate by themselves."""
        return self.sync.local_metadata()

    def update_metadata(self) -> None:
        """Propagate the local metadata now (it never waits for a peer).

        Raises:
            ClusterClosed: the cluster is not started or is stopped.
        """
        self.sync.update_metadata()

    def nodes(self) -> list[Node]:
        """Return snapshots of every known node in any state, the local node first."""
        return self.sync.nodes()

    def alive_nodes(self) -> list[Node]:
        """Return the alive nodes, the local node included."""
        return self.sync.alive_nodes()

    def get_node(self, node_id: NodeID | str) -> Node | None:
        """Return the node with this id (or short id), or None; see
        :meth:`gossip.Cluster.get_node`."""
        return self.sync.get_node(node_id)

    def node_is_local(self, node: Node) -> bool:
        """Return True if ``node`` is this node."""
        return self.sync.node_is_local(node)

    def num_nodes(self) -> int:
        """Return the number of known nodes in any state, the local node included."""
        return self.sync.num_nodes()

    def num_alive_nodes(self) -> int:
        """Return the number of alive nodes, the local node included."""
        return self.sync.num_alive_nodes()

    def num_suspect_nodes(self) -> int:
        """Return the number of suspect nodes."""
        return self.sync.num_suspect_nodes()

    def num_dead_nodes(self) -> int:
        """Return the number of dead nodes."""
        return self.sync.num_dead_nodes()

    def get_candidates(self) -> list[Node]:
        """Return up to :meth:`gossip.Cluster.calc_fan_out` random alive or suspect peers."""
        return self.sync.get_candidates()

    def owners(self, key: str | bytes, n: int = 1, group: NodeSource | None = None) -> list[Node]:
        """Return the ``n`` alive members that own ``key``; see :meth:`gossip.Cluster.owners`."""
        return self.sync.owners(key, n, group)

    def owner(self, key: str | bytes, group: NodeSource | None = None) -> Node | None:
        """Return the alive member that owns ``key``, or None."""
        return self.sync.owner(key, group)

    def stats(self) -> dict[str, int]:
        """Return the counters; see :meth:`gossip.Cluster.stats`. The asyncio handlers add
        ``dropped.async_handler_full``, ``dropped.async_handler_closed`` and
        ``async.handler_waits``."""
        return self.sync.stats()

    def explain(self, node_id: NodeID | str) -> Explanation | None:
        """Return why this node holds ``node_id`` in its state; see
        :meth:`gossip.Cluster.explain`."""
        return self.sync.explain(node_id)

    def health_score(self) -> int:
        """Return the Lifeguard local health score (0 is healthy)."""
        return self.sync.health_score()

    def probe_rtt(self) -> ProbeRtt:
        """Return the round-trip times of this node's directly acked probes."""
        return self.sync.probe_rtt()

    def flap_scores(self) -> dict[NodeID, int]:
        """Return each member's flap score."""
        return self.sync.flap_scores()

    # ------------------------------------------------------------------ events

    def events(self, maxsize: int = 1024) -> Events:
        """Subscribe to the node state, metadata and cluster events; iterate with
        ``async for event in cluster.events():`` (see :class:`~gossip.aio.Events`).

        The subscription starts now (events from this call on are kept) and holds at most
        ``maxsize`` of them: when full, the oldest is dropped and the next item is an
        :class:`~gossip.aio.EventsLost` with the count. The engine never waits for it.

        Raises:
            RuntimeError: called with no running event loop.
            ValueError: ``maxsize`` is below 1.
        """
        sub = Events(self.sync, maxsize)
        if not self.sync.running and self._engine.closing:
            sub.end()
        self._subscriptions.add(sub)
        return sub

    # ------------------------------------------------------------------ handlers

    def _loop(self) -> asyncio.AbstractEventLoop:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("register asyncio handlers from a coroutine running on the loop "
                               "that is to run them") from None

    def _register(self, msg_type: int, kind: str, handler: Callable[..., Any]) -> None:
        loop = self._loop()
        engine = self._engine
        dispatcher = Dispatcher(loop, handler, kind == HANDLER_REPLY,
                                self.sync.config.async_handler_limit, engine.count,
                                lambda: engine.closing, msg_type)
        engine.message_handlers.register(msg_type, kind, dispatcher)
        self._dispatchers[msg_type] = dispatcher

    def handle_func(self, msg_type: int, handler: MessageHandler) -> None:
        """Handle ``msg_type`` with ``handler(sender, packet)`` on this loop (a coroutine
        function, or a plain function); messages are also relayed on.

        Messages of one sender start their handlers in the order they arrived; at most
        ``Config.async_handler_limit`` are held at once (see :mod:`gossip.aio.handlers`).

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
            RuntimeError: called with no running event loop.
        """
        self._register(msg_type, HANDLER_FORWARD, handler)

    def handle_func_no_forward(self, msg_type: int, handler: MessageHandler) -> None:
        """As :meth:`handle_func`; messages are not relayed."""
        self._register(msg_type, HANDLER_NO_FORWARD, handler)

    def handle_func_with_reply(self, msg_type: int, handler: ReplyHandler) -> None:
        """Answer requests of ``msg_type`` on this loop: ``handler(sender, packet)`` returns
        (or, a coroutine function, returns when awaited) the reply; if it raises, the requester
        gets :class:`~gossip.errors.RemoteHandlerError`. The engine's lane goes on meanwhile:
        the reply leaves when the handler ends.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
            RuntimeError: called with no running event loop.
        """
        self._register(msg_type, HANDLER_REPLY, handler)

    def handle_stream_func(self, msg_type: int, handler: StreamHandler) -> None:
        """Serve streams opened with ``msg_type``.

        A coroutine function ``handler(sender, packet, stream)`` runs on this loop with an
        :class:`~gossip.aio.AsyncStream`; the stream is closed when it returns, aborted if it
        raises. A plain function runs on a stream pool thread with a blocking
        :class:`gossip.Stream`, as :meth:`gossip.Cluster.handle_stream_func` says. Either way at
        most ``max_concurrent_streams`` run at once.

        Raises:
            LocalProtocolError: ``msg_type`` is internal (below 64).
            HandlerExistsError: ``msg_type`` already has a handler.
            RuntimeError: called with no running event loop.
        """
        if _is_coroutine_function(handler):
            fn: Callable[..., Any] = stream_handler(self._engine, self._loop(), handler)
        else:
            fn = handler
        self._engine.message_handlers.register(msg_type, HANDLER_STREAM, fn)

    def unregister_message_type(self, msg_type: int) -> bool:
        """Remove the handler of ``msg_type``; return False if there was none."""
        d = self._dispatchers.pop(msg_type, None)
        if d is not None:
            d.close()
        return self._engine.message_handlers.unregister(msg_type)

    # ------------------------------------------------------------------ sending

    async def send(self, msg_type: int, data: Any) -> None:
        """Broadcast ``data`` to the cluster (best effort, epidemic); see
        :meth:`gossip.Cluster.send`."""
        await wait_maybe(self._eng().broadcast_nowait(msg_type, data, False))

    async def send_excluding(self, msg_type: int, data: Any, exclude: Iterable[NodeID]) -> None:
        """Like :meth:`send`, never sending directly to the nodes in ``exclude``."""
        await wait_maybe(self._eng().broadcast_nowait(msg_type, data, False, tuple(exclude)))

    async def send_reliable(self, msg_type: int, data: Any) -> None:
        """Like :meth:`send`, over reliable connections (waits for room, as
        :meth:`send_to_reliable`)."""
        await wait_maybe(self._eng().broadcast_nowait(msg_type, data, True))

    async def send_reliable_excluding(self, msg_type: int, data: Any,
                                      exclude: Iterable[NodeID]) -> None:
        """Like :meth:`send_reliable`, never sending directly to the nodes in ``exclude``."""
        await wait_maybe(self._eng().broadcast_nowait(msg_type, data, True, tuple(exclude)))

    async def send_to(self, node: Node, msg_type: int, data: Any) -> None:
        """Send ``data`` to one node (best effort); see :meth:`gossip.Cluster.send_to`."""
        await wait_maybe(self._eng().send_direct_nowait((node,), msg_type, data, False))

    async def send_to_reliable(self, node: Node, msg_type: int, data: Any) -> None:
        """Send ``data`` to one node over a reliable connection.

        While the connection's buffer is full (the peer reads more slowly), this waits on the
        loop, without blocking it, up to ``send_timeout``, then raises
        :class:`~gossip.errors.SendQueueFull`, as the blocking API does. Sends to one node
        leave in the order they were made. Cancelling the await before the message left takes
        it back.

        Raises:
            SendQueueFull: no room within ``send_timeout``.
            TransportError: the node could not be reached.
            LocalProtocolError: internal type, or ``data`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        await wait_maybe(self._eng().send_direct_nowait((node,), msg_type, data, True))

    async def send_to_peers(self, nodes: Iterable[Node], msg_type: int, data: Any) -> None:
        """Send ``data`` to each of ``nodes`` as :meth:`send_to`; then raise the first
        failure."""
        await wait_maybe(self._eng().send_direct_nowait(nodes, msg_type, data, False))

    async def send_to_peers_reliable(self, nodes: Iterable[Node], msg_type: int,
                                     data: Any) -> None:
        """Send ``data`` to each of ``nodes`` as :meth:`send_to_reliable`; then raise the first
        failure."""
        await wait_maybe(self._eng().send_direct_nowait(nodes, msg_type, data, True))

    async def send_to_with_response(self, node: Node, msg_type: int, payload: Any,
                                    response_type: type[Any] | None = None,
                                    timeout: float | None = None) -> Any:
        """Send a request to ``node`` and return its reply, decoded as ``response_type``.

        When the transport holds an idle request connection to ``node``, the loop writes the
        request on it and reads the reply itself (no engine thread is woken; see
        :mod:`gossip.aio._lines`). Otherwise the request travels on the pooled connection to
        ``node`` (waiting for room as :meth:`send_to_reliable`), its reply is matched to it when
        it comes back, and the transport dials a request connection for the next request.
        Cancelling the await (``asyncio.wait_for`` does) forgets the request: a reply that
        comes later is dropped and counted (``dropped.late_replies``).

        Raises:
            GossipTimeout: no reply within ``timeout`` (default ``tcp_deadline``).
            RemoteHandlerError: the node's reply handler raised, or it has none for the type.
            TransportError: the node could not be reached.
            DecodeError, EncryptionError: the reply is malformed, does not fit
                ``response_type``, or is not authentic.
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        eng = self._eng()
        started = eng.request_start(node, msg_type, payload, timeout)
        if isinstance(started, Future):
            pkt = await wait(started)
        else:
            wait_for = eng.config.tcp_deadline if timeout is None else timeout
            try:
                raw = await self._exchanges.exchange(started, wait_for, lambda: (
                    f"no reply from node {node.id.short}@{node.address} to message type "
                    f"{msg_type} within {wait_for:.3g}s"))
            except SendError:
                if not started.retry:
                    raise
                # The peer had closed the idle connection: send the request the other way.
                pkt = await wait(eng.request_nowait(node, msg_type, payload, timeout))
            else:
                pkt = eng.decode_reply(raw, node, msg_type)
        return reply_value(pkt, response_type, lambda: f"{node.id.short}@{node.address}",
                           msg_type)

    async def open_stream(self, node: Node, msg_type: int, payload: Any = None,
                          timeout: float | None = None) -> AsyncStream:
        """Open a stream to ``node``, served there by its stream handler; see
        :meth:`gossip.Cluster.open_stream`.

        The dial and the opening run on the stream's own engine thread, which then serves its
        writes. Use the stream with ``async with``.

        Raises:
            StreamRefused: the node refused the stream (``reason`` says why).
            GossipTimeout: no answer within ``timeout`` (default ``stream_open_timeout``).
            ConnectError: the node could not be reached.
            EncryptionError, DecodeError: the answer is not authentic or malformed.
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            ClusterClosed: the cluster is not started or is stopped.
        """
        loop = asyncio.get_running_loop()
        pump = await wait(self._eng().streams.open_nowait(node, msg_type, payload, timeout))
        return AsyncStream(pump, loop)


def _is_coroutine_function(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))
