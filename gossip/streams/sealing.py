"""The framing of an open stream: each direction's keys, and its frames sealed in order.

With a key, each direction has its own key, derived with HKDF-SHA256 from the key that
sealed the OPEN (named by its key id, :func:`gossip.streams.handshake.key_id`), both salts and
the cluster label, and the nonce is that direction's frame counter, never sent. The cipher is
the keyring's (AES-GCM, or XChaCha20-Poly1305: its 24-byte nonce is the same counter, zero
padded). Every frame is::

    kind (1 byte, also authenticated) | ciphertext | tag (16 bytes)

so a replayed, reordered, duplicated, dropped or altered frame fails authentication. A sealed
END frame closes a direction: a connection that ends without it (the peer died, or someone cut
the stream) raises on read and never reads as a clean end. The derived keys live with the
stream, so rotating the keyring while a stream is open does not disturb it. Without a key the
framing is the same, in plaintext (``kind | body``).

Kinds: HELLO (empty), DATA, DATA_LZ4 (an lz4 block with its size in front, used for frames of
at least ``compress_min_size`` bytes when it is smaller), DATA_SNAPPY (the same with a Snappy
block, from a node whose compressor is Snappy), END (empty) and ABORT (a reason, sent when a
handler raised or :meth:`~gossip.streams.Stream.abort` was called).

This module imports the errors and the ciphers of :mod:`gossip.security` (``cryptography``, or
PyNaCl, when the first sealed stream opens).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from ..errors import AuthenticationError, DecodeError
from ..security import AES_GCM, XCHACHA20_POLY1305, aead_for

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "StreamKeys",
    "derive_stream_keys",
    "Sealer",
    "Opener",
    "Frame",
    "FRAME_OVERHEAD",
    "KIND_HELLO",
    "KIND_DATA",
    "KIND_DATA_LZ4",
    "KIND_DATA_SNAPPY",
    "KIND_END",
    "KIND_ABORT",
]

_TAG_SIZE: Final = 16
FRAME_OVERHEAD: Final = 1 + _TAG_SIZE
"""Most bytes framing adds to a frame's body (kind byte and GCM tag)."""

KIND_HELLO: Final = 1
KIND_DATA: Final = 2
KIND_DATA_LZ4: Final = 3
KIND_END: Final = 4
KIND_ABORT: Final = 5
KIND_DATA_SNAPPY: Final = 6
_KINDS = frozenset((KIND_HELLO, KIND_DATA, KIND_DATA_LZ4, KIND_END, KIND_ABORT, KIND_DATA_SNAPPY))
_AAD = {kind: b"gossip-stream-v1" + bytes([kind]) for kind in _KINDS}

_NONCE = struct.Struct(">4xQ")
_XNONCE = struct.Struct(">16xQ")  # XChaCha20-Poly1305: the same counter in 24 bytes

_INFO_C2S = b"gossip stream v1 client to server|"
_INFO_S2C = b"gossip stream v1 server to client|"


class StreamKeys:
    """The two keys of one stream: client to server, and server to client, and their cipher
    (the keyring's: ``"aes-gcm"`` or ``"xchacha20-poly1305"``)."""

    __slots__ = ("client_to_server", "server_to_client", "cipher")

    def __init__(self, client_to_server: bytes, server_to_client: bytes,
                 cipher: str = AES_GCM) -> None:
        self.client_to_server = client_to_server
        self.server_to_client = server_to_client
        self.cipher = cipher

    def __repr__(self) -> str:
        return "StreamKeys(<secret>)"


def derive_stream_keys(key: bytes, client_salt: bytes, server_salt: bytes,
                       label: bytes, cipher: str = AES_GCM) -> StreamKeys:
    """Derive a stream's per-direction keys with HKDF-SHA256 (RFC 5869).

    Args:
        key: the keyring key that sealed the OPEN (16, 24 or 32 bytes); the derived keys have
            the same length.
        client_salt, server_salt: the random salts both sides sent at open.
        label: the cluster label (UTF-8), bound into both keys.
        cipher: the keyring's cipher, which seals the stream's frames too.
    """
    import hashlib
    import hmac

    prk = hmac.new(client_salt + server_salt, key, hashlib.sha256).digest()
    n = len(key)

    def expand(info: bytes) -> bytes:
        return hmac.new(prk, info + label + b"\x01", hashlib.sha256).digest()[:n]

    return StreamKeys(expand(_INFO_C2S), expand(_INFO_S2C), cipher)


Frame = bytes | bytearray | memoryview
"""A frame as a stream connection returns it (possibly a view valid until its next frame)."""


