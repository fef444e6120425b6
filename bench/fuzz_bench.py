"""Throw a million random and mutated packets at a live node, then check it still works.

Usage::

    python bench/fuzz_bench.py [--packets 1000000] [--rate 20000] [--tcp-share 0.1]
                               [--stream-share 0.05] [--seed 1] [--configs plain,encrypted,ws]

For each configuration (``plain``: no key; ``encrypted``: AES-256-GCM with a cluster label;
``ws``: no key, listening on WebSocket only) a ``gossip.Cluster`` (``Config.local()`` on
``127.0.0.1``) runs in a child process. This process sends it ``--packets`` packets split
across the configurations:

* to a UDP/TCP node, as UDP datagrams and, for ``--tcp-share`` of them, as TCP frames (the
  wire's 4-byte big-endian length prefix, then the packet) on a few connections, some of which
  carry garbage length prefixes;
* to a WebSocket node, as WebSocket messages on connections opened with hand-written
  handshakes (some of them garbage, on another path, or a browser's), with malformed frames,
  text, control frames and random bytes among them;
* and, for ``--stream-share`` of them, as stream frames on stream connections (the TCP stream
  preamble, or the WebSocket stream channel): OPENs, valid (for a type with a handler, for one
  without) or mutated or random, followed by HELLO, DATA and random frames.

The fuzzed node is told to close a connection only after a million refused frames
(``max_rejected_frames``), so that the garbage reaches its decoders (the limits themselves have
tests of their own). The packets are:

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
import base64
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

from websockets.utils import apply_mask  # noqa: E402

try:  # the C version websockets ships
    from websockets.speedups import apply_mask  # noqa: E402
except ImportError:  # pragma: no cover
    pass

from gossip import Cluster, Config, NodeID, NodeState  # noqa: E402
from gossip import messages as m  # noqa: E402
from gossip.errors import GossipError  # noqa: E402
from gossip.stream import encode_open  # noqa: E402
from gossip.transports.socket import PREAMBLE_STREAM  # noqa: E402
from gossip.packet import PacketCodec  # noqa: E402
from gossip.security import Keyring  # noqa: E402
from gossip.transports.socket import PREAMBLE_FRAMES  # noqa: E402
from gossip.wire import MessageType  # noqa: E402

KEY = bytes(range(32))
LABEL = "fuzz"
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"cluster_label": LABEL},
    "encrypted": {"cluster_label": LABEL, "encryption_key": KEY},
    "ws": {"cluster_label": LABEL, "socket_transport_enabled": False,
           "websocket_bind_addr": "127.0.0.1:0"},
}
STREAM_TYPE = 129  # the fuzzed node has a stream handler for it (130 has none)
UNEXPECTED_PREFIXES = ("errors.", "handler_errors.")  # library bugs, and handlers that raised


def node_config(name: str) -> Config:
    return Config.local(bind_addr="127.0.0.1:0", max_rejected_frames=1 << 20, **CONFIGS[name])


# ------------------------------------------------------------------------------ the target


def _target(name: str, conn: Any) -> None:
    """Child process: run the fuzzed node and answer the parent's questions."""
    logging.getLogger("gossip").setLevel(logging.CRITICAL)   # a flood of warnings is expected

    def sink(sender: Any, packet: Any, stream: Any) -> None:
        try:
            while stream.read(65536):
                pass
        except GossipError:
            pass  # a broken or forged stream: what a stranger's stream does

    with Cluster(node_config(name)) as node:
        node.handle_stream_func(STREAM_TYPE, sink)
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


def _stream_corpus(codec: PacketCodec, rng: random.Random) -> list[bytes]:
    """OPEN packets: for the type with a handler, one without, an internal one; odd payloads."""
    me = NodeID(int=rng.getrandbits(128)).bytes
    out = []
    for mt in (STREAM_TYPE, STREAM_TYPE, 130, 5, 65535):
        for payload in (b"", codec.codec.encode({"file": "x" * 100}), rng.randbytes(300)):
            body = encode_open(mt, rng.randbytes(16), rng.randbytes(8) if mt == 5 else bytes(8),
                               payload)
            out.append(codec.encode_raw(MessageType.STREAM_OPEN, me, rng.getrandbits(63), 1, body))
    out.append(codec.encode_raw(MessageType.STREAM_OPEN, me, 1, 1, b"\x01\x00"))  # too short
    out.append(codec.encode_raw(MessageType.STREAM_OPEN_ACK, me, 1, 1, rng.randbytes(40)))
    return out


