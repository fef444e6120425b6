"""The codec contract and the typed conversions every codec shares.

:class:`Codec` is the protocol a payload codec implements; :func:`to_builtin` and
:func:`from_builtin` turn dataclasses (and typed containers of them) into plain values and back,
so that every codec normalises payloads the same way. The codecs (:mod:`gossip.codecs.msgpack`,
:mod:`gossip.codecs.json`) import this module, and the registry (:mod:`gossip.codecs`) re-exports
it: the codecs never import the registry, so no import runs in a circle.

This module imports only :mod:`gossip.errors`.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Protocol, TypeVar, Union, get_args, get_origin, runtime_checkable

from gossip.errors import DecodeError, LocalProtocolError

__all__ = ["Codec", "dataclass_fields", "is_dataclass_instance", "to_builtin", "from_builtin"]

T = TypeVar("T")


@runtime_checkable
class Codec(Protocol):
    """What a payload codec provides.

    Attributes:
        name: the registry name (``"msgpack"``, ``"json"``).
        codec_id: the id byte written in the packet header (1..255, never reused).
    """

    name: str
    codec_id: int

    def encode(self, value: Any) -> bytes:
        """Encode *value* to bytes.

        Raises:
            LocalProtocolError: the value (or something inside it) cannot be encoded.
        """
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes to plain values (dicts, lists, str, bytes, numbers...).

        Raises:
            DecodeError: the bytes are malformed.
        """
        ...

    def decode_as(self, data: bytes, target: type[T]) -> T:
        """Decode bytes and convert the result to *target* (a dataclass or typed container).

        Raises:
            DecodeError: the bytes are malformed or do not fit *target*.
        """
        ...


# --------------------------------------------------------------------------------------------
# Dataclass <-> builtin conversion, shared by the codecs.

_field_names_cache: dict[type, tuple[str, ...]] = {}


def dataclass_fields(obj: Any) -> dict[str, Any]:
    """Return the fields of a dataclass instance as a (shallow) dict.

    Nested dataclasses stay as they are: the codecs call this from their ``default`` hook, which
    the encoder invokes again for every nested value it cannot pack natively.
    """
    cls = type(obj)
    names = _field_names_cache.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(obj))
        _field_names_cache[cls] = names
    return {name: getattr(obj, name) for name in names}


