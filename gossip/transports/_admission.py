"""Admission of connections: who may hold a slot, and how much before it is trusted.

Both the socket and the WebSocket transports count their connections here, so that one set of
rules (and one set of counters) bounds what a stranger can hold:

- :class:`Admission` counts *accepted* connections: in total and per remote IP, with slots
  reserved for the hosts of known members; how many are not yet trusted (a connection is
  trusted once the engine accepted one of its frames, or once it proved the bearer token), in
  total and per remote IP; and the bytes untrusted connections hold buffered, in total and per
  remote IP. When a byte budget is over, the connection that holds the most bytes is the one
  to close (:meth:`Admission.hold`), not the newcomer whose read tipped it over.
- :class:`DialBudget` counts *dialed* connections: dials to members' hosts and any other dials
  have separate budgets, each capped per host, so that addresses learned from strangers can
  never use up the connections a node needs to reach its members.

Which hosts are members' is the engine's knowledge: it hands the transports a predicate
(:data:`MemberCheck`), asked with a host (an IP, or a WebSocket URL's host). Without one, an
accepted connection's source counts as a stranger's (the network is hostile), and a dial
counts as one to a member (without an engine, the caller chose the address).

Every refusal has a reason, which the transports count under their prefix (``tcp_`` or
``ws_``) followed by the reason: ``rejected``, ``rejected_per_source``,
``rejected_reserved_for_members``, ``untrusted_refused``, ``untrusted_per_source_refused``,
``dial_refused_members``, ``dial_refused_member_host``, ``dial_refused_others``,
``dial_refused_other_host``.

This module imports nothing from :mod:`gossip` but the errors (transports are layer L2 I/O).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from gossip.address import host_of as host_of  # re-exported: the admission counts key on it
from gossip.errors import ConnectError

__all__ = [
    "Admission",
    "Ticket",
    "DialBudget",
    "DialSlot",
    "MemberCheck",
    "host_of",
    "REJECTED",
    "REJECTED_PER_SOURCE",
    "REJECTED_RESERVED",
    "UNTRUSTED_REFUSED",
    "UNTRUSTED_PER_SOURCE_REFUSED",
]

MemberCheck = Callable[[str], bool]
"""``is_member_host(host) -> bool``: True if ``host`` is the address of a known member."""

REJECTED: Final = "rejected"
"""Every connection slot is taken."""
REJECTED_PER_SOURCE: Final = "rejected_per_source"
"""The source IP holds ``max_per_source`` connections already."""
REJECTED_RESERVED: Final = "rejected_reserved_for_members"
"""Only the slots reserved for members' hosts are left, and the source is not one."""
UNTRUSTED_REFUSED: Final = "untrusted_refused"
"""``max_untrusted`` connections are not trusted yet."""
UNTRUSTED_PER_SOURCE_REFUSED: Final = "untrusted_per_source_refused"
"""The source IP holds ``max_untrusted_per_source`` connections that are not trusted yet."""


class Ticket:
    """One accepted connection's place in :class:`Admission`'s counts.

    Attributes:
        ip: the remote IP it was admitted for.
        member: True if ``ip`` was a known member's host when it was admitted.
        trusted: True once :meth:`Admission.trust` was called for it.
        held: the pre-authentication bytes it holds, as last told to :meth:`Admission.hold`.
        owner: the transport's connection object (what :meth:`Admission.hold` names to close).
    """

    __slots__ = ("ip", "member", "trusted", "held", "released", "owner")

    def __init__(self, ip: str, member: bool, owner: Any) -> None:
        self.ip = ip
        self.member = member
        self.trusted = False
        self.held = 0
        self.released = False
        self.owner = owner

    def __repr__(self) -> str:
        state = "released" if self.released else ("trusted" if self.trusted else "untrusted")
        return f"<Ticket {self.ip}{' member' if self.member else ''} {state} held={self.held}>"


