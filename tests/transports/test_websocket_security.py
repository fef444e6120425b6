"""The WebSocket transport under attack, driven as an attacker would: raw TCP connections,
hand-written HTTP handshakes and frames, a stranger's listener that records what it is sent,
a proxy that records a real exchange, on loopback (``127.0.0.0/8``: other sources than
``127.0.0.1`` are other hosts).

Every wait is bounded (scaled by ``GOSSIP_TESTS_TIMEOUT_FACTOR``); nothing asserts on speed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable

import pytest

from gossip.errors import ConnectError
from gossip.transports import Incoming

from integration import scaled, wait_until
from .test_websocket_transport import WAIT, Node, _port, nodes

pytestmark = pytest.mark.integration

__all__ = ["nodes"]  # the fixture, imported for this module's tests

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake_bytes(port: int, extra: dict[str, str] | None = None, path: str = "/gossip") -> bytes:
    """A client's opening handshake, as a browser or a script would write it."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def dial(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the listener from ``source`` (another loopback address is another host)."""
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))


def read_head(sock: socket.socket) -> bytes:
    """Read an HTTP response head (and whatever body came with it) until the blank line, EOF or
    a reset; ``b""`` if the server closed without answering."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data


def send_handshake(port: int, extra: dict[str, str] | None = None, source: str = "127.0.0.1",
                   raw: bytes | None = None) -> bytes:
    """Send one handshake (or ``raw`` bytes) on a new connection; return the response head."""
    with dial(port, source) as sock:
        sock.sendall(raw if raw is not None else handshake_bytes(port, extra))
        return read_head(sock)


def masked_binary(payload: bytes) -> bytes:
    """One masked binary frame, as a client sends it (RFC 6455 section 5.2)."""
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def gossip_threads_of(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"gossip-{name}-ws-")]


# ---------------------------------------------------------------------------------- a stranger


class Stranger:
    """A listener that is not a gossip node: it records every byte it is sent and answers the
    opening handshake as told (``"accept"``: a valid 101; ``"challenge"``: a 401 with a forged
    challenge)."""

    def __init__(self, mode: str, host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.recorded: list[bytes] = []
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.2)
        self.url = f"ws://{host}:{self.listener.getsockname()[1]}/gossip"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-stranger")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            with sock:
                sock.settimeout(WAIT)
                got = read_head(sock)
                try:
                    if self.mode == "accept":
                        self._answer(sock, got)
                    else:  # a challenge whose proof is made up: it does not hold the token
                        nonce = base64.urlsafe_b64encode(os.urandom(36)).rstrip(b"=").decode()
                        proof = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
                        sock.sendall(
                            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                            b"WWW-Authenticate: Gossip-HMAC realm=\"gossip\", nonce=\"" + nonce.encode()
                            + b"\", proof=\"" + proof.encode() + b"\"\r\nConnection: close\r\n\r\n")
                    sock.settimeout(1.0)
                    while chunk := sock.recv(65536):  # whatever the dialer sends afterwards
                        got += chunk
                except OSError:
                    pass
                self.recorded.append(got)

    @staticmethod
    def _answer(sock: socket.socket, request: bytes) -> None:
        key = ""
        for line in request.decode(errors="replace").split("\r\n"):
            if line.lower().startswith("sec-websocket-key:"):
                key = line.split(":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.listener.close()


@pytest.mark.parametrize("mode", ["accept", "challenge"])
def test_a_dial_to_a_stranger_shows_it_nothing_usable(nodes: Callable[..., Node], mode: str) -> None:
    token = "Zq8-tok3n-of-the-c1uster"
    real = nodes(bearer_token=token)
    dialer = nodes(bearer_token=token)
    stranger = Stranger(mode)
    try:
        with pytest.raises(ConnectError):
            dialer.t.send(stranger.url, b"a gossip frame", reliable=True)
        wait_until(lambda: bool(stranger.recorded), 5.0, "the stranger recorded the dial")
    finally:
        stranger.close()
    assert dialer.stat("ws_server_unproven") >= 1
    for got in stranger.recorded:
        assert token.encode() not in got
        assert b"authorization" not in got.lower() and b"gossip-auth" not in got.lower()
        assert b"a gossip frame" not in got
        # What the stranger holds opens nothing at the node it would like to get into.
        answer = send_handshake(_port(real.url), raw=got.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    assert real.inbox.empty()


class RecordingProxy:
    """A TCP relay in front of a node that records what each client connection sends."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sent: list[bytearray] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/gossip"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="test-proxy")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            server = socket.create_connection(("127.0.0.1", self.target), timeout=WAIT)
            record = bytearray()
            self.sent.append(record)
            self._socks += [client, server]
            for src, dst, rec in ((client, server, record), (server, client, None)):
                t = threading.Thread(target=self._pump, args=(src, dst, rec), name="test-proxy-pump")
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(WAIT)
        self.listener.close()


