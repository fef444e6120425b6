"""Benchmark node-to-node streams between two processes on loopback.

Usage::

    python bench/stream_bench.py [--mib 1024] [--chunk-kib 1024] [--repeat 3] [--seconds 3]
                                 [--profile DIR]

This process runs two client nodes (one without a key, one with an AES-128 key); a child
process runs the two matching server nodes and a raw TCP sink. In the same run it measures:

* (a) raw ``socket.sendall`` of ``--mib`` MiB in ``--chunk-kib`` KiB writes to a sink that
  ``recv_into``\\ s them: the limit for Python on this machine;
* (b) the same bytes through a plaintext stream (``write``, read with ``readinto``);
* (c) through an AES-GCM stream (compression off, the data is random);
* (d) through an AES-GCM stream with lz4, on compressible data (MB/s of the data before
  compression);
* (e) streams opened and closed per second (one thread opening them one after the other, then
  ``--open-threads`` threads at once), (f) message round trips per second;

each from the first byte written until the sink has reported every byte read (the best of
``--repeat`` runs), in MB/s and as a ratio to (a); then, for ``--seconds`` each, streams
opened and closed per second (one thread, encrypted and plaintext) and ``write_msg`` /
``read_msg`` round trips per second with 64-byte messages (encrypted).

``--only b,e`` runs only those cases (and (a)). ``--profile DIR`` runs both processes under cProfile and writes ``client.prof`` and
``server.prof`` there (the figures are then lower).

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gossip  # noqa: E402
from gossip import Cluster, Config, Node, NodeID, NodeState, Packet, Stream  # noqa: E402
from gossip.metadata import MetadataReader  # noqa: E402

KEY = b"0123456789abcdef"
SINK, OPEN, ECHO = 200, 202, 203
COUNT, MSG = 201, 204
MiB = 1024 * 1024


def _config(key: bytes | None) -> Config:
    return Config.lan(bind_addr="127.0.0.1:0", encryption_key=key)


# ---------------------------------------------------------------------------------- server


def _sink(sender: Node | None, packet: Packet, stream: Stream) -> None:
    stream.settimeout(60.0)
    buf = bytearray(packet.unmarshal())
    total = 0
    while True:
        n = stream.readinto(buf)
        if not n:
            break
        total += n
    stream.write_msg(COUNT, total)


def _opened(sender: Node | None, packet: Packet, stream: Stream) -> None:
    return None


def _echo(sender: Node | None, packet: Packet, stream: Stream) -> None:
    while True:
        try:
            msg = stream.read_msg(MSG)
        except EOFError:
            return
        stream.write_msg(MSG, msg)


def _raw_sink(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            size = int.from_bytes(conn.recv(4), "big")
            buf = bytearray(size)
            view = memoryview(buf)
            total = 0
            while True:
                n = conn.recv_into(view)
                if not n:
                    break
                total += n
            conn.sendall(total.to_bytes(8, "big"))


def serve() -> int:
    """Child process: two server nodes and a raw sink; report their addresses; run until EOF."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    threading.Thread(target=_raw_sink, args=(listener,), daemon=True).start()
    clusters = {}
    for name, key in (("plain", None), ("aes", KEY)):
        c = Cluster(_config(key))
        c.handle_stream_func(SINK, _sink)
        c.handle_stream_func(OPEN, _opened)
        c.handle_stream_func(ECHO, _echo)
        c.start()
        clusters[name] = c
    info = {name: {"id": str(c.local_node().id), "addr": c.address} for name, c in clusters.items()}
    info["raw"] = listener.getsockname()[1]
    print(json.dumps(info), flush=True)
    sys.stdin.read()
    for c in clusters.values():
        c.stop(timeout=2.0)
    listener.close()
    return 0


# ---------------------------------------------------------------------------------- client


def _node(info: dict[str, str]) -> Node:
    return Node(NodeID.parse(info["id"]), info["addr"], NodeState.ALIVE, 0, MetadataReader({}, 0))


