"""Packet sealing (AES-GCM or XChaCha20-Poly1305) with a rotating keyring, and cluster label tags.

Sealed layout (what :meth:`Keyring.seal` returns)::

    nonce (12 random bytes; 24 with XChaCha20-Poly1305) | ciphertext | tag (16 bytes)

Ciphers (:data:`CIPHERS`, ``Keyring(cipher=...)``, ``Config.cipher``): ``"aes-gcm"`` (the
default; 16, 24 or 32-byte keys, from ``cryptography``) and ``"xchacha20-poly1305"`` (32-byte
keys only; libsodium's ``crypto_aead_xchacha20poly1305_ietf`` through PyNaCl, the optional
extra ``gossip-cluster[xchacha]``). Both go through the same keyring, the same per-sender
keys and the same associated data; a keyring uses one cipher for every key it holds.

The *primary* key seals; every installed key may open, so keys rotate without downtime:
install the new key everywhere (:meth:`Keyring.add_key`), make it primary everywhere
(:meth:`Keyring.use_key`), then remove the old one (:meth:`Keyring.remove_key`). The caller binds
context (the packet's clear header and the cluster label) as associated data, so tampering with
it, or a packet from another cluster, fails authentication.

Per-sender keys. Packets are sealed with a key derived from the keyring key and the sender's
node id (HKDF-SHA256, :func:`sender_key`), never with the keyring key itself: ``seal(...,
sender=id)`` and ``open(..., sender=id)``. Each node therefore seals under its own key, and the
nonce budget below is one node's, not the whole cluster's (as each stream already has keys of
its own, :mod:`gossip.streams`). A packet whose sender id was altered fails authentication. The
derived ciphers are cached per (key, sender), ``max_sender_keys`` of them.

AES-GCM nonces are 96 random bits, so one key must not seal more than 2**32 messages (NIST SP
800-38D, :data:`MAX_SEALS_PER_KEY`): the keyring counts the seals it made under each key
(:meth:`Keyring.seal_count`, :attr:`Keyring.primary_seals`); with per-sender keys that is this
node's count under its own key, so an operator can rotate in time. XChaCha20-Poly1305's nonces
are 192 random bits, which makes a collision negligible however many messages a key seals.

This module imports only :mod:`gossip.errors` (``cryptography``, and PyNaCl for XChaCha, on
first use).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:  # blake2s without hashlib, which loads OpenSSL (about 3.5 MiB resident) for nothing here
    from _blake2 import blake2s as _blake2s
except ImportError:  # pragma: no cover - every CPython build has _blake2
    from hashlib import blake2s as _blake2s

# cryptography is imported on first use: a cluster without encryption never pays its ~7 MiB.
_AESGCM: Any = None
_InvalidTag: Any = None
_HKDF: Any = None
_HKDF_EXPAND: Any = None
_SHA256: Any = None

_SENDER_KEY_INFO = b"gossip-cluster packet key v1:"


def _crypto() -> None:
    """Import cryptography's AES-GCM and its InvalidTag the first time."""
    global _AESGCM, _InvalidTag
    if _AESGCM is None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _Impl

        _AESGCM, _InvalidTag = _Impl, InvalidTag


def _aead(key: bytes) -> AESGCM:
    """Return an AES-GCM cipher for ``key``, importing cryptography the first time."""
    _crypto()
    aead: AESGCM = _AESGCM(key)
    return aead


from gossip.errors import AuthenticationError, ConfigError, DecodeError


def _kdf() -> None:
    global _HKDF, _HKDF_EXPAND, _SHA256
    if _HKDF is None:
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

        _HKDF, _HKDF_EXPAND, _SHA256 = HKDF, HKDFExpand, SHA256


def sender_key(key: bytes, sender: bytes) -> bytes:
    """Return the packet key of ``sender`` (a 16-byte node id) under the keyring key ``key``:
    HKDF-SHA256 (RFC 5869) of the key, no salt, the sender id in the info, as long as the key."""
    _kdf()
    derived: bytes = _HKDF(algorithm=_SHA256(), length=len(key), salt=None,
                           info=_SENDER_KEY_INFO + bytes(sender)).derive(key)
    return derived


