"""gossip: cluster membership, failure detection and messaging for Python processes.

Start here::

    import gossip

    with gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as cluster:
        cluster.join("127.0.0.1:7946")
        alive = [node.address for node in cluster.alive_nodes()]

The public API is what this module exports in ``__all__``: the :class:`Cluster` facade, its
:class:`Config`, node snapshots (:class:`Node`, :class:`NodeID`, :class:`NodeState`), metadata,
the received :class:`Packet`, handler ids, message-type constants, the :class:`Keyring` and the
whole :class:`GossipError` tree. User message types start at :data:`USER_MSG` (128); 64..127 are
reserved for add-on packages.
"""

from __future__ import annotations

from .cluster import Cluster, MessageHandlerFunc, ReplyHandlerFunc
from .config import Config, default_config
from .engine import GossipHandler, MetadataHandler, StateHandler
from .errors import (
    AddressError,
    AuthenticationError,
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
    MetadataError,
    NotFoundError,
    PacketTooLarge,
    ProtocolError,
    RemoteProtocolError,
    ReplayedPacket,
    SendError,
    TransportError,
    VersionMismatch,
)
from .handlers import EventHandlers, HandlerID
from .hlc import HLC
from .metadata import Metadata, MetadataReader
from .node import EMPTY_NODE_ID, PROTOCOL_VERSION, Node, NodeID, NodeState
from .packet import Packet
from .security import Keyring
from .wire import RESERVED_MSGS_START, USER_MSG, MessageType

__version__ = "0.1.0"
"""The library version."""

__all__ = [
    "Cluster",
    "Config",
    "default_config",
    "Node",
    "NodeID",
    "EMPTY_NODE_ID",
    "NodeState",
    "PROTOCOL_VERSION",
    "Metadata",
    "MetadataReader",
    "HLC",
    "Packet",
    "Keyring",
    "MessageType",
    "USER_MSG",
    "RESERVED_MSGS_START",
    "HandlerID",
    "EventHandlers",
    "MessageHandlerFunc",
    "ReplyHandlerFunc",
    "StateHandler",
    "MetadataHandler",
    "GossipHandler",
    "GossipError",
    "ConfigError",
    "AddressError",
    "MetadataError",
    "ProtocolError",
    "LocalProtocolError",
    "HandlerExistsError",
    "RemoteProtocolError",
    "DecodeError",
    "VersionMismatch",
    "PacketTooLarge",
    "CompressionError",
    "EncryptionError",
    "AuthenticationError",
    "LabelMismatch",
    "ReplayedPacket",
    "JoinError",
    "NotFoundError",
    "TransportError",
    "ConnectError",
    "SendError",
    "GossipTimeout",
    "ClusterClosed",
    "__version__",
]
