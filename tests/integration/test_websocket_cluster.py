"""Clusters over WebSocket on loopback: WebSocket-only processes, wss, bearer tokens, mixed
clusters of socket and WebSocket nodes, and nodes served by their host (ASGI under uvicorn,
a ``websockets.sync`` server).

Clusters use :meth:`gossip.Config.local` (fast failure detection) on port 0. Every wait is
bounded (:func:`wait_until`); nothing asserts on speed.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import queue
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.server import serve

import gossip
from gossip import Cluster, Config, JoinError, Node, NodeID, NodeState, Packet
from gossip.errors import TransportError
from gossip.transports.multi import MultiTransport
from gossip.transports.socket import SocketTransport

from . import gossip_threads, scaled, wait_until, ws_connect
from .test_loopback import (NodeProcess, all_see, broadcast_exactly_once, node_of, open_fds, start_joined,
                            stop_all, wait_converged)
from .tls import make_pki

WS = {"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0"}


def start_nodes(kinds: str, **overrides: Any) -> list[Cluster]:
    """Start one node per letter (``s``: UDP/TCP, ``w``: WebSocket only), joined through the first."""
    return start_joined([{**(WS if kind == "w" else {"bind_addr": "127.0.0.1:0"}), **overrides}
                         for kind in kinds])


def ws_stat(c: Cluster, key: str) -> int:
    return c.stats().get(f"transport.{key}", 0)


def bad_packets(c: Cluster) -> int:
    return sum(v for k, v in c.stats().items() if k.startswith("bad_packets."))


def pairs_answer(clusters: list[Cluster], mtype: int) -> None:
    """Every node asks every other one a question and gets its answer."""
    for i, c in enumerate(clusters):
        c.handle_func_with_reply(mtype, lambda s, p, i=i: {"by": i, "echo": p.unmarshal()})
    try:
        for i, a in enumerate(clusters):
            for j, b in enumerate(clusters):
                if i != j:
                    reply = a.send_to_with_response(node_of(a, b), mtype, [i, j], timeout=scaled(5.0))
                    assert reply == {"by": j, "echo": [i, j]}, (a.address, b.address, reply)
    finally:
        for c in clusters:
            c.unregister_message_type(mtype)


def streams_across(clusters: list[Cluster], mtype: int) -> None:
    """Every node opens a stream to every other one, writes 256 KiB and reads back its digest."""
    def serve(sender: Node | None, packet: Packet, stream: Any) -> None:
        data = stream.read()
        stream.write(hashlib.sha256(data).digest() + packet.unmarshal().encode())
        stream.close_write()

    for c in clusters:
        c.handle_stream_func(mtype, serve)
    try:
        for i, a in enumerate(clusters):
            for j, b in enumerate(clusters):
                if i == j:
                    continue
                blob = os.urandom(256 * 1024)
                with a.open_stream(node_of(a, b), mtype, f"{i}->{j}", timeout=scaled(5.0)) as st:
                    st.settimeout(scaled(5.0))
                    st.write(blob)
                    st.close_write()
                    assert st.read() == hashlib.sha256(blob).digest() + f"{i}->{j}".encode()
    finally:
        for c in clusters:
            c.unregister_message_type(mtype)


# ---------------------------------------------------------------------------------- lifecycle


def test_stop_releases_every_thread_and_fd() -> None:
    # First in the module: no other cluster of this module holds sockets yet.
    threads_before = set(gossip_threads())
    fds_before = open_fds()
    clusters = start_nodes("wws")
    try:
        wait_converged(clusters)
        pairs_answer(clusters, gossip.USER_MSG + 20)  # pooled, request and TCP connections
        assert open_fds() > fds_before
    finally:
        stop_all(clusters)
    wait_until(lambda: not (set(gossip_threads()) - threads_before), 3.0,
               "no gossip- thread is alive after stop()")
    wait_until(lambda: open_fds() <= fds_before, 3.0,
               f"the open fd count returns to {fds_before} (now {open_fds()})")


# ---------------------------------------------------------------------------------- processes


class History:
    """Every line a node process reported, kept (``NodeProcess.wait_event`` drops the others)."""

    def __init__(self, proc: NodeProcess) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    def wait(self, what: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Return the first event with all of ``fields``, waiting up to ``timeout`` (scaled)."""
        end = time.monotonic() + scaled(timeout)
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if all(ev.get(k) == v for k, v in fields.items()):
                    return ev
            seen = len(self.events)
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"the node process did not report {what} in time")
            try:
                self.events.append(self.proc.lines.get(timeout=min(left, 0.1)))
            except queue.Empty:
                pass


