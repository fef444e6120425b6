"""The threaded host of the protocol core: threads, queues, timers and I/O, no protocol logic.

The engine is split by concern; each module owns its threads and queues, and each part is
given the collaborators it uses (callables or narrow objects), never the engine:

==========================  ===================================================================
module                      owns
==========================  ===================================================================
:mod:`.engine`              :class:`Engine`: the parts built and wired together, start and
                            stop, and :meth:`Engine.perform` (the core's actions carried out)
:mod:`.wiring`              a ``Config`` turned into a keyring, a codec and a transport
:mod:`.host`                the core, its one lock, the scheduler's wake-up condition
:mod:`.members`             snapshots of the member table (nodes, senders, members' hosts)
:mod:`.incoming`            the path of a received packet: decode, protocol lane, user lanes
:mod:`.outgoing`            the path of a sent packet: datagrams, connections, send workers,
                            user messages (broadcasts, direct sends, requests)
:mod:`.scheduler`           the protocol clock (``gossip-<node>-scheduler``)
:mod:`.events`              membership events and user gossip callbacks (two threads)
:mod:`.joins`               the joins under way, waiting for the seeds' answers
:mod:`.stream_pool`         the stream pool: accepted streams' handlers, opening streams
==========================  ===================================================================

Threads (every one a daemon named ``gossip-<node short id>-<role>[-n]``): the transport's
readers (which also run the protocol lane), ``recv-<i>`` user lanes, ``send-<i>`` send workers,
``scheduler``, ``events``, ``gossip`` and the stream pool's ``stream-<n>`` workers (and
``stream-refuse``), which come and go with the streams.

This package imports the core, the packet codec, the transports and the workers; never the
cluster facade. Its face is :class:`Engine` and the event handler types.
"""

from __future__ import annotations

from .engine import Engine
from .events import ClusterEventHandler, GossipHandler, MetadataHandler, StateHandler

__all__ = ["Engine", "StateHandler", "MetadataHandler", "GossipHandler", "ClusterEventHandler"]