def _ws_frame(payload: bytes, rng: random.Random, opcode: int = 0x2, masked: bool = True,
              fin: bool = True) -> bytes:
    """One WebSocket frame as a client writes it (RFC 6455 section 5.2)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 65536:
        head = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = rng.randbytes(4)
    return head + key + apply_mask(payload, key)


WS_SOURCE = "127.0.0.2"
"""The fuzzer's WebSocket connections come from another host than the node and its prober."""


def _ws_connect(dest: tuple[str, int], rng: random.Random, channel: str = "") -> tuple[socket.socket, bool]:
    """Open a WebSocket connection with a hand-written handshake, mostly a valid one; return the
    socket and whether it was upgraded."""
    sock = socket.create_connection(dest, timeout=5.0, source_address=(WS_SOURCE, 0))
    key = base64.b64encode(rng.randbytes(16)).decode()
    path = "/gossip"
    extra = [f"Gossip-Channel: {channel}"] if channel else []
    pick = rng.random()
    if pick < 0.03:
        sock.sendall(rng.randbytes(rng.randint(1, 3000)) + b"\r\n\r\n")  # not HTTP at all
    else:
        if pick < 0.05:
            path = "/elsewhere"
        elif pick < 0.07:
            extra.append("Origin: https://a-web-page.example")
        elif pick < 0.09:
            extra.append("Gossip-Channel: " + rng.choice(["", "nonsense", "stream" * 50]))
        elif pick < 0.10:
            extra.append("X-Padding: " + "a" * rng.randint(5000, 20000))
        lines = [f"GET {path} HTTP/1.1", f"Host: {dest[0]}:{dest[1]}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 *extra]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError:
        pass
    return sock, head.startswith(b"HTTP/1.1 101")


def _drain(sock: socket.socket) -> None:
    """Read whatever the node sent back (acks...), so that its writes never wait for us."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # with a timeout set, even MSG_DONTWAIT would wait for data first
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.settimeout(timeout)


def _ws_sender(dest: tuple[str, int], packets: list[bytes], rng: random.Random,
               counts: dict[str, int]) -> None:
    """Send packets as WebSocket messages, with malformed frames among them; reconnect when the
    node closes a connection, and every few hundred messages anyway."""
    sock: socket.socket | None = None
    i = tries = 0
    while i < len(packets):
        data = packets[i]
        try:
            if sock is None:
                sock, upgraded = _ws_connect(dest, rng)
                counts["ws_connections"] += 1
                if not upgraded:  # the message goes on the next connection
                    counts["ws_refused"] += 1
                    sock.close()
                    sock = None
                    continue
            pick = rng.random()
            broken = False  # a frame after which the node closes the connection
            if pick < 0.94:
                frame = _ws_frame(data, rng)
            elif pick < 0.96:
                frame = _ws_frame(rng.randbytes(rng.randint(0, 200)), rng, opcode=0x1)  # text
            elif pick < 0.98:
                frame = _ws_frame(rng.randbytes(rng.randint(0, 125)), rng, opcode=rng.choice((0x9, 0xA)))
            elif pick < 0.99:
                half = len(data) // 2
                frame = _ws_frame(data[:half], rng, fin=False) + _ws_frame(data[half:], rng, opcode=0x0)
            else:
                broken = True
                frame = rng.choice((
                    _ws_frame(data, rng, masked=False),  # a client must mask
                    _ws_frame(data, rng, opcode=rng.choice((0x3, 0x7, 0xB, 0xF))),  # reserved
                    rng.randbytes(rng.randint(1, 64)),  # bytes that are no frame
                ))
            sock.sendall(frame)
            counts["ws_messages"] += 1
            if i % 50 == 0:
                _drain(sock)
            if broken or i % 400 == 399:
                sock.close()  # the node closes a connection after a protocol error anyway
                sock = None
            i, tries = i + 1, 0
        except OSError:
            counts["ws_errors"] += 1
            if sock is not None:
                sock.close()
            sock = None
            tries += 1
            if tries >= 3:
                i, tries = i + 1, 0
    if sock is not None:
        sock.close()


def _stream_sender(dest: tuple[str, int], over_ws: bool, n: int, opens: list[bytes],
                   gen: _Packets, rng: random.Random, counts: dict[str, int]) -> None:
    """Open stream connections and send each an OPEN (valid, mutated or random) and a few more
    frames (HELLO, DATA, random), without waiting for the answers."""
    sent = 0
    while sent < n:
        try:
            if over_ws:
                sock, upgraded = _ws_connect(dest, rng, "stream")
                if not upgraded:
                    counts["ws_refused"] += 1
                    sock.close()
                    continue
            else:
                sock = socket.create_connection(dest, timeout=5.0)
                sock.sendall(PREAMBLE_STREAM)
            counts["stream_connections"] += 1
            pick = rng.random()
            first = rng.choice(opens) if pick < 0.4 else (
                _mutate(rng.choice(opens), rng) if pick < 0.8 else gen.next(False))
            frames = [first]
            for _ in range(rng.randint(0, 4)):
                kind = rng.random()
                if kind < 0.3:
                    frames.append(b"\x01")  # a HELLO, as a keyless stream writes it
                elif kind < 0.7:
                    frames.append(bytes([rng.choice((2, 3, 4, 5))]) + rng.randbytes(rng.randint(0, 3000)))
                else:
                    frames.append(rng.randbytes(rng.randint(0, 200)))
            with sock:
                for f in frames:
                    if over_ws:
                        sock.sendall(_ws_frame(f, rng))
                    elif rng.random() < 0.02:
                        sock.sendall(rng.randbytes(4) + f)  # a garbage length prefix
                    else:
                        sock.sendall(struct.pack(">I", len(f)) + f)
                    sent += 1
                    counts["stream_frames"] += 1
                _drain(sock)
        except OSError:
            counts["stream_errors"] += 1


# ------------------------------------------------------------------------------ sending


def _tcp_sender(addr: tuple[str, int], packets: list[bytes], rng: random.Random, counts: dict[str, int]) -> None:
    """Send frames over a few connections; reconnect when the node closes one (a frame whose
    write failed is sent again, at most three times)."""
    sock: socket.socket | None = None
    i = tries = 0
    while i < len(packets):
        data = packets[i]
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
            i, tries = i + 1, 0
        except OSError:
            counts["tcp_errors"] += 1
            if sock is not None:
                sock.close()
            sock = None
            tries += 1
            if tries >= 3:
                i, tries = i + 1, 0
    if sock is not None:
        sock.close()


def _fuzz_one(name: str, n: int, tcp_share: float, stream_share: float, seed: int,
              rate: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_target, args=(name, child), daemon=True)
    proc.start()
    addr, target_id = parent.recv()
    over_ws = addr.startswith("ws://")
    if over_ws:
        hostport = addr.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
    else:
        host, port = addr.rsplit(":", 1)
    dest = (host, int(port))
    rng = random.Random(seed)
    keyring = Keyring([KEY]) if "encryption_key" in CONFIGS[name] else None
    codec = PacketCodec(keyring=keyring, label=LABEL, max_packet_size=4 * 1024 * 1024)
    corpus = _valid_corpus(codec, NodeID.parse(target_id), addr, rng)
    gen = _Packets(corpus, rng)
    opens = _stream_corpus(codec, rng)

    n_stream = int(n * stream_share)
    n_rest = n - n_stream
    n_ws = n_rest if over_ws else 0
    n_tcp = 0 if over_ws else int(n_rest * tcp_share)
    n_udp = n_rest - n_tcp - n_ws
    counts = {"udp": 0, "udp_errors": 0, "tcp_frames": 0, "tcp_connections": 0, "tcp_errors": 0,
              "ws_messages": 0, "ws_connections": 0, "ws_refused": 0, "ws_errors": 0,
              "stream_frames": 0, "stream_connections": 0, "stream_errors": 0}
    t0 = time.perf_counter()
    tcp_threads = []
    for sender, total in ((_tcp_sender, n_tcp), (_ws_sender, n_ws)):
        if not total:
            continue
        distinct = [gen.next(False) for _ in range(min(total, 20_000))]
        for k in range(4):                   # four concurrent connections at a time
            per = total // 4 + (1 if k < total % 4 else 0)
            chunk = [distinct[(k * per + i) % len(distinct)] for i in range(per)]
            t = threading.Thread(target=sender, args=(dest, chunk, random.Random(seed + k), counts))
            t.start()
            tcp_threads.append(t)
    for k in range(2 if n_stream else 0):    # two stream openers at a time
        t = threading.Thread(target=_stream_sender, args=(
            dest, over_ws, n_stream // 2 + (n_stream % 2 if k == 0 else 0), opens, _Packets(corpus, random.Random(seed + 10 + k)),
            random.Random(seed + 20 + k), counts))
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
        "config": name, "elapsed": elapsed, "counts": counts,
        "sent": counts["udp"] + counts["tcp_frames"] + counts["ws_messages"] + counts["stream_frames"],
        "stats": stats, "joined": joined, "target_state": None if target_node is None else target_node.state.name,
        "seen_back": seen_back, "target_events": states, "prober_probes": prober_stats.get("core.probes", 0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in all, split across the configs")
    ap.add_argument("--tcp-share", type=float, default=0.1)
    ap.add_argument("--stream-share", type=float, default=0.05,
                    help="share of the packets sent as stream frames on stream connections")
    ap.add_argument("--rate", type=float, default=20000.0, help="datagrams per second (0: unpaced)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default="plain,encrypted,ws")
    args = ap.parse_args()
    names = [c for c in args.configs.split(",") if c]
    print(f"command: python bench/fuzz_bench.py --packets {args.packets} --rate {args.rate:g} "
          f"--tcp-share {args.tcp_share} --stream-share {args.stream_share} --seed {args.seed} "
          f"--configs {args.configs}")
    ok = True
    total_unexpected = 0
    total_sent = 0
    for i, name in enumerate(names):
        share = args.packets // len(names) + (1 if i < args.packets % len(names) else 0)
        r = _fuzz_one(name, share, args.tcp_share, args.stream_share, args.seed + i, args.rate)
        st = r["stats"]
        c = r["counts"]
        rate = r["sent"] / r["elapsed"]
        total_sent += r["sent"]
        print(f"\n[{name}] sent {r['sent']:,} packets in {r['elapsed']:.1f} s: {rate:,.0f} packets/s "
              f"({c['udp']:,} UDP, {c['tcp_frames']:,} TCP frames on {c['tcp_connections']} "
              f"connections, {c['ws_messages']:,} WebSocket messages on {c['ws_connections']} "
              f"connections ({c['ws_refused']} handshakes refused), {c['stream_frames']:,} stream "
              f"frames on {c['stream_connections']} stream connections)")
        got = (st.get("transport.udp_received", 0) + st.get("transport.tcp_received", 0)
               + st.get("transport.ws_received", 0))
        print(f"  the node received {got:,} ({st.get('transport.udp_received', 0):,} datagrams, "
              f"{st.get('transport.tcp_received', 0):,} TCP frames, "
              f"{st.get('transport.ws_received', 0):,} WebSocket messages), decoded "
              f"{sum(v for k, v in st.items() if k.startswith('packets_in.')):,}, dropped "
              f"{sum(v for k, v in st.items() if k.startswith('dropped.')):,} "
              f"({', '.join(k for k in st if k.startswith('dropped.')) or 'none'})")
        errors = {k: v for k, v in sorted(st.items()) if k.startswith("bad_packets.")}
        print("  refused by error class: " + ", ".join(f"{k[len('bad_packets.'):]} {v:,}" for k, v in errors.items()))
        transport = {k: v for k, v in sorted(st.items()) if k.startswith("transport.") and v}
        print("  transport: " + ", ".join(f"{k[len('transport.'):]} {v:,}" for k, v in transport.items()))
        streams = {k: v for k, v in sorted(st.items()) if k.startswith("streams.") and v}
        print("  streams: " + ", ".join(f"{k[len('streams.'):]} {v:,}" for k, v in streams.items()))
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
    print(f"\npackets sent in all: {total_sent:,}; unexpected exceptions in all: {total_unexpected}")
    return 0 if ok else 1


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") is None:
        os.environ["PYTHONHASHSEED"] = "0"
    sys.exit(main())
