"""The one exception hierarchy of :mod:`gossip`.

Every error the library raises derives from :class:`GossipError`, so a user can catch one base
class. Where a builtin base makes generic handlers keep working, it is added too
(``ConfigError`` is a ``ValueError``, ``GossipTimeout`` a ``TimeoutError``...). Messages say what
was wrong and with which value.

::

    GossipError
    ├── ConfigError (ValueError)             a Config field out of range or contradictory
    ├── AddressError (ValueError)            an address string that cannot be parsed
    ├── NodeIDError (ValueError)             a string or bytes that is not a node id (UUID)
    ├── NodeAliveError (ValueError)          forget_node named a live member (or this node)
    ├── MetadataError (ValueError)           bad metadata key/value, or metadata too large
    ├── ProtocolError
    │   ├── LocalProtocolError               the caller misused the API (bad message type, ...)
    │   │   ├── HandlerExistsError           a message type registered twice
    │   │   └── MessageTooLarge              a packet we were asked to send is over a limit
    │   └── RemoteProtocolError              a peer sent something we refuse
    │       ├── DecodeError                  malformed bytes: truncated, bad header, bad codec...
    │       │   ├── VersionMismatch          wrong magic or wire version
    │       │   ├── PacketTooLarge           over a size limit
    │       │   └── CompressionError         a compressed payload that does not decompress
    │       ├── EncryptionError              not authentic: wrong key, wrong label, tampered
    │       │   ├── AuthenticationError      (alias kept for the names in STYLE.md)
    │       │   ├── LabelMismatch            packet of another cluster
    │       │   └── CipherMismatch           packet sealed with another cipher
    │       └── ReplayedPacket               an authentic packet outside its time window, or seen
    ├── JoinError                            no peer could be joined (names them and why)
    ├── RemoteHandlerError                   a peer's reply handler raised (carries its message)
    ├── StreamRefused                        a peer refused to open a stream (says why)
    ├── NotFoundError (LookupError)          an unknown node id, handler id or message type
    ├── TransportError (OSError)             the network failed us
    │   ├── ConnectError
    │   ├── SendError
    │   └── NodeUnavailable                  a best-effort send to a node known dead or left
    ├── GossipTimeout (TimeoutError)         an operation ran out of time
    │   └── SendQueueFull                    a send found no room within its timeout
    └── ClusterClosed (RuntimeError)         the cluster is stopped (or not started)

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

__all__ = [
    "GossipError",
    "ConfigError",
    "AddressError",
    "MetadataError",
    "ProtocolError",
    "LocalProtocolError",
    "HandlerExistsError",
    "MessageTooLarge",
    "NodeIDError",
    "NodeAliveError",
    "RemoteProtocolError",
    "DecodeError",
    "VersionMismatch",
    "PacketTooLarge",
    "CompressionError",
    "EncryptionError",
    "AuthenticationError",
    "LabelMismatch",
    "CipherMismatch",
    "ReplayedPacket",
    "JoinError",
    "NotFoundError",
    "TransportError",
    "ConnectError",
    "SendError",
    "NodeUnavailable",
    "GossipTimeout",
    "SendQueueFull",
    "RemoteHandlerError",
    "StreamRefused",
    "ClusterClosed",
]


class GossipError(Exception):
    """Base class of every error raised by the gossip library."""


class ConfigError(GossipError, ValueError):
    """A configuration value is out of range or contradicts another one.

    Attributes:
        field: the name of the offending :class:`gossip.Config` field (``""`` if none).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class AddressError(GossipError, ValueError):
    """An address string could not be parsed."""


class MetadataError(GossipError, ValueError):
    """Metadata was given a bad key or value, or grew over its size limit."""


class ProtocolError(GossipError):
    """Something broke the gossip protocol; see the two subclasses for whose fault."""


class LocalProtocolError(ProtocolError):
    """The caller misused the API (for example registered an internal message type)."""


class HandlerExistsError(LocalProtocolError):
    """A handler is already registered for this message type."""



class MessageTooLarge(LocalProtocolError):
    """A packet this node was asked to send is over a size limit (a datagram over
    ``udp_max_packet_size``, a frame over ``tcp_max_packet_size``...). The caller's doing; a
    peer's oversized packet is a :class:`PacketTooLarge` instead."""


