"""The socket transport's UDP side: datagrams out, and one reader thread that drains them in.

:class:`UdpSocket` writes datagrams at once or refuses them, and runs the loop of the
``gossip-<name>-udp-reader`` thread: on every wake-up it drains the socket (up to a burst of
datagrams per round) and hands the whole burst to ``emit`` in one call. The thread sleeps until a
datagram arrives or its waker is woken (the transport sets the stop event, then wakes it), with
no timeout: an idle node's reader wakes for nothing else. The socket's buffers are
enlarged (the kernel caps them; :attr:`UdpSocket.buffers` is what was granted), and on Linux the
kernel's own count of datagrams dropped for want of buffer space (``SO_RXQ_OVFL``) is read with
the datagrams, so a loss in the kernel is counted like any other (:attr:`UdpSocket.kernel_drops`).

It is given a counter, the callback of received batches, the stop event and a callable telling
whether the transport is closed; it never holds the transport.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`' base
and socket helpers.
"""

from __future__ import annotations

import logging
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from gossip.errors import ClusterClosed, MessageTooLarge, SendError, SendQueueFull
from gossip.transports._sockets import Waker, set_buffer
from gossip.transports.base import Incoming, format_addr

__all__ = ["UdpSocket", "UDP_RECV_SIZE", "ADDR_CACHE_MAX"]

_log = logging.getLogger("gossip.transports.socket")

UDP_RECV_SIZE: Final = 65535
"""The largest datagram read (and the upper bound of ``max_udp_size``)."""
ADDR_CACHE_MAX: Final = 4096
"""Entries of an address text cache before it is emptied."""
_UDP_BURST = 256  # datagrams read per wake-up before the loop looks at its stop flag again
# SO_RXQ_OVFL (Linux 2.6.33+): the kernel reports, with each datagram, how many it dropped.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40) if sys.platform.startswith("linux") else None
_OVFL_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0


class UdpSocket:
    """A bound, non-blocking UDP socket: :meth:`send`, and :meth:`run` for the reader thread.

    Args:
        sock: the bound socket.
        name: the node's name, for logs.
        max_udp_size: the largest datagram :meth:`send` accepts.
        count: ``count(name, n)`` adds to a transport counter.
        emit: called with each burst of received datagrams.
        stop: set when the transport closes.
        is_closed: True once the transport is closed.
    """

    def __init__(self, sock: socket.socket, *, name: str, max_udp_size: int,
                 count: Callable[[str, int], None], emit: Callable[[list[Incoming]], None],
                 stop: threading.Event, is_closed: Callable[[], bool]) -> None:
        self.sock = sock
        self._name = name
        self.max_udp_size = max_udp_size
        self._count = count
        self._emit = emit
        self._stop = stop
        self._is_closed = is_closed
        self.kernel_drops = 0
        self.buffers = (0, 0)  # SO_RCVBUF, SO_SNDBUF granted
        self.waker: Waker | None = None
        self._view = memoryview(bytearray(UDP_RECV_SIZE))  # the reader's only buffer
        self._addr_cache: dict[tuple[str, int], str] = {}

    def set_buffers(self, recv_size: int, send_size: int) -> None:
        """Ask for the socket's buffer sizes (0 keeps the system's) and for the kernel's count
        of dropped datagrams."""
        sock = self.sock
        self.buffers = (set_buffer(sock, socket.SO_RCVBUF, recv_size),
                        set_buffer(sock, socket.SO_SNDBUF, send_size))
        if _SO_RXQ_OVFL is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
            except OSError:  # pragma: no cover - kernels older than 2.6.33
                pass

    def send(self, key: str, ip: str, port: int, data: bytes) -> None:
        """Write one datagram to ``ip:port`` (``key`` names it in errors).

        Raises:
            MessageTooLarge: ``data`` is over ``max_udp_size``.
            SendQueueFull: the socket's send buffer is full.
            SendError: the write failed.
            ClusterClosed: the transport is closed.
        """
        if len(data) > self.max_udp_size:
            self._count("udp_too_large", 1)
            raise MessageTooLarge(
                f"datagram to {key} is {len(data)} bytes, over max_udp_size {self.max_udp_size}"
            )
        try:
            self.sock.sendto(data, (ip, port))
        except (BlockingIOError, InterruptedError):
            self._count("udp_send_buffer_full", 1)
            raise SendQueueFull(f"send to {key}: the UDP send buffer is full") from None
        except OSError as exc:
            self._count("send_errors", 1)
            if self._is_closed():
                raise ClusterClosed(f"transport {self._name} is closed") from None
            raise SendError(f"send to {key}: {exc}") from exc
        self._count("udp_sent", 1)

    def start_thread(self) -> threading.Thread:
        """Return the (unstarted) reader thread, with its waker and selector made."""
        self.waker = waker = Waker()
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "udp")
        sel.register(waker.r, selectors.EVENT_READ, "wake")
        return threading.Thread(target=self.run, args=(sel,), daemon=True,
                                name=f"gossip-{self._name}-udp-reader")

    def run(self, sel: selectors.BaseSelector) -> None:
        """The reader thread's loop, until the stop event is set (and the waker woken: the loop
        waits for a datagram or the waker, with no timeout)."""
        waker = self.waker
        assert waker is not None
        try:
            while not self._stop.is_set():
                try:
                    for key, _mask in sel.select():
                        if key.data == "wake":
                            waker.drain()
                            continue
                        self.read_burst()
                except Exception:
                    if self._stop.is_set():
                        break
                    self._count("reader_errors", 1)
                    _log.debug("%s ! udp reader error", self._name, exc_info=True)
        finally:
            sel.close()

    def source(self, src: tuple[str, int]) -> str:
        """Return ``src`` as text, from a small cache (formatting costs more than a lookup)."""
        cache = self._addr_cache
        text = cache.get(src)
        if text is None:
            if len(cache) >= ADDR_CACHE_MAX:
                cache.clear()
            text = cache[src] = format_addr(src[0], src[1])
        return text

    def read_burst(self) -> None:
        """Read what the socket holds (one burst) and hand it over in one call."""
        # Datagrams land in one reused buffer and are copied out at their size: receiving into
        # a fresh 64 KiB object per datagram and shrinking it fragments the heap (it grew by
        # megabytes under a flood).
        batch: list[Incoming] = []
        now = time.monotonic()
        view = self._view
        udp = self.sock
        recvfrom_into = udp.recvfrom_into
        src_text = self.source
        first = _SO_RXQ_OVFL is not None
        for _ in range(_UDP_BURST):
            try:
                if first:
                    # recvmsg once per burst brings the kernel's cumulative drop counter along.
                    first = False
                    n, anc, _flags, src = udp.recvmsg_into((view,), _OVFL_SPACE)
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                            self.kernel_drops = int.from_bytes(value[:4], sys.byteorder)
                else:
                    n, src = recvfrom_into(view)
                data = bytes(view[:n])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if self._stop.is_set():
                    break
                # e.g. ECONNREFUSED from an earlier ICMP error; keep reading
                self._count("reader_errors", 1)
                _log.debug("%s ! udp recvfrom failed", self._name, exc_info=True)
                continue
            batch.append(Incoming(data, src_text(src), False, None, now, "udp"))
        if batch:
            self._count("udp_received", len(batch))
            self._emit(batch)
