"""The stream pool: streams accepted from peers, their handlers, and streams opened to peers.

::

    transport I/O thread ── on_stream(conn) ──► pool slot free?  ── yes ─► worker thread
                                                    │ no                     read OPEN, check
                                                    ▼                        handler and key,
                                       refuser thread (bounded queue):       ACCEPT, wait HELLO,
                                       read OPEN, answer "busy", close       run the handler,
                                                                             close the stream

Accepted streams run their handler on a worker of a bounded pool (``max_concurrent_streams``
threads, ``gossip-<node>-stream-<n>``), never on a reader or lane thread. A worker serves one
stream at a time, from its OPEN to the end of its handler, then waits a moment for the next one
and ends when none comes. An opening that finds every worker busy is answered "busy" by one
refuser thread (``gossip-<node>-stream-refuse``; a few openings may wait for it, more are cut
at once): the answer is bound to the opener's salt like an acceptance, so it cannot be replayed.

An accepted connection may only carry small frames until its opening is authentic (a
transport with a pre-authentication limit offers ``mark_trusted()``): that is when the OPEN
came sealed under a cluster key (or, on a cluster without keys, when it is accepted), and the
limit is lifted *before* the ACCEPT goes out, so the opener's first full-size frames, which
may follow its HELLO at once, never meet it; an unsealed OPEN on a cluster with keys lifts it
only after its HELLO. One remote host may have at most ``max_opening_streams_per_source``
stream connections opening at once (arrived, HELLO not yet checked); more are closed at once
(``streams.refused_per_source``), so silent connections from one host cannot hold the pool.

Every step of an opening runs under ``stream_open_timeout``, counted from the connection's
arrival: reading the OPEN, writing the ACCEPT and reading the HELLO on the accepting side (the
HELLO's deadline); dialing, writing the OPEN and reading the answer on the opening side. A failure at any step closes the connection: nothing is left half
open. The handshake and the framing are described in :mod:`gossip.streams`.

Streams used without blocking (:mod:`gossip.aio`) are driven by a
:class:`~gossip.streams.pump.StreamPump` (:meth:`StreamPool.pump`): a stream opened so
(:meth:`StreamPool.open_nowait`) is dialed and opened on a thread of its own
(``gossip-<node>-astream-<n>-w``), which then serves its writes; an accepted stream whose
handler runs elsewhere lends the pool's worker as its writer. Either way its reads run on a
reader thread (``...-r``) started by its first read. Stopping the engine cuts them all and joins
their threads.

Counters (in :meth:`gossip.Cluster.stats`): ``streams.opened`` (by this node),
``streams.accepted`` (handlers started), ``streams.refused`` (openings this node refused),
``streams.open_refused`` (openings peers refused), ``streams.active`` (open now, both kinds),
``streams.bytes_in`` / ``streams.bytes_out`` (stream data read and written),
``streams.handler_errors``, ``streams.bad_opens`` (openings dropped: malformed, not
authentic, or too slow) and ``streams.refused_per_source`` (connections cut because their host
had too many openings under way).

This module imports the stream layer, the packet codec and the transports' interface. The
pool is given what it uses (the handlers, the member snapshot of a sender, how to dial); it
never holds the engine.
"""

from __future__ import annotations

from _operator import _compare_digest  # hmac.compare_digest without importing hmac (OpenSSL)

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..compression import get_compressor
from ..config import Config
from ..counters import STREAM_COUNTERS, Counters
from ..errors import (
    AuthenticationError,
    ClusterClosed,
    DecodeError,
    GossipError,
    GossipTimeout,
    StreamRefused,
    TransportError,
)
from ..handlers import HANDLER_STREAM, MessageHandlers, check_user_type
from ..hlc import HLC
from ..node import Node
from ..packet import Packet, PacketCodec
from ..streams import (
    KEY_ID_SIZE,
    SALT_SIZE,
    STATUS_ACCEPTED,
    STATUS_BUSY,
    STATUS_CLOSING,
    STATUS_NO_HANDLER,
    STATUS_UNKNOWN_KEY,
    Stream,
    StreamKeys,
    decode_accept,
    decode_open,
    derive_stream_keys,
    encode_accept,
    encode_open,
    key_id,
)
from ..address import host_of
from ..transports.base import Deadline, StreamConn
from ..wire import MessageType

if TYPE_CHECKING:
    from ..streams.pump import StreamPump

__all__ = ["StreamPool", "STREAM_COUNTERS"]


