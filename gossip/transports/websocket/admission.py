"""Which WebSocket handshakes are let in: path, browser origin, the bearer token, the channel.

:class:`Screen` decides on an opening handshake's path and headers, the same way for our own
listener, for connections the host's ``websockets`` server accepted and for the ASGI bridge:

- the path must be the gossip path (else 404);
- a browser's handshake (an ``Origin`` or ``Sec-Fetch-*`` header) must come from an allowed
  origin (else 403): a web page must not speak gossip to a node;
- with a bearer token, the dialer must prove it holds it, after the listener proved it first
  (:mod:`gossip.transports._wsauth`; a 401 carries the challenge or says what is missing);
- the channel (``Gossip-Channel``) is ``frames`` (the default) or ``stream`` (403 when streams
  are not accepted here), else 400.

Every refusal is a :class:`Refusal` and is counted (``ws_not_found``, ``ws_origin_refused``,
``ws_auth_refused``, ``ws_auth_challenges``, ``ws_streams_refused``, ``ws_handshake_failed``).
The connection counts themselves are :mod:`gossip.transports._admission`'s.

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports._wsauth`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from websockets.datastructures import MultipleValuesError

from gossip.transports import _wsauth as wsauth

__all__ = ["Refusal", "Screen", "CHANNEL_HEADER", "FRAMES", "STREAM", "REQUEST"]

CHANNEL_HEADER: Final = "Gossip-Channel"
"""Handshake header naming what a connection carries: ``frames`` (the default) or ``stream``."""
FRAMES: Final = "frames"
"""A connection that carries frames (pooled, or accepted)."""
STREAM: Final = "stream"
"""A connection dedicated to one stream."""
REQUEST: Final = "request"
"""A dialed connection dedicated to request/reply exchanges (frames to the peer)."""


class Refusal:
    """Why a handshake was refused: an HTTP status, a reason for the body, and headers.

    Attributes:
        status: the HTTP status (401 no or bad proof of the token, or the token's challenge;
            403 a browser's origin or streams not accepted; 404 wrong path; 400 bad channel;
            503 shutting down or too many connections).
        reason: a one-line explanation, sent as the response body.
        headers: response headers to send with it (a 401's ``WWW-Authenticate``).
    """

    __slots__ = ("status", "reason", "headers")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers or []

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.reason!r})"


class Screen:
    """Screens opening handshakes; see the module docstring.

    Args:
        path: the gossip path.
        bearer_token: the token dialers must prove (``""``: none).
        allowed_origins: the ``Origin`` values whose handshakes are let in.
        nonce_lifetime: seconds a server nonce of a token challenge stays usable.
        count: ``count(name, n)`` adds to a transport counter.
        streams_accepted: tells whether stream connections are accepted now.
    """

    def __init__(self, *, path: str, bearer_token: str, allowed_origins: tuple[str, ...] | list[str],
                 nonce_lifetime: float, count: Callable[[str, int], None],
                 streams_accepted: Callable[[], bool]) -> None:
        self.path = path
        self.bearer_token = bearer_token
        self._origins = frozenset(o.strip().lower() for o in allowed_origins)
        self._nonces = wsauth.ServerNonces(nonce_lifetime)
        self._count = count
        self._streams_accepted = streams_accepted

    def __call__(self, path: str, headers: Mapping[str, str] | Any,
                 known_proved: bool = False) -> tuple[str, Refusal | None, bool]:
        """Return ``(channel, refusal, proved)`` for a handshake's path and headers (counted).

        ``proved`` is True when the dialer proved the bearer token (``known_proved``: it did,
        in an earlier screening of this very request, and its nonce is used up). A header that
        matters given twice is a 400.
        """
        try:
            return self._screen(path, headers, known_proved)
        except MultipleValuesError as exc:
            self._count("ws_handshake_failed", 1)
            return FRAMES, Refusal(400, f"Bad Request: the header {exc} is repeated"), False

    def _screen(self, path: str, headers: Mapping[str, str] | Any,
                known_proved: bool) -> tuple[str, Refusal | None, bool]:
        base = path.split("?", 1)[0]
        if base != self.path:
            self._count("ws_not_found", 1)
            return FRAMES, Refusal(404, f"Not Found: gossip listens on {self.path}"), False
        origin = headers.get("Origin")
        if origin is not None or headers.get("Sec-Fetch-Site") is not None \
                or headers.get("Sec-Fetch-Mode") is not None:
            # A browser's handshake: a web page must not speak gossip to a node.
            if origin is None or origin.strip().lower() not in self._origins:
                self._count("ws_origin_refused", 1)
                shown = (origin or "none")[:80]
                return FRAMES, Refusal(403, f"Forbidden: a handshake from origin {shown!r} is "
                                            "refused (not in websocket_allowed_origins)"), False
        channel = (headers.get(CHANNEL_HEADER) or FRAMES).strip().lower()
        kind = STREAM if channel == STREAM else FRAMES
        token = self.bearer_token
        if token and not known_proved:
            refusal = self._check_proof(token, headers, channel)
            if refusal is not None:
                return kind, refusal, False
        proved = bool(token)
        if channel == STREAM:
            if not self._streams_accepted():
                self._count("ws_streams_refused", 1)
                return STREAM, Refusal(403, "streams are not accepted here"), proved
            return STREAM, None, proved
        if channel != FRAMES:
            self._count("ws_handshake_failed", 1)
            return FRAMES, Refusal(400, f"unknown {CHANNEL_HEADER} {channel[:40]!r}"), proved
        return FRAMES, None, proved

    def _check_proof(self, token: str, headers: Mapping[str, str] | Any,
                     channel: str) -> Refusal | None:
        """Check the dialer's proof of the token, or answer its challenge (a 401 either way)."""
        auth = headers.get(wsauth.AUTH_HEADER)
        if auth is not None:
            parsed = wsauth.parse_auth(auth)
            why = "malformed proof"
            if parsed is not None:
                snonce, cnonce, proof = parsed
                if not wsauth.verify(wsauth.client_proof(token, cnonce, snonce, channel), proof):
                    why = "wrong proof of the bearer token"
                else:
                    why = self._nonces.accept(snonce)
                    if not why:
                        return None
            self._count("ws_auth_refused", 1)
            return Refusal(401, f"Unauthorized: {why}",
                           [("WWW-Authenticate", wsauth.challenge_value())])
        cnonce = (headers.get(wsauth.CHALLENGE_HEADER) or "").strip()
        if not wsauth.valid_client_nonce(cnonce):
            self._count("ws_auth_refused", 1)
            return Refusal(401, "Unauthorized: this node requires proof of the bearer token",
                           [("WWW-Authenticate", wsauth.challenge_value())])
        # The dialer's first request: prove we hold the token, and challenge it.
        self._count("ws_auth_challenges", 1)
        snonce = self._nonces.issue()
        value = wsauth.challenge_value(snonce, wsauth.server_proof(token, cnonce, snonce))
        return Refusal(401, "Unauthorized: prove the bearer token", [("WWW-Authenticate", value)])
