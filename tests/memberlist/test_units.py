"""memberlist's wire piece by piece, without Go: bounds and refusals of the codec, LZW,
encryption and labels, names and metadata, and the profile's mapping of the core's messages."""

from __future__ import annotations

import os
import struct
import zlib

import msgpack
import pytest

from gossip import messages as core
from gossip.codecs import DEFAULT_CODEC
from gossip.errors import (
    AuthenticationError,
    CompressionError,
    ConfigError,
    DecodeError,
    EncryptionError,
    LabelMismatch,
    LocalProtocolError,
    MessageTooLarge,
    PacketTooLarge,
)
from gossip.memberlist import codec as ml
from gossip.memberlist import identity as ident
from gossip.memberlist import lzw
from gossip.memberlist import security as sec
from gossip.memberlist.profile import MemberlistCodec, core_inc, envelope, wire_inc
from gossip.node import NodeID, NodeState
from gossip.wire import USER_MSG, MessageType

LO = b"\x7f\x00\x00\x01"


# ------------------------------------------------------------------ lzw

@pytest.mark.parametrize("data", [b"", b"a", b"ab" * 50, bytes(range(256)) * 40, os.urandom(5000),
                                  b"x" * 70000])
def test_lzw_round_trips(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data), len(data)) == data


def test_lzw_refuses_a_bomb_a_truncation_and_a_bad_code() -> None:
    bomb = lzw.compress(b"\0" * 100000)
    with pytest.raises(CompressionError, match="exceeds"):
        lzw.decompress(bomb, 1000)
    with pytest.raises(CompressionError, match="end code"):
        lzw.decompress(bomb[:10], 1 << 20)
    # a clear code, then code 300 while the table ends at 257
    bits = 256 | (300 << 9)
    with pytest.raises(CompressionError, match="invalid code"):
        lzw.decompress(bits.to_bytes(3, "little"), 100)


# ------------------------------------------------------------------ codec

def test_every_message_round_trips() -> None:
    msgs: list[ml.Message] = [
        ml.Ping(1, "a", LO, 7946, "b"), ml.Ping(2, "a"),
        ml.IndirectPing(3, LO, 7946, "c", True, LO, 80, "d"), ml.Ack(4, b"pay"), ml.Ack(5),
        ml.Nack(6), ml.Suspect(7, "a", "b"), ml.Dead(8, "a", "a"),
        ml.Alive(9, "a", LO, 1, b"m", bytes([2, 5, 2, 0, 0, 0])), ml.Alive(9, "a", LO, 1, None, b""),
        ml.PushPull(True, (ml.PushNodeState("a", LO, 1, b"", 3, 1, bytes(6)),), b"user"),
        ml.User(b"u"), ml.Err("boom"),
    ]
    for m in msgs:
        assert ml.decode(ml.encode(m)) == m
    with pytest.raises(LocalProtocolError):
        ml.encode("nope")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ml.encode(ml.Nack(2**70))


def test_decode_refuses_malformed_bodies() -> None:
    for bad in [b"", b"\x63", b"\x00\xc1", b"\x00\x01", b"\x00" + msgpack.packb({"SeqNo": -1}),
                b"\x00" + msgpack.packb({"SeqNo": 1, "Node": 5}),
                b"\x04" + msgpack.packb({"Vsn": [1, 2]}), b"\x04" + msgpack.packb({"Vsn": "abc"}),
                b"\x01" + msgpack.packb({"SeqNo": 1, "Nack": 1}),
                b"\x00" + msgpack.packb({"SeqNo": 1, "Node": b"\xff"}, use_bin_type=False),
                b"\x04" + msgpack.packb({"Meta": b"x" * 600}, use_bin_type=False)]:
        with pytest.raises(DecodeError):
            ml.decode(bad)
    # unknown fields and non-UTF-8 keys are ignored, as Go ignores them; Vsn as a list is taken
    body = {"SeqNo": 3, "Extra": 1, b"\xff": 2}
    assert ml.decode(b"\x0b" + msgpack.packb(body, use_bin_type=False)) == ml.Nack(3)
    a = ml.decode(b"\x04" + msgpack.packb({"Node": "x", "Vsn": [1, 5, 2, 0, 0, 0]}))
    assert isinstance(a, ml.Alive) and a.vsn == bytes([1, 5, 2, 0, 0, 0])


