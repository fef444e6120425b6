"""Cluster-wide key rotation in one call: :meth:`gossip.Cluster.rotate_key`.

The node that rotates (the *coordinator*) asks every alive member, one request and reply per
member and step, over packets sealed under the cluster's current key:

1. ``install``: the new key travels inside the sealed request; each member adds it to its
   keyring (for opening only);
2. once every alive member has it, ``switch``: each member makes it the primary (sealing) key;
3. once every member switched, ``remove``: each member drops every other key, as soon as it
   no longer opens packets sealed under them (a member that did since its last answer says
   ``in_use``, and is asked again after ``drain`` seconds).

Every request is bound to a *rotation id* (8 bytes of the coordinator's clock in milliseconds,
8 random bytes) and to the new key's fingerprint *under that id* (BLAKE2s keyed with the
key: it names the key without revealing it, and differs in every rotation). A member follows
the newest rotation id it installed a key for, refuses an older one (``refused.stale``), and
never installs again a key it removed (``refused.retired``), so a recorded request replayed
later cannot switch a node back to an old key or remove the current one. Only a packet that
arrived sealed under the cluster key (``refused.unencrypted``) from a known member
(``refused.not_member``) may ask; malformed requests are refused (``refused.malformed``).
Refusals are counted in :meth:`gossip.Cluster.stats` as ``key_rotation.<reason>``. Keys never
appear in logs, reports or error messages.

Calling :meth:`~gossip.Cluster.rotate_key` again with the same key carries on from where the
members are: installing, switching and removing are idempotent. Members that are down (dead,
or dying during the rotation) are listed in :attr:`RotationReport.down`, and the old key is
then kept (unless ``force=True``) so that they can come back: start them with both keys, then
run the rotation again (docs/key-rotation.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ClusterClosed, ConfigError, GossipError, LocalProtocolError
from .node import Node, NodeState
from .security import Keyring, _check_key
from .wire import RESERVED_MSGS_START

try:  # blake2s without hashlib, which loads OpenSSL for nothing here (as gossip.security)
    from _blake2 import blake2s as _blake2s
except ImportError:  # pragma: no cover - every CPython build has _blake2
    from hashlib import blake2s as _blake2s

if TYPE_CHECKING:
    from .config import FrozenConfig


class Host(Protocol):
    """What a rotation needs of its node (a :class:`gossip.Cluster` is one)."""

    @property
    def keyring(self) -> Keyring | None:
        """The node's keyring, None if unencrypted."""

    @property
    def config(self) -> FrozenConfig:
        """The node's configuration."""

    def local_node(self) -> Node:
        """This node."""

    def nodes(self) -> list[Node]:
        """Every known node, this one included."""

    def send_to_with_response(self, node: Node, msg_type: int, payload: Any,
                              response_type: type[Any] | None = None,
                              timeout: float | None = None) -> Any:
        """Send a request to ``node`` and return its reply."""

__all__ = [
    "ROTATION_MSG_TYPE",
    "Host",
    "RotationProgress",
    "MemberRotation",
    "RotationReport",
    "RotationMember",
    "key_fingerprint",
    "new_rotation_id",
    "rotate_key",
    "check_rotation",
    "MAX_RETIRED_KEYS",
]

logger = logging.getLogger("gossip.rotation")

ROTATION_MSG_TYPE = RESERVED_MSGS_START + 5
"""The message type of key-rotation requests (69, in the add-on packages' range)."""
MAX_RETIRED_KEYS = 64
"""How many removed keys a member remembers (as salted hashes), never to install them again."""

_FP_INFO = b"gossip-cluster key fingerprint v1:"
_ID_SIZE = 16
_FP_SIZE = 16

