"""The joins under way (gossip.engine.joins), driven as the engine drives them: a command that
sends the join, then the core's answer, a failed send, a refused packet or a stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest

from gossip.counters import Counters
from gossip.engine.deadlines import Deadlines
from gossip.engine.joins import Joins
from gossip.joining import JoinOutcome
from gossip.errors import ClusterClosed
from gossip.protocol import JoinResult
from gossip.protocol.actions import JOIN_NO_ANSWER
from gossip.testing import wait_until

SEED = "127.0.0.1:7946"
WAIT = 10.0


def waiting(joins: Joins, timeout: float | None = WAIT) -> tuple[threading.Event, list[object]]:
    """Start a join on another thread; return (its join was sent, [its result or error])."""
    sent = threading.Event()
    out: list[object] = []

    def run() -> None:
        try:
            out.append(joins.wait(SEED, timeout, sent.set))
        except ClusterClosed as exc:
            out.append(exc)

    threading.Thread(target=run, daemon=True).start()
    assert sent.wait(WAIT)
    return sent, out


def settled(out: list[object]) -> Callable[[], bool]:
    return lambda: bool(out)


def wait_for(pred: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if pred():
            return
        done.wait(0.01)
    pytest.fail("timed out")


def test_the_core_s_answer_ends_the_wait_with_that_answer() -> None:
    joins = Joins(join_timeout=5.0)
    _, out = waiting(joins)
    joins.resolve(SEED, JoinResult(SEED, True, ""))
    wait_for(settled(out))
    assert out == [JoinResult(SEED, True, "")]
    joins.resolve(SEED, JoinResult(SEED, False, "late"))  # nobody waits any more: nothing happens


def test_no_answer_says_why_as_precisely_as_the_joiner_knows() -> None:
    joins = Joins(join_timeout=5.0)
    assert "the seed may be down" in joins.wait(SEED, 0.0, lambda: None).reason

    def connected() -> None:
        joins.sent(SEED)

    assert "accepted the connection" in joins.wait(SEED, 0.0, connected).reason


def test_the_core_s_own_timer_names_the_join_timeout() -> None:
    joins = Joins(join_timeout=7.5)
    _, out = waiting(joins)
    joins.resolve(SEED, JoinResult(SEED, False, JOIN_NO_ANSWER))
    wait_for(settled(out))
    result = out[0]
    assert isinstance(result, JoinResult) and not result.accepted
    assert "within 7.5s" in result.reason


def test_a_refused_answer_on_the_join_s_connection_ends_the_wait_at_once() -> None:
    joins = Joins(join_timeout=5.0)
    _, out = waiting(joins)
    joins.refused(SEED, "the seed has another encryption key", on_connection=True)
    wait_for(settled(out))
    result = out[0]
    assert isinstance(result, JoinResult) and not result.accepted
    assert "refused its answer: the seed has another encryption key" in result.reason


def test_a_refused_datagram_is_only_noted_for_the_no_answer_reason() -> None:
    # A datagram's source can be forged: it must not end a join, only explain its silence.
    joins = Joins(join_timeout=5.0)

    def refused_while_waiting() -> None:
        joins.refused(SEED, "the seed has another cluster label", on_connection=False)

    result = joins.wait(SEED, 0.05, refused_while_waiting)
    assert not result.accepted and "were refused: the seed has another cluster label" in result.reason


def test_a_failed_send_ends_the_wait_with_its_reason() -> None:
    joins = Joins(join_timeout=5.0)
    result = joins.wait(SEED, WAIT, lambda: joins.failed(SEED, "ConnectError: refused"))
    assert result == JoinResult(SEED, False, "ConnectError: refused")


def test_stopping_wakes_every_waiter_with_cluster_closed() -> None:
    joins = Joins(join_timeout=5.0)
    _, out = waiting(joins, timeout=None)
    joins.close()
    wait_for(settled(out))
    assert isinstance(out[0], ClusterClosed)


# ---------------------------------------------------------------------------------- join_peers


def test_peers_are_joined_in_parallel_and_each_tries_its_addresses_in_turn() -> None:
    from gossip.engine.joins import join_peers
    from gossip.errors import AddressError

    addrs = {"seed-a": ["127.0.0.2:7946", "127.0.0.3:7946"], "seed-b": ["127.0.0.4:7946"],
             "me": ["127.0.0.1:7946"]}
    tried: list[str] = []
    both_running = threading.Barrier(2, timeout=WAIT)

    def resolve(peer: str) -> list[str]:
        if peer == "nowhere":
            raise AddressError("unknown host")
        return addrs[peer]

    def join_addr(addr: str, left: float) -> JoinResult:
        tried.append(addr)
        if addr in ("127.0.0.3:7946", "127.0.0.4:7946"):
            both_running.wait()  # seed-a's second address and seed-b's: at the same time
            return JoinResult(addr, addr.endswith("3:7946"), "" if addr.endswith("3:7946") else "no")
        return JoinResult(addr, False, "refused")

    outcome = join_peers(["seed-a", "seed-b", "me", "nowhere"], WAIT, resolve=resolve,
                         join_addr=join_addr, own_addr="127.0.0.1:7946", prefix="gossip-test")
    assert outcome == 1 and outcome.joined == ("seed-a",) and outcome.skipped == ("me",)
    assert outcome.failures == {"seed-b": "127.0.0.4:7946: no", "nowhere": "cannot resolve: unknown host"}
    assert "127.0.0.1:7946" not in tried


def test_no_peer_accepting_is_a_join_error_naming_each() -> None:
    from gossip.engine.joins import join_peers
    from gossip.errors import JoinError

    with pytest.raises(JoinError) as err:
        join_peers(["127.0.0.2:7946"], WAIT, resolve=lambda p: [p],
                   join_addr=lambda addr, left: JoinResult(addr, False, "another label"),
                   own_addr="", prefix="gossip-test")
    assert err.value.failures == {"127.0.0.2:7946": "another label"}


# ---------------------------------------------------------------------------- join_peers_nowait

class FakeJoins:
    """``expect_join`` of a test: each join's future, by address, for the test to answer."""

    def __init__(self) -> None:
        self.futures: dict[str, list[Future[JoinResult]]] = {}
        self.closed = False

    def __call__(self, addr: str) -> Future[JoinResult]:
        if self.closed:
            raise ClusterClosed("stopped")
        fut: Future[JoinResult] = Future()
        self.futures.setdefault(addr, []).append(fut)
        return fut

    def answer(self, addr: str, accepted: bool, reason: str = "") -> None:
        self.futures[addr][-1].set_result(JoinResult(addr, accepted, reason))


