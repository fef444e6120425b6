"""Failure detection by probing (SWIM section 4.1, with Lifeguard's extensions).

Each probe round (``health_check_interval``, stretched by the local health score) pings the
next member of the shuffled round-robin probe order. If no ack comes within ``ping_timeout``
(with ``adaptive_ping_timeout``, the member's own, drawn from its recent round trips:
:func:`~.rtt.adaptive_timeout`; stretched likewise), ``indirect_checks`` helpers are asked to ping it for us (ping-req), and
with ``tcp_pings`` it is pinged once more over a connection. If nothing has come back when the
round ends, the member is suspected (:meth:`.Suspicions.on_suspect`).

Lifeguard: a ping to a suspect carries the suspicion (the buddy system: it refutes at once,
and a prober that suspects us at an incarnation we already refuted gets our alive in the ack);
helpers nack at 80 % of the time the requester still waits, and missing nacks, like failed
probes, raise the local health score (:class:`~.awareness.Awareness`) while acks lower it.

:class:`Prober` also answers: a ping with an ack (carrying our own refutation if the ping
accused us), a ping-req by pinging a member it knows at the address it knows, relaying the
ack or sending the nack. The round trip of each directly acked probe is recorded
(:class:`~.rtt.RttHistogram`).

Pure data: no clock, no threads, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..config import Config
from ..messages import MAX_INCARNATION, Ack, Dead, Nack, Ping, PingReq, Suspect, Update
from ..node import NodeID, NodeState
from .actions import Trace
from .awareness import Awareness
from .membership import LocalNode, Member, MemberTable
from .outbox import T_PROBE, T_PROBE_END, T_PROBE_TIMEOUT, T_RELAY_TIMEOUT, Outbox
from .rtt import RttHistogram, RttWindow, adaptive_timeout

__all__ = ["Prober", "NACK_SHARE"]

ALIVE, SUSPECT, DEAD, LEAVING = NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING

NACK_SHARE = 0.8
"""A helper sends its nack at this share of the time the requester still waits (Lifeguard: 80 %)."""


class _Probe:
    __slots__ = ("target", "end", "acked", "indirect", "expected_nacks", "nacks", "sent_at",
                 "indirect_at", "helpers")

    def __init__(self, target: NodeID, end: float, sent_at: float) -> None:
        self.target = target
        self.end = end
        self.sent_at = sent_at
        self.acked = False
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0
        self.indirect_at = 0.0  # when helpers were asked (tracing)
        self.helpers = 0


class _Relay:
    __slots__ = ("requester_addr", "orig_seq", "nack", "done")

    def __init__(self, requester_addr: str, orig_seq: int, nack: bool) -> None:
        self.requester_addr = requester_addr
        self.orig_seq = orig_seq
        self.nack = nack
        self.done = False


class Prober:
    """The probes this node runs and the ping-reqs it relays.

    Args:
        config: the protocol's configuration.
        out: where sends, timers and counters go.
        table: the member table (the probe order, helpers, who has shown itself).
        local: this node's own record (its address; refutations ride on acks).
        awareness: the local health score.
        rtt: the histogram of probe round trips.
        piggyback: returns queued updates for a packet (``piggyback(extra, to)``).
        merge: merges the updates a ping or ack carries (``merge(now, updates, sender)``).
        suspect: merges a suspicion (``suspect(now, Suspect(...))``): a failed probe's verdict.
        leave_acked: called with the number of an ack that answers none of our probes or
            relays (it may acknowledge our leave).
    """

    def __init__(self, config: Config, out: Outbox, table: MemberTable, local: LocalNode,
                 awareness: Awareness, rtt: RttHistogram,
                 piggyback: Callable[[Iterable[Update], NodeID | None], tuple[Update, ...]],
                 merge: Callable[[float, Iterable[Update], NodeID | None], None],
                 suspect: Callable[[float, Suspect], None],
                 leave_acked: Callable[[int], None]) -> None:
        self.config = config
        self.out = out
        self.table = table
        self.members = table.members
        self.local = local
        self.id = local.id
        self.lifeguard = config.lifeguard_enabled
        self.awareness = awareness
        self.rtt = rtt
        self._piggyback = piggyback
        self._merge = merge
        self._suspect = suspect
        self._leave_acked = leave_acked
        self.probes: dict[int, _Probe] = {}
        self.relays: dict[int, _Relay] = {}
        self.tracing = config.tracing is not False

    def start(self, now: float, stagger: float) -> None:
        """Set the first probe round, ``stagger`` seconds from ``now``."""
        self.out.schedule(now + stagger, T_PROBE, None)

    # ------------------------------------------------------------------ our probes

    def interval(self) -> float:
        """Return the probe interval, stretched by the local health score."""
        return self.awareness.scale(self.config.health_check_interval)

    def round(self, now: float) -> None:
        """Run a probe round: ping the next member of the probe order."""
        interval = self.interval()
        self.out.schedule(now + interval, T_PROBE, None)
        if self.local.state is LEAVING:
            return
        m = self.table.next_probe_target()
        if m is None:
            return
        seq = self.out.next_seq()
        probe = _Probe(m.node, now + interval, now)
        self.probes[seq] = probe
        buddy = m.incarnation if (self.lifeguard and m.state is SUSPECT) else -1
        extra: tuple[Update, ...] = ()
        if buddy >= 0:
            extra = (Suspect(m.node, m.incarnation, self.id),)
        self.out.send(m.addr, Ping(seq, m.node, self.local.addr, self._piggyback(extra, m.node), buddy))
        timeout = self.awareness.scale(self.ping_timeout(m))
        self.out.schedule(now + timeout, T_PROBE_TIMEOUT, seq)
        self.out.schedule(now + interval, T_PROBE_END, seq)
        self.out.count("probes")

    def ping_timeout(self, m: Member) -> float:
        """Return how long a direct ping of ``m`` waits before helpers are asked (before
        Lifeguard's scaling): ``ping_timeout``, or with ``adaptive_ping_timeout`` the one its
        recent round trips call for (:func:`~.rtt.adaptive_timeout`)."""
        cfg = self.config
        if not cfg.adaptive_ping_timeout:
            return cfg.ping_timeout
        return adaptive_timeout(m.rtts, cfg.ping_timeout, cfg.effective_ping_timeout_max,
                                cfg.adaptive_ping_percentile, cfg.adaptive_ping_factor)

    def timeout(self, now: float, seq: int) -> None:
        """The direct ping ``seq`` went unanswered: ask helpers (and a connection) to reach it."""
        probe = self.probes.get(seq)
        if probe is None or probe.acked:
            return
        probe.indirect = True
        probe.indirect_at = now
        m = self.members.get(probe.target)
        if m is None:
            return
        cfg = self.config
        k = cfg.indirect_checks if cfg.enable_indirect_pings else 0
        helpers = self.table.sample_known(k, lambda h: h.state is ALIVE, {m.node})
        # Helpers learn how long we still wait, so their nacks arrive in time whatever our
        # health score stretched the probe to.
        window = max(0.0, probe.end - now)
        for h in helpers:
            self.out.send(h.addr, PingReq(seq, m.node, m.addr, self.local.addr, self.lifeguard, window))
        probe.helpers = len(helpers)
        if self.lifeguard:
            probe.expected_nacks = len(helpers)
        if cfg.tcp_pings and (m.introducer is None or m.vouched):
            # SWIM over UDP cannot tell a UDP-blocked node from a dead one; TCP can. (A dial:
            # never to an address only a stranger named.)
            self.out.send(m.addr, Ping(seq, m.node, self.local.addr, (), -1), True)
        self.out.count("indirect_probes")

    def end(self, now: float, seq: int) -> None:
        """Probe ``seq``'s round is over: unanswered, its target is suspected."""
        probe = self.probes.pop(seq, None)
        if probe is None or probe.acked:
            return
        if self.lifeguard:
            if probe.expected_nacks > 0:
                missed = probe.expected_nacks - probe.nacks
                if missed > 0:
                    self.awareness.apply_delta(missed)
            else:
                self.awareness.apply_delta(1)
        self.out.count("failed_probes")
        if self.tracing:
            self._trace(now, seq, probe, "timeout")
        m = self.members.get(probe.target)
        if m is None or (m.state is not ALIVE and m.state is not SUSPECT):
            return
        # Suspect it, or, if it is suspect already, confirm the suspicion independently.
        self._suspect(now, Suspect(m.node, m.incarnation, self.id))

    def on_ack(self, now: float, a: Ack, sender: NodeID | None = None) -> None:
        """An ack: of our probe, of a ping we relay, or of our leave."""
        if a.updates:
            self._merge(now, a.updates, sender)
        probe = self.probes.get(a.seq)
        if probe is not None:
            if not probe.acked:
                probe.acked = True
                self.out.count("acks")
                target = self.members.get(probe.target)
                if target is not None and target.introducer is not None:
                    self.table.confirm(target)    # it answered our probe: it exists
                if self.lifeguard and not probe.indirect:
                    self.awareness.apply_delta(-1)
                if self.tracing:
                    self._trace(now, seq=a.seq, probe=probe,
                                outcome="indirect_ack" if probe.indirect else "ack")
                # A round trip is measured only from the target's own ack (a helper's relayed ack
                # carries the helper's id and two more hops).
                if sender == probe.target or (sender is None and not probe.indirect):
                    m = self.members.get(probe.target)
                    if m is not None:
                        m.rtt = now - probe.sent_at
                        self.rtt.record(m.rtt)
                        if self.config.adaptive_ping_timeout:
                            if m.rtts is None:
                                m.rtts = RttWindow()
                            m.rtts.add(m.rtt, self.config.adaptive_ping_samples)
            return
        relay = self.relays.get(a.seq)
        if relay is not None and not relay.done:
            relay.done = True
            self.out.send(relay.requester_addr, Ack(relay.orig_seq))
            return
        self._leave_acked(a.seq)

    def _trace(self, now: float, seq: int, probe: _Probe, outcome: str) -> None:
        """Record probe ``seq``'s span (and its indirect probe's) now that it is over."""
        m = self.members.get(probe.target)
        attrs: dict[str, str | int | float | bool] = {
            "gossip.member.id": str(probe.target), "gossip.member.addr": "" if m is None else m.addr,
            "gossip.probe.seq": seq, "gossip.probe.outcome": outcome,
            "gossip.probe.indirect": probe.indirect,
        }
        children: tuple[Trace, ...] = ()
        if probe.indirect:
            children = (Trace("gossip.probe.indirect", probe.indirect_at, now, {
                "gossip.member.id": str(probe.target), "gossip.probe.seq": seq,
                "gossip.probe.helpers": probe.helpers, "gossip.probe.nacks": probe.nacks,
                "gossip.probe.outcome": outcome}),)
        self.out.emit(Trace("gossip.probe", probe.sent_at, now, attrs, children=children))

    def on_nack(self, seq: int) -> None:
        """A helper could not reach the target of our probe ``seq`` (but is fine itself)."""
        probe = self.probes.get(seq)
        if probe is not None:
            probe.nacks += 1
            self.out.count("nacks")

    # ------------------------------------------------------------------ answering

    def on_ping(self, now: float, src: str, p: Ping, sender: NodeID | None, reliable: bool) -> None:
        """Answer a ping with an ack (carrying our refutation if it accused us)."""
        if p.target != self.id:
            self.out.count("misdirected_pings")
            return
        local = self.local
        # Lifeguard's buddy system: the prober holds us suspect at ``suspect_inc``. Below our
        # incarnation, it missed a refutation whose epidemic may be over: nothing we queue
        # would reach it again before its suspicion runs out.
        stale = 0 <= p.suspect_inc < local.incarnation
        if 0 <= p.suspect_inc <= MAX_INCARNATION:
            local.accused(now, p.suspect_inc)
        if p.updates:
            self._merge(now, p.updates, sender)
        local.settle(now)   # our answer to an accusation rides on the ack
        extra: tuple[Update, ...] = ()
        if local.state is LEAVING:
            extra = (local.left_update(),)   # whoever still probes us missed our leave
        else:
            if stale:
                extra = (local.self_alive(),)    # the refutation it missed, in the ack it asked for
                self.out.count("stale_suspicions_answered")
            m = self.members.get(sender) if sender is not None else None
            if m is not None and m.state is DEAD:
                # A node we hold dead is probing us: tell it, so it refutes (heals partitions).
                extra += (Dead(m.node, m.incarnation, self.id),)
        ack = Ack(p.seq, self._piggyback(extra, sender))
        if reliable:
            self.out.reply(src, ack, True)     # on its connection
        else:
            self.out.send(self.table.answer_addr(src, p.source_addr, sender), ack)

    def on_ping_req(self, now: float, src: str, r: PingReq, sender: NodeID | None, reliable: bool) -> None:
        """Ping the member a requester could not reach, for it."""
        cfg = self.config
        if len(self.relays) >= cfg.max_pending_relays:
            self.out.count("refused_relays_full")
            return
        # The answers go to the requester later, as datagrams (see MemberTable.answer_addr); a
        # request that came on a connection is run only for a member that has shown itself, at
        # its own address.
        if reliable:
            if not self.table.shown_at(sender, r.source_addr):
                self.out.count("refused_ping_req_requester")
                return
            requester = r.source_addr
        else:
            requester = self.table.answer_addr(src, r.source_addr, sender)
        m = self.members.get(r.target)
        if m is None or not (m.state is ALIVE or m.state is SUSPECT) or not self.table.dialable(m):
            # We only probe members we know, at the address we know: a ping-req is no way to
            # make us ping arbitrary addresses. A nack tells the requester we are fine.
            self.out.count("refused_ping_req_target")
            if r.nack:
                self.out.send(requester, Nack(r.seq))
            return
        # Nack a little before the requester gives up (Lifeguard: at 80 %). The requester says
        # how long it waits; a peer that does not is assumed to run our configuration.
        window = r.timeout if r.timeout > 0 else cfg.health_check_interval - cfg.ping_timeout
        window = min(window, cfg.health_check_interval * cfg.awareness_max_multiplier)
        seq = self.out.next_seq()
        self.relays[seq] = _Relay(requester, r.seq, r.nack)
        self.out.send(m.addr, Ping(seq, m.node, self.local.addr))
        self.out.schedule(now + NACK_SHARE * window, T_RELAY_TIMEOUT, seq)

    def relay_timeout(self, seq: int) -> None:
        """The ping we relay as ``seq`` got no ack in time: nack it if the requester asked."""
        relay = self.relays.pop(seq, None)
        if relay is not None and not relay.done and relay.nack:
            self.out.send(relay.requester_addr, Nack(relay.orig_seq))
