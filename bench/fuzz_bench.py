"""Throw a million random and mutated packets at a live node, then check it still works.

Usage::

    python bench/fuzz_bench.py [--packets 1000000] [--rate 20000] [--tcp-share 0.1] [--seed 1]
                               [--configs plain,encrypted]

For each configuration (``plain``: no key; ``encrypted``: AES-256-GCM with a cluster label) a
``gossip.Cluster`` (``Config.local()`` on ``127.0.0.1:0``) runs in a child process. This
process sends it ``--packets`` packets split across the configurations, as UDP datagrams and,
for ``--tcp-share`` of them, as TCP frames (the wire's 4-byte big-endian length prefix, then
the packet) on a few connections, some of which carry garbage length prefixes. The packets are:

* random bytes of random length;
* valid packets (built with the node's own label, and key when it has one: an insider, or a
  replay) of every protocol message type, many carrying hostile but well-formed content:
  accusations of the node at the top of the incarnation range, buddy pings claiming it is
  suspect at 2**32-1, push/pulls and joins with thousands of fake members, nested metadata,
  ping-reqs at unreachable targets, unknown message types, ttl 255 user messages;
* those valid packets mutated: bits flipped, bytes set, inserted, deleted, truncated, appended.

Datagrams are paced at ``--rate`` per second (0: as fast as possible), about what one node
decodes, so that most reach it instead of overflowing the kernel's receive buffer; the node's
own counters say how many it received. It prints the packets per second sent, the node's counters by error class (from
``cluster.stats()``), and a line with the number of unexpected exceptions (worker, scheduler
and handler errors, which must be 0). Then a fresh node with the same configuration joins the
fuzzed one and probes it for a few seconds: the fuzzed node must answer (seen alive, never
suspected). Only the public ``Cluster`` API and raw sockets are used.

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gossip import Cluster, Config, NodeID, NodeState  # noqa: E402
from gossip import messages as m  # noqa: E402
from gossip.packet import PacketCodec  # noqa: E402
from gossip.security import Keyring  # noqa: E402
from gossip.transports.socket import PREAMBLE_FRAMES  # noqa: E402
from gossip.wire import MessageType  # noqa: E402

KEY = bytes(range(32))
LABEL = "fuzz"
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"cluster_label": LABEL},
    "encrypted": {"cluster_label": LABEL, "encryption_key": KEY},
}
UNEXPECTED_PREFIXES = ("errors.", "handler_errors.")  # library bugs, and handlers that raised


def node_config(name: str) -> Config:
    return Config.local(bind_addr="127.0.0.1:0", **CONFIGS[name])


# ------------------------------------------------------------------------------ the target


def _target(name: str, conn: Any) -> None:
    """Child process: run the fuzzed node and answer the parent's questions."""
    logging.getLogger("gossip").setLevel(logging.CRITICAL)   # a flood of warnings is expected
    with Cluster(node_config(name)) as node:
        conn.send((node.address, str(node.local_node().id)))
        while True:
            cmd, arg = conn.recv()
            if cmd == "stats":
                conn.send(node.stats())
            elif cmd == "sees":
                n = node.get_node(NodeID.parse(arg))
                conn.send(None if n is None else n.state.name)
            elif cmd == "stop":
                conn.send(True)
                return


# ------------------------------------------------------------------------------ packets


def _valid_corpus(codec: PacketCodec, target: NodeID, target_addr: str, rng: random.Random) -> list[bytes]:
    """Valid packets of every type, most of them hostile."""
    top = m.MAX_INCARNATION
    me = NodeID(int=rng.getrandbits(128))
    dead_end = "127.0.0.1:9"          # refuses connections at once

    def fakes(n: int) -> tuple[m.MemberState, ...]:
        base = rng.getrandbits(120)
        return tuple(m.MemberState(NodeID(int=base + i), f"127.0.0.1:{1 + i % 60000}", NodeState.ALIVE, 0)
                     for i in range(n))

    msgs: list[m.Message] = [
        m.Ping(1, target, dead_end, (), -1),
        m.Ping(2, target, dead_end, (m.Suspect(target, top, me),), top),
        m.Ping(3, target, dead_end, (m.Alive(target, top, target_addr),), 0),
        m.Ack(7, (m.Suspect(target, top, me), m.Dead(target, top - 1, me))),
        m.Gossip((m.Suspect(target, top, me), m.Dead(target, top, target), m.Alive(me, 0, dead_end))),
        m.Gossip(tuple(m.Alive(s.node, 0, s.addr) for s in fakes(25))),
        m.Gossip((m.Alive(me, 1, dead_end, {"k": "v" * 400}, 5),)),
        m.PingReq(4, NodeID(int=rng.getrandbits(128)), "127.0.0.1:9", dead_end, True, 1e6),
        m.PingReq(5, target, target_addr, dead_end, True, 0.0),
        m.Nack(9),
        m.PushPull(6, dead_end, fakes(3000)),
        m.PushPull(7, dead_end, (m.MemberState(target, target_addr, NodeState.DEAD, top),)),
        m.PushPullReply(8, fakes(500)),
        m.Join(10, dead_end, (m.MemberState(me, dead_end, NodeState.ALIVE, 0),) + fakes(2000)),
        m.JoinReply(11, True, "", fakes(100)),
    ]
    out = []
    for msg in msgs:
        mt, value = m.to_wire(msg)
        out.append(codec.encode(mt, me.bytes, rng.getrandbits(63), 1, value))
    # Values the decoder must refuse: nested metadata, incarnations past u32, bad shapes.
    deep: Any = "x"
    for _ in range(300):
        deep = {"k": deep}
    raw: list[tuple[int, Any]] = [
        (MessageType.GOSSIP, [[[0, me.bytes, 1, dead_end, deep, 1, 1, ""]]]),
        (MessageType.GOSSIP, [[[1, target.bytes, top + 1, me.bytes]]]),
        (MessageType.PING, [1, target.bytes, dead_end, [], 2**64 - 1]),
        (MessageType.PUSH_PULL, [1, dead_end, [None] * 5000, False]),
        (MessageType.ACK, "not a list"),
    ]
    for mt, value in raw:
        out.append(codec.encode(mt, me.bytes, rng.getrandbits(63), 1, value))
    # User messages: unknown types relayed with a big ttl, and a protocol type with a user payload.
    for mt in (128, 200, 60000):
        out.append(codec.encode(mt, me.bytes, rng.getrandbits(63), 255, {"x": list(range(50))}))
    out.append(codec.encode(MessageType.REPLY, me.bytes, 1, 1, "stray"))
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0 and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:
            del buf[pos:pos + rng.randint(1, 8)]
        elif op == 4:
            del buf[pos:]
        else:
            buf += rng.randbytes(rng.randint(1, 8))
    return bytes(buf)


