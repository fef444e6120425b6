"""The HTTP transport on loopback: sends, answers in the response, request/reply, and every
refusal a hostile client can provoke (bad bodies, too large, chunked, wrong or replayed token,
a browser's origin, slow-loris trickles, too many connections), each counted.

Two transports face each other without an engine: the test's ``on_packets`` plays the engine
(it answers on the frame's connection and says when it is done with it).
"""

from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gossip.errors import (
    AddressError,
    ClusterClosed,
    ConnectError,
    GossipTimeout,
    MessageTooLarge,
    SendError,
    SendQueueFull,
    StreamRefused,
)
from gossip.transports.http import frames as http_frames
from gossip.transports.base import Incoming
from gossip.transports.http.transport import HTTPTransport
from gossip.transports.limits import ConnectionLimits

from integration import wait_until

FAST = ConnectionLimits(frame_timeout=0.3, preauth_timeout=0.6, max_frame_size=64 * 1024,
                        preauth_max_frame_size=8 * 1024, max_rejected_frames=2, idle_timeout=5.0)


class Engine:
    """Plays the engine: records every packet, answers ``ping`` frames with ``pong`` on their
    connection, accepts frames that start with ``ok``/``ping`` and refuses the others."""

    def __init__(self) -> None:
        self.got: queue.Queue[Incoming] = queue.Queue()
        self.answer = True

    def __call__(self, batch: list[Incoming]) -> None:
        for inc in batch:
            self.got.put(inc)
            conn = inc.conn
            assert conn is not None
            if inc.data.startswith((b"ok", b"ping")):
                conn.mark_trusted()
            else:
                conn.mark_rejected()
            if self.answer and inc.data.startswith(b"ping"):
                conn.send_frame(b"pong:" + inc.data, 0)
            done = getattr(conn, "handled", None)
            if done is not None:
                done()

    def next(self, timeout: float = 5.0) -> Incoming:
        return self.got.get(timeout=timeout)


@pytest.fixture()
def pair() -> Iterator[tuple[HTTPTransport, Engine, HTTPTransport, Engine]]:
    server, client = HTTPTransport("127.0.0.1:0", limits=FAST, name="srv"), HTTPTransport(limits=FAST, name="cli")
    se, ce = Engine(), Engine()
    server.start(se)
    client.start(ce)
    try:
        yield server, se, client, ce
    finally:
        client.close()
        server.close()


def raw(server: HTTPTransport, body: bytes, headers: dict[str, str] | None = None,
        method: str = "POST", path: str = "/gossip") -> tuple[int, bytes]:
    host, _, port = server.local_addr.split("//")[1].split("/")[0].rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_of(t: HTTPTransport) -> int:
    return int(t.local_addr.split("//")[1].split("/")[0].rpartition(":")[2])


