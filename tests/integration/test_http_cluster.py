"""Clusters with HTTP nodes on loopback: a mixed cluster of HTTP, WebSocket and UDP/TCP nodes
converges, exchanges messages and requests both ways, and a crashed HTTP node is detected.

Clusters use :meth:`gossip.Config.local` on port 0. Every wait is bounded (:func:`wait_until`).
"""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import pytest

from gossip import Cluster, Config, JoinError, NodeState
from gossip.errors import StreamRefused

from . import scaled, wait_until
from .test_loopback import node_of, start_joined, stop_all, wait_converged
from .tls import make_pki

HTTP = {"socket_transport_enabled": False, "http_bind_addr": "127.0.0.1:0"}
WS = {"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0"}
UDP = {"bind_addr": "127.0.0.1:0"}


def start(kinds: str, **overrides: Any) -> list[Cluster]:
    """One node per letter (``h`` HTTP only, ``w`` WebSocket only, ``s`` UDP/TCP), joined through the first."""
    return start_joined([{**{"h": HTTP, "w": WS, "s": UDP}[kind], **overrides} for kind in kinds])


def test_http_node_advertises_its_url() -> None:
    clusters = start("h")
    try:
        addr = clusters[0].address
        assert addr.startswith("http://127.0.0.1:") and addr.endswith("/gossip")
    finally:
        stop_all(clusters)


@pytest.mark.parametrize("kinds", ["hsw", "shw", "whs"])
def test_mixed_cluster_converges_and_exchanges_messages(kinds: str) -> None:
    clusters = start(kinds + "h")
    try:
        wait_converged(clusters, scaled(20.0))
        got: list[list[tuple[int, int]]] = [[] for _ in clusters]
        lock = threading.Lock()
        for i, c in enumerate(clusters):
            c.handle_func(200, lambda s, p, i=i: (lock.acquire(), got[i].append(tuple(p.unmarshal())),
                                                  lock.release()))
            c.handle_func_with_reply(201, lambda s, p, i=i: {"by": i, "echo": p.unmarshal()})
        # every node sends a direct message, reliable and best-effort, to every other one
        for i, a in enumerate(clusters):
            for j, b in enumerate(clusters):
                if i != j:
                    a.send_to(node_of(a, b), 200, [i, j])
                    a.send_to_reliable(node_of(a, b), 200, [i, j])

        def delivered() -> bool:
            with lock:
                return all(len(got[j]) >= 2 * (len(clusters) - 1) for j in range(len(clusters)))

        wait_until(delivered, scaled(10.0), "every message delivered")
        with lock:
            for j in range(len(clusters)):
                assert sorted(set(got[j])) == [(i, j) for i in range(len(clusters)) if i != j]
        # and every node asks every other one, HTTP nodes included both ways
        for i, a in enumerate(clusters):
            for j, b in enumerate(clusters):
                if i != j:
                    reply = a.send_to_with_response(node_of(a, b), 201, [i, j], timeout=scaled(5.0))
                    assert reply == {"by": j, "echo": [i, j]}
        http_nodes = [c for c in clusters if c.address.startswith("http://")]
        assert all(c.stats().get("transport.http_requests", 0) > 0 for c in http_nodes)
    finally:
        stop_all(clusters)


def test_http_nodes_broadcast_to_everyone() -> None:
    clusters = start("hsh")
    try:
        wait_converged(clusters, scaled(20.0))
        seen: list[int] = [0] * len(clusters)
        lock = threading.Lock()

        def handler(i: int) -> Any:
            def h(sender: Any, pkt: Any) -> None:
                with lock:
                    seen[i] += 1
            return h

        for i, c in enumerate(clusters):
            c.handle_func(202, handler(i))
        clusters[0].send_reliable(202, "hello")
        wait_until(lambda: seen[1] == 1 and seen[2] == 1, scaled(10.0), "the broadcast reaches both")
        assert seen[0] == 0
    finally:
        stop_all(clusters)


def test_crashed_http_node_is_detected_dead() -> None:
    clusters = start("shh")
    try:
        wait_converged(clusters, scaled(20.0))
        victim = clusters[2]
        vid = victim.local_node().id
        victim._engine.transport.close()  # type: ignore[union-attr]  # a crash: no leave
        wait_until(lambda: all(c.get_node(vid) is not None and c.get_node(vid).state  # type: ignore[union-attr]
                               in (NodeState.DEAD, NodeState.SUSPECT) for c in clusters[:2]),
                   scaled(20.0), "the crashed HTTP node is suspected")
    finally:
        stop_all(clusters)


def test_stream_to_http_node_is_refused_with_its_reason() -> None:
    clusters = start("sh")
    try:
        wait_converged(clusters, scaled(20.0))
        clusters[1].handle_stream_func(203, lambda s, p, st: st.close())
        with pytest.raises(StreamRefused, match="HTTP"):
            clusters[0].open_stream(node_of(clusters[0], clusters[1]), 203, b"")
    finally:
        stop_all(clusters)


def test_https_cluster_with_a_private_ca_and_a_bearer_token(tmp_path: pathlib.Path) -> None:
    pki = make_pki(tmp_path)
    tls = {"tls_cert_file": pki.cert, "tls_key_file": pki.key, "tls_ca_file": pki.ca,
           "bearer_token": "http-s3cret"}
    clusters = start("hh", **tls)
    socket_node = Cluster(Config.local(bind_addr="127.0.0.1:0", tls_ca_file=pki.ca, bearer_token="http-s3cret"))
    no_token = Cluster(Config.local(bind_addr="127.0.0.1:0", tls_ca_file=pki.ca))
    no_ca = Cluster(Config.local(bind_addr="127.0.0.1:0", bearer_token="http-s3cret"))
    try:
        assert all(c.address.startswith("https://127.0.0.1:") for c in clusters)
        socket_node.start()
        assert socket_node.join(clusters[1].address, timeout=scaled(5.0)) == 1
        clusters.append(socket_node)
        wait_converged(clusters, scaled(20.0))
        for i, c in enumerate(clusters):
            c.handle_func_with_reply(204, lambda s, p, i=i: i)
        for i, a in enumerate(clusters):
            for j, b in enumerate(clusters):
                if i != j:
                    assert a.send_to_with_response(node_of(a, b), 204, None, timeout=scaled(5.0)) == j
        no_token.start()
        with pytest.raises(JoinError):
            no_token.join(clusters[0].address, timeout=scaled(3.0))
        assert clusters[0].stats()["transport.http_auth_refused"] >= 1
        no_ca.start()
        with pytest.raises(JoinError, match="(?i)certificate"):
            no_ca.join(clusters[0].address, timeout=scaled(3.0))
        assert no_token.num_nodes() == 1 and no_ca.num_nodes() == 1
    finally:
        stop_all([*clusters, no_token, no_ca] if socket_node in clusters
                 else [*clusters, socket_node, no_token, no_ca])
