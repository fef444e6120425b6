"""What one hostile full-state message costs the protocol core, and how insertion scales.

    python bench/core_flood_bench.py [--fakes 60000]

1. One unsolicited ``PushPull`` and one ``Join`` carrying ``--fakes`` fake members, decoded from
   the wire (``from_wire``) and handed to ``Protocol.receive``: seconds for each step, and how
   many members the table took (``max_members_per_message`` bounds it).
2. A reply to our own join carrying N members (bounded by ``max_members`` only): seconds per
   N, which stays linear because a newcomer enters the probe order in O(1).

This is a measurement, never a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossip.config import Config  # noqa: E402
from gossip.messages import Join, JoinReply, MemberState, PushPull, from_wire, to_wire  # noqa: E402
from gossip.node import PROTOCOL_VERSION, NodeID, NodeState  # noqa: E402
from gossip.protocol import Protocol  # noqa: E402


def fakes(n: int, start: int = 1 << 64) -> tuple[MemberState, ...]:
    return tuple(MemberState(NodeID(int=start + i), f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:7946",
                             NodeState.ALIVE, 0) for i in range(n))


def core(cfg: Config) -> Protocol:
    return Protocol(cfg, NodeID(int=1), "127.255.0.1:7946", random.Random(1), 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fakes", type=int, default=60_000)
    args = ap.parse_args()
    print(f"command: python bench/core_flood_bench.py --fakes {args.fakes}")
    cfg = Config.lan()
    for name, msg in (("push/pull", PushPull(1, "127.6.6.6:1", fakes(args.fakes))),
                      ("join", Join(1, "127.6.6.6:1", fakes(args.fakes), PROTOCOL_VERSION, ""))):
        mt, value = to_wire(msg)
        t0 = time.perf_counter()
        decoded = from_wire(mt, value)
        t1 = time.perf_counter()
        c = core(cfg)
        c.receive(1.0, "127.6.6.6:1", decoded, reliable=True)
        t2 = time.perf_counter()
        print(f"{name} with {args.fakes:,} fake members: decode {t1 - t0:.3f} s, core {t2 - t1:.4f} s, "
              f"table took {len(c.members):,}")
    cfg = Config.lan(max_members=1 << 20)
    for n in (10_000, 20_000, 40_000, 80_000):
        c = core(cfg)
        (seq,) = c.join(0.0, ["127.255.0.2:7946"])
        reply = JoinReply(seq, True, "", fakes(n))
        t0 = time.perf_counter()
        c.receive(0.1, "127.255.0.2:7946", reply, reliable=True)
        dt = time.perf_counter() - t0
        print(f"join reply with {n:,} members: {dt:.3f} s ({dt / n * 1e6:.1f} us per member)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