def test_three_websocket_only_processes_see_a_crash_and_a_leave() -> None:
    procs: list[NodeProcess] = []
    try:
        procs.append(NodeProcess("", "--ws-bind", "127.0.0.1:0", "--expect", "3"))
        logs = [History(procs[0])]
        ready = logs[0].wait("ready", 20.0, event="ready")
        url = ready["addr"]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/gossip")
        ids = [ready["id"]]
        for _ in range(2):
            procs.append(NodeProcess(url, "--ws-bind", "127.0.0.1:0", "--expect", "3"))
            logs.append(History(procs[-1]))
            r = logs[-1].wait("ready", 20.0, event="ready")
            assert r.get("joined") == 1 and r["addr"].startswith("ws://"), r
            ids.append(r["id"])
        for log in logs:
            log.wait("all three alive", 15.0, event="all_alive")
        procs[2].kill()
        for log in logs[:2]:
            log.wait("the killed node dead", 30.0, event="state", node=ids[2], state="dead")
        assert procs[1].proc.stdin is not None
        procs[1].proc.stdin.write("leave\n")
        procs[1].proc.stdin.flush()
        logs[0].wait("the leaver leaving", 10.0, event="state", node=ids[1], state="left")
    finally:
        for p in procs:
            p.kill()


# ---------------------------------------------------------------------------------- mixed


def test_mixed_cluster_of_socket_and_websocket_nodes() -> None:
    clusters = start_nodes("swswsw")
    socket_nodes, ws_nodes = clusters[0::2], clusters[1::2]
    try:
        assert all(not c.address.startswith("ws") for c in socket_nodes)
        assert all(c.address.startswith("ws://") for c in ws_nodes)
        for c in ws_nodes:  # listens on WebSocket only: its socket side binds nothing
            transport = c._engine.transport
            assert isinstance(transport, MultiTransport)
            side = transport.socket
            assert side is None or (isinstance(side, SocketTransport) and side.local_addr == "")
        wait_converged(clusters)
        rows = broadcast_exactly_once(clusters, 0, gossip.USER_MSG + 21, count=3)
        assert rows == [[0, 1, 1, 1, 1, 1]] * 3
        rows = broadcast_exactly_once(clusters, 1, gossip.USER_MSG + 22, count=3)
        assert rows == [[1, 0, 1, 1, 1, 1]] * 3
        pairs_answer(clusters, gossip.USER_MSG + 23)
        streams_across(clusters[:4], gossip.USER_MSG + 30)
        ws_nodes[0].local_metadata().set_string("zone", "behind-the-proxy")
        wait_until(lambda: all(
            (n := c.get_node(ws_nodes[0].local_node().id)) is not None
            and n.metadata.get_string("zone") == "behind-the-proxy" for c in clusters), 10.0,
            "the WebSocket node's metadata reaches every node")
        assert ws_stat(socket_nodes[0], "ws_dials") > 0, "the socket node never dialed WebSocket"
        assert ws_stat(ws_nodes[0], "tcp_dials") > 0, "the WebSocket node never dialed TCP"
        # One node of each kind crashes; the survivors (two of each kind) see both dead.
        gone = [socket_nodes[2], ws_nodes[2]]
        gone_ids = [c.local_node().id for c in gone]
        for c in gone:
            c._crash()
        survivors = [*socket_nodes[:2], *ws_nodes[:2]]
        wait_until(lambda: all_see(survivors, gone_ids, NodeState.DEAD), 30.0,
                   "both kinds declare both crashed nodes dead")
        assert all_see(survivors, [c.local_node().id for c in survivors], NodeState.ALIVE)
    finally:
        stop_all(clusters)


