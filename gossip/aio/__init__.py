"""``gossip.aio``: the asyncio face of a gossip node, over the same engine as :class:`gossip.Cluster`.

::

    import asyncio
    import logging
    import gossip
    import gossip.aio

    log = logging.getLogger("myapp")

    async def main() -> None:
        async with gossip.aio.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as cluster:
            async for event in cluster.events():
                log.info("cluster event: %s", event)

    asyncio.run(main())

:class:`Cluster` starts and stops with ``async with``; its sends, requests, joins and stream
I/O are awaited; its handlers may be coroutine functions, run on the loop that registered them;
its events are an async iterator with a bounded queue per subscriber (:class:`Events`,
:class:`EventsLost`); its streams are :class:`AsyncStream` objects.

The engine is the blocking API's, with its own threads and its own protocol clock: nothing of
the protocol runs on the loop, so a blocked or slow loop never causes a suspicion. Calls that
wait complete a :class:`concurrent.futures.Future` from the engine's threads, awaited the way
:func:`asyncio.wrap_future` would be, but with one wake-up of the loop per call; cancelling the
await cancels the engine's future, and no thread is held per waiting call.

============================  =================================================================
module                        owns
============================  =================================================================
:mod:`.cluster`               :class:`Cluster`: lifecycle, reads, sends, requests, streams
:mod:`.handlers`              handlers on the loop: the per-type bound, order, replies
:mod:`.events`                :class:`Events`, the subscriptions and their bounded queues
:mod:`.stream`                :class:`AsyncStream`
============================  =================================================================

This package imports the facade (:mod:`gossip.cluster`) and the engine's public parts; nothing
below the engine.
"""

from __future__ import annotations

from .cluster import Cluster
from .events import Event, Events, EventsLost, NodeMetadataChanged, NodeStateChanged
from .handlers import MessageHandler, ReplyHandler, StreamHandler
from .stream import AsyncStream

__all__ = [
    "Cluster",
    "AsyncStream",
    "Events",
    "Event",
    "EventsLost",
    "NodeStateChanged",
    "NodeMetadataChanged",
    "MessageHandler",
    "ReplyHandler",
    "StreamHandler",
]
