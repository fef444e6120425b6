"""Attacks on the protocol core and the packet layer, driven as an attacker would: raw packets
built with ``gossip.messages`` and the node's own ``PacketCodec``, sent over UDP or TCP to real
nodes on loopback. Every attacker, victim and fake member sits at a loopback address.

A barrier replaces sleeps: after its attack packets, the attacker sends one ping from the same
socket and waits for the ack; one reader thread handles a socket's datagrams in order, so the
ack means everything before it was handled. Nothing asserts on speed.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from gossip import Cluster, Config, NodeID, NodeState
from gossip import messages
from gossip.hlc import COUNTER_BITS, now as hlc_now
from gossip.messages import Ack, Alive, Dead, Gossip, Message, Ping, Suspect
from gossip.transports.socket import PREAMBLE_FRAMES
from gossip.wire import MessageType

from . import loopback_blackhole, scaled, wait_until

KEY = bytes(range(40, 72))
ATTACKER = NodeID(int=0xA77AC4)


def local(**kw: Any) -> Config:
    return Config.local(bind_addr="127.0.0.1:0", **kw)


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def packet(node: Cluster, msg: Message, sender: NodeID = ATTACKER, msg_id: int = 1) -> bytes:
    mt, value = messages.to_wire(msg)
    return node._codec.encode(mt, sender.bytes, msg_id, 1, value)


@contextmanager
def udp(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(scaled(5.0))
        yield sock


def own_addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def recv_msg(sock: socket.socket, node: Cluster) -> Message:
    data, _ = sock.recvfrom(65536)
    pkt = node._codec.decode(data)
    return messages.from_wire(pkt.msg_type, pkt.unmarshal())


def barrier(sock: socket.socket, node: Cluster, seq: int = 999_999) -> None:
    """Ping the node from ``sock`` and wait for the ack: all sent before it has been handled."""
    sock.sendto(packet(node, Ping(seq, node.local_node().id, own_addr(sock))), host_port(node.address))
    while True:
        msg = recv_msg(sock, node)
        if isinstance(msg, Ack) and msg.seq == seq:
            return


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recvfrom(65536) if sock.type == socket.SOCK_DGRAM else sock.accept()[0].close()
    except BlockingIOError:
        return True
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    return False


def fake_ws_server() -> socket.socket:
    """A TCP listener standing for an attacker's WebSocket server: any dial lands here."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    return srv


# -- 1. forged incarnations ----------------------------------------------------------------------

def test_forged_accusations_raise_the_incarnation_no_faster_than_its_budget() -> None:
    with Cluster(local()) as node, udp() as attacker:
        me = node.local_node().id
        target = host_port(node.address)
        for _ in range(25):
            # Each datagram: 250 accusations, each within max_incarnation_jump of the one before,
            # starting from what the attacker last saw of the victim.
            inc = node.local_node().incarnation
            updates = tuple(Suspect(me, inc + i * 3500, ATTACKER) for i in range(250))
            attacker.sendto(packet(node, Gossip(updates)), target)
        barrier(attacker, node)
        # One refutation per datagram at most, within the default budget: 4096 a minute (a
        # full bucket, plus what refills while the test runs), where each used to add 875 k.
        assert node.local_node().incarnation <= 2 * 4096
        assert node.stats()["core.refused_incarnation_budget"] > 0
        assert node.local_node().state is NodeState.ALIVE


# -- 2, 23. answers go to the source; nothing named in a packet is dialed ------------------------

def test_a_ping_naming_a_url_or_a_third_party_is_answered_at_its_source() -> None:
    with Cluster(local()) as node, udp() as attacker, udp() as victim, fake_ws_server() as srv:
        me = node.local_node().id
        ws = "ws://127.0.0.1:%d/gossip" % srv.getsockname()[1]
        for seq, named in ((11, ws), (12, own_addr(victim))):
            attacker.sendto(packet(node, Ping(seq, me, named)), host_port(node.address))
            ack = recv_msg(attacker, node)
            assert isinstance(ack, Ack) and ack.seq == seq
        assert nothing_waiting(srv), "the node dialed the URL a ping named"
        assert nothing_waiting(victim), "the node aimed its ack at a third party"


def test_a_fake_member_at_a_websocket_url_is_not_dialed() -> None:
    with Cluster(local()) as node, udp() as attacker, udp() as canary, fake_ws_server() as srv:
        ws = "ws://127.0.0.1:%d/gossip" % srv.getsockname()[1]
        fake, real = NodeID(int=0xFA4E), NodeID(int=0xCA4A)
        news = Gossip((Alive(fake, 0, ws), Alive(real, 0, own_addr(canary))))
        attacker.sendto(packet(node, news), host_port(node.address))
        # The node probes the member it can reach with a datagram (the canary) ...
        while not isinstance(recv_msg(canary, node), Ping):
            pass
        wait_until(lambda: node.stats().get("core.skipped_unproven_dials", 0) > 0, 10.0,
                   "the probe round passed over the WebSocket member")
        # ... and never dials the one only a stranger named.
        assert nothing_waiting(srv), "the node dialed a fake member's URL"



