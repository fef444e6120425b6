"""The bearer token's challenge-response on WebSocket handshakes: mutual, and never replayable.

A WebSocket dial never shows the token itself, nor anything a stranger could use. With a token
``K`` on both sides, a dial is two HTTP requests::

    dialer                                               listener
    GET  Gossip-Challenge: Nc                       ──►
                                                    ◄── 401  WWW-Authenticate: Gossip-HMAC
                                                             nonce="Ns", proof="Ms"
        checks Ms = HMAC(K, "server" | Nc | Ns): the listener holds K
    GET  Gossip-Auth: nonce="Ns", cnonce="Nc",      ──►
                      proof="Mc"                         checks Ns is its own, fresh and unused,
                                                         and Mc = HMAC(K, "client" | Nc | Ns |
                                                         channel)
                                                    ◄── 101 Switching Protocols

``Nc`` is the dialer's fresh random nonce, so the listener's proof cannot be replayed to it,
and a dialer that reached a stranger (who cannot compute ``Ms``) stops before it sends any
proof: the stranger learns a random number. ``Ns`` is issued without any state kept (its time,
a random part and a tag under a secret of the listener's process), checked for age, and
remembered once used, so a recorded second request never opens another connection. The labels
keep the two proofs apart (the listener's proof is never a dialer's), and the dialer's proof
names the channel (frames or stream) it opens.

What it does not do: over plain ``ws://`` a host on the path between two nodes (or a stranger
that a node was made to dial, relaying both requests to a real node) can pass the proofs along
and then sit in the middle of the connection. Only TLS (``wss://``) protects the connection
itself; the cluster's encryption key protects what the frames carry either way.

This module imports nothing from :mod:`gossip` (transports are layer L2 I/O).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import threading
import time
from typing import Final

__all__ = [
    "CHALLENGE_HEADER",
    "AUTH_HEADER",
    "SCHEME",
    "new_client_nonce",
    "server_proof",
    "client_proof",
    "challenge_value",
    "parse_challenge",
    "auth_value",
    "parse_auth",
    "ServerNonces",
]

CHALLENGE_HEADER: Final = "Gossip-Challenge"
"""Request header of a dial's first request: the dialer's nonce."""
AUTH_HEADER: Final = "Gossip-Auth"
"""Request header of a dial's second request: the listener's nonce, the dialer's, its proof."""
SCHEME: Final = "Gossip-HMAC"
"""The ``WWW-Authenticate`` scheme of the listener's challenge."""

_NONCE_BYTES = 18  # 24 characters of base64url
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{22,88}")
_PARAM_RE = re.compile(r'([a-z]+)="([^"]*)"')
_SERVER_LABEL = b"gossip-ws-server\0"
_CLIENT_LABEL = b"gossip-ws-client\0"
_STAMP = struct.Struct(">Q")
_TAG = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not _NONCE_RE.fullmatch(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def new_client_nonce() -> str:
    """Return a fresh random nonce for a dial's first request."""
    return _b64(os.urandom(_NONCE_BYTES))


def _mac(token: str, label: bytes, *parts: str) -> str:
    msg = label + b"\0".join(p.encode("ascii", "replace") for p in parts)
    return _b64(hmac.new(token.encode(), msg, hashlib.sha256).digest())


def server_proof(token: str, cnonce: str, snonce: str) -> str:
    """The listener's proof that it holds ``token``, bound to both nonces."""
    return _mac(token, _SERVER_LABEL, cnonce, snonce)


def client_proof(token: str, cnonce: str, snonce: str, channel: str) -> str:
    """The dialer's proof that it holds ``token``, bound to both nonces and the channel."""
    return _mac(token, _CLIENT_LABEL, cnonce, snonce, channel)


def verify(expected: str, given: str) -> bool:
    """Compare two proofs in constant time."""
    return hmac.compare_digest(expected.encode("ascii", "replace"), given.encode("ascii", "replace"))


def challenge_value(snonce: str = "", proof: str = "") -> str:
    """The ``WWW-Authenticate`` value of a 401: a challenge, or just the scheme."""
    if not snonce:
        return f'{SCHEME} realm="gossip"'
    return f'{SCHEME} realm="gossip", nonce="{snonce}", proof="{proof}"'


def _params(value: str, scheme: str | None) -> dict[str, str] | None:
    text = value.strip()
    if scheme is not None:
        head, _, text = text.partition(" ")
        if head.lower() != scheme.lower():
            return None
    if len(text) > 1024:
        return None
    return dict(_PARAM_RE.findall(text))


def parse_challenge(value: str) -> tuple[str, str] | None:
    """Return ``(nonce, proof)`` of a listener's ``WWW-Authenticate`` value, None if it is not
    a well-formed challenge."""
    params = _params(value, SCHEME)
    if params is None:
        return None
    nonce, proof = params.get("nonce", ""), params.get("proof", "")
    if _unb64(nonce) is None or _unb64(proof) is None:
        return None
    return nonce, proof


def auth_value(snonce: str, cnonce: str, proof: str) -> str:
    """The ``Gossip-Auth`` value of a dial's second request."""
    return f'nonce="{snonce}", cnonce="{cnonce}", proof="{proof}"'


def parse_auth(value: str) -> tuple[str, str, str] | None:
    """Return ``(snonce, cnonce, proof)`` of a ``Gossip-Auth`` value, None if malformed."""
    params = _params(value, None)
    if params is None:
        return None
    out = params.get("nonce", ""), params.get("cnonce", ""), params.get("proof", "")
    if any(_unb64(p) is None for p in out):
        return None
    return out


def valid_client_nonce(value: str) -> bool:
    """True if ``value`` looks like a dialer's nonce (base64url, 16 to 66 bytes)."""
    raw = _unb64(value.strip())
    return raw is not None and len(raw) >= 16


class ServerNonces:
    """The listener's nonces: issued without state, checked for age, each accepted once.

    Args:
        ttl: seconds a nonce stays valid after it was issued.
        max_used: most used nonces remembered (past it, the oldest are forgotten; they are
            expired by then unless nonces are being used faster than ``max_used / ttl``).
    """

    def __init__(self, ttl: float, max_used: int = 65536) -> None:
        self.ttl = ttl
        self._secret = os.urandom(32)
        self._max_used = max_used
        self._lock = threading.Lock()
        self._used: dict[bytes, float] = {}  # a used nonce's body -> when it may be forgotten

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_TAG]

    def issue(self) -> str:
        """Return a new nonce."""
        body = _STAMP.pack(time.monotonic_ns() // 1_000_000) + os.urandom(12)
        return _b64(body + self._tag(body))

    def accept(self, snonce: str) -> str:
        """Check and use up a nonce; return ``""`` if it is good, else why not."""
        raw = _unb64(snonce)
        if raw is None or len(raw) != _STAMP.size + 12 + _TAG:
            return "malformed nonce"
        body, tag = raw[:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return "not a nonce of this listener"
        (issued_ms,) = _STAMP.unpack_from(body)
        now = time.monotonic()
        age = now - issued_ms / 1000.0
        if age > self.ttl or age < -1.0:
            return "expired nonce"
        with self._lock:
            if body in self._used:
                return "nonce already used"
            while self._used:  # forget what expired (insertion order is roughly age order)
                first = next(iter(self._used))
                if self._used[first] > now and len(self._used) < self._max_used:
                    break
                del self._used[first]
            self._used[body] = now + self.ttl + 1.0
        return ""
