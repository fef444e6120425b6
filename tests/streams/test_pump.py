"""The stream pump on a stream of our own making: read-ahead within its window, reads that time
out and reads that fail, writes that wait for room, half-close, sticky write errors, aborts
that cut a blocked write, a stream cut while reads wait, and the threads it holds."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

import pytest

from gossip.errors import ClusterClosed, GossipTimeout, PacketTooLarge, SendError, TransportError
from gossip.streams import Stream
from gossip.streams.pump import StreamPump

WAIT = 10.0  # bound on every wait (each one ends as soon as its condition holds)


class FakeStream:
    """What the pump calls of a :class:`Stream`: reads from a script, writes into a list
    (through a gate the test opens), a close, a half-close and an abort."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.script: deque[bytes | BaseException] = deque()  # what read() returns or raises
        self.written: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.write_error: BaseException | None = None
        self.closed = False
        self.cut = False
        self.ops: list[str] = []
        self.aborted_from: list[str] = []

    def feed(self, *items: bytes | BaseException) -> None:
        with self.cond:
            self.script.extend(items)
            self.cond.notify_all()

    def read(self, n: int) -> bytes:
        if self.cut:
            raise ClusterClosed("the node is stopping")
        if self.closed:
            raise ValueError("I/O operation on a closed stream")
        if n == 0:
            return b""
        with self.cond:
            while not self.script and not self.cut:
                self.cond.wait()
            if self.cut:
                raise ClusterClosed("the node is stopping")
            item = self.script.popleft()
            if isinstance(item, bytes) and len(item) > n:
                self.script.appendleft(item[n:])  # the rest stays for the next read
                item = item[:n]
        if isinstance(item, BaseException):
            raise item
        return item

    def write(self, data: bytes) -> int:
        if not self.gate.wait(WAIT):
            raise AssertionError("the gate stayed closed")
        if self.cut:
            raise SendError("the stream was cut")
        if self.write_error is not None:
            raise self.write_error
        self.written.append(bytes(data))
        return len(data)

    def close_write(self) -> None:
        self.ops.append("close_write")

    def close(self) -> None:
        self.ops.append("close")
        self.closed = True

    def abort(self, reason: str = "") -> None:
        self.ops.append(f"abort:{reason}")
        self.aborted_from.append(threading.current_thread().name)
        self.closed = True
        self.gate.set()

    def shut(self) -> None:
        """The node stops: every read and write fails from now on."""
        with self.cond:
            self.cut = True
            self.cond.notify_all()
        self.gate.set()

    def pack_msg(self, msg_type: int, obj: Any) -> bytes:
        return bytes([msg_type]) + repr(obj).encode()

    def msg_header(self, header: bytes) -> tuple[int, int]:
        if header[1] > 100:
            raise PacketTooLarge("too large")
        return header[0], header[1]

    def unpack_msg(self, msg_type: int, got: int, payload: bytes, cls: Any) -> Any:
        return (msg_type, got, payload)


class Spawner:
    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def __call__(self, name: str, target: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self) -> None:
        for t in self.threads:
            t.join(WAIT)
            assert not t.is_alive(), t.name


def make(window: int = 10, writer_lent: bool = False) -> tuple[StreamPump, FakeStream, Spawner]:
    fake, spawn = FakeStream(), Spawner()
    pump = StreamPump(cast(Stream, fake), spawn, "test-pump", window=window,
                      writer_lent=writer_lent)
    return pump, fake, spawn


def result(fut: Future[Any]) -> Any:
    return fut.result(WAIT)


def test_reads_come_in_order_within_the_window_then_the_end() -> None:
    pump, fake, spawn = make(window=10)
    assert pump.read_nowait(5) is None  # nothing yet: the reader starts
    first = pump.read_future(3)
    fake.feed(b"abcdef")
    assert result(first) == b"abc"
    assert pump.read_nowait(2) == b"de"
    assert pump.read_nowait(10) == b"f"
    cancelled = pump.read_future(4)
    cancelled.cancel()  # given up: the data goes to the next read
    nxt = pump.read_future(4)
    fake.feed(b"ghij", b"")
    assert result(nxt) == b"ghij"
    assert result(pump.read_future(4)) == b""
    assert pump.read_nowait(4) == b""
    spawn.join()


def test_the_reader_waits_while_its_window_is_full() -> None:
    pump, fake, spawn = make(window=4)
    fake.feed(b"12345678", b"9", b"")
    assert result(pump.read_future(2)) == b"12"
    # The reader read 4 (its window), waits until they are taken, then reads on.
    got = b"12"
    while len(got) < 9:
        got += result(pump.read_future(3))
    assert got == b"123456789"
    assert result(pump.read_future(1)) == b""
    spawn.join()


def test_a_read_that_times_out_fails_the_waiting_reads_and_the_stream_stays_usable() -> None:
    pump, fake, spawn = make()
    waiting = pump.read_future(4)
    fake.feed(GossipTimeout("nothing within stream_timeout"))
    with pytest.raises(GossipTimeout):
        result(waiting)
    again = pump.read_future(4)
    fake.feed(b"late", b"")
    assert result(again) == b"late"
    spawn.join()


