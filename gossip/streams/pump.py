"""A :class:`Stream` driven by threads of its own, whose reads and writes complete futures.

A :class:`Stream` blocks its caller: a read waits for the peer's data, a write for room in
the connection. :class:`StreamPump` puts those waits on the stream's own threads, so that a
caller that must never block (an event loop: :class:`gossip.aio.AsyncStream`) is handed data
that is already there, or a :class:`concurrent.futures.Future` that one of those threads
completes:

* the *reader* (``<name>-r``, started by the first read) reads ahead, one frame at a time, up
  to ``window`` bytes that nobody has taken yet, then waits for them to be taken; at the end of
  the stream, or its first error, it stops;
* the *writer* (``<name>-w``, or a thread that lends itself: :meth:`StreamPump.serve_writes`)
  writes what was queued, in order, small pieces joined into frames of up to 1 MiB; a write is
  accepted at once while less than ``window`` bytes wait to be written, and otherwise its
  future completes once half of them went out. Closing (:meth:`close_nowait`,
  :meth:`close_write_nowait`) is queued behind the data; aborting (:meth:`abort_nowait`)
  discards it and goes first.

No thread is held per waiting call: a stream holds at most its two threads, whatever its
callers wait for, and at most ``window`` bytes in each direction beyond the stream's own.
The threads end when the stream ends (closed, aborted, or cut when the cluster stops), and
:attr:`StreamPump.threads` names them so that their owner can join them.

Errors are the stream's: a read that times out (``stream_timeout``) fails the reads waiting
then and the stream stays usable; any other read error, and every write error, is sticky.

This module imports the stream and the errors; it never touches a socket.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypeVar

from ..errors import GossipError, GossipTimeout
from .stream import MSG_HEADER_SIZE, Stream

__all__ = ["StreamPump", "DEFAULT_WINDOW", "MSG_HEADER_SIZE"]

T = TypeVar("T")

DEFAULT_WINDOW = 2 * 1024 * 1024
"""Bytes read ahead, and bytes accepted for writing, before a caller waits."""
_JOIN_FRAME = 1024 * 1024  # queued small writes are joined up to this size
_WRITER_LINGER = 2.0  # a writer thread with nothing to write ends after this long

_WRITE, _CLOSE_WRITE, _CLOSE, _ABORT = range(4)


def _settle(fut: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Complete ``fut`` unless its caller cancelled it."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except InvalidStateError:
        pass


class StreamPump:
    """Drives ``stream`` on threads of its own; see the module docstring.

    Args:
        stream: an open stream (the pump owns it from now on).
        spawn: ``spawn(name, target)`` starts a daemon thread running ``target``.
        name: the threads' name prefix (``gossip-<node>-astream-<n>``).
        window: see :data:`DEFAULT_WINDOW`.
        writer_lent: a thread will lend itself as the writer (:meth:`serve_writes`): none is
            started for writing.
    """

    def __init__(self, stream: Stream, spawn: Callable[[str, Callable[[], None]], threading.Thread],
                 name: str, window: int = DEFAULT_WINDOW, writer_lent: bool = False) -> None:
        self.stream = stream
        self._spawn = spawn
        self._name = name
        self._window = max(1, window)
        self._cond = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        # read side
        self._chunks: deque[bytes] = deque()
        self._pos = 0  # bytes of the first chunk already taken
        self._buffered = 0
        self._readers: deque[tuple[int, Future[bytes]]] = deque()
        self._reading = False  # the reader thread exists
        self._eof = False
        self._read_error: BaseException | None = None
        # write side
        self._wq: deque[tuple[int, Any, Future[None] | None]] = deque()
        self._queued = 0  # data bytes queued, not yet written
        self._writers: deque[Future[None]] = deque()  # writes waiting for room
        self._writing = writer_lent  # a thread serves the write queue
        self._busy = False  # the writer is inside a blocking call
        self._write_closed = False
        self._write_error: BaseException | None = None
        self._finished = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads this pump started."""
        return list(self._threads)

    @property
    def finished(self) -> bool:
        """True once the stream was closed or aborted (by either side's call, or a stop)."""
        return self._finished or self.stream.closed

    def shutdown(self) -> None:
        """The stream was cut (the cluster stops): fail every waiter, wake every thread."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        self._fail_all(self._closed_error())

    def _closed_error(self) -> BaseException:
        try:
            self.stream.read(0)  # raises the stream's own "closed" error
        except BaseException as exc:  # ClusterClosed when cut by a stop, else ValueError
            return exc
        return ValueError("I/O operation on a closed stream")

    def _fail_all(self, exc: BaseException, readers_too: bool = True) -> None:
        """Fail the waiting writes (and reads): the queued data and half-close go, a queued
        close or abort stays (it still ends the stream)."""
        with self._cond:
            readers = list(self._readers) if readers_too else []
            if readers_too:
                self._readers.clear()
            writers = list(self._writers)
            self._writers.clear()
            dropped = [f for k, _, f in self._wq if f is not None and k in (_WRITE, _CLOSE_WRITE)]
            kept = [c for c in self._wq if c[0] in (_CLOSE, _ABORT)]
            self._wq.clear()
            self._wq.extend(kept)
            self._queued = 0
            self._cond.notify_all()
        for _, rf in readers:
            _settle(rf, exc=exc)
        for f in writers + dropped:
            _settle(f, exc=exc)

    def _start(self, role: str, target: Callable[[], None]) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(self._spawn(f"{self._name}-{role}", target))

    # ------------------------------------------------------------------ reading

    def read_nowait(self, n: int) -> bytes | None:
        """Return up to ``n`` bytes read ahead (``b""`` at the end of the stream), or None if
        none are there yet (then :meth:`read_future` waits for them).

        Raises:
            the stream's read error (sticky), as :meth:`Stream.read` raises it.
        """
        with self._cond:
            if self._chunks and not self._readers:
                return self._take_locked(n)
            if self._read_error is not None and not self._chunks:
                raise self._read_error
            if self._eof and not self._chunks:
                return b""
            if self._finished and not self._reading:  # closed or cut: nothing will come
                raise self._closed_error()
            self._start_reader_locked()
            return None

    def read_future(self, n: int) -> Future[bytes]:
        """Return a future of up to ``n`` bytes (``b""`` at the end of the stream).

        Cancelling it before data came gives up the read; nothing is lost.
        """
        fut: Future[bytes] = Future()
        with self._cond:
            if self._chunks and not self._readers:
                fut.set_result(self._take_locked(n))
                return fut
            if self._read_error is not None and not self._chunks:
                fut.set_exception(self._read_error)
                return fut
            if self._eof and not self._chunks:
                fut.set_result(b"")
                return fut
            if self._finished and not self._reading:  # closed or cut: nothing will come
                fut.set_exception(self._closed_error())
                return fut
            self._readers.append((n, fut))
            self._start_reader_locked()
        return fut

    def _start_reader_locked(self) -> None:
        if not self._reading and not self._finished:
            self._reading = True
            self._start("r", self._read_loop)

    def _take_locked(self, n: int) -> bytes:
        head = self._chunks[0]
        pos = self._pos
        left = len(head) - pos
        if n >= left:
            out = head if pos == 0 else head[pos:]
            self._chunks.popleft()
            self._pos = 0
        else:
            out = head[pos:pos + n]
            self._pos = pos + n
        was_full = self._buffered >= self._window
        self._buffered -= len(out)
        if was_full and self._buffered < self._window:
            self._cond.notify_all()
        return out

    def _serve_readers_locked(self) -> list[tuple[Future[bytes], bytes]]:
        done: list[tuple[Future[bytes], bytes]] = []
        while self._readers:
            n, fut = self._readers[0]
            if fut.cancelled():
                self._readers.popleft()
                continue
            if self._chunks:
                self._readers.popleft()
                done.append((fut, self._take_locked(n)))
            elif self._eof:
                self._readers.popleft()
                done.append((fut, b""))
            else:
                break
        return done

    def _read_loop(self) -> None:
        stream, cond = self.stream, self._cond
        while True:
            with cond:
                while (self._buffered >= self._window and not self._finished
                       and self._read_error is None):
                    cond.wait()
                if self._finished or self._read_error is not None:
                    self._reading = False
                    waiting = [f for _, f in self._readers if self._read_error is None]
                    if waiting:
                        self._readers.clear()
                    break
            try:
                chunk = stream.read(self._window)
            except GossipTimeout as exc:
                with cond:  # the stream stays usable: fail only the reads waiting now
                    waiting = [f for _, f in self._readers]
                    self._readers.clear()
                for f in waiting:
                    _settle(f, exc=exc)
                continue
            except BaseException as exc:  # GossipError, or ValueError once closed
                with cond:
                    self._read_error = exc
                    waiting = [f for _, f in self._readers]
                    self._readers.clear()
                for f in waiting:
                    _settle(f, exc=exc)
                return
            with cond:
                if chunk:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                else:
                    self._eof = True
                done = self._serve_readers_locked()
            for f, data in done:
                _settle(f, data)
            if not chunk:
                return
        # Cut or closed while reads waited (they came after shutdown() failed the others).
        if waiting:
            closed = self._closed_error()
            for f in waiting:
                _settle(f, exc=closed)

    # ------------------------------------------------------------------ writing

    def write_nowait(self, data: bytes) -> Future[None] | None:
        """Queue ``data`` for writing; None if there was room, else a future that completes
        once there is (the data is queued either way, and written in order).

        Raises:
            the stream's write error (sticky); ValueError after :meth:`close_write_nowait` or
            once the stream is closed.
        """
        with self._cond:
            self._check_writable_locked()
            if not data:
                return None
            self._wq.append((_WRITE, data, None))
            self._queued += len(data)
            self._wake_writer_locked()
            if self._queued <= self._window:
                return None
            fut: Future[None] = Future()
            self._writers.append(fut)
            return fut

    def close_write_nowait(self) -> Future[None]:
        """End the writing side after what is queued (:meth:`Stream.close_write`); idempotent.

        Raises:
            as :meth:`write_nowait`, but a second call returns a completed future.
        """
        fut: Future[None] = Future()
        with self._cond:
            if self._write_closed and self._write_error is None and not self.finished:
                fut.set_result(None)
                return fut
            self._check_writable_locked()
            self._write_closed = True
            self._wq.append((_CLOSE_WRITE, None, fut))
            self._wake_writer_locked()
        return fut

    def close_nowait(self) -> Future[None]:
        """Close the stream after what is queued (:meth:`Stream.close`); never fails."""
        fut: Future[None] = Future()
        with self._cond:
            if self.finished and not self._writing:
                fut.set_result(None)
                return fut
            self._write_closed = True
            self._wq.append((_CLOSE, None, fut))
            self._wake_writer_locked()
        return fut

    def abort_nowait(self, reason: str = "") -> Future[None]:
        """Abort the stream (:meth:`Stream.abort`), discarding what is queued; never fails.

        When the writer is inside a write that waits for the peer, the stream is cut at once
        from this thread (a short call that fails the writer fast), without the abort marker.
        """
        fut: Future[None] = Future()
        with self._cond:
            dropped = [f for k, _, f in self._wq if f is not None and k in (_WRITE, _CLOSE_WRITE)]
            dropped += self._writers
            closes = [f for k, _, f in self._wq if f is not None and k in (_CLOSE, _ABORT)]
            self._wq.clear()
            self._writers.clear()
            self._queued = 0
            self._write_closed = True
            self._wq.append((_ABORT, reason, fut))
            busy = self._busy
            self._wake_writer_locked()
        for f in dropped:
            _settle(f, exc=ValueError("the stream was aborted"))
        for f in closes:  # a close or an abort never fails: this abort ends the stream
            _settle(f)
        if busy:
            self.stream.abort(reason)
        return fut

    def _check_writable_locked(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self.finished:
            raise self._closed_error()
        if self._write_closed:
            raise ValueError("write to a stream after close_write()")

    def _wake_writer_locked(self) -> None:
        if self._writing:
            self._cond.notify_all()
        elif not self._finished:
            self._writing = True
            self._start("w", self._write_loop)

    def _write_loop(self) -> None:
        self.serve_writes(idle=_WRITER_LINGER)

    def serve_writes(self, until: Future[Any] | None = None, idle: float | None = None) -> None:
        """Write what is queued until the stream is closed; with ``until``, until that future
        is done and the queue is empty (a thread that serves the stream's handler lends itself
        so: the stream pool's worker); with ``idle``, until nothing was queued for that long.
        """
        cond = self._cond
        with cond:
            self._writing = True
        if until is not None:
            def wake(_: Future[Any]) -> None:
                with cond:
                    cond.notify_all()

            until.add_done_callback(wake)
        try:
            while True:
                with cond:
                    while (not self._wq and not self._finished
                           and not (until is not None and until.done())):
                        if not cond.wait(idle) and not self._wq:
                            return
                    if not self._wq:
                        return
                    kind, value, fut = self._wq.popleft()
                    if kind == _WRITE:
                        parts = [value]
                        size = len(value)
                        while self._wq and self._wq[0][0] == _WRITE and size < _JOIN_FRAME:
                            nxt = self._wq.popleft()[1]
                            parts.append(nxt)
                            size += len(nxt)
                        value = parts[0] if len(parts) == 1 else b"".join(parts)
                    self._busy = True
                if not self._run(kind, value, fut):
                    return
        finally:
            with cond:
                self._writing = False
                self._busy = False

    def _run(self, kind: int, value: Any, fut: Future[None] | None) -> bool:
        """Carry out one queued command; False once the stream is done for writing."""
        stream = self.stream
        try:
            if kind == _WRITE:
                stream.write(value)
            elif kind == _CLOSE_WRITE:
                stream.close_write()
            elif kind == _CLOSE:
                stream.close()
            else:
                stream.abort(value)
        except BaseException as exc:  # GossipError, or ValueError once closed
            with self._cond:
                self._busy = False
                if kind in (_WRITE, _CLOSE_WRITE):
                    self._write_error = exc
            if fut is not None:  # a close or an abort never fails
                _settle(fut, exc=None if kind in (_CLOSE, _ABORT) else exc)
            self._fail_all(exc, readers_too=False)
            return kind not in (_CLOSE, _ABORT)  # a later close still ends the stream
        with self._cond:
            self._busy = False
            if kind == _WRITE:
                self._queued -= len(value)
                waiters: list[Future[None]] = []
                if self._queued <= self._window // 2:
                    waiters = list(self._writers)
                    self._writers.clear()
            else:
                waiters = []
            if kind in (_CLOSE, _ABORT):
                self._finished = True
                self._cond.notify_all()
        for w in waiters:
            _settle(w)
        if fut is not None:
            _settle(fut)
        return kind not in (_CLOSE, _ABORT)

    # ------------------------------------------------------------------ typed messages

    def pack_msg(self, msg_type: int, obj: Any) -> bytes:
        """The bytes of a typed message (see :meth:`Stream.pack_msg`)."""
        return self.stream.pack_msg(msg_type, obj)

    def msg_header(self, header: bytes) -> tuple[int, int]:
        """``(type, length)`` of a typed message's header (see :meth:`Stream.msg_header`);
        an oversized one breaks the read side for good."""
        try:
            return self.stream.msg_header(header)
        except GossipError as exc:
            with self._cond:
                self._read_error = exc
                self._chunks.clear()
                self._buffered = 0
                self._pos = 0
                self._cond.notify_all()
            raise

    def unpack_msg(self, msg_type: int, got: int, payload: bytes, cls: type[T] | None) -> Any:
        """Decode a typed message's payload (see :meth:`Stream.unpack_msg`)."""
        return self.stream.unpack_msg(msg_type, got, payload, cls)