# ---------------------------------------------------------------------------------- security


def test_wss_cluster_with_a_private_ca(tmp_path: pathlib.Path) -> None:
    pki = make_pki(tmp_path)
    tls = {"tls_cert_file": pki.cert, "tls_key_file": pki.key, "tls_ca_file": pki.ca}
    clusters = start_nodes("ww", **tls)
    socket_node = Cluster(Config.local(bind_addr="127.0.0.1:0", tls_ca_file=pki.ca))
    stranger = Cluster(Config.local(**WS))  # verifies against the system's authorities only
    try:
        assert all(c.address.startswith("wss://127.0.0.1:") for c in clusters)
        socket_node.start()
        assert socket_node.join(clusters[1].address, timeout=scaled(5.0)) == 1
        clusters.append(socket_node)
        wait_converged(clusters)
        pairs_answer(clusters, gossip.USER_MSG + 24)
        stranger.start()
        with pytest.raises(JoinError, match="(?i)certificate"):
            stranger.join(clusters[0].address, timeout=scaled(5.0))
        assert stranger.num_nodes() == 1
    finally:
        stop_all([*clusters, stranger] if socket_node in clusters else [*clusters, socket_node, stranger])


def test_wrong_or_missing_token_is_refused_counted_and_nothing_joins() -> None:
    owner = start_nodes("w", bearer_token="cluster-secret")[0]
    wrong = Cluster(Config.local(bearer_token="not-the-secret", **WS))
    missing = Cluster(Config.local(bind_addr="127.0.0.1:0"))  # a socket node dialing WebSocket
    right = Cluster(Config.local(bind_addr="127.0.0.1:0", bearer_token="cluster-secret"))
    try:
        for c in (wrong, missing, right):
            c.start()
        # The owner proves its token first: a node with another one stops there, sends nothing.
        with pytest.raises(JoinError, match="did not prove it holds the bearer token"):
            wrong.join(owner.address, timeout=scaled(5.0))
        assert ws_stat(wrong, "ws_server_unproven") >= 1
        with pytest.raises(JoinError, match="401: Unauthorized: this node requires proof"):
            missing.join(owner.address, timeout=scaled(5.0))
        assert ws_stat(owner, "ws_auth_refused") >= 1
        assert owner.num_nodes() == 1 and wrong.num_nodes() == 1 and missing.num_nodes() == 1
        assert right.join(owner.address, timeout=scaled(5.0)) == 1  # the token opens the door
        wait_converged([owner, right])
        assert owner.get_node(wrong.local_node().id) is None
        assert owner.get_node(missing.local_node().id) is None
    finally:
        stop_all([owner, wrong, missing, right])


# The documentation range 192.0.2.0/24 is named to the transport only to be refused there: the
# network guard lets it past the transport's entry point and still refuses it at every socket.
@pytest.mark.allow_network("192.0.2.0/24", transport_only=True)
def test_join_errors_name_what_is_wrong() -> None:
    class NoDns:
        def lookup_ip(self, host: str) -> list[str]:
            raise TransportError(f"cannot resolve {host!r}: no such host")

        def lookup_srv(self, name: str) -> list[tuple[str, int]]:
            raise TransportError(f"cannot resolve SRV {name!r}: no such name")

    c = Cluster(Config.local(bind_addr="127.0.0.1:0", resolver=NoDns()))
    c.start()
    try:
        cases = {
            "ws://127.0.0.1:99999/gossip": "port 99999 is outside",
            "ws://192.0.2.7:8080/gossip": "allow_insecure_websockets",
            "no-such-host.example:7946": "no such host",
            "srv+wss://_gossip._tcp.example/gossip": "no such name",
        }
        for peer, why in cases.items():
            with pytest.raises(JoinError) as info:
                c.join(peer, timeout=scaled(3.0))
            assert why in info.value.failures[peer], info.value.failures
    finally:
        c.stop()


