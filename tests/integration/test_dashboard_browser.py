"""The dashboard in a real browser: headless Chromium on a page served by an agent, over loopback.

Three agents (processes) form a cluster; Chromium opens the one-time login link the first
prints (which sets the API token as a same-origin cookie) and loads its page. The test checks
in the DOM that three alive rows appear, that a node killed with SIGKILL turns dead on the page
within the detection time, that a click on it opens its provenance, and that a reload starts
with the plots' recent history rather than empty plots. It saves a screenshot
under the test's tmp dir. With ``GOSSIP_TESTS_SCREENSHOT=docs/dashboard.png`` it also copies it
there and writes ``members --explain``'s output beside it: how the manual's picture and example
are made.

Chromium is Debian's ``chromium`` package, which ``.ci/run`` installs; without it the test is
skipped (and fails under CI, where it must be there). Every wait is bounded and scaled by
``GOSSIP_TESTS_TIMEOUT_FACTOR``; every process is ended whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from gossip import Config

from . import REPO_ROOT, scaled, wait_until
from .browser import BrowserError, Chromium, find_chromium
from gossip_netguard import is_loopback

pytestmark = pytest.mark.integration


def chromium() -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed, yet CI's .ci/run installs Debian's chromium "
                        "package before the tests: the browser test cannot run")
        pytest.skip("Chromium is not installed (Debian's chromium package: apt-get install chromium; "
                    ".ci/run installs it)")
    return exe


RUNTIME_DIR = tempfile.mkdtemp(prefix="gossip-browser-test-")
"""$XDG_RUNTIME_DIR of the agents and the command line: where the API tokens are."""


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOSSIP_") or k.startswith("GOSSIP_TESTS_")}
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_RUNTIME_DIR"] = RUNTIME_DIR
    return env


class Agent:
    """A ``gossip agent`` process whose output lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        env = environment()
        self.p = subprocess.Popen([sys.executable, "-m", "gossip", "agent", "--preset", "local",
                                   "--bind", "127.0.0.1:0", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  cwd=REPO_ROOT)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.p.stdout, self.lines), (self.p.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found.extend(m for m in map(rx.search, list(self.lines)) if m)
            assert found or self.p.poll() is None, f"agent ended ({self.p.returncode}): {self.err[-5:]}"
            return bool(found)

        wait_until(seen, timeout, f"a line matching {pattern!r} ({self.lines[-3:]}, {self.err[-3:]})")
        return found[0]

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(scaled(10.0))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(scaled(10.0))
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(scaled(10.0))
        for t in self._readers:
            t.join(scaled(5.0))


def get_json(url: str) -> Any:
    port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    token = Path(RUNTIME_DIR, "gossip", f"http-{port}.token").read_text().strip()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=scaled(5.0)) as r:
        return json.loads(r.read())


def detection_bound() -> float:
    """The longest a crash may take to be declared dead by a survivor of a 3-node local cluster:
    a probe round to notice it, then the longest suspicion timeout (no confirmation at all)."""
    cfg = Config.local()
    low = cfg.suspicion_mult * max(1.0, math.log10(3)) * cfg.probe_interval
    return 2 * cfg.probe_interval + cfg.suspicion_max_timeout_mult * low + 2.0


