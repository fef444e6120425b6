"""Run Go memberlist nodes (tests/memberlist/go/mlnode) for the interop tests and the bench.

``mlnode_binary()`` builds it once (GOPATH mode, Debian's packaged memberlist, no module
download) and returns its path, or None when Go or the package is missing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

HERE = pathlib.Path(__file__).parent
SRC = pathlib.Path("/usr/share/gocode/src/github.com/hashicorp/memberlist")
_BUILT: dict[str, str | None] = {}
_LOCK = threading.Lock()


def missing() -> str:
    """Why the Go tests cannot run ("" if they can)."""
    if shutil.which("go") is None:
        return "go is not installed (.ci/install-go-tools installs golang-go)"
    if not SRC.is_dir():
        return "golang-github-hashicorp-memberlist-dev is not installed"
    return ""


def mlnode_binary() -> str | None:
    """Build mlnode once per process; return its path (None if it cannot be built)."""
    with _LOCK:
        if "bin" not in _BUILT:
            out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"gossip-mlnode-{os.getuid()}", "mlnode")
            if missing():
                _BUILT["bin"] = None
            else:
                r = subprocess.run(["sh", str(HERE / "go" / "build.sh"), out], capture_output=True,
                                   text=True, timeout=300)
                _BUILT["bin"] = out if r.returncode == 0 else None
        return _BUILT["bin"]


def free_port() -> int:
    """A loopback port free for UDP and TCP at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


class GoNode:
    """One mlnode process; its JSON lines are read on a thread."""

    def __init__(self, binary: str, name: str, join: str = "", key: str = "", meta: str = "",
                 probe_ms: int = 300, timeout_ms: int = 150, max_runtime: int = 120) -> None:
        self.name = name
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        args = [binary, "--name", name, "--bind", self.addr, "--probe-interval-ms", str(probe_ms),
                "--probe-timeout-ms", str(timeout_ms), "--gossip-interval-ms", "100",
                "--max-runtime-s", str(max_runtime), "--join-timeout-ms", "3000"]
        if join:
            args += ["--join", join]
        if key:
            args += ["--key", key]
        if meta:
            args += ["--meta", meta]
        log = os.environ.get("GOSSIP_MLNODE_LOG")  # a file to append memberlist's log to
        if log:
            args.append("--log-stderr")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(log, "a") if log else subprocess.DEVNULL, text=True)
        self.lines: list[dict[str, Any]] = []
        self.alive: list[str] = []
        self.msgs: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.lines.append(ev)
            if ev.get("ev") == "ready":
                self.ready.set()
            elif ev.get("ev") == "view":
                self.alive = ev["alive"]
            elif ev.get("ev") == "msg":
                self.msgs.append(ev["payload"])

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self.ready.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command(cmd="leave")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


def wait_for(pred: Any, timeout: float) -> bool:
    """Poll ``pred`` until true or ``timeout`` seconds passed; return its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())