def test_a_flood_of_pings_naming_distinct_urls_opens_no_connection() -> None:
    """Item 6 of the review: pings with distinct ``ws://`` source URLs made the node dial each
    one. Now every ping is answered at its source, and no URL a ping names is dialed."""
    with Cluster(local()) as node, udp() as attacker, ExitStack() as stack:
        me = node.local_node().id
        servers = [stack.enter_context(fake_ws_server()) for _ in range(8)]
        acks = 0
        # In bursts of 20, each closed by a barrier ping whose ack comes after the burst's: 300
        # datagrams at once can overflow a socket buffer of the kernel on a loaded host.
        for burst in range(15):
            for seq in range(1 + 20 * burst, 21 + 20 * burst):
                srv = servers[seq % len(servers)]
                url = "ws://127.0.0.%d:%d/gossip/%d" % (1 + seq % 3 if seq % 3 else 1,
                                                         srv.getsockname()[1], seq)
                attacker.sendto(packet(node, Ping(seq, me, url), msg_id=seq), host_port(node.address))
            barrier_seq = 1_000_000 + burst
            attacker.sendto(packet(node, Ping(barrier_seq, me, own_addr(attacker))),
                            host_port(node.address))
            while True:
                msg = recv_msg(attacker, node)
                if isinstance(msg, Ack):
                    if msg.seq == barrier_seq:
                        break
                    acks += 1
        assert acks == 300, "each ping is answered at its source"
        assert all(nothing_waiting(srv) for srv in servers), "the node dialed a URL a ping named"
        assert not [k for k, v in node.stats().items()
                    if "dial" in k and k.startswith("transport.") and v and "refused" not in k]


# -- 7. a forged leave ---------------------------------------------------------------------------

def test_a_forged_leave_is_refuted_within_one_round_trip() -> None:
    cfg = local(state_sync_interval=120.0)     # no state exchange comes to the rescue
    with Cluster(cfg) as a, Cluster(cfg) as b, udp() as attacker:
        assert b.join(a.address, timeout=scaled(5.0)) == 1
        wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10.0, "two nodes")
        seen: list[NodeState] = []
        victim = b.local_node()
        a.handle_node_state_change_func(lambda n, prev: seen.append(n.state) if n.id == victim.id else None)
        attacker.sendto(packet(a, Gossip((Dead(victim.id, victim.incarnation, victim.id),))),
                        host_port(a.address))
        wait_until(lambda: NodeState.LEAVING in seen, 5.0, "the forged leave was applied")
        wait_until(lambda: seen[-1] is NodeState.ALIVE, 5.0, "the victim refuted the forged leave")
        assert b.local_node().incarnation > victim.incarnation
        assert a.stats()["core.leaves_checked"] == 1


# -- 8. metadata stamps --------------------------------------------------------------------------

def test_a_metadata_stamp_far_in_the_future_is_refused_and_a_near_one_is_outbid() -> None:
    with Cluster(local()) as a, Cluster(local()) as b, udp() as attacker:
        b.local_metadata().set_string("role", "db")
        assert b.join(a.address, timeout=scaled(5.0)) == 1

        def role_at_a() -> str:
            node = a.get_node(b.local_node().id)
            return "" if node is None else node.metadata.get_string("role")

        wait_until(lambda: role_at_a() == "db", 10.0, "a sees b's metadata")
        victim = b.local_node()
        far = Alive(victim.id, victim.incarnation, victim.address, {"role": "evil"}, 2**64 - 7)
        attacker.sendto(packet(a, Gossip((far,))), host_port(a.address))
        barrier(attacker, a)
        assert role_at_a() == "db" and a.stats()["core.refused_metadata_stamp"] == 1
        # A stamp within the clocks' drift is believed ... until the owner sees its own record.
        near = Alive(victim.id, victim.incarnation, victim.address, {"role": "evil"},
                     hlc_now() + (20_000_000 << COUNTER_BITS))
        for node in (a, b):
            attacker.sendto(packet(node, Gossip((near,))), host_port(node.address))
        wait_until(lambda: b.stats().get("core.metadata_reasserted", 0) == 1, 5.0, "b reasserted")
        wait_until(lambda: role_at_a() == "db", 5.0, "a took b's own metadata back")


# -- 13. member table exhaustion -----------------------------------------------------------------

