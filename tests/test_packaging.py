"""What the distribution declares is true: the Python versions it installs on, its license, its
version, and a type checker's view of it after the README's editable install."""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import gossip

ROOT = Path(__file__).resolve().parent.parent


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def declared_minimum() -> Version:
    spec = setup_cfg()["options"]["python_requires"].strip()
    m = re.fullmatch(r">=\s*(3\.\d+)", spec)
    assert m, f"python_requires should be a plain lower bound, got {spec!r}"
    return Version(m.group(1))


def test_every_dependency_installs_on_the_declared_minimum_python() -> None:
    lowest = declared_minimum()
    requirements = [r for r in setup_cfg()["options"]["install_requires"].split("\n") if r.strip()]
    refused = []
    for req in requirements:
        name = re.split(r"[<>=!~;\s\[]", req.strip(), maxsplit=1)[0]
        requires = importlib.metadata.metadata(name).get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(lowest):
            refused.append(f"{name} needs Python {requires}")
    assert not refused, f"python_requires says >={lowest}, but: {refused}"


def test_the_suite_runs_on_a_declared_version() -> None:
    here = Version(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert here >= declared_minimum()


def test_classifiers_and_mypy_name_no_version_below_the_minimum() -> None:
    lowest = declared_minimum()
    classifiers = setup_cfg()["metadata"]["classifiers"]
    versions = [Version(v) for v in re.findall(r"Python :: (3\.\d+)", classifiers)]
    assert versions and min(versions) == lowest, versions
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["python_version"]
    assert Version(mypy) == lowest


def test_the_license_file_is_the_declared_mit_license() -> None:
    assert setup_cfg()["metadata"]["license"].strip() == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_version_of_the_package_and_the_command() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", gossip.__version__)
    assert importlib.metadata.version("gossip-cluster") == gossip.__version__
    done = subprocess.run([sys.executable, "-m", "gossip", "--version"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith(f"gossip {gossip.__version__} "), done


USER_FILE = '''\
import gossip
from gossip import Node, NodeState, Packet


def on_message(sender: Node, packet: Packet) -> None:
    if sender.state is not NodeState.UNKNOWN:
        print(sender.id.short, sender.address, packet.unmarshal())


def on_request(sender: Node, packet: Packet) -> dict[str, str]:
    return {"to": sender.id.short}


def main() -> None:
    with gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0")) as cluster:
        cluster.handle_func(gossip.USER_MSG, on_message)
        cluster.handle_func_with_reply(gossip.USER_MSG + 1, on_request)
        cluster.handle_stream_func(gossip.USER_MSG + 2, lambda sender, packet, stream: print(sender.id))
'''


def test_a_user_program_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    """mypy, run from outside the checkout, finds ``gossip`` where pip installed it (the
    README's ``pip install -e``) and accepts handlers whose sender is a plain ``Node``."""
    pytest.importorskip("mypy", reason="mypy is in the test extra; install it with .[test]")
    (tmp_path / "app.py").write_text(textwrap.dedent(USER_FILE))
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "app.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pytest_q_ends_with_its_summary_line() -> None:
    """The project's pytest settings add no ``-q`` of their own: ``pytest -q`` shows the count."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_packaging.py::test_the_suite_runs_on_a_declared_version"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^1 passed", done.stdout, re.M), done.stdout
