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
