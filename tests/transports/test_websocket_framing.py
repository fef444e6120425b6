"""Our own binary frames and gathered writes (:mod:`gossip.transports.websocket.framing`), read
back by websockets' sans-I/O protocol: what we frame is what any WebSocket peer parses."""

from __future__ import annotations

import pathlib
import socket
import ssl
import threading

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from gossip.transports.websocket import client_tls_context, server_tls_context
from gossip.transports.websocket.framing import SocketReader, binary_frame, send_all
from integration.tls import make_pki


def _parse(wire: bytes, to_server: bool) -> list[Frame]:
    """Feed ``wire`` to an open protocol of the receiving side and return its frames."""
    proto: ClientProtocol | ServerProtocol
    if to_server:
        proto = ServerProtocol(state=State.OPEN, max_size=None)
    else:
        proto = ClientProtocol(parse_uri("ws://127.0.0.1/gossip"), state=State.OPEN, max_size=None)
    proto.receive_data(wire)
    assert proto.parser_exc is None
    return [e for e in proto.events_received() if isinstance(e, Frame)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 4095, 4096, 65535, 65536, 200_000])
@pytest.mark.parametrize("mask", [True, False], ids=["client", "server"])
def test_a_binary_frame_reads_back_as_one_binary_message(size: int, mask: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    chunks = binary_frame(memoryview(payload), mask)
    assert len(chunks) == (1 if size < 4096 else 2)  # small frames go out as one piece
    frames = _parse(b"".join(bytes(c) for c in chunks), to_server=mask)
    assert [(f.opcode, f.fin, bytes(f.data)) for f in frames] == [(Opcode.BINARY, True, payload)]


def test_send_all_writes_every_chunk_in_order_through_partial_writes() -> None:
    a, b = socket.socketpair()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.settimeout(10.0)  # a socket with a timeout hands back partial writes
        chunks: list[bytes | bytearray | memoryview] = [bytes([i % 251]) * (i * 37 % 5000 + 1)
                                                         for i in range(1500)]  # > IOV_MAX
        expected = b"".join(bytes(c) for c in chunks)
        got = bytearray()

        def read() -> None:
            reader = SocketReader(b, 65536)
            while len(got) < len(expected):
                data = reader.read()
                if not data:
                    break
                got.extend(data)

        thread = threading.Thread(target=read)
        thread.start()
        send_all(a, chunks)
        thread.join(10.0)
        assert bytes(got) == expected
    finally:
        a.close()
        b.close()


def test_send_all_and_the_reader_over_tls(tmp_path: pathlib.Path) -> None:
    pki = make_pki(tmp_path)
    raw_a, raw_b = socket.socketpair()
    server = server_tls_context(pki.cert, pki.key)
    client = client_tls_context(pki.ca)
    wrapped: dict[str, ssl.SSLSocket] = {}

    def accept() -> None:
        wrapped["b"] = server.wrap_socket(raw_b, server_side=True)

    side = threading.Thread(target=accept)
    side.start()
    a = client.wrap_socket(raw_a, server_hostname="127.0.0.1")
    side.join(10.0)
    b = wrapped["b"]
    try:
        # Small chunks are joined, a large one goes with what precedes it.
        chunks: list[bytes | bytearray | memoryview] = [b"h" * 10, b"p" * 100_000, b"s" * 7] * 3
        chunks += [b"x" * 600_000, b"y" * 600_000]  # over WRITE_CHUNK once joined
        expected = b"".join(bytes(c) for c in chunks)
        got = bytearray()

        def read() -> None:
            reader = SocketReader(b, 256 * 1024)
            while len(got) < len(expected):
                data = reader.read()
                if not data:
                    break
                got.extend(data)

        reader_thread = threading.Thread(target=read)
        reader_thread.start()
        send_all(a, chunks)
        reader_thread.join(10.0)
        assert bytes(got) == expected
    finally:
        a.close()
        b.close()
