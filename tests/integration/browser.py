"""Headless Chromium driven over the Chrome DevTools Protocol, with the ``websockets`` library.

Just enough to test a page: navigate, evaluate JavaScript, wait for a condition in the DOM,
click, take a screenshot. Chromium is Debian's ``chromium`` package (``.ci/run`` installs it);
it runs with a fresh profile in a directory of the caller's, with the flags this machine needs
(no sandbox as root, no background networking: nothing leaves loopback), and is always ended
by :meth:`Chromium.close` (also on ``with`` exit).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

from . import scaled

__all__ = ["find_chromium", "Chromium", "BrowserError"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--no-pings", "--disable-domain-reliability", "--disable-breakpad",
         "--disable-client-side-phishing-detection", "--disable-features=OptimizationHints,"
         "MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,Translate",
         # Every name but loopback's fails to resolve, and anything not bound for loopback goes
         # to a proxy on loopback where nothing listens: nothing can leave the machine.
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost;[::1]",
         "--remote-allow-origins=*"]
"""Chromium flags: headless, no sandbox (it refuses to start as root otherwise), and no
connection of its own to anything (updates, sync, field trials, pings): its resolver knows only
loopback and its proxy is a dead loopback port."""


class BrowserError(AssertionError):
    """Chromium did not start, or a DevTools command failed."""


def find_chromium() -> str | None:
    """Return the path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium with one page.

    Args:
        executable: the Chromium binary.
        workdir: where its profile and log go (a test's tmp dir).
        width, height: the window size in CSS pixels.
    """

    def __init__(self, executable: str, workdir: Path, width: int = 1280, height: int = 900) -> None:
        self.workdir = workdir
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "chromium.log"
        self.net_log_path = workdir / "chromium-netlog.json"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--log-net-log={self.net_log_path}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)   # its own process group: close() ends its helpers too
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._next_id = 0
        try:
            port = self._devtools_port(profile / "DevToolsActivePort", scaled(30.0))
            self.ws = self._stack.enter_context(
                connect(self._page_url(port), max_size=None, open_timeout=scaled(10.0)))
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, path: Path, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                first = path.read_text().splitlines()[0]
                return int(first)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise BrowserError(f"chromium opened no DevTools port within {timeout:.0f}s: {self.log_tail()}")

    def _page_url(self, port: int) -> str:
        end = time.monotonic() + scaled(10.0)
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=scaled(5.0)) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > end:
                raise BrowserError(f"chromium has no page target: {targets}")
            time.sleep(0.05)

    def log_tail(self, n: int = 2000) -> str:
        """The end of Chromium's output."""
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def net_destinations(self) -> set[str]:
        """Every address (``host:port``) Chromium sent traffic to, read from its network log.

        That is every TCP connection attempt, and every UDP socket that sent a datagram, by the
        address it was connected to. A UDP socket that was connected but sent nothing is left
        out: that is how Chromium asks the kernel which source address a route would use (its
        IPv6 reachability probe), and it puts nothing on the wire. Read after :meth:`close`;
        the log is read line by line, as a browser ended by a signal leaves it unterminated.
        """
        try:
            text = self.net_log_path.read_text("utf-8", "replace")
        except OSError:
            return set()
        head, sep, events = text.partition('"events": [')
        if not sep:
            return set()
        types = {v: k for k, v in json.loads(head.rstrip().rstrip(",") + "}")["constants"]
                 ["logEventTypes"].items()}
        udp_peer: dict[int, str] = {}
        udp_sent: set[int] = set()
        out: set[str] = set()
        for line in events.splitlines():
            line = line.strip().rstrip(",")
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = types.get(event.get("type"), "")
            params = event.get("params") or {}
            source = (event.get("source") or {}).get("id", -1)
            if kind == "TCP_CONNECT_ATTEMPT" and "address" in params:
                out.add(params["address"])
            elif kind == "UDP_CONNECT" and "address" in params:
                udp_peer[source] = params["address"]
            elif kind in ("UDP_BYTES_SENT", "UDP_SEND_ERROR"):
                udp_sent.add(source)
        out.update(udp_peer[s] for s in udp_sent if s in udp_peer)
        return out

    # ------------------------------------------------------------------ DevTools

    def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events in between are skipped)."""
        assert self.ws is not None
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        end = time.monotonic() + scaled(timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {scaled(timeout):.0f}s")
            try:
                msg = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                continue
            if msg.get("id") != ident:
                continue
            if "error" in msg:
                raise BrowserError(f"{method}: {msg['error']}")
            result: dict[str, Any] = msg.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON-able) value.

        Raises:
            BrowserError: the expression threw.
        """
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression!r} threw: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r.get("result", {}).get("value")

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Load ``url`` and wait until the document is complete."""
        r = self.send("Page.navigate", url=url)
        if r.get("errorText"):
            raise BrowserError(f"cannot load {url}: {r['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy (bounded, scaled); return its value."""
        limit = scaled(timeout)
        end = time.monotonic() + limit
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= end:
                raise BrowserError(f"timed out after {limit:.1f}s waiting until {what} "
                                   f"({expression!r} is {value!r})")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector``, as a mouse would."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if not box:
            raise BrowserError(f"nothing matches {selector!r}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page as it is shown."""
        r = self.send("Page.captureScreenshot", format="png", timeout=30.0)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection and end Chromium (idempotent).

        Chromium is first asked to close through DevTools and given time to exit by itself, so
        that it finishes its network log (:meth:`net_destinations` reads it); a signal ends it
        only if it does not.
        """
        if self.ws is not None and self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5.0)
            except Exception:   # it closes the DevTools connection as it goes: no answer needed
                pass
            try:
                self.proc.wait(scaled(20.0))
            except subprocess.TimeoutExpired:
                pass
        if self.ws is not None:
            self.ws = None
            try:
                self._stack.close()
            except Exception:  # a dead browser: nothing to close politely
                pass
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(scaled(10.0))
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(scaled(10.0))
        self._signal_group(signal.SIGKILL)   # any renderer or zygote left behind
        if not self._log.closed:
            self._log.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)   # the group this object started (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

