"""Hostile peers on loopback: requests that name addresses which never answer.

Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import socket
import struct

from gossip import Cluster, Config, NodeID, NodeState
from gossip import messages
from gossip.messages import Join, JoinReply, MemberState, PushPull, PushPullReply
from gossip.node import PROTOCOL_VERSION
from gossip.transports.socket import PREAMBLE_FRAMES

from . import loopback_blackhole, scaled, wait_until


def _frames(sock: socket.socket, n: int) -> list[bytes]:
    buf = bytearray()
    out: list[bytes] = []
    sock.settimeout(scaled(5.0))
    while len(out) < n:
        while len(buf) >= 4:
            (size,) = struct.unpack_from(">I", buf)
            if len(buf) < 4 + size:
                break
            out.append(bytes(buf[4:4 + size]))
            del buf[:4 + size]
        if len(out) < n:
            chunk = sock.recv(1 << 16)
            assert chunk, f"connection closed after {len(out)} of {n} frames"
            buf += chunk
    return out


def test_requests_naming_a_dead_address_are_answered_on_their_connection() -> None:
    with loopback_blackhole() as blackhole:
        _requests_naming(blackhole)


def _requests_naming(blackhole: str) -> None:
    """Join and push/pull requests whose members sit at ``blackhole`` (nothing answers there)."""
    a = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    b = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    a.start()
    b.start()
    try:
        assert b.join(a.address, timeout=scaled(5.0)) == 1
        wait_until(lambda: a.num_alive_nodes() == 2, 10.0, "two nodes")
        codec = a._codec
        dials_before = a.stats().get("transport.tcp_dials", 0)
        host, _, port = a.address.rpartition(":")
        n = 20
        with socket.create_connection((host, int(port)), timeout=scaled(5.0)) as raw:
            raw.sendall(PREAMBLE_FRAMES)
            for i in range(n):
                fake = MemberState(NodeID.generate(), blackhole, NodeState.ALIVE, 0)
                msg = (Join(i + 1, blackhole, (fake,), PROTOCOL_VERSION) if i % 2 == 0
                       else PushPull(i + 1, blackhole, (fake,)))
                mt, value = messages.to_wire(msg)
                data = codec.encode(mt, fake.node.bytes, i + 1, 1, value)
                raw.sendall(struct.pack(">I", len(data)) + data)
            replies = [messages.from_wire(p.msg_type, p.unmarshal())
                       for p in (codec.decode(f) for f in _frames(raw, n))]
        assert [type(r) for r in replies] == [JoinReply, PushPullReply] * (n // 2)
        # Nothing was dialed to answer them, and the probe path never waited on a dial.
        assert a.stats().get("transport.tcp_dials", 0) == dials_before
        assert a.get_node(b.local_node().id).state is NodeState.ALIVE  # type: ignore[union-attr]
        assert b.get_node(a.local_node().id).state is NodeState.ALIVE  # type: ignore[union-attr]
        # The same requests as datagrams are dropped and counted: they are not answered at all.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            fake = MemberState(NodeID.generate(), blackhole, NodeState.ALIVE, 0)
            mt, value = messages.to_wire(Join(99, blackhole, (fake,), PROTOCOL_VERSION))
            udp.sendto(codec.encode(mt, fake.node.bytes, 99, 1, value), (host, int(port)))
        wait_until(lambda: a.stats().get("core.dropped_join_datagram", 0) == 1, 5.0,
                   "the join datagram counted")
    finally:
        a.stop(timeout=3.0)
        b.stop(timeout=3.0)
