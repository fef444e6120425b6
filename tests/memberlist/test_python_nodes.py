"""Nodes of this library on memberlist's wire, in one process on loopback: they join, carry
user messages as datagrams and on streams, leave, and stay apart under another key or label;
what the wire does not carry is refused with a clear error."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from gossip import Cluster
from gossip.config import Config
from gossip.errors import ConfigError, GossipError, LocalProtocolError
from gossip.memberlist import codec as ml
from gossip.memberlist.identity import name_to_id
from gossip.memberlist.security import MLKeyring
from gossip.memberlist.transport import MemberlistTransport
from gossip.node import NodeState
from tests.integration import wait_until

KEY = bytes(range(16))


def node(name: str, **kw: object) -> Cluster:
    cfg = Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name=name,
                 health_check_interval=0.3, ping_timeout=0.15, **kw)  # type: ignore[arg-type]
    return Cluster(cfg)


@pytest.fixture
def made() -> Iterator[list[Cluster]]:
    out: list[Cluster] = []
    yield out
    for c in out:
        c.stop(leave=False)


def state(c: Cluster, name: str) -> NodeState | None:
    n = c.get_node(name_to_id(name))
    return n.state if n is not None else None


def test_two_nodes_join_message_and_leave(made: list[Cluster]) -> None:
    a, b = node("a", memberlist_compress=True), node("b", cluster_label="")
    made += [a, b]
    got: list[bytes] = []
    b.handle_func(128, lambda n, pkt: got.append(pkt.unmarshal()))
    a.start()
    b.start()
    b.join([a.local_node().address])
    wait_until(lambda: state(a, "b") is NodeState.ALIVE and state(b, "a") is NodeState.ALIVE, 10, "join")
    nb = a.get_node(name_to_id("b"))
    assert nb is not None
    a.send_to(nb, 128, b"datagram")
    a.send_to_reliable(nb, 128, b"stream")
    wait_until(lambda: sorted(got) == [b"datagram", b"stream"], 10, "user messages")
    with pytest.raises(GossipError, match="request/reply"):
        a.send_to_with_response(nb, 128, b"q", timeout=1.0)
    with pytest.raises(LocalProtocolError, match="type 128 only"):
        a.send_to(nb, 300, b"x")
    with pytest.raises(GossipError, match="carries no removal"):
        a.forget_node(nb)
    a.leave()
    wait_until(lambda: state(b, "a") is NodeState.LEFT, 10, "leave seen")


def test_another_key_or_label_keeps_nodes_apart(made: list[Cluster]) -> None:
    a = node("a", encryption_key=KEY, cluster_label="blue")
    same = node("same", encryption_key=KEY, cluster_label="blue")
    other_label = node("ol", encryption_key=KEY, cluster_label="red")
    other_key = node("ok", encryption_key=bytes(range(1, 17)), cluster_label="blue")
    plain = node("plain", cluster_label="blue")
    made += [a, same, other_label, other_key, plain]
    for c in made:
        c.start()
    addr = a.local_node().address
    same.join([addr])
    wait_until(lambda: state(a, "same") is NodeState.ALIVE, 10, "same key and label join")
    for c in (other_label, other_key, plain):
        try:
            c.join([addr])
        except GossipError:
            pass
    assert [n for n in (state(a, "ol"), state(a, "ok"), state(a, "plain")) if n is not None] == []
    assert state(other_key, "a") is None and state(plain, "a") is None


def test_the_transport_refuses_bad_datagrams_and_streams() -> None:
    got: list[object] = []
    t = MemberlistTransport("127.0.0.1:0", keyring=MLKeyring([KEY]), label="lab",
                            crc_for=lambda addr: True, compress=True)
    t.start(lambda batch: got.extend(batch))
    try:
        host, port = t.local_addr.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(ml.encode(ml.Nack(1)), (host, int(port)))      # no label
            s.sendto(t.seal_datagram("x", ml.encode(ml.Nack(2))), (host, int(port)))
        with socket.create_connection((host, int(port)), 2) as c:  # a plain stream: refused
            c.sendall(b"\xf4\x03lab" + ml.encode(ml.Ping(1, "x")))
            c.settimeout(2)
            answer = c.recv(65536)
        wait_until(lambda: len(got) == 1 and t.stats.get("bad_packets.LabelMismatch") == 1, 5, "datagrams")
        for data in (ml.encode(ml.Nack(2)), b"\x08" + b"u" * 300):  # CRC, LZW and the key undone
            assert ml.unpack(t.open_datagram(t.seal_datagram("x", data))) == [data]
        msg, _ = t.read_stream(ml.StreamReader(answer), False)
        assert isinstance(msg, ml.Err) and "not encrypted" in msg.error
        assert wait_until(lambda: t.stats.get("bad_packets.EncryptionError") == 1, 5, "stream") is None
        with pytest.raises(GossipError):
            t.request("127.0.0.1:1", b"", 1)
        with pytest.raises(GossipError):
            t.dial_stream("127.0.0.1:1", 1)
        assert t.link_kind("x", True) == "tcp"
    finally:
        t.close()
        t.close()


def test_config_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ConfigError, match="serf"):
        Config(serf=True).validate()
    with pytest.raises(ConfigError, match="WebSocket"):
        Config(wire_protocol="memberlist", websocket_bind_addr="127.0.0.1:0").validate()
    with pytest.raises(ConfigError, match="force_reliable"):
        Config(wire_protocol="memberlist", force_reliable_transport=True).validate()
    with pytest.raises(ConfigError, match="wire_protocol"):
        Config(wire_protocol="carrier-pigeon").validate()
    with pytest.raises(ConfigError, match="custom transport"):
        Config(wire_protocol="memberlist", transport=MemberlistTransport("127.0.0.1:0")).validate()
    c = Cluster(Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist"))
    assert c.local_node().id == name_to_id(c.config.name) and c.config.name


@pytest.mark.parametrize("version", [0, 1])
def test_streams_and_datagrams_between_two_transports(version: int) -> None:
    """A ping on a stream is answered on it, a push/pull answer comes back in its envelope, a
    user message goes as memberlist's stream form; datagrams carry CRC, LZW and encryption."""
    ring = MLKeyring([KEY])
    a_in: list[object] = []
    b_in: list[object] = []

    def answer(batch: list[object]) -> None:
        for inc in batch:
            b_in.append(inc)
            data = inc.data  # type: ignore[attr-defined]
            if inc.conn is not None and data[0] == ml.MsgType.PING:  # type: ignore[attr-defined]
                inc.conn.send_frame(ml.compound([ml.encode(ml.Ack(ml.decode(data).seq)),  # type: ignore[attr-defined,union-attr]
                                                 ml.encode(ml.Nack(9))]))
            elif inc.conn is not None and data[0] == ml.MsgType.PUSH_PULL:  # type: ignore[attr-defined]
                inc.conn.send_frame(ml.encode(ml.PushPull(False, ())))  # type: ignore[attr-defined]

    a = MemberlistTransport("127.0.0.1:0", keyring=ring, label="l", encryption_version=version,
                            crc_for=lambda addr: True, compress=True)
    b = MemberlistTransport("127.0.0.1:0", keyring=ring, label="l", encryption_version=version,
                            compress=True)
    a.start(lambda batch: a_in.extend(batch))
    b.start(answer)  # type: ignore[arg-type]
    try:
        a.send(b.local_addr, ml.encode(ml.Ping(5, "b")), reliable=True)
        wait_until(lambda: len(a_in) == 1, 5, "the ack")
        assert ml.decode(a_in[0].data) == ml.Ack(5)  # type: ignore[attr-defined]
        pp = ml.encode(ml.PushPull(True, ()))
        a.send(b.local_addr, pp, reliable=True)
        wait_until(lambda: len(a_in) == 2, 5, "the push/pull answer")
        assert a_in[1].data[0] == 0xF0 and pp in a_in[1].data  # type: ignore[attr-defined]
        a.send(b.local_addr, b"\x08" + b"u" * 3000, reliable=True)
        a.send(b.local_addr, ml.encode(ml.Suspect(1, "x", "y")), reliable=True)  # goes as a datagram
        a.send(b.local_addr, ml.encode(ml.Nack(1)))
        wait_until(lambda: len(b_in) == 5, 5, "b's packets")
        datas = sorted(i.data for i in b_in)  # type: ignore[attr-defined]
        assert b"\x08" + b"u" * 3000 in datas
        assert any(ml.unpack(d) == [ml.encode(ml.Nack(1))] for d in datas)  # with its CRC
        assert any(ml.unpack(d) == [ml.encode(ml.Suspect(1, "x", "y"))] for d in datas)
        with pytest.raises(GossipError):
            a.send("127.0.0.1:1", ml.encode(ml.Ping(1, "x")), reliable=True, timeout=1)
        assert b.stats.get("streams_in") == 3
    finally:
        a.close()
        b.close()
    with pytest.raises(GossipError):
        a.send(b.local_addr, b"\x0b\x80")


def test_a_member_without_a_common_version_is_refused_with_an_event(made: list[Cluster]) -> None:
    import gossip

    a = node("a")
    made.append(a)
    events: list[object] = []
    a.handle_cluster_event_func(events.append)
    a.start()
    host, port = a.local_node().address.rsplit(":", 1)
    old = ml.encode(ml.Alive(1, "old", b"\x7f\x00\x00\x01", 9, b"", bytes([1, 1, 1, 0, 0, 0])))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(old, (host, int(port)))
    wait_until(lambda: len(events) == 1, 5, "the refusal")
    ev = events[0]
    assert isinstance(ev, gossip.MemberRefused) and ev.node == name_to_id("old")
    assert "no protocol version in common" in str(ev)
    assert state(a, "old") is None and len(events) == 1  # told once


def test_leader_election_is_refused_on_memberlists_wire() -> None:
    from gossip.leader import LeaderElection

    c = node("solo")
    with pytest.raises(ConfigError, match="leader election needs wire_protocol='gossip'"):
        LeaderElection(c)
    c.stop()