class _Packets:
    """An endless, reproducible stream of fuzz packets."""

    def __init__(self, corpus: list[bytes], rng: random.Random) -> None:
        self.corpus = corpus
        self.small = [p for p in corpus if len(p) <= 1400]
        self.rng = rng

    def next(self, udp: bool) -> bytes:
        rng = self.rng
        pick = rng.random()
        pool = self.small if udp else self.corpus
        if pick < 0.3:
            return rng.randbytes(rng.randint(0, 1400))
        if pick < 0.4:
            return rng.choice(pool)
        return _mutate(rng.choice(pool), rng)


# ------------------------------------------------------------------------------ sending


def _tcp_sender(addr: tuple[str, int], packets: list[bytes], rng: random.Random, counts: dict[str, int]) -> None:
    """Send frames over a few connections; reconnect when the node closes one."""
    sock: socket.socket | None = None
    for i, data in enumerate(packets):
        try:
            if sock is None:
                sock = socket.create_connection(addr, timeout=5.0)
                counts["tcp_connections"] += 1
                # Most connections open as the node's peers do, so that the frames reach the
                # decoder; one in ten opens with garbage instead of the connection preamble.
                sock.sendall(rng.randbytes(4) if rng.random() < 0.1 else PREAMBLE_FRAMES)
            if i % 97 == 0:
                frame = rng.randbytes(rng.randint(1, 64))          # a garbage length prefix
            else:
                frame = struct.pack(">I", len(data)) + data
            sock.sendall(frame)
            counts["tcp_frames"] += 1
            if i % 97 == 0:
                sock.close()
                sock = None
        except OSError:
            counts["tcp_errors"] += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()


