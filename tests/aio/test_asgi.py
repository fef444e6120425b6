"""The ASGI lifespan under uvicorn, in a subprocess on loopback: the app's startup starts the
node, another node joins it, its shutdown leaves the node stopped with no thread left; and the
FastAPI example's endpoints (members, a request to a member)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

import gossip
from gossip import Config
from gossip.testing import scaled, wait_until

pytest.importorskip("uvicorn")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = "lifespan-test-token"


class Child:
    """A subprocess whose output lines a thread collects."""

    def __init__(self, *argv: str) -> None:
        path = os.environ.get("PYTHONPATH", "")
        env = dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""),
                   PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True, name="test-child-out").start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_json(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next output line that is a JSON object (others are kept for the failure text)."""
        end = time.monotonic() + scaled(timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no JSON line from the child:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line.startswith("{"):
                return dict(json.loads(line))

    def expect(self, text: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + scaled(timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"never printed {text!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(scaled(20.0))

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=scaled(5.0)) as resp:
        return json.loads(resp.read())


def poll_json(url: str, predicate: Any, what: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + scaled(timeout)
    last: Any = None
    while time.monotonic() < end:
        try:
            last = get_json(url)
            if predicate(last):
                return last
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; last answer {last!r}")


@pytest.mark.parametrize("mode", ["starlette-ws", "raw"])
def test_the_lifespan_runs_the_node_with_the_app_under_uvicorn(mode: str) -> None:
    if mode == "starlette-ws":
        pytest.importorskip("starlette")
    child = Child(os.path.join(HERE, "asgi_app.py"), mode, TOKEN)
    other = gossip.Cluster(Config.local(bind_addr="127.0.0.1:0", bearer_token=TOKEN))
    try:
        url = f"http://127.0.0.1:{child.next_json()['http']}/members"
        # Startup started the node: it answers, alone.
        first = poll_json(url, lambda v: v["running"], "the node started by the app's startup")
        assert len(first["members"]) == 1
        if mode == "starlette-ws":  # it listens through uvicorn's own port
            assert first["address"].startswith("ws://127.0.0.1:")
        other.start()
        assert other.join([first["address"]], timeout=scaled(10.0)) == 1
        me = str(other.local_node().id)
        poll_json(url, lambda v: me in v["members"] and len(v["members"]) == 2,
                  "the other node seen by the app's node")
        # Shutdown stops the node: it leaves (the other node sees it go), no thread is left.
        # (uvicorn raises the signal again once it shut the app down)
        assert child.stop() in (0, -signal.SIGTERM), "\n".join(child.seen)
        final = child.next_json()
        assert final == {"running": False, "threads": []}
        wait_until(lambda: other.num_alive_nodes() == 1, 10.0, "the app's node gone")
    finally:
        other.stop()
        child.kill()


def test_the_fastapi_example_lists_members_and_asks_one() -> None:
    pytest.importorskip("fastapi")
    example = os.path.join(REPO_ROOT, "examples", "fastapi_app.py")
    a = Child(example, "--port", "0", "--http-port", "0", "--run-for", str(scaled(60.0)))
    b: Child | None = None
    try:
        a_http = a.expect("http on ").split()[-1]
        a_line = a.expect("listening on")
        a_id, a_addr = a_line.split()[1], a_line.split()[-1]
        b = Child(example, "--port", "0", "--http-port", "0", "--peers", a_addr,
                  "--run-for", str(scaled(60.0)))
        b_http = b.expect("http on ").split()[-1]
        b_id = b.expect("listening on").split()[1]
        members = poll_json(f"{a_http}/members", lambda v: len(v) == 2, "two members")
        assert {m["id"] for m in members} == {a_id, b_id}
        assert all(m["state"] == "alive" for m in members)
        reply = get_json(f"{a_http}/ask/{b_id}?q=hi%20there")
        assert reply == {"answered_by": b_id, "question": "hi there", "answer": "HI THERE"}
        assert get_json(f"{b_http}/ask/{a_id}")["answered_by"] == a_id
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get_json(f"{a_http}/ask/00000000-0000-0000-0000-000000000000")
        for c in (b, a):
            assert c.stop(signal.SIGINT) == 0
            c.expect("stopped")
    finally:
        for c in (a, b):
            if c is not None:
                c.kill()
