"""Property tests through the whole receive path: well-formed but hostile messages of every
protocol type go through ``to_wire`` -> ``PacketCodec`` -> ``from_wire`` -> ``Protocol.receive``
and ``tick``; after every step the core's invariants hold.

The only exception allowed on the way is :class:`~gossip.errors.DecodeError` (and its
subclasses), raised by the decoder for values outside the wire's ranges. ``Protocol.receive``
and ``Protocol.tick`` must never raise.

CI runs a few hundred examples per test; ``GOSSIP_FUZZ_EXAMPLES=5000 python -m pytest
tests/protocol/test_receive_fuzz.py`` runs a longer campaign.
"""

from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.config import Config
from gossip.errors import DecodeError
from gossip.messages import (
    MAX_INCARNATION, Ack, Alive, Dead, Gossip, Join, JoinReply, MemberState, Message, Nack, Ping, PingReq,
    PushPull, PushPullReply, Suspect, Update, from_wire, to_wire,
)
from gossip.node import PROTOCOL_VERSION, NodeID, NodeState
from gossip.packet import PacketCodec
from gossip.protocol import Protocol
from gossip.protocol.actions import Send

EXAMPLES = int(os.environ.get("GOSSIP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="GOSSIP_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ME = NodeID(int=0x5E1F)
PEERS = [NodeID(int=0x100 + i) for i in range(6)]
PEER_ADDRS = [f"127.0.0.{i}:7946" for i in range(len(PEERS))]
CODEC = PacketCodec(max_packet_size=32 * 1024 * 1024)
# Small bounds, so the fuzzer reaches them.
CONFIG = Config.lan(max_members=200, max_members_per_message=50, max_members_per_source=80,
                    max_pending_relays=16, broadcast_queue_size=64, max_incarnation_jump=1000)

U64 = 2**64 - 1
incarnations = st.one_of(
    st.sampled_from([0, 1, 2, 999, 1000, 1001, MAX_INCARNATION - 1, MAX_INCARNATION, MAX_INCARNATION + 1,
                     2**63, U64]),
    st.integers(0, 2000),
    st.integers(0, MAX_INCARNATION),
    st.integers(-(2**63), U64),
)
node_ids = st.one_of(st.just(ME), st.sampled_from(PEERS), st.integers(1, 2**128 - 1).map(lambda i: NodeID(int=i)))
addrs = st.one_of(st.sampled_from(PEER_ADDRS + ["self:1", "", ":", "[::1]:0"]), st.text(max_size=40),
                  st.text(min_size=1000, max_size=1100))
seqs = st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1), st.just(2**32))
scalars = st.one_of(st.text(max_size=20), st.booleans(), st.integers(-(2**63), U64),
                    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8), st.none())
keys = st.one_of(st.text(min_size=1, max_size=12), st.just(""), st.text(min_size=256, max_size=260))
metas = st.one_of(
    st.just({}),
    st.dictionaries(keys, scalars, max_size=6),
    st.dictionaries(st.text(min_size=1, max_size=4), st.text(min_size=100, max_size=900), min_size=1, max_size=3),
    st.recursive(scalars, lambda inner: st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=2)
                 | st.lists(inner, max_size=2), max_leaves=8).map(lambda v: {"nested": v}),
    st.integers(2, 400).map(lambda depth: _deep(depth)),
)
stamps = st.one_of(st.integers(0, 100), st.integers(0, U64))
states = st.sampled_from(list(NodeState))


