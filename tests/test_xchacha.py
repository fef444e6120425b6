"""XChaCha20-Poly1305: the keyring, the packet pipeline and the configuration with
``cipher="xchacha20-poly1305"``, and what a node without PyNaCl is told.

The tests that seal need PyNaCl (the ``xchacha`` extra, which the ``test`` extra installs);
without it they are skipped, saying so. The ones about a missing PyNaCl run everywhere.
"""

from __future__ import annotations

import sys

import pytest

from gossip import Config
from gossip.errors import AuthenticationError, CipherMismatch, ConfigError, DecodeError
from gossip.packet import PacketCodec
from gossip.security import (
    TAG_SIZE,
    XCHACHA20_POLY1305,
    XCHACHA_NONCE_SIZE,
    Keyring,
    cipher_available,
    sender_key,
)
from gossip.wire import FLAG_ENCRYPTED, FLAG_XCHACHA, USER_MSG

XC = XCHACHA20_POLY1305
K1, K2 = bytes(range(32)), bytes(range(32, 64))
S1, S2 = bytes(range(16)), bytes(range(16, 32))

needs_nacl = pytest.mark.skipif(
    not cipher_available(XC),
    reason="PyNaCl is not installed (the xchacha extra: pip install 'gossip-cluster[xchacha]')")


