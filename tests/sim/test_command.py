"""``python -m gossip.sim`` as a user runs it: the replay line it prints gives the same run, and
a terminal shows progress while it works (and nothing else does)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sim(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gossip.sim", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.mark.parametrize("flags", [
    ["--scenario", "starve", "--nodes", "16", "--duration", "40", "--lifeguard", "off", "--seed", "5",
     "--starved", "2", "--starve-delay", "1.5"],
    ["--scenario", "crash", "--nodes", "20", "--duration", "25", "--loss", "0.02", "--latency", "0.002",
     "--jitter", "0.001", "--config", "local", "--warmup", "3", "--burst", "2", "--seed", "9"],
    ["--scenario", "partition", "--nodes", "12", "--duration", "60", "--split", "0.25",
     "--partition-duration", "20", "--reorder", "0.05"],
])
def test_the_replay_line_gives_the_same_run(flags: list[str]) -> None:
    first = sim(flags)
    assert first.returncode == 0, first.stderr
    line = re.search(r"^replay: (.+)$", first.stdout, re.M)
    assert line, first.stdout
    words = shlex.split(line.group(1))
    assert words[:3] == ["python", "-m", "gossip.sim"]
    for flag in flags[::2]:                       # every flag given, with a non-default value
        if flag != "--scenario":
            assert flag in words, (flag, words)
    again = sim(words[3:] + ["--json"])
    assert again.returncode == 0, again.stderr
    hashes = (re.search(r"trace_hash: (\w+)", first.stdout), json.loads(again.stdout)["trace_hash"])
    assert hashes[0] is not None and hashes[0].group(1) == hashes[1]


def test_a_terminal_sees_progress_and_a_pipe_does_not() -> None:
    args = ["--scenario", "crash", "--nodes", "150", "--duration", "30", "--seed", "2"]
    piped = sim(args)
    assert piped.returncode == 0 and piped.stderr == ""

    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "gossip.sim", *args], stdout=subprocess.PIPE,
                            stderr=follower, text=True, cwd=ROOT, env=env)
    os.close(follower)
    seen = b""
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:          # the child closed its end
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out = proc.communicate(timeout=60)[0]
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert re.search(r"\r\s+\d+\.\ds of ~30s virtual \(\s*\d+%\)\s+[\d,]+ events", text), text[-500:]
    assert text.endswith("\r\x1b[K")                # the line is cleared at the end
    assert "trace_hash" in out and "\r" not in out
