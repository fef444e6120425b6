"""Benchmark the packet pipeline: encode + decode (+ unmarshal) round trips on one thread.

Usage::

    python bench/wire_bench.py [--seconds 2]

Cases: a ping-sized packet (~60-byte msgpack payload) and a 1 KiB user message, each plain and
with AES-256-GCM + lz4 (compress_min_size 256). Each iteration encodes a Python value into wire
bytes, decodes them into a Packet (verifying and decrypting) and unmarshals the payload.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossip.codecs import MsgpackCodec  # noqa: E402
from gossip.packet import PacketCodec  # noqa: E402
from gossip.security import Keyring  # noqa: E402
from gossip.wire import USER_MSG, MessageType  # noqa: E402

SENDER = bytes(range(16))


def _measure(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run *fn* in batches until *seconds* have passed; return (iterations, elapsed)."""
    batch = 1000
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start


from gossip.messages import Ping, from_wire, to_wire  # noqa: E402
from gossip.node import NodeID  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per case (default 2)")
    args = parser.parse_args(argv)

    key = os.urandom(32)
    codec = MsgpackCodec()
    plain = PacketCodec(codec=codec, compressor=None)
    secure = PacketCodec(codec=codec, keyring=Keyring([key]), label="bench", compress_min_size=256)
    ping: dict[str, Any] = {"seq": 12345, "target": os.urandom(16), "from": "127.0.0.1:7946"}
    user: dict[str, Any] = {"topic": "bench", "body": ("lorem ipsum dolor sit amet " * 40)[:1000]}

    cases: list[tuple[str, PacketCodec, int, Any]] = [
        ("ping, plain", plain, int(MessageType.PING), ping),
        ("ping, aes+lz4", secure, int(MessageType.PING), ping),
        ("1 KiB user, plain", plain, USER_MSG, user),
        ("1 KiB user, aes+lz4", secure, USER_MSG, user),
    ]
    print(f"python {sys.version.split()[0]}, {args.seconds:g} s per case, one thread")
    print(f"{'case':<22} {'packets/s':>12} {'us/packet':>10} {'wire bytes':>11}  note")
    for name, pc, msg_type, payload in cases:
        wire = pc.encode(msg_type, SENDER, 1, 3, payload)
        pkt = pc.decode(wire)
        assert pkt.unmarshal() == payload

        def round_trip(pc: PacketCodec = pc, t: int = msg_type, p: Any = payload) -> object:
            return pc.decode(pc.encode(t, SENDER, 1, 3, p)).unmarshal()

        count, elapsed = _measure(round_trip, args.seconds)
        rate = count / elapsed
        note = ("compressed " if pkt.compressed else "") + ("encrypted" if pkt.encrypted else "")
        print(f"{name:<22} {rate:>12,.0f} {1e6 / rate:>10.2f} {len(wire):>11}  {note}")
    # The protocol's real probe: a Ping message through to_wire/from_wire (with its field checks)
    # as the engine sends and receives it.
    msg = Ping(12345, NodeID(bytes=os.urandom(16)), "127.0.0.1:7946")
    for name, pc in (("Ping message, plain", plain), ("Ping message, aes+lz4", secure)):
        mt, value = to_wire(msg)
        wire = pc.encode(mt, SENDER, 1, 1, value)

        def proto_trip(pc: PacketCodec = pc) -> object:
            t, v = to_wire(msg)
            got = pc.decode(pc.encode(t, SENDER, 1, 1, v))
            return from_wire(got.msg_type, got.unmarshal())

        assert proto_trip() == msg
        count, elapsed = _measure(proto_trip, args.seconds)
        rate = count / elapsed
        print(f"{name:<22} {rate:>12,.0f} {1e6 / rate:>10.2f} {len(wire):>11}  to_wire+from_wire")
    print()
    print("reproduce: python bench/wire_bench.py" + (f" --seconds {args.seconds:g}" if args.seconds != 2 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
