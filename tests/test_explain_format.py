"""The text ``gossip members --explain`` prints, from the API's explanation JSON."""

from __future__ import annotations

import datetime
from typing import Any

from gossip.cli import format_explanation

A, B, C, D = ("0" * 24 + x * 8 for x in "abcd")


def explanation(**episode: Any) -> dict[str, Any]:
    base = {"accuser": B, "started_at": 100.0, "incarnation": 3, "via": "gossip", "relayed_by": C,
            "timeout": 18.0, "expected": 1, "confirmations": [], "outcome": "open", "ended_at": None,
            "refuted_incarnation": None, "declared_by": None, "by_timeout": False, "returned_at": None,
            "returned_incarnation": None}
    base.update(episode)
    return {"node": A, "short": A[-8:], "address": "127.0.10.1:7946", "state": "suspect", "incarnation": 3,
            "local": False, "at": 200.0, "flap": {"score": 2, "window": 120.0, "flapping": False, "damped": False},
            "history_size": 8, "episodes": [base], "observer": D,
            "names": {B: {"short": B[-8:], "address": "127.0.10.2:7946"}, C: {"short": C[-8:], "address": ""},
                      D: {"short": D[-8:], "address": "127.0.10.4:7946"}}}


def clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def test_open_suspicion_with_a_confirmation() -> None:
    x = explanation(confirmations=[{"node": D, "at": 101.5, "via": "probe", "relayed_by": None,
                                    "timeout": 18.0, "new_timeout": 3.0}])
    lines = format_explanation(x).splitlines()
    assert lines[0] == "member aaaaaaaa (127.0.10.1:7946) is suspect, incarnation 3; flap score 2 in 120s"
    assert lines[1] == "suspicion 1 of 1: still open"
    assert lines[2] == (f"  {clock(100.0)}  suspected by bbbbbbbb (127.0.10.2:7946) at incarnation 3: by gossip, "
                        "relayed by cccccccc; timeout 18s")
    assert lines[3] == f"  {clock(101.5)}  confirmed by dddddddd (this agent): its own probe failed; timeout 18s -> 3.0s"
    assert lines[4] == "  still suspected (1 of 1 confirmations)"


def test_refuted_dead_left_returned_and_a_bare_verdict() -> None:
    refuted = format_explanation(explanation(outcome="refuted", ended_at=102.0, refuted_incarnation=4))
    assert refuted.splitlines()[-1] == f"  {clock(102.0)}  refuted by the member at incarnation 4"
    dead = format_explanation(explanation(outcome="dead", ended_at=104.5, declared_by=D, by_timeout=True,
                                          returned_at=150.0, returned_incarnation=5, via="sync", relayed_by=B))
    assert "in a state exchange with bbbbbbbb (127.0.10.2:7946)" in dead
    assert f"  {clock(104.5)}  declared dead: its suspicion timed out here, 4.5s after the first accusation" in dead
    assert dead.splitlines()[-1] == f"  {clock(150.0)}  back alive at incarnation 5"
    left = format_explanation(explanation(outcome="left", ended_at=103.0))
    assert left.splitlines()[-1] == f"  {clock(103.0)}  the member left"
    bare = format_explanation(explanation(outcome="dead", ended_at=100.0, declared_by=B, timeout=0.0,
                                          expected=0, via="direct", relayed_by=None))
    assert ("declared dead by bbbbbbbb (127.0.10.2:7946) at incarnation 3, without a suspicion here first: "
            "told directly") in bare


def test_never_suspected_and_flapping() -> None:
    x = explanation()
    x["episodes"] = []
    x["flap"] = {"score": 7, "window": 120.0, "flapping": True, "damped": True}
    text = format_explanation(x)
    assert text.splitlines()[0].endswith("flap score 7 in 120s; flapping; damped")
    assert text.splitlines()[1] == "never suspected by this agent (it keeps the last 8 episodes)"


def test_watch_describes_cluster_events() -> None:
    from gossip.cli import _describe

    flap = _describe("flapping", {"short": "aaaaaaaa", "address": "h:1", "score": 6, "window": 120.0,
                                  "damped": True, "at": 0.0})
    assert flap.endswith("flapping aaaaaaaa h:1: 6 state changes in 120s (damped)")
    part = _describe("partition", {"members": [A, B], "share": 0.4, "window": 10.0, "at": 0.0})
    assert part.endswith("partition suspected: 2 members (40% of the live ones) lost within 10s: aaaaaaaa, bbbbbbbb")
    healed = _describe("healed", {"members": [A, B], "returned": [A], "duration": 61.25, "at": 0.0})
    assert healed.endswith("partition healed after 61.2s: 1 of 2 members back")
    healed = _describe("healed", {"members": [A, B], "returned": [A], "missing": [B], "duration": 61.25,
                                  "at": 0.0})
    assert healed.endswith("partition healed after 61.2s: 1 of 2 members back; not back: bbbbbbbb")
