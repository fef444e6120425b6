"""The ``gossip`` command line, each subcommand run as a subprocess against real agents on loopback.

Two agents run for the whole module: A (flags: key file, label, metadata) and B (a TOML file
for its settings, the label from ``GOSSIP_CLUSTER_LABEL``), both with their HTTP API on a free
port. Every process runs with ``XDG_RUNTIME_DIR`` set to this module's own folder, where the
agents write their API tokens and the client subcommands read them. Every wait is bounded and
scaled by ``GOSSIP_TESTS_TIMEOUT_FACTOR``; a process sent SIGINT has SIGINT's default action
(a test runner started in the background may have it ignored).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gossip import Cluster, Config
from gossip.sim import Simulation
from gossip.sim.network import LinkModel

from . import REPO_ROOT, loopback_blackhole, scaled, wait_until

pytestmark = pytest.mark.integration

LABEL = "cli-test"


def gossip_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gossip", *args]


RUNTIME_DIR = tempfile.mkdtemp(prefix="gossip-cli-test-")
"""Where this module's agents write their API tokens ($XDG_RUNTIME_DIR of every process)."""


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GOSSIP_") or k.startswith("GOSSIP_TESTS_")}
    e["PYTHONPATH"] = REPO_ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["XDG_RUNTIME_DIR"] = RUNTIME_DIR
    e.update(extra)
    return e


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, timeout: float = 20.0, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gossip_cmd(*args), capture_output=True, text=True, timeout=scaled(timeout),
                          env=env(**extra_env), cwd=REPO_ROOT)


class Proc:
    """A long-running ``gossip`` subprocess whose output lines are collected as they come
    (in a session of its own, as a terminal's foreground job: :meth:`interrupt` is Ctrl-C)."""

    def __init__(self, *args: str, **extra_env: str) -> None:
        self.p = subprocess.Popen(gossip_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env(**extra_env), cwd=REPO_ROOT,
                                  start_new_session=True, preexec_fn=default_sigint)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.p.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if self.p.poll() is not None and not found:
                # Let the readers catch up with a process that already ended.
                time.sleep(0.05)
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    found.append(m)
                    return True
            assert self.p.poll() is None, f"process ended ({self.p.returncode}): {self.err[-5:]}"
            return False

        wait_until(seen, timeout, f"a line matching {pattern!r} (got {self.lines[-5:]}, {self.err[-5:]})")
        return found[0]

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it."""
        os.killpg(self.p.pid, signal.SIGINT)

    def group_gone(self) -> bool:
        """True once no process of this command's group is left (its workers included)."""
        try:
            os.killpg(self.p.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(scaled(timeout))
        for t in self._readers:
            t.join(scaled(timeout))
        return self.p.returncode


def token_of(url: str) -> str:
    """The API token the agent serving ``url`` wrote at start."""
    port = url.rstrip("/").rsplit(":", 1)[1].split("/")[0]
    return Path(RUNTIME_DIR, "gossip", f"http-{port}.token").read_text().strip()


def authed(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"Authorization": "Bearer " + token_of(url)})


def get_json(url: str) -> Any:
    with urllib.request.urlopen(authed(url), timeout=scaled(5.0)) as r:
        return json.loads(r.read())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(authed(url + "/metrics"), timeout=scaled(5.0)) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= set(lbl))


class Agents:
    def __init__(self, a: Proc, b: Proc, a_url: str, b_url: str, a_addr: str, key: bytes,
                 a_id: str, b_id: str) -> None:
        self.a, self.b, self.a_url, self.b_url = a, b, a_url, b_url
        self.a_addr, self.key, self.a_id, self.b_id = a_addr, key, a_id, b_id


