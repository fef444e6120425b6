"""gossip: cluster membership, failure detection and messaging for Python processes.

Start here::

    import gossip

    with gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as cluster:
        cluster.join("127.0.0.1:7946")
        alive = [node.address for node in cluster.alive_nodes()]

The public API is what this module exports in ``__all__``: the :class:`Cluster` facade, its
:class:`Config`, node snapshots (:class:`Node`, :class:`NodeID`, :class:`NodeState`), metadata,
the received :class:`Packet`, node-to-node streams (:class:`Stream`), handler ids,
message-type constants, :class:`TransportType`, the :class:`Keyring`, node groups (:class:`NodeGroup`,
:class:`DataNodeGroup`) and the whole :class:`GossipError` tree. Leader election is in
:mod:`gossip.leader`, the pytest plugin in :mod:`gossip.testing`. User message types start
at :data:`USER_MSG` (128); 64..127 are reserved for add-on packages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import import_dataclasses, lazy_getattr

import_dataclasses()  # before any module of the library imports dataclasses (see _lazy)

from .address import EMPTY_ADDRESS, Address
from .cluster import Cluster, MessageHandlerFunc, ReplyHandlerFunc, StreamHandlerFunc
from .config import Config, default_config
from .engine import ClusterEventHandler, GossipHandler, MetadataHandler, StateHandler
from .errors import (
    AddressError,
    AuthenticationError,
    CipherMismatch,
    ClusterClosed,
    CompressionError,
    ConfigError,
    ConnectError,
    DecodeError,
    EncryptionError,
    GossipError,
    GossipTimeout,
    HandlerExistsError,
    JoinError,
    LabelMismatch,
    LocalProtocolError,
    MessageTooLarge,
    MetadataError,
    NodeAliveError,
    NodeIDError,
    NodeUnavailable,
    NotFoundError,
    PacketTooLarge,
    ProtocolError,
    RemoteHandlerError,
    RemoteProtocolError,
    ReplayedPacket,
    SendError,
    SendQueueFull,
    StreamRefused,
    TransportError,
    VersionMismatch,
)
from .handlers import EventHandlers, HandlerID
from ._version import __version__
from .hlc import HLC
from .joining import JoinAttemptFailed, JoinOutcome, JoinStatus, JoinSucceeded
from .metadata import Metadata, MetadataReader
from .node import EMPTY_NODE_ID, PROTOCOL_VERSION, Node, NodeID, NodeState
from .packet import Packet
from .protocol.actions import MemberRefused
from .protocol.flap import MemberFlapping
from .protocol.partition import PartitionHealed, PartitionSuspected
from .protocol.provenance import Confirmation, Explanation, SuspicionEpisode
from .protocol.rtt import ProbeRtt
from .security import Keyring
from .wire import RESERVED_MSGS_START, USER_MSG, MessageType, TransportType

if TYPE_CHECKING:
    from . import aio, dashboard, httpapi, leader, metrics, sim, testing
    from .groups import METADATA_ANY_VALUE, METADATA_CONTAINS_PREFIX, DataNodeGroup, NodeGroup
    from .streams import Stream

# Loaded on first use (PEP 562): a node that never streams or groups nodes does not pay for
# those modules' code.
_LAZY = {
    "Stream": ".streams",
    "NodeGroup": ".groups",
    "DataNodeGroup": ".groups",
    "METADATA_ANY_VALUE": ".groups",
    "METADATA_CONTAINS_PREFIX": ".groups",
}

_SUBMODULES = ("httpapi", "dashboard", "metrics", "leader", "testing", "sim", "aio")
"""Modules reachable as attributes after a bare ``import gossip`` (imported on first use)."""

__getattr__ = lazy_getattr(__name__, _LAZY, _SUBMODULES)


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "Cluster",
    "JoinOutcome",
    "JoinStatus",
    "JoinSucceeded",
    "JoinAttemptFailed",
    "Config",
    "default_config",
    "Node",
    "Address",
    "EMPTY_ADDRESS",
    "NodeID",
    "EMPTY_NODE_ID",
    "NodeState",
    "PROTOCOL_VERSION",
    "Metadata",
    "MetadataReader",
    "HLC",
    "Packet",
    "ProbeRtt",
    "Explanation",
    "SuspicionEpisode",
    "Confirmation",
    "MemberFlapping",
    "MemberRefused",
    "PartitionSuspected",
    "PartitionHealed",
    "ClusterEventHandler",
    "Keyring",
    "NodeGroup",
    "DataNodeGroup",
    "METADATA_ANY_VALUE",
    "METADATA_CONTAINS_PREFIX",
    "MessageType",
    "TransportType",
    "USER_MSG",
    "RESERVED_MSGS_START",
    "HandlerID",
    "EventHandlers",
    "MessageHandlerFunc",
    "ReplyHandlerFunc",
    "StreamHandlerFunc",
    "Stream",
    "StateHandler",
    "MetadataHandler",
    "GossipHandler",
    "GossipError",
    "ConfigError",
    "AddressError",
    "MetadataError",
    "ProtocolError",
    "LocalProtocolError",
    "MessageTooLarge",
    "NodeIDError",
    "NodeAliveError",
    "HandlerExistsError",
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
    "SendQueueFull",
    "RemoteHandlerError",
    "StreamRefused",
    "GossipTimeout",
    "ClusterClosed",
    "__version__",
]
