"""Tests of gossip.handlers: copy-on-write event handler lists and the message handler table."""

from __future__ import annotations

import pytest

from gossip.errors import HandlerExistsError, LocalProtocolError
from gossip.handlers import (
    HANDLER_FORWARD,
    HANDLER_REPLY,
    EventHandlers,
    MessageHandlers,
    check_user_type,
)


def test_event_handlers_add_remove_and_ids_are_unique() -> None:
    hs: EventHandlers[object] = EventHandlers()
    a, b = hs.add("a"), hs.add("b")
    assert a != b
    assert list(hs) == ["a", "b"] and len(hs) == 2
    assert hs.remove(a) is True
    assert hs.remove(a) is False
    assert hs.handlers() == ("b",)


def test_event_handlers_report_each_change_with_the_count() -> None:
    counts: list[int] = []
    hs: EventHandlers[object] = EventHandlers(counts.append)
    a, b = hs.add("a"), hs.add("b")
    assert hs.remove(a) is True
    assert hs.remove(a) is False       # nothing changed: nothing reported
    assert hs.remove(b) is True
    assert counts == [1, 2, 1, 0]


def test_event_handlers_iteration_is_a_snapshot() -> None:
    hs: EventHandlers[object] = EventHandlers()
    hs.add(1)
    it = iter(hs)
    hs.add(2)
    assert list(it) == [1]
    assert list(hs) == [1, 2]


@pytest.mark.parametrize("t", [0, 1, 63, -1, 65536])
def test_internal_or_out_of_range_types_are_refused(t: int) -> None:
    with pytest.raises(LocalProtocolError, match=str(t)):
        check_user_type(t)


@pytest.mark.parametrize("t", [64, 127, 128, 65535])
def test_user_and_addon_types_are_accepted(t: int) -> None:
    assert check_user_type(t) == t


def test_message_handlers_register_twice_and_unregister() -> None:
    mh = MessageHandlers()
    mh.register(128, HANDLER_FORWARD, lambda s, p: None)
    with pytest.raises(HandlerExistsError, match="128"):
        mh.register(128, HANDLER_REPLY, lambda s, p: None)
    h = mh.get(128)
    assert h is not None and h.forwards
    assert mh.unregister(128) is True
    assert mh.unregister(128) is False
    assert mh.get(128) is None
    with pytest.raises(LocalProtocolError):
        mh.register(5, HANDLER_FORWARD, lambda s, p: None)
    with pytest.raises(LocalProtocolError):
        mh.register(200, HANDLER_FORWARD, "not callable")  # type: ignore[arg-type]
