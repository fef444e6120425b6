"""The HTTP API as a WSGI application over in-memory clusters (called directly, no sockets),
and its threaded server once on loopback."""

from __future__ import annotations

import io
import socket
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import logging

import gossip
import gossip.errors
from gossip import Cluster, Config, Packet
from gossip.errors import AddressError, TransportError
from gossip.httpapi import ApiApp, EventHub, HttpServer, app, explanation_json, parse_listen_addr
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
         query: str = "", headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                               "HTTP_HOST": "127.0.0.1:7980"}
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/json"
        environ["wsgi.input"] = io.BytesIO(body)
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, dict(headers)
        return lambda data: None

    result = application(environ, start_response)
    return got["status"], got["headers"], result


def json_call(application: Any, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[str, Any]:
    raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, result = call(application, method, path, raw, headers=headers)
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
    ({"type": 5, "data": 1}, "403 Forbidden", "reserved"),
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


# ---------------------------------------------------------------------------------- a web page
# The operator's browser visits a page that tries to read or drive the agent's API: by DNS
# rebinding (its own name, now pointing at the agent: a Host the agent does not own), or by
# cross-site requests (the browser marks them with Origin and Sec-Fetch-Site). A form or
# text/plain POST needs no CORS preflight; a JSON one does, which the API never grants.

EVIL = "http://evil.example"


@pytest.mark.parametrize("headers, words", [
    ({"Host": "evil.example:7980"}, "Host"),
    ({"Host": "rebind.attacker.test"}, "Host"),
    ({"Host": "localhost.attacker.test:7980"}, "Host"),
    ({"Origin": EVIL}, "another origin"),
    ({"Origin": "null"}, "another origin"),
    ({"Origin": "http://127.0.0.1:8888"}, "another origin"),      # another local service's page
    ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),
])
@pytest.mark.parametrize("path", ["/api/members", "/api/stats", "/metrics", "/api/events",
                                  "/api/explain", "/"])
def test_pages_of_other_sites_cannot_read_the_api(pair: list[Cluster], headers: dict[str, str],
                                                  words: str, path: str) -> None:
    page = lambda environ, start_response: [start_response("200 OK", []) and b"dashboard"]  # noqa: E731
    api = app(pair[0], fallback=page)
    try:
        status, _, body = call(api, "GET", path, headers=headers)
        assert status == "403 Forbidden"
        assert words in json.loads(b"".join(body))["error"]
        assert api.hub.subscribers == 0
        refused = api.stats()
        assert refused.get("http.refused_host", 0) + refused.get("http.refused_origin", 0) == 1
    finally:
        api.close()


@pytest.mark.parametrize("headers", [
    {},
    {"Host": "127.0.0.1:7980", "Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:7980"},
    {"Host": "localhost:7980", "Sec-Fetch-Site": "none"},
    {"Host": "[::1]:7980"},
    {"Host": "192.0.2.4:7980", "Origin": "http://192.0.2.4:7980"},   # the agent's own address
    {"Host": "gossip.internal:7980", "Origin": "http://gossip.internal:7980"},   # allowed by name
])
def test_the_operators_own_requests_pass(pair: list[Cluster], headers: dict[str, str]) -> None:
    api = app(pair[0], allowed_hosts=["gossip.internal"])
    try:
        assert json_call(api, "GET", "/api/members", headers=headers)[0] == "200 OK"
    finally:
        api.close()


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", ""])
def test_a_post_that_is_not_json_is_refused_and_sends_nothing(pair: list[Cluster], ctype: str) -> None:
    a, b = pair
    got: list[Any] = []
    b.handle_func(128, lambda sender, packet: got.append(packet.unmarshal()))
    api = app(a)
    try:
        before = a.stats().get("user.sent", 0)
        status, data = json_call(api, "POST", "/api/send", {"type": 128, "data": "csrf"},
                                 headers={"Content-Type": ctype})
        assert status == "415 Unsupported Media Type" and "application/json" in data["error"]
        assert a.stats().get("user.sent", 0) == before and got == []
        assert api.stats()["http.refused_content_type"] == 1
    finally:
        api.close()


