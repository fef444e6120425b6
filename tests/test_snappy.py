"""Snappy compression (``compressor="snappy"``): the block format, the size checks made before
decompressing, the packet flag that lets any node read it, and what a node without cramjam is
told.

The tests that compress need cramjam (the ``snappy`` extra, which the ``test`` extra installs);
without it they are skipped, saying so. The ones about a missing cramjam run everywhere.
"""

from __future__ import annotations

import os
import sys

import pytest

from gossip import Config
from gossip.compression import (
    SNAPPY_MAX_RATIO,
    Compressor,
    SnappyCompressor,
    get_compressor,
    snappy_available,
)
from gossip.errors import CompressionError, ConfigError, DecodeError, PacketTooLarge
from gossip.packet import PacketCodec
from gossip.security import Keyring
from gossip.wire import FLAG_COMPRESSED, FLAG_SNAPPY, MAX_DATAGRAM_PAYLOAD, USER_MSG

needs_snappy = pytest.mark.skipif(
    not snappy_available(),
    reason="cramjam is not installed (the snappy extra: pip install 'gossip-cluster[snappy]')")

SENDER = bytes(range(16))
TEXT = b"the quick brown fox jumps over the lazy dog. " * 200


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.fixture
def no_cramjam(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make cramjam unimportable, as on a machine without the snappy extra."""
    import gossip.compression as compression

    monkeypatch.setitem(sys.modules, "cramjam", None)
    monkeypatch.setattr(compression, "_SNAPPY", None)


# ---------------------------------------------------------------------------------- the codec


@needs_snappy
def test_round_trip_in_snappys_block_format() -> None:
    import cramjam

    c = SnappyCompressor()
    assert isinstance(c, Compressor) and c.name == "snappy" and get_compressor("snappy").name == "snappy"
    for data in (b"", b"x", TEXT, os.urandom(5000)):
        packed = c.compress(data)
        # The block format Go's snappy.Encode writes: the size as a varint, then the stream.
        assert packed.startswith(_varint(len(data)))
        assert bytes(cramjam.snappy.decompress_raw(packed)) == data
        assert c.decompress(packed, max_size=len(data)) == data


@needs_snappy
def test_a_claimed_size_over_the_limit_or_the_ratio_is_refused_before_decompressing() -> None:
    c = SnappyCompressor()
    packed = c.compress(TEXT)
    with pytest.raises(PacketTooLarge, match=f"claims {len(TEXT)} bytes decompressed, limit is"):
        c.decompress(packed, max_size=len(TEXT) - 1)
    # A lie: a few bytes claiming far more than Snappy can expand them to (at most 64/3x).
    body = b"\x00" * 100
    with pytest.raises(CompressionError, match="cannot decompress to"):
        c.decompress(_varint(100 * SNAPPY_MAX_RATIO + 1) + body, max_size=1 << 30)
    with pytest.raises(PacketTooLarge):
        c.decompress(_varint(1 << 31) + body, max_size=1 << 20)
    # The most compressible input there is stays within the ratio the check allows.
    zeros = c.compress(bytes(1 << 20))
    assert (1 << 20) <= (len(zeros) - len(_varint(1 << 20))) * SNAPPY_MAX_RATIO
    assert c.decompress(zeros, max_size=1 << 20) == bytes(1 << 20)


@needs_snappy
@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff\xff\xff", b"\xff\xff\xff\xff\xff\x01",
                                  b"\x0a\x00\x01", b"\x05\x10abc"])
def test_corrupt_blocks_are_compression_errors(data: bytes) -> None:
    with pytest.raises(CompressionError):
        SnappyCompressor().decompress(data, max_size=1000)


@needs_snappy
def test_every_truncation_is_a_compression_error() -> None:
    c = SnappyCompressor()
    packed = c.compress(TEXT[:600] + os.urandom(200))
    for cut in range(len(packed)):
        with pytest.raises(CompressionError):
            c.decompress(packed[:cut], max_size=10_000)


def test_without_cramjam_the_config_says_what_to_install(no_cramjam: None) -> None:
    assert not snappy_available()
    with pytest.raises(ConfigError, match=r"needs cramjam.*pip install 'gossip-cluster\[snappy\]'") as info:
        Config.local(compressor="snappy").validate()
    assert info.value.field == "compressor"
    with pytest.raises(ConfigError, match=r"gossip-cluster\[snappy\]"):
        get_compressor("snappy")
    Config.local(compressor="lz4").validate()


# ---------------------------------------------------------------------------------- packets


@needs_snappy
@pytest.mark.parametrize("keys", [(), (bytes(range(32)),)], ids=["plain", "encrypted"])
def test_snappy_packets_are_flagged_and_any_node_reads_them(keys: tuple[bytes, ...]) -> None:
    def codec(compressor: object) -> PacketCodec:
        return PacketCodec(keyring=Keyring(list(keys)) if keys else None,
                           compressor=compressor, compress_min_size=64)  # type: ignore[arg-type]

    snappy, lz4, none = codec(SnappyCompressor()), codec(get_compressor("lz4")), codec(None)
    payload = {"text": TEXT.decode()}
    data = snappy.encode(USER_MSG, SENDER, 1, 1, payload)
    assert data[2] & (FLAG_COMPRESSED | FLAG_SNAPPY) == FLAG_COMPRESSED | FLAG_SNAPPY
    for reader in (snappy, lz4, none):
        pkt = reader.decode(data)
        assert pkt.compressed and pkt.unmarshal() == payload
    # ...and a Snappy node reads lz4 packets.
    data = lz4.encode(USER_MSG, SENDER, 1, 1, payload)
    assert data[2] & (FLAG_COMPRESSED | FLAG_SNAPPY) == FLAG_COMPRESSED
    assert snappy.decode(data).unmarshal() == payload


@needs_snappy
def test_the_packet_layer_checks_a_snappy_claim_before_decompressing() -> None:
    # A datagram's payload may not expand past MAX_DATAGRAM_PAYLOAD, nor a frame's past
    # max_packet_size: both refused from the varint alone.
    pc = PacketCodec(compressor=SnappyCompressor(), max_packet_size=1 << 20)
    bomb = SnappyCompressor().compress(bytes(MAX_DATAGRAM_PAYLOAD + 1))
    data = pc.encode_raw(USER_MSG, SENDER, 1, 1, b"")
    raw = bytearray(data[:-4]) + len(bomb).to_bytes(4, "big") + bomb   # length field, then body
    raw[2] |= FLAG_COMPRESSED | FLAG_SNAPPY
    with pytest.raises(PacketTooLarge, match=f"claims {MAX_DATAGRAM_PAYLOAD + 1} bytes"):
        pc.decode(bytes(raw), max_payload=MAX_DATAGRAM_PAYLOAD)
    assert pc.decode(bytes(raw)).payload == bytes(MAX_DATAGRAM_PAYLOAD + 1)  # as a frame: fine
    big = SnappyCompressor().compress(bytes((1 << 20) + 1))
    raw = bytearray(data[:-4]) + len(big).to_bytes(4, "big") + big
    raw[2] |= FLAG_COMPRESSED | FLAG_SNAPPY
    with pytest.raises(PacketTooLarge, match=f"limit is {1 << 20}"):
        pc.decode(bytes(raw))


def test_a_snappy_packet_on_a_node_without_cramjam_is_a_decode_error(no_cramjam: None) -> None:
    pc = PacketCodec()
    data = bytearray(pc.encode_raw(USER_MSG, SENDER, 1, 1, _varint(3) + b"\x08abc"))
    data[2] |= FLAG_COMPRESSED | FLAG_SNAPPY
    with pytest.raises(CompressionError, match=r"Snappy is not installed here.*\[snappy\]") as info:
        pc.decode(bytes(data))
    assert isinstance(info.value, DecodeError)   # counted and dropped like any bad packet
