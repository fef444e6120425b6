"""Dissemination: membership updates spread by gossip and by piggybacking (SWIM section 4).

:class:`Dissemination` keeps two transmit-limited queues (:class:`~.broadcasts.BroadcastQueue`):
news about members that showed themselves, and, behind it, news about members only their
introducer named, so a flood of fake members cannot hold up a refutation. Updates leave

* in gossip rounds (``dissemination_interval``) to ``dissemination_fan_out`` random members,
  alive ones, suspect ones, and the recently dead (``gossip_to_the_dead_time``), which run only
  while something is queued (an idle node sleeps);
* piggybacked on pings and acks (:meth:`Dissemination.piggyback`);
* as a correction to a peer that gossiped an accusation older than what we know
  (:meth:`Dissemination.correct`).

Each update goes out ``retransmit_limit`` times (log-scaled with the cluster's size, and at
least once to each live peer in a small cluster), within one datagram's byte budget.

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..config import Config
from ..messages import Alive, Dead, Forget, Gossip, Update, update_size
from ..node import NodeID, NodeState
from .broadcasts import BroadcastQueue, retransmit_limit
from .membership import Member, MemberTable
from .outbox import T_GOSSIP, Outbox

__all__ = ["Dissemination", "PACKET_OVERHEAD", "SMALL_CLUSTER"]

ALIVE, SUSPECT, DEAD = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD

SMALL_CLUSTER = 4  # live peers up to which an update may be sent to every one of them

# Encoded-size budget of the fixed parts of a packet: header (39), encryption (28), the message's
# own fields and list framing. What is left of the UDP limit carries piggybacked updates.
PACKET_OVERHEAD = 160

_CORRECTIONS_KEPT = 4096   # (peer, member) corrections remembered before the memory is cleared


class Dissemination:
    """The update queues of one core and the rounds that empty them.

    Args:
        config: the protocol's configuration.
        out: where sends, timers and counters go.
        table: the member table (gossip targets, who may be dialed, the cluster's size).
    """

    def __init__(self, config: Config, out: Outbox, table: MemberTable) -> None:
        self.config = config
        self.out = out
        self.table = table
        self.members = table.members
        self.broadcasts = BroadcastQueue(config.broadcast_queue_size)
        # News about members nobody has shown us exist yet (only their introducer named them)
        # waits behind everything else: a flood of fake members cannot hold up a refutation.
        self.broadcasts_low = BroadcastQueue(config.broadcast_queue_size)
        self.armed = True   # a gossip timer is pending
        self._epoch = 0.0   # the first tick of this node's gossip ticker
        self._corrected: dict[tuple[NodeID, NodeID], tuple[bool, int]] = {}
        self._limit_key = (-1, -1)   # (members, alive) the retransmit limit was computed for
        self._limit = 0

    def start(self, now: float, stagger: float) -> None:
        """Set the first gossip round, ``stagger`` seconds from ``now``.

        Gossip rounds run only while there is something to gossip (an idle node sleeps), on
        the ticks of a ticker that never stops: an update queued while idle goes out at the
        next tick (half an interval later on average, as memberlist's GossipInterval ticker
        does), not a whole interval later at every hop.
        """
        self._epoch = now + stagger
        self.out.schedule(self._epoch, T_GOSSIP, None)

    def next_tick(self, now: float) -> float:
        """Return the first tick of this node's gossip ticker at or after ``now``."""
        interval = self.config.dissemination_interval
        ticks = max(0, math.ceil((now - self._epoch) / interval))
        return self._epoch + ticks * interval

    def forget(self, node: NodeID) -> None:
        """Drop the queued news about ``node`` (it was forgotten)."""
        self.broadcasts.invalidate(node)
        self.broadcasts_low.invalidate(node)

    # ------------------------------------------------------------------ budgets

    def budget(self) -> int:
        """Return the bytes of updates one datagram may carry."""
        return self.config.udp_max_packet_size - PACKET_OVERHEAD

    def retransmit_limit(self) -> int:
        """Return how many times each update is sent."""
        table = self.table
        n = table.num_members()
        # In a small cluster the log-scaled limit (2 with the local preset) is fewer sends than
        # there are live peers, and an epidemic that ends early leaves one of them alone with
        # its suspicion: up to the longest suspicion timeout. Up to SMALL_CLUSTER live peers,
        # every update may go to each of them.
        key = (n, table.counts[ALIVE])
        if key != self._limit_key:
            self._limit_key = key
            self._limit = max(retransmit_limit(self.config.retransmit_mult, n), min(key[1], SMALL_CLUSTER))
        return self._limit

    # ------------------------------------------------------------------ in and out

    def queue(self, now: float, update: Update) -> None:
        """Queue ``update`` for dissemination (replacing older news about its member), and make
        sure a gossip round is pending."""
        size = update_size(update)
        if size > self.budget():
            # It would never fit a datagram: queued, it would sit there for ever and keep the
            # gossip timer running. Full-state exchanges still carry the member.
            self.out.count("refused_broadcast_oversize")
            return
        m = self.members.get(update.node)
        if m is not None and m.introducer is not None:
            self.broadcasts.invalidate(update.node)
            self.broadcasts_low.queue(update.node, update, size)
        else:
            self.broadcasts_low.invalidate(update.node)
            self.broadcasts.queue(update.node, update, size)
        if not self.armed:
            self.armed = True
            self.out.schedule(self.next_tick(now), T_GOSSIP, None)

    def take(self, budget: int, limit: int, to: NodeID | None, probe: bool = False) -> list[Update]:
        """Take queued updates for one packet: all that fit of the main queue, then low ones.

        A packet to a member we hold suspect or dead carries them too (it may be alive and
        must hear what is said of it), but does not count against their retransmit limit:
        with few members, a handful of transmissions spent on crashed ones would otherwise
        leave a live member without the news, so that it suspects alone (no confirmation,
        the longest timeout) or misses a death verdict (Lifeguard's k never reached).
        """
        m = self.members.get(to) if to is not None else None
        count = m is None or m.state is ALIVE
        # Alive news about the recipient itself is a wasted transmission (accusations about it
        # are kept: it must refute them); a Forget never rides on a ping or an ack.
        skip_type = Forget if probe else None
        updates: list[Update] = self.broadcasts.get(budget, limit, count=count, about=to, about_type=Alive,
                                                    skip_type=skip_type)
        left = budget - self.broadcasts.last_used
        if self.broadcasts_low and left > 16:
            updates += self.broadcasts_low.get(left, limit, count=count, about=to, about_type=Alive,
                                               skip_type=skip_type)
        return updates

    def piggyback(self, extra: Iterable[Update] = (), to: NodeID | None = None) -> tuple[Update, ...]:
        """Return ``extra`` followed by the queued updates that fit what it leaves of a packet
        to ``to`` (a queued update equal to one of ``extra`` is not repeated)."""
        extra = tuple(extra)
        if not extra:
            return tuple(self.take(self.budget(), self.retransmit_limit(), to, probe=True))
        budget = self.budget() - sum(map(update_size, extra))
        updates = self.take(budget, self.retransmit_limit(), to, probe=True)
        return extra + tuple(u for u in updates if u not in extra)

    def round(self, now: float) -> None:
        """Run a gossip round: queued updates to ``dissemination_fan_out`` random members."""
        cfg = self.config
        sent = False
        if (self.broadcasts or self.broadcasts_low) and self.table.ids:
            dead_window = cfg.gossip_to_the_dead_time

            def gossipable(m: Member) -> bool:
                if m.state is ALIVE or m.state is SUSPECT:
                    return True
                return m.state is DEAD and now - m.state_change < dead_window

            budget, limit = self.budget(), self.retransmit_limit()
            for m in self.table.sample_known(cfg.dissemination_fan_out, gossipable, set()):
                updates = self.take(budget, limit, m.node)
                if updates:
                    self.out.send(m.addr, Gossip(tuple(updates)))
                    # Only sends to live members use up the queue (see take): rounds that
                    # reach nobody alive must not keep the timer going on their own.
                    sent = sent or m.state is ALIVE
        if sent:
            self.out.schedule(now + cfg.dissemination_interval, T_GOSSIP, None)
        else:
            # Nothing could go out (an empty queue, nobody to send to, or only news about the
            # peers themselves): sleep until the next queued update instead of spinning.
            self.armed = False

    def correct(self, peer: NodeID, fresher: list[Update]) -> None:
        """Tell ``peer``, which just gossiped stale accusations, what we know is newer.

        Bounded epidemics miss a node now and then; a node that missed a refutation would let
        its old suspicion run out and declare a live member dead. Each (peer, member,
        incarnation) is corrected once.
        """
        m = self.members.get(peer)
        if m is None or m.state is not ALIVE or not self.table.dialable(m):
            return
        todo = []
        room = self.budget()   # one datagram's worth: the rest waits for the next stale gossip
        for u in fresher:
            key = (peer, u.node)
            mark = (type(u) is Dead, u.incarnation)
            if self._corrected.get(key) != mark:
                size = update_size(u)
                if size > room:
                    break
                room -= size
                self._corrected[key] = mark
                todo.append(u)
        if todo:
            if len(self._corrected) > _CORRECTIONS_KEPT:
                self._corrected.clear()
            self.out.count("corrections")
            self.out.send(m.addr, Gossip(tuple(todo)))
