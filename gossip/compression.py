"""Payload compression: the :class:`Compressor` protocol and lz4.

Compression is applied by :mod:`gossip.packet` above a size threshold and flagged in the header
(``FLAG_COMPRESSED``); the only wire algorithm is lz4 block format with the uncompressed size
stored in front (4 bytes, little-endian), which lets :meth:`Lz4Compressor.decompress` refuse an
oversized payload *before* allocating for it.

This module imports only :mod:`gossip.errors`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gossip.errors import CompressionError, ConfigError, PacketTooLarge

__all__ = ["Compressor", "Lz4Compressor", "get_compressor", "LZ4_MAX_RATIO"]

LZ4_MAX_RATIO = 255
"""lz4 cannot expand data by more than about 255x; a claimed size beyond that is a lie."""

_SIZE_PREFIX = 4


@runtime_checkable
class Compressor(Protocol):
    """What a payload compressor provides.

    Attributes:
        name: the registry name (``"lz4"``).
    """

    name: str

    def compress(self, data: bytes) -> bytes:
        """Return *data* compressed."""
        ...

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Return *data* decompressed, refusing results larger than *max_size* bytes.

        Raises:
            PacketTooLarge: the decompressed size would exceed *max_size*.
            CompressionError: *data* is not a valid compressed payload.
        """
        ...


class Lz4Compressor:
    """lz4 block compression with the uncompressed size stored in a 4-byte little-endian prefix.

    Args:
        acceleration: lz4 "fast" acceleration (1 is the default; higher is faster and larger).
    """

    name = "lz4"

    def __init__(self, acceleration: int = 1) -> None:
        if acceleration < 1:
            raise ConfigError("compression", f"lz4 acceleration must be >= 1, got {acceleration}")
        self._acceleration = acceleration
        self._lz4: Any = None  # lz4.block, loaded by the first packet compressed or expanded

    @property
    def _block(self) -> Any:
        # Loaded here, not at import or construction: a node that never sends or receives a
        # packet above ``compress_min_size`` never pays for it (about 0.2 MiB).
        if self._lz4 is None:
            import lz4.block

            self._lz4 = lz4.block
        return self._lz4

    def __repr__(self) -> str:
        return f"Lz4Compressor(acceleration={self._acceleration})"

    def compress(self, data: bytes) -> bytes:
        """Return *data* compressed as an lz4 block with its size stored in front."""
        result: bytes = self._block.compress(
            data, mode="fast", acceleration=self._acceleration, store_size=True
        )
        return result

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Return *data* decompressed, checking the stored size against *max_size* first.

        Raises:
            PacketTooLarge: the stored size exceeds *max_size*.
            CompressionError: the data is truncated, claims an impossible size, or is corrupt.
        """
        n = len(data)
        if n < _SIZE_PREFIX:
            raise CompressionError(f"lz4 payload of {n} bytes is shorter than its size prefix")
        size = int.from_bytes(data[:_SIZE_PREFIX], "little")
        if size > max_size:
            raise PacketTooLarge(f"lz4 payload claims {size} bytes decompressed, limit is {max_size}")
        if size > (n - _SIZE_PREFIX) * LZ4_MAX_RATIO + 16:
            raise CompressionError(
                f"lz4 payload of {n} bytes cannot decompress to the {size} bytes it claims"
            )
        try:
            result: bytes = self._block.decompress(data)
        except (self._block.LZ4BlockError, ValueError, MemoryError) as exc:
            raise CompressionError(f"corrupt lz4 payload: {exc}") from exc
        if len(result) != size:  # pragma: no cover - lz4 enforces this itself
            raise CompressionError(f"lz4 payload decompressed to {len(result)} bytes, not {size}")
        return result


def get_compressor(name: str | Compressor | None) -> Compressor | None:
    """Return a compressor by name: ``"lz4"``, or ``None`` for ``"none"``/``""``/``None``;
    a :class:`Compressor` object is returned as it is.

    Raises:
        ConfigError: the name is unknown.
    """
    if name is not None and not isinstance(name, str):
        return name
    if name is None or name in ("none", ""):
        return None
    if name == "lz4":
        return Lz4Compressor()
    raise ConfigError("compression", f"unknown compression {name!r} (known: 'lz4', 'none')")
