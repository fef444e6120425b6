"""memberlist's transport (:class:`gossip.memberlist.transport.MemberlistTransport`) against
hostile and broken peers on loopback, driven with raw sockets: what it refuses is counted and,
on a stream, answered with memberlist's error message; a slow or flooding peer is bounded; a
broken answer to our own stream is an error naming the peer; a bug of the receiver never ends
a reader thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from gossip.errors import ClusterClosed, SendError, TransportError
from gossip.memberlist import codec as ml
from gossip.memberlist.security import MLKeyring
from gossip.memberlist.transport import MemberlistTransport
from gossip.transports import Incoming
from tests.integration import wait_until

KEY = bytes(range(16))
WAIT = 10.0


@pytest.fixture
def make() -> Iterator[Callable[..., MemberlistTransport]]:
    made: list[MemberlistTransport] = []

    def build(on_packets: Callable[[list[Incoming]], None] | None = None,
              **kw: object) -> MemberlistTransport:
        t = MemberlistTransport("127.0.0.1:0", **kw)  # type: ignore[arg-type]
        t.start(on_packets or (lambda batch: None))
        made.append(t)
        return t

    yield build
    for t in made:
        t.close()


def hp(t: MemberlistTransport) -> tuple[str, int]:
    host, port = t.local_addr.rsplit(":", 1)
    return host, int(port)


def stream_answer(t: MemberlistTransport, data: bytes) -> ml.Message:
    """Send ``data`` on a new stream to ``t`` and read its one answer."""
    with socket.create_connection(hp(t), WAIT) as c:
        c.settimeout(WAIT)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        msg, _ = t.read_stream(ml.StreamReader(more=c.recv), False)
    return msg


def test_a_port_taken_by_someone_else_is_a_transport_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        t = MemberlistTransport(f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(TransportError, match="cannot bind"):
            t.start(lambda batch: None)
        t.close()
    with pytest.raises(ClusterClosed):
        t.start(lambda batch: None)


def test_sending_before_start_is_refused() -> None:
    t = MemberlistTransport("127.0.0.1:0")
    with pytest.raises(ClusterClosed, match="not started"):
        t.send("127.0.0.1:9", ml.encode(ml.Nack(1)))


def test_garbage_on_a_stream_is_answered_with_an_error_and_counted(make: Callable[..., MemberlistTransport]) -> None:
    t = make()
    msg = stream_answer(t, bytes([ml.MsgType.PUSH_PULL]) + b"\xc1\xc1\xc1")
    assert isinstance(msg, ml.Err) and "push/pull header" in msg.error
    wait_until(lambda: t.stats.get("bad_packets.DecodeError") == 1, WAIT, "the count")


def test_an_empty_label_header_on_a_stream_is_refused(make: Callable[..., MemberlistTransport]) -> None:
    t = make(label="lab")
    msg = stream_answer(t, b"\xf4\x00" + ml.encode(ml.Ping(1, "x")))
    assert isinstance(msg, ml.Err) and "label header cannot be empty" in msg.error


def test_an_encrypted_stream_to_a_node_without_keys_is_refused(make: Callable[..., MemberlistTransport]) -> None:
    sealed = make(keyring=MLKeyring([KEY]))
    plain = make()
    msg = stream_answer(plain, sealed.frame_stream(ml.encode(ml.Ping(1, "x"))))
    assert isinstance(msg, ml.Err) and "encryption is not configured" in msg.error
    wait_until(lambda: plain.stats.get("bad_packets.EncryptionError") == 1, WAIT, "the count")


def test_a_message_type_streams_do_not_carry_is_dropped_unanswered(make: Callable[..., MemberlistTransport]) -> None:
    got: list[Incoming] = []
    t = make(got.extend)
    with socket.create_connection(hp(t), WAIT) as c:
        c.settimeout(WAIT)
        c.sendall(ml.encode(ml.Ack(1)))                     # an answer, not a question
        assert c.recv(100) == b"", "closed with no answer"
    wait_until(lambda: t.stats.get("dropped.stream_type") == 1, WAIT, "the count")
    assert got == []


def test_streams_over_the_limit_are_closed_unread(make: Callable[..., MemberlistTransport]) -> None:
    t = make(max_connections=1, tcp_timeout=WAIT)
    with socket.create_connection(hp(t), WAIT) as held:
        held.sendall(bytes([ml.MsgType.PING]))            # the one slot waits for the rest
        with socket.create_connection(hp(t), WAIT) as extra:
            extra.settimeout(WAIT)
            assert extra.recv(100) == b"", "the second stream is closed at once"
        wait_until(lambda: t.stats.get("dropped.stream_limit") == 1, WAIT, "the count")
    wait_until(lambda: t.stats.get("bad_packets.DecodeError") == 1, WAIT, "the held stream ends")
    msg = stream_answer(t, bytes([ml.MsgType.PUSH_PULL]) + b"\xc1")  # the slot is free again
    assert isinstance(msg, ml.Err)


def test_a_stream_that_stalls_past_the_deadline_is_dropped(make: Callable[..., MemberlistTransport]) -> None:
    t = make(tcp_timeout=0.2)
    with socket.create_connection(hp(t), WAIT) as c:
        c.sendall(bytes([ml.MsgType.PING]))
        c.settimeout(WAIT)
        assert c.recv(100) == b""                         # closed by the node at its deadline
    wait_until(lambda: t.stats.get("errors.stream_io") == 1, WAIT, "the count")


def test_a_broken_answer_to_our_stream_is_a_send_error_naming_the_peer(make: Callable[..., MemberlistTransport]) -> None:
    t = make()
    server = socket.create_server(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % server.getsockname()[1]

    def answer_garbage() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(bytes([ml.MsgType.ACK]) + b"\xc1")

    peer = threading.Thread(target=answer_garbage)
    peer.start()
    try:
        with pytest.raises(SendError, match=f"bad answer from {addr}"):
            t.send(addr, ml.encode(ml.Ping(7, "x")), reliable=True, timeout=WAIT)
    finally:
        peer.join(WAIT)
        server.close()
    assert t.stats.get("bad_packets.DecodeError") == 1


def test_a_receiver_that_raises_does_not_end_the_readers(make: Callable[..., MemberlistTransport]) -> None:
    calls: list[int] = []

    def buggy(batch: list[Incoming]) -> None:
        calls.append(len(batch))
        raise RuntimeError("a bug of the receiver")

    t = make(buggy)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(ml.encode(ml.Nack(1)), hp(t))
        wait_until(lambda: t.stats.get("errors.deliver") == 1, WAIT, "the datagram's count")
        with socket.create_connection(hp(t), WAIT) as c:
            c.sendall(ml.encode(ml.Ping(1, "x")))
            c.settimeout(WAIT)
            assert c.recv(100) == b""
        wait_until(lambda: t.stats.get("errors.stream") == 1, WAIT, "the stream's count")
        s.sendto(ml.encode(ml.Nack(2)), hp(t))                # the readers still read
        wait_until(lambda: t.stats.get("errors.deliver") == 2, WAIT, "the next datagram")
    assert len(calls) == 3


def test_without_required_encryption_plain_datagrams_are_taken(make: Callable[..., MemberlistTransport]) -> None:
    got: list[Incoming] = []
    t = make(got.extend, keyring=MLKeyring([KEY]), require_encryption=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(ml.encode(ml.Nack(4)), hp(t))
        s.sendto(b"", hp(t))                                   # nothing at all: refused
    wait_until(lambda: len(got) == 1 and t.stats.get("bad_packets.DecodeError") == 1, WAIT,
               "the plain datagram taken, the empty one counted")
    assert got[0].data == ml.encode(ml.Nack(4))
