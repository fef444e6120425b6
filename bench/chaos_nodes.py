"""The chaos harness's nodes: driver processes in the lab, and what they report.

:class:`Nodes` starts a library's driver once per node inside the node's namespace (``ip netns
exec`` execs the driver, so the pid is the driver's), reads each one's JSON lines on a thread
and feeds them to an :class:`Observer`, which keeps every node's view as drop and add
transitions stamped with the driver's own clock. :class:`Excuse` marks drops a scenario
expects (a killed node, the other side of a partition). See ``bench/chaos.py``.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import chaos_net as net
from chaos_net import Lab

HERE = Path(__file__).resolve().parent
GOSSIP_DRIVER = [sys.executable, str(HERE / "chaos_driver.py")]
"""This library's driver command (``--driver gossip``)."""
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class HarnessError(RuntimeError):
    """The harness could not run a scenario (a node would not start, the cluster never formed)."""


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- drivers


@dataclass(frozen=True)
class Driver:
    """A library's driver command and the name its results are reported under."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = field(default=None, compare=False)
    """The driver processes' environment (None: the harness's own)."""

    @classmethod
    def parse(cls, text: str) -> Driver:
        """``gossip`` is this library's driver; anything else is a command line."""
        if text == "gossip":
            return cls("gossip", tuple(GOSSIP_DRIVER))
        argv = tuple(shlex.split(text))
        if not argv:
            raise SystemExit("--driver: empty command")
        exe = argv[-1] if Path(argv[0]).name.startswith("python") and len(argv) > 1 else argv[0]
        name = Path(exe).stem
        if "memberlist" in name:
            name = "memberlist"
        return cls(name, argv)


@dataclass(frozen=True)
class Timings:
    """The contract's three timings, in milliseconds."""

    probe_ms: int = 1000
    probe_timeout_ms: int = 500
    gossip_ms: int = 200

    def args(self) -> list[str]:
        """The driver flags."""
        return ["--probe-interval-ms", str(self.probe_ms), "--probe-timeout-ms",
                str(self.probe_timeout_ms), "--gossip-interval-ms", str(self.gossip_ms)]

    def suspicion_max_s(self, n: int) -> float:
        """The longest suspicion of LAN defaults (memberlist's and ours): 6 x 4 x log10(n) x probe."""
        return 6 * 4 * max(1.0, math.log10(max(n, 1))) * self.probe_ms / 1000.0

    def detect_timeout_s(self, n: int) -> float:
        """How long the harness waits for a detection before calling it missed."""
        return self.suspicion_max_s(n) + 10 * self.probe_ms / 1000.0 + 20.0


# ---------------------------------------------------------------------------------- processes


def _pdeathsig() -> None:   # runs in the child before exec: die with the harness
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


class LoadSampler:
    """Reads /proc/loadavg every 2 s on a thread, so a run can report its load."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-loadavg", daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> tuple[float, float, float]:
        """The 1, 5 and 15 minute load averages now."""
        with open("/proc/loadavg", encoding="ascii") as f:
            a, b, c = f.read().split()[:3]
        return float(a), float(b), float(c)

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            self.samples.append((time.time(), *self.now()))

    def since(self, t0: float) -> list[float]:
        """1-minute figures sampled since ``t0``."""
        return [s[1] for s in self.samples if s[0] >= t0]

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()


@dataclass
class NodeProc:
    """One driver process."""

    index: int
    name: str
    popen: subprocess.Popen[str]
    started: float
    stderr_path: str

    @property
    def pid(self) -> int:
        """The driver's pid (``ip netns exec`` execs the driver: same process)."""
        return self.popen.pid

    def stderr_tail(self, lines: int = 8) -> str:
        """The last lines the driver wrote on stderr."""
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""


# ---------------------------------------------------------------------------------- observations


