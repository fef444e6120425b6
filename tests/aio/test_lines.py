"""The loop's side of a request on a lent connection (:mod:`gossip.aio._lines`), driven over a
socket pair: partial writes, failures, timeouts, cancellation and stops, each on purpose."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from gossip.aio._lines import Exchanges
from gossip.errors import ClusterClosed, GossipTimeout, SendError

from . import run, until


class PairLine:
    """A :class:`~gossip.transports.base.RequestLine` over one end of a socket pair: the
    request is written as is; the reply is whatever ``reply_size`` bytes the other end sends."""

    def __init__(self, sock: socket.socket, request: bytes, reply_size: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.request = request
        self.sent = 0
        self.reply_size = reply_size
        self.buf = bytearray()
        self.what = "request to the pair"
        self.retry = False
        self.released: list[bool] = []
        self.fail_flush = False

    def fileno(self) -> int:
        return -1 if self.released else self.sock.fileno()

    @property
    def written(self) -> bool:
        return self.sent == len(self.request)

    def flush(self) -> bool:
        if self.fail_flush:
            raise SendError(f"{self.what}: broken")
        while not self.written:
            try:
                self.sent += self.sock.send(self.request[self.sent:])
            except BlockingIOError:
                return False
        return True

    def read(self) -> bytes | None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return None
            if not chunk:
                raise SendError(f"{self.what}: connection closed by peer")
            self.buf += chunk
            if len(self.buf) >= self.reply_size:
                return bytes(self.buf)

    def release(self, clean: bool = True) -> None:
        self.released.append(clean)


Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A connected socket pair (``a`` is the line's end), closed after the test."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def counted() -> tuple[Exchanges, list[int]]:
    late: list[int] = []
    return Exchanges(lambda: late.append(1)), late


def test_a_request_larger_than_the_socket_takes_is_written_as_it_drains(pair: Pair) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    request = bytes(range(256)) * 4096  # 1 MiB
    got = bytearray()

    def peer() -> None:
        while len(got) < len(request):
            got.extend(b.recv(65536))
        b.sendall(b"done")

    async def main() -> None:
        ex, late = counted()
        line = PairLine(a, request, 4)
        thread = threading.Thread(target=peer)
        thread.start()
        assert await ex.exchange(line, 30.0, lambda: "late") == b"done"
        thread.join(10.0)
        assert bytes(got) == request and line.released == [True] and len(ex) == 0

    run(main())


def test_a_write_that_fails_at_once_or_later_fails_the_exchange_and_closes_the_line(pair: Pair) -> None:
    a, b = pair

    async def main() -> None:
        ex, _ = counted()
        line = PairLine(a, b"x", 1)
        line.fail_flush = True
        with pytest.raises(SendError, match="broken"):
            await ex.exchange(line, 5.0, lambda: "late")
        assert line.released == [False] and len(ex) == 0
        # Failing once the socket was writable again, after a partial write.
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        line = PairLine(a, bytes(1 << 20), 1)
        task = asyncio.ensure_future(ex.exchange(line, 5.0, lambda: "late"))
        await until(lambda: 0 < line.sent < len(line.request), 5.0, "a partial write")
        line.fail_flush = True
        b.recv(1 << 20)  # room: the loop calls flush again, which fails
        with pytest.raises(SendError, match="broken"):
            await task
        assert line.released == [False] and len(ex) == 0

    run(main())


def test_no_reply_in_time_is_a_timeout_named_as_asked(pair: Pair) -> None:
    a, b = pair

    async def main() -> None:
        ex, late = counted()
        line = PairLine(a, b"ask", 2)
        with pytest.raises(GossipTimeout, match="nobody answered"):
            await ex.exchange(line, 0.05, lambda: "nobody answered")
        assert line.released == [False] and late == [] and len(ex) == 0

    run(main())


def test_a_cancelled_exchange_reads_its_late_reply_and_counts_it(pair: Pair) -> None:
    a, b = pair

    async def main() -> None:
        ex, late = counted()
        line = PairLine(a, b"ask", 2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ex.exchange(line, 30.0, lambda: "late"), 0.05)
        assert line.released == [] and len(ex) == 1  # still reading for the reply
        b.sendall(b"ok")
        await until(lambda: late == [1], 5.0, "the late reply counted")
        assert line.released == [True] and len(ex) == 0

    run(main())


def test_a_cancelled_exchange_with_no_late_reply_ends_at_its_timeout(pair: Pair) -> None:
    a, b = pair

    async def main() -> None:
        ex, late = counted()
        line = PairLine(a, b"ask", 2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ex.exchange(line, 0.2, lambda: "late"), 0.05)
        await until(lambda: len(ex) == 0, 5.0, "the exchange's own timeout")
        assert line.released == [False] and late == []

    run(main())


def test_an_exchange_cancelled_before_its_request_was_written_closes_the_line(pair: Pair) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main() -> None:
        ex, _ = counted()
        line = PairLine(a, bytes(1 << 20), 1)
        task = asyncio.ensure_future(ex.exchange(line, 30.0, lambda: "late"))
        await until(lambda: line.sent > 0, 5.0, "a partial write")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not line.written and line.released == [False] and len(ex) == 0

    run(main())


def test_abort_all_ends_exchanges_on_this_loop_and_on_another_thread_s_loop() -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    ex, _ = counted()
    other_started = threading.Event()
    other_result: list[BaseException] = []

    def other_thread() -> None:
        async def main() -> None:
            task = asyncio.ensure_future(ex.exchange(PairLine(pairs[1][0], b"q", 1), 30.0,
                                                     lambda: "late"))
            await asyncio.sleep(0)
            other_started.set()
            try:
                await task
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                other_result.append(exc)

        asyncio.run(main())

    thread = threading.Thread(target=other_thread)
    thread.start()

    async def main() -> None:
        mine = asyncio.ensure_future(ex.exchange(PairLine(pairs[0][0], b"q", 1), 30.0,
                                                 lambda: "late"))
        await until(lambda: other_started.is_set() and len(ex) == 2, 10.0, "two exchanges")
        ex.abort_all()
        with pytest.raises(ClusterClosed):
            await mine

    try:
        run(main())
        thread.join(10.0)
        assert len(other_result) == 1 and isinstance(other_result[0], ClusterClosed)
        assert len(ex) == 0
        # A loop that is gone: its exchange is forgotten, with no loop to run on.
        dead = asyncio.new_event_loop()
        line = PairLine(pairs[2][0], b"q", 1)

        async def start() -> None:
            asyncio.ensure_future(ex.exchange(line, 30.0, lambda: "late"))
            await asyncio.sleep(0)

        dead.run_until_complete(start())
        dead.close()
        assert len(ex) == 1
        ex.abort_all()  # called with no running loop here
        assert len(ex) == 0
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_aborting_an_exchange_that_ended_changes_nothing(pair: Pair) -> None:
    a, b = pair

    async def main() -> None:
        ex, _ = counted()
        line = PairLine(a, b"q", 2)
        task = asyncio.ensure_future(ex.exchange(line, 30.0, lambda: "late"))
        await until(lambda: len(ex) == 1, 5.0, "the exchange under way")
        (exchange,) = list(ex._live)
        b.sendall(b"ok")
        assert await task == b"ok"
        exchange.abort(ClusterClosed("too late"))  # ended: nothing to stop, the result stays
        assert line.released == [True] and exchange.fut.result() == b"ok"

    run(main())
