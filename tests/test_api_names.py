"""The public API's names: one Pythonic name per thing, Go-style aliases that agree, error
classes that say whose fault it is."""

from __future__ import annotations

import uuid

import pytest

import gossip
from gossip import LocalProtocolError, MessageTooLarge, Node, NodeID, NodeIDError, NodeState
from gossip.errors import RemoteProtocolError
from gossip.metadata import MetadataReader
from gossip.transports.memory import MemoryNetwork


@pytest.mark.parametrize("state", list(NodeState))
def test_node_properties_and_their_go_aliases_agree(state: NodeState) -> None:
    node = Node(NodeID.generate(), "127.0.10.1:7946", state, 3, MetadataReader({}, 5))
    assert node.is_alive == node.alive() == (state is NodeState.ALIVE)
    assert node.is_suspect == node.suspect() == (state is NodeState.SUSPECT)
    assert node.is_dead_or_left == node.dead_or_left() == (state in (NodeState.DEAD,
                                                                      NodeState.LEAVING))
    assert node.get_state() is node.state and node.get_advertised_address() == node.address
    assert node.metadata.get_timestamp() == node.metadata.timestamp == 5


def test_node_id_parse_takes_text_a_uuid_or_16_bytes() -> None:
    nid = NodeID.generate()
    assert NodeID.parse(nid) is nid                           # already a NodeID: as is
    plain = uuid.UUID(str(nid))
    assert type(plain) is uuid.UUID
    for form in (str(nid), plain, nid.bytes):
        parsed = NodeID.parse(form)
        assert parsed == nid and type(parsed) is NodeID
    assert NodeID.parse(bytearray(nid.bytes)) == nid      # type: ignore[arg-type]
    assert repr(nid) == f"NodeID('{nid}')" and nid.short == nid.hex[-8:]


def test_a_malformed_node_id_is_a_node_id_error() -> None:
    for bad in ("not-a-uuid", b"short", "", "1234"):
        with pytest.raises(NodeIDError):
            NodeID.parse(bad)
    assert issubclass(NodeIDError, ValueError) and not issubclass(NodeIDError, gossip.AddressError)
    with pytest.raises(NodeIDError):
        NodeID.parse(None)                                    # type: ignore[arg-type]
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


def test_cluster_config_is_read_only_and_copies_are_not() -> None:
    c = gossip.Cluster(gossip.Config.local(transport=MemoryNetwork().new_transport()))
    with pytest.raises(AttributeError, match="read-only"):
        c.config.probe_interval = 0.001  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        c.config.gossip_interval = 0.0  # type: ignore[misc]
    other = c.config.copy(gossip_interval=2.0)
    other.gossip_interval = 3.0  # an ordinary Config again
    assert type(other) is gossip.Config and c.config.gossip_interval != 3.0
    other.validate()


def test_a_compressor_object_is_accepted() -> None:
    from gossip.compression import Lz4Compressor

    class Counting(Lz4Compressor):
        calls = 0

        def compress(self, data: bytes) -> bytes:
            Counting.calls += 1
            return super().compress(data)

    net = MemoryNetwork()
    a = gossip.Cluster(gossip.Config.local(transport=net.new_transport(), compressor=Counting()))
    a._codec.encode(gossip.USER_MSG, bytes(16), 1, 1, b"z" * 1000)
    assert Counting.calls == 1


def test_before_start_queries_describe_a_lone_node_and_actions_raise() -> None:
    c = gossip.Cluster(gossip.Config.local(transport=MemoryNetwork().new_transport()))
    me = c.local_node()
    assert me.state is NodeState.UNKNOWN and [n.id for n in c.nodes()] == [me.id]
    assert c.alive_nodes() == []
    assert (c.num_nodes(), c.num_alive_nodes(), c.num_suspect_nodes(), c.num_dead_nodes()) == (1, 0, 0, 0)
    assert c.get_candidates() == [] and c.health_score() == 0 and c.address == ""
    assert c.get_node(me.id) is not None and isinstance(c.stats(), dict)
    node = Node(NodeID.generate(), "mem-1:7946", NodeState.ALIVE, 0, MetadataReader({}, 0))
    for action in (lambda: c.join("mem-1:7946"), lambda: c.leave(), lambda: c.update_metadata(),
                   lambda: c.send(gossip.USER_MSG, 1), lambda: c.send_to(node, gossip.USER_MSG, 1),
                   lambda: c.send_to_with_response(node, gossip.USER_MSG, 1),
                   lambda: c.open_stream(node, gossip.USER_MSG)):
        with pytest.raises(gossip.ClusterClosed, match="not started"):
            action()
    c.stop()  # allowed before start: the cluster is then stopped for good
    with pytest.raises(gossip.ClusterClosed):
        c.start()
