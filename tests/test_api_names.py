"""The public API's names: one Pythonic name per thing, Go-style aliases that agree, error
classes that say whose fault it is."""

from __future__ import annotations

import pytest

import gossip
from gossip import LocalProtocolError, MessageTooLarge, Node, NodeID, NodeIDError, NodeState
from gossip.errors import RemoteProtocolError
from gossip.metadata import MetadataReader
from gossip.transports.memory import MemoryNetwork


@pytest.mark.parametrize("state", list(NodeState))
def test_node_properties_and_their_go_aliases_agree(state: NodeState) -> None:
    node = Node(NodeID.generate(), "10.0.0.1:7946", state, 3, MetadataReader({}, 5))
    assert node.is_alive == node.alive() == (state is NodeState.ALIVE)
    assert node.is_suspect == node.suspect() == (state is NodeState.SUSPECT)
    assert node.is_dead_or_left == node.dead_or_left() == (state in (NodeState.DEAD,
                                                                      NodeState.LEAVING))
    assert node.get_state() is node.state and node.get_advertised_address() == node.address
    assert node.metadata.get_timestamp() == node.metadata.timestamp == 5


def test_a_malformed_node_id_is_a_node_id_error() -> None:
    for bad in ("not-a-uuid", b"short", "", "1234"):
        with pytest.raises(NodeIDError):
            NodeID.parse(bad)
    assert issubclass(NodeIDError, ValueError) and not issubclass(NodeIDError, gossip.AddressError)
    with pytest.raises(NodeIDError):
        gossip.Cluster(gossip.Config.local(transport=MemoryNetwork().new_transport())).get_node("x")


def test_sending_too_much_is_the_callers_fault() -> None:
    assert issubclass(MessageTooLarge, LocalProtocolError)
    assert not issubclass(MessageTooLarge, RemoteProtocolError)
    net = MemoryNetwork()
    t = net.new_transport()
    t.start(lambda batch: None)
    try:
        with pytest.raises(MessageTooLarge):
            t.send("mem-9:7946", bytes(5000))  # a datagram over the limit
    finally:
        t.close()


def test_retired_message_type_numbers_stay_retired() -> None:
    assert 10 not in {int(t) for t in gossip.MessageType}
    assert int(gossip.MessageType.STREAM_OPEN_ACK) == 11