def _extract(key: bytes) -> bytes:
    """HKDF-Extract of ``key`` with no salt (RFC 5869: a salt of hash-length zeros)."""
    _kdf()
    from cryptography.hazmat.primitives.hmac import HMAC

    h = HMAC(bytes(32), _SHA256())
    h.update(key)
    prk: bytes = h.finalize()
    return prk


def _expand(prk: bytes, sender: bytes, length: int) -> bytes:
    """HKDF-Expand: with :func:`_extract`, the same key as :func:`sender_key`, at half the cost
    (the extract step is done once per keyring key)."""
    okm: bytes = _HKDF_EXPAND(_SHA256(), length, _SENDER_KEY_INFO + sender).derive(prk)
    return okm

__all__ = [
    "Keyring",
    "label_tag",
    "cipher_available",
    "aead_for",
    "XChaCha20Poly1305",
    "CIPHERS",
    "AES_GCM",
    "XCHACHA20_POLY1305",
    "XCHACHA_NONCE_SIZE",
    "XCHACHA_EXTRA",
    "NONCE_SIZE",
    "TAG_SIZE",
    "OVERHEAD",
    "KEY_SIZES",
    "MAX_SEALS_PER_KEY",
    "DEFAULT_MAX_SENDER_KEYS",
    "sender_key",
]

AES_GCM = "aes-gcm"
"""The default cipher: AES-GCM (``cryptography``), 16, 24 or 32-byte keys."""
XCHACHA20_POLY1305 = "xchacha20-poly1305"
"""XChaCha20-Poly1305 (libsodium through PyNaCl), 32-byte keys only."""
CIPHERS = (AES_GCM, XCHACHA20_POLY1305)
"""The cipher names a :class:`Keyring` (and ``Config.cipher``) accepts."""
XCHACHA_EXTRA = "pip install 'gossip-cluster[xchacha]'"
"""What installs XChaCha20-Poly1305's dependency (PyNaCl)."""

NONCE_SIZE = 12
"""Bytes of random nonce in front of every message sealed with AES-GCM."""
XCHACHA_NONCE_SIZE = 24
"""Bytes of random nonce in front of every message sealed with XChaCha20-Poly1305."""
TAG_SIZE = 16
"""Bytes of GCM authentication tag at the end of every sealed message."""
OVERHEAD = NONCE_SIZE + TAG_SIZE
"""Bytes :meth:`Keyring.seal` adds to the plaintext with AES-GCM (XChaCha20-Poly1305 adds 12
more: :attr:`Keyring.overhead`)."""
KEY_SIZES = (16, 24, 32)
"""Valid AES key lengths in bytes (AES-128, AES-192, AES-256); XChaCha20-Poly1305 takes 32."""
_KEY_SIZES = {AES_GCM: KEY_SIZES, XCHACHA20_POLY1305: (32,)}
_NONCE_SIZES = {AES_GCM: NONCE_SIZE, XCHACHA20_POLY1305: XCHACHA_NONCE_SIZE}
MAX_SEALS_PER_KEY = 1 << 32
"""NIST's limit of messages sealed under one key with random 96-bit nonces: rotate before it."""
DEFAULT_MAX_SENDER_KEYS = 4096
"""Default number of per-sender ciphers a keyring keeps ready."""

_urandom = os.urandom


def _check_key(key: bytes, cipher: str = AES_GCM) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ConfigError("encryption_key", f"a key must be bytes, got {type(key).__name__}")
    key = bytes(key)
    if len(key) not in _KEY_SIZES[cipher]:
        if cipher == XCHACHA20_POLY1305:
            raise ConfigError(
                "encryption_key",
                f"an {cipher} key must be exactly 32 bytes long, got {len(key)} bytes")
        raise ConfigError(
            "encryption_key", f"a key must be 16, 24 or 32 bytes long, got {len(key)} bytes"
        )
    return key


def _check_cipher(cipher: str) -> str:
    """Return ``cipher`` if known and usable here; else raise ConfigError(field="cipher")."""
    if cipher not in CIPHERS:
        raise ConfigError("cipher", f"unknown cipher {cipher!r} (known: {', '.join(map(repr, CIPHERS))})")
    if cipher == XCHACHA20_POLY1305 and not cipher_available(cipher):
        raise ConfigError(
            "cipher", f"{cipher} needs PyNaCl (libsodium), which is not installed: {XCHACHA_EXTRA}")
    return cipher