def test_strangers_on_six_hosts_cannot_keep_a_real_node_out() -> None:
    cfg = local(max_members=48, max_members_per_message=48, max_members_per_source=10)
    with loopback_blackhole() as hole, Cluster(cfg) as a, Cluster(local()) as b, ExitStack() as stack:
        hosts = [stack.enter_context(udp(f"127.0.0.{41 + k}")) for k in range(6)]
        for k, sock in enumerate(hosts):      # 6 hosts x 10 fakes: more than the whole table
            fakes = tuple(Alive(NodeID(int=(k + 1) << 20 | i), 0, hole) for i in range(10))
            sock.sendto(packet(a, Gossip(fakes), NodeID(int=0xF00 + k)), host_port(a.address))
        for sock in hosts:
            barrier(sock, a)
        assert b.join(a.address, timeout=scaled(5.0)) == 1
        wait_until(lambda: a.get_node(b.local_node().id) is not None, 5.0, "a admitted b")
        assert a.stats()["core.refused_unconfirmed_full"] > 0


# -- 14. replays of sealed user messages and election heartbeats ---------------------------------

def test_a_recorded_user_message_cannot_be_played_again() -> None:
    with Cluster(local(encryption_key=KEY)) as a, udp() as attacker:
        got: list[int] = []
        a.handle_func(300, lambda sender, pkt: got.append(pkt.unmarshal()))
        a.handle_func(301, lambda sender, pkt: got.append(-1))
        # What a member sealed (the attacker recorded it; here we seal it with the key).
        recording = a._codec.encode(300, NodeID(int=0xB).bytes, hlc_now(), 1, 7)
        stale = a._codec.encode(300, NodeID(int=0xB).bytes, hlc_now() - (300_000_000 << COUNTER_BITS), 1, 8)
        marker = a._codec.encode(301, NodeID(int=0xB).bytes, hlc_now(), 1, 0)
        for data in (recording, recording, recording, stale, marker):
            attacker.sendto(data, host_port(a.address))
        wait_until(lambda: -1 in got, 5.0, "the marker message")
        assert got == [7, -1]
        stats = a.stats()
        assert stats["user_replay.duplicate"] == 2 and stats["user_replay.stale"] == 1


def test_an_old_resign_does_not_drop_the_current_leader() -> None:
    from gossip.leader import LeaderConfig, LeaderElection
    from gossip.leader.election import Heartbeat, encode_message

    lc = LeaderConfig(check_interval=0.2, leader_timeout=1.0)
    with Cluster(local(encryption_key=KEY)) as a, Cluster(local(encryption_key=KEY)) as b, udp() as attacker:
        assert b.join(a.address, timeout=scaled(5.0)) == 1
        wait_until(lambda: a.num_alive_nodes() == 2 and b.num_alive_nodes() == 2, 10.0, "two nodes")
        with LeaderElection(a, lc) as ea, LeaderElection(b, lc) as eb:
            ea.start()
            eb.start()
            wait_until(lambda: ea.leader_id() is not None and ea.leader_id() == eb.leader_id(), 15.0,
                       "one leader")
            leader_id = ea.leader_id()
            assert leader_id is not None
            follower, election = (b, eb) if leader_id == a.local_node().id else (a, ea)
            # A resign the leader sealed five minutes ago, played now.
            old = follower._codec.encode(lc.heartbeat_msg_type, leader_id.bytes,
                                         hlc_now() - (300_000_000 << COUNTER_BITS), 1,
                                         encode_message(Heartbeat(election.term, resign=True)))
            attacker.sendto(old, host_port(follower.address))
            wait_until(lambda: follower.stats().get("user_replay.stale", 0) == 1, 5.0, "the replay refused")
            assert election.leader_id() == leader_id


# -- 15. decompression bombs over TCP ------------------------------------------------------------

def test_a_compressed_bomb_frame_is_refused_from_its_header() -> None:
    with Cluster(local()) as node:
        n = 3_000_000
        for mt, body in ((MessageType.PING, b"\xdd" + n.to_bytes(4, "big") + b"\xc0" * n),
                         (MessageType.GOSSIP, b"\x91\xdd" + n.to_bytes(4, "big") + b"\x90" * n)):
            data = node._codec.encode_raw(mt, ATTACKER.bytes, 1, 1, body)
            assert len(data) < 16_000
            with socket.create_connection(host_port(node.address), timeout=scaled(5.0)) as conn:
                conn.sendall(PREAMBLE_FRAMES + struct.pack(">I", len(data)) + data)
                wait_until(lambda: node.stats().get("bad_packets.PacketTooLarge", 0) >= 1, 10.0,
                           "the bomb refused as too large")
        wait_until(lambda: node.stats().get("bad_packets.PacketTooLarge", 0) == 2, 10.0, "both bombs refused")
        assert "bad_packets.DecodeError" not in node.stats()