class Sealer:
    """One direction's outgoing frames: kind, then the body, sealed under the frame counter.

    Frames are built in one buffer reused for every frame (grown to the largest one): the
    transport keeps no reference once ``send_frame`` returns, and fresh large allocations
    cost page faults on every frame.
    """

    __slots__ = ("_aead", "_counter", "_buf", "_tag", "_nonce", "_into")

    def __init__(self, key: bytes | None, cipher: str = AES_GCM) -> None:
        self._aead: AESGCM | None = None if key is None else aead_for(cipher, key)
        self._tag = 0 if key is None else _TAG_SIZE
        self._counter = 0
        self._buf = bytearray(256)
        self._nonce = (_XNONCE if cipher == XCHACHA20_POLY1305 else _NONCE).pack
        self._into = cipher != XCHACHA20_POLY1305  # AES-GCM seals in place; PyNaCl cannot

    def seal(self, kind: int, body: bytes | bytearray | memoryview) -> memoryview:
        """Return the frame of ``kind`` around ``body``; valid until the next call."""
        size = 1 + len(body) + self._tag
        buf = self._buf
        if len(buf) < size:
            buf = self._buf = bytearray(size)  # a new one: views of the last frame may live on
        out = memoryview(buf)[:size]
        buf[0] = kind
        aead = self._aead
        if aead is None:
            out[1:] = body
        else:
            nonce = self._nonce(self._counter)
            self._counter += 1
            if self._into:
                aead.encrypt_into(nonce, body, _AAD[kind], out[1:])
            else:
                out[1:] = aead.encrypt(nonce, bytes(body), _AAD[kind])
        return out


class Opener:
    """One direction's incoming frames: checks the kind and authenticates under the counter.

    Sealed bodies are opened into one buffer reused for every frame (see :class:`Sealer`).
    """

    __slots__ = ("_aead", "_counter", "overhead", "_peer", "_buf", "_pack", "_into")

    def __init__(self, key: bytes | None, peer: str, cipher: str = AES_GCM) -> None:
        self._aead: AESGCM | None = None if key is None else aead_for(cipher, key)
        self._pack = (_XNONCE if cipher == XCHACHA20_POLY1305 else _NONCE).pack
        self._into = cipher != XCHACHA20_POLY1305  # AES-GCM opens in place; PyNaCl cannot
        self._counter = 0
        self.overhead = 1 if key is None else FRAME_OVERHEAD
        self._peer = peer
        self._buf = bytearray(0)

    def kind(self, frame: Frame) -> int:
        """Return the frame's (not yet authenticated) kind after checking its size."""
        if len(frame) < self.overhead:
            raise DecodeError(f"stream frame of {len(frame)} bytes from {self._peer} is shorter "
                              f"than its framing ({self.overhead} bytes)")
        kind = frame[0]
        if kind not in _KINDS:
            raise DecodeError(f"stream frame from {self._peer} has unknown kind {kind}")
        return kind

    def _nonce(self) -> bytes:
        nonce = self._pack(self._counter)
        self._counter += 1
        return nonce

    def _failed(self) -> AuthenticationError:
        return AuthenticationError(
            f"stream frame {self._counter - 1} from {self._peer} failed authentication "
            "(tampered, replayed, reordered or dropped frames)")

    def open(self, kind: int, frame: Frame) -> memoryview:
        """Return the authentic body of ``frame`` (of ``kind``); valid until the next call."""
        aead = self._aead
        body = memoryview(frame)[1:]
        if aead is None:
            return body
        size = len(body) - _TAG_SIZE
        buf = self._buf
        if len(buf) < size:
            buf = self._buf = bytearray(size)  # a new one: views of the last body may live on
        out = memoryview(buf)[:size]
        try:
            if self._into:
                aead.decrypt_into(self._nonce(), body, _AAD[kind], out)
            else:
                out[:] = aead.decrypt(self._nonce(), bytes(body), _AAD[kind])
        except Exception as exc:  # cryptography's InvalidTag
            raise self._failed() from exc
        return out

    def open_into(self, kind: int, frame: Frame, dest: memoryview) -> None:
        """Put the authentic body of ``frame`` into ``dest`` (exactly its size).

        On failure ``dest`` holds unauthenticated bytes; the caller raises, so they are never
        reported as read.
        """
        aead = self._aead
        body = memoryview(frame)[1:]
        if aead is None:
            dest[:] = body
            return
        try:
            if self._into:
                aead.decrypt_into(self._nonce(), body, _AAD[kind], dest)
            else:
                dest[:] = aead.decrypt(self._nonce(), bytes(body), _AAD[kind])
        except Exception as exc:  # cryptography's InvalidTag
            raise self._failed() from exc

    def body_size(self, frame: Frame) -> int:
        """Return the size of ``frame``'s body once opened."""
        return len(frame) - self.overhead