@pytest.fixture
def deadlines() -> Iterator[Deadlines]:
    d = Deadlines(Counters(), logging.getLogger("gossip.test"), "gossip-test")
    yield d
    d.close()
    assert d.join(time.monotonic() + WAIT) == []


def nowait(peers: list[str], joins: FakeJoins, deadlines: Deadlines, timeout: float = 60.0,
           names: dict[str, list[str]] | None = None,
           lookup: Callable[[str], bool] = lambda peer: False) -> Future[JoinOutcome]:
    from gossip.engine.joins import join_peers_nowait
    from gossip.errors import AddressError

    def resolve(peer: str) -> list[str]:
        if names is None:
            return [peer]
        if peer not in names:
            raise AddressError(f"{peer}: unknown host")
        return names[peer]

    return join_peers_nowait(peers, timeout, resolve=resolve, needs_lookup=lookup,
                             expect_join=joins, own_addr="127.0.0.1:7946", deadlines=deadlines,
                             prefix="gossip-test")


def test_nowait_tries_each_address_in_turn_and_names_every_failure(deadlines: Deadlines) -> None:
    joins = FakeJoins()
    names = {"seed": ["127.0.0.2:7946", "127.0.0.3:7946"], "me": ["127.0.0.1:7946"]}
    out = nowait(["seed", "me", "nowhere"], joins, deadlines, names=names)
    assert list(joins.futures) == ["127.0.0.2:7946"]     # one address at a time
    joins.answer("127.0.0.2:7946", False, "another label")
    joins.answer("127.0.0.3:7946", True)
    outcome = out.result(WAIT)
    assert outcome.joined == ("seed",) and outcome.skipped == ("me",)
    assert outcome.failures == {"nowhere": "cannot resolve: nowhere: unknown host"}


