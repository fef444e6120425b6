"""The joins under way (gossip.engine.joins), driven as the engine drives them: a command that
sends the join, then the core's answer, a failed send, a refused packet or a stop."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from gossip.engine.joins import Joins
from gossip.errors import ClusterClosed
from gossip.protocol import JoinResult
from gossip.protocol.actions import JOIN_NO_ANSWER

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
