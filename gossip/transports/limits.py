"""The settings every connection-carrying transport shares: one default, one check, one meaning.

:class:`ConnectionLimits` holds what the socket transport (:mod:`gossip.transports.tcp`) and the
WebSocket transport (:mod:`gossip.transports.websocket`) both bound: frame sizes, timeouts, the
per-connection write buffer, and the admission of connections before and after they are trusted
(a connection is *trusted* once the engine accepted one of its frames, or, on WebSocket with a
bearer token, once it proved the token). Each transport keeps only its own settings beside it
(UDP sizes for the socket transport; the path, TLS, token and pings for WebSocket).

Where a setting bounds something the two transports see differently, its meaning stays one and
the note says how each enforces it:

- ``frame_timeout``: a frame must arrive whole within this long of its first byte (a slow
  trickle is cut). The socket transport times each frame (and the connection preamble) from
  the read that brought its first byte, while reading is not paused; the
  WebSocket transport times each message on the connections it reads itself, from the first
  byte read after the previous message, while reading is not paused.
- ``preauth_buffer_limit`` / ``preauth_buffer_per_source``: the bytes untrusted connections may
  hold buffered, in all and per remote IP. The socket transport measures what each holds and
  closes the largest holder when a budget is over; websockets' parser keeps a partial message
  out of sight, so the WebSocket transport reserves each untrusted connection's worst case
  (``preauth_max_frame_size``) and holds at most ``budget // preauth_max_frame_size`` of them.

:func:`limits_from_config` reads the fields of a :class:`gossip.Config` (without importing it:
transports sit below the configuration's users, and take any object with those attributes).

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports._admission`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gossip.transports._admission import Admission, DialBudget, MemberCheck

__all__ = ["ConnectionLimits", "limits_from_config", "MAX_FRAME_LIMIT"]

_MiB = 1024 * 1024

MAX_FRAME_LIMIT = (1 << 32) - 1
"""The largest frame any transport can carry (a TCP frame's length prefix is 4 bytes)."""

_SIZES = ("max_frame_size", "max_stream_frame_size")
_POSITIVE_DURATIONS = ("dial_timeout", "io_timeout", "idle_timeout", "preauth_timeout",
                       "frame_timeout")
_AT_LEAST_ONE = ("conn_buffer_size", "max_connections", "max_connections_per_source",
                 "preauth_max_frame_size", "preauth_buffer_limit", "preauth_buffer_per_source",
                 "max_rejected_frames", "max_untrusted_per_source", "max_member_dials",
                 "max_member_dials_per_host", "max_other_dials", "max_other_dials_per_host")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds shared by the socket and WebSocket transports (see the module docstring).

    Args:
        max_frame_size: largest frame (a pooled, request or WebSocket message) sent or
            accepted; a larger incoming one closes its connection.
        max_stream_frame_size: largest frame on a stream connection.
        dial_timeout: seconds allowed to establish a TCP connection.
        io_timeout: default seconds a reliable send waits for room in a full connection buffer.
        idle_timeout: connections unused this long are closed (pooled, accepted, idle request).
        conn_buffer_size: bytes queued per connection before writers wait for the peer.
        max_connections: accepted connections held at once; more are closed at once.
        max_connections_per_source: the same per remote IP.
        reserved_for_members: of ``max_connections``, slots only members' hosts may take.
        preauth_max_frame_size: the largest frame an untrusted connection may announce (capped
            at ``max_frame_size``).
        preauth_buffer_limit: bytes all untrusted connections together may hold buffered.
        preauth_buffer_per_source: bytes the untrusted connections of one remote IP may hold
            (capped at ``preauth_buffer_limit``).
        preauth_timeout: an accepted connection must become trusted within this long.
        frame_timeout: a frame must arrive whole within this long of its first byte.
        max_rejected_frames: a connection is closed once the engine refused this many of its
            frames.
        max_untrusted_per_source: untrusted accepted connections per remote IP (members' hosts
            excepted).
        max_member_dials, max_member_dials_per_host: connections dialed to members' hosts, in
            all and per host.
        max_other_dials, max_other_dials_per_host: connections dialed to other hosts, in all
            and per host.

    Raises:
        ValueError: a value is out of range; the message names the field.
    """

    max_frame_size: int = 4 * _MiB
    max_stream_frame_size: int = 8 * _MiB
    dial_timeout: float = 2.0
    io_timeout: float = 2.0
    idle_timeout: float = 60.0
    conn_buffer_size: int = 4 * _MiB
    max_connections: int = 1024
    max_connections_per_source: int = 64
    reserved_for_members: int = 0
    preauth_max_frame_size: int = 1 * _MiB
    preauth_buffer_limit: int = 64 * _MiB
    preauth_buffer_per_source: int = 8 * _MiB
    preauth_timeout: float = 10.0
    frame_timeout: float = 10.0
    max_rejected_frames: int = 16
    max_untrusted_per_source: int = 8
    max_member_dials: int = 1024
    max_member_dials_per_host: int = 256
    max_other_dials: int = 64
    max_other_dials_per_host: int = 4

    def __post_init__(self) -> None:
        for name in _SIZES:
            size = getattr(self, name)
            if not 1 <= size <= MAX_FRAME_LIMIT:
                raise ValueError(f"{name} must be in 1..2**32-1, got {size}")
        for name in _POSITIVE_DURATIONS:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in _AT_LEAST_ONE:
            count = getattr(self, name)
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count}")
        if not 0 <= self.reserved_for_members < self.max_connections:
            raise ValueError(f"reserved_for_members must be in 0..max_connections-1 "
                             f"({self.max_connections - 1}), got {self.reserved_for_members}")

    def replace(self, **changes: Any) -> ConnectionLimits:
        """Return a copy with ``changes`` (field names), checked like a new one.

        Raises:
            TypeError: a name is not a field of :class:`ConnectionLimits`.
            ValueError: a value is out of range.
        """
        if not changes:
            return self
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown connection limit(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @property
    def preauth_frame(self) -> int:
        """The frame limit of an untrusted connection (``preauth_max_frame_size``, at most
        ``max_frame_size``)."""
        return min(self.preauth_max_frame_size, self.max_frame_size)

    def measured_admission(self, member_check: MemberCheck | None) -> Admission:
        """The admission counts of a transport that measures what each untrusted connection
        holds buffered (the socket transport)."""
        return Admission(
            max_connections=self.max_connections, max_per_source=self.max_connections_per_source,
            reserved_for_members=self.reserved_for_members,
            max_untrusted_per_source=self.max_untrusted_per_source,
            preauth_bytes=self.preauth_buffer_limit,
            preauth_bytes_per_source=min(self.preauth_buffer_per_source, self.preauth_buffer_limit),
            is_member=member_check)

    def reserved_admission(self, member_check: MemberCheck | None) -> Admission:
        """The admission counts of a transport that reserves each untrusted connection's worst
        case, ``preauth_max_frame_size`` bytes, instead of measuring it (WebSocket)."""
        frame = self.preauth_frame
        per_source = min(self.preauth_buffer_per_source, self.preauth_buffer_limit)
        return Admission(
            max_connections=self.max_connections, max_per_source=self.max_connections_per_source,
            reserved_for_members=self.reserved_for_members,
            max_untrusted=max(1, self.preauth_buffer_limit // frame),
            max_untrusted_per_source=min(self.max_untrusted_per_source, max(1, per_source // frame)),
            is_member=member_check)

    def dial_budget(self, member_check: MemberCheck | None) -> DialBudget:
        """The budgets of dialed connections (members' hosts and others apart)."""
        return DialBudget(
            max_members=self.max_member_dials, max_per_member_host=self.max_member_dials_per_host,
            max_others=self.max_other_dials, max_per_other_host=self.max_other_dials_per_host,
            is_member=member_check)


STREAM_FRAME_OVERHEAD = 1024
"""Bytes a stream frame may carry beyond ``stream_max_packet_size`` (its header and seal)."""


def limits_from_config(config: Any) -> ConnectionLimits:
    """Return the :class:`ConnectionLimits` a :class:`gossip.Config` asks for.

    ``config`` is a :class:`gossip.Config` (validated) or any object with its fields:
    ``tcp_max_packet_size``, ``stream_max_packet_size``, ``tcp_dial_timeout``, ``tcp_deadline``,
    ``idle_timeout``, ``connection_buffer_size``, ``tcp_max_connections``,
    ``tcp_max_connections_per_source``, ``reserved_member_connections``,
    ``tcp_preauth_max_frame_size``, ``tcp_preauth_buffer_limit``,
    ``tcp_preauth_buffer_per_source``, ``preauth_timeout``, ``tcp_frame_timeout``,
    ``max_rejected_frames``, ``max_untrusted_connections_per_source``, ``max_member_dials``,
    ``max_member_dials_per_host``, ``max_other_dials``, ``max_other_dials_per_host``.
    """
    return ConnectionLimits(
        max_frame_size=config.tcp_max_packet_size,
        max_stream_frame_size=config.stream_max_packet_size + STREAM_FRAME_OVERHEAD,
        dial_timeout=config.tcp_dial_timeout,
        io_timeout=config.tcp_deadline,
        idle_timeout=config.idle_timeout,
        conn_buffer_size=config.connection_buffer_size,
        max_connections=config.tcp_max_connections,
        max_connections_per_source=config.tcp_max_connections_per_source,
        reserved_for_members=config.reserved_member_connections,
        preauth_max_frame_size=config.tcp_preauth_max_frame_size,
        preauth_buffer_limit=config.tcp_preauth_buffer_limit,
        preauth_buffer_per_source=config.tcp_preauth_buffer_per_source,
        preauth_timeout=config.preauth_timeout,
        frame_timeout=config.tcp_frame_timeout,
        max_rejected_frames=config.max_rejected_frames,
        max_untrusted_per_source=config.max_untrusted_connections_per_source,
        max_member_dials=config.max_member_dials,
        max_member_dials_per_host=config.max_member_dials_per_host,
        max_other_dials=config.max_other_dials,
        max_other_dials_per_host=config.max_other_dials_per_host,
    )
