"""The WebSocket listener (:class:`gossip.transports.websocket.listener.Listener`) on its own,
given fakes for what the transport hands it."""

from __future__ import annotations

import errno
import queue
import socket
import threading
from typing import Any

import pytest

from gossip.transports._admission import Admission, Ticket
from gossip.transports.websocket.admission import Refusal
from gossip.transports.websocket.listener import Listener, Pending

pytestmark = pytest.mark.integration

WAIT = 5.0


class _FailsOnce:
    """A listening socket whose first accept fails (out of file descriptors)."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.failed = False

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


def test_the_listener_survives_a_failed_accept_and_closes_what_admission_refuses() -> None:
    real = socket.create_server(("127.0.0.1", 0))
    real.setblocking(False)
    port = real.getsockname()[1]
    admission = Admission(max_connections=1, max_per_source=1, max_untrusted_per_source=1)
    counts: dict[str, int] = {}
    ready: queue.Queue[Pending] = queue.Queue()

    def admit(ip: str) -> Ticket | Refusal:
        ticket = admission.admit(ip)
        return Refusal(503, ticket) if isinstance(ticket, str) else ticket

    stop = threading.Event()
    listener = Listener(_FailsOnce(real), name="lt", tls=False, handshake_timeout=WAIT,  # type: ignore[arg-type]
                        admit=admit, release=admission.release, on_ready=ready.put,
                        count=lambda k, n: counts.__setitem__(k, counts.get(k, 0) + n), stop=stop)
    thread = listener.thread()
    thread.start()
    first = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    second = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        first.sendall(b"GET /gossip HTTP/1.1\r\n")
        pend = ready.get(timeout=WAIT)  # accepted on the next round, after the failure
        assert pend.buf.startswith(b"GET /gossip") and pend.ip == "127.0.0.1"
        try:
            assert second.recv(1) == b""  # over the one slot: closed at once
        except ConnectionResetError:
            pass
        pend.sock.close()
        admission.release(pend.ticket)
    finally:
        stop.set()
        listener.waker.wake()
        thread.join(WAIT)
        listener.close()
        first.close()
        second.close()
    assert not thread.is_alive() and admission.connections == 0 and counts == {}


class _Run:
    """A listener on a loopback socket, its thread running, with fakes for the transport."""

    def __init__(self, tls: bool = False, handshake_timeout: float = WAIT) -> None:
        self.real = socket.create_server(("127.0.0.1", 0))
        self.real.setblocking(False)
        self.port = self.real.getsockname()[1]
        self.admission = Admission(max_connections=8, max_per_source=8, max_untrusted_per_source=8)
        self.counts: dict[str, int] = {}
        self.ready: queue.Queue[Pending] = queue.Queue()
        self.stop = threading.Event()
        self.listener = Listener(self.real, name="lt", tls=tls, handshake_timeout=handshake_timeout,
                                 admit=self._admit, release=self.admission.release,
                                 on_ready=self.ready.put, count=self._count, stop=self.stop)
        self.thread = self.listener.thread()
        self.thread.start()

    def _admit(self, ip: str) -> Ticket | Refusal:
        ticket = self.admission.admit(ip)
        return Refusal(503, ticket) if isinstance(ticket, str) else ticket

    def _count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)

    def close(self) -> None:
        self.stop.set()
        self.listener.waker.wake()
        self.thread.join(WAIT)
        self.listener.close()
        assert not self.thread.is_alive()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_connection_reset_before_its_request_line_is_counted_and_released() -> None:
    from integration import wait_until

    run = _Run()
    try:
        c = run.connect()
        c.sendall(b"GET /gos")                             # part of a line, then a reset
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        wait_until(lambda: run.counts.get("ws_handshake_failed") == 1, WAIT, "the count")
        wait_until(lambda: run.admission.connections == 0, WAIT, "the slot given back")
        assert run.ready.empty()
    finally:
        run.close()


def test_a_request_line_longer_than_its_limit_is_dropped() -> None:
    from gossip.transports.websocket.listener import REQUEST_LINE_MAX
    from integration import wait_until

    run = _Run()
    c = run.connect()
    try:
        c.sendall(b"G" * REQUEST_LINE_MAX)               # no end of line in the whole limit
        c.settimeout(WAIT)
        assert _closed_by_peer(c)
        wait_until(lambda: run.counts.get("ws_handshake_failed") == 1, WAIT, "the count")
        assert run.admission.connections == 0 and run.ready.empty()
    finally:
        c.close()
        run.close()


def test_a_connection_silent_past_the_handshake_timeout_is_closed() -> None:
    from integration import wait_until

    run = _Run(handshake_timeout=0.2)
    c = run.connect()
    try:
        c.settimeout(WAIT)
        assert _closed_by_peer(c)                          # nothing sent: closed at the deadline
        wait_until(lambda: run.counts.get("ws_handshake_timeouts") == 1, WAIT, "the count")
        assert run.admission.connections == 0 and run.ready.empty()
    finally:
        c.close()
        run.close()


def test_over_tls_the_first_bytes_hand_the_connection_over() -> None:
    run = _Run(tls=True)
    c = run.connect()
    try:
        c.sendall(b"\x16\x03\x01")                         # a TLS record starts: no request line
        pend = run.ready.get(timeout=WAIT)
        assert pend.buf == b"" and pend.sock.getblocking()
        pend.sock.close()
        run.admission.release(pend.ticket)
    finally:
        c.close()
        run.close()


def test_connections_still_waiting_when_the_listener_stops_are_closed() -> None:
    run = _Run()
    c = run.connect()
    try:
        c.sendall(b"GET /gossip")                          # waiting for the rest of its line
        from integration import wait_until

        wait_until(lambda: run.admission.connections == 1, WAIT, "admitted")
        run.close()
        c.settimeout(WAIT)
        assert _closed_by_peer(c)
        assert run.admission.connections == 0
    finally:
        c.close()
