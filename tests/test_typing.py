"""``py.typed`` is true: the package passes ``mypy --strict`` (configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_package_passes_mypy_strict(tmp_path: object) -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra; install it with .[test]")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.path.join(ROOT, ".mypy_cache"),
         "gossip"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
