"""The building blocks above the Cluster use only its public API (DESIGN.md, "Above the Cluster"),
and the election logic is a pure state machine."""

from __future__ import annotations

import pathlib

import pytest

from test_layers import ROOT, violations

INTERNALS = {"gossip.engine", "gossip.protocol", "gossip.workers", "gossip.security"}
ABOVE = [ROOT / "groups.py", ROOT / "testing.py", *sorted((ROOT / "leader").glob("*.py")),
         *sorted((ROOT / "dashboard").glob("*.py")), ROOT / "placement.py", *sorted((ROOT / "replicated").glob("*.py")),
         *sorted((ROOT / "locks").glob("*.py"))]

# The coordination blocks' logic: pure state machines the simulator drives (time and chance
# passed in; no threads, sockets or clocks; never the host or the cluster).
PURE_ABOVE = [*(ROOT / "locks" / name for name in ("messages.py", "base.py", "grantor.py", "requester.py", "core.py")),
              ROOT / "replicated" / "core.py"]


@pytest.mark.parametrize("path", ABOVE, ids=str)
def test_above_the_cluster_never_reaches_into_the_engine(path: pathlib.Path) -> None:
    allowed_transport = {"gossip.transports.memory"} if path.name == "testing.py" else set()
    found = violations(path, INTERNALS | {"gossip.transports"})
    assert [n for n in found if n not in allowed_transport] == []


def test_election_logic_is_pure() -> None:
    path = ROOT / "leader" / "election.py"
    assert violations(path, {"threading", "time", "socket", "select", "selectors", "asyncio", "random",
                             "gossip.cluster", "gossip.engine", "gossip.transports", "gossip.leader.host"}) == []
    src = path.read_text()
    for call in ("time.", "random.", "Thread("):
        assert call not in src


@pytest.mark.parametrize("path", PURE_ABOVE, ids=str)
def test_coordination_logic_is_pure(path: pathlib.Path) -> None:
    assert violations(path, {"threading", "time", "socket", "select", "selectors", "asyncio",
                             "gossip.cluster", "gossip.engine", "gossip.transports", "gossip.locks.service",
                             "gossip.replicated.host", "gossip.leader.host"}) == []
    src = path.read_text()
    # a seeded random.Random may be passed in; the module's functions are never called
    for call in ("time.", "Thread(", "random.random(", "random.choice(", "random.shuffle(", "random.randint(",
                 "random.sample(", "random.randrange(", "random.uniform(", "uuid4(", "os.urandom("):
        assert call not in src, f"{path.name} calls {call}"
