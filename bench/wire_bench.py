"""Benchmark the packet pipeline: encode + decode (+ unmarshal) round trips on one thread.

Usage::

    python bench/wire_bench.py [--seconds 2]

Cases: a ping-sized packet (~60-byte msgpack payload) and a 1 KiB user message, each plain and
with AES-256-GCM + lz4 (compress_min_size 256), and the 1 KiB message with XChaCha20-Poly1305
and with Snappy. Each iteration encodes a Python value into wire bytes, decodes them into a
Packet (verifying and decrypting) and unmarshals the payload.

Then the parts alone: seal and open rates of the ciphers (a keyring sealing under a per-sender
key, as packets are) at 64 B, 1 KiB and 64 KiB, AES-256-GCM against XChaCha20-Poly1305; and
compress and decompress rates of lz4 against Snappy, with the ratio, on a 1 KiB message and on
64 KiB of text. XChaCha20-Poly1305 needs PyNaCl and Snappy cramjam (the xchacha and snappy
extras): without them their rows say so.
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
from gossip.compression import Lz4Compressor, SnappyCompressor, snappy_available  # noqa: E402
from gossip.packet import PacketCodec  # noqa: E402
from gossip.security import XCHACHA20_POLY1305, Keyring, cipher_available  # noqa: E402
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
    has_xchacha, has_snappy = cipher_available(XCHACHA20_POLY1305), snappy_available()
    if has_xchacha:
        xchacha = PacketCodec(codec=codec, keyring=Keyring([key], cipher=XCHACHA20_POLY1305),
                              label="bench", compress_min_size=256)
        cases += [("ping, xchacha+lz4", xchacha, int(MessageType.PING), ping),
                  ("1 KiB user, xchacha+lz4", xchacha, USER_MSG, user)]
    if has_snappy:
        snappy = PacketCodec(codec=codec, keyring=Keyring([key]), label="bench",
                             compressor=SnappyCompressor(), compress_min_size=256)
        cases.append(("1 KiB user, aes+snappy", snappy, USER_MSG, user))
    print(f"python {sys.version.split()[0]}, {args.seconds:g} s per case, one thread")
    print(f"{'case':<24} {'packets/s':>12} {'us/packet':>10} {'wire bytes':>11}  note")
    for name, pc, msg_type, payload in cases:
        wire = pc.encode(msg_type, SENDER, 1, 3, payload)
        pkt = pc.decode(wire)
        assert pkt.unmarshal() == payload

        def round_trip(pc: PacketCodec = pc, t: int = msg_type, p: Any = payload) -> object:
            return pc.decode(pc.encode(t, SENDER, 1, 3, p)).unmarshal()

        count, elapsed = _measure(round_trip, args.seconds)
        rate = count / elapsed
        note = ("compressed " if pkt.compressed else "") + ("encrypted" if pkt.encrypted else "")
        print(f"{name:<24} {rate:>12,.0f} {1e6 / rate:>10.2f} {len(wire):>11}  {note}")
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
        print(f"{name:<24} {rate:>12,.0f} {1e6 / rate:>10.2f} {len(wire):>11}  to_wire+from_wire")
    if not has_xchacha:
        print("(xchacha rows skipped: PyNaCl is not installed, pip install 'gossip-cluster[xchacha]')")
    if not has_snappy:
        print("(snappy rows skipped: cramjam is not installed, pip install 'gossip-cluster[snappy]')")
    print()
    _ciphers(key, args.seconds / 2, has_xchacha)
    print()
    _compressors(codec.encode(user), args.seconds / 2, has_snappy)
    print()
    print("reproduce: python bench/wire_bench.py" + (f" --seconds {args.seconds:g}" if args.seconds != 2 else ""))
    return 0


def _ciphers(key: bytes, seconds: float, has_xchacha: bool) -> None:
    """Seal and open rates of each cipher, under a per-sender key as packets are sealed."""
    names = ["aes-gcm"] + ([XCHACHA20_POLY1305] if has_xchacha else [])
    print(f"{'cipher (32-byte key)':<22} {'size':>7} {'seals/s':>11} {'opens/s':>11} "
          f"{'seal MB/s':>10} {'open MB/s':>10}")
    for size in (64, 1024, 65536):
        data = os.urandom(size)
        for name in names:
            ring = Keyring([key], cipher=name)
            sealed = ring.seal(data, b"aad", SENDER)
            assert ring.open(sealed, b"aad", SENDER) == data
            n, t = _measure(lambda r=ring, d=data: r.seal(d, b"aad", SENDER), seconds)
            seal_rate = n / t
            n, t = _measure(lambda r=ring, c=sealed: r.open(c, b"aad", SENDER), seconds)
            open_rate = n / t
            print(f"{name:<22} {size:>7} {seal_rate:>11,.0f} {open_rate:>11,.0f} "
                  f"{seal_rate * size / 1e6:>10,.1f} {open_rate * size / 1e6:>10,.1f}")
    if not has_xchacha:
        print("(xchacha20-poly1305 skipped: PyNaCl is not installed)")


def _compressors(user_payload: bytes, seconds: float, has_snappy: bool) -> None:
    """Compress and decompress rates of lz4 and Snappy, and their ratios."""
    text = (Path(__file__).read_bytes() * 64)[:65536]
    inputs = [("1 KiB user msg", user_payload), ("64 KiB text", text)]
    compressors: list[Any] = [Lz4Compressor()] + ([SnappyCompressor()] if has_snappy else [])
    print(f"{'compressor':<10} {'input':<16} {'bytes':>7} {'packed':>7} {'ratio':>6} "
          f"{'comp MB/s':>10} {'decomp MB/s':>12}")
    for label, data in inputs:
        for comp in compressors:
            packed = comp.compress(data)
            assert comp.decompress(packed, len(data)) == data
            n, t = _measure(lambda c=comp, d=data: c.compress(d), seconds)
            comp_rate = n * len(data) / t / 1e6
            n, t = _measure(lambda c=comp, p=packed, m=len(data): c.decompress(p, m), seconds)
            decomp_rate = n * len(data) / t / 1e6
            print(f"{comp.name:<10} {label:<16} {len(data):>7} {len(packed):>7} "
                  f"{len(data) / len(packed):>6.2f} {comp_rate:>10,.0f} {decomp_rate:>12,.0f}")
    if not has_snappy:
        print("(snappy skipped: cramjam is not installed)")


if __name__ == "__main__":
    raise SystemExit(main())
