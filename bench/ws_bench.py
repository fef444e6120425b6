"""Benchmark the WebSocket transport against TCP, side by side, in one run.

Usage::

    python bench/ws_bench.py [--seconds 3] [--window 256] [--kinds tcp,ws,wss] [--frame 65536]

For each kind (``tcp``: UDP/TCP socket nodes; ``ws``: WebSocket-only nodes; ``wss``: the same
over TLS, with a CA and a certificate for 127.0.0.1 made for the run), two nodes on 127.0.0.1
(``Config.lan()``), the receiver in its own process (``tests/integration/node_proc.py --sink``):

* one-way user messages delivered per second, ``send_to_reliable`` with a 64-byte body, one
  sending thread, at most ``--window`` messages unaccounted for (the receiver counts them);
* request/reply round trips with ``send_to_with_response``, one at a time: p50 and p99;
* stream throughput in MB/s, twice: ``--frame``-byte frames written on one stream connection
  (:meth:`Transport.dial_stream`, the transport's own :class:`StreamConn`), and ``--frame``-byte
  writes through :meth:`gossip.Cluster.open_stream` (the stream layer, no key), each to a
  reader in another process that answers with the byte count once the writer half-closes.

It prints the command it was run with, every figure, and the WebSocket figures as a share of
TCP's. This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import gossip  # noqa: E402
from gossip import Cluster, Config, NodeID  # noqa: E402
from gossip.transports.base import StreamConn, Transport  # noqa: E402

NODE_PROC = ROOT / "tests" / "integration" / "node_proc.py"
MTYPE = gossip.USER_MSG


def _pki(directory: str) -> Any:
    from integration.tls import make_pki  # tests/integration/tls.py (cryptography)

    return make_pki(Path(directory))


def _node_args(kind: str, pki: Any) -> list[str]:
    if kind == "tcp":
        return []
    args = ["--ws-bind", "127.0.0.1:0"]
    if kind == "wss":
        args += ["--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-ca", pki.ca]
    return args


def _config(kind: str, pki: Any) -> Config:
    if kind == "tcp":
        return Config.lan(bind_addr="127.0.0.1:0")
    cfg = Config.lan(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0")
    if kind == "wss":
        cfg = cfg.copy(tls_cert_file=pki.cert, tls_key_file=pki.key, tls_ca_file=pki.ca)
    return cfg


class Remote:
    """The receiving node in its own process (``node_proc.py --sink``)."""

    def __init__(self, kind: str, pki: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_PROC), "--preset", "lan", "--sink", str(MTYPE),
             *_node_args(kind, pki)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._wait("ready", 30.0)
        self.id, self.addr = ready["id"], ready["addr"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(json.loads(line))
                self._cond.notify_all()

    def _wait(self, event: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self._lines):
                    if ev.get("event") == event:
                        return self._lines.pop(i)
                left = end - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"the remote node did not report {event!r}")
                self._cond.wait(left)

    def count(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self._wait("count", 10.0)["n"])

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def one_way(a: Cluster, r: Remote, seconds: float, window: int) -> dict[str, Any]:
    """Send reliable messages for ``seconds`` with at most ``window`` unaccounted for."""
    node_b = a.get_node(NodeID.parse(r.id))
    assert node_b is not None
    payload = {"seq": 0, "body": "x" * 64}
    base = r.count()
    sent = seen = 0
    stalled_since = 0.0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        if sent - seen >= window:
            now_seen = r.count() - base
            if now_seen == seen:
                stalled_since = stalled_since or time.perf_counter()
                if time.perf_counter() - stalled_since > 0.05:
                    seen = sent - window // 2  # give up on what is lost, move the window on
                continue
            seen, stalled_since = now_seen, 0.0
            continue
        payload["seq"] = sent
        a.send_to_reliable(node_b, MTYPE, payload)
        sent += 1
    prev, last_change = -1, time.perf_counter()
    while time.perf_counter() - last_change < 0.5:
        n = r.count() - base
        if n != prev:
            prev, last_change = n, time.perf_counter()
        time.sleep(0.05)
    elapsed = last_change - start
    return {"sent": sent, "delivered": prev, "rate": prev / elapsed}


def round_trips(a: Cluster, r: Remote, seconds: float) -> dict[str, float]:
    node_b = a.get_node(NodeID.parse(r.id))
    assert node_b is not None
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a.send_to_with_response(node_b, MTYPE + 1, {"q": len(lat)}, timeout=2.0)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"n": len(lat), "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "mean_ms": statistics.fmean(lat) * 1000}


# ---------------------------------------------------------------------------------- streams


def _transport(kind: str, pki: Any, listen: bool = True) -> Transport:
    if kind == "tcp":
        from gossip.transports.socket import SocketTransport

        return SocketTransport("127.0.0.1:0", name=f"bench-{kind}", max_stream_frame_size=16 << 20)
    from gossip.transports.websocket import WebSocketTransport, client_tls_context, server_tls_context

    server = server_tls_context(pki.cert, pki.key) if kind == "wss" and listen else None
    client = client_tls_context(pki.ca) if kind == "wss" else None
    return WebSocketTransport("127.0.0.1:0" if listen else "", name=f"bench-{kind}", server_ssl=server,
                              client_ssl=client, max_stream_frame_size=16 << 20)


def stream_child(kind: str, pki_dir: str) -> int:
    """The reading end of the stream benchmark (run in its own process)."""
    pki = _pki(pki_dir) if kind == "wss" else None
    t = _transport(kind, pki)

    def serve(s: StreamConn) -> None:
        total = 0
        while True:
            frame = s.recv_frame(30.0)
            if frame is None:
                break
            total += len(frame)
        s.send_frame(str(total).encode(), 10.0)
        s.close_write()

    t.start(lambda batch: None, lambda s: threading.Thread(target=serve, args=(s,), daemon=True).start())
    print(json.dumps({"addr": t.local_addr}), flush=True)
    sys.stdin.read()
    t.close()
    return 0


def stream_throughput(kind: str, pki: Any, pki_dir: str, seconds: float, frame_size: int) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--stream-child", kind, "--pki", pki_dir],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        addr = json.loads(child.stdout.readline())["addr"]
        t = _transport(kind, pki, listen=False)
        t.start(lambda batch: None)
        try:
            s = t.dial_stream(addr, 10.0)
            frame = os.urandom(frame_size)
            sent = 0
            start = time.perf_counter()
            end = start + seconds
            while time.perf_counter() < end:
                for _ in range(16):
                    s.send_frame(frame, 10.0)
                sent += 16 * frame_size
            s.close_write()
            reply = s.recv_frame(30.0)
            elapsed = time.perf_counter() - start
            s.close()
        finally:
            t.close()
        got = int(reply or b"0")
        return {"mb_s": got / elapsed / 1e6, "sent": sent, "received": got}
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


def cluster_stream_child(kind: str, pki_dir: str) -> int:
    """A node whose stream handler reads everything and answers with the byte count."""
    pki = _pki(pki_dir) if kind == "wss" else None
    c = Cluster(_config(kind, pki))

    def sink(sender: Any, packet: Any, stream: Any) -> None:
        buf = bytearray(1 << 20)
        total = 0
        while n := stream.readinto(buf):
            total += n
        stream.write(str(total).encode())
        stream.close_write()

    c.handle_stream_func(MTYPE + 2, sink)
    c.start()
    print(json.dumps({"addr": c.address, "id": str(c.local_node().id)}), flush=True)
    sys.stdin.read()
    c.stop(timeout=3.0)
    return 0


def cluster_stream(kind: str, pki: Any, pki_dir: str, seconds: float, chunk: int) -> dict[str, float]:
    """Write ``chunk``-byte pieces through :meth:`Cluster.open_stream` (no key) for ``seconds``."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--cluster-stream-child", kind, "--pki", pki_dir],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    a = Cluster(_config(kind, pki))
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        a.start()
        a.join(info["addr"], timeout=10.0)
        end = time.monotonic() + 10
        while (node := a.get_node(NodeID.parse(info["id"]))) is None:
            if time.monotonic() > end:
                raise SystemExit(f"{kind}: the stream node was not seen")
            time.sleep(0.02)
        data = os.urandom(chunk)
        sent = 0
        with a.open_stream(node, MTYPE + 2, None, timeout=10.0) as st:
            st.settimeout(30.0)
            start = time.perf_counter()
            stop = start + seconds
            while time.perf_counter() < stop:
                for _ in range(16):
                    st.write(data)
                sent += 16 * chunk
            st.close_write()
            got = int(st.read() or b"0")
            elapsed = time.perf_counter() - start
        return {"mb_s": got / elapsed / 1e6, "sent": sent, "received": got}
    finally:
        a.stop(timeout=3.0)
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