def test_a_read_error_is_sticky() -> None:
    pump, fake, spawn = make()
    waiting = pump.read_future(4)
    fake.feed(TransportError("connection reset"))
    with pytest.raises(TransportError):
        result(waiting)
    spawn.join()
    with pytest.raises(TransportError):
        pump.read_nowait(1)
    with pytest.raises(TransportError):
        result(pump.read_future(1))


def test_an_oversized_message_header_breaks_the_read_side() -> None:
    pump, fake, spawn = make()
    assert pump.msg_header(bytes([70, 3])) == (70, 3)
    assert pump.unpack_msg(70, 70, b"abc", None) == (70, 70, b"abc")
    assert pump.pack_msg(70, "x") == b"F'x'"
    with pytest.raises(PacketTooLarge):
        pump.msg_header(bytes([70, 200]))
    with pytest.raises(PacketTooLarge):
        pump.read_nowait(1)


def test_writes_wait_for_room_and_leave_in_order_joined() -> None:
    pump, fake, spawn = make(window=10)
    fake.gate.clear()  # the peer does not read
    assert pump.write_nowait(b"abcd") is None  # room
    assert pump.write_nowait(b"") is None
    waits: list[Future[None]] = []
    for piece in (b"efgh", b"ijkl", b"mn"):
        f = pump.write_nowait(piece)
        if f is not None:
            waits.append(f)
    assert waits and not any(f.done() for f in waits)  # over the window: they wait
    fake.gate.set()
    for f in waits:
        result(f)
    closed = pump.close_write_nowait()
    assert result(closed) is None
    assert result(pump.close_write_nowait()) is None  # idempotent
    with pytest.raises(ValueError, match="close_write"):
        pump.write_nowait(b"more")
    assert b"".join(fake.written) == b"abcdefghijklmn"
    assert fake.ops == ["close_write"]
    result(pump.close_nowait())
    assert pump.finished and fake.ops == ["close_write", "close"]
    assert result(pump.close_nowait()) is None  # closed already
    with pytest.raises(ValueError):
        pump.write_nowait(b"x")
    spawn.join()


def test_a_write_error_is_sticky_and_fails_what_waits() -> None:
    pump, fake, spawn = make(window=4)
    fake.gate.clear()
    fake.write_error = SendError("connection reset")
    assert pump.write_nowait(b"abcd") is None
    waiting = pump.write_nowait(b"efgh")
    half = pump.close_write_nowait()
    assert waiting is not None
    fake.gate.set()
    with pytest.raises(SendError):
        result(waiting)
    with pytest.raises(SendError):
        result(half)
    with pytest.raises(SendError):
        pump.write_nowait(b"x")
    with pytest.raises(SendError):
        pump.close_write_nowait()
    assert result(pump.close_nowait()) is None  # a close never fails
    spawn.join()


def test_an_abort_cuts_a_blocked_write_and_fails_what_was_queued() -> None:
    pump, fake, spawn = make(window=4)
    fake.gate.clear()
    assert pump.write_nowait(b"abcd") is None
    waiting = pump.write_nowait(b"efgh")
    assert waiting is not None
    # (a close queued behind the data completes too: a close never fails)
    closing = pump.close_nowait()
    for _ in range(1000):  # the writer takes the first frame and blocks in it
        if pump._busy:
            break
        threading.Event().wait(0.01)
    assert pump._busy
    done = pump.abort_nowait("bye")
    assert fake.aborted_from == [threading.current_thread().name]  # cut from here, at once
    with pytest.raises(ValueError, match="aborted"):
        result(waiting)
    assert result(closing) is None
    result(done)
    assert pump.finished
    spawn.join()


def test_a_cut_stream_fails_waiting_and_later_reads_and_writes() -> None:
    pump, fake, spawn = make()
    waiting = pump.read_future(4)
    fake.shut()
    pump.shutdown()
    with pytest.raises(ClusterClosed):
        result(waiting)
    spawn.join()
    with pytest.raises(ClusterClosed):
        pump.read_nowait(1)
    with pytest.raises(ClusterClosed):
        result(pump.read_future(1))
    with pytest.raises(ClusterClosed):
        pump.write_nowait(b"x")


def test_a_lent_writer_serves_until_its_future_and_an_idle_writer_ends() -> None:
    pump, fake, spawn = make(writer_lent=True)
    until: Future[None] = Future()
    assert pump.write_nowait(b"hello") is None  # no thread started: one is lent
    assert spawn.threads == []
    server = threading.Thread(target=pump.serve_writes, kwargs={"until": until})
    server.start()
    until.set_result(None)
    server.join(WAIT)
    assert not server.is_alive() and fake.written == [b"hello"]
    # Without a lent writer, one is started and ends when idle.
    pump2, fake2, spawn2 = make()
    assert pump2.write_nowait(b"x") is None
    assert [t.name for t in pump2.threads] == ["test-pump-w"]
    done = threading.Thread(target=pump2.serve_writes, kwargs={"idle": 0.01})
    done.start()
    done.join(WAIT)
    assert not done.is_alive()
    result(pump2.abort_nowait("done"))
