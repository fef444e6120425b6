"""The commands that ask a running agent through its HTTP API: ``members``, ``send``,
``watch`` and ``dashboard``.

Each finds the agent (``--agent``, else ``$GOSSIP_AGENT``, else :data:`DEFAULT_AGENT`), reads
the API token the agent wrote at start (:func:`gossip.cli.agent.token_path`), asks, and prints
the answer; a refusal or an unreachable agent is a one-line :class:`~gossip.cli.agent.CliError`.

This module imports the agent's settings (for the token file) and the HTTP API's address
parser; it never starts a node.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from .agent import CliError

__all__ = ["DEFAULT_AGENT", "members", "send", "watch", "dashboard", "rotate_keys", "format_explanation"]

DEFAULT_AGENT = "127.0.0.1:7980"
"""Where ``members``, ``send`` and ``watch`` look for an agent's HTTP API by default."""


class _Client:
    """An agent's HTTP API, as ``members``, ``send``, ``watch`` and ``dashboard`` ask it."""

    def __init__(self, args: argparse.Namespace) -> None:
        from .agent import read_token_file, token_path
        from ..errors import AddressError
        from ..httpapi import parse_listen_addr

        text = args.agent or os.environ.get("GOSSIP_AGENT") or DEFAULT_AGENT
        try:
            host, port = parse_listen_addr(text)
        except AddressError as exc:
            raise CliError(f"bad agent address: {exc}") from None
        if port == 0:
            raise CliError(f"bad agent address {text!r}: no port (the agent's --http port)")
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.token_file = (getattr(args, "token_file", None) or os.environ.get("GOSSIP_HTTP_TOKEN_FILE")
                           or token_path(port))
        self.headers: dict[str, str] = {}
        self.no_token = ""
        try:
            self.headers["Authorization"] = "Bearer " + read_token_file(self.token_file)
        except CliError as exc:
            self.no_token = str(exc)         # said only if the agent asks for a token

    def _refused(self, exc: urllib.error.HTTPError) -> CliError:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        if exc.code == 401:
            why = self.no_token or (f"the token in {self.token_file} is not this agent's (another agent "
                                    "on the same port since?); give --token-file")
            return CliError(f"the agent at {self.url} needs its API token: {why}")
        if exc.code >= 500:
            return CliError(f"the agent at {self.url} failed: {message}")
        return CliError(f"the agent at {self.url} refused: {message}")

    def call(self, path: str, timeout: float, body: Any = None) -> Any:
        """GET ``path`` (POST ``body`` as JSON) and return the JSON answer.

        Raises:
            CliError: the agent cannot be reached, refused, failed, or did not answer JSON.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data is not None else {}))
        req = urllib.request.Request(self.url + path, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(_unreachable(self.url, exc, timeout)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"the agent at {self.url} answered something that is not JSON "
                           "(is it a gossip agent's --http address?)") from None

    def open(self, path: str, timeout: float, body: Any = None) -> Any:
        """Open a long response (an event stream; POST ``body`` as JSON if given).

        Raises:
            CliError: as :meth:`call`.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data is not None else {}))
        try:
            return urllib.request.urlopen(urllib.request.Request(self.url + path, data=data, headers=headers),
                                          timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(_unreachable(self.url, exc, timeout)) from None


def _unreachable(url: str, exc: BaseException, timeout: float) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"the agent at {url} did not answer within {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(reason, socket.gaierror):
        why = f"unknown host ({reason.strerror})"
    elif isinstance(reason, OSError) and reason.strerror:
        why = reason.strerror.lower()
    else:
        why = str(reason)
    return f"cannot reach the agent at {url}: {why} (is `gossip agent --http ...` running there?)"


def _fmt_rtt(rtt: float | None) -> str:
    if rtt is None:
        return "-"
    if rtt < 1.0:
        return f"{rtt * 1000:.2f}ms" if rtt < 0.01 else f"{rtt * 1000:.1f}ms"
    return f"{rtt:.2f}s"


def _table(members: list[dict[str, Any]], wide: bool = False) -> str:
    rows = [("ID", "ADDRESS", "STATE", "INC", "RTT", "METADATA")]
    for m in members:
        meta = ",".join(f"{k}={v}" for k, v in sorted(m.get("metadata", {}).items()))
        ident = m["id"] if wide else m.get("short", m["id"])
        rows.append((ident + (" *" if m.get("local") else ""), m["address"], m["state"],
                     str(m["incarnation"]), _fmt_rtt(m.get("rtt")), meta))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) if i != 3 else r[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells + [r[5]]).rstrip())
    alive = sum(1 for m in members if m["state"] == "alive")
    lines.append(f"{len(members)} members, {alive} alive (* this agent)")
    return "\n".join(lines)


