"""Payload compression: the :class:`Compressor` protocol, lz4 and Snappy.

Compression is applied by :mod:`gossip.packet` above a size threshold and flagged in the header
(``FLAG_COMPRESSED``, with ``FLAG_SNAPPY`` for Snappy). Two wire algorithms:

* lz4 (the default): an lz4 block with the uncompressed size stored in front (4 bytes,
  little-endian);
* Snappy (``"snappy"``, the optional extra ``gossip-cluster[snappy]``, through cramjam):
  Snappy's *block* format, as paularlott/gossip's Go library writes it (``snappy.Encode``),
  which starts with the uncompressed size as a varint.

Either way the stored size lets ``decompress`` refuse an oversized payload, or one that claims
more than the format can expand to, *before* allocating for it.

This module imports only :mod:`gossip.errors` (lz4 and cramjam on first use).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gossip.errors import CompressionError, ConfigError, PacketTooLarge

__all__ = ["Compressor", "Lz4Compressor", "SnappyCompressor", "get_compressor", "snappy_available",
           "COMPRESSORS", "LZ4_MAX_RATIO", "SNAPPY_MAX_RATIO", "SNAPPY_EXTRA"]

LZ4_MAX_RATIO = 255
"""lz4 cannot expand data by more than about 255x; a claimed size beyond that is a lie."""
SNAPPY_MAX_RATIO = 22
"""Snappy cannot expand data by more than 64/3x (a 3-byte copy of 64 bytes); a claimed size
beyond 22x is a lie."""
SNAPPY_EXTRA = "pip install 'gossip-cluster[snappy]'"
"""What installs Snappy's dependency (cramjam)."""
COMPRESSORS = ("lz4", "snappy")
"""The compressor names :func:`get_compressor` (and ``Config.compressor``) accepts."""

_SIZE_PREFIX = 4


@runtime_checkable
class Compressor(Protocol):
    """What a payload compressor provides.

    Attributes:
        name: the registry name (``"lz4"``, ``"snappy"``). A compressor named ``"snappy"``
            produces Snappy's block format and travels flagged as such (``FLAG_SNAPPY``), so
            that any node can read it; any other travels where lz4 does, so every node must
            use the same one.
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


_SNAPPY: Any = None


def _snappy_module() -> Any:
    """Return ``cramjam.snappy`` (imported the first time; ImportError without cramjam)."""
    global _SNAPPY
    if _SNAPPY is None:
        import cramjam

        _SNAPPY = cramjam
    return _SNAPPY


def snappy_available() -> bool:
    """Return True if Snappy can be used here (the ``snappy`` extra, cramjam, is installed)."""
    try:
        _snappy_module()
    except ImportError:
        return False
    return True


def _varint32(data: bytes) -> tuple[int, int]:
    """Return ``(value, length)`` of the little-endian base-128 varint at the start of
    ``data``: at most 5 bytes and 32 bits, as Snappy's block header is.

    Raises:
        CompressionError: truncated, longer than 5 bytes, or over 32 bits.
    """
    value = 0
    for i in range(min(len(data), 5)):
        byte = data[i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 32:
                break
            return value, i + 1
    else:
        if len(data) < 5:
            raise CompressionError(
                f"snappy payload of {len(data)} bytes ends inside its size varint")
    raise CompressionError("snappy payload has a size varint over 32 bits")


class SnappyCompressor:
    """Snappy block compression (the format of Go's ``snappy.Encode``, the size as a varint in
    front), through cramjam: the optional extra ``gossip-cluster[snappy]``.

    Raises:
        ConfigError: cramjam is not installed (``field="compressor"``; the message says what
            to install).
    """

    name = "snappy"

    def __init__(self) -> None:
        try:
            self._snappy = _snappy_module().snappy
            self._error = _snappy_module().DecompressionError
        except ImportError:
            raise ConfigError(
                "compressor", f"snappy needs cramjam, which is not installed: {SNAPPY_EXTRA}"
            ) from None

    def __repr__(self) -> str:
        return "SnappyCompressor()"

    def compress(self, data: bytes) -> bytes:
        """Return *data* as a Snappy block (its size as a varint in front)."""
        return bytes(self._snappy.compress_raw(data))

    def decompress(self, data: bytes, max_size: int) -> bytes:
        """Return the Snappy block *data* decompressed, checking its stored size against
        *max_size* (and against what its length can expand to) first.

        Raises:
            PacketTooLarge: the stored size exceeds *max_size*.
            CompressionError: the data is truncated, claims an impossible size, or is corrupt.
        """
        n = len(data)
        if n == 0:
            raise CompressionError("empty snappy payload")
        size, header = _varint32(data)
        if size > max_size:
            raise PacketTooLarge(
                f"snappy payload claims {size} bytes decompressed, limit is {max_size}")
        if size > (n - header) * SNAPPY_MAX_RATIO:
            raise CompressionError(
                f"snappy payload of {n} bytes cannot decompress to the {size} bytes it claims")
        out = bytearray(size)  # exactly the checked size: the library writes into it
        try:
            got = self._snappy.decompress_raw_into(data, out)
        except (self._error, ValueError, MemoryError) as exc:
            raise CompressionError(f"corrupt snappy payload: {exc}") from exc
        if got != size:
            raise CompressionError(f"snappy payload decompressed to {got} bytes, not {size}")
        return bytes(out)


def get_compressor(name: str | Compressor | None) -> Compressor | None:
    """Return a compressor by name: ``"lz4"``, ``"snappy"``, or ``None`` for
    ``"none"``/``""``/``None``; a :class:`Compressor` object is returned as it is.

    Raises:
        ConfigError: the name is unknown, or names Snappy without cramjam installed.
    """
    if name is not None and not isinstance(name, str):
        return name
    if name is None or name.lower() in ("none", ""):
        return None
    name = name.lower()
    if name == "lz4":
        return Lz4Compressor()
    if name == "snappy":
        return SnappyCompressor()
    raise ConfigError("compression", f"unknown compression {name!r} (known: 'lz4', 'snappy', 'none')")
