"""Go's ``compress/lzw`` (LSB order, 8-bit literals), as memberlist compresses with it.

memberlist compresses every packet and stream by default (``EnableCompression``), so a node on
its wire must always decode; it encodes only when asked. The code stream is Go's exactly:
a clear code first, codes from 9 to 12 bits, the table frozen (Go's writer emits a clear code
and starts over) when it reaches 4095 entries, an end code last.

Decoding is bounded: :func:`decompress` stops with :class:`~gossip.errors.CompressionError`
as soon as the output would pass ``limit``, so a small hostile input cannot expand into a
large allocation. Pure functions; no I/O.
"""

from __future__ import annotations

from ..errors import CompressionError

__all__ = ["compress", "decompress"]

_LIT_WIDTH = 8
_CLEAR = 1 << _LIT_WIDTH  # 256
_EOF = _CLEAR + 1  # 257
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # 4095


def compress(data: bytes) -> bytes:
    """Return ``data`` compressed exactly as Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` writes it."""
    out = bytearray()
    bits = 0
    nbits = 0
    width = _LIT_WIDTH + 1

    def write(code: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    hi = _EOF
    overflow = 1 << (_LIT_WIDTH + 1)
    table: dict[int, int] = {}

    def inc_hi() -> bool:
        """Go's incHi: True when the codes ran out and the table was cleared."""
        nonlocal hi, overflow, width, table
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            write(_CLEAR)
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = _CLEAR << 1
            table = {}
            return True
        return False

    write(_CLEAR)
    if not data:
        write(_EOF)
        if nbits > 0:
            out.append(bits & 0xFF)
        return bytes(out)
    code = data[0]
    for x in data[1:]:
        key = (code << 8) | x
        hit = table.get(key)
        if hit is not None:
            code = hit
            continue
        write(code)
        code = x
        if inc_hi():
            continue
        table[key] = hi
    write(code)
    inc_hi()
    write(_EOF)
    if nbits > 0:
        out.append(bits & 0xFF)
    return bytes(out)


def decompress(data: bytes, limit: int) -> bytes:
    """Return the bytes Go's ``lzw.NewReader(r, lzw.LSB, 8)`` reads from ``data``.

    Raises:
        CompressionError: an invalid code, a stream without its end code, or an output
            larger than ``limit`` bytes.
    """
    table: list[bytes] = [bytes((i,)) for i in range(_CLEAR)] + [b"", b""]
    out = bytearray()
    width = _LIT_WIDTH + 1
    hi = _EOF
    overflow = 1 << width
    last = -1
    bits = 0
    nbits = 0
    pos = 0
    n = len(data)
    while True:
        while nbits < width:
            if pos >= n:
                raise CompressionError("lzw: the stream ends before its end code")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code == _CLEAR:
            del table[_EOF + 1:]
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = 1 << width
            last = -1
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR or (code < len(table) and code > _EOF):
            entry = table[code]
        elif code == hi and last >= 0:
            prev = table[last]
            entry = prev + prev[:1]
        else:
            raise CompressionError(f"lzw: invalid code {code}")
        if len(out) + len(entry) > limit:
            raise CompressionError(f"lzw: the output exceeds {limit} bytes")
        out += entry
        if last >= 0:
            table.append(table[last] + entry[:1])
        last = code
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = -1
                hi -= 1
            else:
                width += 1
                overflow <<= 1