_VIA = {"probe": "its own probe failed", "direct": "told directly", "gossip": "by gossip, relayed by {}",
        "sync": "in a state exchange with {}"}


def _secs(s: float) -> str:
    return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"


def format_explanation(x: dict[str, Any]) -> str:
    """Return the text ``members --explain`` prints for the API's explanation JSON."""
    def clock(t: float | None) -> str:
        if t is None:
            return "?"
        return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]

    def name(nid: str | None) -> str:
        if nid is None:
            return "?"
        n = x.get("names", {}).get(nid, {})
        text = n.get("short") or nid[-8:]
        if nid == x.get("observer"):
            text += " (this agent)"
        elif n.get("address"):
            text += f" ({n['address']})"
        return text

    def via(v: str, relay: str | None) -> str:
        return _VIA.get(v, v).format(name(relay))

    flap = x.get("flap", {})
    state = x["state"]
    lines = [f"member {x['short']} ({x['address']}) is {state}, incarnation {x['incarnation']}; "
             f"flap score {flap.get('score', 0)} in {flap.get('window', 0):g}s"
             + ("; flapping" if flap.get("flapping") else "") + ("; damped" if flap.get("damped") else "")]
    episodes = x.get("episodes", [])
    if x.get("local"):
        lines.append("this is the agent itself: it refutes accusations about itself")
    elif not episodes:
        lines.append(f"never suspected by this agent (it keeps the last {x.get('history_size')} episodes)")
    for i, e in enumerate(episodes, 1):
        title = {"dead": "declared dead", "open": "still open"}.get(e["outcome"], e["outcome"])
        lines.append(f"suspicion {i} of {len(episodes)}: {title}")
        if e["outcome"] == "dead" and not e["confirmations"] and e["expected"] == 0 and e["timeout"] == 0:
            lines.append(f"  {clock(e['started_at'])}  declared dead by {name(e['declared_by'])} at "
                         f"incarnation {e['incarnation']}, without a suspicion here first: "
                         f"{via(e['via'], e['relayed_by'])}")
        else:
            lines.append(f"  {clock(e['started_at'])}  suspected by {name(e['accuser'])} at incarnation "
                         f"{e['incarnation']}: {via(e['via'], e['relayed_by'])}; timeout {_secs(e['timeout'])}")
            for c in e["confirmations"]:
                lines.append(f"  {clock(c['at'])}  confirmed by {name(c['node'])}: {via(c['via'], c['relayed_by'])}; "
                             f"timeout {_secs(c['timeout'])} -> {_secs(c['new_timeout'])}")
            if e["outcome"] == "dead":
                how = "its suspicion timed out here" if e["by_timeout"] else f"verdict of {name(e['declared_by'])}"
                lines.append(f"  {clock(e['ended_at'])}  declared dead: {how}, "
                             f"{_secs(e['ended_at'] - e['started_at'])} after the first accusation")
            elif e["outcome"] == "refuted":
                lines.append(f"  {clock(e['ended_at'])}  refuted by the member at incarnation "
                             f"{e['refuted_incarnation']}")
            elif e["outcome"] == "left":
                lines.append(f"  {clock(e['ended_at'])}  the member left")
            else:
                lines.append(f"  still suspected ({len(e['confirmations'])} of {e['expected']} confirmations)")
        if e.get("returned_at") is not None:
            lines.append(f"  {clock(e['returned_at'])}  back alive at incarnation {e['returned_incarnation']}")
    return "\n".join(lines)


