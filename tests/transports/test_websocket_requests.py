"""The WebSocket transport's request connections (:mod:`gossip.transports.websocket.requests`),
over fake links: one exchange per connection, the idle pool, and one redial when a pooled
connection turns out dead."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest

from gossip.errors import GossipTimeout, SendError
from gossip.transports.base import Deadline
from gossip.transports.websocket.link import CLOSED, OPEN
from gossip.transports.websocket.requests import IDLE_PER_ADDR, Requests

URL = "ws://127.0.0.1:1/gossip"


class FakeLink:
    """A request connection: answers each request with ``reply``, or fails as told."""

    def __init__(self, peer: str = URL, reply: bytes | None = b"ok") -> None:
        self.lock = threading.Lock()
        self.readable = threading.Condition(self.lock)
        self.mailbox: deque[bytes] = deque()
        self.state = OPEN
        self.closing = False
        self.error: str | None = None
        self.expect_reply = False
        self.unclean = False
        self.peer_addr = peer
        self.reply = reply
        self.fail_put = False
        self.close_on_put = False
        self.puts: list[bytes] = []
        self.aborted: str | None = None

    def put(self, data: bytes, deadline: Deadline, what: str) -> None:
        self.puts.append(data)
        if self.fail_put:
            raise SendError(f"{what}: broken pipe")
        with self.lock:
            if self.close_on_put:
                self.state, self.error = CLOSED, "reset by peer"
            elif self.reply is not None:
                self.mailbox.append(self.reply + b":" + data)
            self.readable.notify_all()

    def abort(self, why: str) -> None:
        self.aborted = why
        self.state = CLOSED


class Harness:
    def __init__(self) -> None:
        self.dialed: list[FakeLink] = []
        self.next: list[FakeLink] = []
        self.closed = False
        self.requests = Requests(dial=self.dial, wait_open=lambda link, what, deadline: None,
                                 is_closed=lambda: self.closed)

    def dial(self, addr: str) -> Any:
        link = self.next.pop(0) if self.next else FakeLink(addr)
        self.dialed.append(link)
        return link

    def request(self, data: bytes, timeout: float = 5.0) -> bytes:
        return self.requests.request(URL, data, Deadline(timeout))


def idle(h: Harness) -> set[object]:
    return set(h.requests.idle())


def test_a_clean_exchange_leaves_its_connection_in_the_pool_for_the_next() -> None:
    h = Harness()
    assert h.request(b"1") == b"ok:1"
    (link,) = h.dialed
    assert idle(h) == {link} and link.aborted is None and not link.expect_reply
    assert h.request(b"2") == b"ok:2"
    assert h.dialed == [link] and link.puts == [b"1", b"2"]


def test_a_pooled_connection_that_fails_to_write_is_replaced_by_one_dial() -> None:
    h = Harness()
    h.request(b"1")
    (old,) = h.dialed
    old.fail_put = True
    assert h.request(b"2") == b"ok:2"
    assert len(h.dialed) == 2 and old.aborted is not None
    assert idle(h) == {h.dialed[1]}


def test_a_fresh_connection_that_fails_to_write_is_an_error() -> None:
    h = Harness()
    broken = FakeLink()
    broken.fail_put = True
    h.next.append(broken)
    with pytest.raises(SendError, match="broken pipe"):
        h.request(b"x")
    assert len(h.dialed) == 1 and broken.aborted is not None and idle(h) == set()


def test_a_pooled_connection_closed_before_the_reply_is_replaced_by_one_dial() -> None:
    h = Harness()
    h.request(b"1")
    (old,) = h.dialed
    old.close_on_put = True
    assert h.request(b"2") == b"ok:2"
    assert len(h.dialed) == 2 and old.aborted is not None


def test_a_fresh_connection_closed_before_the_reply_is_an_error() -> None:
    h = Harness()
    dying = FakeLink()
    dying.close_on_put = True
    h.next.append(dying)
    with pytest.raises(SendError, match="closed before the reply .reset by peer."):
        h.request(b"x")
    assert len(h.dialed) == 1


def test_no_reply_in_time_is_a_timeout_and_the_connection_is_not_kept() -> None:
    h = Harness()
    h.next.append(FakeLink(reply=None))
    with pytest.raises(GossipTimeout):
        h.request(b"x", timeout=0.0)
    assert h.dialed[0].aborted is not None and idle(h) == set()


def test_dead_idle_connections_are_skipped_and_forgotten() -> None:
    h = Harness()
    pool = [FakeLink() for _ in range(3)]
    for link in pool:
        h.requests._give_back(URL, link, True)      # type: ignore[arg-type]
    assert idle(h) == set(pool)
    pool[2].state = CLOSED                          # the newest died in the pool
    pool[1].closing = True                          # the next is closing
    assert h.request(b"x") == b"ok:x"
    assert h.dialed == [] and pool[0].puts == [b"x"]
    h.requests.forget(pool[0])                      # type: ignore[arg-type]
    h.requests.forget(pool[0])                      # type: ignore[arg-type]  # not pooled: no-op
    h.requests.forget(FakeLink(peer="ws://127.0.0.1:2/other"))  # type: ignore[arg-type]
    assert idle(h) == set()
    kept = FakeLink()
    h.requests._give_back(URL, kept, True)          # type: ignore[arg-type]
    h.requests.forget(FakeLink())                   # type: ignore[arg-type]  # same URL, not pooled
    assert idle(h) == {kept}
    other = FakeLink()
    h.requests._give_back(URL, other, True)         # type: ignore[arg-type]
    h.requests.forget(kept)                         # type: ignore[arg-type]
    assert idle(h) == {other}


def test_a_reply_that_comes_later_wakes_the_waiting_request() -> None:
    h = Harness()
    slow = FakeLink(reply=None)
    h.next.append(slow)

    def answer() -> None:
        with slow.lock:
            while not slow.puts:
                slow.readable.wait(5.0)
            slow.mailbox.append(b"late")
            slow.readable.notify_all()

    th = threading.Thread(target=answer)
    th.start()
    try:
        assert h.request(b"x") == b"late"
    finally:
        th.join(5.0)


def test_the_pool_is_bounded_unclean_links_are_dropped_and_a_closed_transport_keeps_none() -> None:
    h = Harness()
    links = [FakeLink() for _ in range(IDLE_PER_ADDR + 1)]
    for link in links:
        h.requests._give_back(URL, link, True)      # type: ignore[arg-type]
    assert len(idle(h)) == IDLE_PER_ADDR and links[-1].aborted is not None
    unclean = FakeLink(peer="ws://127.0.0.1:3/")
    h.requests._give_back(unclean.peer_addr, unclean, False)  # type: ignore[arg-type]
    assert unclean.aborted is not None
    h.closed = True
    late = FakeLink(peer="ws://127.0.0.1:4/")
    h.requests._give_back(late.peer_addr, late, True)  # type: ignore[arg-type]
    assert late.aborted is not None
