"""The command line's import paths: the console script's entry point, ``python -m gossip``, and
the modules' former paths (``gossip.agent``, ``gossip.demo``, ``gossip.tune``)."""

from __future__ import annotations

import configparser
import importlib
import pathlib
import subprocess
import sys

import pytest

import gossip.cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_console_script_names_an_entry_point_that_exists() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].split("\n") if line)
    module, _, name = scripts["gossip"].partition(":")
    assert getattr(importlib.import_module(module), name) is gossip.cli.main_exit


def test_python_dash_m_gossip_runs_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "gossip", "--version"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.startswith("gossip ")


@pytest.mark.parametrize("former, module", [("gossip.agent", "gossip.cli.agent"),
                                            ("gossip.demo", "gossip.cli.demo"),
                                            ("gossip.tune", "gossip.cli.tune")])
def test_a_former_path_names_the_same_objects(former: str, module: str) -> None:
    old, new = importlib.import_module(former), importlib.import_module(module)
    assert old.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name
