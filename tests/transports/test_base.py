"""The transport interface (:mod:`gossip.transports.base`): every optional-looking method is part
of it, and a custom transport written before they were is completed once, at the boundary."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import gossip
from gossip.transports.base import (Connection, Deadline, ErrorMapping, Incoming, StreamConn, Transport,
                                    complete, map_errors)
from gossip.transports.memory import MemoryNetwork
from gossip.transports.multi import MultiTransport
from gossip.transports.socket import SocketTransport
from gossip.transports.websocket import WebSocketTransport


def test_every_transport_of_the_package_has_the_whole_interface() -> None:
    for t in (MemoryNetwork().new_transport(), SocketTransport("127.0.0.1:0"),
              WebSocketTransport(""), MultiTransport()):
        assert isinstance(t, Transport)
        assert complete(t) is t  # nothing to fill in
        assert isinstance(t.stats, dict) and isinstance(t.link_kind("127.0.0.1:1", True), str)


class OldConn:
    """A connection of a transport written before mark_trusted/mark_rejected existed."""

    peer = "old:1"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        self.sent.append(data)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class OldTransport:
    """A custom transport written before stats and link_kind were part of the interface."""

    local_addr = "old:0"

    def __init__(self) -> None:
        self.on_packets: Any = None

    def start(self, on_packets: Any, on_stream: Any = None) -> None:
        self.on_packets = on_packets

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None: ...
    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        return b""

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        raise NotImplementedError

    def close(self) -> None: ...


def test_an_older_custom_transport_is_completed_with_defaults() -> None:
    old = OldTransport()
    assert not isinstance(old, Transport)
    t = complete(old)
    assert isinstance(t, Transport)
    assert t.stats == {} and t.link_kind("x", True) == "tcp" and t.link_kind("x", False) == "udp"
    got: list[Incoming] = []
    t.start(got.extend)
    conn = OldConn()
    old.on_packets([Incoming(b"frame", "old:1", True, conn, 0.0)])  # type: ignore[arg-type]
    (inc,) = got
    assert isinstance(inc.conn, Connection)
    inc.conn.mark_trusted()  # no-ops: the transport has no such limits
    inc.conn.mark_rejected()
    inc.conn.send_frame(b"answer")
    assert conn.sent == [b"answer"]


def test_a_cluster_runs_on_an_older_custom_transport() -> None:
    net = MemoryNetwork()

    class Stripped:
        """A memory transport seen through the old interface only."""

        def __init__(self) -> None:
            self._t = net.new_transport()
            self.local_addr = self._t.local_addr

        def start(self, on_packets: Any, on_stream: Any = None) -> None:
            self._t.start(on_packets, on_stream)

        def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
            self._t.send(addr, data, reliable, timeout)

        def request(self, addr: str, data: bytes, timeout: float) -> bytes:
            return self._t.request(addr, data, timeout)

        def dial_stream(self, addr: str, timeout: float) -> StreamConn:
            return self._t.dial_stream(addr, timeout)

        def close(self) -> None:
            self._t.close()

    a = gossip.Cluster(gossip.Config.local(transport=Stripped()))
    b = gossip.Cluster(gossip.Config.local(transport=Stripped()))
    with a, b:
        a.start()
        b.start()
        assert b.join(a.address, timeout=5.0) == 1
        assert isinstance(a.stats(), dict)


class OldStream:
    """A stream connection of a transport written before mark_trusted existed."""

    peer = "old:2"
    max_frame_size = 10

    def send_frame(self, data: bytes, timeout: float | None = None) -> None: ...
    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        return None

    def close_write(self) -> None: ...
    def close(self) -> None: ...


class OldWithCounters(OldTransport):
    """An older transport whose stats is a method and which names its own links."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.on_stream: Any = None

    def start(self, on_packets: Any, on_stream: Any = None) -> None:
        self.on_packets, self.on_stream = on_packets, on_stream

    def stats(self) -> dict[str, int]:
        return {"sent": 3}

    def link_kind(self, addr: str, reliable: bool) -> str:
        return "carrier-pigeon"

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        self.calls.append(f"send {addr} {reliable}")

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        self.calls.append(f"request {addr}")
        return b"reply"

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        self.calls.append(f"dial {addr}")
        return OldStream()  # type: ignore[return-value]

    def close(self) -> None:
        self.calls.append("close")


def test_the_completed_transport_delegates_everything_else() -> None:
    old = OldWithCounters()
    t = complete(old)
    assert t.stats == {"sent": 3} and t.link_kind("a", True) == "carrier-pigeon"
    assert t.local_addr == "old:0" and repr(t) == repr(old)
    streams: list[StreamConn] = []
    t.start(lambda batch: None, streams.append)
    t.send("x:1", b"d", reliable=True)
    assert t.request("x:1", b"d", 1.0) == b"reply"
    dialed = t.dial_stream("x:1", 1.0)
    assert isinstance(dialed, StreamConn)
    dialed.mark_trusted()  # a no-op the older stream did not have
    old.on_stream(OldStream())
    assert isinstance(streams[0], StreamConn) and streams[0].peer == "old:2"
    t.close()
    assert old.calls == ["send x:1 True", "request x:1", "dial x:1", "close"]


class HalfConn(OldConn):
    """A connection that had mark_trusted already, but not mark_rejected."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def mark_trusted(self) -> None:
        self.calls.append("trusted")


class OtherHalfConn(OldConn):
    """A connection that had mark_rejected already, but not mark_trusted."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def mark_rejected(self) -> None:
        self.calls.append("rejected")


def test_a_completed_connection_forwards_the_marks_it_has() -> None:
    old = OldTransport()
    t = complete(old)
    got: list[Incoming] = []
    t.start(got.extend)
    half, other = HalfConn(), OtherHalfConn()
    old.on_packets([Incoming(b"a", "old:1", True, half, 0.0),        # type: ignore[arg-type]
                    Incoming(b"b", "old:2", True, other, 0.0)])      # type: ignore[arg-type]
    for inc in got:
        assert isinstance(inc.conn, Connection)
        inc.conn.mark_trusted()
        inc.conn.mark_rejected()
    assert half.calls == ["trusted"] and other.calls == ["rejected"]


def test_map_errors_translates_the_first_matching_type_and_lets_others_through() -> None:
    mapping: ErrorMapping = {socket.timeout: gossip.GossipTimeout, OSError: gossip.SendError}
    with pytest.raises(gossip.GossipTimeout, match="send to 127.0.0.1:9: slow") as t:
        with map_errors(mapping, "127.0.0.1:9", "send to"):
            raise socket.timeout("slow")
    assert isinstance(t.value.__cause__, socket.timeout)
    with pytest.raises(gossip.SendError, match="^transport: ConnectionResetError$"):
        with map_errors(mapping):
            raise ConnectionResetError()                             # no message, no peer
    own = gossip.DecodeError("already ours")
    with pytest.raises(gossip.DecodeError) as passed:
        with map_errors(mapping, "p", "a"):
            raise own
    assert passed.value is own                                       # unchanged
    with pytest.raises(KeyError):
        with map_errors(mapping, "p", "a"):
            raise KeyError("not mapped")


def test_a_deadline_spreads_one_timeout_and_an_unbounded_one_never_expires() -> None:
    never = Deadline(None)
    assert never.remaining() is None and not never.expired
    spent = Deadline(-1.0)                                           # clamped to 0: spent at once
    assert spent.expired
    with pytest.raises(gossip.GossipTimeout, match="^dial: timed out$"):
        spent.remaining("dial")
    left = Deadline(3600.0).remaining()
    assert left is not None and 3500.0 < left <= 3600.0
