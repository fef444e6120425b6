"""The examples and ``python -m gossip demo`` run as documented (separate processes, loopback)."""

from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from . import REPO_ROOT, scaled

pytestmark = pytest.mark.integration

EXAMPLES = os.path.join(REPO_ROOT, "examples")
RUN_FOR = str(scaled(40.0))  # a backstop: the test ends these with Ctrl-C / SIGTERM
ID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""),
                PYTHONUNBUFFERED="1")


def _as_a_background_job() -> None:
    """Start the child as a shell without job control starts a background job: SIGINT ignored.

    The examples must still stop on Ctrl-C (they reset SIGINT's disposition themselves).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_example(name: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=scaled(timeout), env=env(), cwd=REPO_ROOT)


@pytest.mark.parametrize("name", ["basic.py", "events.py", "usermessages.py", "stream.py"])
def test_example_runs_unattended_and_exits_cleanly(name: str) -> None:
    res = run_example(name, "--port", "0", "--no-prompt", "--run-for", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"node {ID_RE} listening on 127\.0\.0\.1:\d+", res.stdout), res.stdout
    assert "leaving the cluster" in res.stdout and "stopped" in res.stdout
    if name == "events.py":
        assert re.search(rf"Node {ID_RE} state changed from unknown to alive", res.stdout)


class Proc:
    """A running example whose output lines are collected by a thread."""

    def __init__(self, name: str, *args: str, stdin: bool = False,
                 extra_env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, name), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=dict(env(), **(extra_env or {})),
            cwd=REPO_ROOT, preexec_fn=_as_a_background_job)
        self.out: list[str] = []
        self.q: queue.Queue[str] = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True, name="test-example-reader")
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.out.append(line)

    def text(self) -> str:
        return "".join(self.out)

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            m = re.search(pattern, self.text())
            if m:
                return m
            time.sleep(0.05)
        pytest.fail(f"example output never matched {pattern!r}:\n{self.text()}")

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def finish(self, timeout: float = 30.0) -> int:
        try:
            return self.p.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"example did not exit in time:\n{self.text()}")
        finally:
            self.t.join(5)
            for f in (self.p.stdin, self.p.stdout):
                if f is not None:
                    f.close()


def test_examples_form_a_cluster_with_console_commands() -> None:
    procs: list[Proc] = []
    try:
        a = Proc("events.py", "--port", "0", "--no-prompt", "--run-for", RUN_FOR)
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a_id = re.search(rf"node ({ID_RE}) listening", a.text()).group(1)  # type: ignore[union-attr]
        b = Proc("usermessages.py", "--port", "0", "--peers", addr, "--no-prompt", "--run-for", RUN_FOR)
        procs.append(b)
        b_id = b.expect(rf"node ({ID_RE}) listening").group(1)
        b.expect("joined the cluster through 1 peer")
        c = Proc("usermessages.py", "--port", "0", "--peers", f"{addr}", "--run-for", "25",
                 stdin=True)
        procs.append(c)
        c_id = c.expect(rf"node ({ID_RE}) listening").group(1)
        c.expect("joined the cluster through 1 peer")
        # The events node saw both join, with metadata sent inside its own join.
        a.expect(rf"Node {b_id} state changed from unknown to alive")
        a.expect(rf"Node {c_id} state changed from unknown to alive")
        deadline = time.monotonic() + scaled(15.0)
        while b_id not in c.text() or a_id not in c.text():
            if time.monotonic() > deadline:
                pytest.fail(f"'peers' never listed every node:\n{c.text()}")
            c.send("peers")
            time.sleep(0.3)
        assert re.search(rf"{a_id}\s+127\.0\.0\.1:\d+\s+alive\s+dc=development, intValue=42",
                         c.text()), c.text()
        c.send("whoami")
        c.expect(rf"id: {c_id}")
        c.send('gossip "hello   world" again')
        b.expect(rf"Received message from {c_id} \(127\.0\.0\.1:\d+\): hello   world again")
        c.send("set-meta color blue")
        a.expect(rf"Node {c_id} metadata changed: {{'color': 'blue'}}")
        c.send("help")
        c.expect("quit")
        c.send("quit")
        assert c.finish() == 0, c.text()
        a.expect(rf"Node {c_id} state changed from alive to left")
        a.p.send_signal(signal.SIGINT)  # Ctrl-C: leaves and stops
        b.p.send_signal(signal.SIGTERM)
        assert a.finish() == 0, a.text()
        assert b.finish() == 0, b.text()
        assert "interrupted" in a.text() and "stopped" in a.text()
        assert "stopped" in b.text()
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()


def test_examples_in_websocket_mode_join_each_other() -> None:
    # --web-port: no UDP/TCP listener, the node listens and advertises ws://127.0.0.1:<port>.
    procs: list[Proc] = []
    try:
        a = Proc("events.py", "--web-port", "0", "--no-prompt", "--run-for", RUN_FOR)
        procs.append(a)
        url = a.expect(r"listening on (ws://127\.0\.0\.1:\d+/)").group(1)
        b = Proc("usermessages.py", "--web-port", "0", "--peers", url, "--run-for", "25", stdin=True)
        procs.append(b)
        b_id = b.expect(rf"node ({ID_RE}) listening on ws://127\.0\.0\.1:\d+/").group(1)
        b.expect("joined the cluster through 1 peer")
        a.expect(rf"Node {b_id} state changed from unknown to alive")
        a_id = re.search(rf"node ({ID_RE}) listening", a.text()).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + scaled(15.0)
        while not re.search(rf"{a_id}\s+ws://127\.0\.0\.1:\d+/\s+alive", b.text()):
            if time.monotonic() > deadline:
                pytest.fail(f"'peers' never listed the first node by its ws:// URL:\n{b.text()}")
            b.send("peers")
            time.sleep(0.3)
        b.send("quit")
        assert b.finish() == 0, b.text()
        a.expect(rf"Node {b_id} state changed from alive to left")
        a.p.send_signal(signal.SIGTERM)
        assert a.finish() == 0, a.text()
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()


def test_stream_example_ping_pong_and_file_copy(tmp_path: pathlib.Path) -> None:
    procs: list[Proc] = []
    try:
        received = os.path.join(os.fspath(tmp_path), "received")
        a = Proc("stream.py", "--port", "0", "--no-prompt", "--run-for", RUN_FOR,
                 extra_env={"GOSSIP_STREAM_DIR": received})
        procs.append(a)
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a_id = a.expect(rf"node ({ID_RE}) listening").group(1)
        b = Proc("stream.py", "--port", "0", "--peers", addr, "--run-for", "25", stdin=True)
        procs.append(b)
        b.expect("joined the cluster through 1 peer")
        b.send(f"stream {a_id} hello over a stream")
        b.expect(r"Stream reply: Pong: hello over a stream")
        a.expect(r"Stream opened by .*: Example Stream Start Message")
        a.expect(r"Received stream data: hello over a stream")
        path = os.path.join(os.fspath(tmp_path), "payload.bin")
        data = os.urandom(3 * 1024 * 1024 + 11)
        with open(path, "wb") as f:
            f.write(data)
        b.send(f"send {a_id[-8:]} {path}")        # the short id, as the examples print it
        b.expect(rf"Sent {len(data)} bytes of .*payload\.bin to \S+: verified")
        a.expect(rf"Received file 'payload\.bin': {len(data)} bytes into .*, sha256 ok")
        with open(os.path.join(received, "payload.bin"), "rb") as f:
            assert f.read() == data
        b.send("quit")
        assert b.finish() == 0, b.text()
        a.p.send_signal(signal.SIGTERM)
        assert a.finish() == 0, a.text()
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
                p.p.wait()


def test_gossip_demo_ends_by_itself_and_reports_the_dead_node() -> None:
    res = subprocess.run([sys.executable, "-m", "gossip", "demo"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=scaled(90.0), env=env(),
                         cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"node-\d+ is dead for every survivor", res.stdout), res.stdout
    assert "demo finished" in res.stdout
    received = re.findall(r"^\[ *[\d.]+s\] (node-\d+) received 'hello from node-1' from node-1$", res.stdout, re.M)
    assert sorted(received) == ["node-2", "node-3", "node-4", "node-5"], res.stdout
    assert "node node-" not in res.stdout


def test_event_lines_never_run_into_the_console_prompt() -> None:
    a = Proc("events.py", "--port", "0", "--run-for", RUN_FOR, stdin=True)   # with its prompt
    b = None
    try:
        addr = a.expect(r"listening on (127\.0\.0\.1:\d+)").group(1)
        a.expect("type help for the commands")
        b = Proc("events.py", "--port", "0", "--peers", addr, "--no-prompt", "--run-for", RUN_FOR)
        b_id = b.expect(rf"node ({ID_RE}) listening").group(1)
        a.expect(rf"Node {b_id} state changed from unknown to alive")     # printed under the prompt
        assert a.p.stdin is not None
        a.p.stdin.close()                                                  # end of input: leave
        assert a.finish() == 0, a.text()
        lines = a.text().splitlines()
        assert any(line.startswith(f"Node {b_id} state changed") for line in lines), lines
        assert "leaving the cluster..." in lines and "stopped" in lines, lines
        assert not [line for line in lines if line.startswith("> ") and len(line) > 2], lines
    finally:
        for p in (a, b):
            if p is not None and p.p.poll() is None:
                p.p.kill()
                p.p.wait()


_OUTPUT_RACE = r'''
import sys, threading
sys.path.insert(0, sys.argv[1])
import _common

printing, handler_wrote = threading.Event(), threading.Event()


class Stdout:
    """Lets an event handler's line come while the main thread is printing its status line,
    as a busy machine may (each write is its own system call when unbuffered)."""

    def __init__(self, real):
        self.real = real

    def write(self, text):
        self.real.write(text)
        self.real.flush()
        if threading.current_thread() is not threading.main_thread():
            handler_wrote.set()
        elif "listening on" in text:
            printing.set()
            if not text.endswith("\n"):
                handler_wrote.wait(10)
        return len(text)

    def flush(self):
        self.real.flush()


def setup(cluster):
    def handler():
        printing.wait(10)
        _common.say("a line from an event handler")
    threading.Thread(target=handler, daemon=True).start()


sys.stdout = Stdout(sys.stdout)
sys.exit(_common.run(_common.Example(name="race", description="race", setup=setup),
                     ["--port", "0", "--no-prompt", "--run-for", "0"]))
'''


def test_a_line_from_an_event_handler_never_lands_inside_a_status_line() -> None:
    # Tests and scripts read the address from the "listening on" line: an event handler's
    # line printed in the middle of it would make the port read as another number.
    res = subprocess.run([sys.executable, "-c", _OUTPUT_RACE, EXAMPLES], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=scaled(30.0), env=env(), cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(re.fullmatch(rf"race: node {ID_RE} listening on 127\.0\.0\.1:\d+", line) for line in lines), lines
    assert "a line from an event handler" in lines, lines
