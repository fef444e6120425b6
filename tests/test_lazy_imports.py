"""What a node loads: modules it does not use stay unloaded until first use.

Memory per node is a goal of the library (``bench/cluster_bench.py`` measures it); these tests
pin the imports that keep it low, each in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

UNUSED_BY_A_PLAIN_NODE = [
    "gossip.stream", "gossip.streams", "gossip.engine.stream_pool", "gossip.groups", "gossip.codecs.json", "urllib.parse",
    "gossip.transports.websocket", "gossip.leader", "gossip.httpapi", "gossip.metrics",
    "websockets", "ssl", "hashlib", "lz4.block", "orjson", "encodings.idna", "base64",
    "gossip.placement", "gossip.locks", "gossip.replicated",
    # optional dependencies: only with the feature that needs them
    "cryptography", "lz4", "cramjam", "orjson", "dns", "zlib",
    # faces a plain node does not use: asyncio, the agent, the CLI, the simulator, interop
    "asyncio", "gossip.aio", "gossip.agent", "gossip.cli", "gossip.dashboard", "gossip.sim",
    "gossip.memberlist", "gossip.contrib", "gossip.tune", "gossip.demo", "gossip.testing",
    "json", "argparse", "http", "email", "ssl", "subprocess", "tempfile", "unittest",
]


def _run(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_started_node_that_joins_by_tcp_loads_none_of_the_optional_modules() -> None:
    got = _run(f"""
        import json, sys
        already = set(sys.modules)  # e.g. an editable install's finder loads urllib.parse
        import gossip
        a = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
        b = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
        a.start(); b.start()
        joined = b.join(a.address, timeout=5.0)
        a.stop(); b.stop()
        print(json.dumps({{"joined": joined,
                          "loaded": [m for m in {UNUSED_BY_A_PLAIN_NODE!r}
                                     if m in sys.modules and m not in already]}}))
    """)
    assert got["joined"] == 1
    assert got["loaded"] == []


def test_cryptography_comes_with_an_encryption_key_and_nothing_else_does() -> None:
    """A node with a key loads cryptography (what seals its packets), and still none of the
    other optional modules."""
    got = _run(f"""
        import json, sys
        already = set(sys.modules)
        import gossip
        key = bytes(range(32))
        a = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0", encryption_key=key))
        b = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0", encryption_key=key))
        a.start(); b.start()
        joined = b.join(a.address, timeout=5.0)
        a.stop(); b.stop()
        print(json.dumps({{"joined": joined, "cryptography": "cryptography" in sys.modules,
                          "loaded": [m for m in {UNUSED_BY_A_PLAIN_NODE!r}
                                     if m in sys.modules and m not in already]}}))
    """)
    assert got["joined"] == 1
    assert got["cryptography"] is True
    assert got["loaded"] == ["cryptography"]


def test_the_lazy_names_load_on_first_use_and_work() -> None:
    got = _run("""
        import json, sys
        import gossip
        from gossip.codecs import get_codec
        before = "gossip.streams" in sys.modules or "gossip.groups" in sys.modules
        names = [gossip.Stream.__name__, gossip.NodeGroup.__name__, gossip.DataNodeGroup.__name__]
        codec = get_codec(2)
        value = codec.decode(codec.encode({"k": [1, 2]}))
        print(json.dumps({"before": before, "names": names, "codec": codec.name,
                          "value": value, "in_dir": "Stream" in dir(gossip)}))
    """)
    assert got["before"] is False
    assert got["names"] == ["Stream", "NodeGroup", "DataNodeGroup"]
    assert got["codec"] == "json" and got["value"] == {"k": [1, 2]}
    assert got["in_dir"] is True


def test_documented_modules_are_attributes_after_a_bare_import() -> None:
    got = _run("""
        import json, sys
        import gossip
        before = [m for m in ("gossip.httpapi", "gossip.dashboard", "gossip.metrics") if m in sys.modules]
        names = [gossip.httpapi.app.__name__, gossip.dashboard.app.__name__,
                 gossip.metrics.register.__name__, gossip.leader.LeaderElection.__name__,
                 gossip.testing.wait_until.__name__]
        print(json.dumps({"before": before, "names": names,
                          "in_dir": all(m in dir(gossip) for m in ("httpapi", "dashboard"))}))
    """)
    assert got["before"] == []
    assert got["names"] == ["app", "app", "register", "LeaderElection", "wait_until"]
    assert got["in_dir"] is True


DEFERRED_STDLIB = ["inspect", "ast", "dis"]
"""What :mod:`dataclasses` imports at its top and uses only for a class without a docstring
(``gossip._lazy.import_dataclasses``): on Python 3.11 a plain node never loads them."""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="dataclasses uses inspect for every class")
def test_a_started_node_does_not_load_inspect_and_dataclasses_still_uses_it_when_needed() -> None:
    got = _run(f"""
        import json, sys
        already = set(sys.modules)
        import gossip
        a = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
        b = gossip.Cluster(gossip.Config.local(bind_addr="127.0.0.1:0"))
        a.start(); b.start()
        joined = b.join(a.address, timeout=5.0)
        a.stop(); b.stop()
        loaded = [m for m in {DEFERRED_STDLIB!r} if m in sys.modules and m not in already]
        import dataclasses

        @dataclasses.dataclass
        class Point:
            x: int
            y: str = "a"

        import inspect
        print(json.dumps({{"joined": joined, "loaded": loaded, "doc": Point.__doc__,
                          "real": inspect is sys.modules["inspect"] and hasattr(inspect, "getsource"),
                          "same": dataclasses.inspect is inspect}}))
    """)
    assert got["joined"] == 1
    assert got["loaded"] == []
    assert got["doc"] == "Point(x: int, y: str = 'a')"   # what dataclasses writes with inspect
    assert got["real"] is True and got["same"] is True


def test_a_program_that_imported_inspect_first_keeps_its_module() -> None:
    got = _run("""
        import inspect, json, sys
        mine = inspect
        import gossip, dataclasses
        print(json.dumps({"same": sys.modules["inspect"] is mine and dataclasses.inspect is mine}))
    """)
    assert got["same"] is True


@pytest.fixture
def fresh_stdlib() -> Iterator[None]:
    """Take ``dataclasses`` and ``inspect`` out of ``sys.modules`` for the test, and put the
    originals back after it (every other module keeps the objects it imported)."""
    saved = {m: sys.modules.pop(m) for m in ("dataclasses", "inspect")}
    try:
        yield
    finally:
        sys.modules.update(saved)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="dataclasses uses inspect for every class")
def test_dataclasses_imported_in_process_gets_the_stand_in_then_the_real_inspect(
        fresh_stdlib: None) -> None:
    from gossip._lazy import import_dataclasses

    import_dataclasses()
    dataclasses = sys.modules["dataclasses"]
    assert "inspect" not in sys.modules            # the stand-in left with the import
    stand_in = dataclasses.inspect
    assert stand_in.__doc__.startswith("Stands in for inspect")
    assert callable(stand_in.signature)            # the first use imports the real one...
    real = sys.modules["inspect"]
    assert dataclasses.inspect is real and real is not stand_in   # ...and hands it over
    import_dataclasses()                           # both imported now: nothing changes
    assert sys.modules["dataclasses"] is dataclasses and sys.modules["inspect"] is real


def test_the_stand_in_asked_while_still_in_sys_modules_makes_way_for_the_real_one(
        fresh_stdlib: None) -> None:
    from gossip._lazy import inspect_stand_in

    stand_in = inspect_stand_in()
    sys.modules["inspect"] = stand_in              # as while dataclasses is imported
    assert callable(stand_in.getsource)            # no loop back into the stand-in
    assert sys.modules["inspect"] is not stand_in
    assert hasattr(sys.modules["inspect"], "getsource")