def test_compound_crc_and_compress_unpack() -> None:
    parts = [ml.encode(ml.Nack(i)) for i in range(3)]
    data = ml.with_crc(ml.compress(ml.compound(parts)))
    assert ml.unpack(data) == parts
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(DecodeError, match="CRC"):
        ml.unpack(bytes(bad))
    with pytest.raises(DecodeError):
        ml.unpack(b"\x0c\x00")
    with pytest.raises(DecodeError):
        ml.unpack(b"")
    with pytest.raises(DecodeError, match="length byte"):
        ml.split_compound(b"")
    with pytest.raises(DecodeError, match="truncated"):
        ml.split_compound(b"\x03\x00")
    # a truncated last part is dropped, as memberlist drops it
    assert ml.split_compound(ml.compound(parts)[1:-1]) == parts[:2]
    with pytest.raises(CompressionError, match="algorithm"):
        ml.unpack(b"\x09" + msgpack.packb({"Algo": 1, "Buf": b""}))
    nested = parts[0]
    for _ in range(6):
        nested = ml.with_crc(nested)
    with pytest.raises(DecodeError, match="deep"):
        ml.unpack(nested)
    with pytest.raises(LocalProtocolError):
        ml.compound([b"x"] * 256)
    with pytest.raises(LocalProtocolError):
        ml.compound([b"x" * 70000])


def test_streams_are_read_in_pieces_and_bounded() -> None:
    data = ml.encode(ml.PushPull(False, tuple(ml.PushNodeState(f"n{i}", LO, 1, b"", 1, 0, bytes(6))
                                              for i in range(50)), b"state"))
    chunks = [data[i:i + 7] for i in range(0, len(data), 7)]
    r = ml.StreamReader(more=lambda n: chunks.pop(0) if chunks else b"")
    msg, t = ml.read_stream(r)
    assert t == ml.MsgType.PUSH_PULL and isinstance(msg, ml.PushPull) and len(msg.states) == 50
    with pytest.raises(DecodeError, match="ends early"):
        ml.read_stream(ml.StreamReader(data[:30]))
    with pytest.raises(DecodeError):
        ml.read_stream(ml.StreamReader(data), max_states=10)
    with pytest.raises(PacketTooLarge):
        ml.read_stream(ml.StreamReader(more=lambda n: b"\x06" + b"\x00" * 100, limit=50))
    with pytest.raises(DecodeError, match="does not travel"):
        ml.read_stream(ml.StreamReader(ml.encode(ml.Suspect(1, "a", "b"))))
    with pytest.raises(DecodeError):
        ml.read_stream(ml.StreamReader(b"\x00\xc1"))
    msg, _ = ml.read_stream(ml.StreamReader(ml.compress(ml.user_stream(b"hi"))))
    assert msg == ml.User(b"hi")
    with pytest.raises(CompressionError):
        ml.read_stream(ml.StreamReader(b"\x09" + msgpack.packb({"Algo": 2, "Buf": b""})))
    assert ml.decode(ml.user_stream(b"x")[:1] + b"x") == ml.User(b"x")
    r = ml.StreamReader(b"abc")
    r.read(2)
    r.unread(1)
    assert r.rest() == b"bc"


# ------------------------------------------------------------------ security

