"""Rendezvous placement: stable, deterministic across processes, weighted proportionally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gossip import Node, NodeID, NodeState
from gossip.metadata import MetadataReader
from gossip.placement import MAX_WEIGHT, Rendezvous, node_weight

KEYS = [f"key-{i}" for i in range(20000)]
MEMBERS = [f"worker-{i}" for i in range(10)]


def placement(ring: Rendezvous[str], n: int = 1) -> dict[str, list[str]]:
    return {k: ring.owners(k, n) for k in KEYS}


def test_when_a_member_leaves_only_its_keys_move() -> None:
    before = placement(Rendezvous(MEMBERS), 3)
    leaver = MEMBERS[3]
    after = placement(Rendezvous([m for m in MEMBERS if m != leaver]), 3)
    moved = 0
    for key in KEYS:
        if leaver in before[key]:
            # The others keep their rank; the next member in line fills the gap.
            rest = [m for m in before[key] if m != leaver]
            assert after[key][:2] == rest and leaver not in after[key]
            moved += 1
        else:
            assert after[key] == before[key], key
    assert moved > 0


def test_when_a_member_joins_about_one_nth_of_the_keys_move_all_to_it() -> None:
    before = placement(Rendezvous(MEMBERS))
    joined = [*MEMBERS, "worker-new"]
    after = placement(Rendezvous(joined))
    moved = [k for k in KEYS if after[k] != before[k]]
    assert all(after[k] == ["worker-new"] for k in moved)
    share = len(moved) / len(KEYS)
    # 1/11 = 0.0909; the binomial standard deviation over 20000 keys is 0.002: 5 sigma.
    assert abs(share - 1 / len(joined)) < 0.01, share


def test_keys_spread_evenly_over_equal_members() -> None:
    counts = {m: 0 for m in MEMBERS}
    for owners in placement(Rendezvous(MEMBERS)).values():
        counts[owners[0]] += 1
    for m, c in counts.items():
        assert abs(c / len(KEYS) - 0.1) < 0.012, (m, c)


def test_weights_skew_ownership_proportionally() -> None:
    weights = {"a": 1, "b": 2, "c": 3, "d": 4}
    counts = dict.fromkeys(weights, 0)
    ring = Rendezvous(weights)
    for key in KEYS:
        counts[ring.owners(key)[0]] += 1
    total = sum(weights.values())
    for m, w in weights.items():
        # expected w/10; the standard deviation is at most 0.0035 over 20000 keys
        assert abs(counts[m] / len(KEYS) - w / total) < 0.02, counts


def node(weight: object = None, node_id: NodeID | None = None) -> Node:
    meta = {} if weight is None else {"weight": weight}
    return Node(node_id or NodeID.generate(), "127.0.0.1:1", NodeState.ALIVE, 0, MetadataReader(meta))


def test_a_node_is_weighted_by_its_metadata() -> None:
    light, heavy, drained = node(), node(3), node(0)
    assert node_weight(light) == 1 and node_weight(heavy) == 3 and node_weight(drained) == 0
    assert node_weight(node(10**12)) == MAX_WEIGHT
    ring = Rendezvous([light, heavy, drained])
    assert ring.members == [light, heavy]          # weight 0 owns nothing
    owned = [ring.owner(k) for k in KEYS[:8000]]
    share = sum(1 for o in owned if o is heavy) / len(owned)
    assert abs(share - 0.75) < 0.03, share


def test_members_are_hashed_by_identity_not_by_object() -> None:
    nid = NodeID.generate()
    by_node = Rendezvous([node(node_id=nid), node()])
    by_id = Rendezvous([nid, by_node.members[1].id])
    for key in KEYS[:500]:
        assert by_node.owners(key, 2)[0].id == by_id.owners(key, 2)[0]
    # one member given twice counts once
    assert len(Rendezvous(["x", "x", "y"])) == 2


def test_every_process_computes_the_same_owners() -> None:
    code = textwrap.dedent("""
        import json
        from gossip.placement import Rendezvous
        ring = Rendezvous({"a": 1, "b": 2, "c": 1})
        plain = Rendezvous(["a", "b", "c", "d"])
        print(json.dumps([[ring.owners(f"k{i}", 2), plain.owners(f"k{i}", 3)] for i in range(300)]))
    """)
    runs = []
    for seed in ("1", "2", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             timeout=60, check=True)
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == runs[2]
    ring = Rendezvous({"a": 1, "b": 2, "c": 1})
    plain = Rendezvous(["a", "b", "c", "d"])
    assert runs[0] == [[ring.owners(f"k{i}", 2), plain.owners(f"k{i}", 3)] for i in range(300)]


def test_known_answers_pin_the_hash() -> None:
    # A change of hash function or encoding would move every key of every user: pin a few.
    ring = Rendezvous(["a", "b", "c"])
    assert ring.owners("user:42", 2) == ["b", "c"]
    assert [ring.owner(f"k{i}") for i in range(6)] == [ring.owner(f"k{i}".encode()) for i in range(6)]


def test_owners_bounds_and_errors() -> None:
    ring = Rendezvous(["a", "b"])
    assert ring.owners("k", 0) == []
    assert sorted(ring.owners("k", 5)) == ["a", "b"]
    assert Rendezvous([]).owners("k", 3) == [] and Rendezvous([]).owner("k") is None
    with pytest.raises(ValueError):
        ring.owners("k", -1)
    with pytest.raises(TypeError):
        ring.owners(42, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Rendezvous([3.5])
    with pytest.raises(TypeError):
        Rendezvous({"a": "heavy"})
    assert Rendezvous({"a": float("nan"), "b": -1, "c": 1}).members == ["c"]
    assert "weighted" in repr(Rendezvous({"a": 1, "b": 2}))
