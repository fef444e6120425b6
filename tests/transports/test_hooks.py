"""``Config.dialer`` and ``Config.listener``: the sockets of the built-in transports made by the
application (overlay networks, tests). On loopback; waits are bounded polls."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from gossip import Cluster, Config
from gossip.errors import JoinError, TransportError
from gossip.transports._sockets import dial_socket, listen_socket

USER = 200


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


class Hooks:
    """A dialer and a listener that make ordinary sockets and record every call."""

    def __init__(self) -> None:
        self.dials: list[tuple[str, int]] = []
        self.listens: list[tuple[str, str, int]] = []
        self.made: list[socket.socket] = []
        self.lock = threading.Lock()

    def dialer(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        with self.lock:
            self.dials.append((host, port))
            self.made.append(sock)
        return sock

    def listener(self, kind: str, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        sock.bind((host, port))
        with self.lock:
            self.listens.append((kind, host, port))
            self.made.append(sock)
        return sock


def test_a_node_listens_and_dials_through_its_hooks() -> None:
    hooks = Hooks()
    got: list[object] = []
    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as seed, \
            Cluster(Config.local(bind_addr="127.0.0.1:0", dialer=hooks.dialer,
                                 listener=hooks.listener)) as a:
        port = int(a.address.rsplit(":", 1)[1])
        # TCP first (port 0: any), then UDP on the port TCP took; the sockets are the node's.
        assert hooks.listens == [("tcp", "127.0.0.1", 0), ("udp", "127.0.0.1", port)]
        assert {s.getsockname()[1] for s in hooks.made} == {port}
        seed.handle_func(USER, lambda sender, packet: got.append(packet.unmarshal()))
        assert a.join([seed.address]) == 1           # the join goes over a hooked dial
        seed_port = int(seed.address.rsplit(":", 1)[1])
        assert ("127.0.0.1", seed_port) in hooks.dials
        seed_node = seed.local_node()
        wait_until(lambda: a.get_node(seed_node.id) is not None, "a knows the seed")
        a.send_to_reliable(a.get_node(seed_node.id), USER, {"via": "hook"})  # type: ignore[arg-type]
        wait_until(lambda: got == [{"via": "hook"}], "the message arrives")
        wait_until(lambda: seed.num_alive_nodes() == 2, "the seed sees a (over a's UDP socket)")
    # The transport closed what the hooks made.
    assert all(s.fileno() == -1 for s in hooks.made)


def test_a_dialer_that_fails_fails_the_join_with_its_reason() -> None:
    def dialer(host: str, port: int, timeout: float) -> socket.socket:
        raise ConnectionRefusedError(111, "the overlay has no route")

    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as seed, \
            Cluster(Config.local(bind_addr="127.0.0.1:0", dialer=dialer)) as a:
        with pytest.raises(JoinError) as info:
            a.join([seed.address], timeout=2.0)
        assert "the overlay has no route" in str(info.value)


def test_a_listener_returning_the_wrong_socket_fails_the_start_with_why() -> None:
    def listener(kind: str, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a stream socket for UDP too
        if kind == "tcp":
            sock.bind((host, port))
        return sock

    c = Cluster(Config.local(bind_addr="127.0.0.1:0", listener=listener))
    with pytest.raises(TransportError, match="SOCK_STREAM socket for udp"):
        c.start()
    c.stop()


def test_hooks_that_return_no_socket_are_refused() -> None:
    with pytest.raises(OSError, match="dialer hook returned str"):
        dial_socket(lambda h, p, t: "not a socket", "127.0.0.1", 1, 1.0)  # type: ignore[arg-type, return-value]

    class Closable:
        closed = False

        def close(self) -> None:
            self.closed = True

    thing = Closable()
    with pytest.raises(OSError, match="listener hook returned Closable"):
        listen_socket(lambda k, h, p: thing, "tcp", socket.AF_INET, "127.0.0.1", 0)  # type: ignore[arg-type, return-value]
    assert thing.closed


def test_a_dialer_may_hand_over_a_unix_socket() -> None:
    """An overlay may carry the connection over anything with a socket: a socketpair here,
    whose far end is spliced to the seed's real TCP listener."""
    spliced: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def dialer(host: str, port: int, timeout: float) -> socket.socket:
        near, far = socket.socketpair()
        tcp = socket.create_connection((host, port), timeout=timeout)
        tcp.settimeout(None)
        for src, dst in ((far, tcp), (tcp, far)):
            t = threading.Thread(target=pump, args=(src, dst), daemon=True)
            t.start()
            spliced.append(t)
        return near

    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as seed, \
            Cluster(Config.local(bind_addr="127.0.0.1:0", dialer=dialer)) as a:
        assert a.join([seed.address]) == 1
        got: list[object] = []
        seed.handle_func_with_reply(USER, lambda s, p: {"echo": p.unmarshal()})
        wait_until(lambda: a.get_node(seed.local_node().id) is not None, "a knows the seed")
        reply = a.send_to_with_response(a.get_node(seed.local_node().id), USER, "hi")  # type: ignore[arg-type]
        got.append(reply)
        assert got == [{"echo": "hi"}]
    for t in spliced:
        t.join(5.0)


def test_a_websocket_node_listens_and_dials_through_its_hooks() -> None:
    hooks = Hooks()
    ws = dict(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0")
    with Cluster(Config.local(**ws)) as seed, \
            Cluster(Config.local(dialer=hooks.dialer, listener=hooks.listener, **ws)) as a:
        assert hooks.listens == [("websocket", "127.0.0.1", 0)]
        assert a.join([seed.address]) == 1
        assert hooks.dials and hooks.dials[0][0] == "127.0.0.1"
        wait_until(lambda: seed.num_alive_nodes() == 2 and a.num_alive_nodes() == 2, "converged")