# ---------------------------------------------------------------------------------- hostile input


def test_hostile_websocket_input_is_counted_and_the_cluster_keeps_working() -> None:
    clusters = start_nodes("www", websocket_handshake_timeout=0.5, tcp_preauth_max_frame_size=64 * 1024)
    target = clusters[2]
    url = target.address
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    try:
        wait_converged(clusters)
        rng = random.Random(1234)
        bad_before = bad_packets(target)
        with ws_connect(url, compression=None, open_timeout=scaled(5.0)) as ws:
            ws.send("a text message")
            for _ in range(12):
                ws.send(rng.randbytes(rng.randint(1, 1200)))   # garbage gossip frames
        wait_until(lambda: bad_packets(target) >= bad_before + 12, 5.0,
                   "the 12 garbage messages are counted as bad packets")
        # More garbage than max_rejected_frames (16) on one connection: it is closed.
        with ws_connect(url, compression=None, open_timeout=scaled(5.0)) as ws:
            try:
                for _ in range(40):
                    ws.send(rng.randbytes(rng.randint(1, 1200)))
                ws.recv(timeout=scaled(5.0))
            except Exception:
                pass
            wait_until(lambda: ws_stat(target, "ws_rejected_frames_closed") == 1, 5.0,
                       "the connection that sent only garbage is closed")
        with ws_connect(url, compression=None, open_timeout=scaled(5.0)) as ws:
            ws.send(rng.randbytes(64 * 1024 + 1))   # over the pre-authentication limit
            wait_until(lambda: ws_stat(target, "ws_too_large") == 1, 5.0,
                       "the oversized message is counted")
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(5.0)) as half:
            half.sendall(b"GET /gossip HTTP/1.1\r\nHost: x\r\n")  # a handshake never finished
            wait_until(lambda: ws_stat(target, "ws_handshake_timeouts") == 1, 5.0,
                       "the half-finished handshake is cut and counted")
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(5.0)) as junk:
            junk.sendall(rng.randbytes(200) + b"\r\n\r\n")
            wait_until(lambda: ws_stat(target, "ws_handshake_failed") == 1, 5.0,
                       "the garbage handshake is counted")
        assert ws_stat(target, "ws_text_dropped") == 1
        assert not [k for k in target.stats() if k.startswith("errors.")]
        broadcast_exactly_once(clusters, 2, gossip.USER_MSG + 25)
        wait_converged(clusters, timeout=5.0)
    finally:
        stop_all(clusters)


# ---------------------------------------------------------------------------------- embedding