@pytest.mark.parametrize("msg_type", [64, 65, 100, 127])
def test_reserved_message_types_are_refused(pair: list[Cluster], msg_type: int) -> None:
    a, b = pair
    got: list[int] = []
    b.handle_func(msg_type, lambda sender, packet: got.append(packet.msg_type))
    api = app(a)
    try:
        for body in ({"type": msg_type, "data": 1}, {"type": msg_type, "data": 1, "node": str(b.local_node().id)}):
            status, data = json_call(api, "POST", "/api/send", body)
            assert status == "403 Forbidden" and "reserved" in data["error"]
        assert api.stats()["http.refused_reserved_type"] == 2
        assert json_call(api, "POST", "/api/send", {"type": 128, "data": 1})[0] == "200 OK"
        assert got == []
    finally:
        api.close()


def test_the_token_is_required_by_bearer_header_or_cookie(pair: list[Cluster]) -> None:
    token = "t0k3n-" + "x" * 30
    page = lambda environ, start_response: [start_response("200 OK", []) and b"dashboard"]  # noqa: E731
    api = app(pair[0], token=token, fallback=page)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                        {"Cookie": "gossip_token_7980=wrong"}, {"Cookie": f"gossip_token_9999={token}"}):
            for path in ("/api/members", "/metrics", "/"):
                status, got, _ = call(api, "GET", path, headers={**headers, "Host": "127.0.0.1:7980"})
                assert status == "401 Unauthorized" and got["WWW-Authenticate"].startswith("Bearer"), headers
        status, _ = json_call(api, "POST", "/api/send", {"data": "x"})
        assert status == "401 Unauthorized"
        assert api.stats()["http.refused_token"] == 16
        assert json_call(api, "GET", "/api/members", headers={"Authorization": f"Bearer {token}"})[0] == "200 OK"
        environ_port = {"Cookie": f"other=1; gossip_token_80={token}"}   # SERVER_PORT of the test environ
        assert json_call(api, "GET", "/api/members", headers=environ_port)[0] == "200 OK"
    finally:
        api.close()