@pytest.fixture
def no_nacl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make PyNaCl unimportable, as on a machine without the xchacha extra."""
    import gossip.security as security

    monkeypatch.setitem(sys.modules, "nacl", None)
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)
    monkeypatch.setitem(sys.modules, "nacl.exceptions", None)
    monkeypatch.setattr(security, "_XCHACHA", None)


# ---------------------------------------------------------------------------------- keyring


@needs_nacl
def test_layout_is_a_24_byte_nonce_then_ciphertext_then_tag() -> None:
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as decrypt

    ring = Keyring([K1], cipher=XC)
    assert ring.cipher == XC and ring.overhead == XCHACHA_NONCE_SIZE + TAG_SIZE == 40
    sealed = ring.seal(b"secret", b"aad", S1)
    assert len(sealed) == XCHACHA_NONCE_SIZE + len(b"secret") + TAG_SIZE
    assert ring.open(sealed, b"aad", S1) == b"secret"
    # libsodium itself opens it under the sender's key (HKDF of the keyring key and the id,
    # the same derivation as AES-GCM's), with the nonce in front.
    nonce, body = sealed[:XCHACHA_NONCE_SIZE], sealed[XCHACHA_NONCE_SIZE:]
    assert decrypt(body, b"aad", nonce, sender_key(K1, S1)) == b"secret"
    assert ring.seal(b"secret", b"aad", S1)[:XCHACHA_NONCE_SIZE] != nonce   # random nonces


@needs_nacl
def test_wrong_sender_key_aad_and_every_tampered_byte_fail() -> None:
    ring = Keyring([K1], cipher=XC)
    sealed = ring.seal(b"some plaintext", b"aad", S1)
    for sender, aad in ((S2, b"aad"), (None, b"aad"), (S1, b"other")):
        with pytest.raises(AuthenticationError):
            ring.open(sealed, aad, sender)
    with pytest.raises(AuthenticationError):
        Keyring([K2], cipher=XC).open(sealed, b"aad", S1)
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            ring.open(bytes(bad), b"aad", S1)
    for n in range(ring.overhead):
        with pytest.raises(DecodeError):
            ring.open(b"\x00" * n, b"", S1)


@needs_nacl
def test_the_keyring_rotates_under_xchacha() -> None:
    ring = Keyring([K1], cipher=XC)
    old = ring.seal(b"old", b"a", S1)
    ring.add_key(K2)
    ring.use_key(K2)
    new = ring.seal(b"new", b"a", S1)
    assert ring.keys == (K2, K1)
    assert ring.open(old, b"a", S1) == b"old" and ring.open(new, b"a", S1) == b"new"
    assert Keyring([K2, K1], cipher=XC).open(old, b"a", S1) == b"old"   # any installed key opens
    with pytest.raises(AuthenticationError):
        Keyring([K1], cipher=XC).open(new, b"a", S1)
    ring.remove_key(K1)
    with pytest.raises(AuthenticationError):
        ring.open(old, b"a", S1)
    assert (ring.seal_count(K1), ring.seal_count(K2)) == (1, 1)


@needs_nacl
@pytest.mark.parametrize("length", [16, 24, 31, 33])
def test_keys_other_than_32_bytes_are_refused(length: int) -> None:
    with pytest.raises(ConfigError, match=f"exactly 32 bytes long, got {length} bytes") as info:
        Keyring([b"k" * length], cipher=XC)
    assert info.value.field == "encryption_key"
    ring = Keyring([K1], cipher=XC)
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        ring.add_key(b"k" * length)


def test_an_unknown_cipher_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown cipher 'chacha20'") as info:
        Keyring([K1], cipher="chacha20")
    assert info.value.field == "cipher"


# ---------------------------------------------------------------------------------- packets


def _codec(cipher: str, *keys: bytes, label: str = "") -> PacketCodec:
    return PacketCodec(keyring=Keyring(list(keys), cipher=cipher), label=label)


@needs_nacl
def test_packets_round_trip_under_xchacha_with_the_label_bound() -> None:
    pc = _codec(XC, K1, label="prod")
    big = {"text": "gossip " * 1500}
    for payload in ({"a": 1}, big):
        data = pc.encode(USER_MSG, S1, 7, 3, payload)
        assert data[2] & (FLAG_ENCRYPTED | FLAG_XCHACHA) == FLAG_ENCRYPTED | FLAG_XCHACHA
        pkt = pc.decode(data)
        assert (pkt.unmarshal(), pkt.sender, pkt.encrypted) == (payload, S1, True)
    small = pc.encode(USER_MSG, S1, 7, 3, {"a": 1})
    # 12 bytes more than AES-GCM's overhead (the longer nonce), and the codec says so.
    aes = _codec("aes-gcm", K1, label="prod")
    assert len(small) - len(aes.encode(USER_MSG, S1, 7, 3, {"a": 1})) == 12
    assert pc.overhead - aes.overhead == 12
    from gossip.errors import LabelMismatch

    with pytest.raises(LabelMismatch):
        _codec(XC, K1, label="staging").decode(small)
    with pytest.raises(AuthenticationError):
        _codec(XC, K2, label="prod").decode(small)


@needs_nacl
def test_packets_of_the_other_cipher_are_refused_saying_why() -> None:
    xc, aes = _codec(XC, K1), _codec("aes-gcm", K1)
    with pytest.raises(CipherMismatch, match="sealed with aes-gcm, this node uses xchacha20-poly1305"):
        xc.decode(aes.encode(USER_MSG, S1, 1, 1, "x"))
    with pytest.raises(CipherMismatch, match="sealed with xchacha20-poly1305, this node uses aes-gcm"):
        aes.decode(xc.encode(USER_MSG, S1, 1, 1, "x"))
    # The flag is authenticated data: clearing it on an XChaCha packet cannot make it pass
    # as AES-GCM (it fails authentication instead).
    data = bytearray(xc.encode(USER_MSG, S1, 1, 1, "x"))
    data[2] &= ~FLAG_XCHACHA
    with pytest.raises(AuthenticationError):
        aes.decode(bytes(data))


# ---------------------------------------------------------------------------------- config


@needs_nacl
def test_config_accepts_xchacha_with_32_byte_keys() -> None:
    Config.local(cipher=XC, encryption_key=K1, secondary_keys=[K2]).validate()


@needs_nacl
@pytest.mark.parametrize("field,kw", [
    ("encryption_key", {"encryption_key": b"k" * 31}),
    ("encryption_key", {"encryption_key": b"k" * 16}),
    ("secondary_keys[0]", {"encryption_key": K1, "secondary_keys": [b"k" * 31]}),
])
def test_config_refuses_a_31_byte_key_under_xchacha(field: str, kw: dict[str, bytes]) -> None:
    with pytest.raises(ConfigError, match="exactly 32 bytes long with cipher 'xchacha20-poly1305'") as info:
        Config.local(cipher=XC, **kw).validate()
    assert info.value.field == field


def test_without_pynacl_the_config_says_what_to_install(no_nacl: None) -> None:
    assert not cipher_available(XC)
    with pytest.raises(ConfigError, match=r"needs PyNaCl .* pip install 'gossip-cluster\[xchacha\]'") as info:
        Config.local(cipher=XC, encryption_key=K1).validate()
    assert info.value.field == "cipher"
    with pytest.raises(ConfigError, match=r"gossip-cluster\[xchacha\]"):
        Keyring([K1], cipher=XC)
    Config.local(encryption_key=K1).validate()   # AES-GCM needs nothing more


# ---------------------------------------------------------------------------------- streams


@needs_nacl
def test_stream_frames_are_sealed_with_xchacha_under_the_frame_counter() -> None:
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as decrypt

    from gossip.streams.sealing import KIND_DATA, Opener, Sealer, derive_stream_keys

    keys = derive_stream_keys(K1, b"c" * 16, b"s" * 16, b"label", XC)
    assert keys.cipher == XC and len(keys.client_to_server) == 32
    sealer, opener = Sealer(keys.client_to_server, XC), Opener(keys.client_to_server, "peer", XC)
    for counter, body in enumerate((b"first", b"second frame")):
        frame = bytes(sealer.seal(KIND_DATA, body))
        assert frame[0] == KIND_DATA and len(frame) == 1 + len(body) + TAG_SIZE
        nonce = bytes(16) + counter.to_bytes(8, "big")       # 24 bytes, never sent
        assert decrypt(frame[1:], b"gossip-stream-v1" + bytes([KIND_DATA]), nonce,
                       keys.client_to_server) == body
        assert bytes(opener.open(KIND_DATA, frame)) == body
    # A replayed frame (its counter is past) fails.
    with pytest.raises(AuthenticationError):
        opener.open(KIND_DATA, frame)
