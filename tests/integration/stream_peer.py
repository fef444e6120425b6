"""A node in its own process that serves streams, for tests that kill a peer mid-stream.

Run ``python tests/integration/stream_peer.py``; it prints one JSON line ``{"id": ..., "addr":
...}`` once started, serves until its standard input ends, then stops. Stream types:

* 500: writes 64 KiB blocks until the stream fails;
* 501: reads until the stream ends or fails.
"""

from __future__ import annotations

import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from gossip import Cluster, Config, GossipError, Node, Packet, Stream  # noqa: E402

KEY = b"stream-test-key!"  # the key of tests/integration/test_streams.py


def writer(sender: Node | None, packet: Packet, stream: Stream) -> None:
    block = os.urandom(64 * 1024)
    try:
        while True:
            stream.write(block)
    except GossipError:
        pass


def reader(sender: Node | None, packet: Packet, stream: Stream) -> None:
    try:
        while stream.read(1 << 20):
            pass
    except GossipError:
        pass


def main() -> int:
    cluster = Cluster(Config.local(bind_addr="127.0.0.1:0", encryption_key=KEY))
    cluster.handle_stream_func(500, writer)
    cluster.handle_stream_func(501, reader)
    cluster.start()
    print(json.dumps({"id": str(cluster.local_node().id), "addr": cluster.address}), flush=True)
    sys.stdin.read()
    cluster.stop(timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