@pytest.fixture(scope="module")
def keygen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    path = tmp_path_factory.mktemp("keys") / "cluster.key"
    done = run("keygen", "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path, done


@pytest.fixture(scope="module")
def agents(keygen: tuple[Path, subprocess.CompletedProcess[str]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    key_path, _ = keygen
    a = Proc("agent", "--preset", "local", "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--key-file", str(key_path), "--label", LABEL, "--metadata", "role=seed",
             "--receive", "128", "--receive", "130")
    procs = [a]
    try:
        a_addr = a.wait_line(r"listening on (\S+)").group(1)
        a_url = a.wait_line(r"http on (http://\S+)").group(1)
        conf = tmp_path_factory.mktemp("conf") / "b.toml"
        conf.write_text(f'preset = "local"\nbind_addr = "127.0.0.1:0"\nprobe_interval = "500ms"\n'
                        f'ping_timeout = 0.2\n\n[agent]\nhttp = "127.0.0.1:0"\njoin = ["{a_addr}"]\n'
                        f'key_file = "{key_path}"\n\n[metadata]\nzone = "b"\nweight = 2\n')
        b = Proc("agent", "--config", str(conf), GOSSIP_CLUSTER_LABEL=LABEL)
        procs.append(b)
        b_url = b.wait_line(r"http on (http://\S+)").group(1)
        b.wait_line(r"joined through 1 peer")

        def both_see_two() -> bool:
            return all(sum(m["state"] == "alive" for m in get_json(u + "/api/members")["members"]) == 2
                       for u in (a_url, b_url))

        wait_until(both_see_two, 15.0, "both agents see two alive members")
        a_id = get_json(a_url + "/api/members")["node"]
        b_id = get_json(b_url + "/api/members")["node"]
        yield Agents(a, b, a_url, b_url, a_addr, key_path.read_text().strip().encode(), a_id, b_id)
    finally:
        for p in procs:
            p.stop()
    assert all(p.p.returncode == 0 for p in procs), [p.err[-3:] for p in procs]
    assert any("leaving..." in line for line in a.lines)


def addr_of(url: str) -> str:
    return url.removeprefix("http://")


# -------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["agent", "members", "send", "watch", "keygen", "tune", "demo", "sim"])
def test_every_subcommand_has_help_with_examples(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "examples:" in done.stdout
    assert f"gossip {command}" in done.stdout


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "gossip"
    if not script.exists():
        pytest.skip("the gossip console script is not installed next to this Python")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=scaled(20.0))
    assert done.returncode == 0 and "keygen" in done.stdout and "tune" in done.stdout


# -------------------------------------------------------------------------------- keygen


def test_keygen_prints_one_key_in_hex_and_base64() -> None:
    done = run("keygen")
    hexkey = re.search(r"^hex:\s+([0-9a-f]+)$", done.stdout, re.M)
    b64 = re.search(r"^base64:\s+(\S+)$", done.stdout, re.M)
    assert hexkey and b64
    key = bytes.fromhex(hexkey.group(1))
    assert len(key) == 32 and base64.b64decode(b64.group(1)) == key
    assert "--key-file" in done.stdout and "GOSSIP_ENCRYPTION_KEY" in done.stdout


def test_keygen_out_writes_the_key_and_never_prints_it(keygen: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    path, done = keygen
    key = path.read_text().strip()
    assert len(bytes.fromhex(key)) == 32
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    raw = bytes.fromhex(key)
    for form in (key, key.upper(), base64.b64encode(raw).decode(), base64.b64encode(raw).decode()[:16]):
        assert form not in done.stdout and form not in done.stderr
    assert str(path) in done.stdout and "--key-file" in done.stdout and "0600" in done.stdout
    again = run("keygen", "--out", str(path))
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "exists" in again.stderr
    assert path.read_text().strip() == key   # not overwritten


# -------------------------------------------------------------------------------- members


def test_members_table_json_and_watch(agents: Agents) -> None:
    table = run("members", "--agent", addr_of(agents.a_url))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "ADDRESS", "STATE", "INC", "RTT", "METADATA"]
    assert any(agents.a_id[-8:] in line and "*" in line and "role=seed" in line for line in lines)
    assert any(agents.b_id[-8:] in line and "alive" in line and "zone=b" in line for line in lines)
    assert "2 members, 2 alive" in table.stdout

    listing = run("members", "--json", GOSSIP_AGENT=addr_of(agents.b_url))   # the env default
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert data["node"] == agents.b_id
    by_id = {m["id"]: m for m in data["members"]}
    assert set(by_id) == {agents.a_id, agents.b_id}
    assert by_id[agents.b_id]["local"] and by_id[agents.b_id]["metadata"] == {"zone": "b", "weight": "2"}
    assert by_id[agents.a_id]["metadata"] == {"role": "seed"}

    # B probes A every 500 ms: its last round trip shows up once measured.
    wait_until(lambda: any(m["rtt"] for m in get_json(agents.b_url + "/api/members")["members"]),
               10.0, "B to have measured a round trip to A")

    watch = run("members", "--agent", addr_of(agents.a_url), "--watch", "--interval", "200ms", "--count", "2")
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count("2 members, 2 alive") == 2


def test_members_explain(agents: Agents) -> None:
    b_short = agents.b_id[-8:]
    text = run("members", "--agent", addr_of(agents.a_url), "--explain", b_short)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"member {b_short} (") and "is alive" in text.stdout
    assert "never suspected by this agent" in text.stdout
    as_json = run("members", "--agent", addr_of(agents.a_url), "--explain", agents.b_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert (data["node"], data["observer"], data["episodes"]) == (agents.b_id, agents.a_id, [])
    me = run("members", "--agent", addr_of(agents.a_url), "--explain", agents.a_id)
    assert me.returncode == 0 and "the agent itself" in me.stdout
    missing = run("members", "--agent", addr_of(agents.a_url), "--explain", "ffffffff")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "no known node" in missing.stderr


def test_agent_serves_the_dashboard_at_the_root(agents: Agents) -> None:
    with urllib.request.urlopen(authed(agents.a_url + "/"), timeout=scaled(5.0)) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        assert b'src="dash/dashboard.js"' in r.read()
    with urllib.request.urlopen(authed(agents.a_url + "/dash/dashboard.js"), timeout=scaled(5.0)) as r:
        assert r.headers["Content-Type"].startswith("text/javascript") and b"EventSource" in r.read()
    with urllib.request.urlopen(authed(agents.a_url + "/dash/stream"), timeout=scaled(5.0)) as r:
        assert r.readline() == b"retry: 2000\n" and r.readline() == b"\n"
        assert r.readline() == b"event: snapshot\n"
        snap = json.loads(r.readline().removeprefix(b"data: "))
    assert {m["id"] for m in snap["members"]} == {agents.a_id, agents.b_id}


# -------------------------------------------------------------------------------- send and watch


def test_send_broadcast_and_to_one_node(agents: Agents) -> None:
    done = run("send", "--agent", addr_of(agents.b_url), "hello from the cli")
    assert done.returncode == 0 and "broadcast type 128" in done.stdout, done.stderr
    agents.a.wait_line(rf"message type 128 from {agents.b_id[-8:]}: 'hello from the cli'")

    done = run("send", "--agent", addr_of(agents.b_url), "--to", agents.a_id[-8:], "--type", "130",
               "--json", '{"op": "reload", "n": 3}', "--reliable")
    assert done.returncode == 0 and f"sent type 130 to {agents.a_id}" in done.stdout, done.stderr
    agents.a.wait_line(r"message type 130 from \w+: \{'op': 'reload', 'n': 3\}")


def test_watch_streams_membership_and_message_events(agents: Agents) -> None:
    watcher = Proc("watch", "--agent", addr_of(agents.a_url), "--json", "--count", "3")
    newcomer: Cluster | None = None
    try:
        first = json.loads(watcher.wait_line(r'"event": "snapshot"').string)
        assert {m["id"] for m in first["members"]} >= {agents.a_id, agents.b_id}
        assert run("send", "--agent", addr_of(agents.b_url), "watched").returncode == 0
        watcher.wait_line(r'"event": "message"')
        newcomer = Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=bytes.fromhex(agents.key.decode()),
                                        cluster_label=LABEL))
        newcomer.start()
        assert newcomer.join(agents.a_addr, timeout=scaled(5.0)) == 1
        newcomer.stop(timeout=scaled(3.0))          # leaves gracefully
        assert watcher.p.wait(scaled(15.0)) == 0
        watcher.stop()
        events = [json.loads(line) for line in watcher.lines]
        assert [e["event"] for e in events][0] == "snapshot"
        message = next(e for e in events if e["event"] == "message")
        assert message["type"] == 128 and message["data"] == "watched" and message["from"]["id"] == agents.b_id
        nid = str(newcomer.local_node().id)
        changes = [(e["previous"], e["node"]["state"]) for e in events
                   if e["event"] == "state" and e["node"]["id"] == nid]
        assert changes and changes[0] == ("unknown", "alive")
        assert len(events) == 4   # the snapshot, then --count 3 events
    finally:
        if newcomer is not None:
            newcomer.stop(timeout=scaled(3.0))
        watcher.stop()


# -------------------------------------------------------------------------------- /metrics


def test_metrics_parse_and_counters_move_with_traffic(agents: Agents) -> None:
    before = scrape(agents.a_url)
    assert total(before, "gossip_members", state="alive") == 2
    assert total(before, "gossip_info", node_id=agents.a_id) == 1
    assert ("gossip_health_score", ()) in before
    received = total(before, "gossip_user_messages_total", event="received")
    assert run("send", "--agent", addr_of(agents.b_url), "counted").returncode == 0

    def moved() -> bool:
        now = scrape(agents.a_url)
        return (total(now, "gossip_probes_total") > total(before, "gossip_probes_total")
                and total(now, "gossip_acks_total") > total(before, "gossip_acks_total")
                and total(now, "gossip_packets_total", direction="in") > total(before, "gossip_packets_total", direction="in")
                and total(now, "gossip_packets_total", direction="out") > total(before, "gossip_packets_total", direction="out")
                and total(now, "gossip_probe_rtt_seconds_count") > total(before, "gossip_probe_rtt_seconds_count")
                and total(now, "gossip_user_messages_total", event="received") > received)

    wait_until(moved, 10.0, "probes, acks, packets, round trips and user messages to be counted")
    after = scrape(agents.a_url)
    assert total(after, "gossip_probe_rtt_seconds_sum") > 0
    assert total(after, "gossip_suspicions_total", outcome="confirmed") == 0
    assert total(after, "process_resident_memory_bytes") > 0


# -------------------------------------------------------------------------------- errors


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_errors_are_one_line(agents: Agents, tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("# a comment\nnot-a-key\n")
    cases = [
        (("members", "--agent", f"127.0.0.1:{closed_port()}"), "cannot reach the agent"),
        (("members", "--agent", "localhost:http"), "bad agent address"),
        (("watch", "--agent", "[::1"), "bad agent address"),
        (("agent", "--bind", "127.0.0.1:0", "--key-file", str(bad_key)), "line 2"),
        (("agent", "--bind", "127.0.0.1:0", "--key-file", str(tmp_path / "missing.key")), "cannot read key file"),
        (("agent", "--bind", "300.1.1.1:0"), "bind_addr"),
        (("send", "--agent", addr_of(agents.a_url), "--to", "ffffffffffff", "x"), "no known node"),
    ]
    for args, what in cases:
        done = run(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), (args, done.stderr)
        assert what in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    usage = run("tune", "--loss", "lots")                 # a bad flag: one line too, exit code 2
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1
    assert usage.stderr.startswith("error: gossip tune: argument --loss: 'lots' is not a share")


# -------------------------------------------------------------------------------- tune


def test_tune_recommends_a_config_the_simulator_confirms() -> None:
    rtt, loss = 0.02, 0.01
    done = run("tune", "--nodes", "30", "--rtt", "20ms", "--loss", "1%", "--seed", "5", "--jobs", "2",
               timeout=120.0)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[12/12\]", done.stderr), done.stderr          # progress was shown
    out = done.stdout
    row = next(line for line in out.splitlines() if line.startswith("*"))
    name, _, figures = row[1:].partition("  ")            # the candidate's name, then the columns
    predicted = float(re.search(r"(\d+\.\d)s", figures).group(1))  # type: ignore[union-attr]
    assert name.startswith("probe ")
    env_block = out.split("as environment variables:", 1)[1]
    variables = dict(re.findall(r"^\s+(GOSSIP_\w+)=(\S*)$", env_block, re.M))
    assert variables["GOSSIP_PRESET"] == "lan"
    from_env = Config.from_env(environ=variables)
    python = out.split("as Python:", 1)[1].split("as environment variables:", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(line[4:] for line in python.splitlines()), "<tune>", "exec"), namespace)
    assert namespace["config"] == from_env                             # both forms say the same

    # An independent run, on another seed: a crash is dropped by everyone about as predicted.
    link = LinkModel(base_latency=rtt / 2, jitter=rtt / 20, loss=loss)
    sim = Simulation(from_env, seed=1234, link=link)
    for _ in range(30):
        sim.add_node()
    sim.bootstrap(list(range(30)))
    sim.schedule(5.0, lambda: sim.crash(7))
    sim.run_until(5.0 + 10 * predicted, stop=lambda: 7 in sim.targets and sim.targets[7].all is not None)
    detected = sim.targets[7].all
    assert detected is not None, "the crash was never detected by everyone"
    assert detected - 5.0 <= 1.5 * predicted
    # ... and ten quiet minutes declare no live member dead.
    quiet = Simulation(from_env, seed=4321, link=link)
    for _ in range(30):
        quiet.add_node()
    quiet.bootstrap(list(range(30)))
    quiet.run_until(600.0)
    summary = quiet.summary()
    assert summary["false_dead"] == 0 and summary["live_nodes"] == 30


# -------------------------------------------------------------------------------- the API's token


def test_the_api_needs_the_token_the_agent_wrote(agents: Agents, tmp_path: Path) -> None:
    port = agents.a_url.rsplit(":", 1)[1]
    token_file = Path(RUNTIME_DIR, "gossip", f"http-{port}.token")
    assert oct(token_file.stat().st_mode & 0o777) == oct(0o600)
    assert oct(token_file.parent.stat().st_mode & 0o777) == oct(0o700)
    assert any(str(token_file) in line for line in agents.a.lines)        # the agent said where
    assert all(token_file.read_text().strip() not in line for line in agents.a.lines)
    for path in ("/api/members", "/metrics", "/api/events", "/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(agents.a_url + path, timeout=scaled(5.0))
        assert err.value.code == 401
    # Another user's view: no token file readable here.
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    done = run("members", "--agent", addr_of(agents.a_url), "--token-file", str(wrong))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "needs its API token" in done.stderr and "--token-file" in done.stderr
    done = run("members", "--agent", addr_of(agents.a_url), GOSSIP_HTTP_TOKEN_FILE=str(tmp_path / "none"))
    assert done.returncode == 1 and "cannot read the agent's API token" in done.stderr


def test_gossip_dashboard_prints_a_one_time_login_link(agents: Agents) -> None:
    done = run("dashboard", "--agent", addr_of(agents.a_url))
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith(agents.a_url + "/?login=") and token_of(agents.a_url) not in link

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as first:
        opener.open(link, timeout=scaled(5.0))
    assert first.value.code == 303
    cookie = first.value.headers["Set-Cookie"].split(";")[0]
    page = urllib.request.Request(agents.a_url + "/", headers={"Cookie": cookie})
    with urllib.request.urlopen(page, timeout=scaled(5.0)) as r:
        assert b"dash/dashboard.js" in r.read()
    with pytest.raises(urllib.error.HTTPError) as again:
        opener.open(link, timeout=scaled(5.0))
    assert again.value.code == 401


# -------------------------------------------------------------------------------- errors of the API


def test_a_reliable_send_to_an_unreachable_node_is_one_clear_line(agents: Agents) -> None:
    gone = Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=bytes.fromhex(agents.key.decode()),
                                cluster_label=LABEL))
    gone.start()
    try:
        assert gone.join(agents.a_addr, timeout=scaled(5.0)) == 1
        gone_id = str(gone.local_node().id)
        wait_until(lambda: any(m["id"] == gone_id for m in get_json(agents.a_url + "/api/members")["members"]),
                   10.0, "A to know the node")
    finally:
        gone._crash()                          # its sockets close: connections are refused
    done = run("send", "--agent", addr_of(agents.a_url), "--to", gone_id[-8:], "--reliable", "lost")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: the agent at ")
    assert "failed" in done.stderr or "refused" in done.stderr
    assert any(w in done.stderr.lower() for w in ("connect", "refused", "no known node", "dead"))
    time.sleep(0.2)
    assert not any("Traceback" in line or "bug:" in line for line in agents.a.err), agents.a.err[-5:]


