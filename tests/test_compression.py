"""Tests for gossip.compression."""

from __future__ import annotations

import os

import lz4.block
import pytest

from gossip.compression import Compressor, Lz4Compressor, get_compressor
from gossip.errors import CompressionError, ConfigError, PacketTooLarge


def test_round_trip() -> None:
    c = Lz4Compressor()
    assert isinstance(c, Compressor)
    for data in (b"", b"x", b"abc" * 1000, os.urandom(5000)):
        assert c.decompress(c.compress(data), max_size=len(data)) == data


def test_stored_size_is_little_endian_prefix() -> None:
    data = b"a" * 1000
    packed = Lz4Compressor().compress(data)
    assert int.from_bytes(packed[:4], "little") == 1000
    assert packed == lz4.block.compress(data, store_size=True)


def test_size_over_limit_refused_before_decompressing() -> None:
    c = Lz4Compressor()
    packed = c.compress(b"a" * 10_000)
    with pytest.raises(PacketTooLarge):
        c.decompress(packed, max_size=9_999)
    # a lying size prefix is refused without allocating
    with pytest.raises(PacketTooLarge):
        c.decompress(b"\xff\xff\xff\x7f" + b"\x00" * 10, max_size=1 << 20)
    with pytest.raises(CompressionError):
        c.decompress((1 << 19).to_bytes(4, "little") + b"\x00" * 10, max_size=1 << 20)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x05\x00\x00", b"\x05\x00\x00\x00", b"\x05\x00\x00\x00\xff\xff"])
def test_corrupt(data: bytes) -> None:
    with pytest.raises(CompressionError):
        Lz4Compressor().decompress(data, max_size=1000)


def test_truncated_and_wrong_size() -> None:
    c = Lz4Compressor()
    packed = c.compress(b"hello world " * 50)
    for cut in range(len(packed)):
        with pytest.raises(CompressionError):
            c.decompress(packed[:cut], max_size=10_000)
    # claims fewer bytes than the block holds
    bad = (10).to_bytes(4, "little") + packed[4:]
    with pytest.raises(CompressionError):
        c.decompress(bad, max_size=10_000)


def test_get_compressor() -> None:
    assert isinstance(get_compressor("lz4"), Lz4Compressor)
    assert get_compressor("none") is None
    assert get_compressor(None) is None
    with pytest.raises(ConfigError):
        get_compressor("zstd")
    with pytest.raises(ConfigError):
        Lz4Compressor(acceleration=0)
