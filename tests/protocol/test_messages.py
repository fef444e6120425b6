"""The protocol messages: immutable values with equality by type and fields."""

from __future__ import annotations

import pytest

from gossip.messages import EMPTY_META, Ack, Alive, Dead, Gossip, Ping, Suspect, from_wire, to_wire
from gossip.errors import DecodeError
from gossip.node import NodeID
from gossip.wire import MessageType

A = NodeID.parse("00000000-0000-4000-8000-00000000000a")
B = NodeID.parse("00000000-0000-4000-8000-00000000000b")


def test_equal_fields_and_type_make_equal_messages_with_equal_hashes() -> None:
    assert Alive(A, 3, "127.0.0.1:1") == Alive(A, 3, "127.0.0.1:1", EMPTY_META, 0)
    assert hash(Alive(A, 3, "127.0.0.1:1")) == hash(Alive(A, 3, "127.0.0.1:1"))
    assert Alive(A, 3, "127.0.0.1:1") != Alive(A, 4, "127.0.0.1:1")
    # Same fields, different meaning: never equal, and both fit in one set.
    assert Suspect(A, 1, B) != Dead(A, 1, B)
    assert len({Suspect(A, 1, B), Dead(A, 1, B), Suspect(A, 1, B)}) == 2
    assert Ack(1) != (1, ())
    assert Ping(1, A, "x", (Alive(A, 1, "y"),)) == Ping(1, A, "x", (Alive(A, 1, "y"),))


def test_messages_are_immutable_and_slotted() -> None:
    m = Alive(A, 1, "127.0.0.1:1")
    with pytest.raises(AttributeError, match="immutable"):
        m.incarnation = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del m.addr  # type: ignore[misc]
    with pytest.raises(AttributeError):
        m.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(m, "__dict__")
    assert m.incarnation == 1


def test_repr_names_every_field_and_defaults_apply() -> None:
    d = Dead(A, 2, A)
    assert repr(d) == f"Dead(node={A!r}, incarnation=2, sender={A!r})"
    assert d.left and not Dead(A, 2, B).left
    p = Ping(7, B, "127.0.0.1:2")
    assert p.updates == () and p.suspect_inc == -1


def test_a_message_survives_its_wire_form() -> None:
    g = Gossip((Alive(A, 1, "127.0.0.1:1", {"k": "v"}, 5), Suspect(B, 2, A), Dead(B, 3, B)))
    mt, plain = to_wire(g)
    assert from_wire(mt, plain) == g


def test_a_huge_malformed_value_is_described_not_printed() -> None:
    # The error message of a refused message is built in bounded time: a hostile list of
    # millions of items (a compressed frame expands to that) is named by its length.
    for value in ([None] * 3_000_000, [[]] * 3_000_000, {"k": [0] * 1_000_000}, "x" * 5_000_000):
        with pytest.raises(DecodeError) as info:
            from_wire(MessageType.PING, value)
        assert len(str(info.value)) < 120
    with pytest.raises(DecodeError, match="a list of 3000000 items"):
        from_wire(MessageType.GOSSIP, [[0] * 3_000_000])
