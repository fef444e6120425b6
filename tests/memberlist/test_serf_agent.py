"""A node on memberlist's wire as a Serf member, against a real Serf agent on loopback: it
joins, ``serf members`` shows it alive with its tags, user events pass both ways, and Serf
tells a graceful leave (``left``) from a crash (``failed``); the agent's own crash and leave
are seen by our node. Skipped when Debian's serf is missing (.ci/install-go-tools installs it)."""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from gossip import Cluster
from gossip.config import Config
from gossip.memberlist.identity import name_to_id
from gossip.node import NodeState

from .gonode import free_port, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("serf") is None,
                                 reason="serf is not installed (.ci/install-go-tools installs it)")]

KEY = bytes(range(16))


class Agent:
    def __init__(self, key: bytes | None = None, events_to: str = "") -> None:
        self.bind = free_port()
        self.rpc = f"127.0.0.1:{free_port()}"
        args = ["serf", "agent", "-node", "go1", "-bind", f"127.0.0.1:{self.bind}", "-rpc-addr",
                self.rpc, "-tag", "role=agent"]
        if key:
            args += ["-encrypt", base64.b64encode(key).decode()]
        if events_to:  # the agent runs this for each user event named from-py (payload on stdin)
            args += ["-event-handler", f"user:from-py=cat >> {events_to}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(self.up, 10), "the Serf agent did not start"

    def up(self) -> bool:
        try:
            return "go1" in self.members()
        except (ValueError, KeyError):
            return False

    def serf(self, *args: str) -> str:
        return subprocess.run(["serf", args[0], f"-rpc-addr={self.rpc}", *args[1:]], capture_output=True,
                              text=True, timeout=10).stdout

    def members(self) -> dict[str, tuple[str, dict[str, str]]]:
        out = json.loads(self.serf("members", "-format=json"))
        return {m["name"]: (m["status"], m["tags"]) for m in out["members"]}

    def status(self, name: str) -> str:
        try:
            return self.members().get(name, ("", {}))[0]
        except (ValueError, KeyError):
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def made() -> Iterator[list[object]]:
    out: list[object] = []
    yield out
    for x in out:
        if isinstance(x, Agent):
            x.kill()
        else:
            assert isinstance(x, Cluster)
            x.stop(leave=False)


def serf_node(key: bytes | None = None) -> Cluster:
    c = Cluster(Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name="py1", serf=True,
                       health_check_interval=0.3, ping_timeout=0.15, encryption_key=key))
    c.local_metadata().set_string("role", "python")
    return c


def state(c: Cluster) -> NodeState | None:
    n = c.get_node(name_to_id("go1"))
    return n.state if n is not None else None


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_serf_sees_us_alive_with_tags_events_pass_and_a_leave_is_left(
        key: bytes | None, made: list[object], tmp_path: pathlib.Path) -> None:
    sink = tmp_path / "events"
    agent = Agent(key, str(sink))
    made.append(agent)
    py = serf_node(key)
    made.append(py)
    events: list[tuple[str, bytes]] = []
    py.handle_serf_event_func(lambda name, payload: events.append((name, payload)))
    py.start()
    py.join([f"127.0.0.1:{agent.bind}"])
    assert wait_for(lambda: agent.members().get("py1") == ("alive", {"role": "python"}), 10), agent.members()
    go1 = py.get_node(name_to_id("go1"))
    assert go1 is not None and go1.name == "go1" and go1.state is NodeState.ALIVE
    assert go1.metadata.get_string("role") == "agent"
    assert [n.name for n in py.alive_nodes()] == ["py1", "go1"]
    agent.serf("event", "deploy", "v1")
    assert wait_for(lambda: events == [("deploy", b"v1")], 10), events
    py.serf_event("from-py", b"hello")
    assert wait_for(lambda: sink.exists() and sink.read_bytes().strip() == b"hello", 10), sink.exists() and sink.read_bytes()
    py.leave()
    assert wait_for(lambda: agent.status("py1") == "left", 10), agent.members()


def test_serf_marks_our_crash_failed_and_we_see_its_crash(made: list[object]) -> None:
    agent = Agent()
    made.append(agent)
    py = serf_node()
    made.append(py)
    py.start()
    py.join([f"127.0.0.1:{agent.bind}"])
    assert wait_for(lambda: agent.status("py1") == "alive", 10)
    # memberlist's own bound (LAN: 1 s probes, suspicion 4 x 1 s for two members) and some room
    py.stop(leave=False)
    assert wait_for(lambda: agent.status("py1") == "failed", 15), agent.members()
    py2 = Cluster(Config(bind_addr="127.0.0.1:0", wire_protocol="memberlist", name="py2", serf=True,
                         health_check_interval=0.3, ping_timeout=0.15))
    made.append(py2)
    py2.start()
    py2.join([f"127.0.0.1:{agent.bind}"])
    assert wait_for(lambda: state(py2) is NodeState.ALIVE, 10)
    agent.kill()
    assert wait_for(lambda: state(py2) is NodeState.DEAD, 15), state(py2)


def test_serf_leave_is_left_in_ours(made: list[object]) -> None:
    agent = Agent()
    made.append(agent)
    py = serf_node()
    made.append(py)
    py.start()
    py.join([f"127.0.0.1:{agent.bind}"])
    assert wait_for(lambda: state(py) is NodeState.ALIVE and agent.status("py1") == "alive", 10)
    agent.serf("leave")
    assert wait_for(lambda: state(py) is NodeState.LEFT, 10), state(py)
