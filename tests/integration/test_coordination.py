"""The coordination blocks over real sockets on loopback, once each: placement, locks (on an
encrypted cluster, so the authenticated path runs), and a replicated map with a late joiner."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import socket

from gossip import Cluster, Config
from gossip.hlc import now as hlc_now
from gossip.leader import LeaderConfig
from gossip.locks import FencingToken, LockConfig, LockService
from gossip.locks.messages import Release, encode_message
from gossip.packet import PacketCodec
from gossip.replicated import MapConfig, ReplicatedMap

from . import wait_until

KEY = b"0123456789abcdef"


@contextlib.contextmanager
def cluster(n: int, **overrides: object) -> Iterator[list[Cluster]]:
    nodes: list[Cluster] = []
    try:
        for _ in range(n):
            c = Cluster(Config.local(bind_addr="127.0.0.1:0", **overrides))
            c.start()
            if nodes:
                c.join(nodes[0].address, timeout=10.0)
            nodes.append(c)
        wait_until(lambda: all(c.num_alive_nodes() == n for c in nodes), 20.0, f"{n} nodes see each other")
        yield nodes
    finally:
        for c in reversed(nodes):
            c.stop(timeout=3.0)


def test_every_node_places_keys_alike_over_sockets() -> None:
    with cluster(3) as nodes:
        tables = [[[o.id for o in c.owners(f"k{i}", 2)] for i in range(100)] for c in nodes]
        assert tables[0] == tables[1] == tables[2]
        owner = nodes[1].owner("k7")
        assert owner is not None and owner.id == tables[0][7][0]


def test_locks_with_fencing_on_an_encrypted_cluster() -> None:
    election = LeaderConfig(check_interval=0.1, leader_timeout=0.5, heartbeat_msg_type=66)
    with cluster(3, encryption_key=KEY) as nodes:
        services = [LockService(c, config=LockConfig(retry_interval=0.05), leader_config=election) for c in nodes]
        try:
            assert all(s.authenticated for s in services)
            tokens: list[FencingToken] = []
            for s in services:
                with s.acquire("job", ttl=5.0, timeout=20.0) as lease:
                    holder = services[0].holder("job")
                    assert holder is not None and holder.token == lease.token
                    tokens.append(lease.token)
            assert tokens == sorted(tokens) and len(set(tokens)) == 3
            assert sum(s.stats().get("messages_unauthenticated", 0) for s in services) == 0
        finally:
            for s in services:
                s.close()


def test_a_forged_plain_release_is_refused_on_a_cluster_that_seals_its_packets() -> None:
    # Half-way through the move to encryption: nodes seal what they send but still open plain
    # packets. A host without the key sends a plain release in the holder's name: refused.
    election = LeaderConfig(check_interval=0.1, leader_timeout=0.5, heartbeat_msg_type=66)
    with cluster(3, encryption_key=KEY, require_encryption=False) as nodes:
        services = [LockService(c, config=LockConfig(retry_interval=0.05), leader_config=election) for c in nodes]
        try:
            lease = services[1].acquire("job", ttl=30.0, timeout=20.0)
            victim = nodes[1].local_node().id
            data = PacketCodec().encode(LockConfig().msg_type, victim.bytes, hlc_now(), 1,
                                        encode_message(Release(1, "job", lease.token, 0, 1 << 40)))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for c in nodes:
                    host, _, port = c.address.rpartition(":")
                    udp.sendto(data, (host, int(port)))
            wait_until(lambda: sum(s.stats().get("messages_unauthenticated", 0) for s in services) >= 3, 10.0,
                       "the plain releases to be refused")
            holder = services[2].holder("job")
            assert holder is not None and holder.node_id == victim and holder.token == lease.token
            lease.release()
        finally:
            for s in services:
                s.close()


def test_a_replicated_map_reaches_a_late_joiner_over_sockets() -> None:
    cfg = MapConfig(sync_interval=0.5)
    with cluster(2) as nodes:
        first = [ReplicatedMap(c, "config", cfg) for c in nodes]
        late_cluster = Cluster(Config.local(bind_addr="127.0.0.1:0"))
        late: ReplicatedMap | None = None
        try:
            for k in range(50):
                first[k % 2].set(f"key-{k}", {"n": k})
            first[0].delete("key-0")
            late_cluster.start()
            late_cluster.join(nodes[0].address, timeout=10.0)
            late = ReplicatedMap(late_cluster, "config", cfg)
            want = {f"key-{k}": {"n": k} for k in range(1, 50)}
            wait_until(lambda: late is not None and late.snapshot() == want
                       and all(m.snapshot() == want for m in first), 20.0, "every map equal")
        finally:
            for m in first:
                m.close()
            if late is not None:
                late.close()
            late_cluster.stop(timeout=3.0)