def cipher_available(cipher: str) -> bool:
    """Return True if ``cipher`` (one of :data:`CIPHERS`) can be used in this environment
    (XChaCha20-Poly1305 needs the ``xchacha`` extra, PyNaCl)."""
    if cipher != XCHACHA20_POLY1305:
        return cipher in CIPHERS
    try:
        _xchacha_impl()
    except ImportError:
        return False
    return True


_XCHACHA: Any = None


def _xchacha_impl() -> Any:
    """Return PyNaCl's bindings (imported the first time; ImportError without PyNaCl)."""
    global _XCHACHA
    if _XCHACHA is None:
        import nacl.bindings
        import nacl.exceptions

        _XCHACHA = (nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt,
                    nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt,
                    nacl.exceptions.CryptoError)
    return _XCHACHA


class XChaCha20Poly1305:
    """XChaCha20-Poly1305 (IETF, 24-byte nonce) with the interface of ``cryptography``'s
    ``AESGCM``: ``encrypt(nonce, data, aad)`` returns ciphertext and tag, ``decrypt`` raises
    ``cryptography.exceptions.InvalidTag`` when the data is not authentic.

    Raises:
        ImportError: PyNaCl is not installed (the ``xchacha`` extra).
    """

    __slots__ = ("_key", "_encrypt", "_decrypt", "_error")

    def __init__(self, key: bytes) -> None:
        self._encrypt, self._decrypt, self._error = _xchacha_impl()
        _crypto()  # InvalidTag, which decrypt raises and Keyring.open catches
        if len(key) != 32:
            raise ValueError(f"an XChaCha20-Poly1305 key is 32 bytes, got {len(key)}")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "XChaCha20Poly1305(<secret>)"

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """Return ``data`` sealed under ``nonce`` (24 bytes): ciphertext then the 16-byte tag."""
        out: bytes = self._encrypt(bytes(data), associated_data, bytes(nonce), self._key)
        return out

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """Return the plaintext of ``data`` (ciphertext and tag) sealed under ``nonce``.

        Raises:
            cryptography.exceptions.InvalidTag: the data is not authentic (or malformed).
        """
        try:
            out: bytes = self._decrypt(bytes(data), associated_data, bytes(nonce), self._key)
        except self._error as exc:
            raise _InvalidTag() from exc
        return out


def aead_for(cipher: str, key: bytes) -> Any:
    """Return the AEAD of ``cipher`` under ``key``: an ``AESGCM`` or an
    :class:`XChaCha20Poly1305` (both ``encrypt(nonce, data, aad)`` / ``decrypt(...)``)."""
    if cipher == XCHACHA20_POLY1305:
        return XChaCha20Poly1305(key)
    return _aead(key)


def _fingerprint(key: bytes) -> str:
    """A short, non-secret name for a key in error messages."""
    return _blake2s(key, digest_size=4).hexdigest()