class Observer:
    """What every node reports: its view over time, as drop and add transitions.

    Each observer's *presence set* follows its ``view`` lines and its ``state`` lines (dead or
    left remove a member, alive adds it back). A view older than a state line that removed a
    member does not add it back. Every change is a transition stamped with the driver's time.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.lock = threading.Lock()
        self.names = frozenset(names)
        self.current: dict[str, NodeProc] = {}
        self.pres: dict[str, set[str]] = {}
        self.view_ts: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.drops: list[tuple[float, str, str, str]] = []      # (ts, observer, member, source)
        self.last_add: dict[tuple[str, str], float] = {}
        self.last_state_drop: dict[tuple[str, str], float] = {}
        self.suspects: list[tuple[float, str, str]] = []          # (ts, observer, member)
        self.bad_lines = 0

    def attach(self, proc: NodeProc) -> None:
        """A (re)started process now reports for its name; its presence set starts empty."""
        with self.lock:
            self.current[proc.name] = proc
            self.pres[proc.name] = set()
            self.view_ts.pop(proc.name, None)
            self.ready.pop(proc.name, None)

    def read(self, proc: NodeProc, stream: IO[str]) -> None:
        """Read ``proc``'s stdout until it closes (runs on one thread per process)."""
        for raw in stream:
            try:
                msg = json.loads(raw)
                ts = float(msg["ts"])
                ev = msg["ev"]
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
                continue
            with self.lock:
                if self.current.get(proc.name) is not proc:
                    continue
                if ev == "view":
                    self._view(proc.name, ts, msg.get("alive") or [])
                elif ev == "state":
                    self._state(proc.name, ts, str(msg.get("node")), str(msg.get("state")))
                elif ev == "ready":
                    self.ready[proc.name] = ts

    def _view(self, o: str, ts: float, alive: list[str]) -> None:
        new = self.names.intersection(alive)
        cur = self.pres[o]
        for s in cur - new:
            cur.discard(s)
            if s != o:
                self.drops.append((ts, o, s, "view"))
        for s in new - cur:
            if ts <= self.last_state_drop.get((o, s), 0.0):
                continue            # computed before the state line that removed it
            cur.add(s)
            self.last_add[(o, s)] = ts
        self.view_ts[o] = ts

    def _state(self, o: str, ts: float, s: str, state: str) -> None:
        if s == o or s not in self.names:
            return
        cur = self.pres[o]
        if state in ("dead", "left"):
            self.last_state_drop[(o, s)] = ts
            if s in cur:
                cur.discard(s)
                self.drops.append((ts, o, s, "state"))
        elif state == "alive" and s not in cur:
            cur.add(s)
            self.last_add[(o, s)] = ts
        elif state == "suspect":
            self.suspects.append((ts, o, s))

    # -- queries (main thread) ------------------------------------------------------------

    def is_ready(self, name: str) -> bool:
        """Whether the current process of ``name`` said ready."""
        with self.lock:
            return name in self.ready

    def full(self, observers: Iterable[str], expected: set[str] | frozenset[str],
             fresh_after: float = 0.0) -> bool:
        """Whether every observer sees every expected member, in a view newer than ``fresh_after``."""
        with self.lock:
            for o in observers:
                if self.view_ts.get(o, 0.0) <= fresh_after or not expected <= self.pres.get(o, set()):
                    return False
            return True

    def full_since(self, observers: Iterable[str], expected: Iterable[str]) -> float:
        """When the last (observer, member) pair among these became present (call once full)."""
        exp = list(expected)
        with self.lock:
            return max((self.last_add.get((o, s), 0.0) for o in observers for s in exp if s != o),
                       default=0.0)

    def first_drops(self, subjects: Iterable[str], observers: Iterable[str],
                    since: float) -> dict[tuple[str, str], float]:
        """The first drop at or after ``since`` of each (observer, subject) pair asked about."""
        subj, obs = set(subjects), set(observers)
        out: dict[tuple[str, str], float] = {}
        with self.lock:
            for ts, o, s, _ in self.drops:
                if ts >= since and s in subj and o in obs and (o, s) not in out:
                    out[(o, s)] = ts
        return out

    def first_suspect(self, subject: str, since: float) -> float | None:
        """When some node first reported ``subject`` suspect at or after ``since`` (drivers
        that report suspicions only: memberlist's reports those its own probes raised)."""
        with self.lock:
            return min((ts for ts, _, s in self.suspects if s == subject and ts >= since), default=None)

    def drops_between(self, t0: float, t1: float) -> list[tuple[float, str, str, str]]:
        """Every drop stamped within [t0, t1]."""
        with self.lock:
            return [d for d in self.drops if t0 <= d[0] <= t1]


@dataclass
class Excuse:
    """Drops of ``subjects`` by ``observers`` (None: anyone) within [start, end] are expected."""

    subjects: frozenset[str]
    observers: frozenset[str] | None
    start: float
    end: float = math.inf

    def covers(self, ts: float, o: str, s: str) -> bool:
        """Whether this excuse covers the drop of ``s`` by ``o`` at ``ts``."""
        return (self.start <= ts <= self.end and s in self.subjects
                and (self.observers is None or o in self.observers))


# ---------------------------------------------------------------------------------- the nodes


