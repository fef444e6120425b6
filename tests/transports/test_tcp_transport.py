"""Integration tests of :class:`gossip.transports.socket.SocketTransport` on loopback
(:mod:`gossip.transports.tcp`)."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gossip.errors import ClusterClosed, ConnectError, GossipTimeout, MessageTooLarge
from gossip.transports import Incoming, SocketTransport, Transport
from gossip.transports.base import format_addr, split_host_port
from gossip.transports.socket import PREAMBLE_FRAMES, PREAMBLE_STREAM

pytestmark = pytest.mark.integration

FACTOR = float(os.environ.get("GOSSIP_TESTS_TIMEOUT_FACTOR", "1"))
WAIT = 5.0 * FACTOR


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_V6 = _ipv6_available()
HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not HAS_V6, reason="no IPv6"))]


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``pred`` until true or ``timeout`` passes (bounded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


class Node:
    """A started transport plus the queue its packets land in."""

    def __init__(self, host: str = "127.0.0.1", name: str = "t", rejecting: bool = False,
                 **kw: object) -> None:
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.rejecting = rejecting  # refuse every frame, as the engine refuses garbage
        self.t = SocketTransport(format_addr(host, 0), name=name, **kw)  # type: ignore[arg-type]
        self.t.start(self._on_packets)

    def _on_packets(self, batch: list[Incoming]) -> None:
        for p in batch:
            if self.rejecting and p.conn is not None:
                p.conn.mark_rejected()  # type: ignore[attr-defined]
            self.inbox.put_nowait(p)

    @property
    def addr(self) -> str:
        return self.t.local_addr

    def get(self) -> Incoming:
        return self.inbox.get(timeout=WAIT)


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(host: str = "127.0.0.1", **kw: object) -> Node:
        node = Node(host, name=f"t{len(made)}", **kw)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.t.close()


def test_satisfies_protocol() -> None:
    t = SocketTransport("127.0.0.1:0")
    assert isinstance(t, Transport)
    t.close()


@pytest.mark.parametrize("host", HOSTS)
def test_udp_round_trip(nodes: Callable[..., Node], host: str) -> None:
    a, b = nodes(host), nodes(host)
    ip, port, _ = split_host_port(a.addr)
    assert port != 0 and ip == host
    a.t.send(b.addr, b"hello")
    got = b.get()
    assert got.data == b"hello" and not got.reliable and got.conn is None
    assert got.src == a.addr
    assert b.t.stats["udp_received"] == 1


@pytest.mark.parametrize("host", HOSTS)
def test_tcp_frame_round_trip_and_reply(nodes: Callable[..., Node], host: str) -> None:
    a, b = nodes(host), nodes(host)
    a.t.send(b.addr, b"frame-1", reliable=True)
    got = b.get()
    assert got.data == b"frame-1" and got.reliable and got.conn is not None
    # reply on the connection: arrives on a's dialed (pooled) connection
    got.conn.send_frame(b"reply")
    back = a.get()
    assert back.data == b"reply" and back.reliable and back.src == b.addr


def test_large_frame_and_udp_limit(nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    big = os.urandom(64 * 1024)
    with pytest.raises(MessageTooLarge):
        a.t.send(b.addr, big)
    assert a.t.stats["udp_too_large"] == 1
    a.t.send(b.addr, big, reliable=True)
    assert b.get().data == big
    with pytest.raises(MessageTooLarge):
        a.t.send(b.addr, bytes(a.t.max_frame_size + 1), reliable=True)


def test_connection_reuse(nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    for i in range(5):
        a.t.send(b.addr, b"x%d" % i, reliable=True)
    assert [b.get().data for _ in range(5)] == [b"x%d" % i for i in range(5)]
    assert a.t.stats["tcp_dials"] == 1
    assert b.t.stats["tcp_accepts"] == 1


def test_redial_after_peer_closes(nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    a.t.send(b.addr, b"one", reliable=True)
    first = b.get()
    assert first.conn is not None
    first.conn.close()  # b drops the accepted connection
    assert wait_until(lambda: a.t.stats["tcp_dials"] == 1 and a.t._loop.counts()[1] == 0)
    a.t.send(b.addr, b"two", reliable=True)
    assert b.get().data == b"two"
    assert a.t.stats["tcp_dials"] == 2


def _responder(node: Node, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                msg = node.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.conn is not None and msg.data != b"ignore":
                msg.conn.send_frame(b"re:" + msg.data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("host", HOSTS)
def test_request_reply_reuses_connections(nodes: Callable[..., Node], host: str) -> None:
    a, b = nodes(host), nodes(host)
    stop = threading.Event()
    thread = _responder(b, stop)
    try:
        for i in range(3):
            assert a.t.request(b.addr, b"q%d" % i, timeout=WAIT) == b"re:q%d" % i
        assert a.t.stats["tcp_dials"] == 1
        with pytest.raises(GossipTimeout):
            a.t.request(b.addr, b"ignore", timeout=0.2)
        # the timed-out connection is not reused; the next request dials again
        assert a.t.request(b.addr, b"again", timeout=WAIT) == b"re:again"
        assert a.t.stats["tcp_dials"] == 2
    finally:
        stop.set()
        thread.join(WAIT)


def test_request_unknown_peer_raises_connect_error(nodes: Callable[..., Node]) -> None:
    a = nodes()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectError):
        a.t.request(f"127.0.0.1:{port}", b"x", timeout=1.0)
    with pytest.raises(ConnectError):
        a.t.send(f"127.0.0.1:{port}", b"x", reliable=True)


def test_force_reliable(nodes: Callable[..., Node]) -> None:
    a, b = nodes(udp=False), nodes(udp=False)
    assert a.t._udp is None
    a.t.send(b.addr, b"best-effort")
    got = b.get()
    assert got.data == b"best-effort" and got.reliable
    assert not [t for t in threading.enumerate() if t.name == "gossip-t0-udp-reader"]


def test_garbage_tcp_is_counted_and_transport_keeps_working(nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    ip, port, _ = split_host_port(b.addr)
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not a connection preamble
        raw.settimeout(WAIT)
        assert raw.recv(10) == b""  # the transport closed it
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        raw.sendall(PREAMBLE_FRAMES + struct.pack(">I", b.t.max_frame_size + 1) + b"xx")
        raw.settimeout(WAIT)
        assert raw.recv(10) == b""
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        raw.sendall(PREAMBLE_FRAMES + struct.pack(">I", 0))
        raw.settimeout(WAIT)
        assert raw.recv(10) == b""
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        # Within the frame limit, but over what a connection may announce before one of its
        # frames was accepted (1 MiB by default).
        raw.sendall(PREAMBLE_FRAMES + struct.pack(">I", 2 * 1024 * 1024) + b"xx")
        raw.settimeout(WAIT)
        assert raw.recv(10) == b""
    assert wait_until(lambda: b.t.stats["tcp_bad_frames"] == 2)
    assert b.t.stats["tcp_preauth_refused"] == 1
    assert b.t.stats["tcp_bad_preamble"] == 1
    a.t.send(b.addr, b"still fine", reliable=True)
    assert b.get().data == b"still fine"
    a.t.send(b.addr, b"udp fine")
    assert b.get().data == b"udp fine"


def test_garbage_udp_is_delivered_as_data(nodes: Callable[..., Node]) -> None:
    b = nodes()
    ip, port, _ = split_host_port(b.addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\xff\x00garbage", (ip, port))
        raw.sendto(b"", (ip, port))
    assert b.get().data == b"\xff\x00garbage"
    assert b.get().data == b""


def test_frames_split_across_writes(nodes: Callable[..., Node]) -> None:
    b = nodes()
    ip, port, _ = split_host_port(b.addr)
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        payload = PREAMBLE_FRAMES + struct.pack(">I", 5) + b"hello" + struct.pack(">I", 3) + b"abc"
        for i in range(len(payload)):
            raw.sendall(payload[i : i + 1])
        assert b.get().data == b"hello"
        assert b.get().data == b"abc"


def test_idle_accepted_connections_are_closed(nodes: Callable[..., Node]) -> None:
    b = nodes(idle_timeout=0.2)
    ip, port, _ = split_host_port(b.addr)
    with socket.create_connection((ip, port), timeout=WAIT) as raw:
        raw.settimeout(WAIT)
        assert raw.recv(10) == b""
    assert b.t.stats["tcp_idle_closed"] >= 1


def test_close_leaves_no_threads_or_fds() -> None:
    before = _fd_count()
    a = Node(name="leak-a")
    b = Node(name="leak-b")
    stop = threading.Event()
    thread = _responder(b, stop)
    a.t.send(b.addr, b"u")
    a.t.send(b.addr, b"r", reliable=True)
    assert a.t.request(b.addr, b"q", timeout=WAIT) == b"re:q"
    assert wait_until(lambda: b.t.stats["udp_received"] == 1)
    names = {t.name for t in threading.enumerate()}
    assert {"gossip-leak-a-udp-reader", "gossip-leak-a-tcp-io"} <= names
    start = time.monotonic()
    a.t.close()
    b.t.close()
    stop.set()
    thread.join(WAIT)
    assert time.monotonic() - start < 3.0
    assert not [t for t in threading.enumerate() if t.name.startswith("gossip-leak-")]
    assert _fd_count() == before
    a.t.close()  # idempotent
    with pytest.raises(ClusterClosed):
        a.t.send(b.addr, b"x")
    with pytest.raises(ClusterClosed):
        a.t.send(b.addr, b"x", reliable=True)
    with pytest.raises(ClusterClosed):
        a.t.request(b.addr, b"x", timeout=1.0)


def test_close_before_start_and_start_after_close() -> None:
    t = SocketTransport("127.0.0.1:0")
    t.close()
    with pytest.raises(ClusterClosed):
        t.start(lambda _p: None)


def test_bind_fixed_port_in_use_fails() -> None:
    a = Node(name="busy")
    try:
        from gossip.errors import TransportError

        with pytest.raises(TransportError):
            SocketTransport(a.addr).start(lambda _p: None)
    finally:
        a.t.close()


def test_callback_errors_do_not_kill_reader(nodes: Callable[..., Node]) -> None:
    calls: queue.Queue[bytes] = queue.Queue()

    def bad(batch: list[Incoming]) -> None:
        for p in batch:
            calls.put(p.data)
        raise RuntimeError("boom")

    t = SocketTransport("127.0.0.1:0", name="bad")
    t.start(bad)
    try:
        a = nodes()
        a.t.send(t.local_addr, b"1")
        a.t.send(t.local_addr, b"2", reliable=True)
        assert {calls.get(timeout=WAIT), calls.get(timeout=WAIT)} == {b"1", b"2"}
        assert t.stats["callback_errors"] == 2
    finally:
        t.close()


def test_concurrent_reliable_sends(nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    n_threads, per = 4, 50

    def worker(k: int) -> None:
        for i in range(per):
            a.t.send(b.addr, b"%d-%d" % (k, i) + bytes(1000), reliable=True)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT)
    got = {b.get().data[:8].split(b"\0")[0] for _ in range(n_threads * per)}
    assert len(got) == n_threads * per


def test_bad_addresses(nodes: Callable[..., Node]) -> None:
    from gossip.errors import AddressError

    a = nodes()
    for bad in ("localhost:80", "127.0.0.1", "::1:80", "127.0.0.1:99999", ""):
        with pytest.raises(AddressError):
            a.t.send(bad, b"x")


# ---------------------------------------------------------------------------------- hostile peers


def _raw(addr: str) -> socket.socket:
    ip, port, _ = split_host_port(addr)
    return socket.create_connection((ip, port), timeout=WAIT)


def _closed_by_peer(sock: socket.socket, timeout: float = WAIT) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_connections_per_source_are_capped(nodes: Callable[..., Node]) -> None:
    b = nodes(max_connections_per_source=3)
    held = [_raw(b.addr) for _ in range(3)]
    try:
        assert wait_until(lambda: b.t.stats["tcp_accepts"] == 3)
        extra = _raw(b.addr)
        assert _closed_by_peer(extra)
        extra.close()
        assert b.t.stats["tcp_rejected_per_source"] == 1
        held.pop().close()  # a slot frees up when a connection goes
        assert wait_until(lambda: b.t._loop.counts()[0] == 2)
        again = _raw(b.addr)
        again.sendall(PREAMBLE_FRAMES + struct.pack(">I", 2) + b"ok")
        assert b.get().data == b"ok"
        again.close()
    finally:
        for s in held:
            s.close()


def test_a_frame_trickling_in_too_slowly_is_cut(nodes: Callable[..., Node]) -> None:
    b = nodes(frame_timeout=0.3, idle_timeout=60.0)
    raw = _raw(b.addr)
    try:
        raw.sendall(PREAMBLE_FRAMES + struct.pack(">I", 100))
        # One byte every 0.1 s: the connection is never idle, but the frame never completes.
        closed = False
        for _ in range(int(30 * FACTOR)):
            try:
                raw.sendall(b"x")
            except OSError:
                closed = True
                break
            if b.t.stats["tcp_frame_timeouts"]:
                closed = True
                break
            time.sleep(0.1)
        assert closed and wait_until(lambda: b.t.stats["tcp_frame_timeouts"] == 1)
    finally:
        raw.close()


def _raw_from(addr: str, source: str) -> socket.socket:
    ip, port, _ = split_host_port(addr)
    return socket.create_connection((ip, port), timeout=WAIT, source_address=(source, 0))


def test_the_connection_holding_the_most_is_closed_not_the_newcomer(nodes: Callable[..., Node]) -> None:
    b = nodes(preauth_buffer_limit=200_000, preauth_max_frame_size=150_000)
    hog = [_raw_from(b.addr, "127.0.0.2") for _ in range(2)]  # the defaults allow 8 per host
    newcomer = _raw_from(b.addr, "127.0.0.3")
    try:
        # One host fills the shared pre-authentication budget (200 kB) with two half-sent
        # frames; a newcomer then sends the start of its own.
        for c in hog:
            c.sendall(PREAMBLE_FRAMES + struct.pack(">I", 150_000) + bytes(99_990))
        assert wait_until(lambda: b.t._admission.held_bytes >= 199_980)
        newcomer.sendall(PREAMBLE_FRAMES + struct.pack(">I", 150_000) + bytes(60_000))
        assert wait_until(lambda: b.t.stats["tcp_preauth_buffer_evicted"] == 1)
        assert sum(_closed_by_peer(c, 1.0) for c in hog) == 1  # the hog loses one of its own
        assert not _closed_by_peer(newcomer, 0.2)
        assert b.t._admission.held_bytes <= 200_000
    finally:
        for c in [*hog, newcomer]:
            c.close()
    assert wait_until(lambda: b.t._admission.held_bytes == 0)  # the budget is returned


def test_one_source_has_a_budget_of_its_own(nodes: Callable[..., Node]) -> None:
    b = nodes(preauth_buffer_limit=1_000_000, preauth_buffer_per_source=150_000,
              preauth_max_frame_size=100_000)
    hog = [_raw_from(b.addr, "127.0.0.4") for _ in range(3)]
    other = _raw_from(b.addr, "127.0.0.5")
    try:
        for c in hog:
            c.sendall(PREAMBLE_FRAMES + struct.pack(">I", 100_000) + bytes(60_000))
        other.sendall(PREAMBLE_FRAMES + struct.pack(">I", 100_000) + bytes(60_000))
        assert wait_until(lambda: b.t.stats["tcp_preauth_buffer_evicted"] == 1)
        assert sum(_closed_by_peer(c, 1.0) for c in hog) == 1
        assert not _closed_by_peer(other, 0.2)
    finally:
        for c in [*hog, other]:
            c.close()


def test_an_untrusted_connection_has_a_deadline_whatever_it_sends(nodes: Callable[..., Node]) -> None:
    b = nodes(preauth_timeout=0.5, idle_timeout=60.0)
    raw = _raw_from(b.addr, "127.0.0.6")
    try:
        raw.sendall(PREAMBLE_FRAMES)
        closed = False
        for _ in range(int(200 * FACTOR)):  # a whole frame every 50 ms: never idle, never slow
            try:
                raw.sendall(struct.pack(">I", 7) + b"garbage")
            except OSError:
                closed = True
                break
            if b.t.stats["tcp_preauth_timeouts"]:
                closed = True
                break
            time.sleep(0.05)
        assert closed and wait_until(lambda: b.t.stats["tcp_preauth_timeouts"] == 1)
        assert _closed_by_peer(raw)
    finally:
        raw.close()


def test_a_connection_is_closed_after_too_many_refused_frames(nodes: Callable[..., Node]) -> None:
    b = nodes(max_rejected_frames=4, rejecting=True)
    raw = _raw_from(b.addr, "127.0.0.7")
    try:
        raw.sendall(PREAMBLE_FRAMES + b"".join(struct.pack(">I", 3) + b"bad" for _ in range(4)))
        assert wait_until(lambda: b.t.stats["tcp_rejected_frames_closed"] == 1)
        assert _closed_by_peer(raw)
    finally:
        raw.close()


def test_untrusted_connections_per_source_and_slots_kept_for_members(nodes: Callable[..., Node]) -> None:
    b = nodes(max_connections=12, reserved_for_members=4, max_untrusted_per_source=3,
              member_check=lambda host: host == "127.0.0.1")
    held: list[socket.socket] = []
    try:
        held += [_raw_from(b.addr, "127.0.1.1") for _ in range(3)]
        extra = _raw_from(b.addr, "127.0.1.1")  # a fourth silent one from the same host
        assert _closed_by_peer(extra)
        extra.close()
        assert b.t.stats["tcp_untrusted_per_source_refused"] == 1
        for i in range(2, 7):  # 5 more hosts x 3: more than the 8 slots strangers may take
            held += [_raw_from(b.addr, f"127.0.1.{i}") for _ in range(3)]
        assert wait_until(lambda: b.t.stats["tcp_rejected_reserved_for_members"] == 18 - 8)
        # A member's host still gets a slot, and is heard.
        a = nodes()
        a.t.send(b.addr, b"from a member", reliable=True)
        assert b.get().data == b"from a member"
    finally:
        for c in held:
            c.close()


def test_idle_request_connections_are_swept(nodes: Callable[..., Node]) -> None:
    a, b = nodes(idle_timeout=0.3), nodes()
    stop = threading.Event()
    thread = _responder(b, stop)
    try:
        assert a.t.request(b.addr, b"q", timeout=WAIT) == b"re:q"
        assert a.t._requests.idle_count()  # kept for reuse...
        assert wait_until(lambda: not a.t._requests.idle_count())  # ...until idle too long
        assert a.t.stats["tcp_idle_closed"] >= 1
    finally:
        stop.set()
        thread.join(WAIT)


def test_stream_connections_reach_on_stream_and_carry_frames() -> None:
    got: queue.Queue[object] = queue.Queue()
    t = SocketTransport("127.0.0.1:0", name="st")
    t.start(lambda batch: None, got.put)
    a = SocketTransport("127.0.0.1:0", name="sa")
    a.start(lambda batch: None)
    try:
        s = a.dial_stream(t.local_addr, WAIT)
        s.send_frame(b"first")
        s.send_frame(bytes(1_000_000))  # larger than one read: read straight into its buffer
        s.close_write()
        other = got.get(timeout=WAIT)
        assert other.recv_frame(WAIT) == b"first"  # type: ignore[attr-defined]
        assert other.recv_frame(WAIT) == bytes(1_000_000)  # type: ignore[attr-defined]
        assert other.recv_frame(WAIT) is None  # type: ignore[attr-defined]
        other.send_frame(b"back")  # type: ignore[attr-defined]
        assert s.recv_frame(WAIT) == b"back"
        with pytest.raises(GossipTimeout):
            s.recv_frame(0.05)
        other.close()  # type: ignore[attr-defined]
        assert s.recv_frame(WAIT) is None
        s.close()
        assert t.stats["streams_accepted"] == 1 and a.stats["streams_dialed"] == 1
        assert wait_until(lambda: not t._streams and not a._streams)
    finally:
        a.close()
        t.close()