def _bound_socket() -> tuple[socket.socket, int]:
    sock = socket.create_server(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.fixture
def two_socket_nodes() -> Iterator[list[Cluster]]:
    clusters = start_nodes("ss")
    yield clusters
    stop_all(clusters)


def test_node_behind_the_asgi_app_joins_socket_nodes() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from gossip.contrib.asgi import GossipASGI

    sock, port = _bound_socket()
    node = Cluster(Config.local(socket_transport_enabled=False, bearer_token="asgi-secret",
                                advertise_addr=f"ws://127.0.0.1:{port}/gossip"))
    server = uvicorn.Server(uvicorn.Config(GossipASGI(node), log_level="warning", lifespan="off",
                                           ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn")
    peers = [Cluster(Config.local(bind_addr="127.0.0.1:0", bearer_token="asgi-secret"))
             for _ in range(2)]
    try:
        node.start()
        thread.start()
        wait_until(lambda: server.started, 10.0, "uvicorn is serving")
        for p in peers:  # socket nodes: they hold the token to dial the node
            p.start()
        assert peers[1].join(peers[0].address, timeout=scaled(5.0)) == 1
        assert node.join(peers[0].address, timeout=scaled(5.0)) == 1
        everyone = [node, *peers]
        wait_converged(everyone)
        pairs_answer(everyone, gossip.USER_MSG + 26)
        broadcast_exactly_once(everyone, 1, gossip.USER_MSG + 27)
        # Without the token the handshake is denied with 401 and the reason, and counted.
        with pytest.raises(Exception, match="401"):
            ws_connect(f"ws://127.0.0.1:{port}/gossip", open_timeout=scaled(5.0)).close()
        assert ws_stat(node, "ws_auth_refused") == 1
    finally:
        stop_all(peers)
        node.stop(timeout=3.0)
        server.should_exit = True
        thread.join(scaled(10.0))
        sock.close()


def test_node_behind_the_hosts_websockets_server(two_socket_nodes: list[Cluster]) -> None:
    sock, port = _bound_socket()
    # No token: the host's server must take only small messages, and say so.
    node = Cluster(Config.local(socket_transport_enabled=False, websocket_host_max_size=256 * 1024,
                                advertise_addr=f"ws://127.0.0.1:{port}/gossip"))
    server = serve(node.websocket_handler, sock=sock, process_request=node.websocket_process_request,
                   compression=None, max_size=node.config.websocket_host_max_size)
    thread = threading.Thread(target=server.serve_forever, name="test-host-server")
    try:
        node.start()
        thread.start()
        assert node.join(two_socket_nodes[0].address, timeout=scaled(5.0)) == 1
        everyone = [node, *two_socket_nodes]
        wait_converged(everyone)
        pairs_answer(everyone, gossip.USER_MSG + 28)
        # Another path is the host's business: process_request leaves it alone, the handler
        # refuses it.
        with ws_connect(f"ws://127.0.0.1:{port}/not-gossip", open_timeout=scaled(5.0)) as ws:
            with pytest.raises(Exception):
                ws.recv(timeout=scaled(5.0))
            assert ws.protocol.close_code == 1008  # (ws.close_code from websockets 14 on)
    finally:
        node.stop(timeout=3.0)
        server.shutdown()
        thread.join(scaled(10.0))


def test_a_websocket_node_id_survives_a_restart_on_a_new_port() -> None:
    """A WebSocket node that restarts on another port is reachable at its new URL."""
    clusters = start_nodes("ww")
    node_id = str(NodeID.generate())
    restarted: list[Cluster] = []
    try:
        first = Cluster(Config.local(node_id=node_id, **WS))
        first.start()
        restarted.append(first)
        assert first.join(clusters[0].address, timeout=scaled(5.0)) == 1
        wait_converged([*clusters, first])
        old = first.address
        first.stop()
        second = Cluster(Config.local(node_id=node_id, **WS))
        second.start()
        restarted.append(second)
        assert second.address != old
        assert second.join(clusters[1].address, timeout=scaled(5.0)) == 1
        wait_until(lambda: all((n := c.get_node(NodeID.parse(node_id))) is not None
                               and n.address == second.address and n.state is NodeState.ALIVE
                               for c in clusters), 15.0, "everyone knows the new URL")
        pairs_answer([*clusters, second], gossip.USER_MSG + 29)
    finally:
        stop_all([*clusters, *restarted])


def test_everything_is_counted_under_ws() -> None:
    clusters = start_nodes("ww")
    try:
        wait_converged(clusters)
        stats = clusters[0].stats()
        assert any(k.startswith("packets_out.ws.") for k in stats), sorted(stats)
        assert any(k.startswith("packets_in.ws.") for k in stats), sorted(stats)
        assert not any(k.startswith(("packets_out.udp.", "packets_in.udp.")) for k in stats)
    finally:
        stop_all(clusters)


# ---------------------------------------------------------------------------------- embedding, hostile


def _raw_handshake(port: int, extra: dict[str, str]) -> bytes:
    """Send a hand-written opening handshake; return the response head (``b""`` if none)."""
    from transports.test_websocket_security import send_handshake

    return send_handshake(port, extra)


def test_process_request_answers_the_tokens_challenge_and_refuses_browsers() -> None:
    token = "pr0cess-request-t0ken"
    sock, port = _bound_socket()
    node = Cluster(Config.local(socket_transport_enabled=False, bearer_token=token,
                                advertise_addr=f"ws://127.0.0.1:{port}/gossip"))
    server = serve(node.websocket_handler, sock=sock, process_request=node.websocket_process_request,
                   compression=None, max_size=node.config.tcp_max_packet_size)
    thread = threading.Thread(target=server.serve_forever, name="test-host-server")
    peer = Cluster(Config.local(bind_addr="127.0.0.1:0", bearer_token=token))
    try:
        node.start()
        thread.start()
        peer.start()
        bare = _raw_handshake(port, {})
        assert bare.startswith(b"HTTP/1.1 401") and b'WWW-Authenticate: Gossip-HMAC realm="gossip"' in bare
        asked = _raw_handshake(port, {"Gossip-Challenge": "c2VjcmV0LW5vbmNlLW9mLWEtY2xpZW50"})
        assert asked.startswith(b"HTTP/1.1 401") and b"nonce=" in asked and b"proof=" in asked
        browser = _raw_handshake(port, {"Origin": "https://intranet.example.com",
                                        "Sec-Fetch-Site": "cross-site"})
        assert browser.startswith(b"HTTP/1.1 403")
        assert ws_stat(node, "ws_origin_refused") == 1 and ws_stat(node, "ws_auth_refused") == 1
        # A node holding the token gets through process_request and the handler alike.
        assert peer.join(node.address, timeout=scaled(5.0)) == 1
        wait_converged([node, peer])
        pairs_answer([node, peer], gossip.USER_MSG + 31)
    finally:
        peer.stop(timeout=3.0)
        node.stop(timeout=3.0)
        server.shutdown()
        thread.join(scaled(10.0))


def test_asgi_drops_a_stalled_stranger_at_the_deadline() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from gossip.contrib.asgi import GossipASGI

    from transports.test_websocket_security import handshake_bytes, read_head

    sock, port = _bound_socket()
    limit = 1024 * 1024
    node = Cluster(Config.local(socket_transport_enabled=False, websocket_host_max_size=limit,
                                preauth_timeout=0.5, advertise_addr=f"ws://127.0.0.1:{port}/gossip"))
    server = uvicorn.Server(uvicorn.Config(GossipASGI(node), log_level="warning", lifespan="off",
                                           ws="websockets-sansio", ws_max_size=limit))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn")
    stalled: list[socket.socket] = []
    try:
        node.start()
        thread.start()
        wait_until(lambda: server.started, 10.0, "uvicorn is serving")
        browser = _raw_handshake(port, {"Origin": "https://forum.example.org", "Sec-Fetch-Site": "cross-site"})
        assert browser.startswith(b"HTTP/1.1 403")  # the bridge checks origins too
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5.0),
                                         source_address=(f"127.0.0.{20 + i}", 0))
            stalled.append(s)
            s.sendall(handshake_bytes(port))
            assert read_head(s).startswith(b"HTTP/1.1 101")
            # The start of a message just under the server's limit, then nothing more.
            size = limit - 4096
            s.sendall(bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + os.urandom(4)
                      + os.urandom(200 * 1024))
        wait_until(lambda: ws_stat(node, "ws_preauth_timeouts") == 3, 10.0, "the deadline fires")
        for s in stalled:
            s.settimeout(scaled(5.0))
            got = b""
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except ConnectionResetError:
                pass
            # Dropped at once: no closing handshake that would wait for the stalled peer.
            assert got == b"", got[:20]
        wait_until(lambda: ws_stat(node, "ws_connections") == 0, 5.0, "every slot is released")
    finally:
        for s in stalled:
            s.close()
        node.stop(timeout=3.0)
        server.should_exit = True
        thread.join(scaled(10.0))
        sock.close()
