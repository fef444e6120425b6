"""The coordination examples run as documented: locks, replicated_map and placement, each with
several processes on loopback."""

from __future__ import annotations

import re
import signal

import pytest

from .test_examples import ID_RE, Proc, run_example
from .test_examples_apps import node_id, poll, stop_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["locks.py", "replicated_map.py", "placement.py"])
def test_example_runs_unattended_and_exits_cleanly(name: str) -> None:
    res = run_example(name, "--port", "0", "--no-prompt", "--run-for", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"node {ID_RE} listening on 127\.0\.0\.1:\d+", res.stdout), res.stdout
    assert "leaving the cluster" in res.stdout and "stopped" in res.stdout


def test_replicated_map_shares_a_table_with_every_node_and_late_joiners() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("replicated_map.py", "--port", "0", "--run-for", "60", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a_id = node_id(a)
        b = Proc("replicated_map.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs.append(b)
        b.expect("joined the cluster through 1 peer")
        a.send("set max_upload_mb 25")
        a.send("set limits '{\"rps\": 100}'")
        b.expect(rf'config: max_upload_mb = 25 \(by {a_id[-8:]}\)')
        b.expect(r'config: limits = \{"rps": 100\}')
        b.send("del max_upload_mb")
        a.expect(r"config: max_upload_mb deleted \(by ")
        c = Proc("replicated_map.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs.append(c)
        c.expect(r'config: limits = \{"rps": 100\}')      # the late joiner fetched the table
        poll(c, "show", r'\{"limits": \{"rps": 100\}\}')
        for p in (a, b, c):
            p.send("quit")
        for p in (a, b, c):
            assert p.finish() == 0, p.text()
        assert "the table held 1 entries" in c.text()
    finally:
        stop_all(procs)


def test_placement_moves_only_the_jobs_of_a_worker_that_leaves() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("placement.py", "--port", "0", "--run-for", "60", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        b = Proc("placement.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        c = Proc("placement.py", "--port", "0", "--peers", addr, "--run-for", "60", stdin=True)
        procs += [b, c]
        c_id = node_id(c)
        for p in (a, b, c):
            p.expect(r"this node owns")
        poll(a, "plan", rf"job-\d+\s+{c_id[-8:]}")              # c owns some jobs, as a sees it
        mark = len(a.text())
        c.p.send_signal(signal.SIGTERM)                          # c leaves
        assert c.finish() == 0, c.text()
        a.expect(r"of 12 jobs moved; this node owns", timeout=20.0)
        after = a.text()[mark:]
        moves = re.findall(r"job-\d+ moved: (\w+) -> (\w+)", after)
        assert moves and all(before == c_id[-8:] for before, _ in moves), after
        for p in (a, b):
            p.send("quit")
        for p in (a, b):
            assert p.finish() == 0, p.text()
    finally:
        stop_all(procs)


def test_locks_one_job_at_a_time_and_the_store_refuses_a_paused_worker() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("locks.py", "--port", "0", "--run-for", "90", stdin=True)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        b = Proc("locks.py", "--port", "0", "--peers", addr, "--run-for", "90", stdin=True)
        procs.append(b)
        for p in (a, b):
            p.expect(r"worker \w+: write with token \d+\.\d+: accepted", timeout=30.0)
        a.send("pause")
        a.expect(r"worker \w+: write with token \d+\.\d+: refused: the store has seen token", timeout=40.0)
        store_log = a.text() + b.text()
        assert re.search(r"store: write .* REFUSED", store_log)
        for p in (a, b):
            p.send("quit")
        for p in (a, b):
            assert p.finish() == 0, p.text()
    finally:
        stop_all(procs)
