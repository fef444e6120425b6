"""Serf on memberlist's wire (``Config.serf = True``): tags, intents and user events.

Serf rides on memberlist: its own messages are memberlist user messages whose first byte is
Serf's message type, then a msgpack map (Go field names, raw strings). This module speaks:

* the *join intent* (type 1) and the *leave intent* (type 0), stamped with Serf's Lamport
  clock: Serf shows a member that sent its leave intent before it left as ``left``, one
  that vanished without it as ``failed``. A node sends its join intent to each member it meets
  and its leave intents to every live member before its graceful leave;
* *user events* (type 3) both ways: ``fn(name, payload)`` for each event received (once per
  Lamport time, name and payload), and :meth:`Serf.event` to send one to every live member
  (Serf agents pass it on).

Tags travel in ``Meta`` (``0xFF`` then a msgpack map of strings: :mod:`.identity`). Serf's
queries are not answered (a later version may); other Serf messages are ignored.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import LocalProtocolError
from ..node import Node, NodeState

__all__ = ["Serf", "LamportClock", "LEAVE", "JOIN", "USER_EVENT", "encode_join", "encode_leave",
           "encode_event", "decode"]

logger = logging.getLogger("gossip.memberlist.serf")

LEAVE = 0
JOIN = 1
USER_EVENT = 3
_MAX_SEEN = 4096
_MAX_EVENT = 9 * 1024  # Serf's UserEventSizeLimit default: name + payload


class LamportClock:
    """Serf's Lamport clock: :meth:`increment` for a new stamp, :meth:`witness` for one seen."""

    def __init__(self) -> None:
        self._t = 0
        self._lock = threading.Lock()

    def time(self) -> int:
        """The current time."""
        return self._t

    def increment(self) -> int:
        """Advance and return the new time."""
        with self._lock:
            self._t += 1
            return self._t

    def witness(self, t: int) -> None:
        """Move past a time seen in a message."""
        with self._lock:
            if t >= self._t:
                self._t = t + 1


def _pack(kind: int, body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(dict(sorted(body.items())), use_bin_type=False)
    return bytes((kind,)) + packed


def encode_join(ltime: int, name: str) -> bytes:
    """Serf's ``messageJoin``."""
    return _pack(JOIN, {"LTime": ltime, "Node": name})


def encode_leave(ltime: int, name: str) -> bytes:
    """Serf's ``messageLeave``."""
    return _pack(LEAVE, {"LTime": ltime, "Node": name})


def encode_event(ltime: int, name: str, payload: bytes) -> bytes:
    """Serf's ``messageUserEvent`` (not coalesced)."""
    return _pack(USER_EVENT, {"CC": False, "LTime": ltime, "Name": name, "Payload": payload})


def decode(data: bytes) -> tuple[int, dict[str, Any]] | None:
    """Return ``(type, fields)`` of a Serf message, or None if it is not one we read."""
    if not data or data[0] not in (LEAVE, JOIN, USER_EVENT):
        return None
    try:
        value = msgpack.unpackb(data[1:], raw=True, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if type(value) is not dict:
        return None
    fields: dict[str, Any] = {}
    for k, v in value.items():
        if type(k) is bytes:
            fields[k.decode("utf-8", "replace")] = v
    ltime = fields.get("LTime")
    if type(ltime) is not int or ltime < 0:
        return None
    return data[0], fields


def _text(v: Any) -> str | None:
    if type(v) is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return v if type(v) is str else None


class Serf:
    """Serf's intents and user events for one node (see the module docstring).

    Args:
        name: this member's name.
        send: ``send(node, data)`` sends one memberlist user message reliably.
        alive_nodes: the live members (this node included).
    """

    def __init__(self, name: str, send: Callable[[Node, bytes], None],
                 alive_nodes: Callable[[], list[Node]]) -> None:
        self.name = name
        self._send = send
        self._alive = alive_nodes
        self.clock = LamportClock()
        self.event_clock = LamportClock()
        self._join_time = 0
        self._handlers: list[Callable[[str, bytes], None]] = []
        self._seen: OrderedDict[tuple[int, str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()
        self._greeted: set[bytes] = set()
        self.received = 0

    def add_handler(self, fn: Callable[[str, bytes], None]) -> None:
        """Call ``fn(name, payload)`` for each user event received."""
        self._handlers.append(fn)

    def on_message(self, data: bytes) -> None:
        """Handle a memberlist user message (a Serf message, or ignored)."""
        msg = decode(data)
        if msg is None:
            return
        kind, f = msg
        if kind != USER_EVENT:
            self.clock.witness(f["LTime"])
            return
        self.event_clock.witness(f["LTime"])
        name = _text(f.get("Name"))
        payload = f.get("Payload") or b""
        if name is None or type(payload) is not bytes:
            return
        key = (f["LTime"], name, payload)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = None
            while len(self._seen) > _MAX_SEEN:
                self._seen.popitem(last=False)
        self.received += 1
        for fn in list(self._handlers):
            try:
                fn(name, payload)
            except Exception:
                logger.exception("serf event handler raised")

    def on_state(self, node: Node, previous: NodeState) -> None:
        """A member changed state: greet a newly alive one with our join intent."""
        if node.state is not NodeState.ALIVE or node.id.bytes in self._greeted:
            return
        if len(self._greeted) >= _MAX_SEEN * 16:
            self._greeted.clear()  # bounded: a member greeted twice only hears an old intent
        self._greeted.add(node.id.bytes)
        if not self._join_time:
            self._join_time = self.clock.increment()
        self._try(node, encode_join(self._join_time, self.name))

    def leaving(self) -> None:
        """Tell every live member that we leave (before memberlist's own leave)."""
        data = encode_leave(self.clock.increment(), self.name)
        for node in self._alive():
            if node.name != self.name:
                self._try(node, data)

    def event(self, name: str, payload: bytes) -> None:
        """Send a user event to every live member.

        Raises:
            LocalProtocolError: name and payload over Serf's 9 KiB limit.
        """
        if len(name.encode("utf-8")) + len(payload) > _MAX_EVENT:
            raise LocalProtocolError(f"a Serf user event is at most {_MAX_EVENT} bytes (name + payload)")
        data = encode_event(self.event_clock.increment(), name, payload)
        for node in self._alive():
            if node.name != self.name:
                self._try(node, data)

    def _try(self, node: Node, data: bytes) -> None:
        try:
            self._send(node, data)
        except Exception as exc:  # a member that went away: not ours to raise
            logger.debug("serf message to %s failed: %s", node.name, exc)
