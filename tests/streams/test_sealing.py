"""The framing of an open stream (gossip.streams.sealing): derived keys, and each direction's
frames sealed under its counter, on their own, without a connection."""

from __future__ import annotations

import pytest

from gossip.errors import AuthenticationError, DecodeError
from gossip.streams import key_id
from gossip.streams.handshake import KEY_ID_SIZE
from gossip.streams.sealing import (
    FRAME_OVERHEAD,
    KIND_DATA,
    KIND_END,
    KIND_HELLO,
    Opener,
    Sealer,
    derive_stream_keys,
)

KEY = b"k" * 16


def test_key_derivation_separates_streams_directions_and_labels() -> None:
    key = b"k" * 32
    a = derive_stream_keys(key, b"1" * 16, b"2" * 16, b"")
    assert len(a.client_to_server) == 32 and a.client_to_server != a.server_to_client
    assert derive_stream_keys(key, b"1" * 16, b"3" * 16, b"").client_to_server != a.client_to_server
    assert derive_stream_keys(key, b"1" * 16, b"2" * 16, b"x").client_to_server != a.client_to_server
    assert derive_stream_keys(key, b"1" * 16, b"2" * 16, b"").server_to_client == a.server_to_client
    assert len(derive_stream_keys(b"k" * 16, b"1" * 16, b"2" * 16, b"").server_to_client) == 16
    assert "secret" in repr(a) and key.hex() not in repr(a)
    assert key_id(key) != key_id(b"j" * 32) and len(key_id(key)) == KEY_ID_SIZE


@pytest.mark.parametrize("key", [KEY, None], ids=["aes-gcm", "plaintext"])
def test_frames_open_in_the_order_they_were_sealed(key: bytes | None) -> None:
    sealer, opener = Sealer(key), Opener(key, "peer")
    for i, body in enumerate([b"", b"one", b"two" * 1000]):
        frame = bytes(sealer.seal(KIND_DATA if i else KIND_HELLO, body))
        assert len(frame) == len(body) + (FRAME_OVERHEAD if key else 1)
        kind = opener.kind(frame)
        assert kind == (KIND_DATA if i else KIND_HELLO)
        assert opener.body_size(frame) == len(body)
        assert bytes(opener.open(kind, frame)) == body


def test_a_sealed_frame_opens_into_a_buffer_of_its_size() -> None:
    sealer, opener = Sealer(KEY), Opener(KEY, "peer")
    frame = bytes(sealer.seal(KIND_DATA, b"payload"))
    dest = bytearray(opener.body_size(frame))
    opener.open_into(KIND_DATA, frame, memoryview(dest))
    assert dest == b"payload"


def test_a_frame_out_of_order_or_of_another_kind_fails_authentication() -> None:
    sealer = Sealer(KEY)
    first, second = bytes(sealer.seal(KIND_DATA, b"a")), bytes(sealer.seal(KIND_DATA, b"b"))
    with pytest.raises(AuthenticationError, match="frame 0 from peer"):
        Opener(KEY, "peer").open(KIND_DATA, second)  # the second frame where the first belongs
    relabelled = bytes([KIND_END]) + first[1:]  # the kind byte is authenticated too
    opener = Opener(KEY, "peer")
    with pytest.raises(AuthenticationError):
        opener.open(opener.kind(relabelled), relabelled)
    with pytest.raises(AuthenticationError):
        Opener(b"j" * 16, "peer").open_into(KIND_DATA, first, memoryview(bytearray(1)))


def test_a_frame_shorter_than_its_framing_or_of_an_unknown_kind_is_refused() -> None:
    opener = Opener(KEY, "peer")
    with pytest.raises(DecodeError, match="shorter than its framing"):
        opener.kind(b"\x02" + b"t" * (FRAME_OVERHEAD - 2))
    with pytest.raises(DecodeError, match="unknown kind 9"):
        opener.kind(b"\x09" + b"t" * FRAME_OVERHEAD)
    with pytest.raises(DecodeError):
        Opener(None, "peer").kind(b"")
