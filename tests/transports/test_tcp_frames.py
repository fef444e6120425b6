"""The socket transport's wire (:mod:`gossip.transports.tcp.frames`), on bytes alone."""

from __future__ import annotations

import pytest

from gossip.transports.tcp.frames import (
    FRAMES,
    PREAMBLE_FRAMES,
    PREAMBLE_STREAM,
    STREAM,
    encode_frame,
    parse_frames,
    read_preamble,
)


def test_frames_come_out_whole_and_in_order_and_a_partial_one_waits() -> None:
    wire = encode_frame(b"one") + encode_frame(b"two" * 100) + encode_frame(b"three")[:6]
    frames, used, bad = parse_frames(bytearray(wire), limit=1000)
    assert frames == [b"one", b"two" * 100] and bad == -1
    assert wire[used:] == encode_frame(b"three")[:6]  # left for the next read
    rest = bytearray(wire[used:]) + encode_frame(b"three")[6:]
    assert parse_frames(rest, 1000) == ([b"three"], len(rest), -1)


@pytest.mark.parametrize("size", [0, 1001, 2**32 - 1])
def test_a_malformed_length_stops_parsing_and_is_reported(size: int) -> None:
    wire = encode_frame(b"good") + size.to_bytes(4, "big") + b"x" * 10
    frames, used, bad = parse_frames(wire, limit=1000)
    assert (frames, used, bad) == ([b"good"], 8, size)


def test_frames_are_copies_not_views_of_the_read_buffer() -> None:
    buf = bytearray(encode_frame(b"abc"))
    frames, _used, _bad = parse_frames(buf, 10)
    buf[4:7] = b"zzz"
    assert frames == [b"abc"] and type(frames[0]) is bytes


def test_the_preamble_names_what_a_connection_carries() -> None:
    assert read_preamble(PREAMBLE_FRAMES + b"rest") == FRAMES
    assert read_preamble(PREAMBLE_STREAM) == STREAM
    assert read_preamble(PREAMBLE_FRAMES[:3]) == ""  # not all there yet
    assert read_preamble(b"GET / HTTP/1.1") is None