def members(args: argparse.Namespace) -> int:
    client = _Client(args)
    url = client.url
    if args.explain is not None:
        x = client.call("/api/explain?node=" + urllib.parse.quote(args.explain), args.timeout)
        print(json.dumps(x, indent=2) if args.json else format_explanation(x), flush=True)
        return 0
    refreshes = 0
    tty = sys.stdout.isatty()
    while True:
        data = client.call("/api/members", args.timeout)
        if args.json:
            print(json.dumps(data, indent=None if args.watch else 2), flush=True)
        else:
            if args.watch:
                stamp = datetime.datetime.now().strftime("%H:%M:%S")
                head = f"{url}  {stamp}  (every {args.interval:g}s, Ctrl-C to stop)"
                print(("\x1b[H\x1b[2J" if tty else "") + head, flush=True)
            print(_table(data["members"], args.wide), flush=True)
            if args.watch and not tty:
                print(flush=True)
        refreshes += 1
        if not args.watch or (args.count is not None and refreshes >= args.count):
            return 0
        time.sleep(args.interval)


def send(args: argparse.Namespace) -> int:
    client = _Client(args)
    if args.json:
        try:
            data: Any = json.loads(args.message)
        except ValueError as exc:
            raise CliError(f"MESSAGE is not JSON: {exc}") from None
    else:
        data = args.message
    body: dict[str, Any] = {"type": args.type, "data": data, "reliable": args.reliable}
    if args.to:
        body["node"] = args.to
    if getattr(args, "tag", None):
        if args.to:
            raise CliError("--tag is for broadcasts: give --tag or --to, not both")
        body["tag"] = args.tag
    answer = client.call("/api/send", args.timeout, body)
    if answer.get("sent") == "node":
        print(f"sent type {args.type} to {answer.get('to')}")
    elif answer.get("sent") == "tagged":
        print(f"broadcast type {args.type} to the nodes tagged {answer.get('tag')}")
    else:
        print(f"broadcast type {args.type}")
    return 0


def forget(args: argparse.Namespace) -> int:
    client = _Client(args)
    answer = client.call("/api/forget", args.timeout, {"node": args.node})
    print(f"forgot {answer.get('forgotten')}")
    return 0


def _bar(step: str, done: int, total: int, width: int = 20) -> str:
    filled = width * done // total if total else width
    return f"{step:<8} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def rotate_keys(args: argparse.Namespace) -> int:
    """``gossip keys rotate``: rotate the cluster to the key in ``--key-file`` through an agent,
    with a progress bar on stderr; exit 0 when complete, 1 when a member did not finish."""
    from .agent import read_key_file

    key = read_key_file(args.key_file)[0]
    client = _Client(args)
    body = {"key": key.hex(), "timeout": args.timeout, "drain": args.drain, "force": args.force}
    tty = sys.stderr.isatty()
    report: dict[str, Any] | None = None
    resp = client.open("/api/keys/rotate", args.timeout + 30.0, body)
    try:
        with resp:
            for raw in resp:
                line = raw.strip()
                if not line:
                    continue                          # keep-alive
                try:
                    item = json.loads(line)
                except ValueError:
                    raise CliError(f"the agent at {client.url} answered a line that is not JSON") from None
                if "progress" in item:
                    p = item["progress"]
                    text = _bar(str(p.get("step")), int(p.get("done", 0)), int(p.get("total", 0)))
                    print(("\r" + text) if tty else text, end="" if tty else "\n",
                          file=sys.stderr, flush=True)
                elif "error" in item:
                    raise CliError(f"the agent at {client.url} could not rotate: {item['error']}")
                elif "report" in item:
                    report = item["report"]
    except (OSError, socket.timeout) as exc:
        raise CliError(_unreachable(client.url, exc, args.timeout + 30.0)) from None
    finally:
        if tty:
            print(file=sys.stderr, flush=True)
    if report is None:
        raise CliError(f"the agent at {client.url} ended the rotation without a report")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_rotation_table(report))
    return 0 if report.get("complete") else 1


