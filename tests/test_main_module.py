"""``python -m gossip``: the module runs the command line only when run as the main module."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_importing_the_main_module_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    sys.modules.pop("gossip.__main__", None)
    module = importlib.import_module("gossip.__main__")
    assert callable(module.main)
    assert capsys.readouterr() == ("", "")

