"""The socket transport's I/O thread: one selector over the listener and every framed connection.

:class:`IoLoop` runs ``gossip-<name>-tcp-io``. It accepts connections (counted in the
admission counts first), reads every accepted and pooled connection non-blockingly into its
buffer, emits every whole frame of one read as one batch, finishes writes the socket could not
take at once, and once per tick closes the connections that went idle, that let a frame
trickle in for longer than ``frame_timeout``, or that were not trusted within
``preauth_timeout``. An accepted connection whose preamble says "stream" leaves the selector and
is handed over through ``accept_stream``. The sweep runs every :data:`TICK` while anything
happens; once quiet (an idle node, whose connections wait for their idle deadline), the loop
sleeps until the earliest deadline of its connections and of the idle request connections, an
event, or :data:`IDLE_WAIT`, whichever comes first.

It owns the tables of registered connections (accepted, pooled outgoing, and those waiting to
be registered, looked at again or closed) and the lock that guards them: a socket registered
with the selector is only ever closed by this thread, so the selector never watches a closed
or reused file descriptor. Other threads ask through :meth:`IoLoop.watch` and
:meth:`IoLoop.drop`, which wake it.

Limits against hostile peers are those of :class:`gossip.transports.limits.ConnectionLimits`,
counted in :class:`gossip.transports._admission.Admission`: the connections an untrusted peer
may hold, the frame size it may announce, and the bytes its connections may hold buffered
(past a budget, the connection that holds the most is closed).

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from gossip.transports._admission import Admission, DialBudget, Ticket
from gossip.address import plain_ip
from gossip.transports._sockets import Waker, close_quietly, shutdown
from gossip.transports.base import Incoming, format_addr
from gossip.transports.limits import ConnectionLimits
from gossip.transports.tcp.conn import KIND_IN, KIND_REQ, ConnContext, FrameConn
from gossip.transports.tcp.frames import FRAMES, PREAMBLE_SIZE, STREAM, parse_frames, read_preamble

__all__ = ["IoLoop", "TICK"]

_log = logging.getLogger("gossip.transports.socket")

TICK: Final = 0.5  # how late idle, frame and trust deadlines act at most: the sweep's period
# while anything happens
IDLE_WAIT: Final = 5.0  # the loop's longest sleep once quiet (an idle node)
_READ_CHUNK = 256 * 1024
_ACCEPT_BURST = 64
_LISTENER = "listener"
_WAKE = "wake"

AcceptStream = Callable[[socket.socket, str, str, bytes, Ticket | None], None]
"""``accept_stream(sock, peer, ip, leftover, ticket)``: an accepted connection that carries a
stream, out of the selector, with the bytes read after its preamble and its admission ticket."""


class IoLoop:
    """The selector loop of framed TCP connections; see the module docstring.

    Args:
        name: the node's name, for the thread and logs.
        limits: the connection limits.
        admission: the counts of accepted connections.
        dials: the budget of dialed connections (a dropped one gives its slot back).
        count: ``count(name, n)`` adds to a transport counter.
        emit: called with each batch of received frames.
        accept_stream: called with each accepted stream connection (see :data:`AcceptStream`).
        sweep_more: called at each sweep with the time (the idle request connections); returns
            when it next needs a sweep (None: not before something changes; a change that
            needs one wakes the loop).
        is_closed: True once the transport is closed.
        stop: set when the transport closes.
    """

    def __init__(self, *, name: str, limits: ConnectionLimits, admission: Admission,
                 dials: DialBudget, count: Callable[[str, int], None],
                 emit: Callable[[list[Incoming]], None], accept_stream: AcceptStream,
                 sweep_more: Callable[[float], float | None], is_closed: Callable[[], bool],
                 stop: threading.Event) -> None:
        self._name = name
        self._limits = limits
        self._admission = admission
        self._dials = dials
        self._count = count
        self._emit = emit
        self._accept_stream = accept_stream
        self._sweep_more = sweep_more
        self._stop = stop
        self._max_frame = limits.max_frame_size
        self._preauth_frame = limits.preauth_frame
        self.ctx = ConnContext(
            name=name, conn_buffer=limits.conn_buffer_size, io_timeout=limits.io_timeout,
            max_frame_size=limits.max_frame_size, max_rejected=limits.max_rejected_frames,
            count=count, is_closed=is_closed, watch=self.watch, drop=self.drop,
            trust=admission.trust)
        self.listener: socket.socket | None = None
        self.waker: Waker | None = None
        self._lock = threading.Lock()  # guards every table below and the flag
        self._readers_done = False
        self._accepted: dict[FrameConn, None] = {}
        self._out: dict[str, FrameConn] = {}
        self._pending_add: list[FrameConn] = []  # dialed conns the loop must register
        self._pending_update: list[FrameConn] = []  # conns whose read/write interest changed
        self._to_close: list[FrameConn] = []  # registered conns the loop must close

    # ------------------------------------------------------------------ other threads

    def thread(self) -> threading.Thread:
        """Return the (unstarted) I/O thread, with its waker and selector made."""
        self.waker = Waker()
        sel = selectors.DefaultSelector()
        if self.listener is not None:
            sel.register(self.listener, selectors.EVENT_READ, _LISTENER)
        sel.register(self.waker.r, selectors.EVENT_READ, _WAKE)
        return threading.Thread(target=self.run, args=(sel,), name=f"gossip-{self._name}-tcp-io",
                                daemon=True)

    def pooled(self, key: str) -> FrameConn | None:
        """The open pooled outgoing connection to ``key``, if any."""
        with self._lock:
            conn = self._out.get(key)
        return conn if conn is not None and not conn.closed else None

    def add_pooled(self, conn: FrameConn) -> FrameConn | None:
        """Pool and register a newly dialed connection, unless another thread pooled one to the
        same address meanwhile (then that one is returned, and ``conn`` is to be discarded) or
        the transport is closed (None)."""
        with self._lock:
            if self.ctx.is_closed():
                return None
            current = self._out.get(conn.key)
            if current is not None and not current.closed:
                return current
            self._out[conn.key] = conn
            self._pending_add.append(conn)
        self._wake()
        return conn

    def watch(self, conn: FrameConn) -> None:
        """Ask the loop to recompute what it watches on ``conn`` (pause, resume, write)."""
        with self._lock:
            if self._readers_done:
                return
            self._pending_update.append(conn)
        self._wake()

    def drop(self, conn: FrameConn) -> None:
        """Mark ``conn`` closed and get it closed safely.

        A socket registered with the selector is only ever closed by the I/O thread (other
        threads mark it closed, ``shutdown()`` it, which also fails a blocked writer fast, and
        queue it), so the selector never watches a closed or reused file descriptor.
        """
        with self._lock:
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
            already = conn.closed
            queue = conn.kind != KIND_REQ and not self._readers_done
            if queue and not already:
                self._to_close.append(conn)
        conn.discard_queued()
        shutdown(conn.sock)
        if conn.kind == KIND_REQ:
            return  # the requester closes its own connection when its exchange ends
        if queue:
            if not already:
                self._wake()
        else:
            self.release(conn)

    def release(self, conn: FrameConn) -> None:
        """Close the socket (its writers were already failed by shutdown) and give its place
        in the admission counts or the dial budget back."""
        if conn.ticket is not None:
            self._admission.release(conn.ticket)
        self._dials.release(conn.slot)
        shutdown(conn.sock)
        close_quietly(conn.sock)

    def connections(self) -> list[FrameConn]:
        """Every connection the loop knows (registered or about to be)."""
        with self._lock:
            conns: dict[FrameConn, None] = dict(self._accepted)
            conns.update(dict.fromkeys(self._out.values()))
            conns.update(dict.fromkeys(self._pending_add))
            conns.update(dict.fromkeys(self._to_close))
        return list(conns)

    def finish(self) -> list[FrameConn]:
        """After the thread ended: forget every connection and return them (to be closed)."""
        with self._lock:
            self._readers_done = True
            conns: dict[FrameConn, None] = dict(self._accepted)
            conns.update(dict.fromkeys(self._out.values()))
            conns.update(dict.fromkeys(self._pending_add))
            conns.update(dict.fromkeys(self._to_close))
            self._accepted.clear()
            self._out.clear()
            self._pending_add.clear()
            self._pending_update.clear()
            self._to_close.clear()
        return list(conns)

    def counts(self) -> tuple[int, int]:
        """``(accepted, pooled outgoing)`` connections now."""
        with self._lock:
            return len(self._accepted), len(self._out)

    def wake(self) -> None:
        """Wake the I/O thread so that it looks at its tables and deadlines again."""
        self._wake()

    def _wake(self) -> None:
        if self.waker is not None:
            self.waker.wake()

    # ------------------------------------------------------------------ the I/O thread

    def run(self, sel: selectors.BaseSelector) -> None:
        """The thread's loop, until the stop event is set."""
        waker = self.waker
        assert waker is not None
        next_sweep = time.monotonic() + TICK
        try:
            while not self._stop.is_set():
                try:
                    self._apply_pending(sel)
                    events = sel.select(timeout=max(0.0, next_sweep - time.monotonic()))
                    now = time.monotonic()
                    for key, mask in events:
                        if self._stop.is_set():
                            break
                        data = key.data
                        if data == _LISTENER:
                            self._accept(sel)
                        elif data == _WAKE:
                            waker.drain()
                        else:
                            if mask & selectors.EVENT_WRITE:
                                self._on_writable(sel, data)
                            if mask & selectors.EVENT_READ and not data.closed:
                                self._read(sel, data, now)
                    if events:      # activity may bring deadlines closer: sweep within a tick
                        next_sweep = min(next_sweep, now + TICK)
                    if now >= next_sweep:
                        next_sweep = self._next_sweep(now, self._sweep(sel, now))
                except Exception:
                    if self._stop.is_set():
                        break
                    self._count("reader_errors", 1)
                    _log.debug("%s ! tcp I/O loop error", self._name, exc_info=True)
        finally:
            sel.close()

    def _apply_pending(self, sel: selectors.BaseSelector) -> None:
        with self._lock:
            adds, self._pending_add = self._pending_add, []
            updates, self._pending_update = self._pending_update, []
            closes, self._to_close = self._to_close, []
        for conn in adds:
            if conn.closed:
                closes.append(conn)
                continue
            self._set_events(sel, conn)
        for conn in updates:
            if not conn.closed:
                self._set_events(sel, conn)
                if not conn.paused and conn.rbuf:
                    # Frames that arrived before the pause are delivered first.
                    self._parse_frames(sel, conn, time.monotonic())
        for conn in closes:
            self._close_registered(sel, conn)

    def _set_events(self, sel: selectors.BaseSelector, conn: FrameConn) -> None:
        """Watch ``conn`` for what it needs now: reads unless paused, writes while flushing."""
        want = (0 if conn.paused else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.want_write else 0)
        have = conn.events
        if want == have:
            return
        if want & selectors.EVENT_READ and not have & selectors.EVENT_READ:
            # Reading again after a pause: the time the connection was not read is not the
            # peer's, so its idle clock and its unfinished frame's clock start again.
            now = time.monotonic()
            conn.last_active = now
            if conn.partial_since:
                conn.partial_since = now
        try:
            if not want:
                sel.unregister(conn.sock)
            elif not have:
                sel.register(conn.sock, want, conn)
            else:
                sel.modify(conn.sock, want, conn)
        except (KeyError, ValueError, OSError):
            self._close_registered(sel, conn)
            return
        conn.events = want

    def _close_registered(self, sel: selectors.BaseSelector, conn: FrameConn) -> None:
        """Unregister and close a connection (I/O thread only)."""
        with self._lock:
            conn.closed = True
            self._accepted.pop(conn, None)
            if self._out.get(conn.key) is conn:
                del self._out[conn.key]
        conn.rbuf = bytearray()
        self._unregister(sel, conn)
        conn.discard_queued()
        self.release(conn)

    @staticmethod
    def _unregister(sel: selectors.BaseSelector, conn: FrameConn) -> None:
        """Stop watching ``conn`` (I/O thread only)."""
        if conn.events:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.events = 0

    def _on_writable(self, sel: selectors.BaseSelector, conn: FrameConn) -> None:
        if conn.closed:
            return
        conn.flush(True)
        if not conn.closed and not conn.want_write:
            self._set_events(sel, conn)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        listener = self.listener
        assert listener is not None
        for _ in range(_ACCEPT_BURST):
            try:
                sock, src = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._stop.is_set():
                    self._count("reader_errors", 1)
                    _log.debug("%s ! accept failed", self._name, exc_info=True)
                return
            ip = plain_ip(src[0])
            peer = format_addr(src[0], src[1])
            conn = FrameConn(self.ctx, sock, peer, ip, KIND_IN)
            ticket = self._admission.admit(ip, conn)
            if isinstance(ticket, str):
                self._count(f"tcp_{ticket}", 1)
                _log.debug("%s ! rejecting %s: too many connections (%s)", self._name, peer, ticket)
                sock.close()
                continue
            conn.ticket = ticket
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                self.release(conn)
                continue
            with self._lock:
                self._accepted[conn] = None
            self._set_events(sel, conn)
            self._count("tcp_accepts", 1)

    def _account(self, sel: selectors.BaseSelector, conn: FrameConn) -> bool:
        """Tell the admission counts what ``conn`` holds buffered now; close the connections
        that hold the most of a budget it overfills. Return False if ``conn`` itself was
        closed."""
        ticket = conn.ticket
        if ticket is None or ticket.trusted:
            return True
        victims = self._admission.hold(ticket, len(conn.rbuf))
        for victim in victims:
            self._count("tcp_preauth_buffer_evicted", 1)
            _log.debug("%s ! %s holds the most of the pre-authentication budget; closing",
                       self._name, victim.key)
            self._close_registered(sel, victim)
        return conn not in victims

    def _read(self, sel: selectors.BaseSelector, conn: FrameConn, now: float) -> None:
        if conn.paused:
            self._set_events(sel, conn)
            return
        try:
            chunk = conn.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            self._close_registered(sel, conn)
            return
        if not chunk:
            self._close_registered(sel, conn)
            return
        conn.last_active = now
        conn.rbuf += chunk
        if not conn.trusted and not self._account(sel, conn):
            return
        if not conn.greeted:
            carries = read_preamble(conn.rbuf)
            if carries == "":
                conn.partial_since = conn.partial_since or now
                return
            if carries == STREAM:
                self._hand_stream(sel, conn)
                return
            if carries != FRAMES:
                self._count("tcp_bad_preamble", 1)
                _log.debug("%s ! %s: bad connection preamble %r; closing", self._name,
                           conn.key, bytes(conn.rbuf[:PREAMBLE_SIZE]))
                self._close_registered(sel, conn)
                return
            del conn.rbuf[:PREAMBLE_SIZE]
            conn.greeted = True
            conn.partial_since = 0.0
        self._parse_frames(sel, conn, now)

    def _parse_frames(self, sel: selectors.BaseSelector, conn: FrameConn, now: float) -> None:
        """Emit every whole frame in the connection's buffer as one batch."""
        buf = conn.rbuf
        limit = self._max_frame if conn.trusted else self._preauth_frame
        frames, off, bad = parse_frames(buf, limit)
        if bad >= 0:
            self._count("tcp_bad_frames" if bad == 0 or bad > self._max_frame
                        else "tcp_preauth_refused", 1)
            _log.debug("%s ! bad frame length %d from %s (limit %d); closing",
                       self._name, bad, conn.key, limit)
            self._close_registered(sel, conn)
            return
        if off:
            del buf[:off]
        if not buf:
            conn.partial_since = 0.0
        elif off or not conn.partial_since:
            # The unfinished frame began in this read (any frame before it is whole): its
            # clock starts now. Keeping the clock of an earlier frame would cut a busy
            # connection whose reads seldom end on a frame boundary.
            conn.partial_since = now
        if frames:
            key = conn.key
            self._count("tcp_received", len(frames))
            self._emit([Incoming(f, key, True, conn, now, "tcp") for f in frames])
            if conn.closed:
                return
            if conn.paused:
                self._count("tcp_paused", 1)
                self._set_events(sel, conn)
        self._account(sel, conn)

    def _hand_stream(self, sel: selectors.BaseSelector, conn: FrameConn) -> None:
        """Hand an accepted connection whose preamble says "stream" over."""
        leftover = bytes(conn.rbuf[PREAMBLE_SIZE:])
        conn.rbuf = bytearray()
        ticket = conn.ticket
        if ticket is not None:
            self._admission.hold(ticket, 0)  # the stream reads for itself, within its limit
        with self._lock:
            self._accepted.pop(conn, None)
        self._unregister(sel, conn)
        conn.ticket = None  # the connection's place in the counts moves to the stream
        self._accept_stream(conn.sock, conn.key, conn.ip, leftover, ticket)

    @staticmethod
    def _next_sweep(now: float, due: float | None) -> float:
        """When to sweep next, once quiet: when the earliest deadline ``due`` falls due (a tick
        late at most, as with a periodic tick), and at most :data:`IDLE_WAIT` from now. Any
        event (a read, an accept, a wake-up) brings the sweep back within a tick."""
        if due is None:
            return now + IDLE_WAIT
        return min(now + IDLE_WAIT, max(due, now) + TICK)

    def _sweep(self, sel: selectors.BaseSelector, now: float) -> float | None:
        """Close idle connections, those whose frame has been arriving for too long, and
        accepted ones not trusted in time; return the earliest deadline of those left and of
        the idle request connections (``sweep_more``), or None if there is none."""
        limits = self._limits
        idle_limit = now - limits.idle_timeout
        frame_limit = now - limits.frame_timeout
        trust_limit = now - limits.preauth_timeout
        due = self._sweep_more(now)
        with self._lock:
            conns = list(self._accepted) + list(self._out.values())
        for conn in conns:
            if conn.closed:
                continue
            if not conn.trusted and conn.accepted_at < trust_limit:
                self._count("tcp_preauth_timeouts", 1)
                _log.debug("%s ! %s: no frame accepted within %.1fs; closing", self._name,
                           conn.key, limits.preauth_timeout)
                self._close_registered(sel, conn)
                continue
            # A paused connection is not read: its unfinished frame is not trickling.
            if conn.partial_since and not conn.paused and conn.partial_since < frame_limit:
                self._count("tcp_frame_timeouts", 1)
                _log.debug("%s ! %s: a frame did not arrive whole within %.1fs; closing",
                           self._name, conn.key, limits.frame_timeout)
                self._close_registered(sel, conn)
                continue
            # Nor is it idle: it holds what its peer sent until our lanes drain (closing it
            # would lose those frames). Its idle clock starts again when it resumes.
            if conn.last_active < idle_limit and not conn.writing and not conn.paused:
                self._count("tcp_idle_closed", 1)
                self._close_registered(sel, conn)
                continue
            # still open: when it next needs a look (a writer at work: every tick)
            at = now if conn.writing else (now if conn.paused else conn.last_active) + limits.idle_timeout
            if not conn.trusted:
                at = min(at, conn.accepted_at + limits.preauth_timeout)
            if conn.partial_since and not conn.paused:
                at = min(at, conn.partial_since + limits.frame_timeout)
            due = at if due is None else min(due, at)
        return due