def _rotation_table(report: dict[str, Any]) -> str:
    def mark(flag: object) -> str:
        return "yes" if flag else "no"

    lines = [f"{'NODE':<10} {'ADDRESS':<24} {'INSTALLED':<9} {'SWITCHED':<8} {'REMOVED':<7} ERROR"]
    for m in report.get("members", []):
        lines.append(f"{str(m.get('node', ''))[-8:]:<10} {str(m.get('address', '')):<24} "
                     f"{mark(m.get('installed')):<9} {mark(m.get('switched')):<8} "
                     f"{mark(m.get('removed')):<7} {m.get('error', '')}")
    down = report.get("down") or []
    if down:
        lines.append(f"down (not asked): {', '.join(str(d)[-8:] for d in down)}; the old key is kept: "
                     "see docs/key-rotation.md for how they catch up")
    if report.get("complete"):
        lines.append("rotation complete: every member uses the new key only")
    else:
        lines.append("rotation NOT complete: run it again with the same key once the members "
                     "listed can be reached")
    return "\n".join(lines)


def _sse_events(client: _Client, path: str, timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
    url = client.url
    resp = client.open(path, timeout)
    kind, data = "message", list[str]()
    with resp:
        while True:
            try:
                raw = resp.readline()
            except (OSError, socket.timeout) as exc:
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    raise CliError(f"the agent at {url} sent nothing for {timeout:g}s") from None
                raise CliError(f"the event stream from {url} broke: {exc}") from None
            if not raw:
                raise CliError(f"the agent at {url} closed the event stream")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data:
                    try:
                        yield kind, json.loads("\n".join(data))
                    except ValueError:
                        pass
                kind, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


def _describe(kind: str, ev: dict[str, Any]) -> str:
    stamp = datetime.datetime.fromtimestamp(ev.get("at", time.time())).strftime("%H:%M:%S")
    if kind == "snapshot":
        members = ev.get("members", [])
        listing = ", ".join(f"{m['short']} {m['state']}" for m in members)
        return f"[{stamp}] {len(members)} members: {listing}"
    node = ev.get("node") or {}
    who = f"{node.get('short', '?')} {node.get('address', '')}".rstrip()
    if kind == "state":
        return f"[{stamp}] state    {who}: {ev.get('previous')} -> {node.get('state')}"
    if kind == "metadata":
        meta = ",".join(f"{k}={v}" for k, v in sorted(node.get("metadata", {}).items()))
        return f"[{stamp}] metadata {who}: {meta or '(empty)'}"
    if kind == "message":
        sender = (ev.get("from") or {}).get("short", "?")
        return f"[{stamp}] message  type {ev.get('type')} from {sender}: {ev.get('data')!r}"
    if kind == "flapping":
        return (f"[{stamp}] flapping {ev.get('short', '?')} {ev.get('address', '')}: {ev.get('score')} "
                f"state changes in {ev.get('window', 0):g}s" + (" (damped)" if ev.get("damped") else ""))
    if kind == "partition":
        members = ev.get("members", [])
        return (f"[{stamp}] partition suspected: {len(members)} members ({ev.get('share', 0):.0%} of the "
                f"live ones) lost within {ev.get('window', 0):g}s: {', '.join(m[-8:] for m in members[:8])}"
                + (", ..." if len(members) > 8 else ""))
    if kind == "healed":
        missing = ev.get("missing", [])
        return (f"[{stamp}] partition healed after {ev.get('duration', 0):.1f}s: "
                f"{len(ev.get('returned', []))} of {len(ev.get('members', []))} members back"
                + (f"; not back: {', '.join(m[-8:] for m in missing[:8])}" + (", ..." if len(missing) > 8 else "")
                   if missing else ""))
    return f"[{stamp}] {kind} {json.dumps(ev)}"


def watch(args: argparse.Namespace) -> int:
    client = _Client(args)
    path = "/api/events" + ("?snapshot=0" if args.no_snapshot else "")
    seen = 0
    for kind, ev in _sse_events(client, path, args.timeout):
        if args.json:
            print(json.dumps({"event": kind, **ev}), flush=True)
        else:
            print(_describe(kind, ev), flush=True)
        if kind != "snapshot":
            seen += 1
            if args.count is not None and seen >= args.count:
                return 0
    return 0


def dashboard(args: argparse.Namespace) -> int:
    client = _Client(args)
    answer = client.call("/api/login", args.timeout, {})
    print(f"{client.url}{answer['path']}")
    print(f"(opens the dashboard once, within {answer.get('expires_in', 600) / 60:g} minutes: it "
          "sets a cookie that holds the agent's token for this browser)", file=sys.stderr)
    return 0
