"""Async streams: large transfers both ways at once, half-close and a typed answer, refusals,
a handler that raises, cancellation, and the threads a stream holds."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import gossip
import gossip.aio
from gossip import Node, Packet, RemoteHandlerError, StreamRefused
from gossip.aio import AsyncStream

from . import joined, local, node_of, run, until

T = gossip.USER_MSG + 320
MiB = 1024 * 1024


async def send_and_hash(stream: AsyncStream, total: int, seed: bytes) -> str:
    """Write ``total`` bytes of a stream of random blocks; return their SHA-256."""
    h = hashlib.sha256()
    block = os.urandom(MiB)
    for i in range(total // MiB):
        piece = seed + i.to_bytes(8, "big") + block[len(seed) + 8:]
        h.update(piece)
        await stream.write(piece)
    await stream.close_write()
    return h.hexdigest()


async def receive_and_hash(stream: AsyncStream) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    async for chunk in stream:
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def test_sixty_four_mebibytes_each_way_arrive_whole() -> None:
    total = 64 * MiB

    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            server: dict[str, object] = {}

            async def echo_hashes(sender: Node, packet: Packet, stream: AsyncStream) -> None:
                sent, (got, n) = await asyncio.gather(
                    send_and_hash(stream, total, b"from-b"), receive_and_hash(stream))
                server.update(sent=sent, got=got, n=n)

            b.handle_stream_func(T, echo_hashes)
            await joined(a, b)
            async with await a.open_stream(node_of(a, b), T, {"hello": 1}) as stream:
                sent, (got, n) = await asyncio.gather(
                    send_and_hash(stream, total, b"from-a"), receive_and_hash(stream))
            await until(lambda: "n" in server, 30.0, "the handler to finish")
            assert n == total and server["n"] == total
            assert server["got"] == sent  # a's bytes, as b hashed them
            assert got == server["sent"]  # b's bytes, as a hashed them
            assert a.stats()["streams.bytes_out"] >= total

    run(main(), timeout=180.0)


def test_half_close_then_a_typed_message_back() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            async def digest(sender: Node, packet: Packet, stream: AsyncStream) -> None:
                h = hashlib.sha256()
                while chunk := await stream.read(70_000):
                    h.update(chunk)  # b"" only once a closed its writing side
                await stream.write_msg(T + 1, {"sha256": h.hexdigest(), "hello": packet.unmarshal()})

            b.handle_stream_func(T, digest)
            await joined(a, b)
            data = os.urandom(3 * MiB + 12345)
            stream = await a.open_stream(node_of(a, b), T, "opening")
            async with stream:
                await stream.write(data[:1000])
                await stream.write(memoryview(data)[1000:])
                await stream.close_write()
                await stream.close_write()  # idempotent
                with pytest.raises(ValueError):
                    await stream.write(b"more")
                answer = await stream.read_msg(T + 1)
                assert answer == {"sha256": hashlib.sha256(data).hexdigest(), "hello": "opening"}
                with pytest.raises(EOFError):
                    await stream.read_msg(T + 1)  # b closed its side when its handler returned
            assert stream.closed

    run(main())


def test_a_refused_stream_raises_stream_refused_and_a_raising_handler_aborts() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            async def fails(sender: Node, packet: Packet, stream: AsyncStream) -> None:
                await stream.readexactly(4)
                raise KeyError("no such file")

            b.handle_stream_func(T, fails)
            await joined(a, b)
            nb = node_of(a, b)
            with pytest.raises(StreamRefused, match="no stream handler") as info:
                await a.open_stream(nb, T + 5)
            assert "no stream handler" in info.value.reason
            stream = await a.open_stream(nb, T)
            await stream.write(b"four")
            with pytest.raises(RemoteHandlerError, match="no such file"):
                await stream.read()
            await stream.aclose()
            await until(lambda: b.stats()["streams.handler_errors"] == 1, 5.0, "counted")

    run(main())


def test_a_plain_stream_handler_gets_a_blocking_stream_on_a_pool_thread() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            def upper(sender: Node, packet: Packet, stream: gossip.Stream) -> None:
                stream.write(stream.read().upper())

            b.handle_stream_func(T, upper)
            await joined(a, b)
            async with await a.open_stream(node_of(a, b), T) as stream:
                await stream.write(b"quiet please")
                await stream.close_write()
                assert await stream.read() == b"QUIET PLEASE"

    run(main())


def test_a_cancelled_task_aborts_its_stream_and_stop_ends_the_rest() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            ended: list[str] = []

            async def waits(sender: Node, packet: Packet, stream: AsyncStream) -> None:
                try:
                    await stream.read()
                except gossip.GossipError as exc:
                    ended.append(type(exc).__name__)
                    raise

            b.handle_stream_func(T, waits)
            await joined(a, b)
            nb = node_of(a, b)

            async def user() -> None:
                async with await a.open_stream(nb, T) as stream:
                    await stream.write(b"x" * 1000)
                    await asyncio.sleep(3600)

            task = asyncio.create_task(user())
            await until(lambda: b.stats()["streams.active"] == 1, 5.0, "the stream open")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: ended == ["RemoteHandlerError"], 5.0, "the handler told")
            await until(lambda: a.stats()["streams.active"] == 0, 5.0, "a's end closed")
            # A stream left open is cut when the cluster stops; its threads end.
            left_open = await a.open_stream(nb, T)
            await left_open.write(b"y")
        with pytest.raises(gossip.ClusterClosed):
            await left_open.read()

    run(main())
