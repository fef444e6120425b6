"""One gossip WebSocket connection, whoever performs its I/O: its state, buffers and deadlines.

A :class:`Link` is what the transport's tables hold and what the engine answers on
(:class:`gossip.transports.base.Connection` for frame connections). It owns:

- the write side: admitted messages (``pending``), the bytes admitted and not yet written
  (``queued``), and the condition a sender waits on while the buffer is over its budget;
- the read side: frames go to the engine (``frames``), to the waiting requester (``request``) or
  to the stream's inbound queue (``stream``); ``paused`` (the engine's back-pressure) and
  ``flow_paused`` (a stream's inbound queue is full) stop reading;
- its deadlines (:meth:`Link.tick`, called by the transport's sweeper): the handshake, the
  pre-authentication deadline, the idle timeout, and, on the connections we read ourselves,
  the closing handshake, a message trickling in and the keepalive pings.

Subclasses perform the I/O: :class:`~.connection.SocketLink` (our own sockets, websockets'
sans-I/O protocol), :class:`~.hosted.HostLink` (a connection of the host's ``websockets``
server) and :class:`~.hosted.HostedConnection` (any other WebSocket implementation).

A link is given a :class:`LinkEnv` (the limits, counters and the callables it reports to); it
never holds the transport.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gossip.errors import ClusterClosed, GossipTimeout, MessageTooLarge, SendError, SendQueueFull
from gossip.transports._admission import DialSlot, Ticket
from gossip.transports.base import Deadline, Incoming, StreamConn
from gossip.transports.limits import ConnectionLimits
from gossip.transports.websocket.admission import FRAMES, REQUEST, STREAM

__all__ = ["Link", "LinkEnv", "CONNECTING", "OPEN", "CLOSED", "END_OF_STREAM", "Item"]

_log = logging.getLogger("gossip.transports.websocket")

END_OF_STREAM: Final = "gossip:end-of-stream"
"""The text message that ends the writing side of a stream (its half-close)."""

CONNECTING: Final = "connecting"
OPEN: Final = "open"
CLOSED: Final = "closed"

TICK: Final = 0.25  # a paused reader looks at its state this often

Item = bytes | bytearray | memoryview | str
"""A message admitted for sending: binary, or a text marker (:data:`END_OF_STREAM`)."""


@dataclass(frozen=True, slots=True)
class LinkEnv:
    """What a :class:`Link` is given by its transport.

    Attributes:
        name: the node's name, for thread names and logs.
        limits: the connection limits.
        handshake_timeout: seconds allowed for a whole dial, and for an accepted connection's
            handshake.
        ping_interval: a connection we read ourselves that is silent this long is pinged (0:
            never).
        count: ``count(name, n)`` adds to a transport counter.
        emit: called with each batch of received frames for the engine.
        is_closed: True once the transport is closed.
        trust: takes an admission ticket out of the untrusted counts.
        closed: a link closed (the transport forgets it as pooled or idle, and gives its ticket
            or dial slot back).
        done: a link's threads ended (the transport stops tracking it).
        accept_stream: an accepted stream connection opened (the transport hands it over).
        next_id: a number for a new link's thread names.
    """

    name: str
    limits: ConnectionLimits
    handshake_timeout: float
    ping_interval: float
    count: Callable[[str, int], None]
    emit: Callable[[list[Incoming]], None]
    is_closed: Callable[[], bool]
    trust: Callable[[Ticket], None]
    closed: Callable[[Link], None]
    done: Callable[[Link], None]
    accept_stream: Callable[[Link], None]
    next_id: Callable[[], int]


def _size(item: Item) -> int:
    return len(item)


class Link:
    """One gossip WebSocket connection; see the module docstring."""

    def __init__(self, env: LinkEnv, peer: str, kind: str, accepted: bool, ip: str = "") -> None:
        self.env = env
        limits = env.limits
        self.lid = env.next_id()
        self.peer_addr = peer
        self.kind = kind
        self.accepted = accepted
        self.ip = ip
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.room = threading.Condition(self.lock)
        self.readable = threading.Condition(self.lock)
        self.pending: deque[Item] = deque()
        self.queued = 0
        self.budget = limits.conn_buffer_size
        self.state = CONNECTING
        self.closing = False
        self.final = False
        self.error = ""
        self.ready = threading.Event()
        self.trusted = not accepted
        self.ticket: Ticket | None = None  # accepted: its place in the admission counts
        self.slot: DialSlot | None = None  # dialed: its place in the dial budget
        self.rejected = 0  # frames the engine refused
        self.paused = False
        self.flow_paused = False
        now = time.monotonic()
        self.created = now
        self.opened_at = 0.0
        self.last_rx = now  # any frame received (pings and pongs included)
        self.last_frame = now  # a data message sent or received (idle timeout)
        self.max_out = limits.max_stream_frame_size if kind == STREAM else limits.max_frame_size
        self.max_in = self.max_out if self.trusted else min(self.max_out, limits.preauth_frame)
        # request connections
        self.mailbox: deque[bytes] = deque()
        self.expect_reply = False
        self.unclean = False
        # stream connections
        self.inbound: deque[bytes] = deque()
        self.inbound_bytes = 0
        self.eof = False
        self.clean_end = False
        self.write_closed = False
        self.stream: StreamConn | None = None  # the stream riding on it, once made

    # ---------------------------------------------------------------- Connection interface

    @property
    def peer(self) -> str:
        """The remote address: the URL dialed, or ``"ip:port"`` of an accepted connection."""
        return self.peer_addr

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Queue one frame (one binary message) on this connection.

        Raises:
            MessageTooLarge: ``data`` is over the frame size limit.
            SendQueueFull: the connection's buffer stayed full for ``timeout`` seconds
                (``None``: the transport's ``io_timeout``; ``0``: do not wait).
            SendError: the connection is closed or broken.
            ClusterClosed: the transport is closed.
        """
        env = self.env
        if env.is_closed():
            raise ClusterClosed(f"transport {env.name} is closed")
        if len(data) > self.max_out:
            raise MessageTooLarge(
                f"frame to {self.peer_addr} is {len(data)} bytes, over the limit {self.max_out}")
        self.put(data, Deadline(env.limits.io_timeout if timeout is None else timeout),
                 f"send to {self.peer_addr}")

    def pause_reading(self) -> None:
        """Stop reading this connection before its next read (back-pressure)."""
        with self.lock:
            if self.paused:
                return
            self.paused = True
        self.env.count("ws_paused", 1)

    def resume_reading(self) -> None:
        """Read this connection again (idempotent; safe from any thread)."""
        with self.lock:
            if not self.paused:
                return
            self.paused = False
            self.readable.notify_all()
        self.kick()

    def mark_trusted(self) -> None:
        """The engine accepted a frame from this connection: lift the pre-authentication limits."""
        if not self.trusted:
            self.trusted = True
            self.max_in = self.max_out
            if self.ticket is not None:
                self.env.trust(self.ticket)
            self._raise_limit()

    def mark_rejected(self) -> None:
        """The engine refused a frame from this connection (too many close it)."""
        self.rejected += 1
        env = self.env
        if self.rejected == env.limits.max_rejected_frames:
            env.count("ws_rejected_frames_closed", 1)
            _log.debug("%s ! %s: %d frames refused; closing", env.name, self.peer_addr,
                       self.rejected)
            self.abort(f"{self.rejected} frames refused")

    def close(self) -> None:
        """Close this connection gracefully (idempotent): queued frames go first."""
        self.request_close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.lid} {self.kind} {self.peer_addr} {self.state}"
                f"{' paused' if self.paused else ''} queued={self.queued}>")

    # ---------------------------------------------------------------- writing

    def put(self, item: Item, deadline: Deadline, what: str) -> None:
        """Admit one message into the buffer, waiting for room up to ``deadline``.

        Raises:
            SendQueueFull: no room before the deadline (nothing was queued).
            SendError: the connection is closed or closing.
        """
        n = _size(item)
        with self.lock:
            while True:
                if self.state is CLOSED or self.closing:
                    why = f" ({self.error})" if self.error else ""
                    raise SendError(f"{what}: connection closed{why}")
                if not self.queued or self.queued + n <= self.budget:
                    break
                try:
                    left = deadline.remaining(what)
                except GossipTimeout:
                    left = 0.0
                if left is not None and left <= 0:
                    self.env.count("ws_buffer_full", 1)
                    raise SendQueueFull(
                        f"{what}: {self.queued} bytes already queued for a peer that is not "
                        f"reading fast enough (connection buffer {self.budget} bytes)")
                self.room.wait(left)
            self.pending.append(item)
            self.queued += n
            self.wake.notify()
        self.env.count("ws_sent", 1)
        self.kick()

    def take(self) -> tuple[list[Item], int]:
        """Take every pending message (lock held by the caller); return them and their size."""
        assert self.lock.locked()
        items = list(self.pending)
        self.pending.clear()
        return items, sum(_size(i) for i in items)

    def written(self, n: int) -> None:
        """``n`` admitted bytes reached the socket: make room for the senders."""
        if not n:
            return
        with self.lock:
            self.queued = max(0, self.queued - n)
            self.last_frame = time.monotonic()
            self.room.notify_all()

    def request_close(self, final: bool = False) -> None:
        """Ask for a graceful close: what is queued is written, then a close frame.

        ``final`` (the transport is closing) does not wait for the peer's close frame.
        """
        with self.lock:
            if final:
                self.final = True
            if self.closing or self.state is CLOSED:
                self.wake.notify_all()
                return
            self.closing = True
            self.wake.notify_all()
            self.readable.notify_all()
            self.room.notify_all()
        self.kick()

    def mark_closed(self, reason: str) -> bool:
        """Mark the connection closed and wake every waiter; return False if it already was."""
        with self.lock:
            if self.state is CLOSED:
                return False
            self.state = CLOSED
            self.error = self.error or reason
            lost = sum(1 for i in self.pending if not isinstance(i, str))
            self.pending.clear()
            self.queued = 0
            self.wake.notify_all()
            self.room.notify_all()
            self.readable.notify_all()
        self.ready.set()
        env = self.env
        if lost:
            env.count("ws_frames_lost", lost)
            _log.debug("%s ! %d queued frames to %s lost with the connection", env.name,
                       lost, self.peer_addr)
        env.closed(self)
        self.kick()
        return True

    def kick(self) -> None:
        """Wake the flusher (links whose flusher waits on ``wake`` need nothing more)."""

    def _raise_limit(self) -> None:
        """Apply ``max_in`` to the WebSocket parser (links that parse themselves)."""

    def abort(self, reason: str) -> None:
        """Close at once, without a closing handshake."""
        self.mark_closed(reason)

    # ---------------------------------------------------------------- reading

    def opened(self) -> None:
        """The handshake succeeded: the connection carries traffic from now on."""
        with self.lock:
            if self.state is not CONNECTING:
                return
            self.state = OPEN
            self.opened_at = time.monotonic()
            self.wake.notify_all()
        self.ready.set()
        self.kick()
        if self.accepted and self.kind == STREAM:
            self.env.accept_stream(self)

    def reading_blocked(self) -> bool:
        """True while the engine paused this connection or a stream's inbound queue is full."""
        return self.paused or self.flow_paused

    def deliver(self, msgs: list[bytes]) -> None:
        """Hand received binary messages to what rides on this connection."""
        now = time.monotonic()
        self.last_rx = self.last_frame = now
        kind = self.kind
        env = self.env
        if kind == FRAMES:
            peer = self.peer_addr
            env.count("ws_received", len(msgs))
            env.emit([Incoming(m, peer, True, self, now, "ws") for m in msgs])
            if self.paused:
                env.count("ws_paused_reads", 1)
            return
        if kind == REQUEST:
            with self.lock:
                for m in msgs:
                    if self.expect_reply and not self.mailbox:
                        self.mailbox.append(m)
                    else:
                        self.unclean = True
                self.readable.notify_all()
            env.count("ws_received", len(msgs))
            return
        with self.lock:
            if self.eof:
                env.count("ws_protocol_errors", 1)  # data after the end of the stream
                return
            for m in msgs:
                self.inbound.append(m)
                self.inbound_bytes += len(m)
            if self.inbound_bytes > self.budget:
                self.flow_paused = True
            self.readable.notify_all()
        env.count("ws_received", len(msgs))

    def deliver_text(self, text: str) -> None:
        """Handle a received text message: a stream's end marker, else counted and dropped."""
        self.last_rx = time.monotonic()
        if self.kind == STREAM and text == END_OF_STREAM:
            with self.lock:
                self.eof = True
                self.readable.notify_all()
            return
        self.env.count("ws_text_dropped", 1)
        _log.debug("%s ! text message from %s dropped", self.env.name, self.peer_addr)

    # ---------------------------------------------------------------- deadlines

    def tick(self, now: float, idle_request: bool) -> None:
        """Act on this link's deadlines (the transport's sweeper, every quarter second).

        ``idle_request`` is True for a request connection waiting in the idle pool.
        """
        state = self.state
        if state is CLOSED:
            return
        env = self.env
        limits = env.limits
        if state is CONNECTING:
            if now - self.created > env.handshake_timeout + (0.5 if not self.accepted else 0):
                self._handshake_overdue()
                self.abort("the handshake did not finish in time")
            return
        if self._overdue(now):
            return
        if self.accepted and not self.trusted and now - self.created > limits.preauth_timeout:
            # Frames the engine refused do not count: only an accepted one trusts a link.
            env.count("ws_preauth_timeouts", 1)
            self.abort("no frame accepted within the pre-authentication timeout")
            return
        busy = self.queued or (self.kind == REQUEST and self.expect_reply)
        if self.kind != STREAM and not busy and not self.closing \
                and now - self.last_frame > limits.idle_timeout and (
                    self.kind != REQUEST or idle_request):
            env.count("ws_idle_closed", 1)
            self.request_close()
            return
        self._keepalive(now)

    def _handshake_overdue(self) -> None:
        """The handshake did not finish in time (links that perform a handshake count it)."""

    def _overdue(self, now: float) -> bool:
        """Act on the deadlines of the links that read their socket themselves; True if the
        link was closed."""
        return False

    def _keepalive(self, now: float) -> None:
        """Ping a silent peer (links that read their socket themselves)."""