# ---------------------------------------------------------------------------------- main


def run_kind(kind: str, pki: Any, pki_dir: str, seconds: float, window: int,
             frame_size: int) -> dict[str, Any]:
    remote = Remote(kind, pki)
    a = Cluster(_config(kind, pki))
    a.start()
    try:
        a.join(remote.addr, timeout=10.0)
        end = time.monotonic() + 10
        while a.get_node(NodeID.parse(remote.id)) is None:
            if time.monotonic() > end:
                raise SystemExit(f"{kind}: the two nodes did not see each other")
            time.sleep(0.02)
        msgs = one_way(a, remote, seconds, window)
        rtt = round_trips(a, remote, seconds)
    finally:
        a.stop(timeout=3.0)
        remote.close()
    stream = stream_throughput(kind, pki, pki_dir, seconds, frame_size)
    layer = cluster_stream(kind, pki, pki_dir, seconds, frame_size)
    return {"kind": kind, "msgs": msgs, "rtt": rtt, "stream": stream, "layer": layer}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    p.add_argument("--window", type=int, default=256, help="messages in flight at most")
    p.add_argument("--kinds", default="tcp,ws,wss", help="comma-separated: tcp, ws, wss")
    p.add_argument("--frame", type=int, default=65536, help="stream frame size in bytes")
    p.add_argument("--stream-child", default="", help=argparse.SUPPRESS)
    p.add_argument("--cluster-stream-child", default="", help=argparse.SUPPRESS)
    p.add_argument("--pki", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stream_child:
        return stream_child(args.stream_child, args.pki)
    if args.cluster_stream_child:
        return cluster_stream_child(args.cluster_stream_child, args.pki)
    print("$ python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__), *sys.argv[1:]]),
          flush=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, websockets "
          f"{__import__('websockets').__version__}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as pki_dir:
        pki = _pki(pki_dir)
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            r = run_kind(kind, pki, pki_dir, args.seconds, args.window, args.frame)
            results[kind] = r
            m, t, s, st = r["msgs"], r["rtt"], r["stream"], r["layer"]
            print(f"{kind:>4}: {m['rate']:>9,.0f} msgs/s ({m['delivered']:,} of {m['sent']:,})  "
                  f"request/reply p50 {t['p50_ms']:.3f} ms p99 {t['p99_ms']:.3f} ms ({t['n']:,})  "
                  f"StreamConn {s['mb_s']:,.0f} MB/s ({args.frame // 1024} KiB frames)  "
                  f"Stream {st['mb_s']:,.0f} MB/s ({args.frame // 1024} KiB writes)", flush=True)
    tcp = results.get("tcp")
    if tcp:
        for kind in ("ws", "wss"):
            r = results.get(kind)
            if r:
                share = 100 * r["msgs"]["rate"] / tcp["msgs"]["rate"]
                print(f"{kind} user messages: {share:.0f} % of the TCP rate (goal: >= 78 %)")
    if "wss" in results:
        print(f"wss stream: {results['wss']['stream']['mb_s']:,.0f} MB/s on the StreamConn, "
              f"{results['wss']['layer']['mb_s']:,.0f} MB/s through a Stream (goal: >= 600 MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
