"""Stream openings under pressure, driven with raw connections on loopback: silent stream
connections from one host, and an opener whose first frames are full-size right behind its
HELLO (to a node that listens on WebSocket only).

Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import os
import queue
import socket
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, NodeID, Packet
from gossip.packet import PacketCodec
from gossip.streams import STATUS_ACCEPTED, decode_accept, encode_open
from gossip.transports.socket import PREAMBLE_STREAM
from gossip.wire import MessageType

from . import scaled, wait_until
from .test_loopback import node_of, stop_all, wait_converged
from transports.test_websocket_security import handshake_bytes, read_head

ECHO = gossip.USER_MSG + 43
SINK = gossip.USER_MSG + 44
MiB = 1024 * 1024


@pytest.mark.parametrize("key", [None, bytes(range(16))], ids=["plain", "encrypted"])
def test_silent_stream_connections_from_one_host_cannot_hold_the_pool(key: bytes | None) -> None:
    target = Cluster(Config.local(bind_addr="127.0.0.1:0", max_concurrent_streams=6,
                                  stream_open_timeout=scaled(30.0), encryption_key=key))
    opener = Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=key))

    def echo(sender: gossip.Node | None, packet: Packet, stream: Any) -> None:
        stream.write(stream.read())
        stream.close_write()

    silent: list[socket.socket] = []
    try:
        for c in (target, opener):
            c.start()
        target.handle_stream_func(ECHO, echo)
        assert opener.join(target.address, timeout=scaled(5.0)) == 1
        wait_converged([target, opener])
        host, port = target.address.rsplit(":", 1)
        for _ in range(6):  # as many as the pool has workers, from one host, then silence
            s = socket.create_connection((host, int(port)), timeout=scaled(5.0),
                                         source_address=("127.0.0.9", 0))
            s.sendall(PREAMBLE_STREAM)
            silent.append(s)
        wait_until(lambda: target.stats()["transport.streams_accepted"] == 6, 10.0,
                   "the silent stream connections reached the pool")
        with opener.open_stream(node_of(opener, target), ECHO, "from a member",
                                timeout=scaled(10.0)) as st:
            st.settimeout(scaled(10.0))
            st.write(b"still served")
            st.close_write()
            assert st.read() == b"still served"
        assert target.stats()["streams.refused_per_source"] == 2
    finally:
        for s in silent:
            s.close()
        stop_all([target, opener])


def _ws_frame(payload: bytes) -> bytes:
    """One masked binary message, as a client sends it (a zero mask leaves the payload as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 65536:
        head = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def _read_ws_message(sock: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    first, second = exact(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    assert first & 0x0F == 0x2, f"opcode {first & 0x0F}"
    return exact(n)


def test_full_size_frames_right_after_hello_reach_a_websocket_only_node() -> None:
    target = Cluster(Config.local(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0"))
    got: queue.Queue[int] = queue.Queue()

    def sink(sender: gossip.Node | None, packet: Packet, stream: Any) -> None:
        n = 0
        while n < MiB:
            chunk = stream.read(MiB - n)
            if not chunk:
                break
            n += len(chunk)
        got.put(n)

    try:
        target.start()
        target.handle_stream_func(SINK, sink)
        url = target.address
        port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(10.0)) as s:
            s.sendall(handshake_bytes(port, {"Gossip-Channel": "stream"}))
            assert read_head(s).startswith(b"HTTP/1.1 101")
            codec = PacketCodec()
            salt = os.urandom(16)
            body = encode_open(SINK, salt, bytes(8), codec.codec.encode("big first write"))
            s.sendall(_ws_frame(codec.encode_raw(MessageType.STREAM_OPEN, NodeID.generate().bytes,
                                                 1, 1, body)))
            answer = decode_accept(codec.decode(_read_ws_message(s)).payload)
            assert answer.status == STATUS_ACCEPTED and answer.client_salt == salt
            # HELLO, then at once a frame as large as the opener writes (1 MiB of data and its
            # kind byte): one write, so they arrive together.
            s.sendall(_ws_frame(b"\x01") + _ws_frame(b"\x02" + os.urandom(MiB)))
            assert got.get(timeout=scaled(10.0)) == MiB
        assert target.stats().get("transport.ws_too_large", 0) == 0
    finally:
        target.stop(timeout=3.0)
