"""The kv, leader and tagged examples run as documented: several processes each, on loopback."""

from __future__ import annotations

import re
import signal
import time

import pytest

from . import scaled
from .test_examples import ID_RE, Proc, run_example

pytestmark = pytest.mark.integration


def poll(proc: Proc, command: str, pattern: str, timeout: float = 20.0) -> None:
    """Send ``command`` every 0.3 s until the output matches ``pattern``."""
    end = time.monotonic() + scaled(timeout)
    while not re.search(pattern, proc.text()):
        if time.monotonic() > end:
            pytest.fail(f"{command!r} never printed {pattern!r}:\n{proc.text()}")
        proc.send(command)
        time.sleep(0.3)


def node_id(proc: Proc) -> str:
    return proc.expect(rf"node ({ID_RE}) listening").group(1)


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait()


@pytest.mark.parametrize("name", ["kv.py", "leader.py", "tagged.py"])
def test_example_runs_unattended_and_exits_cleanly(name: str) -> None:
    res = run_example(name, "--port", "0", "--no-prompt", "--run-for", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "leaving the cluster" in res.stdout and "stopped" in res.stdout


def test_kv_replicates_syncs_joiners_and_deletes() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("kv.py", "--port", "0", "--run-for", "60", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a_id = node_id(a)
        a.send("set colour blue")
        a.send('set size "42"')
        a.expect("set size = 42")
        b = Proc("kv.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs.append(b)
        b.expect(rf"full sync: 2 entries from {a_id}")   # the joiner fetched the whole store
        b.send("get colour")
        b.expect("colour = blue")
        c = Proc("kv.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs.append(c)
        c.expect(r"full sync: 2 entries from")
        c.send("set fruit apple")                        # broadcast to the others at once
        poll(a, "get fruit", "fruit = apple")
        poll(b, "get fruit", "fruit = apple")
        a.send("delete colour")
        a.expect("deleted colour")
        poll(c, "get colour", "colour not found")
        poll(b, "get colour", "colour not found")
        c.send("keys")
        c.expect(r'\{"fruit": "apple", "size": "42"\}')
        for p in (a, b, c):
            p.send("quit")
        for p in (a, b, c):
            assert p.finish() == 0, p.text()
    finally:
        stop_all(procs)


def test_leader_elects_one_and_replaces_a_killed_leader() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("leader.py", "--port", "0", "--run-for", "90", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a_id = node_id(a)
        a.expect("I became the leader")                  # alone, it leads itself
        b = Proc("leader.py", "--port", "0", "--peers", addr, "--run-for", "90", stdin=True)
        c = Proc("leader.py", "--port", "0", "--peers", addr, "--run-for", "90", stdin=True)
        procs += [b, c]
        b_id, c_id = node_id(b), node_id(c)
        for p in (b, c):
            p.expect(rf"Leader elected: {a_id}")
        poll(c, "leader", rf"leader: {a_id} \(127\.0\.0\.1:\d+\); me: follower")
        a.p.send_signal(signal.SIGKILL)                  # a crash: no hand-over
        a.p.wait()
        # One of the survivors becomes the leader, and the other follows it.
        end = time.monotonic() + scaled(40.0)
        while True:
            winners = [(p, pid) for p, pid in ((b, b_id), (c, c_id))
                       if "I became the leader" in p.text()]
            if winners:
                break
            if time.monotonic() > end:
                pytest.fail(f"no survivor became the leader:\n{b.text()}\n{c.text()}")
            time.sleep(0.1)
        assert len(winners) == 1, (b.text(), c.text())
        winner, winner_id = winners[0]
        other = c if winner is b else b
        other.expect(rf"Leader elected: {winner_id}", timeout=20.0)
        poll(other, "leader", rf"leader: {winner_id} .*me: follower")
        winner.p.send_signal(signal.SIGTERM)             # stops the election first: hands over
        assert winner.finish() == 0, winner.text()
        assert "I stepped down" in winner.text()
        other.send("quit")
        assert other.finish() == 0, other.text()
    finally:
        stop_all(procs)


def test_tagged_reaches_the_holders_only_and_a_node_that_gains_the_tag() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("tagged.py", "--port", "0", "--run-for", "60", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        b = Proc("tagged.py", "--port", "0", "--peers", addr, "--tags", "gpu", "--run-for", "60", stdin=True)
        c = Proc("tagged.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs += [b, c]
        b.expect("this node's tags: gpu")
        c.expect("joined the cluster")
        poll(a, "send gpu first", r"sent to the 1 other node\(s\) tagged gpu")
        b.expect(r"\[gpu\] from \w+: first")
        c.send("tag gpu")
        c.expect("tags: gpu")
        poll(a, "send gpu second", r"sent to the 2 other node\(s\) tagged gpu")
        c.expect(r"\[gpu\] from \w+: second")
        for p in (a, b, c):
            p.send("quit")
        for p in (a, b, c):
            assert p.finish() == 0, p.text()
        assert "[gpu]" not in a.text() and "first" not in c.text()
    finally:
        stop_all(procs)
