"""What multicast discovery does with each announcement it hears (no sockets: a fake group)."""

from __future__ import annotations

import logging
import random
import time

from gossip.announce import MAX_SIZE, encode
from gossip.counters import Counters
from gossip.engine.discovery import MulticastDiscovery
from gossip.errors import ClusterClosed, JoinError

ME, PEER = b"\x01" * 16, b"\x02" * 16
KEY = b"d" * 16


class FakeGroup:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.fail = fail
        self.closed = False
        self.port = 7947

    def send(self, data: bytes) -> None:
        if self.fail:
            raise OSError("no route")
        self.sent.append(data)

    def recv(self, timeout: float) -> tuple[bytes, str] | None:
        if self.closed:
            raise OSError("closed")
        time.sleep(min(timeout, 0.01))
        return None

    def close(self) -> None:
        self.closed = True


def make(keys: tuple[bytes, ...] = (), members: set[bytes] = set(), join=None,  # type: ignore[no-untyped-def]
         group: FakeGroup | None = None, max_peers: int = 2):
    joined: list[str] = []
    counters = Counters()

    def default_join(addr: str) -> None:
        joined.append(addr)

    d = MulticastDiscovery(group or FakeGroup(), ME, lambda: "127.0.0.1:7946", "lab",  # type: ignore[arg-type]
                           lambda: keys, members.__contains__, join or default_join,
                           interval=30.0, max_peers=max_peers, counters=counters,
                           rng=random.Random(1), log=logging.getLogger("gossip.test"), prefix="gossip-t")
    return d, joined, counters


def ann(node: bytes = PEER, addr: str = "127.0.0.2:7946", key: bytes | None = None,
        label: str = "lab") -> bytes:
    return encode(node, addr, time.time(), label, key)


def test_a_peer_is_joined_once_per_interval_and_the_memory_is_bounded() -> None:
    d, joined, c = make()
    d.heard(ann(), "127.0.0.2")
    d.heard(ann(), "127.0.0.2")                      # within the interval: not again
    d.heard(ann(b"\x03" * 16, "127.0.0.3:1"), "127.0.0.3")
    d.heard(ann(b"\x04" * 16, "127.0.0.4:1"), "127.0.0.4")
    assert joined == ["127.0.0.2:7946", "127.0.0.3:1", "127.0.0.4:1"]
    assert list(d._tried) == ["127.0.0.3:1", "127.0.0.4:1"]   # max_peers=2: the oldest went
    d.heard(ann(), "127.0.0.2")                      # forgotten: joined again
    assert joined[-1] == "127.0.0.2:7946" and d.joined.is_set()
    snap = c.snapshot()
    assert snap["discovery.heard"] == 5 and snap["discovery.joins"] == 4


def test_itself_members_and_strangers_are_not_joined() -> None:
    d, joined, c = make(members={PEER})
    d.heard(ann(ME, "127.0.0.1:7946"), "127.0.0.1")   # its own, looped back
    d.heard(ann(), "127.0.0.2")                       # a member already
    d.heard(ann(label="other"), "127.0.0.2")
    d.heard(ann(b"\x05" * 16, "127.0.0.9:1"), "127.0.0.5")  # unkeyed, for another host
    d.heard(b"x" * (MAX_SIZE + 1), "127.0.0.2")
    assert joined == []
    snap = c.snapshot()
    assert snap["discovery.refused_label"] == 1 and snap["discovery.refused_source"] == 1
    assert snap["discovery.refused_malformed"] == 1


def test_a_keyed_announcement_may_name_any_address_and_a_failed_join_is_counted() -> None:
    def join(addr: str) -> None:
        raise JoinError({addr: "refused"})

    d, _, c = make(keys=(KEY,), join=join)
    d.heard(ann(key=KEY, addr="127.0.0.9:1"), "127.0.0.5")
    assert c.snapshot()["discovery.join_failures"] == 1 and not d.joined.is_set()


def test_a_stopped_engine_stops_discovery() -> None:
    def join(addr: str) -> None:
        raise ClusterClosed("stopped")

    d, _, _ = make(join=join)
    d.heard(ann(), "127.0.0.2")
    assert d._stop.is_set()


def test_the_thread_announces_counts_send_errors_and_ends_on_close() -> None:
    group = FakeGroup()
    d, _, c = make(keys=(KEY,), group=group)
    d.start()
    deadline = time.monotonic() + 10
    while not group.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    d.close()
    d.thread.join(10)
    assert not d.thread.is_alive() and group.sent and c.snapshot()["discovery.announced"] >= 1
    assert d.max_age == 120.0
    bad, _, c2 = make(group=FakeGroup(fail=True))
    bad.announce()
    assert c2.snapshot()["discovery.send_errors"] == 1