def _deep(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return {"deep": value}


# Only the incarnations out of range: what the core itself must guard (seqs, metadata shapes and
# string lengths are the decoder's job).
raw_incarnations = st.one_of(incarnations, st.integers(-(2**80), 2**80))
good_addrs = st.one_of(st.sampled_from(PEER_ADDRS + ["self:1"]), st.text(max_size=40))
good_metas = st.one_of(st.just({}), st.dictionaries(st.text(min_size=1, max_size=8),
                                                    st.one_of(st.text(max_size=30), st.integers(0, 99)), max_size=4))
good_seqs = st.integers(0, 60)


@st.composite
def updates(draw: st.DrawFn, unchecked: bool = False) -> Update:
    kind = draw(st.sampled_from([Alive, Suspect, Dead]))
    node, inc = draw(node_ids), draw(raw_incarnations if unchecked else incarnations)
    if kind is Alive:
        return Alive(node, inc, draw(good_addrs if unchecked else addrs), draw(good_metas if unchecked else metas),
                     draw(stamps),
                     draw(st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION + 1, 0])), draw(st.text(max_size=8)))
    return kind(node, inc, draw(node_ids))  # type: ignore[no-any-return]


@st.composite
def member_states(draw: st.DrawFn, unchecked: bool = False) -> MemberState:
    if unchecked:
        return MemberState(draw(node_ids), draw(good_addrs), draw(states), draw(raw_incarnations), draw(good_metas),
                           draw(stamps), PROTOCOL_VERSION, "")
    return MemberState(draw(node_ids), draw(addrs), draw(states), draw(incarnations), draw(metas), draw(stamps),
                       PROTOCOL_VERSION, "")