# -------------------------------------------------------------------------------- small things


def test_verbose_is_accepted_after_the_subcommand_too() -> None:
    done = run("members", "-v", "--agent", f"127.0.0.1:{closed_port()}")
    assert done.returncode == 1 and "cannot reach the agent" in done.stderr, done.stderr
    done = run("agent", "-vv", "--bind", "300.1.1.1:0")
    assert done.returncode == 1 and "bind_addr" in done.stderr, done.stderr
    done = run("-v", "keygen", "-v")
    assert done.returncode == 0 and "hex:" in done.stdout


def test_an_agent_beyond_loopback_without_a_key_refuses_and_says_what_to_do() -> None:
    done = run("agent", "--bind", "0.0.0.0:0")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "gossip keygen" in done.stderr and "--key-file" in done.stderr and "--insecure" in done.stderr
    assert "listening" not in done.stdout


def test_send_help_sends_only_types_an_agent_receives() -> None:
    helptext = run("send", "--help").stdout
    for t in re.findall(r"--type (\d+)", helptext):
        assert int(t) == 128 or f"--receive {t}" in helptext, t
    done = run("send", "--type", "65", "x")
    assert done.returncode == 2 and "reserved" in done.stderr


# -------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_ends_an_agent_joining_a_seed_that_never_answers() -> None:
    with loopback_blackhole() as silent:
        agent = Proc("agent", "--preset", "local", "--bind", "127.0.0.1:0", "--join", silent,
                     GOSSIP_JOIN_TIMEOUT="120s")
        try:
            agent.wait_line(r"joining ")
            time.sleep(0.3)                      # well inside the join's 120 s
            agent.interrupt()
            agent.p.wait(scaled(20.0))
        finally:
            agent.stop()
    assert agent.p.returncode == 0, agent.err[-5:]
    assert any("leaving..." in line for line in agent.lines)
    assert not any("retrying while alone" in line for line in agent.err + agent.lines)
    wait_until(agent.group_gone, 10.0, "no process of the agent left")