def test_encryption_versions_keyring_and_labels() -> None:
    k1, k2 = bytes(range(16)), bytes(range(1, 33))
    ring = sec.MLKeyring([k2, k1])
    assert ring.primary == k2 and len(ring) == 2
    for version in (0, 1):
        data = sec.encrypt(ring, version, b"hello", b"lab")
        assert len(data) == sec.encrypted_length(version, 5)
        assert sec.decrypt(sec.MLKeyring([k1, k2]), data, b"lab") == b"hello"
        with pytest.raises(AuthenticationError):
            sec.decrypt(ring, data, b"other")
    assert sec.overhead(0) == 45 and sec.overhead(1) == 29
    with pytest.raises(AuthenticationError):
        sec.decrypt(sec.MLKeyring([k1]), sec.encrypt(sec.MLKeyring([k2]), 1, b"x"), b"")
    for bad in (b"", b"\x02" + bytes(40), b"\x01" + bytes(5)):
        with pytest.raises(EncryptionError):
            ring.open(bad, b"")
    with pytest.raises(ConfigError):
        sec.MLKeyring([])
    with pytest.raises(ConfigError):
        sec.MLKeyring([b"short"])
    with pytest.raises(ConfigError):
        ring.seal(2, b"", b"")
    # version 0 with a bad padding
    nonce = bytes(12)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    bad = b"\x00" + nonce + AESGCM(k2).encrypt(nonce, b"x" * 15 + b"\x20", None)
    with pytest.raises(EncryptionError, match="padding"):
        ring.open(bad, b"")
    framed = sec.stream_encrypt(ring, 1, b"state", b"lab")
    assert framed[0] == sec.ENCRYPT_MSG
    n = sec.stream_length(framed[:5])
    assert sec.stream_decrypt(ring, framed[:5], framed[5:5 + n], b"lab") == b"state"
    with pytest.raises(DecodeError, match="larger"):
        sec.stream_length(b"\x0a" + struct.pack(">I", sec.MAX_ENCRYPTED_STREAM + 1))
    # labels
    assert sec.add_label(b"msg", b"") == b"msg"
    assert sec.remove_label(sec.add_label(b"msg", b"lab")) == (b"lab", b"msg")
    assert sec.remove_label(b"msg") == (b"", b"msg")
    for bad in (b"\xf4\x01", b"\xf4\x00x", b"\xf4\x05ab"):
        with pytest.raises(DecodeError):
            sec.remove_label(bad)
    with pytest.raises(ConfigError):
        sec.label_header(b"x" * 256)
    with pytest.raises(LabelMismatch):
        sec.check_label(b"a", b"b")


# ------------------------------------------------------------------ names, versions, metadata

def test_names_map_to_ids_injectively() -> None:
    nid = NodeID.generate()
    assert ident.name_to_id(str(nid)) == nid
    assert ident.name_to_id("go1") == ident.name_to_id("go1") != ident.name_to_id("go2")
    assert ident.name_to_id(str(nid).upper()) != nid  # only the canonical text is a UUID
    table = ident.NameTable("me")
    assert table.own_id == ident.name_to_id("me") and table.name_of(table.own_id) == "me"
    assert table.name_of(nid) == str(nid) and len(table) == 1
    # a second name landing on a taken id is refused
    table._by_id[ident.name_to_id("b").bytes] = "a"
    with pytest.raises(DecodeError, match="maps to the id"):
        table.id_of("b")
    small = ident.NameTable("me", max_names=1)
    with pytest.raises(DecodeError, match="too many"):
        small.id_of("other")