def test_a_recorded_handshake_opens_nothing(nodes: Callable[..., Node]) -> None:
    token = "r3corded-but-useless"
    b = nodes(bearer_token=token)
    a = nodes(bearer_token=token)
    proxy = RecordingProxy(_port(b.url))
    try:
        a.t.send(proxy.url, b"through an observer", reliable=True)
        assert b.get().data == b"through an observer"
    finally:
        a.t.close()
        proxy.close()
    assert proxy.sent, "the proxy saw the dial"
    answers = []
    for sent in proxy.sent:
        head = bytes(sent).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        assert token.encode() not in bytes(sent)
        answer = send_handshake(_port(b.url), raw=head)  # the recording, played again
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
        answers.append(answer)
    # The request that carried the proof was answered 101 once; played again, it is refused.
    assert any(b"nonce already used" in a for a in answers), answers
    assert b.stat("ws_auth_refused") >= 1
    assert b.inbox.empty()


def test_no_secret_in_the_debug_logs(nodes: Callable[..., Node], caplog: pytest.LogCaptureFixture) -> None:
    token = "l0gged-never-9fX"
    caplog.set_level(logging.DEBUG)
    b = nodes(bearer_token=token)
    a = nodes(bearer_token=token)
    a.t.send(b.url, b"logged dial", reliable=True)
    assert b.get().data == b"logged dial"
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "> GET /gossip HTTP/1.1" in text  # websockets logged the handshakes' headers
    assert token not in text
    assert "authorization" not in text.lower()


def test_a_repeated_header_is_a_bad_request_not_a_dead_reader(nodes: Callable[..., Node]) -> None:
    b = nodes(bearer_token="dup-headers-token")
    port = _port(b.url)
    for name, value in (("Gossip-Channel", "stream"), ("Origin", "https://x.example"),
                        ("Gossip-Challenge", "c2VjcmV0LW5vbmNlLW9mLWEtY2xpZW50")):
        raw = handshake_bytes(port, {name: value}).replace(
            b"\r\n\r\n", f"\r\n{name}: {value}\r\n\r\n".encode(), 1)
        assert send_handshake(port, raw=raw).startswith(b"HTTP/1.1 400")
    assert b.stat("ws_handshake_failed") == 3
    good = nodes(bearer_token="dup-headers-token")
    good.t.send(b.url, b"still answering", reliable=True)
    assert b.get().data == b"still answering"


# ---------------------------------------------------------------------------------- browsers


