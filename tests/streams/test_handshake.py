"""The opening of a stream (gossip.streams.handshake): the OPEN and ACCEPT bodies, and the
import paths that name them."""

from __future__ import annotations

import pytest

import gossip
from gossip.errors import DecodeError
from gossip.streams.handshake import (
    MAX_REASON,
    STATUS_BUSY,
    decode_accept,
    decode_open,
    encode_accept,
    encode_open,
)


def test_open_and_accept_bodies_round_trip_and_refuse_garbage() -> None:
    body = encode_open(300, b"s" * 16, b"i" * 8, b"payload")
    req = decode_open(body)
    assert (req.msg_type, req.client_salt, req.key_id, req.payload) == (300, b"s" * 16, b"i" * 8,
                                                                          b"payload")
    acc = decode_accept(encode_accept(STATUS_BUSY, b"c" * 16, b"z" * 16, "full"))
    assert (acc.status, acc.client_salt, acc.server_salt, acc.reason) == (STATUS_BUSY, b"c" * 16,
                                                                          b"z" * 16, "full")
    for bad in (b"", body[:10], b"\x09" + body[1:]):
        with pytest.raises(DecodeError):
            decode_open(bad)
    good = encode_accept(0, b"c" * 16, b"z" * 16)
    for bad in (b"", good[:20], b"\x09" + good[1:], good + b"r" * 2000):
        with pytest.raises(DecodeError):
            decode_accept(bad)


def test_a_refusal_reason_is_cut_to_its_bound() -> None:
    acc = decode_accept(encode_accept(STATUS_BUSY, b"c" * 16, b"z" * 16, "x" * 5000))
    assert acc.reason == "x" * MAX_REASON


def test_the_former_module_path_names_the_same_objects() -> None:
    import gossip.stream as former
    import gossip.streams as streams

    assert former.__all__ == streams.__all__
    for name in streams.__all__:
        assert getattr(former, name) is getattr(streams, name)
    assert gossip.Stream is streams.Stream is former.Stream