def test_versions_addresses_and_metadata() -> None:
    assert ident.our_vsn(False) == bytes([2, 5, 2, 0, 0, 0])
    assert ident.our_vsn(True)[3:] == bytes([2, 5, 4])
    assert ident.compatible(bytes([1, 5, 2, 0, 0, 0]))
    assert not ident.compatible(bytes([1, 1, 1, 0, 0, 0])) and not ident.compatible(b"")
    assert ident.split_addr("[::1]:80") == (bytes(15) + b"\x01", 80)
    assert ident.join_addr(bytes(15) + b"\x01", 80) == "[::1]:80"
    for bad in ("x:1", "127.0.0.1:0", "127.0.0.1:x"):
        with pytest.raises(LocalProtocolError):
            ident.split_addr(bad)
    with pytest.raises(DecodeError):
        ident.join_addr(b"abc", 1)
    meta = {"zone": "a", "n": 3, "ok": True, "f": 1.5}
    assert ident.decode_meta(ident.encode_meta(meta, False)) == meta
    assert ident.decode_meta(ident.encode_meta({"role": "web", "n": 3}, True)) == {"role": "web", "n": "3"}
    assert ident.encode_meta({}, False) == b"" and ident.encode_meta({}, True) == b"\xff\x80"
    assert ident.decode_meta(b"") == {}
    opaque = ident.decode_meta(b"hello")
    assert ident.opaque_meta(opaque) == b"hello" and ident.encode_meta(opaque, False) == b"hello"
    assert ident.opaque_meta({}) == b"" and ident.opaque_meta({ident.OPAQUE_META_KEY: "!!"}) == b""
    for odd in (msgpack.packb({"k": [1]}), msgpack.packb({"": 1}), msgpack.packb({"f": float("nan")})):
        assert ident.OPAQUE_META_KEY in ident.decode_meta(odd)
    with pytest.raises(LocalProtocolError, match="512"):
        ident.encode_meta({"k": "v" * 600}, False)


# ------------------------------------------------------------------ the profile

def _raw(value: object) -> bytes:
    return DEFAULT_CODEC.encode(value)


def test_the_core_messages_map_onto_memberlist_and_back() -> None:
    me = MemberlistCodec("me")
    peer = ident.name_to_id("go1")
    # learn go1's address and versions from its alive
    alive = ml.encode(ml.Alive(3, "go1", LO, 7000, b"hello", bytes([1, 5, 2, 0, 0, 0])))
    (pkt,) = me.decode_all(alive, "127.0.0.1:7000")
    g = core.from_wire(pkt.msg_type, pkt.unmarshal())
    assert isinstance(g, core.Gossip) and isinstance(g.updates[0], core.Alive)
    assert g.updates[0].node == peer and g.updates[0].incarnation == core_inc(3) == 2
    assert g.updates[0].meta == {ident.OPAQUE_META_KEY: "aGVsbG8="}
    assert pkt.sender == peer.bytes and me.wants_crc("127.0.0.1:7000") and not me.wants_crc("x")
    # a buddy ping with updates: ping + suspect + the updates, in a compound
    up = core.Alive(me.own_id, 0, "127.0.0.1:9", {"a": 1})
    data = me.encode(MessageType.PING, bytes(16), 0, 1, core.to_wire(
        core.Ping(5, peer, "127.0.0.1:9", (up, core.Dead(peer, 1, me.own_id)), 4))[1])
    msgs = [ml.decode(p) for p in ml.unpack(data)]
    assert msgs[0] == ml.Ping(5, "go1", LO, 9, "me")
    assert msgs[1] == ml.Suspect(wire_inc(4), "go1", "me")
    assert isinstance(msgs[2], ml.Alive) and msgs[2].incarnation == 1 and msgs[2].vsn == me.vsn
    assert msgs[3] == ml.Dead(2, "go1", "me")
    # and back: a ping, then the gossip
    pkts = me.decode_all(data, "127.0.0.1:9")
    assert [p.msg_type for p in pkts] == [MessageType.PING, MessageType.GOSSIP]
    ping = core.from_wire(MessageType.PING, pkts[0].unmarshal())
    assert isinstance(ping, core.Ping) and ping.target == peer and ping.source_addr == "127.0.0.1:9"
    for msg in (core.Ack(7, (up,)), core.Nack(8), core.Gossip((core.Suspect(peer, 1, me.own_id),)),
                core.PingReq(9, peer, "127.0.0.1:7000", "127.0.0.1:9", True, 0.5)):
        mt, value = core.to_wire(msg)
        back = me.decode_all(me.encode_raw(mt, bytes(16), 0, 1, _raw(value)), "127.0.0.1:7000")
        assert back[0].msg_type == mt
    # an ack's sender is the member at its source
    ack = me.decode_all(ml.encode(ml.Ack(1)), "127.0.0.1:7000")[0]
    assert ack.sender == peer.bytes
    # a ping without names answers to its source
    anon = me.decode_all(ml.encode(ml.Ping(1, "")), "127.0.0.1:5")[0]
    p = core.from_wire(MessageType.PING, anon.unmarshal())
    assert isinstance(p, core.Ping) and p.target == me.own_id and p.source_addr == "127.0.0.1:5"


