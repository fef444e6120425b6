"""Clusters sealed with XChaCha20-Poly1305 and compressed with Snappy, end to end on the
in-memory transport: they converge, exchange messages, metadata and streams, rotate keys, and
refuse a Snappy payload past the size limit.

These need the optional extras (PyNaCl, cramjam), which the ``test`` extra installs; without
them the tests are skipped, saying so. Waits are bounded polls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, Node, NodeState, Packet, Stream
from gossip.compression import SnappyCompressor, snappy_available
from gossip.packet import PacketCodec
from gossip.security import XCHACHA20_POLY1305, Keyring, cipher_available
from gossip.testing import wait_until
from gossip.transports.memory import MemoryNetwork

needs_nacl = pytest.mark.skipif(
    not cipher_available(XCHACHA20_POLY1305),
    reason="PyNaCl is not installed (the xchacha extra: pip install 'gossip-cluster[xchacha]')")
needs_snappy = pytest.mark.skipif(
    not snappy_available(),
    reason="cramjam is not installed (the snappy extra: pip install 'gossip-cluster[snappy]')")

K1, K2 = os.urandom(32), os.urandom(32)
T = 300


def _start(net: MemoryNetwork, n: int, **kw: Any) -> list[Cluster]:
    clusters = []
    for _ in range(n):
        c = Cluster(Config.local(transport=net.new_transport(), state_sync_interval=2.0, **kw))
        c.start()
        clusters.append(c)
    for c in clusters[1:]:
        assert c.join(clusters[0].address, timeout=5.0) == 1
    ids = [c.local_node().id for c in clusters]
    wait_until(lambda: all((node := c.get_node(i)) is not None and node.state is NodeState.ALIVE
                           for c in clusters for i in ids), what=f"{n} nodes to converge")
    return clusters


@pytest.fixture
def xchacha3() -> Iterator[list[Cluster]]:
    clusters = _start(MemoryNetwork(seed=29), 3, cipher=XCHACHA20_POLY1305, encryption_key=K1)
    yield clusters
    for c in clusters:
        c.stop(timeout=2.0)


def _echo(sender: Node, packet: Packet, stream: Stream) -> None:
    while True:
        try:
            msg = stream.read_msg(400)
        except EOFError:
            return
        stream.write_msg(401, msg[::-1])


@needs_nacl
def test_three_xchacha_nodes_exchange_messages_metadata_and_a_stream(xchacha3: list[Cluster]) -> None:
    a, b, c = xchacha3
    assert a.keyring is not None and a.keyring.cipher == XCHACHA20_POLY1305
    got: dict[str, list[Any]] = {"b": [], "c": []}
    b.handle_func(gossip.USER_MSG, lambda s, p: got["b"].append((p.unmarshal(), p.encrypted)))
    c.handle_func(gossip.USER_MSG, lambda s, p: got["c"].append((p.unmarshal(), p.encrypted)))
    a.send(gossip.USER_MSG, {"hello": "xchacha"})
    a.send_reliable(gossip.USER_MSG, "x" * 5000)     # a frame, compressed and sealed
    wait_until(lambda: len(got["b"]) == 2 and len(got["c"]) == 2, what="both messages everywhere")
    assert sorted(map(str, got["b"])) == sorted(map(str, [({"hello": "xchacha"}, True), ("x" * 5000, True)]))
    # Metadata travels.
    a.local_metadata().set_string("cipher", "xchacha")
    a.update_metadata()
    me = a.local_node().id
    wait_until(lambda: all((n := x.get_node(me)) is not None and n.metadata.get_string("cipher") == "xchacha"
                           for x in (b, c)), what="the metadata on every node")
    # A stream, sealed with XChaCha20-Poly1305 (its frames under its own derived keys).
    c.handle_stream_func(T, _echo)
    with a.open_stream(c.local_node(), T) as s:
        assert s.encrypted
        s.write_msg(400, "over a stream")
        s.write_msg(400, "y" * 100_000)
        assert s.read_msg(401) == "maerts a revo"
        assert s.read_msg(401) == "y" * 100_000
        s.close_write()
    stats = [x.stats() for x in xchacha3]
    assert not any(k.startswith("bad_packets.") for st in stats for k in st), stats


@needs_nacl
def test_the_keyring_rotates_under_xchacha_in_a_cluster(xchacha3: list[Cluster]) -> None:
    a, b, c = xchacha3
    got: list[str] = []
    c.handle_func_no_forward(gossip.USER_MSG, lambda s, p: got.append(p.unmarshal()))
    c.handle_stream_func(T, _echo)
    with a.open_stream(c.local_node(), T) as s:
        s.write_msg(400, "before")
        assert s.read_msg(401) == "erofeb"
        for step in ("add_key", "use_key"):       # install everywhere, then seal with it
            for x in xchacha3:
                assert x.keyring is not None
                getattr(x.keyring, step)(K2)
        for x in xchacha3:
            assert x.keyring is not None
            x.keyring.remove_key(K1)
        s.write_msg(400, "after")                # the open stream keeps its own keys
        assert s.read_msg(401) == "retfa"
        s.close_write()
    a.send_to_reliable(c.local_node(), gossip.USER_MSG, "sealed with the new key")
    wait_until(lambda: got == ["sealed with the new key"], what="the message under the new key")
    assert a.keyring is not None and a.keyring.keys == (K2,) and a.keyring.seal_count(K2) > 0
    with a.open_stream(c.local_node(), T) as s2:    # a new stream derives from the new key
        s2.write_msg(400, "new")
        assert s2.read_msg(401) == "wen"
        s2.close_write()
    # A node still holding only the old key is shut out.
    outsider = PacketCodec(keyring=Keyring([K1], cipher=XCHACHA20_POLY1305))
    with pytest.raises(gossip.AuthenticationError):
        outsider.decode(PacketCodec(keyring=c.keyring).encode(gossip.USER_MSG, bytes(16), 1, 1, "x"))


@needs_snappy
def test_snappy_round_trips_in_a_cluster_and_a_payload_past_the_limit_is_refused() -> None:
    net = MemoryNetwork(seed=7)
    limit = 256 * 1024
    snappy_a, snappy_b = _start(net, 2, compressor="snappy", compress_min_size=64,
                                   tcp_max_packet_size=limit, encryption_key=K1)
    lz4 = _start(net, 1, compressor="lz4", compress_min_size=64, encryption_key=K1,
                   tcp_max_packet_size=limit)[0]
    clusters = [snappy_a, snappy_b, lz4]
    try:
        assert lz4.join(snappy_a.address, timeout=5.0) == 1
        got: list[tuple[str, Any, bool]] = []
        for name, x in (("snappy", snappy_b), ("lz4", lz4), ("back", snappy_a)):
            x.handle_func_no_forward(gossip.USER_MSG, lambda s, p, name=name: got.append(
                (name, p.unmarshal(), p.compressed)))
        text = "snappy block format, as the Go library writes it. " * 2000   # ~100 KB
        snappy_a.send_to_reliable(snappy_b.local_node(), gossip.USER_MSG, text)
        snappy_a.send_to_reliable(lz4.local_node(), gossip.USER_MSG, text)  # an lz4 node reads it
        lz4.send_to_reliable(snappy_a.local_node(), gossip.USER_MSG, text)  # and the other way
        wait_until(lambda: len(got) == 3, what="the three compressed messages")
        assert sorted(got) == [("back", text, True), ("lz4", text, True), ("snappy", text, True)]
        # A stream between them: Snappy frames one way, lz4 frames the other.
        lz4.handle_stream_func(T, _echo)
        with snappy_a.open_stream(lz4.local_node(), T) as s:
            assert s.compression
            s.write_msg(400, text)
            assert s.read_msg(401) == text[::-1]
            s.close_write()

        # A sender that lies: a Snappy block that expands past tcp_max_packet_size, in a packet
        # well under it. The receiver refuses it from the size the block claims.
        bomb = SnappyCompressor().compress(bytes(limit + 1))

        class Bomb:
            name = "snappy"

            def compress(self, data: bytes) -> bytes:
                return bomb

            def decompress(self, data: bytes, max_size: int) -> bytes:  # pragma: no cover
                raise AssertionError("never called")

        liar = PacketCodec(keyring=Keyring([K1]), compressor=Bomb(), compress_min_size=64,
                           max_packet_size=limit)
        raw = net.new_transport()
        raw.start(lambda batch: None)
        try:
            before = snappy_b.stats().get("bad_packets.PacketTooLarge", 0)
            packet = liar.encode_raw(gossip.USER_MSG, snappy_a.local_node().id.bytes, 99, 1,
                                     os.urandom(len(bomb) + 100))
            assert len(packet) < limit
            raw.send(snappy_b.address, packet, reliable=True)
            wait_until(lambda: snappy_b.stats().get("bad_packets.PacketTooLarge", 0) > before,
                       what="the bomb refused and counted")
        finally:
            raw.close()
        assert len(got) == 3   # it never reached the handler
    finally:
        for c in clusters:
            c.stop(timeout=2.0)