class NodeIDError(GossipError, ValueError):
    """A string or bytes value that is not a node id (a UUID, or 16 bytes)."""

class NodeAliveError(GossipError, ValueError):
    """:meth:`gossip.Cluster.forget_node` named a member held alive or suspect, or this node:
    only a dead or left member can be forgotten."""


class RemoteProtocolError(ProtocolError):
    """A peer sent bytes or a message we refuse."""


class DecodeError(RemoteProtocolError):
    """Bytes could not be decoded: truncated, malformed header, unknown codec or type."""


class VersionMismatch(DecodeError):
    """A packet carries the wrong magic number or an unsupported wire version."""


class PacketTooLarge(DecodeError):
    """A packet or payload exceeds a configured or protocol size limit."""


class CompressionError(DecodeError):
    """A payload flagged as compressed could not be decompressed within the limits."""


class EncryptionError(RemoteProtocolError):
    """A packet is not authentic: wrong key, another cluster's label, or tampered bytes."""


class AuthenticationError(EncryptionError):
    """A packet failed authentication with every installed key."""


class LabelMismatch(EncryptionError):
    """A packet belongs to a cluster with a different label."""


class CipherMismatch(EncryptionError):
    """A packet is sealed with another cipher than this node's (``Config.cipher``: AES-GCM on
    one side, XChaCha20-Poly1305 on the other); the message names both."""


class ReplayedPacket(RemoteProtocolError):
    """A protocol packet was refused as a replay.

    Attributes:
        reason: ``"stale"`` (its stamp is older than the replay window), ``"future"`` (newer
            than it), or ``"duplicate"`` (already seen inside it).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class JoinError(GossipError):
    """Joining failed for every peer.

    Attributes:
        failures: mapping of each peer string to the reason it could not be joined.
    """

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{peer}: {why}" for peer, why in self.failures.items())
        super().__init__(f"could not join any peer ({detail})" if detail else "no peers given")


class NotFoundError(GossipError, LookupError):
    """An unknown node id, handler id or message type was named."""


class TransportError(GossipError, OSError):
    """The network failed: a socket error, a refused connection, a closed peer."""


class ConnectError(TransportError):
    """A connection to a peer could not be established."""


class SendError(TransportError):
    """Bytes could not be sent to a peer."""


class NodeUnavailable(TransportError):
    """A best-effort send named a node this node already knows is dead or has left: nothing
    was sent to it.

    Raised under ``best_effort_full_policy="raise"``; under ``"drop"`` the send is counted
    instead (``dropped.node_dead`` or ``dropped.node_left`` in :meth:`gossip.Cluster.stats`).
    Reliable sends still try the node, and raise :class:`ConnectError` if it cannot be reached.

    Attributes:
        node_id: the node's id, as text.
        state: ``"dead"`` or ``"left"``.
    """

    def __init__(self, message: str, node_id: str = "", state: str = "") -> None:
        self.node_id = node_id
        self.state = state
        super().__init__(message)


class GossipTimeout(GossipError, TimeoutError):
    """An operation did not finish within its timeout."""


class SendQueueFull(GossipTimeout):
    """A send found no room in its queue or connection buffer within its timeout.

    Nothing of the message was queued: the caller still owns it and may retry. A timeout of 0
    (and the ``"raise"`` policy for best-effort sends) raises at once when the queue is full.
    """


class RemoteHandlerError(GossipError):
    """The peer's reply handler raised, or the peer has no reply handler for the type.

    Attributes:
        remote_message: the peer's description of the failure (exception type and text).
        msg_type: the request's message type.
    """

    def __init__(self, message: str, remote_message: str = "", msg_type: int = 0) -> None:
        self.remote_message = remote_message
        self.msg_type = msg_type
        super().__init__(message)


class StreamRefused(GossipError):
    """A peer refused to open a stream: no handler for the type, or its stream pool is full.

    Attributes:
        reason: the peer's reason.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message)


class ClusterClosed(GossipError, RuntimeError):
    """The cluster is stopped (or was never started) and cannot do this."""
