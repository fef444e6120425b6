"""Tags: carried with a member's record, ordered with its metadata, bounded with it (sans-I/O)."""

from __future__ import annotations

import msgpack
import pytest

from gossip.config import Config
from gossip.errors import DecodeError
from gossip.messages import (
    MAX_TAGS, Alive, Gossip, MemberState, PushPull, check_tag, from_wire, tags_size, to_wire,
)
from gossip.node import NodeState

from .harness import A, CoreCluster, lone

GPU = frozenset({"gpu"})


def test_a_tag_change_spreads_with_the_metadata() -> None:
    c = CoreCluster(4)
    c.run(1.0)
    me = c.cores[0]
    me.set_local_metadata(c.now, {"zone": "a"}, 10, tags=GPU | {"eu"})
    c.drain_all()
    c.run(3.0)
    for i in range(1, 4):
        m = c.cores[i].members[me.id]
        assert m.tags == {"gpu", "eu"} and m.meta == {"zone": "a"}, i
    # Dropping a tag spreads the same way; metadata writes without tags keep them.
    me.set_local_metadata(c.now, {"zone": "a"}, 11, tags=frozenset({"eu"}))
    c.drain_all()
    c.run(3.0)
    me.set_local_metadata(c.now, {"zone": "b"}, 12)
    c.drain_all()
    c.run(3.0)
    assert me.tags == {"eu"}
    for i in range(1, 4):
        assert c.cores[i].members[me.id].tags == {"eu"}, i


def test_a_late_joiner_learns_tags_from_the_full_state() -> None:
    c = CoreCluster(2, bootstrap=False)
    c.cores[0].set_local_metadata(0.0, {}, 5, tags=GPU)
    c.drain_all()
    c.cores[1].join(c.now, [c.cores[0].addr])
    c.drain_all()
    c.run(2.0)
    assert c.cores[1].members[c.cores[0].id].tags == GPU
    assert c.cores[0].self_state().tags == GPU


def test_tags_count_against_the_metadata_bound() -> None:
    cfg = Config.lan()
    cfg.max_metadata_size = 64
    core = lone(cfg)
    big = frozenset(f"tag-{i:02d}" for i in range(10))   # ~80 bytes of tags, no metadata
    assert tags_size(big) > 64
    core.receive(0.0, "a:1", Gossip((Alive(A, 1, "a:1", {}, 5, tags=big),)), sender=A)
    assert core.members[A].tags == frozenset()   # the member is taken, its tags are not
    assert core.stats["refused_metadata_size"] == 1
    core.receive(0.0, "a:1", Gossip((Alive(A, 2, "a:1", {}, 6, tags=GPU),)), sender=A)
    assert core.members[A].tags == GPU
    # A full state with oversize tags for a dead member is refused the same way.
    core.receive(1.0, "a:1", PushPull(1, "a:1", (MemberState(A, "a:1", NodeState.DEAD, 3, {}, 9, tags=big),)),
                 sender=A, reliable=True)
    assert core.members[A].tags == GPU and core.stats["refused_metadata_size"] == 2


def test_tags_on_the_wire_and_what_older_peers_send() -> None:
    a = Alive(A, 1, "a:1", {"k": 1}, 2, tags=GPU)
    t, v = to_wire(Gossip((a,)))
    assert v[0][0][-1] == ["gpu"] and from_wire(t, v) == Gossip((a,))
    # A member without tags is encoded as before tags existed: 8 fields, readable by older peers.
    t, v = to_wire(Gossip((Alive(A, 1, "a:1"),)))
    assert len(v[0][0]) == 8
    s = MemberState(A, "a:1", NodeState.ALIVE, 1, tags=GPU)
    t, v = to_wire(PushPull(1, "a:1", (s,)))
    assert from_wire(t, v).states == (s,)
    assert len(to_wire(PushPull(1, "a:1", (MemberState(A, "a:1", NodeState.ALIVE, 1),)))[1][2][0]) == 8


@pytest.mark.parametrize("tags", [[], ["bad tag"], [""], ["x" * 65], [1], "gpu",
                                  [f"t{i}" for i in range(MAX_TAGS + 1)]])
def test_malformed_tags_are_refused_at_decode(tags: object) -> None:
    value = [[[0, A.bytes, 1, "a:1", {}, 0, 1, "", tags]]]
    with pytest.raises(DecodeError):
        from_wire(9, msgpack.unpackb(msgpack.packb(value)))
    with pytest.raises(DecodeError, match="expected a list of 8 or 9"):
        from_wire(9, [[[0, A.bytes, 1, "a:1", {}, 0, 1, "", ["gpu"], "more"]]])


def test_tags_of_a_dead_member_are_taken_from_a_full_state() -> None:
    core = lone()
    core.receive(0.0, "a:1", Gossip((Alive(A, 1, "a:1", {}, 5),)), sender=A)
    core.receive(1.0, "a:1", PushPull(1, "a:1", (MemberState(A, "a:1", NodeState.DEAD, 1, {"k": 1}, 9, tags=GPU),)),
                 sender=A, reliable=True)
    assert core.members[A].tags == GPU and core.members[A].meta_stamp == 9


def test_check_tag() -> None:
    assert check_tag("gpu") is None and check_tag("zone=eu-1") is None and check_tag("a/b:c.d_e+f") is None
    assert "str" in (check_tag(3) or "")
    assert "1..64" in (check_tag("") or "")
    assert "characters" in (check_tag("-lead") or "") and "characters" in (check_tag("é") or "")
