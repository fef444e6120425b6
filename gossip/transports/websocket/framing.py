"""Bytes on our own WebSocket sockets: binary frames out, reads in, gathered writes.

websockets' sans-I/O protocol parses what we read and frames control messages; on our own
connections, where no extension is ever negotiated, binary messages are framed here
(:func:`binary_frame`, RFC 6455 section 5.2): the same bytes as ``Frame.serialize``, without its
copies of the payload, and with the payload left apart so that a large one is never copied to
be joined. :func:`send_all` writes header and payload chunks with as few system calls as
possible (one ``sendmsg`` on a plain socket), and :class:`SocketReader` reads into one reused
buffer, draining the TLS records already there in one call.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
from typing import Final, cast

from websockets.utils import apply_mask

try:  # the C version websockets ships (the pure Python one above is its fallback)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - platforms without the extension
    pass

__all__ = ["binary_frame", "send_all", "SocketReader", "Chunk", "WRITE_CHUNK", "BIG_WRITE"]

Chunk = bytes | bytearray | memoryview
"""Bytes on their way to a socket."""

WRITE_CHUNK: Final = 1024 * 1024  # small writes are joined into one system call up to this much
BIG_WRITE: Final = 64 * 1024  # writes at least this large go out alone (no copy into a join)
_JOIN_BELOW = 4096  # a frame this small goes out as one piece, header and payload joined
_IOV_MAX = 512
_HEAD_SHORT = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def binary_frame(data: Chunk, mask: bool) -> list[Chunk]:
    """Encode one unfragmented binary message (RFC 6455, section 5.2), as header and payload.

    ``mask`` is True on a client's connection (a client masks every frame it sends).
    """
    n = len(data)
    second = 0x80 if mask else 0
    if n < 126:
        head = _HEAD_SHORT.pack(0x82, second | n)
    elif n < 65536:
        head = _HEAD_16.pack(0x82, second | 126, n)
    else:
        head = _HEAD_64.pack(0x82, second | 127, n)
    payload: Chunk = data
    if mask:
        key = os.urandom(4)
        head += key
        payload = apply_mask(data, key)
    if n < _JOIN_BELOW:
        return [head + payload]
    return [head, payload]


def send_all(sock: socket.socket, chunks: list[Chunk]) -> None:
    """Write ``chunks`` in order with as few system calls as possible, copying nothing.

    A plain socket gathers them (``sendmsg``); a TLS socket joins the small ones and writes
    the large ones alone (it cannot gather). The socket is blocking.

    Raises:
        OSError: the write failed.
    """
    if isinstance(sock, ssl.SSLSocket):
        parts: list[Chunk] = []
        size = 0
        for chunk in chunks:
            if len(chunk) >= BIG_WRITE:
                # A large payload goes with what precedes it (its header): a TLS record of
                # its own for a few header bytes costs more than the copy.
                parts.append(chunk)
                sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
                parts, size = [], 0
                continue
            parts.append(chunk)
            size += len(chunk)
            if size >= WRITE_CHUNK:
                sock.sendall(b"".join(parts))
                parts, size = [], 0
        if parts:
            sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
        return
    i = 0
    while i < len(chunks):
        batch = chunks[i:i + _IOV_MAX]
        sent = sock.sendmsg(batch)
        total = sum(len(c) for c in batch)
        if sent == total:
            i += len(batch)
            continue
        # A partial write (a signal, a full buffer): skip what went, resume inside a chunk.
        for chunk in batch:
            if sent >= len(chunk):
                sent -= len(chunk)
                i += 1
                continue
            chunks[i] = memoryview(chunk)[sent:]
            break


class SocketReader:
    """Reads a blocking socket into one reused buffer.

    ``socket.recv(n)`` allocates ``n`` bytes and shrinks them to what arrived, and a TLS socket
    hands out at most one record (16 KiB) per read: here one call drains the records already
    there into the buffer and returns a view of exactly what was read, valid until the next
    call. Fewer and smaller allocations (large short-lived ones cost page faults), fewer trips
    around the reader's loop.
    """

    __slots__ = ("_sock", "_view", "_poll", "_tls")

    def __init__(self, sock: socket.socket, size: int) -> None:
        self._sock = sock
        self._view = memoryview(bytearray(size))
        self._tls = isinstance(sock, ssl.SSLSocket) and hasattr(select, "poll")
        self._poll = select.poll() if self._tls else None
        if self._poll is not None:
            self._poll.register(sock.fileno(), select.POLLIN)

    def read(self) -> memoryview:
        """Block until bytes arrive; return them (empty at the end of the stream).

        Raises:
            OSError: the read failed (the socket was shut down, reset...).
        """
        sock = self._sock
        view = self._view
        n = len(view)
        got = sock.recv_into(view, n)
        if self._tls and 0 < got < n:
            assert self._poll is not None
            poll = self._poll.poll
            ssl_sock = cast(ssl.SSLSocket, sock)
            while got < n and (ssl_sock.pending() or poll(0)):
                more = sock.recv_into(view[got:], n - got)
                if not more:
                    break  # the end of the stream: the next read reports it
                got += more
        return view[:got]
