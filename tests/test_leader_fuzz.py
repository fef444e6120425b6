"""Property tests of the election core against hostile input.

One :class:`Election` is fed arbitrary heartbeats (any term the wire carries, from 0 to
``2**63 - 1``, with any flags), acknowledgements, ticks and membership changes, in the name of
its peers. After every step:

* every message it asks its host to send encodes and decodes again, through both codecs, to
  the same message (``encode(decode(x))`` never raises for any term the core can produce);
* its term stays in ``0..MAX_TERM`` and never goes down;
* heartbeats raise its term by at most ``max_term_jump`` per ``leader_timeout`` window (so at
  most twice that within any sliding window of that length), besides its own elections.

``GOSSIP_FUZZ_EXAMPLES=5000 python -m pytest tests/test_leader_fuzz.py`` runs a longer campaign.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.codecs import get_codec
from gossip.leader.election import (
    MAX_TERM, Ack, Election, Heartbeat, LeaderConfig, Peer, SendAck, decode_message, encode_message,
)
from gossip.node import NodeID, NodeState

EXAMPLES = int(os.environ.get("GOSSIP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="GOSSIP_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ME = NodeID(int=0x50)
PEERS = [NodeID(int=0x10 + i) for i in range(4)] + [NodeID(int=0x90 + i) for i in range(2)]
CFG = LeaderConfig(check_interval=1.0, leader_timeout=3.0, max_term_jump=1000)
CODECS = [get_codec("msgpack"), get_codec("json")]
STATES = [NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.LEAVING]

terms = st.one_of(
    st.integers(0, 8),
    st.integers(0, MAX_TERM),
    st.sampled_from([MAX_TERM, MAX_TERM - 1, MAX_TERM - CFG.max_term_jump, 1 << 62, 1 << 32,
                     CFG.max_term_jump, CFG.max_term_jump + 1]),
)
seqs = st.one_of(st.integers(0, 64), st.integers(0, MAX_TERM))


def round_trip(msg: Any) -> None:
    for codec in CODECS:
        back = decode_message(codec.decode(codec.encode(encode_message(msg))))
        assert back == msg, (codec, msg, back)


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["tick", "tick", "hb", "hb", "ack", "view", "near"]))
        peer = draw(st.integers(0, len(PEERS) - 1))
        if kind == "tick":
            out.append(("tick", draw(st.floats(0.0, 4.0))))
        elif kind in ("hb", "near"):
            named = draw(st.sampled_from(["sender", "none", "other"]))
            out.append((kind, peer, draw(terms), draw(st.booleans()), draw(st.booleans()), draw(seqs),
                        draw(st.booleans()), named, draw(st.integers(0, 3 * CFG.max_term_jump))))
        elif kind == "ack":
            out.append(("ack", peer, draw(st.integers(-2, 2)), draw(st.integers(0, 70))))
        else:
            out.append(("view", peer, draw(st.sampled_from(STATES)), draw(st.booleans())))
    return out


@FUZZ
@given(steps())
def test_no_input_makes_the_core_emit_what_the_wire_cannot_carry(plan: list[tuple[Any, ...]]) -> None:
    core = Election(ME, CFG, 0.0)
    view = {p: (NodeState.ALIVE, True) for p in PEERS}
    now = 0.0
    last_term = 0
    rises: list[tuple[float, int]] = []     # (when, rise) for each heartbeat received
    own: list[float] = []                   # when this node's own candidacy won

    def peers() -> list[Peer]:
        return [Peer(ME, NodeState.ALIVE, True)] + [Peer(p, s, e) for p, (s, e) in view.items()]

    def check(before: int, via_heartbeat: bool) -> None:
        nonlocal last_term
        for a in core.actions_to_perform():
            if isinstance(a, Heartbeat):
                round_trip(a)
            elif isinstance(a, SendAck):
                round_trip(Ack(a.term, a.seq))
        term = core.term
        assert 0 <= term <= MAX_TERM and term >= last_term
        if core.candidacy is not None:
            assert 0 < core.candidacy <= MAX_TERM
        if via_heartbeat:
            rises.append((now, term - before))
        elif term > before:
            own.append(now)
        last_term = term
        window = [r for t, r in rises if t > now - CFG.leader_timeout]
        ours = sum(1 for t in own if t > now - CFG.leader_timeout)
        assert sum(window) <= 2 * CFG.max_term_jump + ours, (window, ours)

    # First, a quiet start: the node stands and leads (a quorum of one is not enough, so not yet).
    for step in plan:
        before = core.term
        kind = step[0]
        if kind == "tick":
            now += step[1]
            core.tick(now, peers())
            check(before, False)
        elif kind in ("hb", "near"):
            _, i, term, resign, retire, seq, candidate, named, offset = step
            if kind == "near":
                term = min(MAX_TERM, core.term + offset)   # just inside or past the allowance
            sender = PEERS[i]
            leader = {"sender": sender, "none": None, "other": PEERS[(i + 1) % len(PEERS)]}[named]
            hb = Heartbeat(term, resign, retire, seq, candidate, leader)
            round_trip(hb)
            core.receive(now, sender, hb, peers())
            check(before, True)
        elif kind == "ack":
            _, i, dterm, seq = step
            base = core.candidacy if core.candidacy is not None else core.term
            ack = Ack(max(0, min(MAX_TERM, base + dterm)), seq)
            core.receive(now, PEERS[i], ack, peers())
            check(before, False)
        else:
            _, i, state, eligible = step
            view[PEERS[i]] = (state, eligible)
            core.tick(now, peers())
            check(before, False)


@FUZZ
@given(st.integers(0, MAX_TERM), st.integers(0, MAX_TERM), st.booleans(), st.booleans(), st.booleans())
def test_every_message_in_range_round_trips(term: int, seq: int, resign: bool, retire: bool, cand: bool) -> None:
    round_trip(Heartbeat(term, resign, retire, seq, cand, PEERS[term % len(PEERS)]))
    round_trip(Heartbeat(term, resign, retire, seq, cand))
    round_trip(Ack(term, seq))


def test_a_node_at_the_top_term_does_not_stand() -> None:
    cfg = LeaderConfig(max_term_jump=MAX_TERM)   # no allowance: one heartbeat reaches the top
    core = Election(ME, cfg, 0.0)
    peers = [Peer(ME, NodeState.ALIVE), Peer(PEERS[0], NodeState.ALIVE)]
    core.receive(1.0, PEERS[0], Heartbeat(MAX_TERM, seq=1), peers)
    assert core.term == MAX_TERM
    core.remove_members([PEERS[0]])              # that leader is gone; alone, this node could stand
    core.tick(100.0, peers[:1])
    core.tick(200.0, peers[:1])
    assert core.candidacy is None and core.stats["term_exhausted"] >= 1
    assert all(not isinstance(a, Heartbeat) for a in core.actions_to_perform())