class Keyring:
    """Encryption keys of one cipher: one primary key seals, every installed key may open.

    Thread-safe: mutations take a lock and publish a new immutable tuple, which readers
    (:meth:`seal`, :meth:`open`) read without locking. Cipher objects are created once per key.
    Seals are counted per key, for as long as the keyring lives (removing and re-adding a key
    keeps its count).

    Args:
        keys: keys to install (16, 24 or 32 bytes each; 32 with XChaCha20-Poly1305).
            Duplicates are ignored.
        primary: the key that seals; installed if not in *keys*. Defaults to the first key.
        max_sender_keys: per-sender ciphers kept ready (see the module docstring); past it
            the oldest is derived again when next needed.
        cipher: ``"aes-gcm"`` (default) or ``"xchacha20-poly1305"`` (:data:`CIPHERS`).

    Raises:
        ConfigError: a key has a bad length for the cipher (``field="encryption_key"``),
            ``max_sender_keys`` is below 1, or the cipher is unknown or its dependency is not
            installed (``field="cipher"``; XChaCha20-Poly1305 needs the ``xchacha`` extra).
    """

    def __init__(self, keys: Sequence[bytes] = (), primary: bytes | None = None,
                 max_sender_keys: int = DEFAULT_MAX_SENDER_KEYS, cipher: str = AES_GCM) -> None:
        if max_sender_keys < 1:
            raise ConfigError("sender_key_cache_size", f"must be >= 1, got {max_sender_keys}")
        self._cipher_name = _check_cipher(cipher)
        self._nonce_size = _NONCE_SIZES[cipher]
        self._overhead = self._nonce_size + TAG_SIZE
        self._lock = threading.Lock()
        self._seal_lock = threading.Lock()
        self._seals: dict[bytes, int] = {}
        self._opens: dict[bytes, int] = {}    # packets opened under a key that was not primary
        self._max_sender_keys = max_sender_keys
        self._sender_keys: dict[tuple[bytes, bytes], AESGCM] = {}
        self._sender_lock = threading.Lock()
        self._prks: dict[bytes, bytes] = {}    # keyring key -> its HKDF pseudorandom key
        ordered: list[bytes] = []
        if primary is not None:
            ordered.append(_check_key(primary, cipher))
        for key in keys:
            key = _check_key(key, cipher)
            if key not in ordered:
                ordered.append(key)
        # Entries, primary first. Replaced as a whole on every change (readers never lock).
        self._entries: tuple[tuple[bytes, AESGCM], ...] = tuple(
            (k, self._new_aead(k)) for k in ordered)

    def _new_aead(self, key: bytes) -> AESGCM:
        aead: AESGCM = aead_for(self._cipher_name, key)
        return aead

    def __repr__(self) -> str:
        names = ", ".join(_fingerprint(k) for k, _ in self._entries)
        cipher = "" if self._cipher_name == AES_GCM else f", {self._cipher_name}"
        return f"Keyring(<{len(self._entries)} keys: {names}>{cipher})"

    @property
    def cipher(self) -> str:
        """The cipher every key of this keyring seals and opens with (:data:`CIPHERS`)."""
        return self._cipher_name

    @property
    def overhead(self) -> int:
        """Bytes :meth:`seal` adds to the plaintext: the nonce and the tag (28 with AES-GCM,
        40 with XChaCha20-Poly1305)."""
        return self._overhead

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def primary_key(self) -> bytes | None:
        """The key used to seal, or ``None`` if the keyring is empty."""
        entries = self._entries
        return entries[0][0] if entries else None

    @property
    def primary_seals(self) -> int:
        """Messages sealed so far under the current primary key (0 if the keyring is empty)."""
        key = self.primary_key
        return 0 if key is None else self.seal_count(key)

    def seal_count(self, key: bytes) -> int:
        """Return how many messages this keyring sealed under ``key`` (installed or not)."""
        with self._seal_lock:
            return self._seals.get(bytes(key), 0)

    def secondary_opens(self, key: bytes) -> int:
        """Return how many packets this keyring opened under ``key`` while ``key`` was not the
        primary: a key still in use by some sender once the primary changed (the count is
        approximate under concurrent opens, but grows whenever such a packet arrives)."""
        return self._opens.get(bytes(key), 0)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every installed key, primary first."""
        return tuple(k for k, _ in self._entries)

    def add_key(self, key: bytes) -> None:
        """Install *key* for opening (it becomes primary if the keyring was empty).

        Installing a key twice is a no-op.

        Raises:
            ConfigError: the key has a bad length.
        """
        key = _check_key(key, self._cipher_name)
        with self._lock:
            if any(k == key for k, _ in self._entries):
                return
            self._entries = self._entries + ((key, self._new_aead(key)),)

    def use_key(self, key: bytes) -> None:
        """Make the installed *key* the primary (sealing) key.

        Raises:
            ConfigError: the key is not installed, or has a bad length.
        """
        key = _check_key(key, self._cipher_name)
        with self._lock:
            entries = self._entries
            for i, entry in enumerate(entries):
                if entry[0] == key:
                    self._entries = (entry,) + entries[:i] + entries[i + 1 :]
                    return
        raise ConfigError(
            "encryption_key", f"key {_fingerprint(key)} is not installed; add_key() it first"
        )

    def remove_key(self, key: bytes) -> None:
        """Uninstall *key*; packets sealed with it no longer open.

        Raises:
            ConfigError: *key* is the primary key (``use_key`` another one first), or is not
                installed.
        """
        key = _check_key(key, self._cipher_name)
        with self._lock:
            entries = self._entries
            for i, (k, _) in enumerate(entries):
                if k == key:
                    if i == 0:
                        raise ConfigError(
                            "encryption_key",
                            f"refusing to remove the primary key {_fingerprint(key)}; "
                            "use_key() another key first",
                        )
                    self._entries = entries[:i] + entries[i + 1 :]
                    self._opens.pop(key, None)  # its count goes with it: one entry per key held
                    return
        raise ConfigError("encryption_key", f"key {_fingerprint(key)} is not installed")

    def _cipher(self, key: bytes, aead: AESGCM, sender: bytes | None) -> AESGCM:
        """Return the cipher of ``sender`` under ``key`` (``aead``, the key's own, if None)."""
        if sender is None:
            return aead
        if type(sender) is not bytes:
            sender = bytes(sender)
        cache = self._sender_keys
        entry = (key, sender)
        cipher = cache.get(entry)
        if cipher is None:
            prk = self._prks.get(key)
            if prk is None:
                prk = self._prks[key] = _extract(key)
            cipher = self._new_aead(_expand(prk, sender, len(key)))
            with self._sender_lock:
                if len(cache) >= self._max_sender_keys:
                    del cache[next(iter(cache))]
                cache[entry] = cipher
        return cipher

    def seal(self, plaintext: bytes, aad: bytes, sender: bytes | None = None) -> bytes:
        """Encrypt and authenticate *plaintext* (and *aad*) with the primary key, or with
        *sender*'s key derived from it (see the module docstring).

        Returns:
            ``nonce(12; 24 with XChaCha) | ciphertext | tag(16)``, i.e.
            ``len(plaintext) + self.overhead`` bytes.

        Raises:
            ConfigError: the keyring is empty.
        """
        entries = self._entries
        if not entries:
            raise ConfigError("encryption_key", "cannot seal: the keyring is empty")
        key, aead = entries[0]
        cipher = self._cipher(key, aead, sender)
        with self._seal_lock:
            self._seals[key] = self._seals.get(key, 0) + 1
        nonce = _urandom(self._nonce_size)
        return nonce + cipher.encrypt(nonce, plaintext, aad)

    def open(self, data: bytes, aad: bytes, sender: bytes | None = None) -> bytes:
        """Authenticate and decrypt *data* with the primary key, then every other key (each
        one, or *sender*'s key derived from it, as :meth:`seal` was given).

        Raises:
            DecodeError: *data* is shorter than a nonce and a tag.
            AuthenticationError: no installed key authenticates *data* with *aad* (wrong key,
                wrong associated data, wrong sender, or tampered bytes; also when the keyring
                is empty).
        """
        overhead = self._overhead
        if len(data) < overhead:
            raise DecodeError(
                f"sealed data of {len(data)} bytes is shorter than nonce+tag ({overhead} bytes)"
            )
        entries = self._entries
        n = self._nonce_size
        nonce = data[:n]
        body = data[n:]
        for i, (key, aead) in enumerate(entries):
            try:
                result: bytes = self._cipher(key, aead, sender).decrypt(nonce, body, aad)
            except _InvalidTag:
                continue
            if i:
                # Not under lock: a count lost to a race still changes (see secondary_opens).
                opens = self._opens
                opens[key] = opens.get(key, 0) + 1
            return result
        raise AuthenticationError(
            f"no installed key ({len(entries)} tried) authenticates this packet"
        )


def label_tag(label: str) -> int:
    """Return the 32-bit tag of a cluster label carried in every packet header.

    ``0`` means "no label"; any other label maps to the first 4 bytes (big-endian) of its
    BLAKE2s hash, with 0 replaced by 1 so it never reads as "no label".
    """
    if not label:
        return 0
    tag = int.from_bytes(_blake2s(label.encode("utf-8")).digest()[:4], "big")
    return tag or 1
