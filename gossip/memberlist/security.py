"""memberlist's encryption and label framing (its ``security.go`` and ``label.go``).

* An encrypted datagram is ``version(1) | nonce(12) | AES-GCM(ciphertext | tag(16))``.
  Version 0 pads the plaintext with PKCS#7 to the AES block size before sealing (protocol
  version 1 speaks it); version 1 does not pad. The associated data of a datagram is the
  cluster label (empty without one).
* An encrypted stream message is ``9 | length u32 | encrypted as above``, the associated data
  being those first 5 bytes followed by the label.
* A keyring: the primary key seals, every key is tried to open.
* A label header ``244 | length u8 | label`` opens every datagram and every stream of a
  labelled cluster; a node refuses a datagram or stream whose label is not its own.

Pure functions over bytes; nothing here touches sockets or clocks.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import AuthenticationError, ConfigError, DecodeError, EncryptionError, LabelMismatch

__all__ = ["MLKeyring", "HAS_LABEL", "ENCRYPT_MSG", "LABEL_MAX_SIZE", "MAX_ENCRYPTED_STREAM",
           "encrypt", "decrypt", "add_label", "remove_label", "encrypted_length", "overhead"]

HAS_LABEL = 244
"""The label header's message type."""
ENCRYPT_MSG = 10
"""The message type of an encrypted stream message (memberlist's ``encryptMsg``)."""
LABEL_MAX_SIZE = 255
"""The longest label, in bytes."""
MAX_ENCRYPTED_STREAM = 20 * 1024 * 1024
"""The largest encrypted stream message accepted (memberlist's ``maxPushStateBytes``)."""

_NONCE = 12
_TAG = 16
_BLOCK = 16
_LEN = struct.Struct(">I")


def encrypted_length(version: int, size: int) -> int:
    """Bytes of a ``size``-byte plaintext once encrypted with ``version``."""
    if version >= 1:
        return 1 + _NONCE + size + _TAG
    return 1 + _NONCE + size + (_BLOCK - size % _BLOCK) + _TAG


def overhead(version: int) -> int:
    """The most bytes encryption adds (memberlist's ``encryptOverhead``)."""
    return 29 if version >= 1 else 45


class MLKeyring:
    """AES keys of 16, 24 or 32 bytes: the first one (the primary) seals, all may open.

    Raises:
        ConfigError: no key, or a key of another length (``field="encryption_key"``).
    """

    __slots__ = ("_ciphers", "_keys")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("encryption_key", "a memberlist keyring needs at least one key")
        for k in keys:
            if not isinstance(k, bytes) or len(k) not in (16, 24, 32):
                raise ConfigError("encryption_key", "memberlist keys are 16, 24 or 32 bytes")
        self._keys = tuple(dict.fromkeys(keys))
        self._ciphers = tuple(AESGCM(k) for k in self._keys)

    @property
    def primary(self) -> bytes:
        """The key that seals."""
        return self._keys[0]

    def __len__(self) -> int:
        return len(self._keys)

    def seal(self, version: int, plain: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
        """Encrypt ``plain`` under the primary key (``nonce`` for tests only)."""
        if version not in (0, 1):
            raise ConfigError("encryption_version", f"memberlist encryption is 0 or 1, got {version}")
        if nonce is None:
            nonce = os.urandom(_NONCE)
        if version == 0:
            pad = _BLOCK - len(plain) % _BLOCK
            plain = plain + bytes((pad,)) * pad
        return bytes((version,)) + nonce + self._ciphers[0].encrypt(nonce, plain, aad or None)

    def open(self, data: bytes, aad: bytes) -> bytes:
        """Decrypt ``data`` with whichever key opens it.

        Raises:
            EncryptionError: unknown version or too short;
            AuthenticationError: no key opens it.
        """
        if not data:
            raise EncryptionError("cannot decrypt an empty payload")
        version = data[0]
        if version > 1:
            raise EncryptionError(f"unsupported encryption version {version}")
        if len(data) < encrypted_length(version, 0):
            raise EncryptionError(f"payload is too small to decrypt: {len(data)} bytes")
        nonce = data[1:1 + _NONCE]
        sealed = data[1 + _NONCE:]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, sealed, aad or None)
            except InvalidTag:
                continue
            if version == 0:
                pad = plain[-1] if plain else 0
                if not 1 <= pad <= _BLOCK or pad > len(plain):
                    raise EncryptionError("bad PKCS#7 padding")
                plain = plain[:-pad]
            return plain
        raise AuthenticationError("no installed key could decrypt the message")


def encrypt(keyring: MLKeyring, version: int, plain: bytes, label: bytes = b"") -> bytes:
    """Return an encrypted datagram (the label as associated data)."""
    return keyring.seal(version, plain, label)


def decrypt(keyring: MLKeyring, data: bytes, label: bytes = b"") -> bytes:
    """Return the plaintext of an encrypted datagram (see :meth:`MLKeyring.open`)."""
    return keyring.open(data, label)


def stream_encrypt(keyring: MLKeyring, version: int, plain: bytes, label: bytes = b"") -> bytes:
    """Return ``plain`` as an encrypted stream message: ``10 | length u32 | encrypted``."""
    head = bytes((ENCRYPT_MSG,)) + _LEN.pack(encrypted_length(version, len(plain)))
    return head + keyring.seal(version, plain, head + label)


def stream_decrypt(keyring: MLKeyring, head: bytes, body: bytes, label: bytes = b"") -> bytes:
    """Open an encrypted stream message whose 5-byte head and body were read."""
    return keyring.open(body, head + label)


def stream_length(head: bytes) -> int:
    """The body length an encrypted stream message's 5-byte head announces.

    Raises:
        DecodeError: more than :data:`MAX_ENCRYPTED_STREAM`.
    """
    n = int(_LEN.unpack_from(head, 1)[0])
    if n > MAX_ENCRYPTED_STREAM:
        raise DecodeError(f"remote state of {n} bytes is larger than the limit ({MAX_ENCRYPTED_STREAM})")
    return n


def label_header(label: bytes) -> bytes:
    """The label header for ``label`` (empty for no label)."""
    if not label:
        return b""
    if len(label) > LABEL_MAX_SIZE:
        raise ConfigError("cluster_label", f"a memberlist label is at most {LABEL_MAX_SIZE} bytes")
    return bytes((HAS_LABEL, len(label))) + label


def add_label(data: bytes, label: bytes) -> bytes:
    """Prefix a datagram with the label header (nothing for no label)."""
    return label_header(label) + data


def remove_label(data: bytes) -> tuple[bytes, bytes]:
    """Split a datagram into ``(label, rest)``; a datagram without a header has label ``b""``.

    Raises:
        DecodeError: a truncated or empty label header.
    """
    if not data or data[0] != HAS_LABEL:
        return b"", data
    if len(data) < 3:
        raise DecodeError("cannot decode label; packet has been truncated")
    size = data[1]
    if size < 1:
        raise DecodeError("label header cannot be empty when present")
    if len(data) < 2 + size:
        raise DecodeError("cannot decode label; packet has been truncated")
    return data[2:2 + size], data[2 + size:]


def check_label(got: bytes, ours: bytes) -> None:
    """Refuse a datagram or stream of another label.

    Raises:
        LabelMismatch: ``got`` is not ``ours``.
    """
    if got != ours:
        raise LabelMismatch(f"label {got!r} is not ours ({ours!r})")