def test_nowait_with_no_peer_accepting_fails_with_a_join_error(deadlines: Deadlines) -> None:
    from gossip.errors import JoinError

    joins = FakeJoins()
    out = nowait(["127.0.0.2:7946", "127.0.0.3:7946"], joins, deadlines)
    joins.answer("127.0.0.2:7946", False, "refused")
    joins.futures["127.0.0.3:7946"][0].set_exception(ClusterClosed("stopped"))
    with pytest.raises(JoinError) as err:
        out.result(WAIT)
    assert err.value.failures == {"127.0.0.2:7946": "refused",
                                  "127.0.0.3:7946": "127.0.0.3:7946: cluster stopped"}


def test_nowait_whose_every_peer_is_ourselves_succeeds_with_them_skipped(deadlines: Deadlines) -> None:
    outcome = nowait(["127.0.0.1:7946"], FakeJoins(), deadlines).result(WAIT)
    assert outcome == 0 and outcome.skipped == ("127.0.0.1:7946",) and not outcome.failures


def test_nowait_with_no_peers_ends_at_once(deadlines: Deadlines) -> None:
    outcome = nowait([], FakeJoins(), deadlines).result(WAIT)
    assert outcome == 0 and not outcome.failures and not outcome.skipped


def test_nowait_on_a_stopped_engine_fails_each_peer_with_cluster_stopped(deadlines: Deadlines) -> None:
    from gossip.errors import JoinError

    joins = FakeJoins()
    joins.closed = True
    with pytest.raises(JoinError) as err:
        nowait(["127.0.0.2:7946"], joins, deadlines).result(WAIT)
    assert err.value.failures == {"127.0.0.2:7946": "127.0.0.2:7946: cluster stopped"}


def test_the_deadline_fails_what_is_under_way_and_releases_its_waiters(deadlines: Deadlines) -> None:
    from gossip.errors import JoinError

    joins = FakeJoins()
    out = nowait(["127.0.0.3:7946"], joins, deadlines, timeout=0.05)
    with pytest.raises(JoinError) as err:
        out.result(WAIT)                           # the deadlines thread ends it
    assert err.value.failures == {"127.0.0.3:7946": "timed out"}
    assert joins.futures["127.0.0.3:7946"][0].cancelled(), "the waiter under way is released"


def test_an_address_past_the_deadline_is_not_tried(deadlines: Deadlines) -> None:
    from gossip.errors import JoinError

    joins = FakeJoins()
    names = {"seed": ["127.0.0.2:7946", "127.0.0.3:7946"]}
    out = nowait(["seed"], joins, deadlines, timeout=0.0, names=names)
    with pytest.raises(JoinError) as err:
        out.result(WAIT)
    assert err.value.failures == {"seed": "127.0.0.2:7946: timed out"} or \
        err.value.failures == {"seed": "timed out"}
    assert "127.0.0.3:7946" not in joins.futures


def test_cancelling_the_join_releases_every_waiter_held(deadlines: Deadlines) -> None:
    joins = FakeJoins()
    out = nowait(["127.0.0.2:7946", "127.0.0.3:7946"], joins, deadlines)
    assert out.cancel()
    assert all(f.cancelled() for fs in joins.futures.values() for f in fs)
    joins.futures.clear()


def test_names_to_look_up_are_resolved_off_the_caller_s_thread(deadlines: Deadlines) -> None:
    joins = FakeJoins()
    callers: list[str] = []
    names = {"seed.example": ["127.0.0.2:7946"]}

    def lookup(peer: str) -> bool:
        callers.append(threading.current_thread().name)
        return peer == "seed.example"

    out = nowait(["seed.example"], joins, deadlines, names=names, lookup=lookup)
    wait_until(lambda: "127.0.0.2:7946" in joins.futures, WAIT, "the name to be resolved and tried")
    joins.answer("127.0.0.2:7946", True)
    assert out.result(WAIT).joined == ("seed.example",)