def _raw(port: int, chunk: bytes, total: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(len(chunk).to_bytes(4, "big"))
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        got = int.from_bytes(s.recv(8), "big")
        dt = time.perf_counter() - t0
    assert got == sent, (got, sent)
    return dt


def _streamed(c: Cluster, node: Node, chunk: bytes, total: int, compress: bool) -> float:
    with c.open_stream(node, SINK, len(chunk)) as s:
        if compress:
            s.enable_compression()
        else:
            s.disable_compression()
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            s.write(chunk)
            sent += len(chunk)
        s.close_write()
        got = s.read_msg(COUNT)
        dt = time.perf_counter() - t0
    assert got == sent, (got, sent)
    return dt


def _compressible(size: int) -> bytes:
    import random

    rng = random.Random(7)
    words = ["alive", "suspect", "dead", "node", "metadata", "region", "eu-west", "us-east",
             "version", "0.0.1", "zone", "rack"]
    out = bytearray()
    while len(out) < size:
        out += json.dumps({"id": rng.randrange(10**6), "state": rng.choice(words),
                           "tags": rng.sample(words, 3), "load": round(rng.random(), 3)}).encode()
        out += b"\n"
    return bytes(out[:size])


def _opens(c: Cluster, node: Node, seconds: float, threads: int = 1) -> float:
    counts = [0] * threads
    end = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < end:
            with c.open_stream(node, OPEN):
                pass
            counts[i] += 1

    t0 = time.perf_counter()
    if threads == 1:
        loop(0)
        return counts[0] / (time.perf_counter() - t0)
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _round_trips(c: Cluster, node: Node, seconds: float) -> float:
    payload = os.urandom(64 - 4)  # a 64-byte message once encoded (bin8 header + 60 bytes)
    with c.open_stream(node, ECHO) as s:
        n = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            s.write_msg(MSG, payload)
            s.read_msg(MSG)
            n += 1
        dt = time.perf_counter() - t0
    return n / dt


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    child_cmd = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    if args.profile:
        child_cmd = [sys.executable, "-m", "cProfile", "-o",
                     str(Path(args.profile) / "server.prof"), *child_cmd[1:]]
    child = subprocess.Popen(child_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    info = json.loads(child.stdout.readline())
    clients = {name: Cluster(_config(key)) for name, key in (("plain", None), ("aes", KEY))}
    rows: list[tuple[str, str]] = []
    try:
        for c in clients.values():
            c.start()
        nodes = {name: _node(info[name]) for name in clients}
        chunk = os.urandom(args.chunk_kib * 1024)
        text = _compressible(args.chunk_kib * 1024)
        total = args.mib * MiB
        total -= total % len(chunk)
        cases: list[tuple[str, Any]] = [
            ("(a) raw socket sendall/recv_into", lambda: _raw(info["raw"], chunk, total)),
            ("(b) plaintext stream", lambda: _streamed(clients["plain"], nodes["plain"], chunk,
                                                       total, False)),
            ("(c) AES-GCM stream", lambda: _streamed(clients["aes"], nodes["aes"], chunk, total,
                                                     False)),
            ("(d) AES-GCM + lz4 stream, compressible data",
             lambda: _streamed(clients["aes"], nodes["aes"], text, total, True)),
        ]
        raw_rate = 0.0
        only = set(args.only.split(",")) if args.only else None
        for name, fn in cases:
            if only is not None and name[1] not in only and name[1] != "a":
                continue
            best = min(fn() for _ in range(args.repeat))
            rate = total / best / 1e6
            if not raw_rate:
                raw_rate = rate
            rows.append((name, f"{rate:,.0f} MB/s ({rate / raw_rate:.0%} of raw)"))
            print(f"   {rows[-1][0]}: {rows[-1][1]}", flush=True)
        for name, threads in (("aes", 1), ("plain", 1), ("aes", args.open_threads)):
            if only is not None and "e" not in only:
                break
            rate = _opens(clients[name], nodes[name], args.seconds, threads)
            label = "AES-GCM" if name == "aes" else "plaintext"
            rows.append((f"(e) streams opened+closed per s, {label}, {threads} thread"
                         f"{'s' if threads > 1 else ''}", f"{rate:,.0f}"))
            print(f"   {rows[-1][0]}: {rows[-1][1]}", flush=True)
        if only is None or "f" in only:
            rate = _round_trips(clients["aes"], nodes["aes"], args.seconds)
            rows.append(("(f) write_msg/read_msg round trips per s, 64 B, AES-GCM",
                         f"{rate:,.0f}"))
            print(f"   {rows[-1][0]}: {rows[-1][1]}", flush=True)
    finally:
        for c in clients.values():
            c.stop(timeout=2.0)
        child.stdin.close()
        child.wait(30)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=1024, help="MiB sent in each throughput case")
    p.add_argument("--chunk-kib", type=int, default=1024, help="KiB per write call")
    p.add_argument("--repeat", type=int, default=3, help="runs per throughput case (best kept)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per rate case")
    p.add_argument("--profile", default="", metavar="DIR",
                   help="run both processes under cProfile, writing DIR/client.prof, server.prof")
    p.add_argument("--open-threads", type=int, default=4,
                   help="threads opening streams at once in the last (e) case")
    p.add_argument("--only", default="", metavar="LETTERS",
                   help="comma-separated cases to run besides (a): b, c, d, e (opens), f (messages)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve()
    cmd = "python bench/stream_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"gossip {gossip.__version__} on Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; {args.mib} MiB per case in {args.chunk_kib} KiB writes",
          flush=True)
    if args.profile:
        import cProfile

        os.makedirs(args.profile, exist_ok=True)
        prof = cProfile.Profile()
        prof.enable()
        rows = run(args)
        prof.disable()
        prof.dump_stats(str(Path(args.profile) / "client.prof"))
    else:
        rows = run(args)
    print("\n== results")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"\nreproduce with: {cmd.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
