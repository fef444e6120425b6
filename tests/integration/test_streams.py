"""Streams over real TCP on loopback: bulk transfer, a killed peer, an attacker on the path,
limits, and no thread or file descriptor left behind.

Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gossip import Cluster, Config, MetadataReader, Node, NodeID, NodeState, Packet, Stream
from gossip.errors import (
    AuthenticationError,
    ClusterClosed,
    GossipError,
    TransportError,
)

from . import gossip_threads, scaled, wait_until

pytestmark = pytest.mark.integration

KEY = b"stream-test-key!"
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_peer.py")
MiB = 1024 * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def node_at(node: Node, addr: str) -> Node:
    """``node`` as if it lived at ``addr`` (a proxy in front of it)."""
    return Node(node.id, addr, NodeState.ALIVE, 0, MetadataReader({}, 0))


@pytest.fixture
def pair() -> Iterator[tuple[Cluster, Cluster]]:
    clusters = [Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=KEY)) for _ in range(2)]
    for c in clusters:
        c.start()
    yield clusters[0], clusters[1]
    for c in clusters:
        c.stop(timeout=3.0)


def stream_worker_threads() -> list[str]:
    return [n for n in gossip_threads().values() if "-stream-" in n]


# ---------------------------------------------------------------------------------- bulk


def chunks(seed: int, total: int, size: int = MiB) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(total // size):
        yield rng.randbytes(size)


def test_100_mib_both_directions_at_once(pair: tuple[Cluster, Cluster]) -> None:
    server, client = pair
    total = 100 * MiB
    result: dict[str, Any] = {}

    def pump(stream: Stream, seed: int) -> None:
        for block in chunks(seed, total):
            stream.write(block)
        stream.close_write()

    def digest(stream: Stream) -> str:
        h = hashlib.sha256()
        buf = bytearray(MiB)
        n = 0
        while k := stream.readinto(buf):
            h.update(memoryview(buf)[:k])
            n += k
        assert n == total
        return h.hexdigest()

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        t = threading.Thread(target=pump, args=(stream, 2), name="test-server-pump")
        t.start()
        try:
            result["server_got"] = digest(stream)
        finally:
            t.join(scaled(60))

    server.handle_stream_func(300, handler)
    expected = {seed: hashlib.sha256(b"".join(chunks(seed, total))).hexdigest() for seed in (1, 2)}
    with client.open_stream(server.local_node(), 300) as s:
        s.settimeout(scaled(30))
        t = threading.Thread(target=pump, args=(s, 1), name="test-client-pump")
        t.start()
        got = digest(s)
        t.join(scaled(60))
    assert got == expected[2]
    wait_until(lambda: "server_got" in result, 30, "the server hashed what it read")
    assert result["server_got"] == expected[1]


def test_1000_streams_leave_no_thread_or_fd_behind(pair: tuple[Cluster, Cluster]) -> None:
    server, client = pair
    server.handle_stream_func(300, lambda sender, packet, stream: stream.write_msg(301, "hi"))
    # Stream threads only: the pair's other threads (a send worker, say) may start meanwhile.
    threads_before = set(stream_worker_threads())
    fds_before = open_fds()
    for _ in range(1000):
        with client.open_stream(server.local_node(), 300) as s:
            assert s.read_msg(301) == "hi"
    assert client.stats()["streams.opened"] == 1000
    wait_until(lambda: server.stats()["streams.accepted"] == 1000, 10, "every stream accepted")
    wait_until(lambda: open_fds() <= fds_before, 10,
               f"the fd count returns to {fds_before} (now {open_fds()})")
    wait_until(lambda: set(stream_worker_threads()) <= threads_before, 15,
               f"idle stream workers end ({stream_worker_threads()})")
    assert server.stats()["streams.active"] == client.stats()["streams.active"] == 0
    assert server.stats()["transport.tcp_rejected_per_source"] == 0


def test_stop_with_open_streams_over_sockets(pair: tuple[Cluster, Cluster]) -> None:
    server, client = pair
    entered = threading.Semaphore(0)
    outcomes: list[type[BaseException]] = []

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        entered.release()
        try:
            stream.read()
        except GossipError as exc:
            outcomes.append(type(exc))

    server.handle_stream_func(300, handler)
    streams = [client.open_stream(server.local_node(), 300) for _ in range(4)]
    for _ in streams:
        assert entered.acquire(timeout=scaled(10))
    server.stop(timeout=5.0)
    assert outcomes == [ClusterClosed] * 4
    for s in streams:
        s.settimeout(scaled(5))
        with pytest.raises(TransportError):
            s.read()
        s.close()
    prefix = f"gossip-{server.local_node().id.short}-"
    assert [n for n in gossip_threads().values() if n.startswith(prefix)] == []


# ---------------------------------------------------------------------------------- a killed peer


@pytest.fixture
def peer_proc() -> Iterator[tuple[subprocess.Popen[str], Node]]:
    proc = subprocess.Popen([sys.executable, PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield proc, Node(NodeID.parse(info["id"]), info["addr"], NodeState.ALIVE, 0,
                         MetadataReader({}, 0))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


@pytest.mark.parametrize("direction", ["reading", "writing"])
def test_peer_killed_mid_stream_makes_this_side_raise(
        peer_proc: tuple[subprocess.Popen[str], Node], direction: str) -> None:
    proc, peer = peer_proc
    with Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=KEY)) as me:
        s = me.open_stream(peer, 500 if direction == "reading" else 501)
        s.settimeout(scaled(10))
        block = os.urandom(64 * 1024)
        if direction == "reading":
            assert len(s.read(64 * 1024)) > 0
        else:
            s.write(block)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # The kernel closes a killed process's sockets: the next read or write fails at once,
        # never as a clean end, and never as a timeout (that would be a peer still there).
        with pytest.raises(TransportError):
            while True:
                if direction == "reading":
                    if not s.read(64 * 1024):
                        pytest.fail("a killed peer read as a clean end of the stream")
                else:
                    s.write(block)
        s.close()


# ---------------------------------------------------------------------------------- on the path


class Proxy:
    """A TCP proxy on loopback whose server-to-client bytes pass through ``change``.

    ``change(offset, data)`` returns the bytes to forward, or None to cut the connection there.
    """

    def __init__(self, target: str, change: Callable[[int, bytes], bytes | None]) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.change = change
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        up = socket.create_connection(self.target)
        self.socks += [conn, up]
        for args in ((conn, up, None), (up, conn, self.change)):
            t = threading.Thread(target=self._pump, args=args, name="test-proxy", daemon=True)
            t.start()
            self.threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket,
              change: Callable[[int, bytes], bytes | None] | None) -> None:
        offset = 0
        try:
            while data := src.recv(65536):
                out = data if change is None else change(offset, data)
                offset += len(data)
                if out is None:
                    break
                dst.sendall(out)
        except OSError:
            pass
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_WR if s is dst else socket.SHUT_RD)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()
        for t in self.threads:
            t.join(scaled(5))


def serve_megabyte(server: Cluster) -> None:
    data = random.Random(5).randbytes(MiB)

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        try:
            stream.write(data)
        except GossipError:
            pass

    server.handle_stream_func(300, handler)


def test_tampered_frame_on_the_wire_raises(pair: tuple[Cluster, Cluster]) -> None:
    server, client = pair
    serve_megabyte(server)

    def flip(offset: int, data: bytes) -> bytes:
        at = 300_000 - offset
        if 0 <= at < len(data):
            b = bytearray(data)
            b[at] ^= 0x20
            return bytes(b)
        return data

    proxy = Proxy(server.address, flip)
    try:
        with client.open_stream(node_at(server.local_node(), proxy.addr), 300) as s:
            s.settimeout(scaled(10))
            with pytest.raises(AuthenticationError):
                while s.read(65536):
                    pass
    finally:
        proxy.close()


def test_truncated_encrypted_stream_raises(pair: tuple[Cluster, Cluster]) -> None:
    server, client = pair
    serve_megabyte(server)
    cut_at = 600_000

    def cut(offset: int, data: bytes) -> bytes | None:
        if offset >= cut_at:
            return None
        return data[:cut_at - offset]

    proxy = Proxy(server.address, cut)
    try:
        with client.open_stream(node_at(server.local_node(), proxy.addr), 300) as s:
            s.settimeout(scaled(10))
            got = 0
            with pytest.raises(TransportError, match="end marker|inside a frame"):
                while k := len(s.read(65536)):
                    got += k
            assert got < MiB
    finally:
        proxy.close()


def test_frame_over_the_limit_is_refused_with_a_clear_error() -> None:
    small = Cluster(Config.local(bind_addr="127.0.0.1:0", stream_max_packet_size=64 * 1024,
                                 tcp_max_packet_size=64 * 1024))
    big = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    errors: list[BaseException] = []

    def handler(sender: Node | None, packet: Packet, stream: Stream) -> None:
        try:
            stream.read()
        except GossipError as exc:
            errors.append(exc)

    with small, big:
        small.handle_stream_func(300, handler)
        with big.open_stream(small.local_node(), 300) as s:
            try:
                s.write(os.urandom(512 * 1024))  # one frame, far over the reader's limit
            except GossipError:
                pass  # the reader may cut the connection while we write
        wait_until(lambda: bool(errors), 10, "the reader refused the frame")
    assert isinstance(errors[0], TransportError)
    assert "over the limit" in str(errors[0])


def test_unauthenticated_stream_may_not_announce_a_large_frame(
        pair: tuple[Cluster, Cluster]) -> None:
    from gossip.transports.socket import PREAMBLE_STREAM

    server, _client = pair
    server.handle_stream_func(300, lambda sender, packet, stream: None)
    host, _, port = server.address.rpartition(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.settimeout(scaled(10))
        # A stranger announces a 4 MiB "OPEN" (the stream limit is 8 MiB): refused before any
        # byte of it is awaited or allocated.
        raw.sendall(PREAMBLE_STREAM + (4 * MiB).to_bytes(4, "big") + b"x" * 100)
        try:
            assert raw.recv(100) == b""
        except ConnectionResetError:
            pass
    wait_until(lambda: server.stats()["streams.bad_opens"] == 1, 10, "the opening dropped")
    assert server.stats()["streams.accepted"] == 0
