"""stream: node-to-node streams, a ping/pong exchange and a file copy checked by sha256.

Every node serves two stream types:

* 128 (``START_STREAM``): paularlott/gossip's stream example. The handler prints the opening
  packet's ``{"content": ...}``, reads one ``STREAM_DATA_BLOCK`` (type 129) message and answers
  ``"Pong: <data>"``; the console command ``stream <node-id> <text...>`` opens such a stream,
  writes the text, prints the answer and closes.
* 130 (``SEND_FILE``): ``send <node-id> <file>`` streams a file to a node, which writes it
  (into ``$GOSSIP_STREAM_DIR``, by default ``gossip-stream-example`` in the temporary
  directory) while hashing it, checks the sha256 named in the opening packet and answers with
  what it found (type 131); the sender prints the verdict.

Both ends share the examples' key, so every frame is sealed with AES-GCM. Run::

    python examples/stream.py --port 8000 --peers 127.0.0.1:8000
    python examples/stream.py --port 8001 --peers 127.0.0.1:8000

then type ``peers`` to see the node ids, ``stream <id> hello`` and ``send <id> /etc/hosts``
(an id, or its short form: the last 8 characters, which the examples print). Unattended::

    python examples/stream.py --port 0 --no-prompt --run-for 2
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from _common import Command, Example, run, say

import gossip
from gossip import Cluster, Node, Packet, Stream

START_STREAM = gossip.USER_MSG  # 128: opens the ping/pong stream
STREAM_DATA_BLOCK = gossip.USER_MSG + 1  # 129: one message inside it
SEND_FILE = gossip.USER_MSG + 2  # 130: opens a file copy
FILE_RECEIVED = gossip.USER_MSG + 3  # 131: the receiver's verdict


@dataclass
class StartMessage:
    """The opening payload of a ping/pong stream."""

    content: str


@dataclass
class FileHeader:
    """The opening payload of a file copy."""

    name: str
    size: int
    sha256: str


@dataclass
class FileVerdict:
    """What the receiver found."""

    ok: bool
    size: int
    sha256: str
    path: str


def find_node(cluster: Cluster, text: str) -> Node | None:
    """Return the node whose id or short id (as printed) is ``text`` (printing why if none)."""
    node = cluster.get_node_by_id_string(text)
    if node is None:
        print(f"no single node has the id or short id {text!r}", flush=True)
    return node


# ---------------------------------------------------------------------------------- handlers


def on_start_stream(sender: Node, packet: Packet, stream: Stream) -> None:
    """Serve a ping/pong stream: print the opening, read one block, answer it."""
    start = packet.unmarshal(StartMessage)
    say(f"Stream opened by {sender.id}: {start.content}")
    data = stream.read_msg(STREAM_DATA_BLOCK, str)
    say(f"Received stream data: {data}")
    stream.write_msg(STREAM_DATA_BLOCK, f"Pong: {data}")


def on_send_file(sender: Node, packet: Packet, stream: Stream) -> None:
    """Receive a file into a temporary directory, check its sha256, report the verdict."""
    header = packet.unmarshal(FileHeader)
    folder = os.environ.get("GOSSIP_STREAM_DIR") or os.path.join(tempfile.gettempdir(),
                                                                 "gossip-stream-example")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, os.path.basename(header.name) or "file")
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(1024 * 1024)
    with open(path, "wb") as out:
        while n := stream.readinto(buf):
            chunk = memoryview(buf)[:n]
            digest.update(chunk)
            out.write(chunk)
            size += n
    ok = size == header.size and digest.hexdigest() == header.sha256
    say(f"Received file {header.name!r}: {size} bytes into {path}, "
        f"sha256 {'ok' if ok else 'MISMATCH'}")
    stream.write_msg(FILE_RECEIVED, FileVerdict(ok, size, digest.hexdigest(), path))


# ---------------------------------------------------------------------------------- commands


def cmd_stream(cluster: Cluster, args: list[str]) -> None:
    """Console command: open a ping/pong stream to a node and print its answer."""
    node = find_node(cluster, args[0])
    if node is None:
        return
    text = " ".join(args[1:])
    with cluster.open_stream(node, START_STREAM, StartMessage("Example Stream Start Message")) as s:
        s.write_msg(STREAM_DATA_BLOCK, text)
        print(f"Stream reply: {s.read_msg(STREAM_DATA_BLOCK, str)}", flush=True)


def cmd_send(cluster: Cluster, args: list[str]) -> None:
    """Console command: copy a file to a node, which checks its sha256."""
    node = find_node(cluster, args[0])
    if node is None:
        return
    path = args[1]
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
        size = os.path.getsize(path)
    except OSError as exc:
        print(f"cannot read {path}: {exc}", flush=True)
        return
    header = FileHeader(os.path.basename(path), size, digest.hexdigest())
    with cluster.open_stream(node, SEND_FILE, header) as s, open(path, "rb") as f:
        shutil.copyfileobj(f, s, 1024 * 1024)
        s.close_write()
        verdict = s.read_msg(FILE_RECEIVED, FileVerdict)
    state = "verified" if verdict.ok else "FAILED the check"
    print(f"Sent {size} bytes of {path} to {node.id.short}: {state} "
          f"(sha256 {verdict.sha256[:16]}..., stored as {verdict.path})", flush=True)


def setup(cluster: Cluster) -> None:
    """Register both stream handlers."""
    cluster.handle_stream_func(START_STREAM, on_start_stream)
    cluster.handle_stream_func(SEND_FILE, on_send_file)


EXAMPLE = Example(
    name="stream",
    description="gossip stream example: 'stream <node-id> <text>' and 'send <node-id> <file>'",
    setup=setup,
    commands={
        "stream": Command("stream <node-id> <text...>", "open a stream, send text, print the reply",
                          cmd_stream, 2),
        "send": Command("send <node-id> <file>", "copy a file to a node, which checks its sha256",
                        cmd_send, 2),
    },
)


def main() -> int:
    """Run the example; return the exit code."""
    return run(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
