"""The join in the background (:class:`gossip.engine.seeds.SeedJoiner`) and its backoff, with a
scripted attempt and a recorded wait: no sockets, no clock."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import pytest

from gossip.errors import ClusterClosed, JoinError, TransportError
from gossip.engine.seeds import SeedJoiner
from gossip.joining import (
    JOIN_IDLE,
    JOIN_JOINED,
    JOIN_JOINING,
    JOIN_REJOINING,
    JOIN_STOPPED,
    Backoff,
    JoinAttemptFailed,
    JoinOutcome,
    JoinSucceeded,
)

LOG = logging.getLogger("gossip.test")


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.005)


def test_backoff_grows_to_its_cap_and_every_wait_is_jittered() -> None:
    b = Backoff(1.0, 60.0, random.Random(7))
    waits = [b.next() for _ in range(12)]
    bounds = [min(60.0, 2.0 ** n) for n in range(12)]
    for w, d in zip(waits, bounds):
        assert d / 2 <= w <= d
    # Until the cap, each wait is at least the last (a bound's lower half is the last's upper);
    # at the cap they stay in its upper half.
    assert waits[:7] == sorted(waits[:7])
    assert all(30.0 <= w <= 60.0 for w in waits[6:])
    assert all(w not in (d, d / 2) for w, d in zip(waits, bounds))  # drawn, not the bound
    other = Backoff(1.0, 60.0, random.Random(8))
    assert [other.next() for _ in range(12)] != waits  # two nodes do not retry in step
    again = Backoff(1.0, 60.0, random.Random(7))
    assert [again.next() for _ in range(12)] == waits  # the same seed, the same schedule
    b.reset()
    assert b.next() <= 1.0
    assert Backoff(1.0, 60.0, random.Random(1)).bound(100) == 60.0


class Script:
    """An attempt that fails ``failures`` times, then accepts; it records each call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[str]] = []

    def __call__(self, peers: list[str], timeout: float) -> JoinOutcome:
        self.calls.append(sorted(peers))
        if len(self.calls) <= self.failures:
            raise JoinError({p: "connection refused" for p in peers})
        return JoinOutcome(peers[:1], {})


