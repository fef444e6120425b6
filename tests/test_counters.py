"""gossip.counters: per-thread tables summed on demand, and the tables of ended threads folded."""

from __future__ import annotations

import threading

from gossip import counters as counters_module
from gossip.counters import Counters


def test_increments_from_many_threads_are_all_counted() -> None:
    c = Counters()
    workers = [threading.Thread(target=lambda: [c.inc("x") for _ in range(1000)]) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    c.inc("x", 5)
    assert c.get("x") == 4005 and c.snapshot() == {"x": 4005} and c.get("missing") == 0


def test_the_tables_of_ended_threads_are_folded_and_nothing_is_lost() -> None:
    c = Counters()
    n = counters_module._FOLD_AT * 2 + 3
    hold = threading.Event()
    alive = threading.Thread(target=lambda: (c.inc("y", 7), hold.wait()))
    alive.start()
    try:
        for i in range(n):   # one short-lived thread after another, each with its own table
            t = threading.Thread(target=c.inc, args=("y", i))
            t.start()
            t.join()
        assert c.get("y") == 7 + sum(range(n))
        # Ended threads' tables were folded into the retired totals: the list stays bounded,
        # and the living thread's table is kept, not folded.
        assert len(c._tables) <= counters_module._FOLD_AT
        assert c._retired["y"] > 0 and c.table() is not None
    finally:
        hold.set()
        alive.join()
    assert c.get("y") == 7 + sum(range(n))


def test_a_thread_s_table_is_its_own() -> None:
    c = Counters()
    mine = c.table()
    mine["z"] = mine.get("z", 0) + 2
    other: list[dict[str, int]] = []
    t = threading.Thread(target=lambda: other.append(c.table()))
    t.start()
    t.join()
    assert other[0] is not mine and c.table() is mine and c.get("z") == 2