def is_dataclass_instance(obj: Any) -> bool:
    """Return True if *obj* is a dataclass instance (not a dataclass type)."""
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def to_builtin(value: Any) -> Any:
    """Return *value* with dataclasses turned into dicts and tuples into lists, recursively.

    Codecs do this on the fly while encoding; this function is for callers that want to see
    exactly what a codec will carry.
    """
    if is_dataclass_instance(value):
        return {k: to_builtin(v) for k, v in dataclass_fields(value).items()}
    if isinstance(value, dict):
        return {k: to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    return value


_Converter = Callable[[Any], Any]
_converters: dict[Any, _Converter] = {}
_converters_lock = threading.Lock()


def _identity(value: Any) -> Any:
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _mismatch(tp: Any, value: Any) -> DecodeError:
    return DecodeError(f"expected {_type_name(tp)}, got {type(value).__name__}")


def _converter_for(tp: Any) -> _Converter:
    try:
        conv = _converters.get(tp)
    except TypeError:  # an unhashable annotation: build without caching
        return _build_converter(tp)
    if conv is None:
        conv = _build_converter(tp)
        with _converters_lock:
            _converters[tp] = conv
    return conv


def _scalar_converter(tp: type) -> _Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise _mismatch(tp, value)

    return convert


def _float_converter(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _mismatch(float, value)


def _bytes_converter(value: Any) -> Any:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise _mismatch(bytes, value)


def _enum_converter(tp: type[enum.Enum]) -> _Converter:
    def convert(value: Any) -> Any:
        try:
            return tp(value)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"{value!r} is not a valid {tp.__qualname__}") from exc

    return convert


def _union_converter(tp: Any, args: tuple[Any, ...]) -> _Converter:
    allow_none = type(None) in args
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        only = _converter_for(options[0])

        def convert_optional(value: Any) -> Any:
            if value is None and allow_none:
                return None
            return only(value)

        return convert_optional

    convs = [_converter_for(a) for a in options]

    def convert_union(value: Any) -> Any:
        if value is None and allow_none:
            return None
        for conv in convs:
            try:
                return conv(value)
            except DecodeError:
                continue
        raise _mismatch(tp, value)

    return convert_union


def _sequence_converter(tp: Any, elem: _Converter, make: Callable[[Any], Any]) -> _Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _mismatch(tp, value)
        if elem is _identity:
            return make(value)
        return make(elem(v) for v in value)

    return convert


def _fixed_tuple_converter(tp: Any, convs: list[_Converter]) -> _Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != len(convs):
            raise DecodeError(
                f"expected {_type_name(tp)} of {len(convs)} items, got {type(value).__name__}"
                + (f" of {len(value)}" if isinstance(value, (list, tuple)) else "")
            )
        return tuple(c(v) for c, v in zip(convs, value))

    return convert


def _mapping_converter(tp: Any, key: _Converter, val: _Converter) -> _Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(tp, value)
        if key is _identity and val is _identity:
            return value
        return {key(k): val(v) for k, v in value.items()}

    return convert


def _literal_converter(tp: Any, allowed: tuple[Any, ...]) -> _Converter:
    def convert(value: Any) -> Any:
        if value in allowed:
            return value
        raise DecodeError(f"{value!r} is not one of {allowed!r}")

    return convert


class _DataclassConverter:
    """Rebuilds one dataclass type from a dict; field converters are resolved lazily so
    self-referencing dataclasses (trees) work."""

    __slots__ = ("cls", "_fields", "_required")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self._fields: list[tuple[str, _Converter]] | None = None
        self._required: tuple[str, ...] = ()

    def _resolve(self) -> list[tuple[str, _Converter]]:
        try:
            hints = typing.get_type_hints(self.cls)
        except Exception as exc:  # NameError for unresolvable forward references, and others
            raise LocalProtocolError(
                f"cannot resolve the type hints of {self.cls.__qualname__}: {exc}"
            ) from exc
        fields: list[tuple[str, _Converter]] = []
        required: list[str] = []
        for f in dataclasses.fields(self.cls):
            if not f.init:
                continue
            fields.append((f.name, _converter_for(hints.get(f.name, Any))))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        self._required = tuple(required)
        self._fields = fields
        return fields

    def __call__(self, value: Any) -> Any:
        cls = self.cls
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise DecodeError(f"expected a dict for {cls.__qualname__}, got {type(value).__name__}")
        fields = self._fields if self._fields is not None else self._resolve()
        kwargs: dict[str, Any] = {}
        for name, conv in fields:
            if name in value:
                try:
                    kwargs[name] = conv(value[name])
                except DecodeError as exc:
                    raise DecodeError(f"{cls.__qualname__}.{name}: {exc}") from exc
        for name in self._required:
            if name not in kwargs:
                raise DecodeError(f"{cls.__qualname__}: missing required field {name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{cls.__qualname__} rejected the decoded fields: {exc}") from exc


def _build_converter(tp: Any) -> _Converter:
    if tp is Any or tp is object:
        return _identity
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _converter_for(supertype)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _DataclassConverter(tp)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Union or origin is types.UnionType:
        return _union_converter(tp, args)
    if origin is typing.Literal:
        return _literal_converter(tp, args)
    if origin is typing.Annotated:
        return _converter_for(args[0])
    if origin in (list, Sequence, MutableSequence):
        return _sequence_converter(tp, _converter_for(args[0]) if args else _identity, list)
    if origin in (set, frozenset):
        make: Callable[[Any], Any] = origin
        return _sequence_converter(tp, _converter_for(args[0]) if args else _identity, make)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence_converter(tp, _converter_for(args[0]), tuple)
        # tuple[()] has no args on Python 3.11: a fixed tuple of none.
        return _fixed_tuple_converter(tp, [_converter_for(a) for a in args])
    if origin in (dict, Mapping, MutableMapping):
        if args:
            return _mapping_converter(tp, _converter_for(args[0]), _converter_for(args[1]))
        return _mapping_converter(tp, _identity, _identity)
    if tp in (list, Sequence):
        return _sequence_converter(tp, _identity, list)
    if tp is tuple:
        return _sequence_converter(tp, _identity, tuple)
    if tp in (set, frozenset):
        return _sequence_converter(tp, _identity, tp)
    if tp in (dict, Mapping):
        return _mapping_converter(tp, _identity, _identity)
    if tp is float:
        return _float_converter
    if tp is bytes:
        return _bytes_converter
    if tp is type(None) or tp is None:
        return _literal_converter(tp, (None,))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_converter(tp)
    if tp in (int, str, bool):
        return _scalar_converter(tp)
    return _identity  # an annotation we do not know how to check: hand the value over as is


def from_builtin(value: Any, target: type[T]) -> T:
    """Convert a decoded builtin value to *target*.

    Dataclasses are rebuilt from dicts (nested dataclass fields, ``list[Dataclass]``,
    ``dict[str, Dataclass]``, ``Optional[...]`` and unions are followed through
    :func:`typing.get_type_hints`); keys a dataclass does not know are ignored. Scalars are
    type-checked (an ``int`` is accepted for a ``float``).

    Raises:
        DecodeError: the value does not fit *target* (wrong type, missing required field).
        LocalProtocolError: *target* has type hints that cannot be resolved.
    """
    result: T = _converter_for(target)(value)
    return result
