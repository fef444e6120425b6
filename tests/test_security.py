"""Tests for gossip.security: Keyring sealing/opening, rotation, label tags."""

from __future__ import annotations

import hashlib
import threading

import pytest

from gossip.errors import AuthenticationError, ConfigError, DecodeError, EncryptionError
from gossip.security import MAX_SEALS_PER_KEY, NONCE_SIZE, OVERHEAD, TAG_SIZE, Keyring, label_tag

K1 = bytes(range(32))
K2 = bytes(range(1, 17))
K3 = bytes(range(2, 26))


def test_constants() -> None:
    assert (NONCE_SIZE, TAG_SIZE, OVERHEAD) == (12, 16, 28)


@pytest.mark.parametrize("key", [K1, K2, K3])
def test_seal_open(key: bytes) -> None:
    ring = Keyring([key])
    sealed = ring.seal(b"secret", b"aad")
    assert len(sealed) == len(b"secret") + OVERHEAD
    assert ring.open(sealed, b"aad") == b"secret"
    assert ring.seal(b"secret", b"aad") != sealed  # random nonce


@pytest.mark.parametrize("length", [0, 1, 15, 17, 31, 33, 64])
def test_bad_key_lengths(length: int) -> None:
    with pytest.raises(ConfigError, match=f"got {length} bytes") as info:
        Keyring([b"k" * length])
    assert info.value.field == "encryption_key"
    ring = Keyring([K1])
    with pytest.raises(ConfigError):
        ring.add_key(b"k" * length)


def test_keys_and_primary() -> None:
    empty = Keyring()
    assert not empty and len(empty) == 0 and empty.primary_key is None
    ring = Keyring([K1, K2], primary=K3)
    assert ring.primary_key == K3
    assert ring.keys == (K3, K1, K2)
    assert len(ring) == 3 and ring
    ring = Keyring([K1, K2, K1])
    assert ring.keys == (K1, K2)
    assert "K1" not in repr(ring) and K1.hex() not in repr(ring)


def test_wrong_key_and_aad() -> None:
    sealed = Keyring([K1]).seal(b"data", b"aad")
    with pytest.raises(AuthenticationError):
        Keyring([K2]).open(sealed, b"aad")
    with pytest.raises(AuthenticationError):
        Keyring([K1]).open(sealed, b"other")
    assert issubclass(AuthenticationError, EncryptionError)


def test_tamper_every_byte() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"some plaintext", b"aad")
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            ring.open(bytes(bad), b"aad")


def test_too_short() -> None:
    ring = Keyring([K1])
    for n in range(OVERHEAD):
        with pytest.raises(DecodeError):
            ring.open(b"\x00" * n, b"")
    with pytest.raises(AuthenticationError):
        ring.open(b"\x00" * OVERHEAD, b"")


def test_rotation() -> None:
    ring = Keyring([K1])
    old = ring.seal(b"old", b"a")
    ring.add_key(K2)
    assert ring.primary_key == K1  # add does not switch
    ring.use_key(K2)
    assert ring.keys == (K2, K1)
    new = ring.seal(b"new", b"a")
    assert ring.open(old, b"a") == b"old"
    assert ring.open(new, b"a") == b"new"
    with pytest.raises(AuthenticationError):
        Keyring([K1]).open(new, b"a")
    ring.remove_key(K1)
    with pytest.raises(AuthenticationError):
        ring.open(old, b"a")
    assert ring.open(new, b"a") == b"new"


def test_remove_primary_refused_and_unknown() -> None:
    ring = Keyring([K1, K2])
    with pytest.raises(ConfigError, match="primary"):
        ring.remove_key(K1)
    with pytest.raises(ConfigError):
        ring.remove_key(K3)
    with pytest.raises(ConfigError):
        ring.use_key(K3)
    ring.add_key(K2)  # no-op
    assert ring.keys == (K1, K2)


def test_empty_keyring() -> None:
    ring = Keyring()
    with pytest.raises(ConfigError):
        ring.seal(b"x", b"")
    with pytest.raises(AuthenticationError):
        ring.open(b"\x00" * 40, b"")
    ring.add_key(K1)
    assert ring.primary_key == K1


