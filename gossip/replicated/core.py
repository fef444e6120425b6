"""One node's copy of a replicated last-writer-wins map, as a pure state machine: :class:`MapCore`.

Theory of operation
-------------------

Every key holds one :class:`Entry`: its value (or a *tombstone*, for a deleted key), stamped
with the hybrid logical clock (HLC) of the node that wrote it and that node's id. Of two
entries of one key, the one with the larger ``(stamp, writer)`` wins, on every node, whatever
order they arrive in, so nodes that have seen the same writes hold the same map:

* **A local write** stamps the entry with the node's HLC, made to exceed the stamp the key
  holds now (a write always replaces what its writer saw), applies it, and asks the host to
  broadcast it (:class:`Broadcast` of an :class:`Update`).
* **A remote entry** is merged into the node's HLC (the receive rule) and replaces the local one
  if it wins. An entry stamped further ahead of the local clock than ``max_clock_drift`` is
  refused (counted): it would win against every later write for that long.
* **Anti-entropy** repairs what broadcasts lost, and brings a late joiner the whole map: every
  ``sync_interval`` the node sends a random peer a :class:`Digest`, one 64-bit hash per bucket
  of keys (an XOR of its entries' hashes, kept up to date at each change). The peer answers
  with its entries in the buckets that differ (:class:`Diff`, asking for the same buckets back),
  and the node answers with its own. Both then hold the newer entry of every key in those
  buckets. Messages are split to stay under ``max_message_size``.
* **Tombstones** keep a delete from being undone by an older write that arrives later. A
  tombstone is collected once its stamp is ``tombstone_ttl`` old (by the HLC's physical time),
  and a tombstone that old is not taken from peers. A node cut off for longer than
  ``tombstone_ttl`` may bring a deleted key back when it returns: set it above the longest
  partition you expect.
* **Bounds**: at most ``max_entries`` keys (tombstones included) per map; a local write of a
  new key beyond raises :class:`MapFull`, a remote one is dropped (``refused_full``); keys of at
  most ``max_key_length`` characters, values of at most ``max_value_size`` bytes encoded.

Values are plain data (None, bool, int, float, str, bytes, lists and string-keyed dicts of
them); each is stored as a decoded copy of its encoding, so what a node reads is what every
other node reads.

This module imports no threads, sockets or clocks; randomness and the HLC are passed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import msgpack

from ..errors import ConfigError, GossipError
from ..hlc import COUNTER_BITS, HLC, MAX_TIMESTAMP
from ..node import NodeID
from ..wire import MAX_MSG_TYPE, RESERVED_MSGS_START

__all__ = [
    "MapConfig",
    "MapFull",
    "Entry",
    "Update",
    "Digest",
    "Diff",
    "MapMessage",
    "Broadcast",
    "SendTo",
    "Changed",
    "MapAction",
    "MapCore",
    "encode_map_message",
    "decode_map_message",
    "MAX_NAME_LENGTH",
    "MAX_BUCKETS",
]

MAX_NAME_LENGTH = 128
"""The longest map name, in characters."""

MAX_BUCKETS = 4096
"""The most digest buckets a message may carry."""

_MAX_ENTRIES_PER_MESSAGE = 65536
_ENTRY_OVERHEAD = 48          # bytes an entry costs on the wire besides its key and value
_HEX_ID = frozenset("0123456789abcdef")


class MapFull(GossipError):
    """The map holds ``max_entries`` keys already (tombstones included)."""


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """Settings of a replicated map (float seconds, sizes in bytes; safe defaults).

    Attributes:
        msg_type: the message type every replicated map of a cluster uses (64..65535; 68 by
            default, in the range reserved for add-on packages).
        sync_interval: how often a node runs anti-entropy with a random peer.
        tombstone_ttl: how long a deleted key is remembered (by the writer's HLC time); longer
            than any partition you expect, or a node cut off that long may bring it back.
        max_entries: the most keys a map holds, tombstones included.
        max_key_length: the longest key, in characters.
        max_value_size: the largest value, in bytes encoded.
        max_message_size: the most entry bytes one message carries (larger sets are split).
        digest_buckets: how many buckets the anti-entropy digest has (every node of a map must
            use the same number; a digest of another size is answered with every entry).
        max_clock_drift: how far ahead of the local clock a remote stamp may be, in seconds.
        event_queue_size: the most change events waiting for the handlers (the oldest are
            dropped beyond, counted as ``events_dropped``).

    Raises:
        ConfigError: a value is out of range (the message names the field).
    """

    msg_type: int = RESERVED_MSGS_START + 4
    sync_interval: float = 2.0
    tombstone_ttl: float = 3600.0
    max_entries: int = 10000
    max_key_length: int = 256
    max_value_size: int = 64 * 1024
    max_message_size: int = 256 * 1024
    digest_buckets: int = 64
    max_clock_drift: float = 60.0
    event_queue_size: int = 4096

    def __post_init__(self) -> None:
        mt = self.msg_type
        if isinstance(mt, bool) or not isinstance(mt, int) or not RESERVED_MSGS_START <= mt <= MAX_MSG_TYPE:
            raise ConfigError("msg_type", f"must be an int in {RESERVED_MSGS_START}..{MAX_MSG_TYPE}, got {mt!r}")
        for name, low, high in (("sync_interval", 0.001, 3600.0), ("tombstone_ttl", 0.001, 10 * 365 * 86400.0),
                                ("max_clock_drift", 0.001, 86400.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
                raise ConfigError(name, f"must be a number of seconds in [{low:g}, {high:g}], got {v!r}")
        for name, low, high in (("max_entries", 1, 1 << 24), ("max_key_length", 1, 65536),
                                ("max_value_size", 1, 1 << 26), ("max_message_size", 1024, 1 << 28),
                                ("digest_buckets", 1, MAX_BUCKETS), ("event_queue_size", 1, 1 << 20)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(name, f"must be an int in {low}..{high}, got {v!r}")
        if self.max_message_size < self.max_value_size + self.max_key_length * 4 + _ENTRY_OVERHEAD:
            raise ConfigError("max_message_size", f"must hold one entry of max_value_size "
                              f"({self.max_value_size}) and max_key_length, got {self.max_message_size}")


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One key's state: a value, or a tombstone (``deleted``), and who wrote it when.

    Attributes:
        key: the key.
        value: the value (None in a tombstone).
        stamp: the writer's HLC timestamp.
        writer: the writer's node id, in hex (breaks ties between equal stamps).
        deleted: True for a tombstone.
    """

    key: str
    value: Any
    stamp: int
    writer: str
    deleted: bool = False

    @property
    def version(self) -> tuple[int, str]:
        """``(stamp, writer)``: of two entries of one key, the larger wins."""
        return (self.stamp, self.writer)


@dataclasses.dataclass(frozen=True, slots=True)
class Update:
    """Entries a node wrote (broadcast)."""

    map: str
    entries: tuple[Entry, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """A node's digest of its map: one hash per bucket of keys."""

    map: str
    buckets: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Diff:
    """A node's entries in some buckets; ``want``: send me yours in these buckets."""

    map: str
    entries: tuple[Entry, ...]
    want: tuple[int, ...] = ()


MapMessage = Union[Update, Digest, Diff]
"""What replicated maps send each other."""


@dataclasses.dataclass(frozen=True, slots=True)
class Broadcast:
    """Spread ``msg`` to every node (epidemic, best effort)."""

    msg: MapMessage


@dataclasses.dataclass(frozen=True, slots=True)
class SendTo:
    """Send ``msg`` to ``node`` (best effort)."""

    node: NodeID
    msg: MapMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Changed:
    """A key changed in this node's map: its new ``value`` (None and ``deleted`` when deleted),
    who wrote it, and whether the write was this node's (``local``)."""

    key: str
    value: Any
    deleted: bool
    writer: NodeID
    local: bool


MapAction = Union[Broadcast, SendTo, Changed]
"""What :meth:`MapCore.actions_to_perform` returns."""


# ---------------------------------------------------------------------- encoding

def _entry_out(e: Entry) -> list[Any]:
    return [e.key, e.value, e.stamp, e.writer, e.deleted]


def encode_map_message(msg: MapMessage) -> dict[str, Any]:
    """Return ``msg`` as a codec-friendly mapping."""
    if isinstance(msg, Update):
        return {"m": msg.map, "k": "up", "es": [_entry_out(e) for e in msg.entries]}
    if isinstance(msg, Digest):
        return {"m": msg.map, "k": "dg", "bs": list(msg.buckets)}
    return {"m": msg.map, "k": "df", "es": [_entry_out(e) for e in msg.entries], "w": list(msg.want)}


def _map_name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"a map name is a string of 1..{MAX_NAME_LENGTH} characters, got {value!r:.60}")
    return value


def _entries(value: Any) -> tuple[Entry, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > _MAX_ENTRIES_PER_MESSAGE:
        raise ValueError(f"map entries must be a list of at most {_MAX_ENTRIES_PER_MESSAGE}")
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 5:
            raise ValueError(f"a map entry is a list of 5, got {item!r:.60}")
        key, val, stamp, writer, deleted = item
        if not isinstance(key, str) or not key:
            raise ValueError(f"a map key is a non-empty string, got {key!r:.60}")
        if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 < stamp <= MAX_TIMESTAMP:
            raise ValueError(f"a map stamp is an HLC timestamp, got {stamp!r:.40}")
        if not isinstance(writer, str) or len(writer) != 32 or not set(writer) <= _HEX_ID:
            raise ValueError(f"a map writer is 32 lowercase hex digits, got {writer!r:.60}")
        if not isinstance(deleted, bool) or (deleted and val is not None):
            raise ValueError("a map tombstone carries no value")
        out.append(Entry(key, val, stamp, writer, deleted))
    return tuple(out)


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_BUCKETS:
        raise ValueError(f"map {what} must be a list of at most {MAX_BUCKETS}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise ValueError(f"map {what} must hold 64-bit unsigned ints, got {v!r:.40}")
    return tuple(value)


def decode_map_message(value: Any) -> MapMessage:
    """Rebuild a message from :func:`encode_map_message`'s mapping.

    Raises:
        ValueError: ``value`` is not a well-formed map message.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"a map message is a mapping, got {type(value).__name__}")
    name, kind = _map_name(value.get("m")), value.get("k")
    if kind == "up":
        return Update(name, _entries(value.get("es")))
    if kind == "dg":
        return Digest(name, _ints(value.get("bs"), "digest"))
    if kind == "df":
        return Diff(name, _entries(value.get("es")), _ints(value.get("w", []), "wanted buckets"))
    raise ValueError(f"unknown map message kind {kind!r:.40}")


# ---------------------------------------------------------------------- the state machine

def _hash64(*parts: bytes) -> int:
    h = hashlib.blake2b(digest_size=8, person=b"gossip.map")
    for p in parts:
        h.update(len(p).to_bytes(4, "big"))
        h.update(p)
    return int.from_bytes(h.digest(), "big")


class MapCore:
    """One node's copy of one replicated map.

    Args:
        node_id: the local node (the writer of its entries).
        name: the map's name (every node of the map uses the same).
        config: the settings.
        clock: the HLC that stamps writes and merges remote stamps (the cluster's).
        rng: randomness for the choice of anti-entropy peers.
        now: the host's current time (monotonic seconds).

    Raises:
        ValueError: ``name`` is malformed.
    """

    def __init__(self, node_id: NodeID, name: str, config: MapConfig, clock: HLC, rng: random.Random,
                 now: float) -> None:
        self.id = node_id
        self.name = _map_name(name)
        self.config = config
        self._me = node_id.hex
        self._clock = clock
        self._rng = rng
        self._entries: dict[str, Entry] = {}
        self._meta: dict[str, tuple[int, int]] = {}     # key -> (bucket, bytes on the wire)
        self._nb = config.digest_buckets
        self._digest = [0] * self._nb
        self._next_sync = now + rng.uniform(0, config.sync_interval)
        self._actions: list[MapAction] = []
        self.stats: dict[str, int] = {}
        """Counters: writes, merges, syncs, refusals by reason..."""
        self._drift = int(config.max_clock_drift * 1_000_000) << COUNTER_BITS
        self._ttl = int(config.tombstone_ttl * 1_000_000) << COUNTER_BITS

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> tuple[bool, Any]:
        """Return ``(True, value)`` if ``key`` holds a value, else ``(False, None)``."""
        e = self._entries.get(key)
        if e is None or e.deleted:
            return False, None
        return True, e.value

    def entry(self, key: str) -> Entry | None:
        """Return the key's entry (a tombstone too), or None."""
        return self._entries.get(key)

    def items(self) -> list[tuple[str, Any]]:
        """Return the live ``(key, value)`` pairs, sorted by key."""
        return sorted((k, e.value) for k, e in self._entries.items() if not e.deleted)

    def snapshot(self) -> dict[str, Any]:
        """Return the live keys and values as a new dict."""
        return {k: e.value for k, e in self._entries.items() if not e.deleted}

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if not e.deleted)

    @property
    def size(self) -> int:
        """Keys held, tombstones included (what ``max_entries`` bounds)."""
        return len(self._entries)

    def digest(self) -> tuple[int, ...]:
        """Return the per-bucket hashes of the map (equal maps have equal digests)."""
        return tuple(self._digest)

    def next_deadline(self) -> float:
        """When the host must call :meth:`tick` next."""
        return self._next_sync

    def actions_to_perform(self) -> list[MapAction]:
        """Return and clear the actions produced since the last call."""
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------ local writes

    def set(self, key: str, value: Any) -> Entry:
        """Write ``value`` under ``key``; return the entry (broadcast by the host).

        Raises:
            ValueError: the key or the value is malformed or too large.
            MapFull: the map holds ``max_entries`` keys and ``key`` is new.
        """
        self._check_key(key)
        try:
            packed = msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"map {self.name!r}: the value of {key!r} is not plain data: {exc}") from None
        if len(packed) > self.config.max_value_size:
            self._count("refused_too_large_local")
            raise ValueError(f"map {self.name!r}: the value of {key!r} is {len(packed)} bytes encoded, "
                             f"over max_value_size ({self.config.max_value_size})")
        copy = msgpack.unpackb(packed, raw=False, strict_map_key=False)
        return self._write(key, copy, False)

    def delete(self, key: str) -> Entry | None:
        """Delete ``key`` (leaving a tombstone); return the tombstone, or None if absent."""
        self._check_key(key)
        e = self._entries.get(key)
        if e is None or e.deleted:
            return None
        return self._write(key, None, True)

    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not 0 < len(key) <= self.config.max_key_length:
            raise ValueError(f"a map key is a string of 1..{self.config.max_key_length} characters, "
                             f"got {key!r:.60}")

    def _write(self, key: str, value: Any, deleted: bool) -> Entry:
        old = self._entries.get(key)
        if old is None and len(self._entries) >= self.config.max_entries:
            self._collect()
            if len(self._entries) >= self.config.max_entries:
                self._count("refused_full_local")
                raise MapFull(f"map {self.name!r} holds {len(self._entries)} keys (max_entries)")
        if old is None:
            stamp = self._clock.now()
        else:
            # Above what this node saw of the key (the HLC receive rule), even if the clock
            # refused to merge a stamp that far ahead.
            stamp = self._clock.update(old.stamp)
            if stamp <= old.stamp:
                stamp = old.stamp + 1
        e = Entry(key, value, stamp, self._me, deleted)
        self._store(e)
        self._count("deletes" if deleted else "sets")
        self._actions.append(Changed(key, value, deleted, self.id, True))
        self._actions.append(Broadcast(Update(self.name, (e,))))
        return e

    # ------------------------------------------------------------------ remote entries

    def _store(self, e: Entry) -> None:
        old = self._entries.get(e.key)
        if old is not None:
            bucket = self._meta[e.key][0]
            self._digest[bucket] ^= self._entry_hash(old)
        else:
            bucket = _hash64(e.key.encode()) % self._nb
        self._entries[e.key] = e
        self._meta[e.key] = (bucket, len(e.key) + _ENTRY_OVERHEAD + (0 if e.deleted else _size(e.value)))
        self._digest[bucket] ^= self._entry_hash(e)

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key)
        bucket, _ = self._meta.pop(key)
        self._digest[bucket] ^= self._entry_hash(old)

    @staticmethod
    def _entry_hash(e: Entry) -> int:
        return _hash64(e.key.encode(), e.stamp.to_bytes(8, "big"), e.writer.encode(), b"d" if e.deleted else b"v")

    def merge(self, entries: Iterable[Entry]) -> int:
        """Merge remote entries (the newer of each key wins); return how many changed the map."""
        changed = 0
        horizon = self._clock.peek() + self._drift
        collectable = self._clock.peek() - self._ttl
        cfg = self.config
        highest = 0
        for e in entries:
            if len(e.key) > cfg.max_key_length:
                self._count("refused_key_too_long")
                continue
            if e.stamp > horizon:
                self._count("refused_future_stamp")
                continue
            old = self._entries.get(e.key)
            if old is not None and e.version <= old.version:
                continue
            if e.deleted and e.stamp < collectable:
                if old is not None and not old.deleted:   # an old delete still beats an older value
                    self._drop(e.key)
                    self._emit_remote(Entry(e.key, None, e.stamp, e.writer, True))
                    changed += 1
                continue
            if not e.deleted and _size(e.value) > cfg.max_value_size:
                self._count("refused_too_large")
                continue
            if old is None and len(self._entries) >= cfg.max_entries:
                self._collect()
                if len(self._entries) >= cfg.max_entries:
                    self._count("refused_full")
                    continue
            self._store(e)
            highest = max(highest, e.stamp)
            self._emit_remote(e)
            changed += 1
        if highest:
            self._clock.update(highest)
        if changed:
            self._count("merged", changed)
        return changed

    def _emit_remote(self, e: Entry) -> None:
        self._actions.append(Changed(e.key, e.value, e.deleted, NodeID(hex=e.writer), False))

    def _collect(self) -> int:
        """Drop the tombstones older than ``tombstone_ttl``; return how many."""
        collectable = self._clock.peek() - self._ttl
        old = [k for k, e in self._entries.items() if e.deleted and e.stamp < collectable]
        for k in old:
            self._drop(k)
        if old:
            self._count("tombstones_collected", len(old))
        return len(old)

    # ------------------------------------------------------------------ messages and time

    def receive(self, now: float, sender: NodeID, msg: MapMessage) -> None:
        """Handle a message of this map from ``sender``."""
        if isinstance(msg, Update):
            self.merge(msg.entries)
        elif isinstance(msg, Digest):
            self._count("syncs_answered")
            if len(msg.buckets) == self._nb:
                differ = [i for i in range(self._nb) if msg.buckets[i] != self._digest[i]]
            else:
                self._count("digest_size_mismatch")
                differ = list(range(self._nb))
            if differ:
                self._send_buckets(sender, differ, want=differ)
        else:
            self.merge(msg.entries)
            if msg.want:
                theirs = {e.key: e.version for e in msg.entries}
                self._send_buckets(sender, [b for b in msg.want if 0 <= b < self._nb], want=None, skip=theirs)

    def _send_buckets(self, node: NodeID, buckets: Sequence[int], want: Sequence[int] | None,
                      skip: Mapping[str, tuple[int, str]] | None = None) -> None:
        wanted = set(buckets)
        chunk: list[Entry] = []
        size = 0
        first = True
        budget = self.config.max_message_size
        meta = self._meta
        for k, e in self._entries.items():
            bucket, s = meta[k]
            if bucket not in wanted:
                continue
            if skip is not None and skip.get(k) == e.version:
                continue
            if chunk and size + s > budget:
                self._actions.append(SendTo(node, Diff(self.name, tuple(chunk), tuple(want or ()) if first else ())))
                self._count("entries_sent", len(chunk))
                first, chunk, size = False, [], 0
            chunk.append(e)
            size += s
        if chunk or (first and want):
            self._actions.append(SendTo(node, Diff(self.name, tuple(chunk), tuple(want or ()) if first else ())))
            self._count("entries_sent", len(chunk))

    def sync_with(self, node: NodeID) -> None:
        """Start an anti-entropy round with ``node`` now."""
        self._count("syncs_started")
        self._actions.append(SendTo(node, Digest(self.name, tuple(self._digest))))

    def tick(self, now: float, peers: Sequence[NodeID]) -> None:
        """Collect old tombstones and, every ``sync_interval``, sync with a random peer."""
        if now < self._next_sync:
            return
        self._next_sync = now + self.config.sync_interval
        self._collect()
        if peers:
            self.sync_with(peers[self._rng.randrange(len(peers))])

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def __repr__(self) -> str:
        return f"<MapCore {self.name!r} on {self.id.short}: {len(self)} keys>"


def _size(value: Any) -> int:
    try:
        return len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return 1 << 62    # not plain data: too large for any bound
