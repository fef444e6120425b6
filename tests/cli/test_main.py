"""The command line's parser and dispatch (:func:`gossip.cli.main`), in process: bad option
values are refused by argparse naming the problem, and ``gossip tune`` prints its progress and
its figures as asked (the simulations themselves are tested in tests/cli/test_tune.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gossip.cli import main, tune


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["tune", "--loss", "150%"], "must be at least 0 and below 100%"),
    (["tune", "--loss", "-0.1"], "must be at least 0 and below 100%"),
    (["tune", "--loss", "some"], "is not a share"),
    (["tune", "--nodes", "0"], "must be at least 1, got 0"),
    (["tune", "--nodes", "many"], "is not an integer"),
    (["send", "hi", "--type", "5"], "message type 5 is not a user type"),
    (["send", "hi", "--type", "0x10000"], "message type 65536 is not a user type"),
    (["send", "hi", "--type", "big"], "is not a message type number"),
    (["members", "--interval", "soon"], "--interval"),
])
def test_bad_option_values_are_refused_naming_the_problem(
        capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


class FakeResult:
    def to_json(self) -> dict[str, Any]:
        return {"recommended": "calm"}


@pytest.fixture
def fake_tune(monkeypatch: pytest.MonkeyPatch) -> list[tune.TuneParams]:
    seen: list[tune.TuneParams] = []

    def run_tune(params: tune.TuneParams, progress: Any = None) -> FakeResult:
        seen.append(params)
        if progress is not None:
            progress(1, 2, "first candidate")
        return FakeResult()

    monkeypatch.setattr(tune, "run_tune", run_tune)
    return seen


def test_tune_quiet_prints_only_its_json(fake_tune: list[tune.TuneParams],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--nodes", "20", "--loss", "2%", "--starve", "10%:2s", "--quiet",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"recommended": "calm"} and err == ""
    (params,) = fake_tune
    assert (params.nodes, params.loss, params.starve_nodes, params.starve_delay) == (20, 0.02, 2, 2.0)


def test_tune_reports_its_progress_on_stderr(fake_tune: list[tune.TuneParams],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--nodes", "20", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "simulating" in err and "[ 1/2]" in err and "first candidate" in err
    assert json.loads(out) == {"recommended": "calm"}


def test_tune_refuses_a_malformed_starve_and_out_of_range_params(
        fake_tune: list[tune.TuneParams], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--starve", "a:b", "--quiet"]) == 1
    assert "error: --starve 'a:b'" in capsys.readouterr().err
    assert main(["tune", "--nodes", "4", "--quiet"]) == 1
    assert "error: --nodes must be 5..20000, got 4" in capsys.readouterr().err
    assert fake_tune == []                              # nothing simulated


def test_ctrl_c_inside_generated_code_still_exits_130(tmp_path: Any) -> None:
    """A Ctrl-C that lands while a module is being imported (dataclasses run ``exec()`` on a
    string to build their methods) made CPython end the process by SIGINT (-2) after ``main``
    had caught it and returned 130. The command line raises its own subclass, which CPython
    does not mark; here the signal is sent from inside an ``exec()`` so that it lands there.
    Run with ``-m``, as ``python -m gossip`` is: ``-c`` exits by another path that hides it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import gossip.cli.demo as demo\n"
        "def fake(*args, **kw):\n"
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**6): pass')\n"
        "    return 0\n"
        "demo.run_demo = fake\n"
        "from gossip.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    (tmp_path / "ctrl_c_probe.py").write_text(script)
    proc = subprocess.run([sys.executable, "-m", "ctrl_c_probe"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])


def test_main_restores_the_sigint_handler_it_found() -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)
    assert main(["keygen"]) == 0
    assert signal.getsignal(signal.SIGINT) is before
