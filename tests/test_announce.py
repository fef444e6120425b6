"""Multicast announcements (:mod:`gossip.announce`): what a receiver accepts, and why it refuses
the rest. No sockets."""

from __future__ import annotations

import struct

import pytest

from gossip.announce import MAX_SIZE, AnnouncementRefused, cluster_tag, decode, encode

ID = bytes(range(16))
KEY, OTHER = b"k" * 16, b"o" * 32
NOW = 1_800_000_000.0


def refused(data: bytes, label: str = "", keys: tuple[bytes, ...] = (), now: float = NOW) -> str:
    with pytest.raises(AnnouncementRefused) as info:
        decode(data, label, keys, now, 60.0)
    return info.value.reason


def test_a_keyed_announcement_round_trips_and_never_carries_the_key() -> None:
    data = encode(ID, "127.0.0.1:7946", NOW, "prod", KEY)
    assert KEY not in data and b"prod" in data
    ann = decode(data, "prod", (OTHER, KEY), NOW + 1, 60.0)    # any installed key
    assert (ann.node, ann.addr, ann.keyed) == (ID, "127.0.0.1:7946", True)
    assert ann.sent_at == pytest.approx(NOW)
    plain = decode(encode(ID, "127.0.0.1:1", NOW, "", None), "", (), NOW, 60.0)
    assert not plain.keyed


def test_the_tag_depends_on_the_label_and_the_key() -> None:
    tags = {cluster_tag(l, k) for l in ("", "a") for k in (None, KEY, OTHER)}
    assert len(tags) == 6


def test_strangers_are_refused_with_a_reason() -> None:
    keyed = encode(ID, "127.0.0.1:7946", NOW, "prod", KEY)
    assert refused(keyed, "prod", (OTHER,)) == "cluster"              # another key
    assert refused(keyed, "test", (KEY,)) == "label"                   # another label
    assert refused(keyed, "prod", ()) == "cluster"                     # we have no key
    plain = encode(ID, "127.0.0.1:7946", NOW, "prod", None)
    assert refused(plain, "prod", (KEY,)) == "unauthenticated"         # we have one
    assert refused(keyed, "prod", (KEY,), now=NOW + 61) == "stale"
    assert refused(keyed, "prod", (KEY,), now=NOW - 61) == "stale"


def test_a_tampered_announcement_fails_its_mac() -> None:
    data = bytearray(encode(ID, "127.0.0.1:7946", NOW, "prod", KEY))
    i = data.index(b"127.0.0.1:7946")
    data[i + 8] = ord("9")                                             # 127.0.0.9: elsewhere
    assert refused(bytes(data), "prod", (KEY,)) == "unauthenticated"


@pytest.mark.parametrize("data", [
    b"", b"GSPA", b"x" * (MAX_SIZE + 1), b"XXXX" + bytes(60),
    encode(ID, "127.0.0.1:1", NOW, "", None)[:-3],                      # truncated
    encode(ID, "127.0.0.1:1", NOW, "", None) + b"!",                    # trailing
    encode(ID, "", NOW, "", None),                                      # no address
    encode(ID, "127.0.0.1:1", NOW, "", None).replace(b"127.0.0.1:1", b"\xff\xfe.0.0.1:1"),
    struct.pack("!4sBB8s16sQ", b"GSPA", 1, 0, cluster_tag("", None), ID, 0) + b"\x05ab",
], ids=["empty", "magic", "huge", "bad magic", "truncated", "trailing", "no address", "not utf-8",
        "label overruns"])
def test_malformed_announcements_are_refused(data: bytes) -> None:
    assert refused(data) == "malformed"


def test_another_version_is_refused() -> None:
    data = bytearray(encode(ID, "127.0.0.1:1", NOW, "", None))
    data[4] = 2
    assert refused(bytes(data)) == "version"


def test_encode_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode(ID, "x" * 256, NOW, "", None)
    with pytest.raises(ValueError):
        encode(b"short", "127.0.0.1:1", NOW, "", None)
