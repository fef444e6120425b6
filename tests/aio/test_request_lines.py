"""Awaited requests on a request connection the loop drives itself (:mod:`gossip.aio._lines`):
how they are taken, what a timeout, a cancellation, a stale connection and a stop do to them, on
real clusters on loopback."""

from __future__ import annotations

import asyncio
import select
import socket

import pytest

import gossip
import gossip.aio
from gossip import ClusterClosed, GossipTimeout, Node, Packet
from gossip.transports.multi import MultiTransport
from gossip.transports.socket import SocketTransport
from gossip.transports.tcp.conn import KIND_IN

from . import joined, local, node_of, run, until

T = gossip.USER_MSG + 310


def sockets(c: gossip.aio.Cluster) -> SocketTransport:
    """The cluster's socket transport (the socket side of its router)."""
    transport = c.sync._engine.out.transport
    side = transport.socket if isinstance(transport, MultiTransport) else transport
    assert isinstance(side, SocketTransport)
    return side


def idle_lines(c: gossip.aio.Cluster) -> int:
    return sockets(c)._requests.idle_count()


async def warm(a: gossip.aio.Cluster, nb: Node) -> None:
    """Send one request (on the pooled connection) and wait for the request connection the
    engine then dials for the next one."""
    await a.send_to_with_response(nb, T, 0)
    await until(lambda: idle_lines(a) == 1, 10.0, "a request connection dialed")


async def holding(a: gossip.aio.Cluster, b: gossip.aio.Cluster) -> tuple[asyncio.Event, Node]:
    """Join ``a`` and ``b``, have ``b`` answer "ok", holding a "wait" until the event is set,
    and warm ``a``'s request connection to ``b``; return the event and ``b`` as ``a`` sees it."""
    release = asyncio.Event()

    async def answer(sender: Node, packet: Packet) -> str:
        if packet.unmarshal() == "wait":
            await release.wait()
        return "ok"

    b.handle_func_with_reply(T, answer)
    await joined(a, b)
    nb = node_of(a, b)
    await warm(a, nb)
    return release, nb


def test_requests_after_the_first_are_exchanged_on_the_loop_with_no_reply_waiter() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            waiters: list[int] = []

            def double(sender: Node, packet: Packet) -> int:
                waiters.append(len(a.sync._engine.replies))  # what a holds while b answers
                return int(packet.unmarshal()) * 2

            b.handle_func_with_reply(T, double)
            await joined(a, b)
            nb = node_of(a, b)
            await warm(a, nb)
            dials = sockets(a).stats["tcp_dials"]
            waiters.clear()
            for i in range(50):
                assert await a.send_to_with_response(nb, T, i) == 2 * i
            stats = a.stats()
            assert stats["user.requests_lent"] == 50 and stats["user.requests"] == 51
            assert waiters == [0] * 50  # no reply waiter: the loop read every reply itself
            assert sockets(a).stats["tcp_dials"] == dials  # one connection
            assert idle_lines(a) == 1
            # Concurrent requests: one takes the idle connection, the others the pooled one.
            answers = await asyncio.gather(*(a.send_to_with_response(nb, T, i) for i in range(20)))
            assert answers == [2 * i for i in range(20)]

    run(main())


def test_a_timeout_on_the_loop_closes_the_connection_and_the_next_request_works() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            release, nb = await holding(a, b)
            lent = a.stats().get("user.requests_lent", 0)
            with pytest.raises(GossipTimeout, match=r"no reply from node .* within 0\.2s"):
                await a.send_to_with_response(nb, T, "wait", timeout=0.2)
            assert a.stats()["user.requests_lent"] == lent + 1
            assert idle_lines(a) == 0  # a connection with a reply still owed is not reused
            release.set()
            assert await a.send_to_with_response(nb, T, "now") == "ok"
            assert a.stats().get("dropped.late_replies", 0) == 0

    run(main())


def test_a_cancelled_request_on_the_loop_counts_its_late_reply_and_keeps_the_connection() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            release, nb = await holding(a, b)
            dials = sockets(a).stats["tcp_dials"]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.send_to_with_response(nb, T, "wait", timeout=30.0), 0.1)
            assert len(a.sync._engine.replies) == 0
            assert idle_lines(a) == 0  # still read, for the reply owed on it
            release.set()
            await until(lambda: a.stats().get("dropped.late_replies", 0) == 1, 10.0,
                        "the late reply counted")
            assert idle_lines(a) == 1  # read whole: kept for the next request
            assert await a.send_to_with_response(nb, T, "now") == "ok"
            assert sockets(a).stats["tcp_dials"] == dials
            assert a.stats().get("dropped.stray_replies", 0) == 0

    run(main())


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_request_connection_the_peer_closed_sends_the_request_the_other_way(how: str) -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            b.handle_func_with_reply(T, lambda s, p: p.unmarshal() + 1)
            await joined(a, b)
            nb = node_of(a, b)
            await warm(a, nb)
            # b closes its end of a's idle request connection (as its idle timeout would).
            idle = sockets(a)._requests._idle
            (conn,) = [c for conns in idle.values() for c in conns]
            port = conn.sock.getsockname()[1]
            loop_b = sockets(b)._loop
            (accepted,) = [c for c in loop_b.connections()
                           if c.kind == KIND_IN and c.key.endswith(f":{port}")]
            if how == "reset":  # the request's write fails at once
                accepted.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
            accepted.close()
            await until(lambda: bool(select.select([conn.sock], [], [], 0)[0]), 10.0,
                        "the close seen on a's side")
            lent = a.stats().get("user.requests_lent", 0)
            assert await a.send_to_with_response(nb, T, 41) == 42
            assert a.stats()["user.requests_lent"] == lent + 1  # lent, found closed, sent again
            assert a.stats().get("transport.send_errors", 0) == 0

    run(main())


def test_stopping_the_cluster_ends_a_request_the_loop_is_reading_with_cluster_closed() -> None:
    async def main() -> None:
        a = gossip.aio.Cluster(local())
        async with gossip.aio.Cluster(local()) as b:
            await a.start()
            _never, nb = await holding(a, b)
            pending = asyncio.ensure_future(a.send_to_with_response(nb, T, "wait", timeout=30.0))
            await until(lambda: len(a._exchanges) == 1, 10.0, "the request on the loop")
            await a.stop(leave=False)
            with pytest.raises(ClusterClosed):
                await pending
            assert len(a._exchanges) == 0 and idle_lines(a) == 0

    run(main())