def test_concurrent_rotation() -> None:
    # Readers seal then open while a writer rotates K1 <-> K2. A packet sealed with a key that
    # the writer removes before it is opened fails to open: that is the contract (a removed key
    # opens nothing), not a race in the keyring. So each failure must be explained by a removal
    # of the sealing key since just before the seal; any other failure, or any other exception,
    # is a bug. The writer announces a removal before it makes it.
    ring = Keyring([K1])
    removals = {K1: 0, K2: 0}
    errors: list[BaseException] = []
    explained = [0]
    stop = threading.Event()

    def sealed_with(sealed: bytes) -> bytes:
        for key in (K1, K2):
            try:
                Keyring([key]).open(sealed, b"")
                return key
            except AuthenticationError:
                pass
        raise AssertionError("sealed under no known key")

    def reader() -> None:
        try:
            while not stop.is_set():
                before = dict(removals)
                sealed = ring.seal(b"x", b"")
                try:
                    assert ring.open(sealed, b"") == b"x"
                except AuthenticationError:
                    key = sealed_with(sealed)
                    assert removals[key] > before[key], "a key that was never removed failed to open"
                    explained[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def remove(key: bytes) -> None:
        removals[key] += 1
        ring.remove_key(key)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(200):
        ring.add_key(K2)
        ring.use_key(K2)
        remove(K1)
        ring.add_key(K1)
        ring.use_key(K1)
        remove(K2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert ring.keys == (K1,)


def test_seals_are_counted_per_key() -> None:
    ring = Keyring([K1])
    assert ring.primary_seals == 0
    for _ in range(5):
        ring.seal(b"x", b"")
    ring.open(ring.seal(b"y", b""), b"")            # opening costs nothing
    assert ring.primary_seals == ring.seal_count(K1) == 6
    ring.add_key(K2)
    ring.use_key(K2)
    assert ring.primary_seals == 0                   # a fresh primary starts at 0
    ring.seal(b"z", b"")
    ring.remove_key(K1)
    assert (ring.seal_count(K1), ring.seal_count(K2), ring.primary_seals) == (6, 1, 1)
    assert MAX_SEALS_PER_KEY == 2**32


def test_seal_count_is_exact_under_threads() -> None:
    ring = Keyring([K1])
    threads = [threading.Thread(target=lambda: [ring.seal(b"", b"") for _ in range(2000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ring.primary_seals == 8000


def test_label_tag() -> None:
    assert label_tag("") == 0
    tag = label_tag("prod")
    assert tag == int.from_bytes(hashlib.blake2s(b"prod").digest()[:4], "big")
    assert 0 < tag < 2**32
    assert label_tag("prod") != label_tag("staging")
    assert label_tag("é") == (int.from_bytes(hashlib.blake2s("é".encode()).digest()[:4], "big") or 1)
    assert label_tag("é") != 0


# -- per-sender keys: every node seals under a key of its own --------------------------------------

S1, S2 = bytes(range(16)), bytes(range(16, 32))


@pytest.mark.parametrize("key", [K1, K2, K3])
def test_each_sender_seals_under_its_own_key(key: bytes) -> None:
    from gossip.security import _aead, sender_key

    ring = Keyring([key])
    sealed = ring.seal(b"secret", b"aad", S1)
    assert ring.open(sealed, b"aad", S1) == b"secret"
    for other in (S2, None):                 # another sender's key, or the keyring key itself
        with pytest.raises(AuthenticationError):
            ring.open(sealed, b"aad", other)
    # The key is HKDF-SHA256 of the keyring key and the sender id, as long as the key.
    derived = sender_key(key, S1)
    assert len(derived) == len(key) and derived != sender_key(key, S2) and derived != key
    assert _aead(derived).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], b"aad") == b"secret"


def test_per_sender_keys_follow_rotation_and_every_installed_key() -> None:
    ring = Keyring([K1])
    old = ring.seal(b"old", b"a", S1)
    ring.add_key(K2)
    ring.use_key(K2)
    new = ring.seal(b"new", b"a", S1)
    assert ring.open(old, b"a", S1) == b"old" and ring.open(new, b"a", S1) == b"new"
    assert Keyring([K2, K1]).open(old, b"a", S1) == b"old"     # a secondary key opens too
    ring.remove_key(K1)
    with pytest.raises(AuthenticationError):
        ring.open(old, b"a", S1)
    assert (ring.seal_count(K1), ring.seal_count(K2)) == (1, 1)


def test_the_sender_key_cache_is_bounded() -> None:
    ring = Keyring([K1], max_sender_keys=16)
    senders = [bytes([i]) * 16 for i in range(40)]
    sealed = [ring.seal(b"x", b"", s) for s in senders]
    assert len(ring._sender_keys) <= 16
    assert all(ring.open(c, b"", s) == b"x" for c, s in zip(sealed, senders))   # derived again
    with pytest.raises(ConfigError, match="sender_key_cache_size"):
        Keyring([K1], max_sender_keys=0)