class Nodes:
    """The driver processes of one library in the lab, and what they report."""

    def __init__(self, lab: Lab, driver: Driver, timings: Timings, n: int, logdir: str,
                 batch: int = 10) -> None:
        self.lab, self.driver, self.timings, self.n = lab, driver, timings, n
        self.logdir, self.batch = logdir, batch
        self.names = [f"n{i:03d}" for i in range(n)]
        self.obs = Observer(self.names)
        self.procs: dict[int, NodeProc] = {}
        self.restarts = 0
        self.cpu_base: dict[int, tuple[float, float]] = {}     # pid -> (monotonic, CPU s) at start
        self.cpu_segments: list[tuple[float, float]] = []      # (wall s, CPU s) of ended windows

    def name(self, i: int) -> str:
        """Node ``i``'s name."""
        return self.names[i]

    def addr(self, i: int) -> str:
        """Node ``i``'s ``ip:port``."""
        return f"{net.address(i)}:{net.PORT}"

    def spawn(self, i: int, join: int | None) -> NodeProc:
        """Start node ``i`` in its namespace (joining node ``join``); main thread only."""
        argv = [*self.lab.exec_prefix(i), *self.driver.argv, "--name", self.name(i),
                "--bind", self.addr(i), *self.timings.args()]
        if join is not None:
            argv += ["--join", self.addr(join)]
        errpath = os.path.join(self.logdir, f"{self.driver.name}-{self.name(i)}.err")
        with open(errpath, "a", encoding="utf-8") as err:
            err.write(f"--- {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n")
            err.flush()
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=err, text=True, bufsize=1, preexec_fn=_pdeathsig,
                                     env=None if self.driver.env is None else dict(self.driver.env))
        proc = NodeProc(i, self.name(i), popen, time.time(), errpath)
        self.procs[i] = proc
        self.obs.attach(proc)
        assert popen.stdout is not None
        threading.Thread(target=self.obs.read, args=(proc, popen.stdout), daemon=True,
                         name=f"chaos-read-{self.name(i)}").start()
        return proc

    def check_exits(self) -> None:
        """Raise if a node that should be running has exited."""
        for i, p in self.procs.items():
            rc = p.popen.poll()
            if rc is not None:
                raise HarnessError(f"{self.driver.name} node {p.name} exited with code {rc}: "
                                   f"{p.stderr_tail() or '(no stderr)'}")

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str, check: bool = True) -> bool:
        end = time.monotonic() + timeout
        while True:
            if pred():
                return True
            if check:
                self.check_exits()
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def start_all(self, timeout: float) -> float:
        """Start every node (the seed first, then waves joining it); return seconds to converge.

        Raises:
            HarnessError: a node did not start, or the cluster did not form within ``timeout``.
        """
        t_start = time.time()
        self.spawn(0, None)
        if not self._wait(lambda: self.obs.is_ready(self.name(0)), 60, "seed ready"):
            raise HarnessError(f"{self.driver.name}: the seed was not ready within 60 s")
        for k in range(1, self.n, self.batch):
            wave = list(range(k, min(self.n, k + self.batch)))
            for i in wave:
                self.spawn(i, 0)
            if not self._wait(lambda: all(self.obs.is_ready(self.name(i)) for i in wave), 90, "wave"):
                late = [self.name(i) for i in wave if not self.obs.is_ready(self.name(i))]
                raise HarnessError(f"{self.driver.name}: {late} not ready within 90 s")
        t_last = time.time()
        if not self.wait_whole(timeout):
            raise HarnessError(f"{self.driver.name}: {self.n} nodes did not all see each other "
                               f"within {timeout:.0f} s of the last start")
        log(f"{self.driver.name}: {self.n} nodes started in {t_last - t_start:.1f} s, "
            f"all see all {time.time() - t_last:.1f} s after the last start")
        return max(0.0, self.obs.full_since(self.names, self.names) - t_last)

    def wait_whole(self, timeout: float, observers: Iterable[str] | None = None,
                   fresh_after: float = 0.0) -> bool:
        """Wait until every running node sees every node; False on timeout."""
        obs = list(observers) if observers is not None else self.names
        return self._wait(lambda: self.obs.full(obs, set(self.names), fresh_after), timeout, "whole")

    def kill(self, i: int) -> float:
        """SIGKILL node ``i``; return the time it was sent."""
        p = self.procs.pop(i)
        self._end_cpu(p.pid)
        t = time.time()
        p.popen.kill()
        p.popen.wait()
        return t

    def restart(self, i: int, join: int) -> float:
        """Start node ``i`` again (same name and address); return when it was started."""
        self.restarts += 1
        t = time.time()
        self.spawn(i, join)
        return t

    def signal(self, i: int, sig: int) -> float:
        """Send ``sig`` to node ``i``; return when it was sent."""
        t = time.time()
        os.kill(self.procs[i].pid, sig)
        return t

    def begin_cpu(self) -> None:
        """Start measuring the CPU of every running node (nodes started later are not counted:
        their start-up would weigh on an idle figure)."""
        for p in self.procs.values():
            c = proc_cpu_s(p.pid)
            if c is not None:
                self.cpu_base[p.pid] = (time.monotonic(), c)

    def _end_cpu(self, pid: int) -> None:
        base = self.cpu_base.pop(pid, None)
        c = proc_cpu_s(pid)
        if base is not None and c is not None:
            self.cpu_segments.append((time.monotonic() - base[0], c - base[1]))

    def end_cpu(self) -> list[tuple[float, float]]:
        """End the CPU measurement of every node; return every (wall s, CPU s) window."""
        for pid in list(self.cpu_base):
            self._end_cpu(pid)
        return self.cpu_segments

    def rss(self) -> list[float]:
        """RSS (MiB) of every running node."""
        return [r for p in self.procs.values() if (r := proc_rss_mib(p.pid)) is not None]

    def stop_all(self) -> None:
        """SIGTERM every node (they leave), SIGKILL what is left after 5 s, reap all."""
        self.end_cpu()
        procs = list(self.procs.values())
        self.procs.clear()
        with self.obs.lock:          # what they say from here on (leaving) is not observed
            self.obs.current.clear()
        for p in procs:
            try:
                if p.popen.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
                    p.popen.terminate()
            except ProcessLookupError:
                pass
        end = time.monotonic() + 5.0
        for p in procs:
            try:
                p.popen.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