def test_push_pull_joins_and_their_answers() -> None:
    me = MemberlistCodec("me", serf=True)
    peer = ident.name_to_id("go1")
    state = core.MemberState(me.own_id, "127.0.0.1:9", NodeState.ALIVE, 0, {"role": "web"})
    join = me.encode(MessageType.JOIN, bytes(16), 0, 1, core.to_wire(core.Join(11, "127.0.0.1:9", (state,)))[1])
    pp = ml.decode(join)
    assert isinstance(pp, ml.PushPull) and pp.join and pp.states[0].meta == b"\xff" + msgpack.packb(
        {"role": "web"}, use_bin_type=False) and pp.states[0].incarnation == 1
    answer = ml.encode(ml.PushPull(False, (ml.PushNodeState("x", LO, 2, None, 1, 9, bytes(6)),
                                           ml.PushNodeState("go1", LO, 7000, b"", 4, 3, bytes([2, 5, 2, 2, 5, 4])))))
    (reply,) = me.decode_all(envelope(join, answer), "127.0.0.1:7000")
    r = core.from_wire(reply.msg_type, reply.unmarshal())
    assert isinstance(r, core.JoinReply) and r.seq == 11 and r.accepted
    assert [s.node for s in r.states] == [peer] and r.states[0].state is NodeState.LEFT
    with pytest.raises(DecodeError, match="no push/pull"):
        me.decode_all(envelope(join, answer), "127.0.0.1:7000")  # answered once only
    # a refused join
    me.encode(MessageType.JOIN, bytes(16), 0, 1, core.to_wire(core.Join(12, "127.0.0.1:9", (state,)))[1])
    (refused,) = me.decode_all(envelope(join, ml.encode(ml.Err("no"))), "127.0.0.1:7000")
    r = core.from_wire(refused.msg_type, refused.unmarshal())
    assert isinstance(r, core.JoinReply) and not r.accepted and r.reason == "no"
    # an anti-entropy push/pull and its answer
    sync = me.encode(MessageType.PUSH_PULL, bytes(16), 0, 1,
                     core.to_wire(core.PushPull(13, "127.0.0.1:9", (state,)))[1])
    (ppr,) = me.decode_all(envelope(sync, answer), "127.0.0.1:7000")
    assert ppr.msg_type == MessageType.PUSH_PULL_REPLY
    me.encode(MessageType.PUSH_PULL, bytes(16), 0, 1, core.to_wire(core.PushPull(14, "127.0.0.1:9", (state,)))[1])
    with pytest.raises(DecodeError, match="refused"):
        me.decode_all(envelope(sync, ml.encode(ml.Err("no"))), "127.0.0.1:7000")
    me.encode(MessageType.PUSH_PULL, bytes(16), 0, 1, core.to_wire(core.PushPull(15, "127.0.0.1:9", (state,)))[1])
    with pytest.raises(DecodeError, match="answered with"):
        me.decode_all(envelope(sync, ml.encode(ml.Ping(1, "x"))), "127.0.0.1:7000")
    with pytest.raises(DecodeError):
        me.decode_all(b"\xf0\x00", "x")
    # an incoming push/pull reaches the core as one; answers encode back
    (inc,) = me.decode_all(answer, "127.0.0.1:7000")
    assert inc.msg_type == MessageType.PUSH_PULL
    for msg in (core.PushPullReply(1, (state,)), core.JoinReply(1, True, "", (state,)),
                core.JoinReply(1, False, "why")):
        mt, value = core.to_wire(msg)
        assert me.encode_raw(mt, bytes(16), 0, 1, _raw(value))
    # a member of protocol 1 only is handed to the core with a version it refuses
    (old,) = me.decode_all(ml.encode(ml.Alive(1, "old", LO, 5, b"", bytes([1, 1, 1, 0, 0, 0]))), "127.0.0.1:5")
    g = core.from_wire(old.msg_type, old.unmarshal())
    assert isinstance(g, core.Gossip) and g.updates[0].pv == 0  # type: ignore[union-attr]
    assert me.refused_versions == 1