def bulk_states(n: int, start: int, state: NodeState) -> tuple[MemberState, ...]:
    """Many fake members at once (drawing them one by one would be slow)."""
    return tuple(MemberState(NodeID(int=start + i), f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:1", state, i % 7)
                 for i in range(n))


def state_lists(unchecked: bool = False) -> st.SearchStrategy[tuple[MemberState, ...]]:
    return st.one_of(
        st.lists(member_states(unchecked), max_size=8).map(tuple),
        st.tuples(st.integers(0, 3000), st.integers(1, 2**100), states).map(lambda t: bulk_states(*t)),
    )


def update_lists(unchecked: bool = False) -> st.SearchStrategy[tuple[Update, ...]]:
    return st.lists(updates(unchecked), max_size=12).map(tuple)


@st.composite
def messages(draw: st.DrawFn, unchecked: bool = False) -> Message:
    kind = draw(st.sampled_from(["ping", "ack", "ping_req", "nack", "gossip", "join", "join_reply", "push_pull",
                                 "push_pull_reply"]))
    if unchecked:
        return _unchecked(draw, kind)
    if kind == "ping":
        target = draw(st.one_of(st.just(ME), node_ids))
        return Ping(draw(seqs), target, draw(addrs), draw(update_lists()),
                    draw(st.one_of(st.just(-1), incarnations, st.integers(-(2**63), -2))))
    if kind == "ack":
        return Ack(draw(seqs), draw(update_lists()))
    if kind == "ping_req":
        return PingReq(draw(seqs), draw(node_ids), draw(addrs), draw(addrs), draw(st.booleans()),
                       draw(st.one_of(st.just(0.0), st.floats(0, 5e6))))
    if kind == "nack":
        return Nack(draw(seqs))
    if kind == "gossip":
        return Gossip(draw(update_lists()))
    if kind == "join":
        return Join(draw(seqs), draw(addrs), draw(state_lists()), draw(st.sampled_from([PROTOCOL_VERSION, 99])),
                    draw(st.text(max_size=8)))
    if kind == "join_reply":
        return JoinReply(draw(seqs), draw(st.booleans()), draw(st.text(max_size=20)), draw(state_lists()))
    if kind == "push_pull":
        return PushPull(draw(seqs), draw(addrs), draw(state_lists()), draw(st.booleans()))
    return PushPullReply(draw(seqs), draw(state_lists()))


def _unchecked(draw: st.DrawFn, kind: str) -> Message:
    ups, sts, seq, addr = update_lists(True), state_lists(True), draw(good_seqs), draw(good_addrs)
    if kind == "ping":
        return Ping(seq, draw(st.one_of(st.just(ME), node_ids)), addr, draw(ups), draw(raw_incarnations))
    if kind == "ack":
        return Ack(seq, draw(ups))
    if kind == "ping_req":
        return PingReq(seq, draw(node_ids), addr, addr, draw(st.booleans()), draw(st.floats(0, 1e7)))
    if kind == "nack":
        return Nack(seq)
    if kind == "gossip":
        return Gossip(draw(ups))
    if kind == "join":
        return Join(seq, addr, draw(sts), PROTOCOL_VERSION, "")
    if kind == "join_reply":
        return JoinReply(seq, draw(st.booleans()), "", draw(sts))
    if kind == "push_pull":
        return PushPull(seq, addr, draw(sts), False)
    return PushPullReply(seq, draw(sts))


@st.composite
def steps(draw: st.DrawFn) -> tuple[Message, NodeID, str, bool, bool | None, float]:
    sender = draw(st.one_of(st.just(ME), node_ids))
    src = draw(st.one_of(st.sampled_from(PEER_ADDRS), st.sampled_from(["127.6.6.6:1", "127.6.6.6:2", "127.7.7.7:9"])))
    return (draw(messages()), sender, src, draw(st.booleans()), draw(st.sampled_from([None, True, False])),
            draw(st.floats(0.0, 3.0)))


def new_core(seed: int) -> Protocol:
    core = Protocol(CONFIG, ME, "self:1", random.Random(seed), 0.0)
    core.bootstrap(0.0, [MemberState(p, a, NodeState.ALIVE, 3) for p, a in zip(PEERS, PEER_ADDRS)])
    core.join(0.0, [PEER_ADDRS[0]])
    return core


def through_the_wire(msg: Message, sender: NodeID) -> Message | None:
    """What the decoder makes of ``msg``; None if it refuses it (the only refusal allowed)."""
    mt, value = to_wire(msg)
    data = CODEC.encode(mt, sender.bytes, 1, 1, value)
    pkt = CODEC.decode(data)
    try:
        return from_wire(pkt.msg_type, pkt.unmarshal())
    except DecodeError:
        return None


def check_invariants(core: Protocol) -> None:
    cfg = core.config
    assert core.state is NodeState.ALIVE                       # never dead (nor leaving) in our own view
    assert ME not in core.members
    assert 0 <= core.incarnation <= MAX_INCARNATION
    assert all(0 <= m.incarnation <= MAX_INCARNATION for m in core.members.values())
    size = core.sizes()
    assert size["members"] <= cfg.max_members
    assert size["broadcasts"] <= cfg.broadcast_queue_size and size["broadcasts_low"] <= cfg.broadcast_queue_size
    assert size["relays"] <= cfg.max_pending_relays
    assert size["unconfirmed"] <= size["members"]
    assert size["probe_list"] <= 2 * size["members"] + 17
    k = cfg.suspicion_mult
    assert size["timers"] <= 64 + 2 * size["probes"] + size["relays"] + (k + 3) * size["members"] \
        + size["push_pulls"] + 2 * size["joins"]
    counts = {s: 0 for s in core.counts}
    for m in core.members.values():
        counts[m.state] += 1
    assert counts == core.counts


def check_sends_decode(core: Protocol) -> None:
    """Whatever we send, a peer can decode: we never produce out-of-range values."""
    for action in core.actions_to_perform():
        if isinstance(action, Send):
            mt, value = to_wire(action.msg)
            pkt = CODEC.decode(CODEC.encode(mt, ME.bytes, 1, 1, value))
            from_wire(pkt.msg_type, pkt.unmarshal())
    from_wire(*_wire(PushPullReply(0, core.local_states())))


def _wire(msg: Message) -> tuple[int, Any]:
    mt, value = to_wire(msg)
    return mt, value


@FUZZ
@given(st.lists(steps(), min_size=1, max_size=25), st.integers(0, 2**32))
def test_hostile_messages_through_the_whole_receive_path(script: list[Any], seed: int) -> None:
    core = new_core(seed)
    now = 0.0
    for msg, sender, src, reliable, verdict, dt in script:
        decoded = through_the_wire(msg, sender)
        if decoded is not None:
            core.receive(now, src, decoded, sender, reliable, app_version_ok=verdict)
            check_invariants(core)
            check_sends_decode(core)
        now += dt
        core.tick(now)
        check_invariants(core)
        check_sends_decode(core)
    core.set_local_metadata(now, {"k": "v"}, 10**6)
    core.tick(now + 60.0)
    check_invariants(core)
    check_sends_decode(core)


@FUZZ
@given(st.lists(messages(unchecked=True), min_size=1, max_size=15), st.integers(0, 2**32))
def test_unchecked_hosts_cannot_push_the_core_out_of_range(script: list[Message], seed: int) -> None:
    # A host that skips the decoder (a harness, a simulator) may hand the core incarnations of
    # any size; the core still never raises and never leaves the wire's ranges.
    core = new_core(seed)
    now = 0.0
    for msg in script:
        core.receive(now, PEER_ADDRS[1], msg, PEERS[1])
        check_invariants(core)
        check_sends_decode(core)
        now += 0.5
        core.tick(now)
        check_invariants(core)
        check_sends_decode(core)


# -- the incarnation budget: what others say of us raises our incarnation by time, not by claim --

BUDGET = CONFIG.copy(incarnation_budget=300, incarnation_budget_window=5.0)
about_me = st.integers(0, 6000)


@st.composite
def accusations(draw: st.DrawFn) -> Message:
    """Messages that speak of us, at incarnations anywhere near where we may have climbed."""
    def update() -> Update:
        kind = draw(st.sampled_from([Suspect, Dead, Alive]))
        if kind is Alive:
            return Alive(ME, draw(about_me), draw(st.sampled_from(["self:1", "127.0.0.99:1"])), {}, draw(stamps))
        return kind(ME, draw(about_me), draw(st.sampled_from([PEERS[1], ME])))  # type: ignore[no-any-return]

    kind = draw(st.sampled_from(["gossip", "ping", "push_pull", "ack"]))
    ups = tuple(update() for _ in range(draw(st.integers(1, 40))))
    if kind == "gossip":
        return Gossip(ups)
    if kind == "ack":
        return Ack(draw(seqs), ups)
    if kind == "ping":
        return Ping(draw(good_seqs), ME, PEER_ADDRS[1], ups, draw(st.one_of(st.just(-1), about_me)))
    mine = tuple(MemberState(ME, "self:1", draw(states), draw(about_me), {}, draw(stamps)) for _ in range(3))
    return PushPull(draw(good_seqs), PEER_ADDRS[1], mine)


@FUZZ
@given(st.lists(st.tuples(st.one_of(accusations(), messages()), st.booleans(), st.floats(0.0, 1.0)),
                min_size=1, max_size=40), st.integers(0, 2**32))
def test_no_sequence_of_messages_from_one_source_outruns_the_incarnation_budget(
        script: list[tuple[Message, bool, float]], seed: int) -> None:
    # One peer (one id, one address) says whatever it likes of us, as fast as it likes: our
    # incarnation rises at most once per message, and by no more than the budget allows
    # (a full bucket, then its refill). No join is pending, so no answer may catch us up.
    core = Protocol(BUDGET, ME, "self:1", random.Random(seed), 0.0)
    core.bootstrap(0.0, [MemberState(p, a, NodeState.ALIVE, 3) for p, a in zip(PEERS, PEER_ADDRS)])
    cap, window = BUDGET.incarnation_budget, BUDGET.incarnation_budget_window
    start, now = core.incarnation, 0.0
    for msg, reliable, dt in script:
        decoded = through_the_wire(msg, PEERS[1])
        before = core.stats.get("refutations", 0)
        if decoded is not None:
            core.receive(now, PEER_ADDRS[1], decoded, PEERS[1], reliable)
        assert core.stats.get("refutations", 0) - before <= 1
        assert core.incarnation - start <= cap + now * cap / window
        check_invariants(core)
        now += dt
        core.tick(now)
        assert core.incarnation - start <= cap + now * cap / window
