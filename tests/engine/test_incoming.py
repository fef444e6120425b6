"""The receive path (gossip.engine.incoming) on its own: a Receiver given stand-ins for the core's
host, the member table, the send path and the join waiters, fed packets as a transport would."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest

import gossip
from gossip.config import Config
from gossip.counters import Counters
from gossip.engine.incoming import Receiver, UserLanes
from gossip.engine.outgoing import broadcast_ttl
from gossip.handlers import HANDLER_FORWARD, MessageHandlers
from gossip.hlc import HLC
from gossip.messages import Ping, to_wire
from gossip.metadata import MetadataReader
from gossip.node import Node, NodeID, NodeState
from gossip.packet import Packet, PacketCodec
from gossip.security import Keyring
from gossip.transports.base import Incoming

ME, PEER = NodeID(int=1), NodeID(int=2)
SRC = "127.0.0.2:7001"
MT = gossip.USER_MSG + 40
WAIT = 10.0


def wait_until(pred: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Host:
    """Records what the receive path feeds the core; answers each message with one action."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, Any, NodeID, bool]] = []

    def receive(self, now: float, items: Sequence[tuple[Any, ...]]) -> tuple[list[list[Any]], list[Any]]:
        self.fed.extend((src, msg, sender, reliable) for src, msg, sender, reliable, _, _ in items)
        return [[("answer", type(item[1]).__name__)] for item in items], []


class Members:
    def __init__(self, alive: int = 10) -> None:
        self.alive = alive
        self.excluded: list[tuple[NodeID, ...]] = []
        self.tags: frozenset[str] = frozenset()
        self.asked_tags: list[str | None] = []

    def node_for_sender(self, sender: bytes) -> Node:
        return Node(NodeID(bytes=sender), SRC, NodeState.ALIVE, 3, MetadataReader())

    def fan_out_addrs(self, exclude: Iterable[NodeID], tag: str | None = None) -> list[str]:
        self.excluded.append(tuple(exclude))
        self.asked_tags.append(tag)
        return ["127.0.0.3:7002", "127.0.0.4:7003"]

    def alive_count(self) -> int:
        return self.alive


class Rig:
    def __init__(self, keyring: Keyring | None = None) -> None:
        self.codec = PacketCodec(keyring=keyring)
        self.host = Host()
        self.members = Members()
        self.handlers = MessageHandlers()
        self.performed: list[tuple[list[Any], Incoming | None]] = []
        self.relayed: list[tuple[str, Packet, bool]] = []
        self.refused: list[tuple[str, str, bool]] = []
        self.counters = Counters()
        self.receiver = Receiver(
            Config.local(), self.codec, self.host, hlc=HLC(), sender_id=ME.bytes,  # type: ignore[arg-type]
            handlers=self.handlers, members=self.members,
            perform=lambda actions, inc: self.performed.append((list(actions), inc)),
            relay=lambda addr, data, reliable, size: self.relayed.append(
                (addr, self.codec.decode(data), reliable)),
            on_refused=lambda src, reason, on_conn: self.refused.append((src, reason, on_conn)),
            counters=self.counters, log=logging.getLogger("gossip.test"), prefix="gossip-test")
        self.receiver.start()

    def stat(self, name: str) -> int:
        return self.counters.snapshot().get(name, 0)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.receiver.close()
    assert r.receiver.join(time.monotonic() + WAIT) == []


def datagram(data: bytes) -> Incoming:
    return Incoming(data, SRC, False, None, time.monotonic())


def test_malformed_packets_are_counted_and_dropped(rig: Rig) -> None:
    rig.receiver.on_packets([datagram(b""), datagram(b"garbage"), datagram(bytes(range(256)))])
    bad = {k: v for k, v in rig.counters.snapshot().items() if k.startswith("bad_packets.")}
    assert sum(bad.values()) == 3
    assert rig.host.fed == [] and rig.performed == []


