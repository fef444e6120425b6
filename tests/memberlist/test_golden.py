"""memberlist's wire against bytes a real Go memberlist node sent (tests/memberlist/golden_go.json,
captured by capture_golden.py): every message type decodes, and re-encodes to the same bytes,
LZW included. Runs without Go."""

from __future__ import annotations

import json
import pathlib

import msgpack
import pytest

from gossip.memberlist import codec as ml
from gossip.memberlist import lzw
from gossip.memberlist.security import MLKeyring, stream_decrypt, stream_length

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden_go.json").read_text())["messages"]
KEY = MLKeyring([bytes(range(16))])


def raw(name: str) -> bytes:
    return bytes.fromhex(GOLDEN[name]["hex"])


def reencode(data: bytes) -> bytes:
    """Rebuild a datagram from what we decode of it, layer by layer."""
    t = data[0]
    if t == ml.MsgType.HAS_CRC:
        return ml.with_crc(reencode(data[5:]))
    if t == ml.MsgType.COMPRESS:
        body = msgpack.unpackb(data[1:], raw=True)
        return ml.compress(reencode(lzw.decompress(body[b"Buf"], 1 << 20)))
    if t == ml.MsgType.COMPOUND:
        return ml.compound([reencode(p) for p in ml.split_compound(data[1:])])
    return ml.encode(ml.decode(data))


def messages(data: bytes) -> list[ml.Message]:
    return [ml.decode(m) for m in ml.unpack(data)]


@pytest.mark.parametrize("name", [k for k in GOLDEN if not k.startswith(("k_", "e_tcp", "err"))])
def test_every_go_datagram_re_encodes_to_the_same_bytes(name: str) -> None:
    data = raw(name)
    assert reencode(data) == data


def test_go_datagrams_decode_to_the_messages_go_sent() -> None:
    assert messages(raw("ack_reply")) == [ml.Ack(77)]
    assert messages(raw("nack_reply")) == [ml.Nack(78)]
    alive = messages(raw("e_udp_0"))
    assert [type(m) for m in alive] == [ml.Alive] * 3
    go1 = alive[0]
    assert isinstance(go1, ml.Alive)
    assert (go1.node, go1.addr, go1.meta, go1.vsn) == ("go1", b"\x7f\0\0\1", b"hello", bytes([1, 5, 2, 0, 0, 0]))
    ind = messages(raw("e_udp_2"))[0]
    assert isinstance(ind, ml.IndirectPing) and ind.nack and ind.node == "fake-c" and ind.source_node == "go1"
    ping, sus = messages(raw("e_udp_3"))
    assert isinstance(ping, ml.Ping) and ping.node == "fake-e"
    assert sus == ml.Suspect(1, "fake-c", "go1")
    assert messages(raw("e_udp_4")) == [ml.Suspect(1, "fake-c", "go1")]
    assert messages(raw("e_udp_6")) == [ml.User(b"hi-udp")]
    assert messages(raw("e_udp_9")) == [ml.Dead(1, "fake-c", "go1")]
    assert messages(raw("e_udp_19")) == [ml.Dead(1, "go1", "go1")]  # a leave
    assert [type(m) for m in messages(raw("e_udp_10"))] == [ml.IndirectPing, ml.Dead]


def _stream_plain(data: bytes) -> bytes:
    """A compressed stream message's plaintext, and check our LZW writes Go's bytes."""
    assert data[0] == ml.MsgType.COMPRESS
    u = msgpack.Unpacker(raw=True)
    u.feed(data[1:])
    body = u.unpack()
    plain = lzw.decompress(body[b"Buf"], 1 << 20)
    assert lzw.compress(plain) == body[b"Buf"]
    assert ml.compress(plain) == data[:1 + u.tell()]
    return plain


def test_go_streams_decode_and_re_encode() -> None:
    plain = _stream_plain(raw("e_tcp_0"))
    msg, t = ml.read_stream(ml.StreamReader(raw("e_tcp_0")))
    assert t == ml.MsgType.PUSH_PULL and isinstance(msg, ml.PushPull) and msg.join
    assert msg.states[0].name == "go1" and msg.states[0].meta == b"hello"
    assert ml.encode(msg) == plain
    plain = _stream_plain(raw("e_tcp_1"))
    msg, t = ml.read_stream(ml.StreamReader(raw("e_tcp_1")))
    assert msg == ml.User(b"hi-tcp") and ml.user_stream(b"hi-tcp") == plain
    plain = _stream_plain(raw("err_reply"))
    msg, _ = ml.read_stream(ml.StreamReader(raw("err_reply")))
    assert msg == ml.Err("Remote state is encrypted and encryption is not configured")
    assert ml.encode(msg) == plain


def test_go_encrypted_stream_and_datagram_open_with_the_key() -> None:
    data = raw("k_tcp_0")
    head = data[:5]
    plain = stream_decrypt(KEY, head, data[5:5 + stream_length(head)])
    msg, _ = ml.read_stream(ml.StreamReader(plain))
    assert isinstance(msg, ml.PushPull) and msg.join and msg.states[0].name == "go2"
    dgram = KEY.open(raw("k_udp_1"), b"")
    kinds = [type(m) for m in messages(dgram)]
    assert kinds == [ml.Ping, ml.Alive, ml.Alive]
    assert reencode(dgram) == dgram
