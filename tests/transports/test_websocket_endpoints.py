"""Where a WebSocket node listens and how it is reached (:mod:`gossip.transports.websocket.endpoints`)."""

from __future__ import annotations

import pytest

from gossip.errors import AddressError, ConnectError
from gossip.transports.websocket.endpoints import is_loopback, parse_peer_url, websocket_url


@pytest.mark.parametrize("host, port, secure, url", [
    ("127.0.0.1", 80, False, "ws://127.0.0.1:80/gossip"),
    ("0.0.0.0", 7946, True, "wss://127.0.0.1:7946/gossip"),  # unspecified: loopback
    ("::1", 9, False, "ws://[::1]:9/gossip"),
    ("node.example", 443, True, "wss://node.example:443/gossip"),
])
def test_the_url_a_listener_serves(host: str, port: int, secure: bool, url: str) -> None:
    assert websocket_url(host, port, secure=secure) == url


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("LOCALHOST.", True), ("127.0.0.9", True), ("::1", True),
    ("192.0.2.1", False), ("example.org", False),
])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_peer_urls_are_checked_before_any_dial() -> None:
    assert parse_peer_url("ws://127.0.0.1:8080/gossip", allow_insecure=False).port == 8080
    assert parse_peer_url("wss://192.0.2.1/gossip", allow_insecure=False).secure
    assert parse_peer_url("ws://192.0.2.1/gossip", allow_insecure=True).host == "192.0.2.1"
    with pytest.raises(ConnectError, match="allow_insecure_websockets"):
        parse_peer_url("ws://192.0.2.1/gossip", allow_insecure=False)
    with pytest.raises(AddressError, match="user info"):
        parse_peer_url("ws://user:secret@127.0.0.1/gossip", allow_insecure=False)
    with pytest.raises(AddressError):
        parse_peer_url("http://127.0.0.1/gossip", allow_insecure=False)