def test_protocol_messages_go_to_the_core_and_their_actions_are_performed_for_their_packet(
        rig: Rig) -> None:
    mt, value = to_wire(Ping(7, ME, "127.0.0.2:7001", ()))
    inc = datagram(rig.codec.encode(mt, PEER.bytes, 1, 1, value))
    rig.receiver.on_packets([inc])
    assert [(src, type(msg).__name__, sender) for src, msg, sender, _ in rig.host.fed] == \
        [(SRC, "Ping", PEER)]
    assert rig.performed == [([("answer", "Ping")], inc)]
    assert rig.stat("packets_in.udp.ping") == 1


def test_a_packet_sealed_with_another_key_is_refused_and_reported() -> None:
    r = Rig(Keyring([b"k" * 16]))
    stranger = PacketCodec(keyring=Keyring([b"j" * 16]))
    r.receiver.on_packets([datagram(stranger.encode(MT, PEER.bytes, 1, 1, "x"))])
    assert r.stat("bad_packets.AuthenticationError") == 1
    assert len(r.refused) == 1
    src, reason, on_connection = r.refused[0]
    assert (src, on_connection) == (SRC, False) and "another encryption key" in reason
    r.receiver.close()


def test_a_user_message_reaches_its_handler_with_the_sender_s_snapshot(rig: Rig) -> None:
    got: list[tuple[Node, Any]] = []
    rig.handlers.register(MT, HANDLER_FORWARD, lambda sender, pkt: got.append((sender, pkt.unmarshal())))
    rig.receiver.on_packets([datagram(rig.codec.encode(MT, PEER.bytes, 5, 1, "hello"))])
    wait_until(lambda: len(got) == 1, "the handler")
    sender, value = got[0]
    assert (sender.id, sender.address, value) == (PEER, SRC, "hello")
    assert rig.relayed == []  # ttl 1: a direct message is never relayed


def test_a_broadcast_is_relayed_once_with_one_hop_less_and_its_echo_is_dropped(rig: Rig) -> None:
    got: list[Any] = []
    rig.handlers.register(MT, HANDLER_FORWARD, lambda sender, pkt: got.append(pkt.unmarshal()))
    ttl = broadcast_ttl(rig.members.alive)
    packet = rig.codec.encode(MT, PEER.bytes, 9, ttl, "news")
    rig.receiver.on_packets([datagram(packet)])
    rig.receiver.on_packets([datagram(packet)])  # the same broadcast by another path
    wait_until(lambda: rig.stat("user.duplicates") == 1, "the duplicate")
    assert got == ["news"]
    assert [(addr, p.ttl, p.msg_id, p.sender) for addr, p, _ in rig.relayed] == [
        ("127.0.0.3:7002", ttl - 1, 9, PEER.bytes), ("127.0.0.4:7003", ttl - 1, 9, PEER.bytes)]
    assert rig.members.excluded == [(PEER,)]  # never back to its origin


def test_a_tagged_broadcast_is_handled_and_relayed_only_by_a_node_holding_the_tag(rig: Rig) -> None:
    got: list[Any] = []
    rig.handlers.register(MT, HANDLER_FORWARD, lambda sender, pkt: got.append((pkt.unmarshal(), pkt.tag)))
    ttl = broadcast_ttl(rig.members.alive)
    rig.receiver.on_packets([datagram(rig.codec.encode(MT, PEER.bytes, 21, ttl, "not for us", tag="gpu"))])
    wait_until(lambda: rig.stat("user.tag_not_held") == 1, "the refusal")
    assert got == [] and rig.relayed == [] and rig.stat("user.received") == 0
    rig.members.tags = frozenset({"gpu"})
    rig.receiver.on_packets([datagram(rig.codec.encode(MT, PEER.bytes, 22, ttl, "for us", tag="gpu"))])
    wait_until(lambda: len(rig.relayed) == 2, "the relays")
    assert got == [("for us", "gpu")]
    assert rig.members.asked_tags == ["gpu"]          # the next hop: members holding the tag
    assert {p.tag for _, p, _ in rig.relayed} == {"gpu"}


