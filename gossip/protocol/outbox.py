"""Where the protocol core's parts put what they produce: actions, timers and counters.

One :class:`Outbox` per core. Every part (probing, suspicion, dissemination, state exchange,
the member table, insight) is handed the same outbox and writes to it; none reaches into
another part, or into the core, to emit something. The core drains it:

* :meth:`Outbox.drain` returns the actions (:class:`~.actions.Send`,
  :class:`~.actions.MemberEvent`, :class:`~.actions.JoinResult`, cluster events) in the order
  the parts produced them, the order the host performs them in;
* :attr:`Outbox.timers` is the heap of timers the core pops in time order when they are due;
  timers set for the same instant run in the order they were set (a sequence number breaks
  ties, so the order never depends on the timer's kind or payload);
* :attr:`Outbox.stats` holds the counters (``Protocol.stats``).

The timer kinds are defined here, the lowest room that uses them: the core dispatches on them,
each part sets its own.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from ..messages import Message
from .actions import Action, Send

__all__ = [
    "Outbox", "T_PROBE", "T_PROBE_TIMEOUT", "T_PROBE_END", "T_RELAY_TIMEOUT", "T_SUSPICION",
    "T_GOSSIP", "T_PUSH_PULL", "T_MAINTENANCE", "T_JOIN_TIMEOUT", "T_SYNC", "T_PUSH_PULL_TIMEOUT",
    "T_LEAVE_RETRY", "T_RECONNECT", "T_INSIGHT",
]

# Timer kinds (the key each carries in brackets)
T_PROBE = 1               # probe round (None)                        .probe
T_PROBE_TIMEOUT = 2       # direct ping unanswered: ping-req (seq)     .probe
T_PROBE_END = 3           # probe period over (seq)                    .probe
T_RELAY_TIMEOUT = 4       # our ping-req relay: nack time (seq)        .probe
T_SUSPICION = 5           # a suspicion's deadline (member id)         .suspicion
T_GOSSIP = 6              # gossip round (None)                        .dissemination
T_PUSH_PULL = 7           # push/pull round (None)                     .sync
T_MAINTENANCE = 8         # forget, rejoin, recover (None)             .sync
T_JOIN_TIMEOUT = 9        # join unanswered (seq)                      .sync
T_SYNC = 10               # follow-up exchange after a join (address)  .sync
T_PUSH_PULL_TIMEOUT = 11  # push/pull unanswered (seq)                 .sync
T_LEAVE_RETRY = 12        # resend unacknowledged leaves (None)        .sync
T_RECONNECT = 13          # reconnect round (None)                     .sync
T_INSIGHT = 20            # damping release, partition settle (None)   .insight


class Outbox:
    """The actions, timers, counters and request numbers of one protocol core."""

    __slots__ = ("actions", "timers", "stats", "_timer_seq", "_seq")

    def __init__(self) -> None:
        self.actions: list[Action] = []
        """Produced since the last :meth:`drain`, in order."""
        self.timers: list[tuple[float, int, int, Any]] = []
        """A heap of ``(when, order, kind, key)``."""
        self.stats: dict[str, int] = {}
        """Counters by name (what was done, and every refusal as ``refused_<why>``)."""
        self._timer_seq = 0
        self._seq = 0

    # ------------------------------------------------------------------ actions

    def send(self, addr: str, msg: Message, reliable: bool = False) -> None:
        """Send ``msg`` to ``addr`` (over a connection if ``reliable``)."""
        self.actions.append(Send(addr, msg, reliable))

    def reply(self, addr: str, msg: Message, reliable: bool) -> None:
        """Answer the message being received: on its connection if it came over one."""
        self.actions.append(Send(addr, msg, reliable, reliable))

    def emit(self, action: Action) -> None:
        """Hand ``action`` (an event or a join result) to the host."""
        self.actions.append(action)

    def drain(self) -> list[Action]:
        """Return and clear the actions produced since the last call."""
        actions, self.actions = self.actions, []
        return actions

    # ------------------------------------------------------------------ timers

    def schedule(self, when: float, kind: int, key: Any) -> None:
        """Set a timer of ``kind`` (carrying ``key``) to fire at ``when``."""
        self._timer_seq += 1
        heapq.heappush(self.timers, (when, self._timer_seq, kind, key))

    def next_deadline(self) -> float:
        """Return when the earliest timer fires (``inf`` if none is set)."""
        return self.timers[0][0] if self.timers else math.inf

    # ------------------------------------------------------------------ counters and numbers

    def count(self, name: str) -> None:
        """Add one to the counter ``name``."""
        self.stats[name] = self.stats.get(name, 0) + 1

    def next_seq(self) -> int:
        """Return a new request number (u32, wrapping): acks, nacks and replies name it."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq
