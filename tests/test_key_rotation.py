"""Cluster-wide key rotation (:meth:`gossip.Cluster.rotate_key`, :mod:`gossip.rotation`),
end to end on the in-memory transport: messages keep flowing, a member that was down is
reported and catches up, strangers and replayed steps are refused, bad input is refused.

Waits are bounded polls; nothing asserts on wall-clock speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, NodeState, testing
from gossip.rotation import (ROTATION_MSG_TYPE, RotationMember, RotationReport, key_fingerprint,
                             new_rotation_id)
from gossip.security import Keyring
from gossip.transports.memory import MemoryNetwork

OLD = bytes(range(32))
NEW = bytes(range(100, 132))
NEWER = bytes(range(200, 232))
TIMEOUT = 15.0


def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """:func:`gossip.testing.wait_until` with this file's longer default timeout."""
    testing.wait_until(pred, timeout, what)


def sees_all(clusters: list[Cluster]) -> bool:
    ids = [c.local_node().id for c in clusters]
    return all((n := c.get_node(i)) is not None and n.state is NodeState.ALIVE
               for c in clusters for i in ids)


def start_nodes(net: MemoryNetwork, n: int, **kw: Any) -> list[Cluster]:
    clusters = []
    for _ in range(n):
        c = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD, **kw))
        c.start()
        clusters.append(c)
    for c in clusters[1:]:
        assert c.join(clusters[0].address, timeout=5.0) == 1
    wait_until(lambda: sees_all(clusters), what=f"{n} nodes to converge")
    return clusters


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork(seed=28)


@pytest.fixture
def five(net: MemoryNetwork) -> Iterator[list[Cluster]]:
    clusters = start_nodes(net, 5)
    yield clusters
    for c in clusters:
        c.stop(leave=False)


def refused_auth(c: Cluster) -> int:
    return sum(v for k, v in c.stats().items() if k.startswith("bad_packets.") and "Authentication" in k)


# ---------------------------------------------------------------------------------- the rotation


def test_five_nodes_rotate_while_messages_flow_and_none_is_lost(five: list[Cluster]) -> None:
    got: list[tuple[int, int]] = []
    got_lock = threading.Lock()
    for c in five:
        def on(sender: Any, pkt: gossip.Packet) -> None:
            with got_lock:
                got.append(tuple(pkt.unmarshal()))  # type: ignore[arg-type]
        c.handle_func_no_forward(gossip.USER_MSG, on)
    stop = threading.Event()
    sent: list[tuple[int, int]] = []

    def flow(i: int) -> None:
        src, seq = five[i], 0
        while not stop.is_set():
            dst = src.get_node(five[(i + 1 + seq % 4) % 5].local_node().id)
            assert dst is not None
            src.send_to_reliable(dst, gossip.USER_MSG, [i, seq])
            sent.append((i, seq))
            seq += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=flow, args=(i,), daemon=True) for i in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: len(got) > 50, what="messages to flow before the rotation")
    steps: list[tuple[str, int, int]] = []
    report = five[0].rotate_key(NEW, progress=lambda s, d, t: steps.append((s, d, t)), drain=0.5)
    wait_until(lambda: len(got) > len(sent) // 2 + 50, what="messages to flow after the rotation")
    stop.set()
    for t in threads:
        t.join(5.0)
    wait_until(lambda: len(got) >= len(sent), what="every message sent to arrive")

    assert sorted(got) == sorted(sent)
    assert report.complete and not report.old_key_kept and report.down == []
    assert len(report.members) == 5
    assert all(m.installed and m.switched and m.removed and not m.error
               for m in report.members.values())
    for c in five:
        assert c.keyring is not None and c.keyring.keys == (NEW,)
        assert refused_auth(c) == 0
    assert [s for s in steps if s[1] == s[2]] == [("install", 5, 5), ("switch", 5, 5),
                                                  ("remove", 5, 5)]
    # the cluster still works under the new key alone
    target = five[1].get_node(five[3].local_node().id)
    assert target is not None
    assert five[1].send_to_with_response(target, ROTATION_MSG_TYPE, {"op": "status"})["state"] == "refused"


def test_a_node_that_was_down_is_reported_and_catches_up_with_both_keys(
        net: MemoryNetwork) -> None:
    fast = {"health_check_interval": 0.3, "ping_timeout": 0.1, "suspicion_mult": 1}
    clusters = start_nodes(net, 5, **fast)
    try:
        down = clusters.pop()
        down_id = down.local_node().id
        down.stop(leave=False)
        wait_until(lambda: all((n := c.get_node(down_id)) is not None and n.state is NodeState.DEAD
                               for c in clusters), what="the stopped node to be declared dead")
        first = clusters[0].rotate_key(NEW, drain=0.2)
        assert first.down == [str(down_id)]
        assert not first.complete and first.old_key_kept
        alive = [str(c.local_node().id) for c in clusters]
        assert all(first.members[nid].installed and first.members[nid].switched
                   and not first.members[nid].removed for nid in alive)
        assert str(down_id) not in first.members     # dead: not asked
        for c in clusters:   # the old key stays, so that the member can come back
            assert c.keyring is not None and c.keyring.keys == (NEW, OLD)

        # The documented way back: start it with both keys (its old configuration plus the new
        # key); the others still accept the old key, so it is let in.
        back = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD,
                                    secondary_keys=[NEW], node_id=str(down_id), **fast))
        back.start()
        clusters.append(back)
        assert back.join(clusters[0].address, timeout=5.0) >= 1
        wait_until(lambda: sees_all(clusters), what="the member to be back")

        again = clusters[1].rotate_key(NEW, drain=0.2)   # from another node: carries on
        assert again.complete and again.down == []
        assert again.members[str(down_id)].installed and again.members[str(down_id)].removed
        for c in clusters:
            assert c.keyring is not None and c.keyring.keys == (NEW,)
    finally:
        for c in clusters:
            c.stop(leave=False)


def test_a_member_that_dies_during_the_rotation_is_waited_for_then_given_up(
        net: MemoryNetwork) -> None:
    fast = {"health_check_interval": 0.3, "ping_timeout": 0.1, "suspicion_mult": 1}
    clusters = start_nodes(net, 3, **fast)
    dying = clusters[2]
    dying_id = str(dying.local_node().id)

    def crash_after_install(step: str, done: int, total: int) -> None:
        if step == "install" and done == total and dying.running:
            dying.stop(leave=False)       # it holds the new key, but will never switch

    try:
        report = clusters[0].rotate_key(NEW, progress=crash_after_install, drain=0.1,
                                        timeout=TIMEOUT)
        assert report.down == [dying_id] and report.old_key_kept and not report.complete
        assert report.members[dying_id].installed and not report.members[dying_id].switched
        assert report.members[dying_id].error.endswith("(down)")
        for c in clusters[:2]:
            assert c.keyring is not None and c.keyring.keys == (NEW, OLD)
    finally:
        for c in clusters:
            c.stop(leave=False)


def test_an_unreachable_member_is_reported_and_nobody_switches(five: list[Cluster],
                                                              net: MemoryNetwork) -> None:
    cut = five[4]
    net.partition([cut.address], [c.address for c in five[:4]])
    report = five[0].rotate_key(NEW, timeout=1.5, drain=0.1)
    assert not report.complete and report.old_key_kept
    assert report.missing("install") == [str(cut.local_node().id)]
    assert report.members[str(cut.local_node().id)].error.startswith("install: unreachable")
    assert len(report.missing("switch")) == 5 and report.missing("remove") == report.missing("switch")
    for c in five[:4]:
        assert c.keyring is not None and c.keyring.primary_key == OLD and NEW in c.keyring.keys
    net.heal()


# ---------------------------------------------------------------------------------- who may ask


def test_a_plain_stranger_cannot_install_a_key(net: MemoryNetwork) -> None:
    # a node in the first step of moving to encryption: it holds the key, accepts plain packets
    keyed = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD,
                                 require_encryption=False, encrypt_outgoing=False))
    plain = Cluster(Config.local(transport=net.new_transport()))
    with keyed, plain:
        assert plain.join(keyed.address, timeout=5.0) == 1
        target = plain.get_node(keyed.local_node().id)
        assert target is not None
        rid = new_rotation_id()
        answer = plain.send_to_with_response(target, ROTATION_MSG_TYPE, {
            "op": "install", "rid": rid.hex(), "fp": key_fingerprint(NEW, rid).hex(), "key": NEW.hex()},
            timeout=5.0)
        assert answer["ok"] is False and answer["state"] == "refused"
        assert keyed.stats()["key_rotation.refused.unencrypted"] == 1
        assert keyed.keyring is not None and keyed.keyring.keys == (OLD,)


def test_replayed_steps_of_an_old_rotation_are_refused(net: MemoryNetwork) -> None:
    # The transport's replay guard is off on the target, so the replayed frames reach the
    # rotation's own checks (with it on, they are refused earlier, as replayed packets).
    coordinator = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD))
    target_tr = net.new_transport()
    target = Cluster(Config.local(transport=target_tr, encryption_key=OLD, replay_window=0))
    recorded: list[Any] = []
    real = target_tr._enqueue_frame

    def record(incoming: Any, delay: float, timeout: float | None) -> None:
        recorded.append(incoming)
        real(incoming, delay, timeout)

    target_tr._enqueue_frame = record  # type: ignore[method-assign]
    with coordinator, target:
        assert target.join(coordinator.address, timeout=5.0) == 1
        wait_until(lambda: sees_all([coordinator, target]), what="two nodes to converge")
        first = coordinator.rotate_key(NEW, drain=0.1)
        assert first.complete
        captured = list(recorded)
        attacker = net.new_transport()
        attacker.start(lambda batch: None)
        refused: list[int] = []

        def replay_midway(step: str, done: int, total: int) -> None:
            # Every member holds NEW and NEWER now: a replayed request sealed under NEW opens.
            if step != "install" or done != total or refused:
                return
            before = target.stats().get("key_rotation.refused.stale", 0)
            for inc in captured:   # the attacker replays every frame the first rotation sent
                attacker._connect(target.address).send_frame(inc.data)
            wait_until(lambda: target.stats().get("key_rotation.refused.stale", 0) > before,
                       what="the replayed steps of the first rotation to be refused")
            refused.append(target.stats()["key_rotation.refused.stale"] - before)
            assert target.keyring is not None and set(target.keyring.keys) == {NEW, NEWER}

        try:
            second = coordinator.rotate_key(NEWER, progress=replay_midway, drain=0.1)
        finally:
            attacker.close()
        assert refused and second.complete
        assert target.keyring is not None
        assert target.keyring.keys == (NEWER,)


def test_a_member_refuses_stale_retired_and_mismatched_steps() -> None:
    counted: list[str] = []
    ring = Keyring([OLD])
    m = RotationMember(ring, counted.append)
    r1 = new_rotation_id(1000.0)
    assert m.apply("install", r1, key_fingerprint(NEW, r1), NEW)["state"] == "installed"
    assert m.apply("switch", r1, key_fingerprint(NEW, r1))["state"] == "switched"
    assert m.apply("remove", r1, key_fingerprint(NEW, r1))["state"] == "removed"
    assert ring.keys == (NEW,)
    # a later rotation, with a rotation id whose fingerprint does not match: refused
    r2 = new_rotation_id(2000.0)
    assert m.apply("install", r2, key_fingerprint(NEWER, r1), NEWER)["state"] == "refused"
    assert m.apply("install", r2, key_fingerprint(NEWER, r2), NEWER)["state"] == "installed"
    assert m.apply("switch", r2, key_fingerprint(NEW, r2))["state"] == "refused"
    assert m.apply("switch", r1, key_fingerprint(NEW, r1))["state"] == "refused"     # stale
    assert m.apply("install", r1, key_fingerprint(NEW, r1), NEW)["state"] == "refused"
    same_ms = r2[:8] + bytes(8)
    assert m.apply("switch", same_ms, key_fingerprint(NEWER, same_ms))["state"] == "refused"
    # a newer rotation back to a key removed here: never installed again
    r3 = new_rotation_id(3000.0)
    assert m.apply("install", r3, key_fingerprint(OLD, r3), OLD)["state"] == "refused"
    # a step of a rotation never installed here
    r4 = new_rotation_id(4000.0)
    assert m.apply("switch", r4, key_fingerprint(NEWER, r4))["state"] == "not_installed"
    assert ring.primary_key == NEW and set(ring.keys) == {NEW, NEWER}
    assert counted.count("refused.stale") == 3 and "refused.retired" in counted
    assert counted.count("refused.malformed") == 2


def test_remove_waits_while_old_key_packets_still_arrive() -> None:
    ring = Keyring([OLD])
    m = RotationMember(ring, lambda reason: None)
    sender_ring = Keyring([OLD])
    r = new_rotation_id()
    fp = key_fingerprint(NEW, r)
    m.apply("install", r, fp, NEW)
    m.apply("switch", r, fp)
    ring.open(sender_ring.seal(b"late", b"aad", sender=bytes(16)), b"aad", sender=bytes(16))
    assert m.apply("remove", r, fp)["state"] == "in_use"
    assert ring.keys == (NEW, OLD)
    assert m.apply("remove", r, fp)["state"] == "removed"
    assert ring.keys == (NEW,)
    assert m.apply("remove", r, fp)["state"] == "removed"   # idempotent


class _Pkt:
    def __init__(self, body: Any, encrypted: bool = True) -> None:
        self.body, self.encrypted = body, encrypted

    def unmarshal(self) -> Any:
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


@pytest.mark.parametrize("body", [
    None, "install", {"op": "install"}, {"op": "nope", "rid": "00" * 16, "fp": "00" * 16},
    {"op": "install", "rid": "00" * 16, "fp": "00" * 16, "key": "zz"},
    {"op": "install", "rid": "00" * 16, "fp": "00" * 16, "key": "00" * 40},
    {"op": "switch", "rid": "0" * 31, "fp": "00" * 16},
    gossip.DecodeError("bad"),
])
def test_malformed_requests_are_refused_and_counted(body: Any) -> None:
    counted: list[str] = []
    m = RotationMember(Keyring([OLD]), counted.append)
    member = gossip.Node(gossip.NodeID.generate(), "127.0.0.1:1", NodeState.ALIVE, 1, {})
    assert m.handle(member, _Pkt(body))["state"] == "refused"
    assert counted == ["refused.malformed"]


def test_a_stranger_not_in_the_member_table_is_refused() -> None:
    counted: list[str] = []
    m = RotationMember(Keyring([OLD]), counted.append)
    stranger = gossip.Node(gossip.NodeID.generate(), "127.0.0.1:1", NodeState.UNKNOWN, 1, {})
    assert m.handle(stranger, _Pkt({}))["state"] == "refused"
    assert counted == ["refused.not_member"]


def test_a_key_for_another_cipher_length_is_refused_without_quoting_it() -> None:
    counted: list[str] = []
    m = RotationMember(Keyring([OLD]), counted.append)
    short = b"k" * 20
    r = new_rotation_id()
    answer = m.apply("install", r, key_fingerprint(short, r), short)
    assert answer["state"] == "refused" and short.hex() not in str(answer)


# ---------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_clearly(net: MemoryNetwork) -> None:
    plain = Cluster(Config.local(transport=net.new_transport()))
    upgrading = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD,
                                     require_encryption=False, encrypt_outgoing=False))
    keyed = Cluster(Config.local(transport=net.new_transport(), encryption_key=OLD))
    with pytest.raises(gossip.ClusterClosed):
        keyed.rotate_key(NEW)
    with plain, upgrading, keyed:
        with pytest.raises(gossip.ConfigError, match="not encrypted") as err:
            plain.rotate_key(NEW)
        assert err.value.field == "encryption_key"
        with pytest.raises(gossip.ConfigError, match="unencrypted") as err:
            upgrading.rotate_key(NEW)
        assert err.value.field == "encrypt_outgoing"
        bad = b"\x01" * 20
        with pytest.raises(gossip.ConfigError, match="20 bytes") as err:
            keyed.rotate_key(bad)
        assert bad.hex() not in str(err.value) and repr(bad) not in str(err.value)
        with pytest.raises(gossip.LocalProtocolError, match="timeout"):
            keyed.rotate_key(NEW, timeout=0)
        assert keyed.keyring is not None and keyed.keyring.keys == (OLD,)


def test_report_helpers() -> None:
    report = RotationReport("ab")
    with pytest.raises(ValueError):
        report.missing("spin")
    assert report.to_dict() == {"rotation_id": "ab", "complete": False, "old_key_kept": False,
                                "down": [], "members": []}


def test_a_raising_progress_callback_does_not_stop_the_rotation(net: MemoryNetwork) -> None:
    clusters = start_nodes(net, 2)
    try:
        def boom(step: str, done: int, total: int) -> None:
            raise RuntimeError("progress bar broke")
        report = clusters[0].rotate_key(NEW, progress=boom, drain=0.05)
        assert report.complete
    finally:
        for c in clusters:
            c.stop(leave=False)