def test_ctrl_c_ends_tune_and_its_workers() -> None:
    tune = Proc("tune", "--nodes", "1000", "--jobs", "2", "--seed", "3")
    try:
        wait_until(lambda: any("simulating" in line for line in tune.err), 30.0, "tune to start its workers")
        time.sleep(1.0)                          # the workers are simulating (the whole run: minutes)
        tune.interrupt()
        tune.p.wait(scaled(20.0))
    finally:
        if tune.p.poll() is None:
            os.killpg(tune.p.pid, signal.SIGKILL)
        tune.stop()
    assert tune.p.returncode == 130, tune.err[-5:]
    assert not any("Traceback" in line for line in tune.err), tune.err[-10:]
    wait_until(tune.group_gone, 10.0, "no worker process left")


@pytest.mark.parametrize("args, ready", [
    (("demo", "--nodes", "4"), r"starting 4 nodes"),
    (("watch", "--timeout", "60s"), None),
    (("members", "--watch", "--interval", "1s"), None),
])
def test_ctrl_c_ends_every_other_command(agents: Agents, args: tuple[str, ...], ready: str | None) -> None:
    extra = ("--agent", addr_of(agents.a_url)) if args[0] in ("watch", "members") else ()
    proc = Proc(*args, *extra)
    try:
        if ready is None:
            wait_until(lambda: len(proc.lines) > 0, 15.0, f"{args[0]} to print")
        else:
            proc.wait_line(ready)
        proc.interrupt()
        proc.p.wait(scaled(20.0))
    finally:
        proc.stop()
    assert proc.p.returncode in (0, 130), (proc.p.returncode, proc.err[-5:])
    assert not any("Traceback" in line for line in proc.err), proc.err[-10:]
    wait_until(proc.group_gone, 10.0, "no process left")
