"""What elections say to each other, and what the election asks its host to do: the
:class:`Heartbeat` and :class:`Ack` messages with their checked wire form (:func:`encode_message`,
:func:`decode_message`), and the actions :class:`SendAck` and :class:`Notify`. Pure data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Union

from ..node import NodeID, NodeState

from .config import MAX_TERM, LeaderEvent

__all__ = ["Peer", "Heartbeat", "Ack", "Message", "SendAck", "Notify", "Action", "encode_message",
           "decode_message", "MAX_TERM"]



_HEX_ID = re.compile(r"[0-9a-f]{32}")



@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """One member as the election sees it: its id, its state in the local view, and whether it
    matches the election's criteria."""

    id: NodeID
    state: NodeState
    eligible: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """A leader's (or candidate's) heartbeat, sent to every known member that has not left.

    Attributes:
        term: the sender's term.
        resign: the sender no longer leads or stands in ``term`` (it lost its quorum, or stops).
        retire: the sender's election stops: it will not stand again.
        seq: this heartbeat's number (acknowledgements echo it; 0 in a resignation).
        candidate: the sender asks for acknowledgements but holds no lease yet.
        leader: the sender's node id; the host checks it against the packet's (sealed) sender.
    """

    term: int
    resign: bool = False
    retire: bool = False
    seq: int = 0
    candidate: bool = False
    leader: NodeID | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """A follower's acknowledgement of heartbeat number ``seq`` of ``term``."""

    term: int
    seq: int = 0


Message = Union[Heartbeat, Ack]
"""What election nodes send each other."""


def encode_message(msg: Message) -> dict[str, Any]:
    """Return ``msg`` as a codec-friendly mapping."""
    if isinstance(msg, Ack):
        return {"kind": "ack", "term": msg.term, "seq": msg.seq}
    out: dict[str, Any] = {"kind": "heartbeat", "term": msg.term, "resign": msg.resign,
                           "retire": msg.retire, "seq": msg.seq}
    if msg.candidate:
        out["candidate"] = True
    if msg.leader is not None:
        out["leader"] = msg.leader.hex
    return out


def _bounded(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TERM:
        raise ValueError(f"election message {name} must be an int in 0..2**63-1, got {value!r}")
    return value


def decode_message(value: Any) -> Message:
    """Rebuild a message from :func:`encode_message`'s mapping.

    Raises:
        ValueError: ``value`` is not a well-formed election message.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"an election message is a mapping, got {type(value).__name__}")
    kind = value.get("kind")
    term = _bounded(value.get("term"), "term")
    seq = _bounded(value.get("seq", 0), "seq")
    if kind == "ack":
        return Ack(term, seq)
    if kind != "heartbeat":
        raise ValueError(f"election message kind must be 'heartbeat' or 'ack', got {kind!r}")
    resign, retire = value.get("resign", False), value.get("retire", False)
    candidate = value.get("candidate", False)
    if not isinstance(resign, bool) or not isinstance(retire, bool) or not isinstance(candidate, bool):
        raise ValueError(f"heartbeat resign, retire and candidate must be bools, got {resign!r}, "
                         f"{retire!r}, {candidate!r}")
    leader_hex = value.get("leader")
    leader = None
    if leader_hex is not None:
        if not isinstance(leader_hex, str) or not _HEX_ID.fullmatch(leader_hex):
            raise ValueError(f"heartbeat leader must be 32 lowercase hex digits, got {leader_hex!r:.80}")
        leader = NodeID(hex=leader_hex)
    return Heartbeat(term, resign, retire, seq, candidate, leader)


@dataclasses.dataclass(frozen=True, slots=True)
class SendAck:
    """Send :class:`Ack` of heartbeat ``seq`` of ``term`` to the leader ``node``."""

    node: NodeID
    term: int
    seq: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Notify:
    """Tell the application ``event``; ``node`` is the leader it is about."""

    event: LeaderEvent
    node: NodeID


Action = Union[Heartbeat, SendAck, Notify]
"""What :meth:`Election.actions_to_perform` returns (a :class:`Heartbeat` goes to everyone)."""
