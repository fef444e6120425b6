"""Messages, requests and handlers through the asyncio face: order, cancellation, bounds and
back-pressure, on real clusters on loopback."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import gossip
import gossip.aio
from gossip import GossipTimeout, Node, Packet, RemoteHandlerError, SendQueueFull

from . import joined, local, node_of, run, until

T = gossip.USER_MSG + 300


def test_a_coroutine_handler_gets_one_senders_messages_in_order() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            got: list[int] = []

            async def handler(sender: Node, packet: Packet) -> None:
                got.append(packet.unmarshal())
                await asyncio.sleep(0)  # handlers interleave on the loop; they start in order

            b.handle_func(T, handler)
            await joined(a, b)
            nb = node_of(a, b)
            for i in range(1000):
                await a.send_to_reliable(nb, T, i)
            await until(lambda: len(got) == 1000, 20.0, "1000 messages handled")
            assert got == list(range(1000))
            assert b.stats().get("dropped.async_handler_full", 0) == 0

    run(main())


def test_a_cancelled_request_leaves_no_waiter_and_its_late_reply_is_dropped_and_counted() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            release = asyncio.Event()

            async def never_answers(sender: Node, packet: Packet) -> str:
                await release.wait()
                return "too late"

            b.handle_func_with_reply(T, never_answers)
            await joined(a, b)
            nb = node_of(a, b)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(a.send_to_with_response(nb, T, "hello", timeout=30.0), 0.1)
            engine = a.sync._engine
            assert len(engine.replies) == 0  # the waiter went with the cancellation
            assert len(engine.deadlines) <= 1  # its timeout was taken back (or is being)
            release.set()  # now the reply comes, to nobody
            await until(lambda: a.stats().get("dropped.late_replies", 0) == 1, 10.0,
                        "the late reply counted")
            assert a.stats().get("dropped.stray_replies", 0) == 0
            # The connection and the handler still work.
            b.unregister_message_type(T)
            b.handle_func_with_reply(T, lambda s, p: p.unmarshal() * 2)
            assert await a.send_to_with_response(nb, T, 21) == 42

    run(main())


def test_requests_answer_values_errors_and_timeouts_as_the_blocking_api() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            async def double(sender: Node, packet: Packet) -> int:
                return int(packet.unmarshal()) * 2

            def fails(sender: Node, packet: Packet) -> int:
                raise ValueError("no such thing")

            async def silent(sender: Node, packet: Packet) -> None:
                await asyncio.sleep(3600)

            b.handle_func_with_reply(T, double)
            b.handle_func_with_reply(T + 1, fails)
            b.handle_func_with_reply(T + 2, silent)
            await joined(a, b)
            nb = node_of(a, b)
            answers = await asyncio.gather(*(a.send_to_with_response(nb, T, i) for i in range(50)))
            assert answers == [2 * i for i in range(50)]
            with pytest.raises(RemoteHandlerError, match="no such thing"):
                await a.send_to_with_response(nb, T + 1, 1)
            with pytest.raises(RemoteHandlerError, match="no handler"):
                await a.send_to_with_response(nb, T + 3, 1)
            with pytest.raises(GossipTimeout):
                await a.send_to_with_response(nb, T + 2, 1, timeout=0.2)
            assert len(a.sync._engine.replies) == 0
            # The blocking node answers the asyncio node's requests, and the other way round.
            assert await asyncio.to_thread(a.sync.send_to_with_response, nb, T, 5) == 10

    run(main())


def test_a_slow_coroutine_handler_under_a_datagram_flood_drops_and_counts_with_bounded_memory() -> None:
    limit = 8

    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, \
                gossip.aio.Cluster(local(async_handler_limit=limit)) as b:
            running = 0
            most = 0
            handled = 0

            async def slow(sender: Node, packet: Packet) -> None:
                nonlocal running, most, handled
                running += 1
                most = max(most, running)
                await asyncio.sleep(0.05)
                running -= 1
                handled += 1

            b.handle_func(T, slow)
            await joined(a, b)
            nb = node_of(a, b)
            dispatcher = b._dispatchers[T]
            held = 0
            for i in range(2000):
                await a.send_to(nb, T, i)  # datagrams, never waiting
                held = max(held, dispatcher.held)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await until(lambda: b.stats().get("dropped.async_handler_full", 0) > 0, 10.0,
                        "the drop counter rising")
            await until(lambda: dispatcher.held == 0, 10.0, "the handlers to finish")
            assert most <= limit and held <= limit
            dropped = b.stats()["dropped.async_handler_full"]
            assert handled + dropped <= 2000 and handled >= limit
            assert len(asyncio.all_tasks()) < 2 * limit  # no task per message beyond the bound

    run(main())


def test_a_reliable_flood_through_await_send_to_reliable_delivers_everything() -> None:
    n = 3000

    async def main() -> None:
        # A small connection buffer and a slow handler: the sender meets back-pressure and
        # waits for room on its loop; the receiver's lanes wait for its loop, never dropping.
        async with gossip.aio.Cluster(local(connection_buffer_size=64 * 1024)) as a, \
                gossip.aio.Cluster(local(async_handler_limit=4,
                                         incoming_packet_queue_depth=16)) as b:
            got: list[int] = []

            async def slowish(sender: Node, packet: Packet) -> None:
                got.append(packet.unmarshal())
                if len(got) % 200 == 0:
                    await asyncio.sleep(0.01)

            b.handle_func(T, slowish)
            await joined(a, b)
            nb = node_of(a, b)
            payload = os.urandom(2048)
            for i in range(n):
                await a.send_to_reliable(nb, T, [i, payload])
            await until(lambda: len(got) == n, 60.0, f"{n} messages delivered")
            assert [g[0] for g in got] == list(range(n))  # type: ignore[index]
            sa, sb = a.stats(), b.stats()
            assert sb.get("dropped.async_handler_full", 0) == 0
            assert sb.get("async.handler_waits", 0) > 0  # the receiver's bound pushed back
            assert sa.get("user.send_timeouts", 0) == 0

    run(main(), timeout=120.0)


def test_a_reliable_send_that_finds_no_room_raises_send_queue_full_after_send_timeout() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local(connection_buffer_size=64 * 1024,
                                            send_timeout=0.3)) as a, \
                gossip.aio.Cluster(local(async_handler_limit=1,
                                         incoming_packet_queue_depth=1)) as b:
            gate = asyncio.Event()

            async def stuck(sender: Node, packet: Packet) -> None:
                await gate.wait()

            b.handle_func(T, stuck)
            await joined(a, b)
            nb = node_of(a, b)
            big = os.urandom(200_000)
            with pytest.raises(SendQueueFull):
                for _ in range(200):  # the peer reads nothing: its buffers fill, then ours
                    await a.send_to_reliable(nb, T, big)
            assert a.stats()["user.send_timeouts"] >= 1
            assert len(a.sync._engine.out.backlog) == 0
            gate.set()

    run(main())


def test_cancelled_sends_that_wait_for_room_are_taken_back() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local(connection_buffer_size=64 * 1024,
                                            send_timeout=60.0)) as a, \
                gossip.aio.Cluster(local(async_handler_limit=1,
                                         incoming_packet_queue_depth=1)) as b:
            gate = asyncio.Event()
            got: list[int] = []

            async def stuck(sender: Node, packet: Packet) -> None:
                await gate.wait()
                got.append(packet.unmarshal()[0])

            b.handle_func(T, stuck)
            await joined(a, b)
            nb = node_of(a, b)
            big = os.urandom(200_000)
            backlog = a.sync._engine.out.backlog
            # Send until one send has waited a whole second for room: the peer reads nothing,
            # the kernel's buffers and ours are full.
            head = 0
            while True:
                waiting = asyncio.create_task(a.send_to_reliable(nb, T, [head, big]))
                done, _ = await asyncio.wait({waiting}, timeout=1.0)
                if not done:
                    break
                waiting.result()
                head += 1
                assert head < 1000
            behind = asyncio.create_task(a.send_to_reliable(nb, T, [head + 1, big]))
            await until(lambda: len(backlog) == 1, 5.0, "the second send queued behind")
            behind.cancel()
            with pytest.raises(asyncio.CancelledError):
                await behind
            assert len(backlog) == 0  # taken out of the queue at once
            waiting.cancel()  # the frame whose turn it is: taken back within a slice
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await until(lambda: not backlog.busy(nb.address), 5.0, "the backlog emptied")
            gate.set()
            await until(lambda: len(got) == head, 30.0, "the accepted messages delivered")
            await asyncio.sleep(0.3)
            assert sorted(got) == list(range(head))  # neither cancelled message ever left
            # The connection still works, in order.
            await a.send_to_reliable(nb, T, [-1, b""])
            await until(lambda: got[-1] == -1, 10.0, "a later message")

    run(main())


def test_plain_handlers_run_on_the_loop_too() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            loop_thread: list[bool] = []
            loop = asyncio.get_running_loop()

            def plain(sender: Node, packet: Packet) -> None:
                loop_thread.append(asyncio.get_running_loop() is loop)

            b.handle_func(T, plain)
            b.handle_func_with_reply(T + 1, lambda s, p: asyncio.get_running_loop() is loop)
            await joined(a, b)
            nb = node_of(a, b)
            await a.send_to(nb, T, 1)
            await a.send_to_reliable(nb, T, 2)
            await a.send(T, 3)
            assert await a.send_to_with_response(nb, T + 1, None) is True
            await until(lambda: len(loop_thread) == 3, 10.0, "three messages")
            assert all(loop_thread)

    run(main())


def test_handlers_must_be_registered_from_the_loop_that_runs_them() -> None:
    c = gossip.aio.Cluster(local())
    with pytest.raises(RuntimeError, match="running on the loop"):
        c.handle_func(T, lambda s, p: None)
    run(c.stop())


def test_actions_before_start_and_after_stop_raise_cluster_closed() -> None:
    async def main() -> None:
        c = gossip.aio.Cluster(local())
        node = c.local_node()
        with pytest.raises(gossip.ClusterClosed, match="not started"):
            await c.send_to_reliable(node, T, 1)
        with pytest.raises(gossip.ClusterClosed):
            await c.join(["127.0.0.1:9"])
        await c.start()
        await c.stop()
        await c.stop()  # idempotent
        with pytest.raises(gossip.ClusterClosed, match="stopped"):
            await c.send_to_with_response(node, T, 1)
        with pytest.raises(gossip.ClusterClosed):
            await c.open_stream(node, T)
        assert c.nodes() and not c.running

    run(main())


def test_a_join_through_a_dead_seed_and_a_live_one() -> None:
    from gossip.testing import scaled

    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a, gossip.aio.Cluster(local()) as b:
            dead = gossip.Cluster(local())
            dead.start()
            gone = dead.address
            dead.stop()
            t0 = time.monotonic()
            outcome = await b.join([a.address, gone], timeout=scaled(5.0))
            assert outcome == 1 and gone in outcome.failures
            assert time.monotonic() - t0 < scaled(5.0) + 1.0
            with pytest.raises(gossip.JoinError):
                await b.join([gone], timeout=1.0)
            assert len(b.sync._engine.deadlines) <= 2

    run(main())
