"""The agent's threaded HTTP server (:class:`gossip.httpapi.HttpServer`) on loopback, with a
plain WSGI application: malformed requests are refused before the application runs, a failing
application is a 500, and the server's life cycle (start, stop, counters, IPv6)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from gossip.counters import Counters
from gossip.httpapi import HttpServer
from gossip.httpapi.app import MAX_BODY


class App:
    """Answers ``ok <body>``; ``/boom`` raises; ``/hold`` waits for :attr:`release`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.calls.append(path)
        if path == "/boom":
            raise RuntimeError("a bug in the application")
        if path == "/hold":
            self.entered.set()
            self.release.wait(10.0)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok " + body]


def exchange(server: HttpServer, raw: bytes, half_close: bool = False) -> bytes:
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as s:
        s.sendall(raw)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def served() -> Iterator[tuple[HttpServer, App]]:
    application = App()
    with HttpServer(application, "127.0.0.1:0", read_timeout=10.0) as server:
        yield server, application


def test_a_well_formed_request_reaches_the_application(served: tuple[HttpServer, App]) -> None:
    server, application = served
    answer = exchange(server, b"POST /x HTTP/1.0\r\nContent-Length: 4\r\n\r\nbody")
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"ok body")
    assert application.calls == ["/x"]


@pytest.mark.parametrize("raw, status", [
    (b"GET /" + b"a" * (65537 - 5), b"414"),       # exactly one byte too long: all read
    (b"POST /x HTTP/1.0\r\nContent-Length: many\r\n\r\n", b"400"),
    (b"POST /x HTTP/1.0\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"POST /x HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), b"413"),
])
def test_a_malformed_request_is_refused_before_the_application_runs(
        served: tuple[HttpServer, App], raw: bytes, status: bytes) -> None:
    server, application = served
    answer = exchange(server, raw)
    assert answer.split(b" ", 2)[1] == status
    assert application.calls == []


def test_a_client_that_leaves_mid_body_is_not_served(served: tuple[HttpServer, App]) -> None:
    server, application = served
    answer = exchange(server, b"POST /x HTTP/1.0\r\nContent-Length: 10\r\n\r\nabc", half_close=True)
    assert answer == b"" and application.calls == []


def test_an_application_that_raises_is_a_500_and_logged(
        served: tuple[HttpServer, App], caplog: pytest.LogCaptureFixture) -> None:
    server, application = served
    with caplog.at_level(logging.ERROR, logger="gossip.http"):
        answer = exchange(server, b"GET /boom HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 500")
    assert any("the HTTP application raised" in r.getMessage() for r in caplog.records)
    assert exchange(server, b"GET /after HTTP/1.0\r\n\r\n").endswith(b"ok ")   # still serving


def test_the_life_cycle_start_twice_stop_twice_and_given_counters() -> None:
    counters = Counters()
    stopped: list[bool] = []
    server = HttpServer(App(), "127.0.0.1:0", on_stop=lambda: stopped.append(True),
                        counters=counters)
    assert server.counters is counters
    assert server.address == "" and server.url == "http://"
    server.start()
    address = server.address
    server.start()                                             # a second start does nothing
    assert server.address == address and server.url == f"http://{address}"
    server.stop()
    server.stop()                                              # idempotent
    assert stopped == [True]
    never = HttpServer(App(), "127.0.0.1:0")
    never.stop()                                               # never started: nothing to do
    assert never.address == ""


def test_stop_names_request_threads_that_outlive_it(caplog: pytest.LogCaptureFixture) -> None:
    application = App()
    server = HttpServer(application, "127.0.0.1:0")
    server.start()
    host, port = server.address.rsplit(":", 1)
    client = socket.create_connection((host, int(port)), timeout=10)
    try:
        client.sendall(b"GET /hold HTTP/1.0\r\n\r\n")
        assert application.entered.wait(10.0)
        with caplog.at_level(logging.WARNING, logger="gossip.http"):
            server.stop(timeout=0.0)
        assert any("still running after stop()" in r.getMessage() for r in caplog.records)
    finally:
        application.release.set()
        client.close()


def test_an_ipv6_loopback_server() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with HttpServer(App(), "[::1]:0") as server:
        assert server.address.startswith("[::1]:")
        assert exchange(server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