def test_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    exe = chromium()
    agents: list[Agent] = []
    try:
        a = Agent("--http", "127.0.0.1:0", "--metadata", "role=seed", "--metadata", "zone=eu-west-1a")
        agents.append(a)
        a_id, a_addr = a.wait_line(r"node (\S+) listening on (\S+)").groups()
        url = a.wait_line(r"http on (http://\S+)").group(1)
        login = a.wait_line(r"dashboard: (http://\S+)").group(1)
        assert login.startswith(url + "/?login=")
        with pytest.raises(urllib.error.HTTPError) as refused:     # no token, no page
            urllib.request.urlopen(url + "/", timeout=scaled(5.0))
        assert refused.value.code == 401
        ids = [a_id]
        for role, zone in (("worker", "eu-west-1b"), ("cache", "eu-west-1c")):
            x = Agent("--join", a_addr, "--metadata", f"role={role}", "--metadata", f"zone={zone}")
            agents.append(x)
            ids.append(x.wait_line(r"node (\S+) listening on").group(1))
        b_id, c_id = ids[1], ids[2]
        wait_until(lambda: sum(m["state"] == "alive" for m in get_json(url + "/api/members")["members"]) == 3,
                   20.0, "the agent sees three alive members")

        with Chromium(exe, tmp_path, width=1280, height=720) as browser:
            browser.navigate(login)                 # sets the cookie, then redirects to /
            browser.wait_for("location.search === '' && location.pathname === '/'", 10.0,
                             "the redirect from the login link")
            rows = "[...document.querySelectorAll('#members tbody tr')]"
            browser.wait_for(f"{rows}.length === 3 && {rows}.every(r => r.dataset.state === 'alive')",
                             15.0, "three alive rows")
            assert sorted(browser.evaluate(f"{rows}.map(r => r.dataset.id)")) == sorted(ids)
            assert browser.evaluate("document.querySelector('#conn').textContent") == "live"
            # Round trips come in with the samples: wait until both peers' RTT cells show one.
            browser.wait_for(f"{rows}.filter(r => /ms$/.test(r.children[4].textContent)).length === 2",
                             15.0, "both peers' last RTT on the page")

            points = "Number(document.querySelector('#size-plot').dataset.points || 0)"
            browser.wait_for(f"{points} >= 5", 15.0, "five points on the plots")
            agents[2].kill()
            killed = time.monotonic()
            row = f"document.querySelector('#members tr[data-id=\"{c_id}\"]')"
            bound = detection_bound()
            browser.wait_for(f"{row} && {row}.dataset.state === 'dead'", bound, "the killed node turns dead")
            took = time.monotonic() - killed
            assert took <= scaled(bound)
            browser.wait_for("[...document.querySelectorAll('#log li')].some(li => li.textContent.includes('→ dead'))",
                             5.0, "the death in the event log")

            card = "document.querySelector('#provenance')"
            for attempt in range(3):
                # A mouse click lands where the row was an instant before: if the table was
                # redrawn in between (a loaded host), it hit another row; click again.
                browser.click(f'#members tr[data-id="{c_id}"]')
                try:
                    browser.wait_for(f"{card}.dataset.node === '{c_id}' && "
                                     f"{card}.querySelector('.episode.outcome-dead') !== null",
                                     10.0, "the killed node's provenance to open")
                    break
                except BrowserError:
                    if attempt == 2:
                        raise
            text = browser.evaluate(f"{card}.innerText")
            assert "suspected by" in text and "declared dead" in text, text
            assert c_id[-8:] in text and (a_id[-8:] in text or b_id[-8:] in text), text
            assert browser.evaluate("document.querySelector('#members tr.selected').dataset.id") == c_id

            # The page shows what the API says: the accuser is one of the survivors.
            x = get_json(f"{url}/api/explain?node={c_id}")
            ep = x["episodes"][-1]
            assert ep["outcome"] == "dead" and ep["accuser"] in (a_id, b_id)
            assert x["names"][ep["accuser"]]["short"] in text

            # A few more points on the plots after the death, then the picture.
            after = browser.evaluate(points)
            browser.wait_for(f"{points} >= {after + 3}", 10.0, "three more plot points")

            # A reload starts with the recent history, the death in it, not with empty plots.
            shown = browser.evaluate(points)
            browser.navigate(url + "/")             # the cookie is kept: no new login
            browser.wait_for(f"{rows}.length === 3", 15.0, "the page back after a reload")
            # The snapshot that filled the table brought the history: more points than the
            # live samples of the first second could give.
            assert browser.evaluate(points) >= min(shown, 8), (browser.evaluate(points), shown)
            assert browser.evaluate("document.querySelector('#conn').textContent") == "live"
            shot = browser.screenshot(tmp_path / "dashboard.png")
            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            assert (width, height) == (1280, 720)
            target = os.environ.get("GOSSIP_TESTS_SCREENSHOT")
            if target:
                shutil.copyfile(shot, target)

        # Chromium reached nothing but loopback: its resolver knows no other name and its proxy
        # is a dead loopback port (its background requests to the vendor end there).
        reached = browser.net_destinations()
        assert reached, "chromium's network log names no destination at all"
        off = sorted(a for a in reached if not is_loopback(a.rpartition(":")[0]))
        assert not off, f"chromium reached past loopback: {off}"

        # The command line prints the same provenance.
        env = environment()
        done = subprocess.run([sys.executable, "-m", "gossip", "members", "--agent", url.removeprefix("http://"),
                               "--explain", c_id[-8:]], capture_output=True, text=True,
                              timeout=scaled(20.0), env=env, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        assert f"member {c_id[-8:]}" in done.stdout and "is dead" in done.stdout
        assert "suspected by" in done.stdout and "declared dead" in done.stdout, done.stdout
        if target:
            Path(target).with_suffix(".explain.txt").write_text(done.stdout)   # for the manual (docs/operating.md, docs/membership.md)
    finally:
        for agent in agents:
            agent.stop()