def test_a_login_link_sets_the_cookie_once(pair: list[Cluster]) -> None:
    token = "secret-token-for-the-page"
    api = app(pair[0], token=token, fallback=lambda environ, start_response: [
        start_response("200 OK", [("Content-Type", "text/html")]) and b"<h1>dashboard</h1>"])
    try:
        path = api.login_path()
        assert path.startswith("/?login=") and token not in path
        status, headers, _ = call(api, "GET", "/", query=path.split("?", 1)[1],
                                  headers={"Sec-Fetch-Site": "none"})
        assert status == "303 See Other" and headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert cookie.startswith(f"gossip_token_80={token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert headers["Referrer-Policy"] == "no-referrer"
        status, _, body = call(api, "GET", "/", headers={"Cookie": cookie.split(";")[0]})
        assert status == "200 OK" and b"".join(body) == b"<h1>dashboard</h1>"
        again = call(api, "GET", "/", query=path.split("?", 1)[1])
        assert again[0] == "401 Unauthorized"                           # used once only
        assert call(api, "GET", "/", query="login=guessed")[0] == "401 Unauthorized"
        # a page of another site cannot use a link either
        assert call(api, "GET", "/", query=api.login_path().split("?", 1)[1],
                    headers={"Sec-Fetch-Site": "cross-site"})[0] == "403 Forbidden"
        # the CLI asks for a link with the token
        status, data = json_call(api, "POST", "/api/login", {}, headers={"Authorization": f"Bearer {token}"})
        assert status == "200 OK" and data["path"].startswith("/?login=")
    finally:
        api.close()


# ---------------------------------------------------------------------------------- errors


def test_a_send_that_fails_in_the_cluster_is_a_json_error_with_the_reason(pair: list[Cluster]) -> None:
    a, b = pair
    b_id = str(b.local_node().id)
    b.stop(timeout=2.0)                      # a still lists b for a while: the send must fail
    api = app(a)
    try:
        status, data = json_call(api, "POST", "/api/send", {"data": "x", "node": b_id, "reliable": True})
        assert status in ("502 Bad Gateway", "404 Not Found", "503 Service Unavailable"), (status, data)
        assert data["error"] and data["kind"] in ("ConnectError", "SendError", "NotFoundError"), data
    finally:
        api.close()


@pytest.mark.parametrize("exc, status", [
    (gossip.errors.ConnectError("refused"), "502 Bad Gateway"),
    (gossip.errors.SendError("broken pipe"), "502 Bad Gateway"),
    (gossip.errors.GossipTimeout("no reply"), "504 Gateway Timeout"),
    (gossip.errors.SendQueueFull("full"), "503 Service Unavailable"),
    (gossip.errors.ClusterClosed("stopped"), "503 Service Unavailable"),
    (gossip.errors.MessageTooLarge("too big"), "400 Bad Request"),
    (gossip.errors.LocalProtocolError("bad type"), "400 Bad Request"),
    (gossip.errors.NotFoundError("no such node"), "404 Not Found"),
    (gossip.errors.RemoteHandlerError("it raised"), "502 Bad Gateway"),
    (gossip.errors.GossipError("other"), "500 Internal Server Error"),
])
def test_every_gossip_error_of_a_send_is_a_json_error(pair: list[Cluster], monkeypatch: pytest.MonkeyPatch,
                                                      exc: Exception, status: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    a = pair[0]

    def fail(*args: Any) -> None:
        raise exc

    monkeypatch.setattr(a, "send_to_reliable", fail)
    api = app(a)
    try:
        with caplog.at_level(logging.ERROR, logger="gossip"):
            got, data = json_call(api, "POST", "/api/send",
                                  {"data": 1, "node": str(pair[1].local_node().id), "reliable": True})
        assert got == status and data == {"error": str(exc), "kind": type(exc).__name__}
        assert api.stats()[f"http.errors.{type(exc).__name__}"] == 1
        assert not caplog.records                      # an answer, not a bug with a traceback
    finally:
        api.close()


# ---------------------------------------------------------------------------------- bounds


def test_event_queues_are_bounded_in_bytes_and_payloads_truncated(pair: list[Cluster]) -> None:
    a, b = pair
    hub = EventHub(a, max_queue_bytes=64 * 1024, max_payload_bytes=1024)
    try:
        sub = hub.subscribe()                          # a client that never reads
        sender = a.local_node()
        payload = {"blob": "x" * 50_000}
        codec = a._codec                                # encode as the engine would
        for _ in range(100):
            hub.on_message(sender, Packet(128, b"\0" * 16, 1, 1, codec.codec.encode(payload),
                                          codec.codec, False, False, 0))
        assert sub.queued_bytes <= 64 * 1024
        assert hub.dropped > 0 and hub.truncated == 100
        kind, data, raw = sub.get(timeout=1.0)          # type: ignore[misc]
        assert kind == "message" and data["data"]["truncated"] is True
        assert data["data"]["bytes"] > 50_000 and len(data["data"]["prefix"]) == 1024
        assert len(raw) < 2 * 1024 + 1024
        huge = codec.codec.encode({"blob": "y" * 500_000})  # too big to decode only to cut it
        hub.on_message(sender, Packet(128, b"\0" * 16, 2, 1, huge, codec.codec, False, False, 0))
        assert hub.truncated == 101
        for _ in range(2000):                           # small events: still bounded by bytes
            hub.publish("metadata", {"node": {"id": "x" * 100}})
        assert sub.queued_bytes <= 64 * 1024
    finally:
        hub.close()


def test_event_streams_are_capped(pair: list[Cluster]) -> None:
    hub = EventHub(pair[0], max_subscribers=2)
    api = app(pair[0], hub=hub, keepalive=0.05)
    try:
        streams = [call(api, "GET", "/api/events")[2] for _ in range(2)]
        assert hub.subscribers == 2
        status, data = json_call(api, "GET", "/api/events")
        assert status == "503 Service Unavailable" and "event streams" in data["error"]
        assert api.stats()["http.refused_event_streams"] == 1
        streams[0].close()
        assert call(api, "GET", "/api/events")[0] == "200 OK"
    finally:
        hub.close()
        api.close()


# ---------------------------------------------------------------------------------- the server


def raw_request(url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """Send exactly these headers (http.client adds Host and Content-Length only if absent)."""
    import http.client

    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_browser_style_requests_over_http(pair: list[Cluster]) -> None:
    a, b = pair
    got: list[Any] = []
    b.handle_func(128, lambda sender, packet: got.append(packet.unmarshal()))
    token = "over-the-wire-token"
    api = app(a, token=token)
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close)
    server.start()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        here = server.address
        # A page at evil.example posting text/plain (no preflight) with the token it cannot know...
        form = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
        status, _ = raw_request(server.url, "POST", "/api/send", form, b'{"type": 128, "data": "csrf"}')
        assert status == 403
        # ... even with the token (a stolen one), the browser's marks are refused:
        status, _ = raw_request(server.url, "POST", "/api/send", {**form, **auth}, b'{"data": "csrf"}')
        assert status == 403
        # DNS rebinding: the page's own name now resolves to 127.0.0.1.
        for path in ("/api/members", "/metrics", "/api/stats", "/api/events"):
            status, body = raw_request(server.url, "GET", path, {"Host": "evil.example:" + here.split(":")[1], **auth})
            assert status == 403 and b"Host" in body, path
        # No token: 401; the operator's request: 200.
        assert raw_request(server.url, "GET", "/api/members", {})[0] == 401
        status, body = raw_request(server.url, "POST", "/api/send", {**auth, "Content-Type": "application/json"},
                                   b'{"type": 128, "data": "ok"}')
        assert status == 200, body
        wait_for(lambda: got == ["ok"], what="the operator's message")
        stats = json.loads(raw_request(server.url, "GET", "/api/stats", auth)[1])
        assert stats["http.refused_origin"] == 2 and stats["http.refused_host"] == 4
        assert stats["http.refused_token"] == 1
    finally:
        server.stop()


def test_a_client_that_trickles_its_request_is_cut_at_the_deadline(pair: list[Cluster]) -> None:
    api = app(pair[0])
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close, read_timeout=0.5)
    server.start()
    host, port = server.address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.settimeout(0.1)
            request = b"GET /api/members HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
            closed = False
            end = time.monotonic() + 20.0
            for byte in request:            # one byte every 50 ms: each read succeeds in time
                try:
                    s.send(bytes([byte]))
                    data = s.recv(1024)
                    closed = data == b""
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
                if closed or time.monotonic() > end:
                    break
                time.sleep(0.05)
            assert closed, "the server kept a trickling client past its read deadline"
        wait_for(lambda: api.stats().get("http.read_timeouts", 0) == 1, what="the cut to be counted")
        with urllib.request.urlopen(server.url + "/api/members", timeout=10) as r:   # still serving
            assert r.status == 200
    finally:
        server.stop()


def test_connections_beyond_the_cap_get_503_at_once(pair: list[Cluster]) -> None:
    api = app(pair[0])
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close, read_timeout=30.0, max_connections=3)
    server.start()
    host, port = server.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    try:
        wait_for(lambda: len(server._server.request_threads) == 3, what="three idle connections served")  # type: ignore[union-attr]
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            extra.sendall(b"GET /api/members HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 503") and b"http_max_connections" in answer
        assert api.stats()["http.refused_busy"] == 1
        idle.pop().close()                       # a slot frees when a connection ends
        wait_for(lambda: len(server._server.request_threads) == 2, what="the slot to free")  # type: ignore[union-attr]
        with urllib.request.urlopen(server.url + "/api/members", timeout=10) as r:
            assert r.status == 200
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_a_member_that_left_is_left_everywhere(pair: list[Cluster]) -> None:
    from gossip import NodeState
    from gossip.dashboard import app as dashboard_app

    a, b = pair
    assert NodeState.LEAVING is NodeState.LEFT and str(NodeState.LEAVING) == "left"
    bid = str(b.local_node().id)
    b.stop(timeout=2.0)                                   # a graceful leave
    api = app(a)
    dash = dashboard_app(a, hub=api.hub)
    try:
        wait_for(lambda: a.get_node(bid).state is NodeState.LEFT, what="a to see b leave")  # type: ignore[union-attr]
        members = {m["id"]: m for m in json_call(api, "GET", "/api/members")[1]["members"]}
        assert members[bid]["state"] == "left"
        text = b"".join(call(api, "GET", "/metrics")[2]).decode()
        assert 'gossip_members{state="left"} 1.0' in text
        assert dash.sample()["counts"]["left"] == 1 and dash.history()[-1]["counts"]["left"] == 1
        js = (Path(gossip.__file__).parent / "dashboard" / "static" / "dashboard.js").read_text()
        assert '"leaving"' not in js and "leaving:" not in js
        from gossip.cli import format_explanation
        assert " is left," in format_explanation(explanation_json(a.explain(bid), a))  # type: ignore[arg-type]
    finally:
        dash.close()
        api.close()