def make(attempt: Callable[[list[str], float], JoinOutcome], seed: int = 3,
         isolated: Callable[[], bool] = lambda: False
         ) -> tuple[SeedJoiner, list[object], list[float]]:
    events: list[object] = []
    waits: list[float] = []

    def wait(ev: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        return ev.is_set()

    rng = random.Random(seed)
    joiner = SeedJoiner(attempt, isolated, events.append, Backoff(0.5, 8.0, rng), 1.0, rng,
                        LOG, "gossip-test", wait=wait)
    return joiner, events, waits


def test_attempts_repeat_with_a_growing_jittered_backoff_until_a_seed_accepts() -> None:
    script = Script(failures=6)
    joiner, events, waits = make(script)
    assert joiner.status().state == JOIN_IDLE
    status = joiner.add(["127.0.0.1:7946", "127.0.0.2:7946"])
    assert status.state in (JOIN_JOINING, JOIN_JOINED)
    wait_until(lambda: joiner.status().state == JOIN_JOINED, "joined")
    failed = [e for e in events if isinstance(e, JoinAttemptFailed)]
    ok = [e for e in events if isinstance(e, JoinSucceeded)]
    assert [e.attempt for e in failed] == [1, 2, 3, 4, 5, 6]
    assert "127.0.0.1:7946: connection refused" in failed[0].reason
    assert failed[0].failures == {"127.0.0.1:7946": "connection refused",
                                  "127.0.0.2:7946": "connection refused"}
    assert len(ok) == 1 and ok[0].attempt == 7 and not ok[0].rejoin
    # The waits are the backoff's, in order, and each event names the wait that follows it.
    assert waits == [e.retry_in for e in failed]
    expected = Backoff(0.5, 8.0, random.Random(3))
    assert waits != [expected.bound(n) for n in range(6)]
    for n, w in enumerate(waits):
        assert expected.bound(n) / 2 <= w <= expected.bound(n)
    assert waits[-1] > waits[0] * 4
    status = joiner.status()
    assert status.attempts == 7 and status.last_error == "" and status.next_attempt_in is None
    assert status.peers == ("127.0.0.1:7946", "127.0.0.2:7946")
    joiner.close()
    wait_until(lambda: joiner.thread is not None and not joiner.thread.is_alive(), "thread ends")
    assert joiner.status().state == JOIN_STOPPED


def test_every_attempt_tries_every_seed_added_so_far() -> None:
    script = Script(failures=2)
    joiner, events, _ = make(script)
    gate = threading.Event()
    real = script.__call__

    def slow(peers: list[str], timeout: float) -> JoinOutcome:
        if len(script.calls) == 1:
            gate.wait(10)
        return real(peers, timeout)

    joiner._attempt = slow
    joiner.add(["127.0.0.1:1"])
    wait_until(lambda: len(script.calls) == 1, "first attempt")
    joiner.add(["127.0.0.1:2", "127.0.0.1:1"])  # while an attempt is under way
    gate.set()
    wait_until(lambda: joiner.status().state == JOIN_JOINED, "joined")
    assert script.calls[0] == ["127.0.0.1:1"]
    assert script.calls[-1] == ["127.0.0.1:1", "127.0.0.1:2"]
    joiner.add(["127.0.0.1:3"])  # joined: kept as a seed, no attempt
    assert joiner.status().peers == ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    joiner.close()
    with pytest.raises(ClusterClosed):
        joiner.add(["127.0.0.1:4"])


def test_a_node_left_alone_goes_back_to_its_seeds_the_same_way() -> None:
    alone = threading.Event()
    script = Script(failures=0)
    joiner, events, waits = make(script, isolated=alone.is_set)
    joiner.add(["127.0.0.1:7946"])
    wait_until(lambda: joiner.status().state == JOIN_JOINED, "joined")
    joiner.member_lost()          # a member died, but others are alive: nothing happens
    script.failures = 3
    alone.set()
    assert joiner.status().state == JOIN_JOINED
    joiner.member_lost()          # the last one died
    wait_until(lambda: joiner.status().rejoins == 1 and joiner.status().state == JOIN_JOINED,
               "re-joined")
    alone.clear()
    rejoin_events = [e for e in events if getattr(e, "rejoin", False)]
    assert [type(e).__name__ for e in rejoin_events] == ["JoinAttemptFailed"] * 2 + ["JoinSucceeded"]
    assert [e.attempt for e in rejoin_events] == [1, 2, 3]  # attempts count again from 1
    assert len(waits) == 2 and waits[0] <= 0.5               # and the backoff starts over
    joiner.close()


def test_close_during_a_backoff_ends_the_thread_and_no_event_follows() -> None:
    script = Script(failures=1000)
    events: list[object] = []
    rng = random.Random(1)
    joiner = SeedJoiner(script, lambda: False, events.append, Backoff(3600.0, 3600.0, rng), 1.0,
                        rng, LOG, "gossip-test")  # the real wait: an hour
    joiner.add(["127.0.0.1:7946"])
    wait_until(lambda: joiner.status().next_attempt_in is not None, "first backoff")
    assert 1800.0 <= (joiner.status().next_attempt_in or 0) <= 3600.0
    joiner.close()
    assert joiner.thread is not None
    joiner.thread.join(10)
    assert not joiner.thread.is_alive()
    assert len(script.calls) == 1 and len(events) == 1
    assert joiner.status().state == JOIN_STOPPED


def test_a_stop_during_an_attempt_ends_the_joiner() -> None:
    def closed(peers: list[str], timeout: float) -> JoinOutcome:
        raise ClusterClosed("stopped")

    joiner, events, _ = make(closed)
    joiner.add(["127.0.0.1:7946"])
    wait_until(lambda: joiner.thread is not None and not joiner.thread.is_alive(), "thread ends")
    assert events == [] and joiner.status().state == JOIN_STOPPED


def test_other_errors_are_retried_and_a_bug_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky(peers: list[str], timeout: float) -> JoinOutcome:
        calls.append(1)
        if len(calls) == 1:
            raise TransportError("transport refused")
        raise RuntimeError("bug")

    joiner, events, _ = make(flaky)
    with caplog.at_level(logging.ERROR, logger="gossip.test"):
        joiner.add(["127.0.0.1:7946"])
        wait_until(lambda: joiner.thread is not None and not joiner.thread.is_alive(), "thread ends")
    assert isinstance(events[0], JoinAttemptFailed)
    assert events[0].failures == {"127.0.0.1:7946": "transport refused"}
    assert "the background join failed" in caplog.text


def test_events_read_well_and_shift_in_time() -> None:
    ok = JoinSucceeded(("127.0.0.1:1",), {}, 2, True, 10.0)
    assert str(ok) == "re-joined through 127.0.0.1:1 at attempt 2"
    assert ok.shifted(5.0).at == 15.0
    assert "no peer" in str(JoinSucceeded((), {}, 1, False, 0.0))
    bad = JoinAttemptFailed("x: refused", {"x": "refused"}, 1, 2.5, False, 1.0)
    assert str(bad) == "join attempt 1 failed (x: refused); next in 2.5s"
    assert bad.shifted(1.0).at == 2.0
