"""``gossip keys rotate`` against an agent's API (served on loopback over in-memory clusters),
and the API's ``/api/keys/rotate`` route: progress on stderr, the report, clear refusals, and
the key never in any answer or output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from gossip import Cluster, Config
from gossip.cli import main
from gossip.httpapi import HttpServer, app
from gossip.testing import wait_until
from gossip.transports.memory import MemoryNetwork

TOKEN = "t0k3n-" + "k" * 30
OLD = bytes(range(32))
NEW = bytes(range(50, 82))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[list[Cluster], list[str], Path]]:
    net = MemoryNetwork(seed=5)
    clusters = [Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD))
                for _ in range(3)]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    api = app(clusters[0], token=TOKEN, keepalive=0.05)
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close)
    try:
        for c in clusters:
            c.start()
        for c in clusters[1:]:
            c.join(clusters[0].address, timeout=5.0)
        wait_until(lambda: all(c.num_alive_nodes() == 3 for c in clusters), what="three alive")
        server.start()
        yield clusters, ["--agent", server.address, "--token-file", str(token_file)], tmp_path
    finally:
        server.stop()
        for c in clusters:
            c.stop(timeout=2.0)


def key_file(tmp: Path, text: str) -> str:
    path = tmp / "new.key"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def test_keys_rotate_shows_progress_and_the_report(agent: tuple[list[Cluster], list[str], Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    clusters, flags, tmp = agent
    path = key_file(tmp, NEW.hex())
    assert main(["keys", "rotate", *flags, "--key-file", path, "--drain", "0.05"]) == 0
    out, err = capsys.readouterr()
    assert "install  [####################] 3/3" in err
    assert "remove   [####################] 3/3" in err
    assert "rotation complete" in out and out.count(" yes ") >= 6
    for text in (out, err):
        assert NEW.hex() not in text and OLD.hex() not in text
    for c in clusters:
        assert c.keyring is not None and c.keyring.keys == (NEW,)
    # again with the same key: nothing left to do, still complete (resumable), as JSON
    assert main(["keys", "rotate", *flags, "--key-file", path, "--drain", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and len(report["members"]) == 3


def test_keys_rotate_refusals_are_one_line(agent: tuple[list[Cluster], list[str], Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    clusters, flags, tmp = agent
    short = bytes(range(16)).hex()
    assert main(["keys", "rotate", *flags, "--key-file", key_file(tmp, "nothex!")]) == 1
    assert "not hex or base64" in capsys.readouterr().err
    assert clusters[0]._rotation is not None
    with clusters[0]._rotation.running:     # another rotation is under way on the agent
        assert main(["keys", "rotate", *flags, "--key-file", key_file(tmp, short)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already running" in err and short not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["keys"]) == 2
    assert "give an action" in capsys.readouterr().err
    assert clusters[0].keyring is not None and clusters[0].keyring.keys == (OLD,)


def call(application: Any, body: bytes) -> tuple[str, bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/keys/rotate",
                               "HTTP_HOST": "127.0.0.1:7980", "CONTENT_LENGTH": str(len(body)),
                               "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(body),
                               "HTTP_AUTHORIZATION": "Bearer " + TOKEN}
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"] = status
        return lambda data: None

    result = b"".join(application(environ, start_response))
    return got["status"], result


@pytest.mark.parametrize("body, words", [
    ({}, "the body must be"),
    ({"key": NEW.hex(), "extra": 1}, "unknown field"),
    ({"key": "zz"}, "must be hex"),
    ({"key": NEW.hex(), "timeout": "soon"}, "timeout must be a number"),
    ({"key": NEW.hex(), "force": "yes"}, "force must be true or false"),
    ({"key": "ab" * 20}, "20 bytes"),
    ({"key": NEW.hex(), "timeout": -1}, "timeout must be > 0"),
])
def test_the_api_refuses_bad_requests(body: dict[str, Any], words: str) -> None:
    net = MemoryNetwork(seed=6)
    with Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD)) as c:
        api = app(c, token=TOKEN)
        status, raw = call(api, json.dumps(body).encode())
        assert status == "400 Bad Request"
        assert words in json.loads(raw)["error"] and "ab" * 20 not in raw.decode()
        assert c.keyring is not None and c.keyring.keys == (OLD,)
        api.close()


def test_the_api_refuses_an_unencrypted_cluster_and_streams_errors() -> None:
    net = MemoryNetwork(seed=8)
    with Cluster(Config.local(transport=net.new_transport())) as plain:
        api = app(plain, token=TOKEN)
        status, raw = call(api, json.dumps({"key": NEW.hex()}).encode())
        assert status == "400 Bad Request" and "not encrypted" in json.loads(raw)["error"]
        api.close()
    keyed = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD))
    with keyed:
        api = app(keyed, token=TOKEN, keepalive=0.01)
        assert keyed._rotation is not None
        with keyed._rotation.running:          # a rotation already running on this node
            status, raw = call(api, json.dumps({"key": NEW.hex()}).encode())
        assert status == "200 OK"
        lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
        assert lines[-1]["kind"] == "LocalProtocolError" and "already running" in lines[-1]["error"]
        api.close()


def test_the_table_of_an_unfinished_rotation_names_who_was_down() -> None:
    from gossip.cli.client import _rotation_table

    text = _rotation_table({"complete": False, "down": ["01a2504c-1dc0-7064-a79f-94e63d48fdc3"],
                            "members": [{"node": "01a2504c-1dc0-7064-a79f-0000deadbeef",
                                         "address": "127.0.0.1:7946", "installed": True,
                                         "switched": True, "removed": False, "error": ""}]})
    assert "down (not asked): 3d48fdc3" in text and "the old key is kept" in text
    assert "deadbeef" in text and "NOT complete" in text