_IDLE_LINGER = 2.0  # an idle worker waits this long for another stream before it ends
_REFUSE_QUEUE = 16  # openings waiting for the refuser; more are cut at once
_REFUSE_READ = 1.0  # longest the refuser waits for an OPEN

I = TypeVar("I")


class _Workers(Generic[I]):
    """Up to ``max_threads`` named threads serving items, plus ``max_queued`` waiting items.

    Threads start when an item finds no idle one, and end after ``_IDLE_LINGER`` idle seconds.
    """

    def __init__(self, name: str, max_threads: int, max_queued: int,
                 serve: Callable[[I], None], discard: Callable[[I], None],
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._name = name
        self._max_threads = max_threads
        self._max_queued = max_queued
        self._serve = serve
        self._discard = discard
        self._log = log
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[I] = deque()
        self._threads: dict[threading.Thread, None] = {}
        self._idle = 0
        self._load = 0  # items queued or being served
        self._seq = 0
        self._closed = False

    def submit(self, item: I) -> bool:
        """Hand ``item`` to a worker; False if every worker is busy and the queue is full."""
        with self._cond:
            if self._closed or self._load >= self._max_threads + self._max_queued:
                return False
            self._load += 1
            self._queue.append(item)
            if self._idle >= len(self._queue):
                self._cond.notify()
            elif len(self._threads) < self._max_threads:
                self._seq += 1
                t = threading.Thread(target=self._run, name=f"{self._name}-{self._seq}"
                                     if self._max_threads > 1 else self._name, daemon=True)
                self._threads[t] = None
                t.start()
            return True

    def _run(self) -> None:
        me = threading.current_thread()
        cond = self._cond
        while True:
            with cond:
                self._idle += 1
                end = time.monotonic() + _IDLE_LINGER
                while not self._queue and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    cond.wait(left)
                self._idle -= 1
                if not self._queue or self._closed:
                    self._threads.pop(me, None)
                    return
                item = self._queue.popleft()
            try:
                self._serve(item)
            except Exception:
                self._log.exception("bug: serving a stream failed")
            finally:
                with cond:
                    self._load -= 1

    def close(self) -> None:
        """Take no more items, discard the queued ones and wake idle workers."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._load -= len(queued)
            self._cond.notify_all()
        for item in queued:
            self._discard(item)

    def join(self, deadline: float) -> list[str]:
        """Join the workers; return the names of those still running at ``deadline``."""
        with self._cond:
            threads = list(self._threads)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive() and t is not me]

    @property
    def threads(self) -> int:
        """How many worker threads exist now."""
        return len(self._threads)


class StreamPool:
    """Accepts and opens the streams of one engine; see the module docstring.

    Args:
        config: the validated configuration.
        codec: the packet pipeline (OPEN and ACCEPT are packets; its keyring keys streams).
        sender_id: this node's id, as bytes.
        hlc: the clock that stamps message ids.
        handlers: the message handlers (stream handlers serve accepted streams).
        node_for_sender: ``node_for_sender(sender)`` returns the snapshot of an opener.
        dial: ``dial(addr, timeout)`` dials a stream connection.
        check_open: raises :class:`~gossip.errors.ClusterClosed` unless the engine runs.
        counters: where the ``streams.*`` counters go.
        log: the engine's logger.
        warn: ``warn(key, msg, *args)`` logs a warning at most once per interval per key.
        prefix: the thread name prefix (``gossip-<node>``).
    """

    def __init__(
        self, config: Config, codec: PacketCodec, *, sender_id: bytes, hlc: HLC,
        handlers: MessageHandlers, node_for_sender: Callable[[bytes], Node],
        dial: Callable[[str, float], StreamConn], check_open: Callable[[], None],
        counters: Counters, log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        warn: Callable[..., None], prefix: str,
    ) -> None:
        cfg = config
        self.config = cfg
        self.codec = codec
        self._sender_id = sender_id
        self._hlc = hlc
        self._handlers = handlers
        self._node_for_sender = node_for_sender
        self._dial = dial
        self._check_open = check_open
        self.counters = counters
        self.log = log
        self._warn = warn
        self._debug = self.log.isEnabledFor(logging.DEBUG)
        self._label = self.codec.label.encode("utf-8")
        self._compressor = get_compressor(cfg.compressor)
        self._lock = threading.Lock()
        self._streams: dict[Stream, None] = {}
        self._closing = False
        self._opening: dict[StreamConn, str] = {}  # connections still opening -> their host
        self._opening_per_source: dict[str, int] = {}
        # Our own openings under way, per remote host: kept within max_opening_streams_per_source
        # (a peer cuts more than that from one host while they are unauthenticated).
        self._dialing: dict[str, int] = {}
        self._dialing_room = threading.Condition(self._lock)
        self._workers: _Workers[StreamConn] = _Workers(
            f"{prefix}-stream", cfg.max_concurrent_streams, 0, self._serve, self._discard,
            self.log)
        self._refuser: _Workers[StreamConn] = _Workers(
            f"{prefix}-stream-refuse", 1, _REFUSE_QUEUE, self._refuse_busy, self._discard,
            self.log)
        self._prefix = prefix
        self._pump_ids = itertools.count(1)
        self._pumps: dict[StreamPump, None] = {}
        self._threads: dict[threading.Thread, None] = {}  # pumps' and openers' threads

    # ------------------------------------------------------------------ shared

    def _timeout(self) -> float | None:
        t = self.config.stream_timeout
        return None if t == 0 else t

    def _make_stream(self, conn: StreamConn, client: bool, keys: StreamKeys | None, codec: Any,
                     msg_type: int, node: Node | None) -> Stream:
        cfg = self.config
        return Stream(
            conn, client=client, keys=keys, codec=codec, msg_type=msg_type, remote_node=node,
            compressor=self._compressor, compress_min_size=cfg.compress_min_size,
            max_frame_size=cfg.stream_max_packet_size, max_msg_size=cfg.tcp_max_packet_size,
            timeout=self._timeout(), counters=self.counters, on_close=self._forget,
        )

    def _register(self, stream: Stream) -> bool:
        with self._lock:
            if self._closing:
                return False
            self._streams[stream] = None
            return True

    def _forget(self, stream: Stream) -> None:
        with self._lock:
            self._streams.pop(stream, None)

    def _packet(self, msg_type: int, body: bytes) -> bytes:
        return self.codec.encode_raw(msg_type, self._sender_id, self._hlc.now(), 1, body)

    def add_stats(self, out: dict[str, int]) -> None:
        """Put the stream counters into ``out`` (zero when nothing happened yet)."""
        for name in STREAM_COUNTERS:
            out.setdefault(name, 0)
        with self._lock:
            out["streams.active"] = len(self._streams)

    # ------------------------------------------------------------------ opening (client side)

    def open(self, node: Node, msg_type: int, payload: Any, timeout: float | None) -> Stream:
        """Open a stream to ``node``; see :meth:`gossip.Cluster.open_stream`.

        Raises:
            StreamRefused: the peer refused (no handler, pool full, unknown key, stopping) or
                closed the connection without answering.
            GossipTimeout: no answer within the timeout.
            ConnectError: the node could not be reached.
            EncryptionError, DecodeError: the peer's answer is not authentic or malformed.
            LocalProtocolError: ``msg_type`` is internal or ``payload`` cannot be encoded.
            ClusterClosed: the cluster is not running.
        """
        self._check_open()
        check_user_type(msg_type)
        total = self.config.stream_open_timeout if timeout is None else timeout
        deadline = Deadline(total)
        what = f"stream to {node.id.short}@{node.address}"
        codec = self.codec
        body = codec.codec.encode(payload)
        salt = os.urandom(SALT_SIZE)
        keyring = codec.keyring
        key = keyring.primary_key if keyring else None
        kid = key_id(key) if key is not None else bytes(KEY_ID_SIZE)
        frame = self._packet(MessageType.STREAM_OPEN, encode_open(msg_type, salt, kid, body))
        host = host_of(node.address)
        self._enter_opening(host, deadline, what, total)
        left = False

        def leave() -> None:  # once: at the peer's answer, or when the opening fails
            nonlocal left
            if not left:
                left = True
                self._leave_opening(host)

        try:
            return self._open_on(node, msg_type, what, frame, salt, key, keyring, deadline,
                                 total, leave)
        finally:
            leave()

    def _enter_opening(self, host: str, deadline: Deadline, what: str, total: float) -> None:
        """Wait for room among our openings to ``host`` (see ``_dialing``)."""
        limit = self.config.max_opening_streams_per_source
        with self._dialing_room:
            while self._dialing.get(host, 0) >= limit:
                try:
                    self._dialing_room.wait(deadline.remaining(what))
                except GossipTimeout as exc:
                    raise GossipTimeout(f"{what}: {limit} other openings to {host} did not "
                                        f"finish within {total}s") from exc
            self._dialing[host] = self._dialing.get(host, 0) + 1

    def _leave_opening(self, host: str) -> None:
        """One of our openings to ``host`` no longer counts (called once per opening)."""
        with self._dialing_room:
            n = self._dialing.get(host, 0) - 1
            if n > 0:
                self._dialing[host] = n
            else:
                self._dialing.pop(host, None)
            self._dialing_room.notify_all()  # waiters for other hosts share the condition

    def _open_on(self, node: Node, msg_type: int, what: str, frame: bytes, salt: bytes,
                 key: bytes | None, keyring: Any, deadline: Deadline, total: float,
                 answered: Callable[[], None]) -> Stream:
        codec = self.codec
        try:
            conn = self._dial(node.address, deadline.remaining(what) or total)
        except GossipTimeout as exc:
            raise GossipTimeout(f"{what}: could not connect within {total}s") from exc
        stream: Stream | None = None
        try:
            conn.send_frame(frame, deadline.remaining(what))
            try:
                answer = conn.recv_frame(deadline.remaining(what))
            except TransportError as exc:
                cut: TransportError | None = exc
                answer = None
            else:
                cut = None
            if answer is None:
                self.counters.inc("streams.open_refused")
                raise StreamRefused(
                    f"{what}: the peer closed the connection without answering: it is "
                    "stopping, has another cluster key or label, or cuts new streams from this "
                    "host while too many are still opening (its max_opening_streams_per_source)",
                    "closed without an answer") from cut
            answered()  # the peer counted this opening until our OPEN proved authentic
            pkt = codec.decode(bytes(answer))
            if pkt.msg_type != MessageType.STREAM_OPEN_ACK:
                raise DecodeError(f"{what}: answered with message type {pkt.msg_type}")
            acc = decode_accept(pkt.payload)
            if not _compare_digest(acc.client_salt, salt):
                raise AuthenticationError(f"{what}: the answer is not for this stream")
            if acc.status != STATUS_ACCEPTED:
                self.counters.inc("streams.open_refused")
                raise StreamRefused(f"{what} was refused: {acc.reason}", acc.reason)
            keys = (None if key is None
                    else derive_stream_keys(key, salt, acc.server_salt, self._label,
                                            keyring.cipher if keyring else "aes-gcm"))
            stream = self._make_stream(conn, True, keys, codec.codec, msg_type, node)
            stream._send_hello(deadline.remaining(what))
        except GossipTimeout as exc:
            conn.close()
            raise GossipTimeout(f"{what}: no answer within {total}s") from exc
        except BaseException:
            conn.close()
            raise
        if not self._register(stream):
            stream._shutdown()
            raise ClusterClosed("the cluster is stopped")
        self.counters.inc("streams.opened")
        if self._debug:
            self.log.debug("> %s opened (type %d)", what, msg_type)
        return stream

    # ------------------------------------------------------------------ streams that never block

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except Exception:
                self.log.exception("bug: a stream thread failed")
            finally:
                with self._lock:
                    self._threads.pop(threading.current_thread(), None)

        t = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads[t] = None
        t.start()
        return t

    def pump(self, stream: Stream, writer_lent: bool = False) -> StreamPump:
        """Return a :class:`~gossip.streams.pump.StreamPump` driving ``stream`` (an open stream
        of this pool): its reads and writes then complete futures on threads of its own.

        ``writer_lent``: the calling thread will serve its writes
        (:meth:`~gossip.streams.pump.StreamPump.serve_writes`), as the worker of an accepted
        stream does while its handler runs elsewhere.
        """
        from ..streams.pump import StreamPump

        name = f"{self._prefix}-astream-{next(self._pump_ids)}"
        pump = StreamPump(stream, self._spawn, name, writer_lent=writer_lent)
        with self._lock:
            closing = self._closing
            if not closing:
                self._pumps[pump] = None
        if closing:
            pump.shutdown()
        stream_close = stream._on_close

        def forget(s: Stream) -> None:
            with self._lock:
                self._pumps.pop(pump, None)
            pump.shutdown()
            if stream_close is not None:
                stream_close(s)

        stream._on_close = forget
        return pump

    def open_nowait(self, node: Node, msg_type: int, payload: Any,
                    timeout: float | None) -> Future[StreamPump]:
        """:meth:`open` without blocking: the stream is dialed and opened on a thread of its
        own, which then serves its writes; the future's result is its
        :class:`~gossip.streams.pump.StreamPump` (or it fails as :meth:`open` raises).
        Cancelling the future closes the stream if the opening completes anyway.

        Raises:
            LocalProtocolError: ``msg_type`` is internal.
            ClusterClosed: the cluster is not running.
        """
        self._check_open()
        check_user_type(msg_type)
        fut: Future[StreamPump] = Future()
        name = f"{self._prefix}-astream-{next(self._pump_ids)}"

        def run() -> None:
            try:
                stream = self.open(node, msg_type, payload, timeout)
            except BaseException as exc:
                try:
                    fut.set_exception(exc)
                except InvalidStateError:  # cancelled meanwhile: nothing was opened
                    pass
                return
            pump = self.pump(stream, writer_lent=True)
            try:
                fut.set_result(pump)
            except InvalidStateError:  # the caller gave up while the stream opened
                stream.close()
                return
            pump.serve_writes(idle=_IDLE_LINGER)

        self._spawn(f"{name}-w", run)
        return fut

    # ------------------------------------------------------------------ accepting (server side)

    def on_stream(self, conn: StreamConn) -> None:
        """Transport callback (an I/O thread): hand ``conn`` to a worker, never blocking."""
        if self._closing:
            conn.close()
            return
        host = host_of(conn.peer)
        with self._lock:
            opening = self._opening_per_source.get(host, 0)
            if opening < self.config.max_opening_streams_per_source:
                self._opening_per_source[host] = opening + 1
                self._opening[conn] = host
        if opening >= self.config.max_opening_streams_per_source:
            self.counters.inc("streams.refused_per_source")
            self._warn("streams_per_source", "%d stream connections from %s are still "
                       "opening: cutting new ones (max_opening_streams_per_source)",
                       opening, host)
            conn.close()
            return
        if self._workers.submit(conn):
            return
        if not self._refuser.submit(conn):
            self.counters.inc("streams.refused")
            self._warn("streams_full", "stream pool full (max_concurrent_streams=%d) and "
                       "refusals backed up: cutting new stream connections",
                       self.config.max_concurrent_streams)
            self._discard(conn)

    def _opened(self, conn: StreamConn) -> None:
        """``conn`` is no longer opening (its HELLO was checked, or it failed): its host may
        open another (idempotent)."""
        with self._lock:
            host = self._opening.pop(conn, None)
            if host is None:
                return
            n = self._opening_per_source.get(host, 0) - 1
            if n > 0:
                self._opening_per_source[host] = n
            else:
                self._opening_per_source.pop(host, None)

    def _discard(self, conn: StreamConn) -> None:
        self._opened(conn)
        conn.close()

    def _read_open(self, conn: StreamConn, deadline: Deadline) -> tuple[Packet, Any] | None:
        """Read and check the OPEN; None (counted, connection closed) if it is bad."""
        try:
            frame = conn.recv_frame(deadline.remaining("stream OPEN"))
            if frame is None:
                raise TransportError("the connection ended before its OPEN")
            pkt = self.codec.decode(bytes(frame))
            if pkt.msg_type != MessageType.STREAM_OPEN:
                raise DecodeError(f"a stream began with message type {pkt.msg_type}")
            return pkt, decode_open(pkt.payload)
        except GossipError as exc:
            self._bad_open(conn, exc)
            return None

    def _bad_open(self, conn: StreamConn, exc: BaseException) -> None:
        self.counters.inc("streams.bad_opens")
        if self._debug:
            self.log.debug("! stream from %s dropped while opening: %s", conn.peer, exc)
        self._discard(conn)

    def _refuse(self, conn: StreamConn, status: int, reason: str, client_salt: bytes,
                deadline: Deadline) -> None:
        """Answer ``status``, end our side and close (the OPEN was read: nothing is unread, so
        the answer is not lost to a reset)."""
        self.counters.inc("streams.refused")
        if self._debug:
            self.log.debug("! stream from %s refused: %s", conn.peer, reason)
        try:
            answer = self._packet(MessageType.STREAM_OPEN_ACK,
                                  encode_accept(status, client_salt, bytes(SALT_SIZE), reason))
            conn.send_frame(answer, deadline.remaining("stream refusal"))
            conn.close_write()
        except GossipError:
            pass
        finally:
            self._discard(conn)

    def _refuse_busy(self, conn: StreamConn) -> None:
        """Refuser thread: answer an opening that found the pool full."""
        deadline = Deadline(min(self.config.stream_open_timeout, _REFUSE_READ))
        opened = self._read_open(conn, deadline)
        if opened is None:
            return
        self._refuse(conn, STATUS_BUSY,
                     f"the stream pool is full (max_concurrent_streams="
                     f"{self.config.max_concurrent_streams})", opened[1].client_salt, deadline)

    def _decide(self, req: Any) -> tuple[int, str, Callable[..., Any] | None, bytes | None]:
        if self._closing:
            return STATUS_CLOSING, "the node is stopping", None, None
        handler = self._handlers.get(req.msg_type)
        if handler is None or handler.kind != HANDLER_STREAM:
            return (STATUS_NO_HANDLER, f"no stream handler for message type {req.msg_type}",
                    None, None)
        keyring = self.codec.keyring
        key: bytes | None = None
        if keyring:
            for k in keyring.keys:
                if _compare_digest(key_id(k), req.key_id):
                    key = k
                    break
            else:
                return STATUS_UNKNOWN_KEY, "the opener's key is not installed here", None, None
        return STATUS_ACCEPTED, "", handler.fn, key

    def _serve(self, conn: StreamConn) -> None:
        """Worker thread: one accepted stream, from its OPEN to the end of its handler."""
        deadline = Deadline(self.config.stream_open_timeout)
        opened = self._read_open(conn, deadline)
        if opened is None:
            return
        pkt, req = opened
        if pkt.encrypted or self.codec.keyring is None:
            # An authentic OPEN: the opener is a member, no longer a silent stranger. Its host
            # may open the next one (it waits for our answer before it does, see open()).
            self._opened(conn)
        status, reason, fn, key = self._decide(req)
        if status != STATUS_ACCEPTED or fn is None:
            self._refuse(conn, status, reason, req.client_salt, deadline)
            return
        server_salt = os.urandom(SALT_SIZE)
        keyring = self.codec.keyring
        keys = None if key is None or keyring is None else derive_stream_keys(
            key, req.client_salt, server_salt, self._label, keyring.cipher)
        stream = self._make_stream(conn, False, keys, pkt.codec, req.msg_type, None)
        authentic = pkt.encrypted or self.codec.keyring is None
        if authentic:
            # Lifts the transport's pre-auth frame limit before the ACCEPT: the opener sends
            # full-size frames right behind its HELLO, and a reader still holding the small
            # limit would cut the connection (1009).
            conn.mark_trusted()
        try:
            answer = self._packet(MessageType.STREAM_OPEN_ACK,
                                  encode_accept(STATUS_ACCEPTED, req.client_salt, server_salt))
            conn.send_frame(answer, deadline.remaining("stream ACCEPT"))
            stream._expect_hello(deadline.remaining("stream HELLO"))
        except GossipError as exc:
            self._bad_open(conn, exc)
            stream._finish()
            return
        self._opened(conn)
        if not self._register(stream):
            stream._shutdown()
            return
        if not authentic:
            conn.mark_trusted()
        self.counters.inc("streams.accepted")
        sender = self._node_for_sender(pkt.sender)
        stream.remote_node = sender
        packet = Packet(req.msg_type, pkt.sender, pkt.msg_id, pkt.ttl, req.payload, pkt.codec,
                        pkt.compressed, pkt.encrypted, pkt.size, reliable=True)
        if self._debug:
            self.log.debug("< stream from %s accepted (type %d)", conn.peer, req.msg_type)
        try:
            fn(sender, packet, stream)
        except ClusterClosed:
            stream.abort("the node is stopping")  # the stream was cut by stop(): no bug
        except Exception as exc:
            self.counters.inc("streams.handler_errors")
            self.log.exception("stream handler for type %d raised", req.msg_type)
            stream.abort(f"{type(exc).__name__}: {exc}")
        finally:
            stream.close()

    # ------------------------------------------------------------------ stopping

    def close(self) -> None:
        """Refuse new streams, cut every open one (their calls raise ClusterClosed), wake the
        workers."""
        with self._lock:
            self._closing = True
            streams = list(self._streams)
            pumps = list(self._pumps)
        for stream in streams:
            stream._shutdown()
        for pump in pumps:
            pump.shutdown()
        self._workers.close()
        self._refuser.close()

    def join(self, deadline: float) -> list[str]:
        """Join the worker threads; return the names of those still running at ``deadline``.

        A handler that ignores the errors of its cut stream and goes on running is a straggler.
        """
        stragglers = self._workers.join(deadline) + self._refuser.join(deadline)
        with self._lock:
            threads = list(self._threads)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        return stragglers + [t.name for t in threads if t.is_alive() and t is not me]