RotationProgress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: ``step`` is ``"install"``, ``"switch"`` or ``"remove"``;
``done`` of ``total`` members (this node included) finished it."""

STEPS = ("install", "switch", "remove")


def key_fingerprint(key: bytes, rotation_id: bytes) -> bytes:
    """Return the 16-byte fingerprint of ``key`` within rotation ``rotation_id``: BLAKE2s
    keyed with the key (a MAC of the id), so it reveals nothing of the key and differs in every
    rotation."""
    out: bytes = _blake2s(_FP_INFO + bytes(rotation_id), key=bytes(key), digest_size=_FP_SIZE).digest()
    return out


def new_rotation_id(now: float | None = None) -> bytes:
    """Return a new rotation id: the clock in milliseconds (8 bytes, big-endian), 8 random
    bytes. A later rotation has a larger id (as far as the coordinators' clocks agree)."""
    ms = int((time.time() if now is None else now) * 1000)
    return ms.to_bytes(8, "big") + os.urandom(8)


@dataclass
class MemberRotation:
    """What one member did in a rotation (:attr:`RotationReport.members`).

    Attributes:
        node: the member's id (string).
        address: its address.
        installed: it holds the new key.
        switched: the new key is its primary.
        removed: it holds no other key.
        error: why the last step failed for it ("" if none); never contains a key.
    """

    node: str
    address: str
    installed: bool = False
    switched: bool = False
    removed: bool = False
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return this member's entry as plain JSON-ready values."""
        return {"node": self.node, "address": self.address, "installed": self.installed,
                "switched": self.switched, "removed": self.removed, "error": self.error}


@dataclass
class RotationReport:
    """The result of :meth:`gossip.Cluster.rotate_key`.

    Attributes:
        rotation_id: this rotation's id, in hex.
        members: the progress of each member asked (alive or suspect when the rotation
            started; this node included), by node id string.
        down: ids of members that were dead, or died during the rotation without answering:
            the rotation went on without them (a suspect member is asked and waited for).
        complete: every member installed, switched and removed, none was down: the old key is
            gone.
        old_key_kept: the old key was deliberately kept (members were down), or a step failed.
    """

    rotation_id: str
    members: dict[str, MemberRotation] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    complete: bool = False
    old_key_kept: bool = False

    def missing(self, step: str) -> list[str]:
        """Return the ids of the members that have not done ``step`` (install, switch, remove)."""
        if step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
        attr = {"install": "installed", "switch": "switched", "remove": "removed"}[step]
        return [nid for nid, m in self.members.items() if not getattr(m, attr)]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-ready values (what the HTTP API answers)."""
        return {"rotation_id": self.rotation_id, "complete": self.complete,
                "old_key_kept": self.old_key_kept, "down": list(self.down),
                "members": [m.to_dict() for m in self.members.values()]}


class RotationMember:
    """A member's side of key rotation: answers the coordinator's requests
    (:data:`ROTATION_MSG_TYPE`) on one keyring.

    Thread-safe (one lock). ``count(reason)`` is told of every refusal.
    """

    def __init__(self, keyring: Keyring, count: Callable[[str], None]) -> None:
        self._keyring = keyring
        self._count = count
        self._lock = threading.Lock()
        self._latest: bytes = b""          # newest rotation id this member installed under
        self._key: bytes | None = None     # that rotation's key
        self._baseline: int = -1           # secondary opens at the last switch / remove check
        self._salt = os.urandom(16)
        self._retired: deque[bytes] = deque(maxlen=MAX_RETIRED_KEYS)
        self.running = threading.Lock()    # held by the rotation this node coordinates

    # ------------------------------------------------------------------ the network side

    def handle(self, sender: Node, packet: Any) -> dict[str, Any]:
        """The reply handler: check who asks and what, then apply (:meth:`apply`)."""
        if not getattr(packet, "encrypted", False):
            return self._refuse("unencrypted", "the request was not sealed under the cluster key")
        if sender.state is NodeState.UNKNOWN:
            return self._refuse("not_member", "the sender is not a known member")
        try:
            body = packet.unmarshal()
        except GossipError:
            body = None
        if not isinstance(body, Mapping):
            return self._refuse("malformed", "the request is not a map")
        op, rid, fp = body.get("op"), _unhex(body.get("rid"), _ID_SIZE), _unhex(body.get("fp"), _FP_SIZE)
        key: bytes | None = None
        if op == "install":
            raw = body.get("key")
            key = bytes.fromhex(raw) if isinstance(raw, str) and _is_hex(raw, 64) else None
            if key is None:
                return self._refuse("malformed", "no key")
        if op not in STEPS or rid is None or fp is None:
            return self._refuse("malformed", "bad op, rotation id or fingerprint")
        return self.apply(op, rid, fp, key)

    def _refuse(self, reason: str, why: str) -> dict[str, Any]:
        self._count(f"refused.{reason}")
        return {"ok": False, "state": "refused", "why": why}

    # ------------------------------------------------------------------ the steps

    def apply(self, op: str, rid: bytes, fp: bytes, key: bytes | None = None) -> dict[str, Any]:
        """Apply one step of rotation ``rid`` (the coordinator calls this for itself).

        Returns ``{"ok": bool, "state": str, "why": str}``; ``state`` is ``"installed"``,
        ``"switched"``, ``"removed"``, ``"in_use"``, ``"not_installed"`` or ``"refused"``.
        """
        with self._lock:
            if self._latest and rid[:8] < self._latest[:8] or (rid[:8] == self._latest[:8]
                                                                and rid != self._latest):
                return self._refuse("stale", "a newer rotation is under way or done here")
            if op == "install":
                assert key is not None
                return self._install(rid, fp, key)
            if rid != self._latest or self._key is None:
                self._count("not_installed")
                return {"ok": False, "state": "not_installed",
                        "why": "this member did not install the key of this rotation"}
            if key_fingerprint(self._key, rid) != fp:
                return self._refuse("malformed", "the fingerprint is not this rotation's key's")
            if op == "switch":
                return self._switch(self._key)
            return self._remove(self._key)

    def _install(self, rid: bytes, fp: bytes, key: bytes) -> dict[str, Any]:
        ring = self._keyring
        try:
            key = _check_key(key, ring.cipher)
        except ConfigError:
            return self._refuse("malformed", f"the key does not fit {ring.cipher}")
        if key_fingerprint(key, rid) != fp:
            return self._refuse("malformed", "the key does not match its fingerprint")
        if self._retired_hash(key) in self._retired:
            return self._refuse("retired", "this key was removed here: it is never installed again")
        ring.add_key(key)
        self._latest, self._key, self._baseline = rid, key, -1
        return {"ok": True, "state": "installed", "why": ""}

    def _switch(self, key: bytes) -> dict[str, Any]:
        ring = self._keyring
        if key not in ring.keys:
            return {"ok": False, "state": "not_installed", "why": "the key was removed here"}
        if ring.primary_key != key:
            ring.use_key(key)
            self._baseline = self._old_opens()
        elif self._baseline < 0:
            self._baseline = self._old_opens()
        return {"ok": True, "state": "switched", "why": ""}

    def _remove(self, key: bytes) -> dict[str, Any]:
        ring = self._keyring
        if ring.primary_key != key:
            return {"ok": False, "state": "not_installed", "why": "the key is not primary here"}
        old = ring.keys[1:]
        if not old:
            return {"ok": True, "state": "removed", "why": ""}
        opens = self._old_opens()
        if opens != self._baseline:
            self._baseline = opens
            return {"ok": False, "state": "in_use",
                    "why": "packets sealed under an old key still arrive"}
        for k in old:
            ring.remove_key(k)
            self._retired.append(self._retired_hash(k))
        return {"ok": True, "state": "removed", "why": ""}

    def _old_opens(self) -> int:
        ring = self._keyring
        return sum(ring.secondary_opens(k) for k in ring.keys[1:])

    def _retired_hash(self, key: bytes) -> bytes:
        out: bytes = _blake2s(key, key=self._salt, digest_size=16).digest()
        return out


def _is_hex(text: str, max_len: int) -> bool:
    if len(text) > max_len or len(text) % 2:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _unhex(value: object, size: int) -> bytes | None:
    if not isinstance(value, str) or len(value) != 2 * size or not _is_hex(value, 2 * size):
        return None
    return bytes.fromhex(value)


# ---------------------------------------------------------------------------------- coordinator

def check_rotation(cluster: Host, new_key: bytes, timeout: float = 30.0,
                   drain: float = 1.0) -> bytes:
    """Check that ``cluster`` can rotate to ``new_key``; return the key as bytes.

    Raises:
        ConfigError: the cluster is not encrypted (``field="encryption_key"``), does not
            encrypt what it sends (``"encrypt_outgoing"``), or the key's length does not fit
            the cipher (the message gives the length, never the key).
        LocalProtocolError: ``timeout`` is not positive or ``drain`` is negative.
    """
    keyring = cluster.keyring
    if keyring is None:
        raise ConfigError("encryption_key", "the cluster is not encrypted: there is no key to "
                          "rotate (start every node with an encryption_key first)")
    if not cluster.config.encrypt_outgoing:
        raise ConfigError("encrypt_outgoing", "is False: the new key would travel unencrypted; "
                          "finish moving the cluster to encryption first")
    if not timeout > 0 or not drain >= 0:
        raise LocalProtocolError(f"timeout must be > 0 and drain >= 0, got {timeout!r}, {drain!r}")
    return _check_key(new_key, keyring.cipher)


def rotate_key(cluster: Host, member: RotationMember, new_key: bytes, *,
               progress: RotationProgress | None = None, timeout: float = 30.0,
               drain: float = 1.0, force: bool = False) -> RotationReport:
    """Rotate the whole cluster to ``new_key`` (see :meth:`gossip.Cluster.rotate_key`)."""
    new_key = check_rotation(cluster, new_key, timeout, drain)
    if not member.running.acquire(blocking=False):
        raise LocalProtocolError("a key rotation is already running on this node")
    try:
        return _Rotation(cluster, member, new_key, progress, timeout, drain, force).run()
    finally:
        member.running.release()


class _Rotation:
    def __init__(self, cluster: Host, member: RotationMember, key: bytes,
                 progress: RotationProgress | None, timeout: float, drain: float,
                 force: bool) -> None:
        self.cluster, self.member, self.key = cluster, member, key
        self.progress, self.drain, self.force = progress, drain, force
        self.deadline = time.monotonic() + timeout
        self.rid = new_rotation_id()
        self.fp = key_fingerprint(key, self.rid)
        self.local = cluster.local_node()
        self.report = RotationReport(self.rid.hex())
        self.nodes: dict[str, Node] = {}
        for node in cluster.nodes():
            nid = str(node.id)
            if node.state in (NodeState.ALIVE, NodeState.SUSPECT):
                # A suspect member may well be alive: it is asked and waited for, and counted
                # down only once it is dead.
                self.nodes[nid] = node
                self.report.members[nid] = MemberRotation(nid, node.address)
            elif node.state is NodeState.DEAD:
                self.report.down.append(nid)

    def run(self) -> RotationReport:
        report = self.report
        logger.info("key rotation %s: %d members, %d down", report.rotation_id,
                    len(self.nodes), len(report.down))
        if not self._step("install", "installed"):
            report.old_key_kept = True
            return report
        if not self._step("switch", "switched"):
            report.old_key_kept = True
            return report
        if report.down and not self.force:
            logger.warning("key rotation %s: %d members down; the old key is kept so they can "
                           "come back (rotate again once they are alive)", report.rotation_id,
                           len(report.down))
            report.old_key_kept = True
            return report
        if self.drain:
            time.sleep(min(self.drain, max(0.0, self.deadline - time.monotonic())))
        removed = self._step("remove", "removed")
        report.complete = removed and not report.down
        report.old_key_kept = not removed
        return report

    def _step(self, op: str, attr: str) -> bool:
        """Ask every member not yet done until all are, or the deadline; True if all are."""
        members = self.report.members
        total = len(members)
        while True:
            down = set(self.report.down)
            for nid, entry in members.items():
                if getattr(entry, attr) or nid in down:
                    continue
                answer = self._ask(nid, op)
                if answer.get("state") == attr:
                    setattr(entry, attr, True)
                    entry.error = ""
                else:
                    entry.error = f"{op}: {answer.get('state', 'failed')}: {answer.get('why', '')}"
                self._tell(op, sum(1 for m in members.values() if getattr(m, attr)), total)
            pending = [nid for nid, m in members.items() if not getattr(m, attr) and nid not in down]
            if pending:
                self._mark_down(pending)
                pending = [nid for nid in pending if nid not in self.report.down]
            if not pending:
                return True
            left = self.deadline - time.monotonic()
            if left <= 0:
                logger.warning("key rotation %s: %d members did not %s: %s", self.report.rotation_id,
                               len(pending), op, ", ".join(pending))
                return False
            time.sleep(min(max(self.drain, 0.05), left))

    def _mark_down(self, pending: list[str]) -> None:
        """Count as down the pending members now dead, left or forgotten: the rotation goes on
        without them, keeping the old key for them. A suspect member may come back: it is
        waited for (until the deadline), never cut off."""
        states = {str(n.id): n.state for n in self.cluster.nodes()}
        for nid in pending:
            if nid != str(self.local.id) and states.get(nid) not in (NodeState.ALIVE,
                                                                     NodeState.SUSPECT):
                self.report.down.append(nid)
                self.report.members[nid].error += " (down)"

    def _ask(self, nid: str, op: str) -> dict[str, Any]:
        key = self.key if op == "install" else None
        if nid == str(self.local.id):
            return self.member.apply(op, self.rid, self.fp, key)
        payload: dict[str, Any] = {"op": op, "rid": self.rid.hex(), "fp": self.fp.hex()}
        if key is not None:
            payload["key"] = key.hex()
        left = max(0.05, self.deadline - time.monotonic())
        try:
            answer = self.cluster.send_to_with_response(self.nodes[nid], ROTATION_MSG_TYPE, payload,
                                                        timeout=min(left, 5.0))
        except ClusterClosed:
            raise
        except GossipError as exc:
            return {"ok": False, "state": "unreachable", "why": type(exc).__name__}
        if not isinstance(answer, Mapping):
            return {"ok": False, "state": "failed", "why": "the answer is not a map"}
        return dict(answer)

    def _tell(self, step: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        try:
            self.progress(step, done, total)
        except Exception:
            logger.exception("the key rotation's progress callback raised")
