"""The demo's driver without its sockets: refusals, quiet output, its deadline, its failure
path (``gossip demo`` runs it whole in tests/integration)."""

from __future__ import annotations

import io
import time

import pytest

from gossip.cli import demo
from gossip.cli.demo import DemoFailed, run_demo
from gossip.errors import JoinError


def test_fewer_than_three_nodes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert run_demo(nodes=2, out=out) == 2
    assert "at least 3 nodes" in capsys.readouterr().err and out.getvalue() == ""


def test_quiet_prints_only_the_main_steps_and_no_table() -> None:
    out = io.StringIO()
    d = demo._Demo(3, 1, True, time.monotonic() + 60.0, out)
    d.say("a detail")
    d.table(None)  # type: ignore[arg-type]  # never looked at when quiet
    d.say("a main step", always=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("a main step")


def test_a_wait_past_the_demos_deadline_fails_naming_what_it_waited_for() -> None:
    d = demo._Demo(3, 1, True, time.monotonic() - 1.0, io.StringIO())
    d.wait("nothing to wait for", lambda: True, 10.0)       # already true: no wait at all
    with pytest.raises(DemoFailed, match="timed out waiting until the moon is blue"):
        d.wait("the moon is blue", lambda: False, 10.0)


@pytest.mark.parametrize("error", [DemoFailed("timed out waiting until x"), JoinError({"127.0.0.1:1": "refused"})])
def test_a_failed_run_exits_1_and_still_stops_the_nodes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    stopped: list[bool] = []

    def fail(self: demo._Demo) -> None:
        raise error

    monkeypatch.setattr(demo._Demo, "run", fail)
    monkeypatch.setattr(demo._Demo, "stop", lambda self: stopped.append(True))
    out = io.StringIO()
    assert run_demo(nodes=3, out=out) == 1
    assert f"demo failed: {error}" in capsys.readouterr().err
    assert stopped == [True] and "demo finished" not in out.getvalue()
