"""Property tests: hostile bytes into PacketCodec.decode and the codecs raise only gossip errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.codecs import JsonCodec, MsgpackCodec
from gossip.errors import RemoteProtocolError
from gossip.packet import Packet, PacketCodec
from gossip.security import Keyring

KEY = bytes(range(32))
SENDER = bytes(range(16))
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

PLAIN = PacketCodec(label="fuzz", compress_min_size=32, max_packet_size=64 * 1024)
ENCRYPTED = PacketCodec(
    keyring=Keyring([KEY]), label="fuzz", compress_min_size=32, max_packet_size=64 * 1024
)
JSON = PacketCodec(codec=JsonCodec(), label="fuzz", compress_min_size=32, max_packet_size=64 * 1024)

PAYLOADS: list[Any] = [
    {"seq": 1, "target": SENDER, "from": "127.0.0.1:7946"},
    {"text": "abc" * 200, "list": list(range(50))},  # compressed
    b"",
    [None, True, 1.5, "x" * 40],
]


def _valid_packets() -> list[tuple[PacketCodec, bytes]]:
    out = []
    for pc in (PLAIN, ENCRYPTED, JSON):
        for i, payload in enumerate(PAYLOADS):
            out.append((pc, pc.encode(128 + i, SENDER, 2**40 + i, 5, payload)))
    return out


VALID = _valid_packets()
assert any(PLAIN.decode(d).compressed for pc, d in VALID if pc is PLAIN)
assert any(ENCRYPTED.decode(d).compressed for pc, d in VALID if pc is ENCRYPTED)


def _decode_safely(pc: PacketCodec, data: bytes) -> None:
    """Decode (and unmarshal); anything but a RemoteProtocolError fails the test."""
    try:
        pkt = pc.decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(pkt, Packet)
    try:
        pkt.unmarshal()
    except RemoteProtocolError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> tuple[PacketCodec, bytes]:
    pc, data = draw(st.sampled_from(VALID))
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "append":
            buf += draw(st.binary(min_size=1, max_size=8))
    return pc, bytes(buf)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    for pc in (PLAIN, ENCRYPTED, JSON):
        _decode_safely(pc, data)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_behind_a_valid_prefix(tail: bytes) -> None:
    for pc, data in VALID:
        _decode_safely(pc, data[:8] + tail)


@FUZZ
@given(mutated())
def test_mutated_packets(case: tuple[PacketCodec, bytes]) -> None:
    pc, data = case
    _decode_safely(pc, data)


@FUZZ
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=300))
def test_plain_header_with_random_payload(msg_type: int, length: int, payload: bytes) -> None:
    """A well-formed clear prefix with an arbitrary length field and payload bytes."""
    header = PLAIN.encode_raw(msg_type, SENDER, 1, 1, b"")[: 8 + 27]
    for flags in (0, 1):
        data = bytearray(header + length.to_bytes(4, "big") + payload)
        data[2] = flags
        _decode_safely(PLAIN, bytes(data))


@FUZZ
@given(st.binary(max_size=512))
def test_codecs_decode_random_bytes(data: bytes) -> None:
    for codec in (MsgpackCodec(), JsonCodec()):
        try:
            codec.decode(data)
        except RemoteProtocolError:
            pass


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4).filter(lambda k: k != "$b"), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(JSONISH)
def test_codecs_round_trip_random_values(value: Any) -> None:
    for codec in (MsgpackCodec(), JsonCodec()):
        assert codec.decode(codec.encode(value)) == value


@FUZZ
@given(JSONISH, st.integers(0, 2**16 - 1))
def test_codec_bytes_mutated(value: Any, seed: int) -> None:
    for codec in (MsgpackCodec(), JsonCodec()):
        data = bytearray(codec.encode(value))
        if data:
            data[seed % len(data)] ^= 1 + seed % 255
        try:
            codec.decode(bytes(data))
        except RemoteProtocolError:
            pass


@pytest.mark.parametrize("pc", [PLAIN, ENCRYPTED], ids=["plain", "encrypted"])
def test_every_single_byte_flip(pc: PacketCodec) -> None:
    for _, data in [v for v in VALID if v[0] is pc]:
        for i in range(len(data)):
            for bit in range(8):
                buf = bytearray(data)
                buf[i] ^= 1 << bit
                _decode_safely(pc, bytes(buf))
