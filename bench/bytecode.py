"""Node processes of the benchmarks run from compiled bytecode, as an installed package does.

pip compiles a package's modules when it installs them; a checkout does not, and with
``PYTHONDONTWRITEBYTECODE`` set (or a read-only tree) every process compiles every module it
imports from source, which leaves about 3 MiB more of heap behind in each node (the compiler's
garbage, measured with ``bench/idle_bench.py --no-bytecode``). :func:`cached_env` gives the
environment of node processes that load bytecode compiled beforehand into a cache prefix
(``PYTHONPYCACHEPREFIX``), so that the checkout is left untouched. A cache prefix holds the
bytecode of every module, the standard library's too, so the preparation also runs a warm-up:
two nodes in one process, one joining the other over 127.0.0.1, which writes the bytecode of
every module a node loads. :func:`source_env` is the other case: the library compiled from
source in every process, everything else from bytecode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WARM_UP = textwrap.dedent("""
    import json, logging, signal
    import gossip
    a = gossip.Cluster(gossip.Config.lan(bind_addr="127.0.0.1:0"))
    b = gossip.Cluster(gossip.Config.lan(bind_addr="127.0.0.1:0"))
    a.start(); b.start()
    assert b.join(a.address, timeout=10.0) == 1
    b.stop(); a.stop()
""")


def node_env(prefix: str, *, bytecode: bool = True) -> dict[str, str]:
    """The environment of a node process: this checkout first on the path, and bytecode read
    from (and written to) ``prefix``; with ``bytecode=False``, never written, so an empty
    ``prefix`` makes every module compile from source."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONPYCACHEPREFIX"] = prefix
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def source_env(prefix: str) -> dict[str, str]:
    """The environment of a node that compiles this library from source, as a checkout
    without ``__pycache__`` does, while every other module (the standard library, msgpack)
    loads its bytecode: :func:`cached_env`, then the library's bytecode removed from
    ``prefix`` and none written."""
    cached_env(prefix)
    shutil.rmtree(os.path.join(prefix, str(ROOT).lstrip(os.sep)), ignore_errors=True)
    return node_env(prefix, bytecode=False)


def cached_env(prefix: str) -> dict[str, str]:
    """Compile the library into ``prefix``, run the warm-up, and return :func:`node_env`."""
    env = node_env(prefix)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "gossip")],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", WARM_UP], env=env, check=True, timeout=120)
    return env