def test_a_relay_never_travels_further_than_the_cluster_s_size_calls_for(rig: Rig) -> None:
    rig.handlers.register(MT, HANDLER_FORWARD, lambda sender, pkt: None)
    rig.members.alive = 2
    rig.receiver.on_packets([datagram(rig.codec.encode(MT, PEER.bytes, 11, 200, "far"))])
    wait_until(lambda: len(rig.relayed) == 2, "the relays")
    assert [p.ttl for _, p, _ in rig.relayed] == [broadcast_ttl(2)] * 2 and broadcast_ttl(2) < 199


def test_a_closed_receiver_takes_nothing(rig: Rig) -> None:
    rig.receiver.close()
    mt, value = to_wire(Ping(7, ME, "127.0.0.2:7001", ()))
    rig.receiver.on_packets([datagram(rig.codec.encode(mt, PEER.bytes, 1, 1, value))])
    assert rig.host.fed == [] and rig.counters.snapshot() == {}


def test_its_figures_are_added_to_the_stats(rig: Rig) -> None:
    out: dict[str, int] = {}
    rig.receiver.add_stats(out)
    assert out["queue.incoming"] == 0 and out["user.history_evicted"] == 0
    assert any(k.startswith("replay.") for k in out) and any(k.startswith("user_replay.") for k in out)


class _BrokenMembers(Members):
    """A member table whose snapshot fails once: a bug below the user lane, not a handler's."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def node_for_sender(self, sender: bytes) -> Node:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("snapshot failed")
        return super().node_for_sender(sender)


def test_a_failure_in_the_user_lane_is_counted_and_the_lane_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    r = Rig()
    r.members = _BrokenMembers()
    r.receiver._members = r.members  # type: ignore[attr-defined]
    got: list[Any] = []
    r.handlers.register(MT, HANDLER_FORWARD, lambda sender, pkt: got.append(pkt.unmarshal()))
    try:
        with caplog.at_level(logging.ERROR, logger="gossip.test"):
            r.receiver.on_packets([datagram(r.codec.encode(MT, PEER.bytes, 5, 1, "lost"))])
            r.receiver.on_packets([datagram(r.codec.encode(MT, PEER.bytes, 6, 1, "next"))])
            wait_until(lambda: got == ["next"], "the next message")
        assert r.stat("errors.lane_worker") == 1
        assert any("handling a user packet" in rec.getMessage() for rec in caplog.records)
    finally:
        r.receiver.close()
        assert r.receiver.join(time.monotonic() + WAIT) == []


class _RacingConn:
    """A connection whose resume lets a batch from the reader in just before its flag flips:
    the interleaving of a reader thread that finds the lane full again at that moment."""

    def __init__(self) -> None:
        self.paused = False
        self.race: Callable[[], None] | None = None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        race, self.race = self.race, None
        if race is not None:
            race()  # the reader's batch overfills the lane; this connection is still paused
        self.paused = False


def test_a_connection_resumed_while_its_lane_fills_again_is_paused_again() -> None:
    conn = _RacingConn()
    seen: list[tuple[int, bool]] = []  # (packets still queued, connection paused) per batch
    gate = threading.Event()

    def handle(items: list[tuple[Incoming, Any]]) -> None:
        seen.append((lanes.depths()[0], conn.paused))
        gate.wait(WAIT)

    lanes = UserLanes(1, 4, 1 << 20, handle, Counters(), "t", logging.getLogger("gossip.test"))

    def batch() -> list[tuple[Incoming, Any]]:
        return [(Incoming(b"x", SRC, True, conn, 0.0, "tcp"), None) for _ in range(6)]  # type: ignore[arg-type]

    conn.race = lambda: lanes.put(0, batch())
    lanes.start()
    try:
        lanes.put(0, batch())  # overfills the lane: paused; the lane takes all and resumes it
        wait_until(lambda: bool(seen), "the first batch")
        # The lane holds the reader's second batch, more than its depth: the connection that
        # sent it must not be read meanwhile.
        assert seen[0] == (6, True)
    finally:
        gate.set()
        lanes.close()
        lanes.join(time.monotonic() + WAIT)