def _fuzz_one(name: str, n: int, tcp_share: float, seed: int, rate: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_target, args=(name, child), daemon=True)
    proc.start()
    addr, target_id = parent.recv()
    host, port = addr.rsplit(":", 1)
    dest = (host, int(port))
    rng = random.Random(seed)
    keyring = Keyring([KEY]) if "encryption_key" in CONFIGS[name] else None
    codec = PacketCodec(keyring=keyring, label=LABEL, max_packet_size=4 * 1024 * 1024)
    corpus = _valid_corpus(codec, NodeID.parse(target_id), addr, rng)
    gen = _Packets(corpus, rng)

    n_tcp = int(n * tcp_share)
    n_udp = n - n_tcp
    counts = {"udp": 0, "udp_errors": 0, "tcp_frames": 0, "tcp_connections": 0, "tcp_errors": 0}
    tcp_packets = [gen.next(False) for _ in range(min(n_tcp, 20_000))]
    t0 = time.perf_counter()
    tcp_threads = []
    per = max(1, n_tcp // 4)
    for k in range(4):                       # four concurrent TCP streams
        chunk = [tcp_packets[(k * per + i) % len(tcp_packets)] for i in range(per)] if tcp_packets else []
        t = threading.Thread(target=_tcp_sender, args=(dest, chunk, random.Random(seed + k), counts))
        t.start()
        tcp_threads.append(t)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    batch = [gen.next(True) for _ in range(5000)]
    start = time.perf_counter()
    for i in range(n_udp):
        if i % 5000 == 0 and i:
            batch = [gen.next(True) for _ in range(5000)]
        try:
            udp.sendto(batch[i % 5000], dest)
            counts["udp"] += 1
        except OSError:
            counts["udp_errors"] += 1
        if rate and i % 200 == 0:
            ahead = i / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
    for t in tcp_threads:
        t.join()
    elapsed = time.perf_counter() - t0
    udp.close()

    # Wait for the node to work through its queue.
    last = -1
    for _ in range(60):
        parent.send(("stats", None))
        stats = parent.recv()
        seen = sum(v for k, v in stats.items() if k.startswith(("packets_in.", "bad_packets.")))
        if seen == last:
            break
        last = seen
        time.sleep(0.5)

    # Does it still work? A fresh node joins it and probes it for a while.
    logging.getLogger("gossip").setLevel(logging.CRITICAL)
    states: list[str] = []
    with Cluster(node_config(name)) as prober:
        prober.handle_node_state_change_func(
            lambda node, prev: states.append(node.state.name) if str(node.id) == target_id else None)
        joined = prober.join(addr, timeout=5.0)
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            time.sleep(0.25)
        target_node = prober.get_node(NodeID.parse(target_id))
        parent.send(("sees", str(prober.local_node().id)))
        seen_back = parent.recv()
        prober_stats = prober.stats()
    parent.send(("stats", None))
    stats = parent.recv()
    parent.send(("stop", None))
    parent.recv()
    proc.join(10)
    return {
        "config": name, "sent": counts["udp"] + counts["tcp_frames"], "elapsed": elapsed, "counts": counts,
        "stats": stats, "joined": joined, "target_state": None if target_node is None else target_node.state.name,
        "seen_back": seen_back, "target_events": states, "prober_probes": prober_stats.get("core.probes", 0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in all, split across the configs")
    ap.add_argument("--tcp-share", type=float, default=0.1)
    ap.add_argument("--rate", type=float, default=20000.0, help="datagrams per second (0: unpaced)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default="plain,encrypted")
    args = ap.parse_args()
    names = [c for c in args.configs.split(",") if c]
    print(f"command: python bench/fuzz_bench.py --packets {args.packets} --rate {args.rate:g} "
          f"--tcp-share {args.tcp_share} --seed {args.seed} --configs {args.configs}")
    ok = True
    total_unexpected = 0
    for i, name in enumerate(names):
        r = _fuzz_one(name, args.packets // len(names), args.tcp_share, args.seed + i, args.rate)
        st = r["stats"]
        rate = r["sent"] / r["elapsed"]
        print(f"\n[{name}] sent {r['sent']:,} packets in {r['elapsed']:.1f} s: {rate:,.0f} packets/s "
              f"({r['counts']['udp']:,} UDP, {r['counts']['tcp_frames']:,} TCP frames on "
              f"{r['counts']['tcp_connections']} connections)")
        got = st.get("transport.udp_received", 0) + st.get("transport.tcp_received", 0)
        print(f"  the node received {got:,} ({st.get('transport.udp_received', 0):,} datagrams, "
              f"{st.get('transport.tcp_received', 0):,} frames), decoded "
              f"{sum(v for k, v in st.items() if k.startswith('packets_in.')):,}, dropped "
              f"{sum(v for k, v in st.items() if k.startswith('dropped.')):,} "
              f"({', '.join(k for k in st if k.startswith('dropped.')) or 'none'})")
        errors = {k: v for k, v in sorted(st.items()) if k.startswith("bad_packets.")}
        print("  refused by error class: " + ", ".join(f"{k[len('bad_packets.'):]} {v:,}" for k, v in errors.items()))
        transport = {k: v for k, v in sorted(st.items()) if k.startswith("transport.") and v}
        print("  transport: " + ", ".join(f"{k[len('transport.'):]} {v:,}" for k, v in transport.items()))
        core = {k: v for k, v in sorted(st.items()) if k.startswith("core.refused") or k in (
            "core.incarnation_exhausted", "core.members_evicted")}
        print("  core refusals: " + ", ".join(f"{k[len('core.'):]} {v:,}" for k, v in core.items()))
        bugs = {k: v for k, v in st.items() if k.startswith(UNEXPECTED_PREFIXES) and v}
        unexpected = sum(bugs.values())
        total_unexpected += unexpected
        print(f"  unexpected exceptions: {unexpected} "
              f"({', '.join(f'{k} {v}' for k, v in bugs.items()) or 'no errors.* or handler_errors.* counter moved'})")
        alive = r["joined"] == 1 and r["target_state"] == "ALIVE" and r["seen_back"] == "ALIVE" and \
            not any(s in ("SUSPECT", "DEAD") for s in r["target_events"])
        print(f"  afterwards: a fresh node joined it ({r['joined']}), probed it for 6 s "
              f"({r['prober_probes']} probes) and sees it {r['target_state']}; it sees the prober "
              f"{r['seen_back']}; suspected meanwhile: {any(s == 'SUSPECT' for s in r['target_events'])} -> "
              f"{'answers pings' if alive else 'FAILED'}")
        ok = ok and alive and unexpected == 0
    print(f"\nunexpected exceptions in all: {total_unexpected}")
    return 0 if ok else 1


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") is None:
        os.environ["PYTHONHASHSEED"] = "0"
    sys.exit(main())
