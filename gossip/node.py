"""Node identity and state: :class:`NodeID`, :class:`NodeState` and the :class:`Node` snapshot.

Pure data; imports nothing that does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from .errors import NodeIDError

if TYPE_CHECKING:
    from .metadata import MetadataReader

__all__ = ["NodeID", "EMPTY_NODE_ID", "NodeState", "Node", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
"""Version of the gossip protocol spoken by this library; peers of another version are refused."""


class NodeID(uuid.UUID):
    """A node's identity: a UUID with a short and a full string form.

    ``str(node_id)`` is the canonical lowercase form; :attr:`short` is its last 8 hex characters
    (random bits, even in time-ordered ids), enough to tell nodes apart in logs and tables.
    """

    __slots__ = ()

    @classmethod
    def generate(cls) -> NodeID:
        """Return a new time-ordered random id (UUID version 7)."""
        ms = time.time_ns() // 1_000_000
        rand = int.from_bytes(os.urandom(10), "big")
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= ((rand >> 62) & 0xFFF) << 64
        value |= 0b10 << 62
        value |= rand & ((1 << 62) - 1)
        return cls(int=value)

    @classmethod
    def parse(cls, text: str | uuid.UUID | bytes) -> NodeID:
        """Return the NodeID written as ``text`` (a UUID string, a UUID or 16 bytes).

        Raises:
            NodeIDError: ``text`` is not a UUID.
        """
        if isinstance(text, NodeID):
            return text
        if isinstance(text, uuid.UUID):
            return cls(int=text.int)
        if isinstance(text, (bytes, bytearray)):
            if len(text) != 16:
                raise NodeIDError(f"a node id is 16 bytes, got {len(text)} bytes")
            return cls(bytes=bytes(text))
        try:
            return cls(text)
        except (ValueError, TypeError, AttributeError):
            raise NodeIDError(f"not a node id (UUID): {text!r}") from None

    @property
    def short(self) -> str:
        """The last 8 hex characters (random bits even in time-ordered ids), for logs and tables."""
        return self.hex[-8:]

    def __repr__(self) -> str:
        return f"NodeID('{self}')"

    def __reduce__(self) -> Any:
        return (NodeID, (str(self),))


EMPTY_NODE_ID = NodeID(int=0)
"""The nil UUID, meaning "no node"."""


class NodeState(enum.IntEnum):
    """Lifecycle state of a member, numbered as in paularlott/gossip.

    ``UNKNOWN`` is the state before a node is first seen; ``LEFT`` is a node that left
    gracefully, named ``"left"`` everywhere (``str()``, the HTTP API, the command line, the
    metrics and the dashboard), as in memberlist. ``LEAVING`` is the same member under
    paularlott's name (``NodeLeaving``): ``NodeState.LEAVING is NodeState.LEFT``.
    """

    UNKNOWN = 0
    ALIVE = 1
    LEFT = 2
    DEAD = 3
    SUSPECT = 4
    LEAVING = 2   # paularlott's name of LEFT (an alias: the same member)

    def __str__(self) -> str:
        return self.name.lower()


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """An immutable snapshot of one member as the local node sees it.

    Attributes:
        id: the member's :class:`NodeID`.
        address: the advertised address others use to reach it (``ip:port`` or a URL).
        state: its :class:`NodeState`.
        incarnation: the member's own counter, raised by it to refute suspicion.
        metadata: read-only view of its metadata.
        protocol_version: gossip protocol version it speaks.
        application_version: the embedding application's version string.
        state_changed_at: monotonic time (seconds) of the last state change, as seen locally.
        name: the member's name: on memberlist's wire the name it goes by (``Config.name``);
            on this library's wire, which names members by id, the id's text.
        tags: its tags (``Config.tags``; see :meth:`has_tag`).
    """

    id: NodeID
    address: str
    state: NodeState
    incarnation: int
    metadata: MetadataReader
    protocol_version: int = PROTOCOL_VERSION
    application_version: str = ""
    state_changed_at: float = 0.0
    name: str = ""
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.id))

    def has_tag(self, tag: str) -> bool:
        """True if the node holds ``tag`` (it receives broadcasts sent with
        :meth:`gossip.Cluster.send_tagged` to that tag)."""
        return tag in self.tags

    @property
    def is_alive(self) -> bool:
        """True if the node is alive."""
        return self.state is NodeState.ALIVE

    @property
    def is_suspect(self) -> bool:
        """True if the node is suspected of having failed."""
        return self.state is NodeState.SUSPECT

    @property
    def is_dead_or_left(self) -> bool:
        """True if the node is dead or has left."""
        return self.state is NodeState.DEAD or self.state is NodeState.LEAVING

    # paularlott/gossip's names, kept as documented aliases (docs/getting-started.md, "Names").

    def alive(self) -> bool:
        """Go-style alias of :attr:`is_alive` (paularlott's ``Alive()``)."""
        return self.state is NodeState.ALIVE

    def suspect(self) -> bool:
        """Go-style alias of :attr:`is_suspect` (paularlott's ``Suspect()``)."""
        return self.state is NodeState.SUSPECT

    def dead_or_left(self) -> bool:
        """Go-style alias of :attr:`is_dead_or_left` (paularlott's ``DeadOrLeft()``)."""
        return self.state is NodeState.DEAD or self.state is NodeState.LEAVING

    def get_state(self) -> NodeState:
        """Go-style alias of :attr:`state` (paularlott's ``GetState()``)."""
        return self.state

    def get_advertised_address(self) -> str:
        """Go-style alias of :attr:`address` (paularlott's ``GetAdvertisedAddress()``)."""
        return self.address

    def __str__(self) -> str:
        return f"{self.id.short}@{self.address} ({self.state}, inc {self.incarnation})"
