"""End-to-end behaviour over real UDP/TCP sockets on loopback (127.0.0.1 and ::1).

Complements ``tests/test_cluster_memory.py`` and ``tests/engine/test_engine.py`` (the same behaviours
on the in-memory transport) with what only real sockets show: the socket transport's MTU rule
and TCP framing, hostile datagrams and streams, a crashed *process*, fds and threads released.

Clusters use :meth:`gossip.Config.local` (fast failure detection) bound on port 0. Every wait is
bounded (:func:`wait_until`); nothing asserts on speed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import gossip
from gossip.transports.socket import PREAMBLE_FRAMES
from gossip import Cluster, Config, Node, NodeID, NodeState, Packet

from . import REPO_ROOT, gossip_threads, scaled, wait_until

pytestmark = pytest.mark.integration

NODE_PROC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_proc.py")


# ---------------------------------------------------------------------------------- helpers


def start_cluster(n: int, host: str = "127.0.0.1", **overrides: Any) -> list[Cluster]:
    """Start ``n`` nodes on ``host`` (ephemeral ports) and join them through the first one."""
    bind = f"[{host}]:0" if ":" in host else f"{host}:0"
    return start_joined([{"bind_addr": bind, **overrides}] * n)


def start_joined(configs: list[dict[str, Any]]) -> list[Cluster]:
    """Start one node per set of ``Config.local`` fields and join each through the first; if
    any step fails, stop the ones started and raise."""
    clusters: list[Cluster] = []
    try:
        for fields in configs:
            c = Cluster(Config.local(**fields))
            c.start()
            clusters.append(c)
        for c in clusters[1:]:
            assert c.join(clusters[0].address, timeout=scaled(5.0)) == 1
    except BaseException:
        stop_all(clusters)
        raise
    return clusters


def stop_all(clusters: list[Cluster]) -> None:
    """Stop every cluster (in parallel: each stop waits for its leave to flush)."""
    threads = [threading.Thread(target=c.stop, kwargs={"timeout": 3.0}) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def state_of(viewer: Cluster, node_id: NodeID) -> NodeState | None:
    node = viewer.get_node(node_id)
    return None if node is None else node.state


def all_see(clusters: list[Cluster], ids: list[NodeID], state: NodeState) -> bool:
    return all(state_of(c, i) is state for c in clusters for i in ids)


def wait_converged(clusters: list[Cluster], timeout: float = 20.0) -> None:
    ids = [c.local_node().id for c in clusters]

    def converged() -> bool:
        return all(c.num_alive_nodes() == len(clusters) for c in clusters) and \
            all_see(clusters, ids, NodeState.ALIVE)

    wait_until(converged, timeout, f"each of {len(clusters)} nodes sees {len(clusters)} alive")


def node_of(viewer: Cluster, target: Cluster) -> Node:
    node = viewer.get_node(target.local_node().id)
    assert node is not None, "the target node is unknown to the viewer"
    return node


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass
class StateRecorder:
    """A state handler recording each call: (node, prev, state, thread, enter, exit)."""

    calls: list[tuple[NodeID, NodeState, NodeState, str, float, float]]
    lock: threading.Lock

    @classmethod
    def new(cls) -> StateRecorder:
        return cls([], threading.Lock())

    def __call__(self, node: Node, prev: NodeState) -> None:
        enter = time.monotonic()
        time.sleep(0.002)  # widen the window in which a concurrent call would overlap
        exit_ = time.monotonic()
        with self.lock:
            self.calls.append((node.id, prev, node.state, threading.current_thread().name,
                               enter, exit_))

    def transitions(self, node_id: NodeID) -> list[tuple[NodeState, NodeState]]:
        with self.lock:
            return [(p, s) for (i, p, s, *_rest) in self.calls if i == node_id]

    def assert_serial(self) -> None:
        """No two calls overlapped in time, and all ran on one thread."""
        with self.lock:
            calls = list(self.calls)
        threads = {c[3] for c in calls}
        assert len(threads) == 1, f"state events ran on several threads: {threads}"
        spans = [(c[4], c[5]) for c in calls]  # in order of completion
        for (e1, x1), (e2, x2) in zip(spans, spans[1:]):
            assert e2 >= x1, "two state handler calls overlapped"


def assert_ordered(transitions: list[tuple[NodeState, NodeState]], final: NodeState) -> None:
    """Check a node's transitions chain up and visit UNKNOWN, ALIVE, [SUSPECT], ``final`` in order."""
    assert transitions, "no state event at all"
    assert transitions[0] == (NodeState.UNKNOWN, NodeState.ALIVE), transitions
    for (p1, s1), (p2, s2) in zip(transitions, transitions[1:]):
        assert p2 is s1, f"events out of order: {transitions}"
    assert transitions[-1][1] is final, transitions
    order = [NodeState.UNKNOWN, NodeState.ALIVE, NodeState.SUSPECT, final]
    # The first time each state is reached follows the lifecycle order (a refuted suspicion,
    # SUSPECT -> ALIVE, may happen under load and is allowed in between).
    firsts: list[NodeState] = []
    for _p, s in transitions:
        if s not in firsts:
            firsts.append(s)
    positions = [order.index(s) for s in firsts]
    assert positions == sorted(positions), f"states reached out of order: {transitions}"