class Admission:
    """The counts and limits of accepted connections; see the module docstring.

    Args:
        max_connections: accepted connections held at once.
        max_per_source: accepted connections held at once per remote IP.
        reserved_for_members: of ``max_connections``, slots only members' hosts may take.
        max_untrusted: connections not yet trusted held at once (members' hosts excepted; 0:
            no such bound, the byte budgets bound them).
        max_untrusted_per_source: the same per remote IP (members' hosts excepted).
        preauth_bytes: bytes all untrusted connections may hold buffered (0: not tracked).
        preauth_bytes_per_source: bytes the untrusted connections of one remote IP may hold
            (0: not tracked).
        is_member: the member predicate (see :data:`MemberCheck`); None: no source is a
            member's.

    Thread-safe: every method may be called from any thread. The member predicate is called
    without the lock held.
    """

    def __init__(self, *, max_connections: int, max_per_source: int, reserved_for_members: int = 0,
                 max_untrusted: int = 0, max_untrusted_per_source: int, preauth_bytes: int = 0,
                 preauth_bytes_per_source: int = 0, is_member: MemberCheck | None = None) -> None:
        for label, value in (("max_connections", max_connections), ("max_per_source", max_per_source),
                             ("max_untrusted_per_source", max_untrusted_per_source)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        for label, value in (("reserved_for_members", reserved_for_members),
                             ("max_untrusted", max_untrusted),
                             ("preauth_bytes", preauth_bytes),
                             ("preauth_bytes_per_source", preauth_bytes_per_source)):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        if reserved_for_members >= max_connections:
            raise ValueError(f"reserved_for_members must be < max_connections ({max_connections}), "
                             f"got {reserved_for_members}")
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.reserved_for_members = reserved_for_members
        self.max_untrusted = max_untrusted
        self.max_untrusted_per_source = max_untrusted_per_source
        self.preauth_bytes = preauth_bytes
        self.preauth_bytes_per_source = preauth_bytes_per_source
        self.is_member = is_member
        self._lock = threading.Lock()
        self._total = 0
        self._per_source: dict[str, int] = {}
        self._untrusted: dict[str, dict[Ticket, None]] = {}  # per source
        self._untrusted_total = 0
        self._held_total = 0
        self._held_per_source: dict[str, int] = {}

    # ------------------------------------------------------------------ reading

    @property
    def connections(self) -> int:
        """Accepted connections counted now."""
        return self._total

    @property
    def untrusted(self) -> int:
        """Accepted connections not trusted yet."""
        return self._untrusted_total

    @property
    def held_bytes(self) -> int:
        """Bytes untrusted connections hold buffered now (as told to :meth:`hold`)."""
        return self._held_total

    def member(self, ip: str) -> bool:
        """Ask the member predicate about ``ip`` (False without one, or if it fails)."""
        check = self.is_member
        if check is None or not ip:
            return False
        try:
            return bool(check(ip))
        except Exception:  # the engine is stopping, or a bug there: treat as a stranger
            return False

    # ------------------------------------------------------------------ changing

    def admit(self, ip: str, owner: Any = None) -> Ticket | str:
        """Count a new connection from ``ip``; return its ticket, or why it is refused.

        The order of the checks makes the reason the most specific one: every slot taken;
        the source's share taken; only members' slots left; too many untrusted connections
        (from this source, then in total).
        """
        member = self.member(ip)
        with self._lock:
            if self._total >= self.max_connections:
                return REJECTED
            if self._per_source.get(ip, 0) >= self.max_per_source:
                return REJECTED_PER_SOURCE
            if not member and self._total >= self.max_connections - self.reserved_for_members:
                return REJECTED_RESERVED
            if not member:
                mine = self._untrusted.get(ip)
                if mine is not None and len(mine) >= self.max_untrusted_per_source:
                    return UNTRUSTED_PER_SOURCE_REFUSED
                if self.max_untrusted and self._untrusted_total >= self.max_untrusted:
                    return UNTRUSTED_REFUSED
            ticket = Ticket(ip, member, owner)
            self._total += 1
            self._per_source[ip] = self._per_source.get(ip, 0) + 1
            self._untrusted.setdefault(ip, {})[ticket] = None
            self._untrusted_total += 1
            return ticket

    def trust(self, ticket: Ticket) -> None:
        """The connection proved itself: it leaves the untrusted counts (idempotent)."""
        with self._lock:
            if ticket.trusted or ticket.released:
                return
            ticket.trusted = True
            self._drop_untrusted_locked(ticket)

    def release(self, ticket: Ticket) -> None:
        """The connection is gone: give its slot back (idempotent)."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._total -= 1
            n = self._per_source.get(ticket.ip, 0) - 1
            if n > 0:
                self._per_source[ticket.ip] = n
            else:
                self._per_source.pop(ticket.ip, None)
            if not ticket.trusted:
                self._drop_untrusted_locked(ticket)

    def hold(self, ticket: Ticket, nbytes: int) -> list[Any]:
        """Record that the (untrusted) connection holds ``nbytes`` buffered now.

        Returns the owners of the connections to close to bring the bytes back within the
        budgets: while its source is over ``preauth_bytes_per_source``, that source's largest
        holder; then, while all are over ``preauth_bytes``, the largest holder overall. The
        caller closes them (and releases their tickets). A trusted ticket holds nothing.
        """
        victims: list[Any] = []
        with self._lock:
            if ticket.released or ticket.trusted:
                nbytes = 0
            self._set_held_locked(ticket, nbytes)
            per = self.preauth_bytes_per_source
            if per and self._held_per_source.get(ticket.ip, 0) > per:
                mine = sorted(self._untrusted.get(ticket.ip, {}), key=lambda t: t.held, reverse=True)
                left = self._held_per_source.get(ticket.ip, 0)
                for t in mine:
                    if left <= per or not t.held:
                        break
                    left -= t.held
                    victims.append(t)
            total = self.preauth_bytes
            if total:
                left = self._held_total - sum(t.held for t in victims)
                if left > total:
                    chosen = {id(t) for t in victims}
                    everyone = sorted((t for ts in self._untrusted.values() for t in ts
                                       if id(t) not in chosen), key=lambda t: t.held, reverse=True)
                    for t in everyone:
                        if left <= total or not t.held:
                            break
                        left -= t.held
                        victims.append(t)
        return [t.owner for t in victims]

    # ------------------------------------------------------------------ internals

    def _set_held_locked(self, ticket: Ticket, nbytes: int) -> None:
        delta = nbytes - ticket.held
        if not delta:
            return
        ticket.held = nbytes
        self._held_total += delta
        n = self._held_per_source.get(ticket.ip, 0) + delta
        if n > 0:
            self._held_per_source[ticket.ip] = n
        else:
            self._held_per_source.pop(ticket.ip, None)

    def _drop_untrusted_locked(self, ticket: Ticket) -> None:
        self._set_held_locked(ticket, 0)
        mine = self._untrusted.get(ticket.ip)
        if mine is not None and ticket in mine:
            del mine[ticket]
            self._untrusted_total -= 1
            if not mine:
                del self._untrusted[ticket.ip]


class DialSlot:
    """One dialed connection's place in :class:`DialBudget`'s counts (release it once)."""

    __slots__ = ("host", "member", "released")

    def __init__(self, host: str, member: bool) -> None:
        self.host = host
        self.member = member
        self.released = False

    def __repr__(self) -> str:
        return f"<DialSlot {self.host} {'member' if self.member else 'other'}>"


class DialBudget:
    """Separate budgets for dials to members' hosts and any other dials, each capped per host.

    Args:
        max_members: connections dialed to members' hosts at once.
        max_per_member_host: the same, per host.
        max_others: connections dialed to any other host at once.
        max_per_other_host: the same, per host.
        is_member: the member predicate; None: every host counts as a member's.
    """

    def __init__(self, *, max_members: int, max_per_member_host: int, max_others: int,
                 max_per_other_host: int, is_member: MemberCheck | None = None) -> None:
        for label, value in (("max_members", max_members), ("max_per_member_host", max_per_member_host),
                             ("max_others", max_others), ("max_per_other_host", max_per_other_host)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.limits = {True: (max_members, max_per_member_host),
                       False: (max_others, max_per_other_host)}
        self.is_member = is_member
        self._lock = threading.Lock()
        self._totals = {True: 0, False: 0}
        self._per_host: dict[tuple[bool, str], int] = {}

    def counts(self) -> tuple[int, int]:
        """Return the connections dialed now: ``(to members, to others)``."""
        return self._totals[True], self._totals[False]

    def acquire(self, addr: str) -> DialSlot | str:
        """Take a slot for a dial to ``addr``; return it, or why the dial is refused."""
        host = host_of(addr)
        check = self.is_member
        if check is None:
            member = True
        else:
            try:
                member = bool(check(host))
            except Exception:  # the engine is stopping: a stranger's budget
                member = False
        total_max, host_max = self.limits[member]
        key = (member, host)
        with self._lock:
            if self._totals[member] >= total_max:
                return "dial_refused_members" if member else "dial_refused_others"
            if self._per_host.get(key, 0) >= host_max:
                return "dial_refused_member_host" if member else "dial_refused_other_host"
            self._totals[member] += 1
            self._per_host[key] = self._per_host.get(key, 0) + 1
        return DialSlot(host, member)

    def take(self, addr: str, refused: Callable[[str], None]) -> DialSlot:
        """Take a slot for a dial to ``addr``, or refuse the dial.

        ``refused(reason)`` is called with the reason first (the transport counts it).

        Raises:
            ConnectError: the budget for ``addr``'s host (member or not) is spent.
        """
        slot = self.acquire(addr)
        if isinstance(slot, str):
            refused(slot)
            members, others = self.counts()
            raise ConnectError(
                f"connect to {addr}: too many connections dialed ({slot.replace('_', ' ')}; "
                f"{members} to members, {others} to other hosts)")
        return slot

    def release(self, slot: DialSlot | None) -> None:
        """Give a slot back (idempotent; ``None`` is ignored)."""
        if slot is None:
            return
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._totals[slot.member] -= 1
            key = (slot.member, slot.host)
            n = self._per_host.get(key, 0) - 1
            if n > 0:
                self._per_host[key] = n
            else:
                self._per_host.pop(key, None)
