"""CPU a node spends on compressed "bomb" frames sent over TCP, per frame.

Usage::

    python bench/bomb_bench.py [--frames 20] [--kinds ping-nils,ping-ints,gossip-lists,push-pull-lists]

A ``gossip.Cluster`` (``Config.local()``, no key, on ``127.0.0.1:0``) runs in this process. Each
kind of frame is a valid plain packet (the node's own codec) whose payload is about 4 MiB of
msgpack that lz4 squeezes into about 16.5 KB:

* ``ping-nils``: a PING whose payload is one array of 4 million nils;
* ``ping-ints``: the same with small integers;
* ``gossip-lists``: a GOSSIP whose payload is an array of 4 million empty arrays;
* ``push-pull-lists``: a PUSH_PULL (a full-state message, legitimately large) whose member
  list holds 16,000 states of 255 empty arrays each.

The frames go over a few TCP connections (the wire's 4-byte length prefix, after the
connection preamble); the bench waits until the node has counted every one as a bad packet,
and prints the process CPU seconds per frame (this process only sends, so nearly all of it is
the node's) and the counter each refusal landed in.

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gossip import Cluster, Config  # noqa: E402
from gossip.transports.socket import PREAMBLE_FRAMES  # noqa: E402
from gossip.wire import MessageType  # noqa: E402

N = 4 * 1024 * 1024 - 256


def _array32(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def payload(kind: str) -> tuple[int, bytes]:
    """Return (message type, msgpack payload) of one bomb."""
    if kind == "ping-nils":
        return MessageType.PING, _array32(N) + b"\xc0" * N
    if kind == "ping-ints":
        return MessageType.PING, _array32(N) + b"\x7f" * N
    if kind == "gossip-lists":
        return MessageType.GOSSIP, _array32(N) + b"\x90" * N
    if kind == "push-pull-lists":
        states, inner = 16000, 255
        state = b"\xdc" + inner.to_bytes(2, "big") + b"\x90" * inner
        return MessageType.PUSH_PULL, (b"\x94\x01\xa0" + b"\xdc" + states.to_bytes(2, "big")
                                       + state * states + b"\xc2")
    raise SystemExit(f"unknown kind {kind!r}")


def bad_count(node: Cluster) -> int:
    return sum(v for k, v in node.stats().items() if k.startswith("bad_packets."))


def run(kind: str, frames: int) -> None:
    with Cluster(Config.local(bind_addr="127.0.0.1:0")) as node:
        mt, body = payload(kind)
        data = node._codec.encode_raw(mt, os.urandom(16), 1, 1, body)
        frame = struct.pack(">I", len(data)) + data
        host, _, port = node.address.rpartition(":")
        start_bad = bad_count(node)
        cpu0, wall0 = time.process_time(), time.monotonic()
        sent = 0
        while sent < frames:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(PREAMBLE_FRAMES)
                for _ in range(min(4, frames - sent)):
                    sock.sendall(frame)
                    sent += 1
                end = time.monotonic() + 600
                while bad_count(node) - start_bad < sent and time.monotonic() < end:
                    time.sleep(0.01)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        refused = bad_count(node) - start_bad
        keys = sorted(k for k, v in node.stats().items() if k.startswith("bad_packets.") and v)
        print(f"{kind:16s} frame {len(data):6d} B  refused {refused}/{frames}  "
              f"cpu {cpu / frames * 1000:8.2f} ms/frame  wall {wall / frames * 1000:8.2f} ms/frame  "
              f"as {', '.join(keys)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--kinds", default="ping-nils,ping-ints,gossip-lists,push-pull-lists")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    for kind in args.kinds.split(","):
        run(kind, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
