"""Streams (gossip.streams.stream) between two ends joined by an in-test pipe.

The pipe lets a test see and change every frame in flight: flip a byte, drop, duplicate,
reorder, cut the connection short. No sockets, no threads but the tests' own, bounded waits.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import shutil
import threading
from collections.abc import Callable

import pytest

from gossip.codecs import DEFAULT_CODEC
from gossip.compression import Lz4Compressor
from gossip.errors import (
    AuthenticationError,
    DecodeError,
    GossipTimeout,
    LocalProtocolError,
    PacketTooLarge,
    RemoteHandlerError,
    SendError,
    TransportError,
)
from gossip.streams import FRAME_OVERHEAD, SALT_SIZE, Stream, derive_stream_keys

WAIT = 10.0
Hook = Callable[[bytes], list[bytes]]


class Pipe:
    """One direction: whole frames, a bounded window of bytes, an end-of-stream flag."""

    def __init__(self, window: int) -> None:
        self.cond = threading.Condition()
        self.frames: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.window = window
        self.eof = False
        self.closed = False
        self.sent: list[bytes] = []  # every frame that went in, for inspection


class End:
    """One end of a pipe pair; implements the StreamConn protocol."""

    def __init__(self, inbox: Pipe, outbox: Pipe, max_frame_size: int, peer: str) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.max_frame_size = max_frame_size
        self._peer = peer
        self.hook: Hook | None = None

    @property
    def peer(self) -> str:
        return self._peer

    def send_frame(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        if len(data) > self.max_frame_size:
            raise PacketTooLarge("frame over the pipe's limit")
        frames = [bytes(data)] if self.hook is None else self.hook(bytes(data))
        out = self.outbox
        with out.cond:
            if out.closed or out.eof:
                raise SendError("pipe closed")
            for frame in frames:
                if not out.cond.wait_for(lambda: out.closed or not out.size
                                         or out.size + len(frame) <= out.window, timeout):
                    out.closed = True
                    out.cond.notify_all()
                    raise GossipTimeout("pipe write timed out")
                if out.closed:
                    raise SendError("pipe closed")
                out.frames.append(frame)
                out.sent.append(frame)
                out.size += len(frame)
                out.cond.notify_all()

    def recv_frame(self, timeout: float | None = None) -> bytes | None:
        box = self.inbox
        with box.cond:
            if not box.cond.wait_for(lambda: box.frames or box.eof or box.closed, timeout):
                raise GossipTimeout("pipe read timed out")
            if box.frames:
                frame = box.frames.popleft()
                box.size -= len(frame)
                box.cond.notify_all()
                return frame
            if box.closed:
                raise TransportError("pipe closed")
            return None

    def close_write(self) -> None:
        with self.outbox.cond:
            self.outbox.eof = True
            self.outbox.cond.notify_all()

    def close(self) -> None:
        for box in (self.inbox, self.outbox):
            with box.cond:
                box.closed = True
                box.cond.notify_all()


def ends(max_frame: int = 1 << 20, window: int = 4 << 20) -> tuple[End, End]:
    a_to_b, b_to_a = Pipe(window), Pipe(window)
    return (End(b_to_a, a_to_b, max_frame + FRAME_OVERHEAD, "server"),
            End(a_to_b, b_to_a, max_frame + FRAME_OVERHEAD, "client"))


def pair(encrypted: bool = True, *, max_frame: int = 1 << 20, reader_max: int | None = None,
         compressor: Lz4Compressor | None = None, window: int = 4 << 20,
         timeout: float | None = WAIT) -> tuple[Stream, Stream, End, End]:
    """A client and a server stream; returns them and their two pipe ends."""
    ce, se = ends(max(max_frame, reader_max or 0), window)
    keys = (derive_stream_keys(b"k" * 16, b"c" * SALT_SIZE, b"s" * SALT_SIZE, b"label")
            if encrypted else None)
    common = dict(keys=keys, codec=DEFAULT_CODEC, msg_type=200, compressor=compressor,
                  compress_min_size=64, max_msg_size=64 * 1024, timeout=timeout)
    client = Stream(ce, client=True, max_frame_size=max_frame, **common)  # type: ignore[arg-type]
    server = Stream(se, client=False, max_frame_size=reader_max or max_frame,
                    **common)  # type: ignore[arg-type]
    return client, server, ce, se


both = pytest.mark.parametrize("encrypted", [True, False], ids=["aes-gcm", "plaintext"])


# ---------------------------------------------------------------------------------- data


@both
def test_round_trip_both_ways_then_clean_end(encrypted: bool) -> None:
    c, s, _, _ = pair(encrypted)
    c.write(b"hello ")
    c.write(bytearray(b"stream"))
    c.close_write()
    assert s.read() == b"hello stream"
    assert s.read(10) == b""  # the end stays the end
    s.write(memoryview(b"pong"))
    s.close()
    assert c.read() == b"pong"
    c.close()
    assert c.closed and s.closed


@both
def test_large_write_is_split_into_bounded_frames(encrypted: bool) -> None:
    c, s, ce, _ = pair(encrypted, max_frame=64 * 1024)
    data = os.urandom(300 * 1024 + 7)
    got = bytearray()

    def reader() -> None:
        got.extend(s.read())

    t = threading.Thread(target=reader)
    t.start()
    assert c.write(data) == len(data)
    c.close_write()
    t.join(WAIT)
    assert bytes(got) == data
    sizes = [len(f) - (FRAME_OVERHEAD if encrypted else 1) for f in ce.outbox.sent]
    assert max(sizes) <= 64 * 1024 and len(sizes) == 5 + 1  # 5 data frames and the end


@both
def test_file_like_object(encrypted: bool) -> None:
    c, s, _, _ = pair(encrypted)
    data = os.urandom(200_000)
    shutil.copyfileobj(io.BytesIO(data), c)
    c.close_write()
    buffered = io.BufferedReader(s, buffer_size=4096)
    assert buffered.read(10) == data[:10]
    assert buffered.readinto(bytearray(5)) == 5
    assert buffered.read() == data[15:]
    assert s.readable() and s.writable() and not s.seekable()
    with pytest.raises(io.UnsupportedOperation):
        s.fileno()


def test_readinto_small_buffers_and_zero_length() -> None:
    c, s, _, _ = pair()
    c.write(b"abcdefgh")
    buf = bytearray(3)
    assert s.readinto(buf) == 3 and buf == b"abc"
    assert s.readinto(bytearray(0)) == 0
    assert s.read(2) == b"de"
    assert s.read(100) == b"fgh"
    assert c.write(b"") == 0


def test_one_reader_and_one_writer_thread_at_once_on_each_end() -> None:
    c, s, _, _ = pair(window=256 * 1024)
    up = os.urandom(3 << 20)
    down = os.urandom(2 << 20)
    results: dict[str, str] = {}

    def pump(stream: Stream, data: bytes) -> None:
        for i in range(0, len(data), 100_000):
            stream.write(data[i:i + 100_000])
        stream.close_write()

    def drain(stream: Stream, name: str) -> None:
        h = hashlib.sha256()
        buf = bytearray(65536)
        while n := stream.readinto(buf):
            h.update(buf[:n])
        results[name] = h.hexdigest()

    threads = [threading.Thread(target=pump, args=(c, up)), threading.Thread(target=pump, args=(s, down)),
               threading.Thread(target=drain, args=(s, "up")), threading.Thread(target=drain, args=(c, "down"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == {"up": hashlib.sha256(up).hexdigest(), "down": hashlib.sha256(down).hexdigest()}


def test_writer_blocks_while_the_peer_does_not_read() -> None:
    c, s, ce, _ = pair(window=64 * 1024, timeout=0.2)
    with pytest.raises(GossipTimeout):
        for _ in range(10):
            c.write(os.urandom(40 * 1024))
    assert ce.outbox.size <= 64 * 1024 + 40 * 1024 + FRAME_OVERHEAD  # bounded, not buffered
    with pytest.raises(ValueError):
        c.write(b"x")  # a write cut by its timeout leaves the stream unusable


def test_read_timeout_keeps_the_stream_usable() -> None:
    c, s, _, _ = pair(timeout=WAIT)
    s.settimeout(0.05)
    assert s.gettimeout() == 0.05
    with pytest.raises(GossipTimeout):
        s.read(1)
    c.write(b"late")
    s.settimeout(WAIT)
    assert s.read(4) == b"late"
    with pytest.raises(ValueError):
        s.settimeout(-1)


@both
def test_half_close_then_reply(encrypted: bool) -> None:
    c, s, _, _ = pair(encrypted)
    c.write(b"request")
    c.close_write()
    c.close_write()  # idempotent
    with pytest.raises(ValueError):
        c.write(b"more")
    assert s.read() == b"request"
    s.write(b"response")
    s.close()
    assert c.read() == b"response"


def test_closed_stream_refuses_io() -> None:
    c, _s, _, _ = pair()
    c.close()
    c.close()
    for op in (lambda: c.read(1), lambda: c.write(b"x"), lambda: c.readinto(bytearray(1)),
               c.close_write):
        with pytest.raises(ValueError):
            op()


def test_compression_applies_to_large_compressible_frames_only() -> None:
    c, s, ce, _ = pair(compressor=Lz4Compressor())
    text = b"gossip streams compress repetitive data " * 1000
    c.write(text)
    c.write(b"tiny" * 4)  # under compress_min_size
    random_data = os.urandom(10_000)
    c.write(random_data)  # does not get smaller
    c.disable_compression()
    assert not c.compression
    c.write(text)
    c.close_write()
    assert s.read() == text + b"tiny" * 4 + random_data + text
    sizes = [len(f) for f in ce.outbox.sent]
    assert sizes[0] < len(text) // 10
    assert sizes[1] == 16 + FRAME_OVERHEAD and sizes[2] == 10_000 + FRAME_OVERHEAD
    assert sizes[3] == len(text) + FRAME_OVERHEAD


def test_enable_compression_without_a_configured_compressor() -> None:
    c, s, ce, _ = pair()
    assert not c.compression
    c.enable_compression()
    c.write(b"a" * 10_000)
    c.close_write()
    assert s.read() == b"a" * 10_000
    assert len(ce.outbox.sent[0]) < 1000


# ---------------------------------------------------------------------------------- attacks


def tamper(index: int, change: Callable[[bytes], list[bytes]]) -> Hook:
    """A hook that applies ``change`` to the index-th frame sent and passes the others."""
    seen = [0]

    def hook(frame: bytes) -> list[bytes]:
        i = seen[0]
        seen[0] += 1
        return change(frame) if i == index else [frame]

    return hook


def flip(frame: bytes) -> list[bytes]:
    b = bytearray(frame)
    b[len(b) // 2] ^= 0x01
    return [bytes(b)]


def test_tampered_frame_raises_and_the_error_is_sticky() -> None:
    c, s, ce, _ = pair()
    ce.hook = tamper(1, flip)
    c.write(b"first")
    c.write(b"second frame")
    c.write(b"third")
    assert s.read(5) == b"first"
    with pytest.raises(AuthenticationError):
        s.read(5)
    with pytest.raises(AuthenticationError):
        s.read(5)


def test_flipped_kind_byte_raises() -> None:
    c, s, ce, _ = pair()
    ce.hook = tamper(0, lambda f: [bytes([4]) + f[1:]])  # DATA claimed to be END
    c.write(b"x" * 50)
    with pytest.raises(AuthenticationError):
        s.read(1)


@pytest.mark.parametrize("attack", ["replay", "drop", "reorder"])
def test_replayed_dropped_or_reordered_frames_raise(attack: str) -> None:
    c, s, ce, _ = pair()
    held: list[bytes] = []

    def hook(frame: bytes) -> list[bytes]:
        n = len(ce.outbox.sent) + len(held)
        if attack == "replay" and n == 1:
            return [frame, frame]
        if attack == "drop" and n == 1:
            held.append(frame)
            return []
        if attack == "reorder" and n == 1:
            held.append(frame)
            return []
        if attack == "reorder" and n == 2:
            return [frame, held.pop()]
        return [frame]

    ce.hook = hook
    for word in (b"zero", b"one!", b"two!", b"tri!"):
        c.write(word)
    got = []
    with pytest.raises(AuthenticationError):
        for _ in range(4):
            got.append(s.read(4))
    assert got == [b"zero", b"one!"][:len(got)] and got  # only authentic frames, in order


def test_injected_end_marker_raises() -> None:
    c, s, ce, _ = pair()
    ce.hook = tamper(1, lambda f: [bytes([4]) + os.urandom(16)])
    c.write(b"data")
    c.write(b"rest")
    assert s.read(4) == b"data"
    with pytest.raises(AuthenticationError):
        s.read()


@both
def test_stream_cut_short_raises_and_never_reads_as_a_clean_end(encrypted: bool) -> None:
    c, s, ce, _ = pair(encrypted)
    c.write(b"partial")
    ce.close_write()  # the connection ends, but no end marker was sent
    assert s.read(7) == b"partial"
    with pytest.raises(TransportError, match="without its end marker"):
        s.read(1)
    with pytest.raises(TransportError):
        s.read(1)


def test_frame_over_the_readers_limit_is_refused() -> None:
    c, s, _, _ = pair(max_frame=64 * 1024, reader_max=16 * 1024)
    # The reader's connection carries big frames, but its stream limit is smaller.
    c.write(os.urandom(20 * 1024))
    with pytest.raises(PacketTooLarge, match="over the limit"):
        s.read(1)


def test_abort_is_seen_by_the_peer_with_its_reason() -> None:
    c, s, _, _ = pair()
    c.write(b"some")
    s.write(b"partial answer")
    s.abort("handler gave up")
    s.abort("twice")  # idempotent
    assert s.closed
    assert c.read(14) == b"partial answer"
    with pytest.raises(RemoteHandlerError, match="handler gave up") as err:
        c.read(1)
    assert err.value.remote_message == "handler gave up"


def test_with_block_left_by_an_exception_aborts() -> None:
    c, s, _, _ = pair()
    with pytest.raises(KeyError):
        with c:
            c.write(b"half")
            raise KeyError("oops")
    assert s.read(4) == b"half"
    with pytest.raises(RemoteHandlerError, match="KeyError"):
        s.read(1)


# ---------------------------------------------------------------------------------- messages


@dataclasses.dataclass
class Block:
    seq: int
    text: str


def test_typed_messages_round_trip_and_are_checked() -> None:
    c, s, _, _ = pair()
    c.write_msg(300, Block(1, "one"))
    c.write_msg(301, {"other": True})
    c.write_msg(300, Block(2, "two"))
    assert s.read_msg(300, Block) == Block(1, "one")
    with pytest.raises(DecodeError, match="expected 300, got 301"):
        s.read_msg(300)
    assert s.read_msg(300) == {"seq": 2, "text": "two"}  # the mismatch consumed its message
    c.close_write()
    with pytest.raises(EOFError):
        s.read_msg(300)
    with pytest.raises(LocalProtocolError):
        c.write_msg(10, "internal type")
    with pytest.raises(LocalProtocolError):
        s.read_msg(63)


def test_message_limits() -> None:
    c, s, _, _ = pair()
    with pytest.raises(LocalProtocolError, match="over the limit"):
        c.write_msg(300, b"x" * (64 * 1024 + 1))
    c.write((300).to_bytes(2, "big") + (10**9).to_bytes(4, "big"))  # announces 1 GB
    with pytest.raises(PacketTooLarge):
        s.read_msg(300)


def test_message_cut_by_the_end_raises() -> None:
    c, s, _, _ = pair()
    c.write((300).to_bytes(2, "big") + (100).to_bytes(4, "big") + b"only part")
    c.close_write()
    with pytest.raises(DecodeError, match="ended inside"):
        s.read_msg(300)


def test_undecodable_message_raises_decode_error() -> None:
    c, s, _, _ = pair()
    c.write((300).to_bytes(2, "big") + (3).to_bytes(4, "big") + b"\xc1\xc1\xc1")
    with pytest.raises(DecodeError):
        s.read_msg(300)


# ---------------------------------------------------------------------------------- keys


def test_streams_with_different_keys_cannot_read_each_other() -> None:
    ce, se = ends()
    k1 = derive_stream_keys(b"k" * 16, b"c" * 16, b"s" * 16, b"")
    k2 = derive_stream_keys(b"k" * 16, b"c" * 16, b"S" * 16, b"")
    c = Stream(ce, client=True, keys=k1, codec=DEFAULT_CODEC, msg_type=200, timeout=WAIT)
    s = Stream(se, client=False, keys=k2, codec=DEFAULT_CODEC, msg_type=200, timeout=WAIT)
    c.write(b"secret")
    with pytest.raises(AuthenticationError):
        s.read(1)
