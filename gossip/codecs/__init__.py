"""Pluggable payload codecs: the :class:`Codec` protocol, the registry and typed decoding.

A codec turns a user payload (any msgpack-able value: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, lists, tuples, dicts and dataclass instances of those) into bytes and back.
Two codecs ship: :class:`~gossip.codecs.msgpack.MsgpackCodec` (id 1, the default) and
:class:`~gossip.codecs.json.JsonCodec` (id 2, orjson). The codec id travels in the packet header,
so a receiver decodes with the codec the sender used.

Normalisations every codec applies, so payloads look the same whichever codec carried them:

* dataclass instances are encoded as dicts of their fields (recursively);
* tuples become lists;
* :meth:`Codec.decode_as` rebuilds dataclasses (and typed containers of them) from those dicts.

Decoding never trusts its input: any malformed bytes raise :class:`~gossip.errors.DecodeError`.
Encoding a value the codec cannot represent raises :class:`~gossip.errors.LocalProtocolError`.

This module imports only :mod:`gossip.errors` and its own submodules; the contract and the
typed conversions live in :mod:`gossip.codecs.base`, which the codecs import.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gossip._lazy import lazy_getattr
from gossip.errors import ConfigError, DecodeError

__all__ = [
    "Codec",
    "get_codec",
    "register_codec",
    "registered_codecs",
    "to_builtin",
    "from_builtin",
    "DEFAULT_CODEC",
    "MsgpackCodec",
    "JsonCodec",
]

from gossip.codecs.base import (  # re-exported: the codecs' contract and typed conversions
    Codec,
    dataclass_fields as dataclass_fields,
    from_builtin,
    is_dataclass_instance as is_dataclass_instance,
    to_builtin,
)

# --------------------------------------------------------------------------------------------
# Registry.

_by_name: dict[str, Codec] = {}
_by_id: dict[int, Codec] = {}
_registry_lock = threading.Lock()


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Make *codec* available by name and by id.

    Args:
        codec: the codec; ``codec_id`` must be in 1..255.
        replace: allow replacing a codec already registered under the same name or id.

    Raises:
        ConfigError: the id is out of range, or the name or id is taken and *replace* is false.
    """
    _load_json()  # a clash with the built-in json codec is found as if it were always there
    if not isinstance(codec.codec_id, int) or not 1 <= codec.codec_id <= 255:
        raise ConfigError("codec", f"codec id must be in 1..255, got {codec.codec_id!r}")
    with _registry_lock:
        if not replace:
            other = _by_name.get(codec.name) or _by_id.get(codec.codec_id)
            if other is not None and other is not codec:
                raise ConfigError(
                    "codec",
                    f"codec {codec.name!r} (id {codec.codec_id}) clashes with registered "
                    f"codec {other.name!r} (id {other.codec_id})",
                )
        _by_name[codec.name] = codec
        _by_id[codec.codec_id] = codec


def get_codec(name_or_id: str | int | Codec) -> Codec:
    """Return the registered codec with this name or id (a codec object is returned as is).

    Raises:
        ConfigError: no codec has this name (a local configuration mistake).
        DecodeError: no codec has this id (ids come from packet headers, i.e. from peers).
    """
    if isinstance(name_or_id, str):
        codec = _by_name.get(name_or_id)
        if codec is None and _load_json():
            codec = _by_name.get(name_or_id)
        if codec is None:
            raise ConfigError(
                "codec", f"unknown codec {name_or_id!r} (known: {', '.join(sorted(_by_name))})"
            )
        return codec
    if isinstance(name_or_id, int):
        codec = _by_id.get(name_or_id)
        if codec is None and _load_json():
            codec = _by_id.get(name_or_id)
        if codec is None:
            raise DecodeError(f"unknown codec id {name_or_id}")
        return codec
    return name_or_id


def registered_codecs() -> dict[str, Codec]:
    """Return a snapshot of the registry, by name."""
    _load_json()
    return dict(_by_name)


_json_loaded = False


def _load_json() -> bool:
    """Register the json codec (id 2) if it is not yet; True if this call registered it.

    It is loaded by the first lookup that misses, so a node that only speaks msgpack never
    imports it (nor orjson, nor base64).
    """
    global _json_loaded
    if _json_loaded:
        return False
    with _registry_lock:
        if _json_loaded:
            return False
        from gossip.codecs.json import JsonCodec

        codec = JsonCodec()
        _by_name.setdefault(codec.name, codec)
        _by_id.setdefault(codec.codec_id, codec)
        _json_loaded = True
    return True


__getattr__ = lazy_getattr(__name__, {"JsonCodec": "gossip.codecs.json"})


if TYPE_CHECKING:
    from gossip.codecs.json import JsonCodec  # noqa: F401  (loaded on first use otherwise)

from gossip.codecs.msgpack import MsgpackCodec  # noqa: E402  (it uses the helpers above)

DEFAULT_CODEC: Codec = MsgpackCodec()
"""The default codec: msgpack (id 1)."""

_by_name[DEFAULT_CODEC.name] = DEFAULT_CODEC
_by_id[DEFAULT_CODEC.codec_id] = DEFAULT_CODEC
