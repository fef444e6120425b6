"""Socket plumbing both socket-based transports use: one copy of each small helper.

- :class:`Waker`: a socketpair whose read end wakes a selector loop;
- :func:`shutdown`: ``shutdown()`` that never raises (it fails a blocked reader or writer at once);
- :func:`close_quietly`: ``close()`` that never raises;
- :func:`wait_fd`: block until a socket is readable or writable, or a timeout passes;
- :func:`set_buffer`: ask for a socket buffer size and return what the kernel granted;

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports.base`.
"""

from __future__ import annotations

import errno
import select
import socket


__all__ = ["Waker", "shutdown", "close_quietly", "wait_fd", "set_buffer"]


class Waker:
    """A socketpair whose read end wakes a selector loop (register :attr:`r` for reading)."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def wake(self) -> None:
        """Wake the loop (never blocks: a full pair means it is awake already)."""
        try:
            self.w.send(b"\0")
        except OSError:  # buffer full (already awake) or closed
            pass

    def drain(self) -> None:
        """Read every wake-up byte (the loop calls it when :attr:`r` is readable)."""
        try:
            while self.r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Close both ends."""
        self.r.close()
        self.w.close()


def shutdown(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    """``sock.shutdown(how)``, ignoring a socket that is gone (``None`` is ignored too)."""
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass


def close_quietly(sock: socket.socket | None) -> None:
    """``sock.close()``, ignoring errors (``None`` is ignored)."""
    if sock is None:
        return
    try:
        sock.close()
    except OSError:  # pragma: no cover - close() of a socket does not fail here
        pass


def wait_fd(sock: socket.socket, write: bool, timeout: float | None) -> None:
    """Block until ``sock`` is writable (or readable) or ``timeout`` passes.

    Raises:
        OSError: the socket is closed (``EBADF``).
    """
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, "socket is closed")
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
    else:  # pragma: no cover - platforms without poll()
        if write:
            select.select([], [fd], [fd], timeout)
        else:
            select.select([fd], [], [fd], timeout)


def set_buffer(sock: socket.socket, option: int, size: int) -> int:
    """Ask for a socket buffer of ``size`` bytes (``SO_RCVBUF``/``SO_SNDBUF``; 0 keeps the
    system's); return what the kernel granted."""
    if size > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:  # pragma: no cover - every platform we run on answers this
        return 0


