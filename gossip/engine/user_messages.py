"""User messages as the facade sends them: :class:`UserMessages` encodes a user message once
and hands it to :class:`~.outgoing.Outgoing` for each peer of a broadcast's first hop
(remembering it, so that its echoes are dropped), for each node of a direct send, or as a
request (blocking on a dedicated connection; without blocking on the pooled connection, its
reply matched by :mod:`.replies`; or on a request connection lent to an event loop).

This module imports the packet pipeline, the messages and the send path; its classes are given
what they use (never the engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Protocol

from ..config import Config
from ..errors import ClusterClosed, GossipError, NodeUnavailable, SendQueueFull
from ..handlers import check_user_type
from ..hlc import HLC
from ..node import Node, NodeID, NodeState
from ..packet import Packet, PacketCodec
from ..transports.base import RequestLine
from ..counters import Counters
from .backlog import all_done
from .outgoing import Outgoing, broadcast_ttl
from .replies import Replies

__all__ = ["UserMessages", "Peers"]


class Peers(Protocol):
    """What user sends read of the member table (:class:`~.members.MemberView`)."""

    def fan_out_addrs(self, exclude: Iterable[NodeID], tag: str | None = None) -> list[str]:
        """The addresses one hop of a broadcast goes to (members holding ``tag``, if given)."""
        ...

    def alive_count(self) -> int:
        """The alive members, this node included."""
        ...

    def state_of(self, node_id: NodeID) -> NodeState | None:
        """The state of a member here, None if unknown."""
        ...


class UserMessages:
    """User messages as the facade sends them; see the module docstring.

    Args:
        out: the send path.
        config: the validated configuration.
        codec: the packet pipeline.
        node_id: this node's id (never sent to; its bytes are the sender id).
        hlc: the clock that stamps message ids.
        peers: the member table's view for sends.
        remember: ``remember(now, sender, msg_id)`` records a broadcast this node sent, so
            that its echoes are dropped.
        counters: where sends and drops are counted.
        replies: the requests waiting for their replies (for :meth:`request_nowait`).
    """

    def __init__(self, out: Outgoing, config: Config, codec: PacketCodec, node_id: NodeID,
                 hlc: HLC, peers: Peers, remember: Callable[[float, bytes, int], None],
                 counters: Counters, replies: Replies | None = None) -> None:
        self._out = out
        self._config = config
        self._codec = codec
        self._node_id = node_id
        self._sender_id = node_id.bytes
        self._hlc = hlc
        self._peers = peers
        self._remember = remember
        self._counters = counters
        self._replies = replies

    def broadcast(self, msg_type: int, data: Any, reliable: bool,
                  exclude: Iterable[NodeID] = (), tag: str | None = None) -> None:
        """Send a user message to a fan-out of random peers, who relay it while the ttl lasts.

        With ``tag``, a tagged broadcast: only members holding the tag are sent it, and only
        they handle and relay it (see :mod:`gossip.wire`, ``FLAG_TAGGED``).

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: as :meth:`Outgoing.user`, when no peer took it.
            ClusterClosed: the engine is not running.
        """
        addrs, pkt, size = self._broadcast_packet(msg_type, data, exclude, tag)
        self._send_all(addrs, pkt, reliable, size)
        self._counters.inc("user.broadcasts" if tag is None else "user.tagged_broadcasts")

    def broadcast_nowait(self, msg_type: int, data: Any, reliable: bool,
                         exclude: Iterable[NodeID] = (), tag: str | None = None) -> Future[None] | None:
        """:meth:`broadcast` without blocking: None when every first-hop packet went out at
        once, else a future for those that wait (see :meth:`Outgoing.user_nowait`).

        Raises:
            as :meth:`broadcast` (for the packets that did not wait).
        """
        addrs, pkt, size = self._broadcast_packet(msg_type, data, exclude, tag)
        waiting = self._send_all_nowait(addrs, pkt, reliable, size)
        self._counters.inc("user.broadcasts" if tag is None else "user.tagged_broadcasts")
        return waiting

    def _broadcast_packet(self, msg_type: int, data: Any, exclude: Iterable[NodeID],
                          tag: str | None = None) -> tuple[list[str], bytes, int]:
        """Encode a broadcast, remember it, and return its first hop's addresses, the packet
        and its payload size."""
        check_user_type(msg_type)
        ttl = broadcast_ttl(self._peers.alive_count(), self._config.ttl_multiplier)
        msg_id = self._hlc.now()
        payload = self._codec.codec.encode(data)
        pkt = self._codec.encode_raw(msg_type, self._sender_id, msg_id, ttl, payload, tag)
        self._remember(time.monotonic(), self._sender_id, msg_id)
        return self._peers.fan_out_addrs((self._node_id, *exclude), tag), pkt, len(payload)

    def send_direct(self, nodes: Iterable[Node], msg_type: int, data: Any, reliable: bool) -> None:
        """Send a user message with ttl 1 to each node (never relayed further).

        A best-effort send skips a node known dead or left (by its current state here, else
        the snapshot's): counted as ``dropped.node_dead`` / ``dropped.node_left``, and raised
        as :class:`NodeUnavailable` under ``best_effort_full_policy="raise"``.

        Raises:
            LocalProtocolError: internal type, or a payload that cannot be encoded.
            SendQueueFull, TransportError: as :meth:`Outgoing.user` (after trying every node).
            NodeUnavailable: a best-effort send to a node known dead or left (``"raise"``).
            ClusterClosed: the engine is not running.
        """
        addrs, pkt, size, first = self._direct_packet(nodes, msg_type, data, reliable)
        self._send_all(addrs, pkt, reliable, size, first)
        self._counters.inc("user.direct")

    def send_direct_nowait(self, nodes: Iterable[Node], msg_type: int, data: Any,
                           reliable: bool) -> Future[None] | None:
        """:meth:`send_direct` without blocking: None when every packet went out at once (the
        first failure raised after trying every node), else a future for the packets that wait,
        which fails with the first failure (see :meth:`Outgoing.user_nowait`).

        Raises:
            as :meth:`send_direct` (for the packets that did not wait).
        """
        addrs, pkt, size, first = self._direct_packet(nodes, msg_type, data, reliable)
        waiting = self._send_all_nowait(addrs, pkt, reliable, size, first)
        self._counters.inc("user.direct")
        return waiting

    def _direct_packet(self, nodes: Iterable[Node], msg_type: int, data: Any,
                       reliable: bool) -> tuple[list[str], bytes, int, Exception | None]:
        """Encode a direct message; return the addresses to send it to, the packet, its
        payload size and the error to raise for the nodes skipped (else None)."""
        check_user_type(msg_type)
        payload = self._codec.codec.encode(data)
        pkt = self._codec.encode_raw(msg_type, self._sender_id, self._hlc.now(), 1, payload)
        targets = [n for n in nodes if n.id != self._node_id]
        first: Exception | None = None
        if not reliable:
            targets, first = self._skip_gone(targets)
        return [n.address for n in targets], pkt, len(payload), first

    def _skip_gone(self, nodes: list[Node]) -> tuple[list[Node], Exception | None]:
        """Split off the nodes known dead or left; count each, and return the error to raise
        under the ``"raise"`` policy (else None)."""
        state_of = self._peers.state_of
        live: list[Node] = []
        error: Exception | None = None
        for n in nodes:
            known = state_of(n.id)
            state = n.state if known is None else known
            if state is not NodeState.DEAD and state is not NodeState.LEAVING:
                live.append(n)
                continue
            name = "dead" if state is NodeState.DEAD else "left"
            self._counters.inc(f"dropped.node_{name}")
            if self._config.best_effort_full_policy == "raise" and error is None:
                error = NodeUnavailable(
                    f"node {n.id.short}@{n.address} is {name}: the message was not sent",
                    str(n.id), name)
        return live, error

    def _send_all(self, addrs: list[str], pkt: bytes, reliable: bool, payload_size: int,
                  first: Exception | None = None) -> None:
        """Send ``pkt`` (whose payload is ``payload_size`` bytes before compression) to every
        address; raise the first failure (``first`` if given) after trying them all."""
        sent = 0
        user = self._out.user
        for addr in addrs:
            try:
                user(addr, pkt, reliable, payload_size)
                sent += 1
            except ClusterClosed:
                raise
            except Exception as exc:  # GossipError subclasses; re-raised below
                if first is None:
                    first = exc
        self._counters.inc("user.sent", sent)
        if first is not None:
            raise first

    def request(self, node: Node, msg_type: int, payload: Any, response_type: type[Any] | None,
                timeout: float | None) -> Any:
        """Send a request to ``node`` over a dedicated connection and return its decoded reply.

        Raises:
            GossipTimeout: no reply within ``timeout`` (default ``tcp_deadline``).
            RemoteHandlerError: the node's reply handler raised, or it has none for the type.
            TransportError: the node could not be reached.
            DecodeError: the reply is malformed or does not fit ``response_type``.
            LocalProtocolError, ClusterClosed: as :meth:`send_direct`.
        """
        check_user_type(msg_type)
        timeout = self._config.tcp_deadline if timeout is None else timeout
        return self._out.request(node.address, f"{node.id.short}@{node.address}", msg_type,
                                 payload, response_type, timeout)

    def request_nowait(self, node: Node, msg_type: int, payload: Any,
                       timeout: float | None) -> Future[Packet]:
        """Send a request to ``node`` on the pooled connection, without blocking; the future's
        result is the reply packet (decode it with :func:`~.replies.reply_value`).

        The request waits (for room, or for the connection to be dialed) like a reliable
        message; its reply is matched to it by its message id (:mod:`.replies`). The future
        fails with :class:`~gossip.errors.GossipTimeout` after ``timeout`` (default
        ``tcp_deadline``; the time spent waiting to be sent counts), or as the send failed.
        Cancelling it forgets the waiter and takes back the request if it was not sent yet.

        Raises:
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            TransportError: the open connection refused the request (it broke).
            ClusterClosed: the engine is not running.
        """
        msg_id, data = self._encode_request(msg_type, payload)
        return self._request_pooled(node, msg_type, msg_id, data, timeout)

    def request_start(self, node: Node, msg_type: int, payload: Any,
                      timeout: float | None) -> RequestLine | Future[Packet]:
        """Start a request to ``node`` without blocking, the cheapest way there is.

        When the transport has an idle request connection to ``node``, the request is given
        to the caller on it, as a :class:`~gossip.transports.base.RequestLine` to drive (an
        event loop writes it and reads the reply as its socket allows; decode the reply with
        :meth:`Outgoing.decode_reply`), counted ``user.requests_lent``. Otherwise it is sent as
        :meth:`request_nowait` sends it, and the transport dials a request connection for the
        next one.

        Raises:
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            MessageTooLarge, TransportError: the request cannot be sent.
            ClusterClosed: the engine is not running.
        """
        msg_id, data = self._encode_request(msg_type, payload)
        line = self._out.request_line(node.address, data)
        if line is None:
            return self._request_pooled(node, msg_type, msg_id, data, timeout)
        self._counters.inc("user.requests")
        self._counters.inc("user.requests_lent")
        return line

    def _encode_request(self, msg_type: int, payload: Any) -> tuple[int, bytes]:
        """``(message id, packet)`` of a request (ttl 0: "answer me") sent without blocking.

        Raises:
            LocalProtocolError: internal type, or ``payload`` cannot be encoded.
            ClusterClosed: this engine has no reply table (it sends no such requests).
        """
        check_user_type(msg_type)
        if self._replies is None:
            raise ClusterClosed("this engine sends no requests without blocking")
        msg_id = self._hlc.now()
        return msg_id, self._codec.encode(msg_type, self._sender_id, msg_id, 0, payload)

    def _request_pooled(self, node: Node, msg_type: int, msg_id: int, data: bytes,
                        timeout: float | None) -> Future[Packet]:
        """Send the encoded request ``data`` (id ``msg_id``) on the pooled connection and
        return the future of its reply; see :meth:`request_nowait`."""
        replies = self._replies
        assert replies is not None
        timeout = self._config.tcp_deadline if timeout is None else timeout
        reply = replies.expect(  # the name is made only for a timeout's message
            node.id.bytes, msg_id, timeout,
            lambda: f"request of message type {msg_type} to node {node.id.short}@{node.address}")
        try:
            sending = self._out.user_nowait(node.address, data, True, len(data))
        except BaseException:
            reply.cancel()
            raise
        self._counters.inc("user.requests")
        if sending is not None:
            def sent(f: Future[None]) -> None:
                if not f.cancelled():
                    exc = f.exception()
                    if exc is not None:
                        replies.fail(reply, exc)

            sending.add_done_callback(sent)
            reply.add_done_callback(lambda _: sending.cancel())  # a request not sent yet stays
        return reply

    def _send_all_nowait(self, addrs: list[str], pkt: bytes, reliable: bool, payload_size: int,
                         first: Exception | None = None) -> Future[None] | None:
        """:meth:`_send_all` without blocking: None if every packet went out (or failed) at
        once, else a future for those waiting."""
        sent = 0
        waiting: list[Future[None]] = []
        user = self._out.user_nowait
        for addr in addrs:
            try:
                f = user(addr, pkt, reliable, payload_size)
            except ClusterClosed:
                raise
            except Exception as exc:  # GossipError subclasses; re-raised below
                if first is None:
                    first = exc
                continue
            if f is None:
                sent += 1
            else:
                waiting.append(f)
        self._counters.inc("user.sent", sent)
        if not waiting:
            if first is not None:
                raise first
            return None
        return all_done(waiting, first, lambda: self._counters.inc("user.sent"))

