"""kv: an eventually consistent key/value store replicated over the cluster.

Every node holds the whole store. Writes win by last writer (a nanosecond timestamp, then a
version counter for writes within the same nanosecond); deletes leave tombstones so they win
over older writes too, and tombstones are collected after two hours. Changes spread three ways:

* each ``set``/``delete`` is broadcast at once (message type 129, relayed epidemically);
* anti-entropy: every gossip interval each node broadcasts a random sample of its entries,
  tombstones included, so a node that missed a broadcast catches up;
* a node that joins asks its peers one by one for the whole store (type 128, request/reply)
  and merges the first non-empty answer.

Run two or more nodes::

    python examples/kv.py --port 8000 --peers 127.0.0.1:8000
    python examples/kv.py --port 8001 --peers 127.0.0.1:8000

and type ``set colour blue`` on one, ``get colour`` or ``keys`` on the other. Unattended::

    python examples/kv.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from _common import Command, Example, run

import gossip
from gossip import Cluster, Node, Packet

KV_FULL_SYNC_MSG = gossip.USER_MSG       # 128: request/reply, the whole store
KV_SYNC_MSG = gossip.USER_MSG + 1        # 129: some entries, relayed to everyone
TOMBSTONE_RETENTION = 2 * 3600.0         # seconds a delete is remembered
GC_INTERVAL = 12 * 60.0                  # seconds between tombstone collections


@dataclass(frozen=True)
class Version:
    """When a value was written: Unix time in nanoseconds, then a counter within that instant."""

    ts: int
    ver: int

    def newer_than(self, other: Version) -> bool:
        """Last writer wins: the later timestamp, or the same one with the higher counter."""
        return self.ts > other.ts or (self.ts == other.ts and self.ver > other.ver)


@dataclass(frozen=True)
class Entry:
    """One key's state: its value, its version, and whether it is a tombstone (deleted)."""

    val: Any
    v: Version
    d: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The entry as sent: ``{"val": ..., "v": {"ts": ..., "ver": ...}, "d": ...}``."""
        return {"val": self.val, "v": {"ts": self.v.ts, "ver": self.v.ver}, "d": self.d}

    @classmethod
    def from_wire(cls, raw: Any) -> Entry:
        """Rebuild an entry; raise ValueError if it is malformed."""
        try:
            v = raw["v"]
            ts, ver, deleted = v["ts"], v["ver"], raw.get("d", False)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"malformed entry {raw!r}") from exc
        if not (isinstance(ts, int) and isinstance(ver, int) and isinstance(deleted, bool)):
            raise ValueError(f"malformed entry {raw!r}")
        return cls(raw.get("val"), Version(ts, ver), deleted)


class KVStore:
    """The replicated store of one node (thread-safe: handlers run on several threads)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self._data: dict[str, Entry] = {}
        self._last_gc = time.monotonic()
        cluster.handle_func_with_reply(KV_FULL_SYNC_MSG, self._on_full_sync)
        cluster.handle_func(KV_SYNC_MSG, self._on_sync)
        cluster.handle_gossip_func(self._anti_entropy)

    # -- local operations
    def _next_version(self, key: str) -> Version:
        ts = time.time_ns()
        old = self._data.get(key)
        return Version(ts, old.v.ver + 1 if old is not None and old.v.ts == ts else 0)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` and broadcast the change."""
        with self._lock:
            entry = Entry(value, self._next_version(key))
            self._data[key] = entry
        self.cluster.send(KV_SYNC_MSG, {"e": {key: entry.to_wire()}})

    def delete(self, key: str) -> bool:
        """Delete ``key`` (leaving a tombstone) and broadcast it; False if there was no such key."""
        with self._lock:
            old = self._data.get(key)
            if old is None or old.d:
                return False
            entry = Entry(None, self._next_version(key), True)
            self._data[key] = entry
        self.cluster.send(KV_SYNC_MSG, {"e": {key: entry.to_wire()}})
        return True

    def get(self, key: str) -> tuple[Any, bool]:
        """Return ``(value, True)``, or ``(None, False)`` if the key is absent or deleted."""
        with self._lock:
            entry = self._data.get(key)
        return (None, False) if entry is None or entry.d else (entry.val, True)

    def keys(self) -> list[str]:
        """Return the live keys, sorted."""
        with self._lock:
            return sorted(k for k, e in self._data.items() if not e.d)

    def dump(self) -> dict[str, Any]:
        """Return the live keys and values."""
        with self._lock:
            return {k: e.val for k, e in sorted(self._data.items()) if not e.d}

    # -- replication
    def merge(self, entries: dict[str, Any]) -> int:
        """Merge entries received from a peer, last writer wins; return how many were taken."""
        taken = 0
        for key, raw in entries.items():
            try:
                incoming = Entry.from_wire(raw)
            except ValueError:
                continue
            with self._lock:
                current = self._data.get(key)
                if current is None or incoming.v.newer_than(current.v):
                    self._data[key] = incoming
                    taken += 1
        return taken

    def _payload(self, keys: list[str] | None = None) -> dict[str, Any]:
        with self._lock:
            chosen = self._data if keys is None else {k: self._data[k] for k in keys if k in self._data}
            return {"e": {k: e.to_wire() for k, e in chosen.items()}}

    def _on_full_sync(self, sender: Node, packet: Packet) -> Any:
        return self._payload()

    def _on_sync(self, sender: Node, packet: Packet) -> None:
        try:
            body = packet.unmarshal()
            entries = body["e"]
        except (gossip.GossipError, TypeError, KeyError):
            return
        if isinstance(entries, dict):
            self.merge(entries)

    def _anti_entropy(self) -> None:
        """Gossip handler: broadcast a random sample of the entries; collect old tombstones."""
        now = time.monotonic()
        if now - self._last_gc >= GC_INTERVAL:
            self._last_gc = now
            self.collect_tombstones()
        with self._lock:
            total = len(self._data)
            if total == 0:
                return
            # Reservoir sampling of calc_payload_size(total) keys, tombstones included.
            k = max(1, self.cluster.calc_payload_size(total))
            sample: list[str] = []
            for i, key in enumerate(self._data):
                if i < k:
                    sample.append(key)
                else:
                    j = random.randint(0, i)
                    if j < k:
                        sample[j] = key
        try:
            self.cluster.send(KV_SYNC_MSG, self._payload(sample))
        except gossip.ClusterClosed:
            pass

    def collect_tombstones(self) -> int:
        """Forget tombstones older than the retention; return how many went."""
        cutoff = time.time_ns() - int(TOMBSTONE_RETENTION * 1e9)
        with self._lock:
            old = [k for k, e in self._data.items() if e.d and e.v.ts < cutoff]
            for k in old:
                del self._data[k]
        return len(old)

    def request_full_sync(self) -> None:
        """Ask the peers one by one for the whole store; merge the first non-empty answer."""
        for node in self.cluster.get_candidates():
            try:
                reply = self.cluster.send_to_with_response(node, KV_FULL_SYNC_MSG, {})
            except gossip.GossipError as exc:
                print(f"full sync from {node.id.short} failed: {exc}", flush=True)
                continue
            entries = reply.get("e") if isinstance(reply, dict) else None
            if entries:
                n = self.merge(entries)
                print(f"full sync: {n} entries from {node.id}", flush=True)
                return
        print("full sync: no peer had any entries", flush=True)


STORE: dict[str, KVStore] = {}


def setup(cluster: Cluster) -> None:
    """Create the store (it registers its handlers before the cluster starts)."""
    STORE["kv"] = KVStore(cluster)


def joined(cluster: Cluster) -> None:
    """After the join: fetch the whole store from a peer."""
    STORE["kv"].request_full_sync()


def cmd_set(cluster: Cluster, args: list[str]) -> None:
    """Console: ``set <key> <value...>``."""
    key, value = args[0], " ".join(args[1:])
    STORE["kv"].set(key, value)
    print(f"set {key} = {value}", flush=True)


def cmd_get(cluster: Cluster, args: list[str]) -> None:
    """Console: ``get <key>``."""
    value, ok = STORE["kv"].get(args[0])
    print(f"{args[0]} = {value}" if ok else f"{args[0]} not found", flush=True)


def cmd_delete(cluster: Cluster, args: list[str]) -> None:
    """Console: ``delete <key>``."""
    ok = STORE["kv"].delete(args[0])
    print(f"deleted {args[0]}" if ok else f"{args[0]} not found", flush=True)


def cmd_keys(cluster: Cluster, args: list[str]) -> None:
    """Console: ``keys`` (then the whole store as JSON)."""
    store = STORE["kv"]
    print(f"keys: {', '.join(store.keys()) or '(none)'}", flush=True)
    print(json.dumps(store.dump(), sort_keys=True), flush=True)


EXAMPLE = Example(
    name="kv",
    description="gossip key/value example: an eventually consistent replicated store",
    setup=setup,
    joined=joined,
    commands={
        "set": Command("set <key> <value...>", "store a value on every node", cmd_set, 2),
        "get": Command("get <key>", "show this node's value of a key", cmd_get, 1),
        "delete": Command("delete <key>", "delete a key on every node", cmd_delete, 1),
        "keys": Command("keys", "list the keys and dump the store as JSON", cmd_keys),
    },
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