def test_forget_and_tagged_send_through_the_api(pair: list[Cluster]) -> None:
    a, b = pair
    got: list[Any] = []
    b.handle_func(130, lambda sender, packet: got.append(packet.unmarshal()))
    b.add_tag("gpu")
    token = "t0k3n-" + "y" * 30
    api = app(a, token=token)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        bid = str(b.local_node().id)
        wait_for(lambda: a.nodes_by_tag("gpu") != [], what="b's tag to reach a")
        members = {m["id"]: m for m in json_call(api, "GET", "/api/members", headers=auth)[1]["members"]}
        assert members[bid]["tags"] == ["gpu"]
        status, data = json_call(api, "POST", "/api/send", {"type": 130, "data": "t", "tag": "gpu"}, headers=auth)
        assert (status, data) == ("200 OK", {"sent": "tagged", "tag": "gpu"})
        wait_for(lambda: got == ["t"], what="the tagged message")
        for body in ({"data": 1, "tag": 3}, {"data": 1, "tag": "gpu", "node": bid}):
            assert json_call(api, "POST", "/api/send", body, headers=auth)[0] == "400 Bad Request"
        assert json_call(api, "POST", "/api/forget", {"node": bid})[0] == "401 Unauthorized"
        status, data = json_call(api, "POST", "/api/forget", {"node": bid}, headers=auth)
        assert status == "409 Conflict" and "only a dead or left" in data["error"]
        for body in ({"node": 3}, {"id": bid}, [bid]):
            assert json_call(api, "POST", "/api/forget", body, headers=auth)[0] == "400 Bad Request"
        assert json_call(api, "POST", "/api/forget", {"node": "0000dead"}, headers=auth)[0] == "404 Not Found"
        b.stop(timeout=2.0)
        wait_for(lambda: a.get_node(bid).state is gossip.NodeState.LEFT, what="b left")  # type: ignore[union-attr]
        status, data = json_call(api, "POST", "/api/forget", {"node": bid[-8:]}, headers=auth)
        assert (status, data) == ("200 OK", {"forgotten": bid})
        assert a.get_node(bid) is None
    finally:
        api.close()