def test_user_messages_and_refusals() -> None:
    me = MemberlistCodec("me", max_packet_size=100)
    assert me.encode(USER_MSG, bytes(16), 0, 1, b"raw") == b"\x08raw"
    assert me.encode(USER_MSG, bytes(16), 0, 1, {"k": 1}) == b"\x08" + msgpack.packb({"k": 1})
    (u,) = me.decode_all(b"\x08hey", "127.0.0.1:1")
    assert u.msg_type == USER_MSG and u.unmarshal() == b"hey"
    with pytest.raises(LocalProtocolError, match="type 128 only"):
        me.encode(USER_MSG + 1, bytes(16), 0, 1, b"x")
    with pytest.raises(MessageTooLarge):
        me.encode(USER_MSG, bytes(16), 0, 1, b"x" * 200)
    with pytest.raises(LocalProtocolError):
        me.encode(MessageType.PING, bytes(16), 0, 1, [1])
    with pytest.raises(DecodeError):
        me.decode_all(b"", "x")
    with pytest.raises(DecodeError, match="does not travel"):
        me.decode_all(ml.encode(ml.Err("x")), "x")
    assert me.codec is DEFAULT_CODEC and me.max_packet_size == 100 and me.keyring is None
    assert zlib.crc32(b"") == 0


def test_an_echo_of_our_own_alive_keeps_the_metadata_stamp_we_sent() -> None:
    """memberlist carries no metadata stamp: an echo of our alive must not look like another
    version of our metadata (we would refute it, and the echo of the refutation, forever)."""
    me = MemberlistCodec("me")
    up = core.Alive(me.own_id, 3, "127.0.0.1:9", {"k": "v"}, 123456789)
    data = me.encode(MessageType.GOSSIP, bytes(16), 0, 1, core.to_wire(core.Gossip((up,)))[1])
    (back,) = me.decode_all(data, "127.0.0.1:7000")
    g = core.from_wire(back.msg_type, back.unmarshal())
    assert isinstance(g, core.Gossip) and g.updates[0] == up


def test_a_removal_has_no_form_on_this_wire_and_stays_behind() -> None:
    me = MemberlistCodec("me")
    peer = ident.name_to_id("go1")
    forget = core.Forget(peer, 3, me.own_id)
    # Beside other updates it is left out; alone, the gossip cannot travel and says so.
    data = me.encode(MessageType.ACK, bytes(16), 0, 1, core.to_wire(
        core.Ack(7, (forget, core.Dead(peer, 1, me.own_id))))[1])
    assert [type(ml.decode(p)) for p in ml.unpack(data)] == [ml.Ack, ml.Dead]
    with pytest.raises(LocalProtocolError, match="no update of this gossip"):
        me.encode(MessageType.GOSSIP, bytes(16), 0, 1, core.to_wire(core.Gossip((forget,)))[1])
