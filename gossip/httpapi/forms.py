"""The JSON forms of members, explanations and cluster events, as the HTTP API serves them."""

from __future__ import annotations

import json
from typing import Any

from ..cluster import Cluster
from ..joining import JoinAttemptFailed, JoinSucceeded
from ..node import Node, NodeID
from ..protocol.actions import MemberRefused
from ..protocol.flap import MemberFlapping
from ..protocol.insight import ClusterEvent
from ..protocol.partition import PartitionHealed, PartitionSuspected
from ..protocol.provenance import Explanation, SuspicionEpisode

__all__ = ["node_json", "explanation_json", "cluster_event_json"]

def _jsonable(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def dumps(value: object) -> str:
    """Return ``value`` as compact JSON (bytes as hex, other odd values as their text)."""
    return json.dumps(value, default=_jsonable, separators=(",", ":"))


def node_json(node: Node, rtt: float | None = None, local: bool = False, flap: int = 0) -> dict[str, Any]:
    """Return the JSON form of a node snapshot, as the API serves it."""
    return {
        "id": str(node.id),
        "short": node.id.short,
        "address": node.address,
        "state": str(node.state),
        "incarnation": node.incarnation,
        "metadata": node.metadata.get_all_as_string(),
        "tags": sorted(node.tags),
        "rtt": rtt,
        "flap": flap,
        "local": local,
    }


def _names(cluster: Cluster | None, ids: set[NodeID]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for nid in ids:
        node = cluster.get_node(nid) if cluster is not None else None
        out[str(nid)] = {"short": nid.short, "address": node.address if node is not None else ""}
    return out


def _opt(nid: NodeID | None) -> str | None:
    return None if nid is None else str(nid)


def _episode_json(e: SuspicionEpisode) -> dict[str, Any]:
    opt = _opt
    return {
        "accuser": str(e.accuser), "started_at": e.started_at, "incarnation": e.incarnation,
        "via": e.via, "relayed_by": opt(e.relayed_by), "timeout": e.timeout, "expected": e.expected,
        "confirmations": [{"node": str(c.node), "at": c.at, "via": c.via, "relayed_by": opt(c.relayed_by),
                           "timeout": c.timeout, "new_timeout": c.new_timeout} for c in e.confirmations],
        "outcome": e.outcome, "ended_at": e.ended_at, "refuted_incarnation": e.refuted_incarnation,
        "declared_by": opt(e.declared_by), "by_timeout": e.by_timeout, "returned_at": e.returned_at,
        "returned_incarnation": e.returned_incarnation,
    }


def explanation_json(exp: Explanation, cluster: Cluster | None = None) -> dict[str, Any]:
    """Return the JSON form of an :class:`~gossip.protocol.provenance.Explanation`.

    Node ids are full strings; ``names`` maps every id mentioned to its short id and (when
    ``cluster`` knows it) its address; ``observer`` is ``cluster``'s own id (whose view this is).
    Times are as in ``exp`` (wall-clock seconds for :meth:`Cluster.explain`).
    """
    ids = {exp.node}
    for e in exp.episodes:
        ids.update(x for x in (e.accuser, e.relayed_by, e.declared_by) if x is not None)
        for c in e.confirmations:
            ids.update(x for x in (c.node, c.relayed_by) if x is not None)
    return {
        "node": str(exp.node), "short": exp.node.short, "address": exp.address, "state": str(exp.state),
        "incarnation": exp.incarnation, "local": exp.local, "at": exp.at,
        "flap": {"score": exp.flap_score, "window": exp.flap_window, "flapping": exp.flapping,
                 "damped": exp.damped},
        "history_size": exp.history_size,
        "episodes": [_episode_json(e) for e in exp.episodes],
        "names": _names(cluster, ids),
        "observer": None if cluster is None else str(cluster.local_node().id),
    }


def cluster_event_json(ev: ClusterEvent) -> tuple[str, dict[str, Any]]:
    """Return the server-sent event kind and data of a cluster event.

    ``flapping``: ``{"node", "short", "address", "score", "window", "threshold", "damped", "at"}``;
    ``partition``: ``{"members": [id...], "share", "window", "at"}``; ``healed``:
    ``{"members": [id...], "returned": [id...], "missing": [id...], "duration", "at"}``;
    ``joined``: ``{"joined": [peer...], "failures", "attempt", "rejoin", "at"}``;
    ``join_failed``: ``{"reason", "failures", "attempt", "retry_in", "rejoin", "at"}``;
    ``refused``: ``{"node", "short", "address", "reason", "at"}``.
    """
    if isinstance(ev, MemberFlapping):
        return "flapping", {"node": str(ev.node), "short": ev.node.short, "address": ev.addr,
                            "score": ev.score, "window": ev.window, "threshold": ev.threshold,
                            "damped": ev.damped, "at": ev.at}
    if isinstance(ev, PartitionSuspected):
        return "partition", {"members": [str(n) for n in ev.members], "share": ev.share,
                             "window": ev.window, "at": ev.at}
    if isinstance(ev, JoinSucceeded):
        return "joined", {"joined": list(ev.joined), "failures": dict(ev.failures),
                          "attempt": ev.attempt, "rejoin": ev.rejoin, "at": ev.at}
    if isinstance(ev, JoinAttemptFailed):
        return "join_failed", {"reason": ev.reason, "failures": dict(ev.failures),
                               "attempt": ev.attempt, "retry_in": ev.retry_in,
                               "rejoin": ev.rejoin, "at": ev.at}
    if isinstance(ev, MemberRefused):
        return "refused", {"node": str(ev.node), "short": ev.node.short, "address": ev.addr,
                           "reason": ev.reason, "at": ev.at}
    assert isinstance(ev, PartitionHealed)
    return "healed", {"members": [str(n) for n in ev.members], "returned": [str(n) for n in ev.returned],
                      "missing": [str(n) for n in ev.missing], "duration": ev.duration, "at": ev.at}