def test_send_reaches_the_peer_and_its_answer_comes_back(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, ce = pair
    assert server.local_addr == f"http://127.0.0.1:{port_of(server)}/gossip"
    client.send(server.local_addr, b"ping-1", reliable=False)
    client.send(server.local_addr, b"ok-2", reliable=True, timeout=1.0)
    got = sorted([se.next().data, se.next().data])
    assert got == [b"ok-2", b"ping-1"]
    answer = ce.next()
    assert answer.data == b"pong:ping-1" and answer.transport == "http" and answer.src == server.local_addr
    # the answer's connection posts back to the server
    assert answer.conn is not None
    answer.conn.send_frame(b"ok-back")
    assert se.next().data == b"ok-back"
    assert client.link_kind(server.local_addr, False) == "http"
    wait_until(lambda: client.stats.get("http_frames_sent", 0) == 3, 5.0, "three frames POSTed")
    assert server.stats["http_requests"] >= 2


def test_request_returns_the_reply_in_the_response(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, ce = pair
    for i in range(3):  # the idle keep-alive connection is reused
        assert client.request(server.local_addr, f"ping-{i}".encode(), timeout=5.0) == f"pong:ping-{i}".encode()
    assert server.stats["http_accepted"] == 1


def test_request_without_an_answer_times_out(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, ce = pair
    with pytest.raises(GossipTimeout):
        client.request(server.local_addr, b"ok-silent", timeout=0.2)


def test_an_answer_after_the_response_is_refused_and_counted(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, ce = pair
    client.send(server.local_addr, b"ok-1", reliable=True, timeout=1.0)
    inc = se.next()
    assert inc.conn is not None
    wait_until(lambda: client.stats.get("http_frames_sent", 0) == 1, 5.0, "the POST answered")
    with pytest.raises(SendError):
        inc.conn.send_frame(b"too late")
    assert server.stats["http_late_replies"] == 1


def test_malformed_bodies_are_refused_and_counted(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, _, _ = pair
    for body in (b"\x00\x00", b"\x00\x00\x00\x09short", b"\x00\x00\x00\x00"):
        assert raw(server, body)[0] == 400
    assert server.stats["http_bad_bodies"] == 3
    assert se.got.empty()


def test_a_body_over_the_limit_is_refused_before_it_is_read(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, _, _ = pair
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as s:
        # announces 1 MiB and sends none of it: the answer comes anyway
        s.sendall(b"POST /gossip HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert server.stats["http_refused_too_large"] == 1


def test_a_trusted_connection_may_send_up_to_the_frame_limit(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, _ = pair
    client.send(server.local_addr, b"ok-first", reliable=True, timeout=1.0)   # trusts the connection
    assert se.next().data == b"ok-first"
    big = b"ok" + b"x" * (20 * 1024)   # over the pre-authentication limit, under the frame limit
    client.send(server.local_addr, big, reliable=True, timeout=1.0)
    assert se.next().data == big
    with pytest.raises(MessageTooLarge):
        client.send(server.local_addr, b"x" * (64 * 1024 + 1), reliable=True)


def test_chunked_bodies_wrong_paths_and_methods_are_refused(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, _, _, _ = pair
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as s:
        s.sendall(b"POST /gossip HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 411")
    assert raw(server, b"", path="/other")[0] == 404
    assert raw(server, b"", method="GET")[0] == 405
    stats = server.stats
    assert (stats["http_refused_chunked"], stats["http_refused_path"], stats["http_refused_method"]) == (1, 1, 1)


def test_a_browser_origin_is_refused(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, _, _ = pair
    body = http_frames.pack_frames([b"ok"])
    assert raw(server, body, {"Origin": "http://127.0.0.1:8000"})[0] == 403
    assert raw(server, body, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert server.stats["http_origin_refused"] == 2 and se.got.empty()


def test_a_slow_loris_is_cut_and_counted(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, _, _, _ = pair
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as s:
        s.sendall(b"POST /gossip HTTP/1.1\r\nHost: x\r\n")   # ... and the rest never comes
        assert s.recv(4096) == b""   # closed by the server within frame_timeout
    wait_until(lambda: server.stats.get("http_frame_timeouts", 0) == 1, 5.0, "the cut counted")
    wait_until(lambda: server.stats["http_connections"] == 0, 5.0, "the slot released")


def test_a_connection_that_never_sends_an_accepted_frame_is_closed(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, _, _, _ = pair
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as s:
        assert s.recv(4096) == b""   # idle and untrusted: closed after preauth_timeout
    wait_until(lambda: server.stats.get("http_preauth_timeouts", 0) == 1, 5.0, "the timeout counted")


def test_refused_frames_close_the_connection(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, _, _, _ = pair
    host, port = "127.0.0.1", port_of(server)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    body = http_frames.pack_frames([b"bad-1", b"bad-2"])
    conn.request("POST", "/gossip", body=body, headers={"Content-Type": "x"})
    resp = conn.getresponse()
    resp.read()
    assert resp.will_close   # max_rejected_frames reached: the server closes
    conn.close()
    assert server.stats["http_rejected_frames_closed"] == 1


def test_connections_per_source_are_bounded() -> None:
    limits = FAST.replace(max_connections_per_source=2)
    server = HTTPTransport("127.0.0.1:0", limits=limits, name="srv")
    server.start(Engine())
    socks = []
    try:
        for _ in range(2):
            socks.append(socket.create_connection(("127.0.0.1", port_of(server)), timeout=5))
        wait_until(lambda: server.stats["http_connections"] == 2, 5.0, "two connections held")
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as third:
            assert third.recv(10) == b""
        assert server.stats["http_rejected_per_source"] == 1
    finally:
        for s in socks:
            s.close()
        server.close()


def test_bearer_token_proofs_both_ways() -> None:
    server = HTTPTransport("127.0.0.1:0", limits=FAST, bearer_token="s3cret", name="srv")
    good = HTTPTransport(limits=FAST, bearer_token="s3cret", name="good")
    bad = HTTPTransport(limits=FAST, bearer_token="wrong", name="bad")
    none = HTTPTransport(limits=FAST, name="none")
    se = Engine()
    for t, e in ((server, se), (good, Engine()), (bad, Engine()), (none, Engine())):
        t.start(e)
    try:
        assert good.request(server.local_addr, b"ping", timeout=5.0) == b"pong:ping"
        for stranger in (bad, none):
            with pytest.raises(SendError, match="401"):
                stranger.request(server.local_addr, b"ping", timeout=5.0)
        assert server.stats["http_auth_refused"] == 2
        assert se.next().data == b"ping" and se.got.empty()
        # a recorded request played again is refused
        body = http_frames.pack_frames([b"ok-replay"])
        proof = http_frames.request_auth("s3cret", time.time(), body)
        assert raw(server, body, {"Gossip-Auth": proof})[0] == 200
        assert raw(server, body, {"Gossip-Auth": proof})[0] == 401
        assert server.stats["http_auth_replayed"] == 1
        # a server without the token cannot answer a client that has one
        plain = HTTPTransport("127.0.0.1:0", limits=FAST, name="plain")
        plain.start(Engine())
        try:
            with pytest.raises(SendError, match="bearer token"):
                good.request(plain.local_addr, b"ping", timeout=5.0)
            assert good.stats["http_auth_refused_by_peer"] == 1
        finally:
            plain.close()
    finally:
        for t in (none, bad, good, server):
            t.close()


def test_an_unreachable_peer_is_counted_and_not_dialed_again_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed when the block ends: dials are refused
    client = HTTPTransport(limits=FAST, name="cli")
    client.start(Engine())
    url = f"http://127.0.0.1:{port}/gossip"
    try:
        client.send(url, b"ok", reliable=False)   # queued; the sender thread's dial fails
        wait_until(lambda: client.stats.get("http_frames_lost", 0) == 1, 5.0, "the frame counted lost")
        with pytest.raises(ConnectError, match="unreachable"):
            client.send(url, b"ok", reliable=True, timeout=1.0)
        assert client.stats["http_dropped_peer_down"] == 1
        with pytest.raises(ConnectError, match="refused"):
            client.request(url, b"ping", timeout=1.0)
    finally:
        client.close()


def test_a_reliable_send_dials_at_once_and_reports_why_it_cannot() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HTTPTransport(limits=FAST, name="cli")
    client.start(Engine())
    try:
        with pytest.raises(ConnectError, match="refused"):
            client.send(f"http://127.0.0.1:{port}/gossip", b"ok", reliable=True, timeout=1.0)
        assert client.stats["http_dial_errors"] == 1
    finally:
        client.close()


class Silent(Engine):
    """An engine that never says it is done: each POST is held for the reply wait."""

    def __call__(self, batch: list[Incoming]) -> None:
        for inc in batch:
            self.got.put(inc)


def test_a_full_queue_refuses_best_effort_sends_at_once_and_paces_reliable_ones() -> None:
    server = HTTPTransport("127.0.0.1:0", limits=FAST, reply_wait=3.0, name="srv")
    client = HTTPTransport(limits=FAST.replace(conn_buffer_size=1024), name="cli")
    silent = Silent()
    server.start(silent)
    client.start(Engine())
    try:
        url = server.local_addr
        client.send(url, b"ok" * 300, reliable=True, timeout=1.0)   # POSTed, held by the server
        silent.next()
        client.send(url, b"ok" * 300, reliable=False)              # queued behind it
        with pytest.raises(SendQueueFull):
            client.send(url, b"ok" * 300, reliable=False)
        with pytest.raises(SendQueueFull):
            client.send(url, b"ok" * 300, reliable=True, timeout=0.05)
        assert client.stats["http_dropped_queue_full"] == 2
    finally:
        client.close()
        server.close()


def test_addresses_streams_and_lifecycle() -> None:
    t = HTTPTransport(limits=FAST, name="cli")
    with pytest.raises(ClusterClosed):
        t.send("http://127.0.0.1:1/gossip", b"ok")   # not started
    t.start(Engine())
    try:
        assert t.local_addr == ""
        with pytest.raises(AddressError, match="not loopback"):
            t.send("http://gossip.invalid/gossip", b"ok")
        with pytest.raises(AddressError):
            t.send("ftp://127.0.0.1/x", b"ok")
        with pytest.raises(StreamRefused) as info:
            t.dial_stream("http://127.0.0.1:1/gossip", 1.0)
        assert "HTTP" in info.value.reason
    finally:
        t.close()
    t.close()
    with pytest.raises(ClusterClosed):
        t.send("http://127.0.0.1:1/gossip", b"ok")


def test_frames_codec_refuses_what_it_must() -> None:
    assert http_frames.unpack_frames(http_frames.pack_frames([b"a", b"bc"]), 10, 10) == [b"a", b"bc"]
    with pytest.raises(ValueError, match="over the limit"):
        http_frames.unpack_frames(http_frames.pack_frames([b"x" * 11]), 10, 10)
    with pytest.raises(ValueError, match="more than"):
        http_frames.unpack_frames(http_frames.pack_frames([b"a"] * 3), 10, 2)
    body = b"ok"
    now = time.time()
    proof = http_frames.request_auth("t", now, body)
    assert isinstance(http_frames.check_request_auth("t", proof, now, 60, body), tuple)
    assert http_frames.check_request_auth("t", proof, now + 120, 60, body) == "stale"
    assert http_frames.check_request_auth("t", proof, now, 60, b"other") == "wrong"
    assert http_frames.check_request_auth("t", "", now, 60, body) == "missing"
    assert http_frames.check_request_auth("t", "a.b", now, 60, body) == "malformed"
    cache = http_frames.ReplayCache(2)
    assert cache.add("a", 10.0, 0.0) == "" and cache.add("a", 10.0, 0.0) == "replayed"
    assert cache.add("b", 10.0, 0.0) == "" and cache.add("c", 10.0, 0.0) == "full"
    assert cache.add("c", 20.0, 11.0) == "" and len(cache) == 1   # the expired ones went


def test_close_joins_every_thread(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    server, se, client, _ = pair
    client.send(server.local_addr, b"ok", reliable=True, timeout=1.0)
    se.next()
    names = {t.name for t in threading.enumerate()}
    assert any("srv-http-accept" in n for n in names) and any("cli-http-out" in n for n in names)
    client.close()
    server.close()
    left = [t.name for t in threading.enumerate() if "-http-" in t.name and t.is_alive()]
    assert left == []


def test_random_and_mutated_bodies_never_break_the_listener(pair: tuple[HTTPTransport, Engine, HTTPTransport, Engine]) -> None:
    import random

    server, se, client, _ = pair
    rng = random.Random(7)
    good = http_frames.pack_frames([b"ok-1", b"ok-22"])
    host, port = "127.0.0.1", port_of(server)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    statuses = set()
    try:
        for i in range(200):
            body = bytearray(good if i % 2 else rng.randbytes(rng.randrange(0, 64)))
            for _ in range(rng.randrange(0, 4)):
                if body:
                    body[rng.randrange(len(body))] = rng.randrange(256)
            conn.request("POST", "/gossip", body=bytes(body))
            resp = conn.getresponse()
            resp.read()
            statuses.add(resp.status)
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=5)
    finally:
        conn.close()
    assert statuses <= {200, 400}
    assert server.stats.get("http_errors", 0) == 0
    assert client.request(server.local_addr, b"ping", timeout=5.0) == b"pong:ping"   # still serving


class Pausing(Engine):
    """An engine whose queues are full after the first frame: it pauses that connection."""

    def __init__(self) -> None:
        super().__init__()
        self.paused: list[Incoming] = []

    def __call__(self, batch: list[Incoming]) -> None:
        super().__call__(batch)
        if not self.paused:
            assert batch[0].conn is not None
            batch[0].conn.pause_reading()
            self.paused.append(batch[0])


def test_a_paused_connection_reads_no_further_request_until_resumed() -> None:
    server = HTTPTransport("127.0.0.1:0", limits=FAST, name="srv")
    client = HTTPTransport(limits=FAST, name="cli")
    engine = Pausing()
    server.start(engine)
    client.start(Engine())
    try:
        client.send(server.local_addr, b"ok-1", reliable=True, timeout=1.0)
        assert engine.next().data == b"ok-1"
        client.send(server.local_addr, b"ok-2", reliable=True, timeout=1.0)   # POSTed on the same connection
        wait_until(lambda: server.stats.get("http_paused_waits", 0) == 1, 5.0, "the connection waits")
        assert engine.got.empty()                      # not read while paused
        assert engine.paused[0].conn is not None
        engine.paused[0].conn.resume_reading()
        assert engine.next().data == b"ok-2"
        assert server.stats["http_accepted"] == 1
    finally:
        client.close()
        server.close()
