"""Handler registries: :class:`EventHandlers` (copy-on-write lists of callbacks) and
:class:`MessageHandlers` (one handler per user message type).

``EventHandlers`` is paularlott/gossip's ``EventHandlers[T]``: :meth:`EventHandlers.add`
returns a :class:`HandlerID`, :meth:`EventHandlers.remove` takes it back, and iteration reads an
immutable snapshot without taking a lock, so a handler may add or remove handlers while it is
being called.

This module imports only :mod:`gossip.errors` and :mod:`gossip.wire`; it never calls a handler
(the engine does, outside every lock), except :func:`check_app_version`, which the engine calls
outside its core lock on the core's behalf.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NewType, TypeVar

from .errors import HandlerExistsError, LocalProtocolError
from .wire import MAX_MSG_TYPE, RESERVED_MSGS_START

__all__ = [
    "HandlerID",
    "EventHandlers",
    "MessageHandler",
    "MessageHandlers",
    "HANDLER_FORWARD",
    "HANDLER_NO_FORWARD",
    "HANDLER_REPLY",
    "HANDLER_STREAM",
    "check_user_type",
    "check_app_version",
]

HandlerID = NewType("HandlerID", int)
"""Identifies one registered event handler; pass it to the matching ``remove_*`` method."""

T = TypeVar("T")

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _next_id() -> HandlerID:
    with _ids_lock:
        return HandlerID(next(_ids))


class EventHandlers(Generic[T]):
    """A copy-on-write list of handlers of type ``T``.

    Adding and removing take a small lock and replace the tuple; iterating never locks and sees
    the handlers registered when it started.

    Args:
        on_change: called with the number of handlers after each add or remove, under the lock
            (so calls come in the order of the changes); it must be quick and never call back
            into this registry. The engine uses it to wake a thread that sleeps while there is
            no handler to call.
    """

    __slots__ = ("_lock", "_handlers", "_on_change")

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._handlers: tuple[tuple[HandlerID, T], ...] = ()
        self._on_change = on_change

    def add(self, handler: T) -> HandlerID:
        """Register ``handler`` and return its id (ids are unique process-wide)."""
        hid = _next_id()
        with self._lock:
            self._handlers = self._handlers + ((hid, handler),)
            if self._on_change is not None:
                self._on_change(len(self._handlers))
        return hid

    def remove(self, handler_id: HandlerID) -> bool:
        """Remove the handler registered under ``handler_id``; return False if there was none."""
        with self._lock:
            kept = tuple(h for h in self._handlers if h[0] != handler_id)
            if len(kept) == len(self._handlers):
                return False
            self._handlers = kept
            if self._on_change is not None:
                self._on_change(len(kept))
            return True

    def handlers(self) -> tuple[T, ...]:
        """Return a snapshot of the registered handlers, oldest first."""
        return tuple(h for _, h in self._handlers)

    def __iter__(self) -> Iterator[T]:
        return iter(self.handlers())

    def __len__(self) -> int:
        return len(self._handlers)

    def __bool__(self) -> bool:
        return bool(self._handlers)


HANDLER_FORWARD = "forward"
"""Handler kind of :meth:`gossip.Cluster.handle_func`: delivered and relayed on while ttl lasts."""
HANDLER_NO_FORWARD = "no_forward"
"""Handler kind of :meth:`gossip.Cluster.handle_func_no_forward`: delivered only."""
HANDLER_REPLY = "reply"
"""Handler kind of :meth:`gossip.Cluster.handle_func_with_reply`: its return value is the reply."""
HANDLER_STREAM = "stream"
"""Handler kind of :meth:`gossip.Cluster.handle_stream_func`: runs for accepted streams only
(a packet of this type is treated as having no handler)."""


@dataclass(frozen=True, slots=True)
class MessageHandler:
    """One registered user-message handler: its ``kind`` (forward, no_forward, reply, stream)
    and ``fn``."""

    msg_type: int
    kind: str
    fn: Callable[..., Any]

    @property
    def forwards(self) -> bool:
        """True if messages of this type are relayed on (epidemic broadcast)."""
        return self.kind == HANDLER_FORWARD


def check_user_type(msg_type: int) -> int:
    """Return ``msg_type`` if applications may use it, else raise.

    Types 0..63 belong to the protocol. Types 64..127 are for add-on packages (leader election,
    groups, ...), and applications use :data:`gossip.wire.USER_MSG` (128) and above.

    Raises:
        LocalProtocolError: ``msg_type`` is not an int in 64..65535.
    """
    if isinstance(msg_type, bool) or not isinstance(msg_type, int):
        raise LocalProtocolError(f"message type must be an int, got {msg_type!r}")
    if not RESERVED_MSGS_START <= msg_type <= MAX_MSG_TYPE:
        raise LocalProtocolError(
            f"message type {msg_type} is internal to gossip: user types are "
            f"{RESERVED_MSGS_START}..{MAX_MSG_TYPE} (applications use 128 and above)"
        )
    return msg_type


class MessageHandlers:
    """The table of user-message handlers, one per type; thread-safe, lock-free lookups."""

    __slots__ = ("_lock", "_table")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[int, MessageHandler] = {}

    def register(self, msg_type: int, kind: str, fn: Callable[..., Any]) -> None:
        """Register ``fn`` for ``msg_type``.

        Raises:
            LocalProtocolError: ``msg_type`` is internal, or ``fn`` is not callable.
            HandlerExistsError: a handler is already registered for ``msg_type``.
        """
        check_user_type(msg_type)
        if not callable(fn):
            raise LocalProtocolError(f"handler for message type {msg_type} is not callable: {fn!r}")
        with self._lock:
            if msg_type in self._table:
                raise HandlerExistsError(f"a handler is already registered for message type {msg_type}")
            table = dict(self._table)
            table[msg_type] = MessageHandler(msg_type, kind, fn)
            self._table = table

    def unregister(self, msg_type: int) -> bool:
        """Remove the handler of ``msg_type``; return False if there was none."""
        with self._lock:
            if msg_type not in self._table:
                return False
            table = dict(self._table)
            del table[msg_type]
            self._table = table
            return True

    def get(self, msg_type: int) -> MessageHandler | None:
        """Return the handler registered for ``msg_type``, or None."""
        return self._table.get(msg_type)

    def __len__(self) -> int:
        return len(self._table)


_log = logging.getLogger("gossip.handlers")


def check_app_version(check: Callable[[str], bool] | None, version: str) -> bool | None:
    """Run the user's application version check on a joiner's ``version``.

    Call it with no lock held; pass the result to ``Protocol.receive(...,
    app_version_ok=...)``, the core never calls user code itself.

    Returns:
        None when there is no check; otherwise the check's verdict, False if it raised (the
        exception is logged).
    """
    if check is None:
        return None
    try:
        return bool(check(version))
    except Exception:
        _log.exception("application_version_check raised on %r: refusing the join", version)
        return False
