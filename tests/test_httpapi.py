"""The HTTP API as a WSGI application over in-memory clusters (called directly, no sockets),
and its threaded server once on loopback."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from gossip import Cluster, Config
from gossip.errors import AddressError, TransportError
from gossip.httpapi import ApiApp, HttpServer, app, parse_listen_addr
from gossip.transports.memory import MemoryNetwork


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def pair() -> Iterator[list[Cluster]]:
    net = MemoryNetwork(seed=7)
    clusters = [Cluster(Config.local(transport=net.new_transport())) for _ in range(2)]
    try:
        for c in clusters:
            c.start()
        assert clusters[1].join(clusters[0].address, timeout=5.0) == 1
        wait_for(lambda: all(c.num_alive_nodes() == 2 for c in clusters), what="two alive")
        yield clusters
    finally:
        for c in clusters:
            c.stop(timeout=2.0)


def call(application: Any, method: str, path: str, body: bytes | None = None,
         query: str = "") -> tuple[str, dict[str, str], Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, dict(headers)
        return lambda data: None

    result = application(environ, start_response)
    return got["status"], got["headers"], result


def json_call(application: Any, method: str, path: str, body: Any = None) -> tuple[str, Any]:
    raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, result = call(application, method, path, raw)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(b"".join(result))


def test_members_lists_everyone_local_first(pair: list[Cluster]) -> None:
    a, b = pair
    b.local_metadata().set_string("zone", "eu")
    api = app(a)
    try:
        wait_for(lambda: json_call(api, "GET", "/api/members")[1]["members"][1]["metadata"] == {"zone": "eu"},
                 what="b's metadata to reach a")
        status, data = json_call(api, "GET", "/api/members")
        assert status == "200 OK" and data["node"] == str(a.local_node().id)
        assert [m["id"] for m in data["members"]] == [str(a.local_node().id), str(b.local_node().id)]
        assert data["members"][0]["local"] and not data["members"][1]["local"]
        assert {m["state"] for m in data["members"]} == {"alive"}
    finally:
        api.close()


def test_send_broadcast_and_direct(pair: list[Cluster]) -> None:
    a, b = pair
    got: list[Any] = []
    b.handle_func(130, lambda sender, packet: got.append(packet.unmarshal()))
    api = app(a)
    try:
        assert json_call(api, "POST", "/api/send", {"type": 130, "data": {"k": 1}}) == ("200 OK", {"sent": "broadcast"})
        short = b.local_node().id.short
        status, data = json_call(api, "POST", "/api/send", {"type": 130, "data": "direct", "node": short})
        assert status == "200 OK" and data == {"sent": "node", "to": str(b.local_node().id)}
        wait_for(lambda: len(got) == 2, what="both messages")
        assert sorted(map(str, got)) == sorted(["{'k': 1}", "direct"])
    finally:
        api.close()


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", "400 Bad Request", "not JSON"),
    (b"", "400 Bad Request", "empty"),
    ([1, 2], "400 Bad Request", "JSON object"),
    ({"type": 5, "data": 1}, "400 Bad Request", "internal"),
    ({"type": "x"}, "400 Bad Request", "integer"),
    ({"data": 1, "colour": "red"}, "400 Bad Request", "unknown field"),
    ({"data": 1, "reliable": "yes"}, "400 Bad Request", "reliable"),
    ({"data": 1, "node": "0000dead"}, "404 Not Found", "no known node"),
])
def test_send_refuses_bad_requests(pair: list[Cluster], body: Any, status: str, words: str) -> None:
    api = app(pair[0])
    try:
        got, data = json_call(api, "POST", "/api/send", body)
        assert got == status and words in data["error"]
    finally:
        api.close()


def test_unknown_paths_methods_and_the_fallback(pair: list[Cluster]) -> None:
    api = app(pair[0])
    try:
        assert json_call(api, "GET", "/nope")[0] == "404 Not Found"
        status, headers, _ = call(api, "GET", "/api/send")
        assert status == "405 Method Not Allowed" and headers["Allow"] == "POST"

        def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/html")])
            return [b"<h1>dashboard</h1>"]

        mounted = app(pair[0], hub=api.hub, fallback=page)
        status, _, body = call(mounted, "GET", "/")
        assert status == "200 OK" and b"".join(body) == b"<h1>dashboard</h1>"
        assert json_call(mounted, "GET", "/api/members")[0] == "200 OK"   # the API still wins
    finally:
        api.close()


def test_metrics_and_stats(pair: list[Cluster]) -> None:
    api = app(pair[0])
    try:
        status, headers, body = call(api, "GET", "/metrics")
        text = b"".join(body).decode()
        assert status == "200 OK" and headers["Content-Type"].startswith("text/plain")
        assert 'gossip_members{state="alive"} 2.0' in text and "process_cpu_seconds_total" in text
        status, stats = json_call(api, "GET", "/api/stats")
        assert status == "200 OK" and all(isinstance(v, int) for v in stats.values())
    finally:
        api.close()


def test_event_stream_sends_a_snapshot_then_changes_and_ends_on_close(pair: list[Cluster]) -> None:
    a, b = pair
    api = app(a, keepalive=0.05)
    status, headers, body = call(api, "GET", "/api/events")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/event-stream")
    chunks = iter(body)
    assert next(chunks).startswith(b"retry:")
    snapshot = next(chunks).decode()
    assert snapshot.startswith("event: snapshot\n") and str(b.local_node().id) in snapshot
    assert api.hub.subscribers == 1
    b.local_metadata().set_string("x", "1")
    seen = []
    end = time.monotonic() + 10.0
    for chunk in chunks:                   # keep-alives every 50 ms: the loop never blocks long
        seen.append(chunk.decode())
        if chunk.startswith(b"event: metadata") and b'"x":"1"' in chunk:
            break
        assert time.monotonic() < end, f"no metadata event in 10 s: {seen[-3:]}"
    assert seen[-1].startswith("event: metadata")
    payload = json.loads(seen[-1].split("data: ", 1)[1])
    assert payload["node"]["id"] == str(b.local_node().id) and payload["node"]["metadata"] == {"x": "1"}
    api.close()
    assert list(chunks) == []              # the stream ends once the hub closes
    assert api.hub.subscribers == 0


def test_without_snapshot(pair: list[Cluster]) -> None:
    api = app(pair[0], keepalive=0.01)
    try:
        _, _, body = call(api, "GET", "/api/events", query="snapshot=0")
        chunks = iter(body)
        next(chunks)
        assert next(chunks) == b": keepalive\n\n"
        chunks.close()                      # type: ignore[attr-defined]
        assert api.hub.subscribers == 0     # a client that goes away is forgotten
    finally:
        api.close()


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:8080", ("::1", 8080)), (":7980", ("127.0.0.1", 7980)),
    ("localhost:7980", ("localhost", 7980)), ("http://127.0.0.1:9/", ("127.0.0.1", 9)),
])
def test_parse_listen_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_addr(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "host:port", "127.1.2.4:99999", "srv+_x._tcp.example.com", ""])
def test_parse_listen_addr_refuses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_listen_addr(text)


def test_server_on_loopback_serves_streams_and_stops_cleanly(pair: list[Cluster]) -> None:
    before = {t.ident for t in threading.enumerate()}
    api: ApiApp = app(pair[0], keepalive=0.1)
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close)
    server.start()
    try:
        with urllib.request.urlopen(server.url + "/api/members", timeout=5) as r:
            assert len(json.loads(r.read())["members"]) == 2
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/missing", timeout=5)
        assert err.value.code == 404
        stream = urllib.request.urlopen(server.url + "/api/events", timeout=5)
        assert stream.readline() == b"retry: 2000\n"
        wait_for(lambda: api.hub.subscribers == 1, what="the stream to subscribe")
        with pytest.raises(TransportError):
            HttpServer(api, server.address).start()     # the port is taken
    finally:
        server.stop()
    rest = stream.read()                  # returns (no timeout): stopping the server ended the stream
    stream.close()
    assert rest.startswith(b"\nevent: snapshot\n")
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("gossip-http")]
    assert left == []
