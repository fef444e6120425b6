"""The sans-I/O protocol core: SWIM failure detection with Lifeguard, dissemination, push/pull.

Pure state machines. No threads, no sockets, no clocks, no global randomness: the host (the
threaded engine or the simulator) passes ``now`` and a seeded ``random.Random``, feeds in
received messages and timer expiries, and drains the actions to perform.

    core = Protocol(config, node_id, addr, rng, now)
    core.receive(now, src, msg)
    core.tick(now)                      # when now >= core.next_deadline()
    for action in core.actions_to_perform():
        ...                             # Send | MemberEvent | JoinResult

Never imports ``threading``, ``socket``, ``time``, ``asyncio``, the engine or the transports.
"""

from __future__ import annotations

from .actions import Action, JoinResult, MemberEvent, Send
from .awareness import Awareness
from .broadcasts import BroadcastQueue
from .core import Protocol
from .replay import ReplayGuard
from .messaging import MessageHistory, calc_fan_out, calc_payload_size, clamp_ttl, max_ttl
from .suspicion import Suspicion, remaining_suspicion_time, suspicion_timeouts

__all__ = [
    "Action", "Send", "MemberEvent", "JoinResult", "Awareness", "BroadcastQueue", "Protocol",
    "MessageHistory", "calc_fan_out", "calc_payload_size", "clamp_ttl", "max_ttl", "Suspicion",
    "remaining_suspicion_time", "suspicion_timeouts", "ReplayGuard",
]