def test_a_browser_handshake_is_refused_by_default(nodes: Callable[..., Node]) -> None:
    b = nodes()
    port = _port(b.url)
    page = {"Origin": "https://ads.example.org", "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "websocket", "Sec-Fetch-Dest": "empty",
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"}
    assert send_handshake(port, page).startswith(b"HTTP/1.1 403")
    assert send_handshake(port, {"Origin": "null"}).startswith(b"HTTP/1.1 403")  # a sandboxed page
    # A page on loopback itself is still a page.
    assert send_handshake(port, {"Origin": "http://127.0.0.1:8080",
                                 "Sec-Fetch-Site": "same-site"}).startswith(b"HTTP/1.1 403")
    assert b.stat("ws_origin_refused") == 3
    assert send_handshake(port).startswith(b"HTTP/1.1 101")  # a program's handshake
    assert b.inbox.empty()


def test_an_allowed_origin_is_let_in(nodes: Callable[..., Node]) -> None:
    b = nodes(allowed_origins=["https://console.example.net"])
    port = _port(b.url)
    assert send_handshake(port, {"Origin": "https://Console.example.net",
                                 "Sec-Fetch-Site": "cross-site"}).startswith(b"HTTP/1.1 101")
    assert send_handshake(port, {"Origin": "https://console.example.net.evil.example",
                                 "Sec-Fetch-Site": "cross-site"}).startswith(b"HTTP/1.1 403")
    assert send_handshake(port, {"Sec-Fetch-Site": "cross-site"}).startswith(b"HTTP/1.1 403")
    assert b.stat("ws_origin_refused") == 2


# ---------------------------------------------------------------------------------- slots


def _idle_upgraded(port: int, source: str) -> socket.socket | None:
    """An upgraded connection that then sends nothing; None if the listener refused it."""
    sock = dial(port, source)
    try:
        sock.sendall(handshake_bytes(port))
        head = read_head(sock)
    except OSError:
        head = b""
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        return None
    return sock


def test_one_source_cannot_hold_every_untrusted_slot(nodes: Callable[..., Node]) -> None:
    # With the defaults, 64 connections not yet trusted may be held at once.
    b = nodes(preauth_timeout=scaled(60.0), handshake_timeout=scaled(30.0))
    port = _port(b.url)
    held: list[socket.socket] = []
    try:
        for _ in range(64):
            sock = _idle_upgraded(port, "127.0.0.2")
            if sock is not None:
                held.append(sock)
        assert len(held) < 64
        assert b.stat("ws_untrusted_per_source_refused") == 64 - len(held)
        other = _idle_upgraded(port, "127.0.0.3")  # another host still gets in
        assert other is not None
        held.append(other)
    finally:
        for sock in held:
            sock.close()


def test_frames_the_engine_refuses_do_not_keep_a_connection_open(nodes: Callable[..., Node]) -> None:
    b = nodes(preauth_timeout=0.5)
    port = _port(b.url)
    sock = _idle_upgraded(port, "127.0.0.2")
    assert sock is not None
    try:
        closed = False
        for _ in range(int(200 * scaled(1.0))):  # garbage every 50 ms, far below the deadline
            try:
                sock.sendall(masked_binary(b"\x00garbage that decodes to nothing"))
                sock.settimeout(0.05)
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
            if b.stat("ws_preauth_timeouts"):
                closed = True
                break
        assert closed
        wait_until(lambda: b.stat("ws_preauth_timeouts") == 1, 5.0, "the deadline is counted")
        assert not b.inbox.empty()  # the garbage reached the engine, which refused it
    finally:
        sock.close()


def test_a_connection_is_closed_after_too_many_refused_frames(nodes: Callable[..., Node]) -> None:
    b = nodes(max_rejected_frames=5, rejecting=True)
    sock = _idle_upgraded(_port(b.url), "127.0.0.2")
    assert sock is not None
    try:
        for _ in range(5):
            sock.sendall(masked_binary(os.urandom(40)))
        wait_until(lambda: b.stat("ws_rejected_frames_closed") == 1, 5.0, "the connection is closed")
        wait_until(lambda: b.stat("ws_connections") == 0, 5.0, "its slot is released")
        assert read_head(sock) == b""
    finally:
        sock.close()


def test_no_thread_for_a_connection_until_its_request_line(nodes: Callable[..., Node]) -> None:
    b = nodes(handshake_timeout=scaled(30.0))
    port = _port(b.url)
    before = len(gossip_threads_of("w0"))
    silent = [dial(port, "127.0.0.4") for _ in range(6)]
    try:
        # A full handshake behind them: accepted in order, so the silent ones are in by now.
        upgraded = _idle_upgraded(port, "127.0.0.5")
        assert upgraded is not None
        threads = len(gossip_threads_of("w0")) - before
        assert threads <= 2, f"{threads} threads for 6 silent connections and one open one"
        upgraded.close()
    finally:
        for sock in silent:
            sock.close()


def test_handshakes_under_way_are_capped_whatever_the_token(nodes: Callable[..., Node]) -> None:
    b = nodes(bearer_token="a-token-changes-nothing-here", handshake_timeout=scaled(30.0))
    port = _port(b.url)
    silent: list[socket.socket] = []
    try:
        for _ in range(12):  # 8 are allowed per source by default
            silent.append(dial(port, "127.0.0.6"))
        wait_until(lambda: b.stat("ws_untrusted_per_source_refused") == 4, 5.0,
                   "the connections over the per-source cap are refused")
        assert read_head(silent[-1]) == b""  # closed, not left waiting
        # Another host is not locked out, and the token is still checked.
        assert send_handshake(port, source="127.0.0.7").startswith(b"HTTP/1.1 401")
    finally:
        for sock in silent:
            sock.close()


# ---------------------------------------------------------------------------------- dials


def test_dials_to_strangers_never_use_up_the_members_budget() -> None:
    from gossip.transports.websocket import WebSocketTransport

    inbox: list[Incoming] = []
    member = WebSocketTransport("127.0.0.1:0", name="wm")
    member.start(inbox.extend)
    dialer = WebSocketTransport("127.0.0.1:0", name="wd", max_other_dials=5, max_other_dials_per_host=2,
                                handshake_timeout=scaled(30.0),
                                member_check=lambda host: host == "127.0.0.1")
    dialer.start(lambda batch: None)
    # Listeners that accept and then never answer: every dial to them stays open, half done.
    traps = [socket.create_server((f"127.0.0.{8 + i // 3}", 0), backlog=16) for i in range(9)]
    try:
        refused = 0
        for trap in traps:
            host, port = trap.getsockname()[:2]
            for path in ("/gossip", "/a", "/b"):
                try:
                    dialer.send(f"ws://{host}:{port}{path}", b"to a stranger")
                except ConnectError:
                    refused += 1
        stats = dialer.stats
        assert stats["ws_dial_refused_other_host"] + stats["ws_dial_refused_others"] == refused
        assert stats["ws_dial_refused_other_host"] >= 1 and stats["ws_dial_refused_others"] >= 1
        assert refused == 27 - 5
        dialer.send(member.local_addr, b"to a member", reliable=True)  # its own budget
        wait_until(lambda: any(p.data == b"to a member" for p in inbox), 5.0, "the member got it")
    finally:
        dialer.close()
        member.close()
        for trap in traps:
            trap.close()



def test_a_request_line_that_never_ends_or_a_silent_close_costs_no_thread(nodes: Callable[..., Node]) -> None:
    b = nodes()
    port = _port(b.url)
    with dial(port) as endless:  # 8 KiB with no end of line: dropped by the accept thread
        endless.sendall(b"G" * 8192)
        endless.settimeout(WAIT)
        try:
            assert endless.recv(1) == b""
        except ConnectionResetError:
            pass
    with dial(port):
        pass  # connects and closes without a byte
    wait_until(lambda: b.stat("ws_handshake_failed") == 2, 5.0, "both are counted")
    wait_until(lambda: b.stat("ws_connections") == 0 and b.t._admission.connections == 0, 5.0,
               "and their places given back")
    assert sorted(gossip_threads_of(b.t.name)) == [f"gossip-{b.t.name}-ws-accept",
                                                   f"gossip-{b.t.name}-ws-sweep"]


def test_a_connection_that_never_sends_its_request_line_is_dropped_in_time(nodes: Callable[..., Node]) -> None:
    b = nodes(handshake_timeout=0.3)
    with dial(_port(b.url)) as silent:
        silent.settimeout(WAIT)
        try:
            assert silent.recv(1) == b""
        except ConnectionResetError:
            pass
    assert b.stat("ws_handshake_timeouts") == 1
    wait_until(lambda: b.t._admission.connections == 0, 5.0, "its place is given back")
