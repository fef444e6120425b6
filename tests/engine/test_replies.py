"""The requests waiting for their replies (gossip.engine.replies.Replies) and the deadlines
thread they use (gossip.engine.deadlines.Deadlines): a reply completes its waiter on the
thread that reads it, cancellation forgets the waiter, late and stray replies are counted,
timeouts end each waiter at its own time, and nothing grows with the number of requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest

from gossip.codecs import DEFAULT_CODEC
from gossip.counters import Counters
from gossip.engine import replies as replies_module
from gossip.engine.deadlines import SWEEP_MIN, Alarm, Deadlines
from gossip.engine.replies import Replies
from gossip.errors import ClusterClosed, GossipTimeout, SendError
from gossip.packet import Packet
from gossip.wire import MessageType

NODE = b"\x01" * 16
LOG = logging.getLogger("gossip.test")


def reply(msg_id: int, sender: bytes = NODE) -> Packet:
    """A reply packet from ``sender`` to the request ``msg_id``."""
    return Packet(MessageType.REPLY, sender, msg_id, 1, DEFAULT_CODEC.encode("ok"),
                  DEFAULT_CODEC, False, False, 10)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDeadlines:
    """The deadlines part, fired by the test: records every deadline set."""

    def __init__(self) -> None:
        self.set: list[tuple[float, Alarm]] = []

    def at(self, when: float, fn: Callable[[], None]) -> Alarm:
        alarm = Alarm(when, fn)
        self.set.append((when, alarm))
        return alarm

    def live(self) -> list[Alarm]:
        return [a for _, a in self.set if not a.cancelled]

    def fire_due(self, now: float) -> None:
        """Run every deadline not cancelled whose time has come (as the thread would)."""
        for when, alarm in list(self.set):
            if not alarm.cancelled and when <= now:
                fn = alarm.fn
                alarm.cancelled = True
                alarm.fn = None
                assert fn is not None
                fn()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(replies_module.time, "monotonic", c)
    return c


@pytest.fixture
def fake() -> FakeDeadlines:
    return FakeDeadlines()


@pytest.fixture
def deadlines() -> Iterator[Deadlines]:
    d = Deadlines(Counters(), LOG, "gossip-test")
    yield d
    d.close()
    assert d.join(time.monotonic() + 5.0) == []


def make(fake: FakeDeadlines) -> tuple[Replies, Counters]:
    counters = Counters()
    return Replies(fake, counters), counters  # type: ignore[arg-type]


def test_a_reply_completes_its_waiter_on_the_thread_that_reads_it(fake: FakeDeadlines) -> None:
    table, counters = make(fake)
    fut = table.expect(NODE, 7, 5.0, "request 7")
    seen: list[str] = []
    fut.add_done_callback(lambda f: seen.append(threading.current_thread().name))
    reader = threading.Thread(target=table.resolve, args=(reply(7),), name="reader")
    reader.start()
    reader.join()
    assert fut.result(0).msg_id == 7
    assert seen == ["reader"]  # no hand-off to another thread between the read and the waiter
    assert len(table) == 0
    assert counters.snapshot() == {}


def test_a_cancelled_waiter_leaves_at_once_and_its_reply_is_counted_late(
        fake: FakeDeadlines) -> None:
    table, counters = make(fake)
    fut = table.expect(NODE, 7, 5.0, "request 7")
    assert fut.cancel()
    assert len(table) == 0
    table.resolve(reply(7))
    table.resolve(reply(8))  # never asked
    assert counters.get("dropped.late_replies") == 1
    assert counters.get("dropped.stray_replies") == 1
    assert fut.cancel() and fut.cancelled()  # a second cancel, as concurrent.futures answers it,
    assert len(table) == 0 and counters.get("dropped.late_replies") == 1  # changes nothing


def test_cancellation_racing_the_reply_ends_each_request_one_way_only(
        fake: FakeDeadlines) -> None:
    table, counters = make(fake)
    n = 2000
    futs = [table.expect(NODE, i, 30.0, "r") for i in range(n)]
    go = threading.Barrier(2)

    def cancel_all() -> None:
        go.wait()
        for f in futs:
            f.cancel()

    def answer_all() -> None:
        go.wait()
        for i in range(n):
            table.resolve(reply(i))

    threads = [threading.Thread(target=cancel_all), threading.Thread(target=answer_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answered = sum(1 for f in futs if not f.cancelled())
    assert all(f.done() for f in futs)
    for i, f in enumerate(futs):
        if not f.cancelled():
            assert f.result(0).msg_id == i, "each waiter got its own request's reply"
    # every reply either completed its waiter or was counted late; none is lost or stray
    assert answered + counters.get("dropped.late_replies") == n
    assert counters.get("dropped.stray_replies") == 0
    assert len(table) == 0


def test_each_waiter_times_out_at_its_own_time_with_one_deadline_set(
        clock: Clock, fake: FakeDeadlines) -> None:
    table, counters = make(fake)
    slow = table.expect(NODE, 1, 5.0, "slow")
    fast = table.expect(NODE, 2, 1.0, lambda: "fast request")
    middle = table.expect(NODE, 3, 3.0, "middle")
    assert len(fake.live()) == 1 and fake.live()[0].when == clock.now + 1.0
    clock.now += 0.999
    fake.fire_due(clock.now)
    assert not fast.done()
    clock.now += 0.001
    fake.fire_due(clock.now)
    with pytest.raises(GossipTimeout, match="fast request: no reply within 1s"):
        fast.result(0)
    assert not middle.done() and not slow.done()
    assert [a.when for a in fake.live()] == [clock.now + 2.0]  # the next one
    table.resolve(reply(3))  # answered in time
    assert middle.result(0).msg_id == 3
    clock.now += 4.0
    fake.fire_due(clock.now)
    with pytest.raises(GossipTimeout, match="slow"):
        slow.result(0)
    assert fake.live() == [] and len(table) == 0
    table.resolve(reply(2))  # the timed-out request's reply, late
    assert counters.get("dropped.late_replies") == 1


def test_an_earlier_deadline_replaces_the_one_set(clock: Clock, fake: FakeDeadlines) -> None:
    table, _ = make(fake)
    late = table.expect(NODE, 1, 10.0, "late")
    soon = table.expect(NODE, 2, 0.5, "soon")
    assert [a.when for a in fake.live()] == [clock.now + 0.5]
    clock.now += 0.5
    fake.fire_due(clock.now)
    assert isinstance(soon.exception(0), GossipTimeout)
    assert not late.done()
    assert [a.when for a in fake.live()] == [clock.now + 9.5]


def test_a_stale_deadline_that_fires_after_an_earlier_one_was_set_changes_nothing(
        clock: Clock, fake: FakeDeadlines) -> None:
    table, _ = make(fake)
    first = table.expect(NODE, 1, 10.0, "first")
    stale = fake.live()[0]
    second = table.expect(NODE, 2, 1.0, "second")
    assert stale.cancelled
    current = fake.live()
    # Had the first deadline been taken out of the heap a moment before the earlier one was
    # set, its callback would still run: it ends nothing early and sets no second deadline.
    table._expire(1)  # the first deadline's number
    assert not first.done() and not second.done()
    assert fake.live() == current
    clock.now += 1.0
    fake.fire_due(clock.now)
    assert isinstance(second.exception(0), GossipTimeout)
    assert [a.when for a in fake.live()] == [clock.now + 9.0]


def test_memory_stays_bounded_by_the_requests_waiting_not_those_sent(
        deadlines: Deadlines) -> None:
    counters = Counters()
    table = Replies(deadlines, counters)
    for i in range(10_000):
        fut = table.expect(NODE, i, 30.0, "r")
        if i % 2:
            table.resolve(reply(i))
        else:
            fut.cancel()
    assert len(table) == 0
    assert len(deadlines) <= 2  # one deadline for the whole table, not one per request
    assert table.timeouts <= SWEEP_MIN + 2
    table.close()


def test_a_waiter_whose_request_could_not_be_sent_fails_and_leaves(fake: FakeDeadlines) -> None:
    table, counters = make(fake)
    fut = table.expect(NODE, 1, 5.0, "r")
    table.fail(fut, SendError("broken"))
    with pytest.raises(SendError):
        fut.result(0)
    assert len(table) == 0
    table.fail(fut, SendError("again"))  # done already: nothing happens
    other: Future[Packet] = Future()
    table.fail(other, SendError("not ours"))
    assert isinstance(other.exception(0), SendError)
    table.resolve(reply(1))
    assert counters.get("dropped.late_replies") == 1


def test_close_fails_every_waiter_and_takes_no_more(fake: FakeDeadlines) -> None:
    table, _ = make(fake)
    futs = [table.expect(NODE, i, 5.0, "r") for i in range(3)]
    table.close()
    for f in futs:
        with pytest.raises(ClusterClosed):
            f.result(0)
    assert fake.live() == []
    with pytest.raises(ClusterClosed):
        table.expect(NODE, 9, 5.0, "r")


# ---------------------------------------------------------------------------------- deadlines


def test_cancelled_deadlines_are_swept_out_of_the_heap(deadlines: Deadlines) -> None:
    alarms = [deadlines.after(3600.0, lambda: None) for _ in range(1000)]
    for a in alarms:
        a.cancel()
        a.cancel()  # idempotent: counted once
    keep = deadlines.after(3600.0, lambda: None)
    assert len(deadlines) <= SWEEP_MIN + 2
    assert not keep.cancelled


def test_a_deadline_fires_once_and_a_cancel_after_it_fired_counts_nothing(
        deadlines: Deadlines) -> None:
    fired = threading.Event()
    alarm = deadlines.after(0.0, fired.set)
    assert fired.wait(10.0)
    for _ in range(10):
        alarm.cancel()
    assert deadlines._dead == 0
    gone = deadlines.after(3600.0, fired.set)
    gone.cancel()
    assert deadlines._dead == 1


def test_after_close_a_deadline_is_never_set(deadlines: Deadlines) -> None:
    deadlines.after(3600.0, lambda: None)
    deadlines.close()
    alarm = deadlines.after(0.0, lambda: None)
    assert alarm.cancelled and len(deadlines) == 0
