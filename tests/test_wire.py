"""Tests for gossip.wire and the gossip.packet pipeline."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from gossip.codecs import JsonCodec, MsgpackCodec
from gossip.compression import Lz4Compressor
from gossip.errors import (
    AuthenticationError,
    CipherMismatch,
    CompressionError,
    ConfigError,
    DecodeError,
    EncryptionError,
    LabelMismatch,
    LocalProtocolError,
    PacketTooLarge,
    RemoteProtocolError,
    VersionMismatch,
)
from gossip.packet import Packet, PacketCodec
from gossip.security import Keyring
from gossip.wire import (
    FLAG_TAGGED,
    ENCRYPTED_OVERHEAD,
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FLAG_SNAPPY,
    FLAG_XCHACHA,
    HEADER_OVERHEAD,
    INNER_HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_MSG_TYPE,
    PREFIX_SIZE,
    USER_MSG,
    WIRE_VERSION,
    MessageType,
    TransportType,
    is_internal,
    is_reliable,
    is_reserved,
    is_user,
    type_name,
)

KEY = bytes(range(32))
KEY2 = bytes(range(100, 132))
SENDER = bytes(range(16))
SMALL = {"seq": 12345, "target": SENDER, "from": "127.0.0.1:7946"}
BIG = {"text": "gossip " * 1500, "blob": b"\x01\x02" * 100}  # ~10 KiB, compressible


# ------------------------------------------------------------------------------------ wire


def test_wire_constants() -> None:
    assert (PREFIX_SIZE, INNER_HEADER_SIZE, HEADER_OVERHEAD, ENCRYPTED_OVERHEAD) == (8, 31, 39, 67)
    assert (MAGIC, WIRE_VERSION, FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_XCHACHA, FLAG_SNAPPY,
            FLAG_TAGGED, KNOWN_FLAGS) == (0xC5, 1, 1, 2, 4, 8, 16, 31)
    assert [int(t) for t in MessageType] == [n for n in range(14) if n != 10]  # 10 retired
    assert int(MessageType.STREAM_OPEN_ACK) == 11 and int(MessageType.STREAM_OPEN) == 13
    assert int(MessageType.REPLY) == 0


def test_type_helpers() -> None:
    assert all(is_internal(t) and not is_user(t) for t in MessageType)
    assert is_reserved(64) and is_reserved(127) and not is_reserved(63) and not is_reserved(128)
    assert is_user(USER_MSG) and is_user(MAX_MSG_TYPE) and not is_user(127)
    assert not is_user(65536) and not is_internal(-1)
    assert type_name(1) == "PING" and type_name(300) == "user:300" and type_name(70) == "reserved:70"
    # A retired protocol type and numbers outside every range are named, not refused.
    assert type_name(10) == "unknown:10" and type_name(70000) == "unknown:70000"


def test_is_reliable_takes_the_enum_or_its_integers_and_refuses_anything_else() -> None:
    assert is_reliable(TransportType.RELIABLE) is True
    assert is_reliable(TransportType.BEST_EFFORT) is False
    assert is_reliable(1) is True and is_reliable(0) is False          # type: ignore[arg-type]
    for bad in (2, -1, "reliable", None, 1.5):
        with pytest.raises(LocalProtocolError, match="TransportType"):
            is_reliable(bad)                                          # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- round trips


def make(
    codec: Any = None, *, keys: tuple[bytes, ...] = (), compress: bool = True, label: str = "",
    **kw: Any,
) -> PacketCodec:
    return PacketCodec(
        codec=codec,
        keyring=Keyring(keys) if keys else None,
        label=label,
        compressor=Lz4Compressor() if compress else None,
        **kw,
    )


TYPES = [int(t) for t in MessageType] + [USER_MSG, MAX_MSG_TYPE]


@pytest.mark.parametrize("msg_type", TYPES)
@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()], ids=["msgpack", "json"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "lz4"])
@pytest.mark.parametrize("encrypt", [False, True], ids=["clear", "aes"])
@pytest.mark.parametrize("payload", [SMALL, BIG], ids=["small", "10k"])
def test_round_trip(
    msg_type: int, codec: Any, compress: bool, encrypt: bool, payload: dict[str, Any]
) -> None:
    pc = make(codec, keys=(KEY,) if encrypt else (), compress=compress, label="prod")
    data = pc.encode(msg_type, SENDER, 2**64 - 1, 7, payload)
    pkt = pc.decode(data)
    assert isinstance(pkt, Packet)
    assert (pkt.msg_type, pkt.sender, pkt.msg_id, pkt.ttl) == (msg_type, SENDER, 2**64 - 1, 7)
    assert pkt.codec.codec_id == codec.codec_id
    assert pkt.encrypted is encrypt
    assert pkt.compressed is (compress and payload is BIG)
    assert pkt.size == len(data)
    assert pkt.unmarshal() == payload
    assert data[0] == MAGIC and data[1] == WIRE_VERSION and data[3] == codec.codec_id
    assert bool(data[2] & FLAG_ENCRYPTED) is encrypt
    assert bool(data[2] & FLAG_COMPRESSED) is pkt.compressed
    if payload is BIG and compress:
        assert len(data) < 5000
    overhead = ENCRYPTED_OVERHEAD if encrypt else HEADER_OVERHEAD
    if not pkt.compressed:
        assert len(data) == overhead + len(codec.encode(payload))


def test_compressed_only_when_it_helps() -> None:
    pc = make(compress_min_size=16)
    random_payload = os.urandom(2000)  # incompressible
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 1, 0, random_payload))
    assert not pkt.compressed and pkt.unmarshal() == random_payload
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 1, 0, "a" * 100))
    assert pkt.compressed
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 1, 0, "a" * 10))  # below threshold
    assert not pkt.compressed
    pkt = make(compress=False).decode(make(compress=False).encode(USER_MSG, SENDER, 1, 0, BIG))
    assert not pkt.compressed


def test_compressed_packets_decode_without_a_compressor() -> None:
    data = make().encode(USER_MSG, SENDER, 1, 0, BIG)
    assert make(compress=False).decode(data).unmarshal() == BIG


def test_decode_uses_header_codec() -> None:
    data = make(JsonCodec()).encode(USER_MSG, SENDER, 1, 0, {"a": b"b"})
    pkt = make(MsgpackCodec()).decode(data)
    assert pkt.codec.name == "json" and pkt.unmarshal() == {"a": b"b"}


def test_encode_raw_relay() -> None:
    pc = make()
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 5, 3, BIG))
    relayed = pc.decode(pc.encode_raw(pkt.msg_type, pkt.sender, pkt.msg_id, pkt.ttl - 1, pkt.payload))
    assert relayed.ttl == 2 and relayed.unmarshal() == BIG


@dataclasses.dataclass
class Inner:
    name: str
    data: bytes


@dataclasses.dataclass
class Outer:
    items: list[Inner]
    main: Inner
    extra: Inner | None = None


@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()], ids=["msgpack", "json"])
def test_dataclass_payload(codec: Any) -> None:
    pc = make(codec, keys=(KEY,))
    value = Outer([Inner("a", b"\x00"), Inner("b", b"")], Inner("m", b"xyz"))
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 1, 1, value))
    assert pkt.unmarshal(Outer) == value
    assert pkt.unmarshal()["main"] == {"name": "m", "data": b"xyz"}


def test_unmarshal_errors() -> None:
    pc = make()
    pkt = pc.decode(pc.encode_raw(USER_MSG, SENDER, 1, 1, b"\xc1"))
    with pytest.raises(DecodeError):
        pkt.unmarshal()
    pkt = pc.decode(pc.encode(USER_MSG, SENDER, 1, 1, {"name": 1}))
    with pytest.raises(DecodeError):
        pkt.unmarshal(Inner)


# --------------------------------------------------------------------------------- encode args


@pytest.mark.parametrize(
    "args",
    [
        (-1, SENDER, 1, 1),
        (65536, SENDER, 1, 1),
        (1.5, SENDER, 1, 1),
        (1, SENDER[:15], 1, 1),
        (1, SENDER + b"x", 1, 1),
        (1, "x" * 16, 1, 1),
        (1, SENDER, -1, 1),
        (1, SENDER, 2**64, 1),
        (1, SENDER, 1, -1),
        (1, SENDER, 1, 256),
        (1, SENDER, 1, None),
    ],
)
@pytest.mark.parametrize("encrypt", [False, True])
def test_encode_validates(args: tuple[Any, ...], encrypt: bool) -> None:
    pc = make(keys=(KEY,) if encrypt else ())
    with pytest.raises(LocalProtocolError):
        pc.encode(args[0], args[1], args[2], args[3], 1)


def test_encode_too_large() -> None:
    pc = make(compress=False, max_packet_size=1000)
    with pytest.raises(LocalProtocolError):
        pc.encode(USER_MSG, SENDER, 1, 1, b"x" * 1000)


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        PacketCodec(compress_min_size=-1)
    with pytest.raises(ConfigError):
        PacketCodec(max_packet_size=10)
    with pytest.raises(ConfigError):
        PacketCodec(require_encryption=True)


# ------------------------------------------------------------------------------ hostile input


def test_oversized() -> None:
    pc = make(max_packet_size=1000)
    with pytest.raises(PacketTooLarge):
        pc.decode(b"\xc5" * 1001)
    big = make(compress=False).encode(USER_MSG, SENDER, 1, 1, b"x" * 2000)
    with pytest.raises(PacketTooLarge):
        pc.decode(big)


def test_decompression_bomb_refused() -> None:
    data = make().encode(USER_MSG, SENDER, 1, 1, b"\x00" * 200_000)
    assert len(data) < 2000
    with pytest.raises(PacketTooLarge):
        make(max_packet_size=100_000).decode(data)


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("payload", [SMALL, BIG], ids=["small", "10k"])
def test_truncated_at_every_length(encrypt: bool, payload: Any) -> None:
    pc = make(keys=(KEY,) if encrypt else ())
    data = pc.encode(USER_MSG, SENDER, 1, 1, payload)
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            pc.decode(data[:cut])
    with pytest.raises(DecodeError if not encrypt else EncryptionError):
        pc.decode(data + b"\x00")


def test_truncated_and_trailing_plain_messages() -> None:
    pc = make()
    data = pc.encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(DecodeError, match="truncated"):
        pc.decode(data[:-1])
    with pytest.raises(DecodeError, match="trailing bytes"):
        pc.decode(data + b"\x00")
    with pytest.raises(DecodeError, match="truncated"):
        pc.decode(data[:20])


def _with_byte(data: bytes, index: int, value: int) -> bytes:
    out = bytearray(data)
    out[index] = value
    return bytes(out)


@pytest.mark.parametrize("encrypt", [False, True])
def test_bad_prefix_fields(encrypt: bool) -> None:
    pc = make(keys=(KEY,) if encrypt else (), label="prod")
    data = pc.encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(VersionMismatch):
        pc.decode(_with_byte(data, 0, 0xC4))
    with pytest.raises(VersionMismatch):
        pc.decode(_with_byte(data, 1, 2))
    for bit in (0x20, 0x40, 0x80):
        with pytest.raises(DecodeError, match="unknown flags"):
            pc.decode(_with_byte(data, 2, data[2] | bit))
    # The cipher and Snappy bits mean something only beside ENCRYPTED and COMPRESSED.
    with pytest.raises(DecodeError, match="SNAPPY without COMPRESSED"):
        pc.decode(_with_byte(data, 2, data[2] | FLAG_SNAPPY))
    if encrypt:   # an AES-GCM node refuses a packet that says XChaCha before opening it
        with pytest.raises(CipherMismatch, match="sealed with xchacha20-poly1305, this node uses aes-gcm"):
            pc.decode(_with_byte(data, 2, data[2] | FLAG_XCHACHA))
    else:
        with pytest.raises(DecodeError, match="XCHACHA without ENCRYPTED"):
            pc.decode(_with_byte(data, 2, data[2] | FLAG_XCHACHA))
    # Claiming a tag the packet was not built with: refused (sealed: the prefix is authenticated).
    with pytest.raises(EncryptionError if encrypt else DecodeError):
        pc.decode(_with_byte(data, 2, data[2] | FLAG_TAGGED))
    with pytest.raises(DecodeError, match="unknown codec id"):
        pc.decode(_with_byte(data, 3, 77))
    with pytest.raises(LabelMismatch):
        pc.decode(_with_byte(data, 5, data[5] ^ 0xFF))


@pytest.mark.parametrize("encrypt", [False, True])
def test_wrong_label(encrypt: bool) -> None:
    keys = (KEY,) if encrypt else ()
    data = make(keys=keys, label="prod").encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(LabelMismatch):
        make(keys=keys, label="staging").decode(data)
    with pytest.raises(LabelMismatch):
        make(keys=keys).decode(data)
    data = make(keys=keys).encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(LabelMismatch):
        make(keys=keys, label="prod").decode(data)


def test_tampered_encrypted_packet_every_byte() -> None:
    pc = make(keys=(KEY,), label="prod")
    for payload in (SMALL, BIG):
        data = pc.encode(USER_MSG, SENDER, 1, 1, payload)
        for i in range(len(data)):
            for xor in (0x01, 0x80):
                with pytest.raises(RemoteProtocolError) as info:
                    pc.decode(_with_byte(data, i, data[i] ^ xor))
                if i >= PREFIX_SIZE:
                    assert isinstance(info.value, EncryptionError)


def test_flipping_compressed_flag_is_caught() -> None:
    pc = make(keys=(KEY,))
    data = pc.encode(USER_MSG, SENDER, 1, 1, BIG)
    assert data[2] & FLAG_COMPRESSED
    with pytest.raises(AuthenticationError):  # the prefix is authenticated data
        pc.decode(_with_byte(data, 2, data[2] & ~FLAG_COMPRESSED))
    plain = make()
    data = plain.encode(USER_MSG, SENDER, 1, 1, BIG)
    with pytest.raises(DecodeError):
        plain.decode(_with_byte(data, 2, data[2] & ~FLAG_COMPRESSED)).unmarshal()
    data = plain.encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(DecodeError):  # CompressionError or PacketTooLarge (bogus size prefix)
        plain.decode(_with_byte(data, 2, data[2] | FLAG_COMPRESSED))
    data = plain.encode_raw(USER_MSG, SENDER, 1, 1, b"\x05\x00\x00\x00\xff\xff")
    with pytest.raises(CompressionError):
        plain.decode(_with_byte(data, 2, data[2] | FLAG_COMPRESSED))


def test_wrong_key() -> None:
    data = make(keys=(KEY,)).encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(AuthenticationError):
        make(keys=(KEY2,)).decode(data)


def test_encryption_policy() -> None:
    enc = make(keys=(KEY,)).encode(USER_MSG, SENDER, 1, 1, SMALL)
    plain = make().encode(USER_MSG, SENDER, 1, 1, SMALL)
    with pytest.raises(EncryptionError):
        make().decode(enc)
    with pytest.raises(EncryptionError):
        PacketCodec(keyring=Keyring(), require_encryption=False).decode(enc)
    with pytest.raises(EncryptionError):
        make(keys=(KEY,)).decode(plain)
    # during a rollout a node may accept both
    lenient = make(keys=(KEY,), require_encryption=False)
    assert lenient.decode(plain).unmarshal() == SMALL
    assert lenient.decode(enc).unmarshal() == SMALL


def test_plaintext_to_encrypted_upgrade_path() -> None:
    # memberlist's GossipVerifyIncoming/Outgoing: (1) keys installed, send plain, accept both;
    # (2) send encrypted, accept both; (3) refuse plain.
    plain = make()
    stage1 = make(keys=(KEY,), require_encryption=False, encrypt=False)
    stage2 = make(keys=(KEY,), require_encryption=False)
    stage3 = make(keys=(KEY,))
    assert not stage1.encrypts and stage2.encrypts and stage3.encrypts and stage3.requires_encryption
    assert stage1.overhead == plain.overhead < stage2.overhead
    sent = {pc: pc.encode(USER_MSG, SENDER, 1, 1, SMALL) for pc in (plain, stage1, stage2, stage3)}
    assert not stage1.decode(sent[stage1]).encrypted and stage2.decode(sent[stage2]).encrypted
    talks = {(a, b) for a in sent for b in sent if _opens(b, sent[a])}
    # Every step talks with its neighbours, so a rolling upgrade never splits the cluster.
    assert {(plain, stage1), (stage1, plain), (stage1, stage2), (stage2, stage1),
            (stage2, stage3), (stage3, stage2)} <= talks
    assert (plain, stage3) not in talks and (stage1, stage3) not in talks
    with pytest.raises(ConfigError):
        PacketCodec(encrypt=True)


def _opens(pc: PacketCodec, data: bytes) -> bool:
    try:
        return bool(pc.decode(data).unmarshal() == SMALL)
    except EncryptionError:
        return False


def test_key_rotation_through_packets() -> None:
    ring = Keyring([KEY])
    pc = PacketCodec(keyring=ring, label="prod")
    old = pc.encode(USER_MSG, SENDER, 1, 1, SMALL)
    ring.add_key(KEY2)
    ring.use_key(KEY2)
    new = pc.encode(USER_MSG, SENDER, 2, 1, SMALL)
    assert pc.decode(old).msg_id == 1
    assert pc.decode(new).msg_id == 2
    with pytest.raises(AuthenticationError):
        PacketCodec(keyring=Keyring([KEY]), label="prod").decode(new)
    ring.remove_key(KEY)
    with pytest.raises(AuthenticationError):
        pc.decode(old)
    assert pc.decode(new).msg_id == 2
    with pytest.raises(ConfigError):
        ring.remove_key(KEY2)


def test_tiny_and_garbage_inputs() -> None:
    pc = make()
    for data in (b"", b"\xc5", b"\xc5\x01", b"\xc5\x01\x00\x01\x00\x00\x00", bytearray(b"\xc5" * 8)):
        with pytest.raises(RemoteProtocolError):
            pc.decode(bytes(data))
    with pytest.raises(DecodeError):
        pc.decode(memoryview(b"\xc5\x01\x00\x01\x00\x00\x00\x00"))  # type: ignore[arg-type]


def test_header_layout_is_big_endian() -> None:
    data = make(compress=False).encode(0x0102, SENDER, 0x0A0B0C0D0E0F1011, 9, b"")
    assert data[:8] == bytes([0xC5, 1, 0, 1, 0, 0, 0, 0])
    assert data[8:10] == b"\x01\x02"
    assert data[10:26] == SENDER
    assert data[26:34] == bytes.fromhex("0a0b0c0d0e0f1011")
    assert data[34] == 9
    assert data[35:39] == (2).to_bytes(4, "big")
    assert data[39:] == b"\xc4\x00"


def test_encrypted_packets_are_sealed_under_the_senders_own_key() -> None:
    # Two nodes of one cluster never share a sealing key, so the AES-GCM nonce budget is one
    # node's: the sender id travels in clear and the rest is sealed under its derived key.
    pc = make(keys=(KEY,), label="prod")
    other = bytes(range(50, 66))
    data = pc.encode(USER_MSG, SENDER, 7, 1, SMALL)
    assert data[PREFIX_SIZE:PREFIX_SIZE + 16] == SENDER
    ring = Keyring([KEY])
    aad = data[:PREFIX_SIZE] + b"prod"
    with pytest.raises(AuthenticationError):                 # not the cluster key itself
        ring.open(data[PREFIX_SIZE + 16:], aad)
    assert ring.open(data[PREFIX_SIZE + 16:], aad, SENDER)   # the sender's
    forged = data[:PREFIX_SIZE] + other + data[PREFIX_SIZE + 16:]
    with pytest.raises(AuthenticationError):                 # another sender id: another key
        pc.decode(forged)
    assert pc.decode(data).sender == SENDER


def test_type_limits_refuse_a_claimed_payload_before_decompressing() -> None:
    calls: list[int] = []

    class Spy(Lz4Compressor):
        def decompress(self, data: bytes, max_size: int) -> bytes:
            calls.append(max_size)
            return super().decompress(data, max_size)

    pc = PacketCodec(compressor=Spy())
    bomb = pc.encode_raw(MessageType.PING, SENDER, 1, 1, b"\xdd\x00\x20\x00\x00" + b"\xc0" * (1 << 21))
    assert len(bomb) < 12_000
    with pytest.raises(PacketTooLarge, match="claims"):
        pc.decode(bomb, None, {MessageType.PING: 65536})
    assert calls == [65536]             # refused by the size it claims, in the decompressor's check
    plain = make(compress=False).encode_raw(MessageType.GOSSIP, SENDER, 1, 1, b"\x91\x90" * 40_000)
    with pytest.raises(PacketTooLarge, match="message type 9"):
        make().decode(plain, None, {MessageType.GOSSIP: 65536})
    assert make().decode(plain, None, {MessageType.PING: 65536}).msg_type == MessageType.GOSSIP


# ------------------------------------------------------------------------------------ tags


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("payload", [SMALL, BIG])
def test_tagged_packets_round_trip_and_relay(encrypt: bool, payload: Any) -> None:
    pc = make(keys=(KEY,) if encrypt else ())
    data = pc.encode(USER_MSG, SENDER, 9, 4, payload, tag="zone=eu-1")
    pkt = pc.decode(data)
    assert pkt.tag == "zone=eu-1" and pkt.unmarshal() == payload and "tag='zone=eu-1'" in repr(pkt)
    relayed = pc.decode(pc.encode_raw(pkt.msg_type, pkt.sender, pkt.msg_id, 3, pkt.payload, pkt.tag))
    assert relayed.tag == "zone=eu-1" and relayed.ttl == 3 and relayed.payload == pkt.payload
    assert pc.decode(pc.encode(USER_MSG, SENDER, 9, 4, payload)).tag is None
    for n in range(len(data)):   # every truncation is refused
        with pytest.raises(RemoteProtocolError):
            pc.decode(data[:n])


def test_a_bad_tag_is_refused_on_both_sides() -> None:
    pc = make()
    for bad in ("", "x" * 65, "two words", "é"):
        with pytest.raises(LocalProtocolError):
            pc.encode(USER_MSG, SENDER, 1, 3, SMALL, tag=bad)
    good = pc.encode(USER_MSG, SENDER, 1, 3, SMALL, tag="gpu")
    at = HEADER_OVERHEAD
    assert good[at] == 3 and good[at + 1:at + 4] == b"gpu"
    for data in (_with_byte(good, at, 0), _with_byte(good, at, 65), _with_byte(good, at + 1, ord(" ")),
                 _with_byte(good, at + 1, 0xC3)):
        with pytest.raises(DecodeError, match="tag"):
            pc.decode(data)
