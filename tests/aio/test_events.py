"""Events as an async iterator: the engine's order, a bounded queue per subscriber, and one
EventsLost marker with the exact count for a consumer that fell behind."""

from __future__ import annotations

import asyncio
import threading

import pytest

import gossip
import gossip.aio
from gossip import NodeState
from gossip.aio import EventsLost, NodeMetadataChanged, NodeStateChanged

from . import joined, local, node_of, run, until


def test_a_consumer_that_never_reads_gets_one_events_lost_with_the_exact_count() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a:
            # Let the start's own event go by first: once the event thread handled this
            # update, everything before it is past.
            settled = threading.Event()
            a.sync.handle_node_metadata_change_func(lambda node: settled.set())
            a.update_metadata()
            assert await asyncio.to_thread(settled.wait, 10.0)
            events = a.events(maxsize=10)
            delivered = 0  # on the event thread, after the subscription's own handler
            done = threading.Event()

            def count(node: gossip.Node) -> None:
                nonlocal delivered
                delivered += 1
                if delivered == 35:
                    done.set()

            a.sync.handle_node_metadata_change_func(count)
            for _ in range(35):
                a.update_metadata()  # one metadata event each, nothing else happens
            # The event thread went through all 35 while nobody read: it never waited.
            assert await asyncio.to_thread(done.wait, 10.0)
            first = await anext(events)
            assert first == EventsLost(25)
            rest = [await anext(events) for _ in range(10)]
            assert all(isinstance(e, NodeMetadataChanged) for e in rest)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(events), 0.2)  # nothing more, nothing lost
            await events.aclose()

    run(main())


def test_events_come_in_the_engine_order_and_end_when_the_cluster_stops() -> None:
    async def main() -> None:
        a = gossip.aio.Cluster(local())
        b = gossip.aio.Cluster(local())
        await a.start()
        await b.start()
        events = a.events()
        seen: list[object] = []

        async def consume() -> None:
            async for e in events:
                seen.append(e)

        consumer = asyncio.create_task(consume())
        try:
            await joined(a, b)
            b_id = b.local_node().id
            b.local_metadata().set_string("role", "web")
            await until(lambda: any(isinstance(e, NodeMetadataChanged) and e.node.id == b_id
                                    and e.node.metadata.get_string("role") == "web" for e in seen),
                        10.0, "b's metadata change")
            await b.stop()  # leaves: a sees it go
            await until(lambda: any(isinstance(e, NodeStateChanged) and e.node.id == b_id
                                    and e.node.state in (NodeState.LEAVING, NodeState.DEAD)
                                    for e in seen), 10.0, "b leaving")
            states = [e for e in seen if isinstance(e, NodeStateChanged) and e.node.id == b_id]
            assert states[0].node.state is NodeState.ALIVE
            assert not any(isinstance(e, EventsLost) for e in seen)
        finally:
            await a.stop()
            await b.stop()
        await asyncio.wait_for(consumer, 5.0)  # the iteration ended with the cluster

    run(main())


def test_each_subscriber_has_its_own_queue() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a:
            small, big = a.events(maxsize=2), a.events(maxsize=100)
            for _ in range(5):
                a.update_metadata()
            got_big: list[object] = []
            while sum(isinstance(e, NodeMetadataChanged) for e in got_big) < 5:
                got_big.append(await asyncio.wait_for(anext(big), 5.0))
            # (the start's own event may still have been on its way when both subscribed)
            assert not any(isinstance(e, EventsLost) for e in got_big)
            assert await anext(small) == EventsLost(len(got_big) - 2)
            assert got_big[-2:] == [await anext(small), await anext(small)]
            async with small:
                pass
            assert [e async for e in small] == []  # closed: iteration ends

    run(main())


def test_a_dropped_subscription_unsubscribes() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as a:
            handlers = a.sync._engine.metadata_handlers
            before = len(handlers.handlers())
            events = a.events()
            assert len(handlers.handlers()) == before + 1
            del events
            import gc

            gc.collect()
            assert len(handlers.handlers()) == before

    run(main())
