"""A blocking node and an asyncio node in one cluster: messages, requests and streams both
ways (the blocking side's calls run on a worker thread, as a program of its own would)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import gossip
import gossip.aio
from gossip import Node, Packet
from gossip.aio import AsyncStream

from . import joined, local, node_of, run, until

T = gossip.USER_MSG + 340


def test_a_blocking_node_and_an_asyncio_node_exchange_messages_requests_and_streams() -> None:
    async def main() -> None:
        s = gossip.Cluster(local())  # the blocking node
        await asyncio.to_thread(s.start)
        try:
            async with gossip.aio.Cluster(local()) as a:
                # --- handlers on both sides
                at_s: list[object] = []
                at_a: list[object] = []
                s.handle_func(T, lambda sender, pkt: at_s.append(pkt.unmarshal()))
                s.handle_func_with_reply(T + 1, lambda sender, pkt: {"s": pkt.unmarshal()})

                def s_upper(sender: Node, pkt: Packet, stream: gossip.Stream) -> None:
                    data = stream.read()  # to the end: the opener closed its writing side
                    stream.write_msg(T + 3, {"sha256": hashlib.sha256(data).hexdigest()})
                    stream.write(data.upper())

                s.handle_stream_func(T + 2, s_upper)

                async def a_msg(sender: Node, pkt: Packet) -> None:
                    at_a.append(pkt.unmarshal())

                async def a_reply(sender: Node, pkt: Packet) -> dict[str, object]:
                    await asyncio.sleep(0)
                    return {"a": pkt.unmarshal()}

                async def a_echo(sender: Node, pkt: Packet, stream: AsyncStream) -> None:
                    data = await stream.read()
                    await stream.write_msg(T + 3, {"sha256": hashlib.sha256(data).hexdigest()})
                    await stream.write(data[::-1])

                a.handle_func(T, a_msg)
                a.handle_func_with_reply(T + 1, a_reply)
                a.handle_stream_func(T + 2, a_echo)
                await joined(a, s)
                ns, na = node_of(a, s), node_of(s, a)
                payload = os.urandom(300_000)

                # --- asyncio -> blocking
                for i in range(20):
                    await a.send_to_reliable(ns, T, i)
                await a.send_to(ns, T, "datagram")
                assert await a.send_to_with_response(ns, T + 1, "hi") == {"s": "hi"}
                async with await a.open_stream(ns, T + 2, None) as stream:
                    await stream.write(payload)
                    await stream.close_write()
                    assert await stream.read_msg(T + 3) == {
                        "sha256": hashlib.sha256(payload).hexdigest()}
                    assert await stream.read() == payload.upper()
                await until(lambda: len(at_s) == 21, 10.0, "the blocking node's messages")
                # (the datagram may overtake the connection's messages)
                assert [x for x in at_s if x != "datagram"] == list(range(20))
                assert "datagram" in at_s

                # --- blocking -> asyncio (the blocking calls leave the loop free)
                def blocking_side() -> tuple[object, object, bytes]:
                    for i in range(20):
                        s.send_to_reliable(na, T, i)
                    reply = s.send_to_with_response(na, T + 1, "hello")
                    with s.open_stream(na, T + 2, None) as bs:
                        bs.write(payload)
                        bs.close_write()
                        digest = bs.read_msg(T + 3)
                        back = bs.read()
                    return reply, digest, back

                reply, digest, back = await asyncio.to_thread(blocking_side)
                assert reply == {"a": "hello"}
                assert digest == {"sha256": hashlib.sha256(payload).hexdigest()}
                assert back == payload[::-1]
                await until(lambda: len(at_a) == 20, 10.0, "the asyncio node's messages")
                assert at_a == list(range(20))
        finally:
            await asyncio.to_thread(s.stop)

    run(main())
