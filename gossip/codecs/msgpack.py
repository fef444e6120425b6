"""The msgpack codec (id 1, the default).

Packs with ``use_bin_type=True`` (``bytes`` stay ``bytes``, ``str`` stays ``str``) and unpacks
with ``raw=False`` and ``strict_map_key=False`` (integer map keys survive). Dataclass instances are
packed as dicts of their fields and tuples as arrays, so both come back as dicts and lists; use
:meth:`MsgpackCodec.decode_as` to rebuild dataclasses. Integers must fit in 64 bits.

Unpacking is bounded: every string, binary, array, map and extension length is limited by the
size of the input (msgpack's own default), and nesting is limited by the unpacker's stack, so a
hostile packet cannot make us allocate more than a small multiple of its own size.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

import msgpack

from gossip.codecs.base import dataclass_fields, from_builtin, is_dataclass_instance
from gossip.errors import DecodeError, LocalProtocolError

__all__ = ["MsgpackCodec"]

T = TypeVar("T")

_MAX_DEPTH_HINT = "nesting too deep"


def _default(obj: Any) -> Any:
    """Pack hook for types msgpack does not know: dataclasses become dicts."""
    if is_dataclass_instance(obj):
        return dataclass_fields(obj)
    raise LocalProtocolError(f"msgpack codec cannot encode a value of type {type(obj).__qualname__}")


class MsgpackCodec:
    """Encode payloads with msgpack (see the module docstring for the normalisations)."""

    name = "msgpack"
    codec_id = 1

    def __init__(self) -> None:
        # A Packer is not safe to share between threads (its ``default`` hook runs Python code,
        # which may switch threads mid-pack), but reusing one is twice as fast as packb().
        self._local = threading.local()

    def __repr__(self) -> str:
        return "MsgpackCodec()"

    def _new_packer(self) -> msgpack.Packer:
        # A small first buffer (msgpack's default is 256 KiB per packer, one per thread): it
        # grows to the largest value packed and stays there.
        packer = msgpack.Packer(use_bin_type=True, default=_default, buf_size=4096)
        self._local.packer = packer
        return packer

    def encode(self, value: Any) -> bytes:
        """Encode *value* to msgpack bytes.

        Raises:
            LocalProtocolError: the value holds a type msgpack cannot carry (naming the type),
                an integer outside the 64-bit range, or is nested too deep.
        """
        try:
            packer: msgpack.Packer = self._local.packer
        except AttributeError:
            packer = self._new_packer()
        try:
            result: bytes = packer.pack(value)
        except LocalProtocolError:
            raise
        except OverflowError as exc:
            raise LocalProtocolError(f"msgpack codec cannot encode an integer: {exc}") from exc
        except (TypeError, ValueError, RecursionError) as exc:
            raise LocalProtocolError(
                f"msgpack codec cannot encode a value of type {type(value).__qualname__}: {exc}"
            ) from exc
        return result

    def decode(self, data: bytes) -> Any:
        """Decode msgpack bytes to plain values.

        Raises:
            DecodeError: the bytes are not exactly one valid msgpack value.
        """
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
        except msgpack.ExtraData as exc:
            raise DecodeError(f"msgpack payload has trailing bytes: {exc}") from exc
        except (
            ValueError,  # includes msgpack.FormatError, StackError, OutOfData, UnicodeDecodeError
            TypeError,  # unhashable map keys
            OverflowError,
            RecursionError,
            MemoryError,
            msgpack.UnpackException,
        ) as exc:
            raise DecodeError(f"malformed msgpack payload: {type(exc).__name__}: {exc}") from exc

    def decode_as(self, data: bytes, target: type[T]) -> T:
        """Decode msgpack bytes and convert them to *target* (see :func:`gossip.codecs.from_builtin`).

        Raises:
            DecodeError: the bytes are malformed or do not fit *target*.
        """
        return from_builtin(self.decode(data), target)
