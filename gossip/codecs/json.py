"""The JSON codec (id 2), built on orjson.

JSON has no binary type, so ``bytes`` (and ``bytearray``/``memoryview``) are encoded as the
one-key object ``{"$b": "<base64>"}``, and on decoding every object that is exactly that single
key with a string value becomes ``bytes`` again. A user dict of exactly that shape is therefore
reserved and comes back as ``bytes``. Dataclasses become objects and tuples become arrays, as with
msgpack. Map keys must be strings, and integers must fit in 64 bits.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import importlib
from types import ModuleType

from gossip.codecs.base import dataclass_fields, from_builtin, is_dataclass_instance
from gossip.errors import DecodeError, LocalProtocolError

__all__ = ["JsonCodec", "BYTES_KEY"]

T = TypeVar("T")

BYTES_KEY = "$b"
"""The key of the one-key object that carries ``bytes`` in JSON."""

_BYTES_MARKER = b'"$b"'
_b64encode = base64.b64encode
_b64decode = base64.b64decode


def _default(obj: Any) -> Any:
    """orjson hook: bytes-like values become ``{"$b": base64}``; dataclasses orjson skipped."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {BYTES_KEY: _b64encode(obj).decode("ascii")}
    if is_dataclass_instance(obj):
        return dataclass_fields(obj)
    raise LocalProtocolError(f"json codec cannot encode a value of type {type(obj).__qualname__}")


def _restore_bytes(value: Any) -> Any:
    """Replace every ``{"$b": str}`` object inside *value* by the bytes it carries."""
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_KEY in value:
            encoded = value[BYTES_KEY]
            if isinstance(encoded, str):
                try:
                    return _b64decode(encoded, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise DecodeError(f"bad base64 in a {BYTES_KEY!r} object: {exc}") from exc
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                value[k] = _restore_bytes(v)
        return value
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)):
                value[i] = _restore_bytes(v)
    return value


_orjson: ModuleType | None = None


def _lib() -> ModuleType:
    """Return orjson, imported on first use (clusters on msgpack never load it)."""
    global _orjson
    if _orjson is None:
        _orjson = importlib.import_module("orjson")
    return _orjson


class JsonCodec:
    """Encode payloads as UTF-8 JSON with orjson (see the module docstring for bytes)."""

    name = "json"
    codec_id = 2

    def __repr__(self) -> str:
        return "JsonCodec()"

    def encode(self, value: Any) -> bytes:
        """Encode *value* to JSON bytes.

        Raises:
            LocalProtocolError: the value holds a type JSON cannot carry (naming the type),
                a non-string map key, an integer outside 64 bits, or is nested too deep.
        """
        orjson = _lib()
        try:
            result: bytes = orjson.dumps(value, default=_default)
            return result
        except orjson.JSONEncodeError as exc:
            cause = exc.__cause__
            if isinstance(cause, LocalProtocolError):
                raise cause from None
            raise LocalProtocolError(f"json codec cannot encode the value: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """Decode JSON bytes to plain values, restoring ``bytes``.

        Raises:
            DecodeError: the bytes are not valid UTF-8 JSON, or a bytes object is malformed.
        """
        orjson = _lib()
        try:
            value = orjson.loads(data)
            if _BYTES_MARKER in data:
                value = _restore_bytes(value)
            return value
        except DecodeError:
            raise
        except (
            orjson.JSONDecodeError,
            ValueError,
            TypeError,
            UnicodeDecodeError,
            RecursionError,
            MemoryError,
        ) as exc:
            raise DecodeError(f"malformed json payload: {type(exc).__name__}: {exc}") from exc

    def decode_as(self, data: bytes, target: type[T]) -> T:
        """Decode JSON bytes and convert them to *target* (see :func:`gossip.codecs.from_builtin`).

        Raises:
            DecodeError: the bytes are malformed or do not fit *target*.
        """
        return from_builtin(self.decode(data), target)