class NodeProcess:
    """A gossip node in a child process (``node_proc.py``), read line by line."""

    def __init__(self, join: str, *extra: str) -> None:
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, NODE_PROC, "--join", join, "--preset", "local", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="test-node-proc-reader",
                                        daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + scaled(timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                err = ""
                if self.proc.poll() is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read()[-2000:]
                pytest.fail(f"the node process did not report {event!r} in time {err}")
            try:
                msg = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if msg.get("event") == event:
                return msg

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


# ---------------------------------------------------------------------------------- lifecycle


def test_stop_releases_every_thread_and_fd() -> None:
    # First in the module: no other cluster of this module holds sockets yet.
    threads_before = set(gossip_threads())
    fds_before = open_fds()
    clusters = start_cluster(3)
    try:
        wait_converged(clusters)
        got = threading.Event()
        clusters[1].handle_func(gossip.USER_MSG, lambda s, p: got.set())
        # Over the datagram limit: opens pooled TCP connections that stop() must close.
        clusters[0].send_to(node_of(clusters[0], clusters[1]), gossip.USER_MSG, os.urandom(4000))
        assert got.wait(scaled(5.0)), "the direct message did not arrive"
        assert open_fds() > fds_before
    finally:
        stop_all(clusters)
    for c in clusters:
        c.stop()  # idempotent
    wait_until(lambda: not (set(gossip_threads()) - threads_before), 3.0,
               "no gossip- thread is alive after stop()")
    wait_until(lambda: open_fds() <= fds_before, 3.0,
               f"the open fd count returns to {fds_before} (now {open_fds()})")
    assert not any(c.local_node().alive() for c in clusters)


def test_three_nodes_converge_on_ipv6_loopback() -> None:
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available")
    clusters = start_cluster(3, host="::1")
    try:
        assert all(c.address.startswith("[::1]:") for c in clusters), [c.address for c in clusters]
        wait_converged(clusters)
    finally:
        stop_all(clusters)


# ---------------------------------------------------------------------------------- a 10-node cluster


@pytest.fixture(scope="module")
def ten() -> Iterator[list[Cluster]]:
    """Ten in-process nodes on 127.0.0.1 (shared by the messaging tests of this module)."""
    clusters = start_cluster(10)
    yield clusters
    stop_all(clusters)


def test_ten_nodes_converge(ten: list[Cluster]) -> None:
    wait_converged(ten)
    for c in ten:
        assert c.num_nodes() == 10
        assert len(c.alive_nodes()) == 10


def test_metadata_update_reaches_everyone_and_fires_handlers(ten: list[Cluster]) -> None:
    wait_converged(ten)
    origin = ten[3]
    oid = origin.local_node().id
    fired: set[int] = set()
    lock = threading.Lock()
    hids = []
    for i, c in enumerate(ten):
        def on_meta(node: Node, i: int = i) -> None:
            if node.id == oid and node.metadata.get_string("role") == "db-primary":
                with lock:
                    fired.add(i)
        hids.append(c.handle_node_metadata_change_func(on_meta))
    try:
        origin.local_metadata().set_string("role", "db-primary").set_int("shard", 7)
        origin.update_metadata()

        def everywhere() -> bool:
            for c in ten:
                node = c.get_node(oid)
                if node is None or node.metadata.get_string("role") != "db-primary" \
                        or node.metadata.get_int("shard") != 7:
                    return False
            return True

        wait_until(everywhere, 10.0, "the metadata update is visible on all 10 nodes")
        wait_until(lambda: len(fired) == 10, 5.0,
                   f"the metadata handler fired on all 10 nodes (fired on {sorted(fired)})")
    finally:
        for c, hid in zip(ten, hids):
            c.remove_node_metadata_change_handler(hid)


def broadcast_exactly_once(clusters: list[Cluster], sender: int, mtype: int,
                           count: int = 1) -> list[list[int]]:
    """Send ``count`` broadcasts; each must reach every other node exactly once (and never the
    sender). Returns the per-node delivery counts of each broadcast.

    Every hop goes to ``broadcast_redundancy`` x ``calc_fan_out()`` random peers, which on 10
    nodes reaches everyone; with paularlott's single fan-out about one broadcast in 50 missed a
    node here, which is why the redundancy exists.
    """
    n = len(clusters)
    counts: dict[int, list[int]] = {}
    lock = threading.Lock()
    for i, c in enumerate(clusters):
        def on_msg(s: Node | None, packet: Packet, i: int = i) -> None:
            seq = packet.unmarshal()["seq"]
            with lock:
                counts.setdefault(seq, [0] * n)[i] += 1
        c.handle_func(mtype, on_msg)
    others = [i for i in range(n) if i != sender]
    try:
        for seq in range(count):
            clusters[sender].send(mtype, {"seq": seq})
            wait_until(lambda: all(counts.get(seq, [0] * n)[i] >= 1 for i in others), 5.0,
                       f"broadcast {seq} reaching all {n - 1} other nodes (got {counts.get(seq)})")
        time.sleep(scaled(0.5))  # relays still in flight would arrive by now
        with lock:
            rows = [list(counts.get(k, [0] * n)) for k in range(count)]
        for k, r in enumerate(rows):
            assert r[sender] == 0, f"the sender received its own broadcast {k}: {r}"
            assert max(r) <= 1, f"broadcast {k} was delivered twice somewhere: {r}"
        return rows
    finally:
        for c in clusters:
            c.unregister_message_type(mtype)


def test_broadcast_reaches_every_node_exactly_once(ten: list[Cluster]) -> None:
    wait_converged(ten)
    rows = broadcast_exactly_once(ten, 0, gossip.USER_MSG + 10, count=20)
    assert rows == [[0] + [1] * 9] * 20


def test_64k_send_to_arrives_intact_over_tcp(ten: list[Cluster]) -> None:
    a, b = ten[0], ten[5]
    mtype = gossip.USER_MSG + 11
    blob = os.urandom(64 * 1024)  # incompressible: the packet stays > the datagram limit
    got: list[bytes] = []
    b.handle_func_no_forward(mtype, lambda s, p: got.append(p.unmarshal()))
    try:
        sent_before = a.stats().get("transport.tcp_sent", 0)
        too_large_before = a.stats().get("transport.udp_too_large", 0)
        a.send_to(node_of(a, b), mtype, blob)
        wait_until(lambda: len(got) == 1, 10.0, "the 64 KiB message arrived")
        assert got[0] == blob
        stats = a.stats()
        assert stats.get("transport.tcp_sent", 0) > sent_before, "the 64 KiB packet did not use TCP"
        assert stats.get("transport.udp_too_large", 0) == too_large_before
        assert not any(k.startswith("send_errors.") for k in stats), stats
    finally:
        b.unregister_message_type(mtype)


@dataclass
class Ask:
    n: int


def test_send_to_with_response_and_timeout(ten: list[Cluster]) -> None:
    a, b = ten[1], ten[2]
    release = threading.Event()
    b.handle_func_with_reply(gossip.USER_MSG + 12, lambda s, p: {"double": 2 * p.unmarshal(Ask).n,
                                                                  "from": str(s.id) if s else None})
    b.handle_func_with_reply(gossip.USER_MSG + 13, lambda s, p: release.wait(scaled(5.0)) and "late")
    try:
        node_b = node_of(a, b)
        reply = a.send_to_with_response(node_b, gossip.USER_MSG + 12, Ask(21), timeout=scaled(5.0))
        assert reply == {"double": 42, "from": str(a.local_node().id)}
        with pytest.raises(gossip.errors.GossipTimeout):
            a.send_to_with_response(node_b, gossip.USER_MSG + 13, Ask(1), timeout=0.3)
    finally:
        release.set()
        b.unregister_message_type(gossip.USER_MSG + 12)
        b.unregister_message_type(gossip.USER_MSG + 13)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Read until the peer closes ``sock`` (end of stream or reset): True; False if it stays open.

    A read that times out means the connection is still open, which is not a close.
    """
    sock.settimeout(scaled(timeout))
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return True


def test_garbage_datagrams_and_streams_are_counted_and_harmless(ten: list[Cluster]) -> None:
    target = ten[7]
    host, _, port_s = target.address.rpartition(":")
    port = int(port_s)

    def bad_packets() -> int:
        return sum(v for k, v in target.stats().items() if k.startswith("bad_packets."))

    bad_before = bad_packets()
    frames_before = target.stats().get("transport.tcp_bad_frames", 0)
    rng = __import__("random").Random(1234)
    n_dgrams = 40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(n_dgrams):
            udp.sendto(rng.randbytes(rng.randint(1, 1200)), (host, port))
            time.sleep(0.001)
    # A TCP connection with a well-framed junk packet, then one with an absurd length prefix,
    # then one that does not even start with a connection preamble.
    junk = rng.randbytes(300)
    with socket.create_connection((host, port), timeout=scaled(2.0)) as tcp:
        tcp.sendall(PREAMBLE_FRAMES + struct.pack(">I", len(junk)) + junk)
    with socket.create_connection((host, port), timeout=scaled(2.0)) as tcp:
        tcp.sendall(PREAMBLE_FRAMES + struct.pack(">I", 0xFFFF_FFF0) + rng.randbytes(64))
        assert closed_by_peer(tcp, 5.0), "the node kept a connection with an absurd length prefix"
    wait_until(lambda: bad_packets() >= bad_before + n_dgrams + 1, 5.0,
               f"{n_dgrams} junk datagrams and 1 junk TCP frame counted as bad packets "
               f"(counted {bad_packets() - bad_before})")
    wait_until(lambda: target.stats().get("transport.tcp_bad_frames", 0) > frames_before, 5.0,
               "the absurd length prefix counted as a bad frame")
    with socket.create_connection((host, port), timeout=scaled(2.0)) as tcp:
        tcp.sendall(rng.randbytes(64))
        assert closed_by_peer(tcp, 5.0), "the node kept a connection without a preamble"
    wait_until(lambda: target.stats().get("transport.tcp_bad_preamble", 0) >= 1, 5.0,
               "the connection without a preamble counted")
    assert not [k for k in target.stats() if k.startswith("errors.")]
    # The cluster still works: a broadcast from the attacked node reaches everyone.
    broadcast_exactly_once(ten, 7, gossip.USER_MSG + 14)
    wait_converged(ten, timeout=5.0)


# ---------------------------------------------------------------------------------- failures


def test_killed_process_is_declared_dead_and_events_are_ordered() -> None:
    clusters = start_cluster(3)
    watcher = clusters[0]
    recorder = StateRecorder.new()
    watcher.handle_node_state_change_func(recorder)
    child: NodeProcess | None = None
    try:
        wait_converged(clusters)
        child = NodeProcess(watcher.address)
        ready = child.wait_event("ready", 20.0)
        assert ready.get("joined") == 1, ready
        cid = NodeID.parse(ready["id"])
        assert ready["addr"].startswith("127.0.0.1:")
        wait_until(lambda: all_see(clusters, [cid], NodeState.ALIVE), 10.0,
                   "every node sees the child process alive")
        child.kill()
        wait_until(lambda: all_see(clusters, [cid], NodeState.DEAD), 30.0,
                   "every node declares the SIGKILLed process dead")
        wait_until(lambda: any(s is NodeState.DEAD for _p, s in recorder.transitions(cid)), 5.0,
                   "the DEAD event reached the state handler")
        assert_ordered(recorder.transitions(cid), NodeState.DEAD)
        recorder.assert_serial()
        # The survivors still see each other alive.
        ids = [c.local_node().id for c in clusters]
        assert all_see(clusters, ids, NodeState.ALIVE)
    finally:
        if child is not None:
            child.kill()
        stop_all(clusters)


def test_leave_is_seen_as_leaving_with_ordered_events() -> None:
    watchers = start_cluster(3)
    recorders = []
    for w in watchers:
        r = StateRecorder.new()
        recorders.append(r)
        w.handle_node_state_change_func(r)
    leaver = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    clusters = [*watchers, leaver]
    try:
        leaver.start()
        lid = leaver.local_node().id
        assert leaver.join(watchers[1].address, timeout=scaled(5.0)) == 1
        wait_converged(clusters)
        leaver.leave()
        wait_until(lambda: all_see(watchers, [lid], NodeState.LEAVING), 10.0,
                   "the other nodes see the leaver LEAVING")
        for r in recorders:
            def delivered(r: StateRecorder = r) -> bool:
                return (NodeState.ALIVE, NodeState.LEAVING) in r.transitions(lid)

            wait_until(delivered, 5.0, "the LEAVING event reached the state handler")
            assert_ordered(r.transitions(lid), NodeState.LEAVING)
            r.assert_serial()
    finally:
        stop_all(clusters)
