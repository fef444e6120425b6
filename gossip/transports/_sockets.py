"""Socket plumbing both socket-based transports use: one copy of each small helper.

- :class:`Waker`: a socketpair whose read end wakes a selector loop;
- :func:`shutdown`: ``shutdown()`` that never raises (it fails a blocked reader or writer at once);
- :func:`close_quietly`: ``close()`` that never raises;
- :func:`wait_fd`: block until a socket is readable or writable, or a timeout passes;
- :func:`set_buffer`: ask for a socket buffer size and return what the kernel granted;
- :func:`dial_socket` and :func:`listen_socket`: make the sockets of a dial and of a listener,
  through the hooks ``Config.dialer`` and ``Config.listener`` when they are set
  (:data:`DialHook`, :data:`ListenHook`: overlay networks, tests).

This module imports nothing from :mod:`gossip` but :mod:`gossip.transports.base`.
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable


__all__ = ["Waker", "shutdown", "close_quietly", "wait_fd", "set_buffer", "DialHook", "ListenHook",
           "dial_socket", "listen_socket"]

DialHook = Callable[[str, int, float], socket.socket]
"""``dialer(host, port, timeout)``: return a connected stream socket to ``host:port`` (``host``
an IP literal, or for a WebSocket URL its host as written), within ``timeout`` seconds; raise
``OSError`` if it cannot. The transport takes the socket over (and closes it)."""

ListenHook = Callable[[str, str, int], socket.socket]
"""``listener(kind, host, port)``: return a socket bound to ``host:port`` for ``kind``:
``"tcp"`` (a stream socket; the transport calls ``listen()``), ``"udp"`` (a datagram socket on the
TCP listener's port) or ``"websocket"`` (a stream socket); raise ``OSError`` if it cannot. Port
0 asks for any free port; the socket's ``getsockname()`` says which was taken."""


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




def _checked(sock: object, what: str) -> socket.socket:
    if not isinstance(sock, socket.socket):
        close = getattr(sock, "close", None)
        if callable(close):
            close()
        raise OSError(errno.EINVAL, f"the {what} hook returned {type(sock).__name__}, not a socket")
    return sock


def dial_socket(hook: DialHook | None, host: str, port: int, timeout: float) -> socket.socket:
    """Return a stream socket connected to ``host:port`` (``host`` an IP literal unless a hook
    dials), made by ``hook`` if given; left in blocking mode with ``timeout``.

    Raises:
        OSError: the connection failed, or the hook returned something that is not a socket.
    """
    if hook is not None:
        sock = _checked(hook(host, port, timeout), "dialer")
        sock.settimeout(timeout)
        return sock
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def listen_socket(hook: ListenHook | None, kind: str, family: int, host: str, port: int) -> socket.socket:
    """Return a socket bound to ``host:port`` for ``kind`` (``"tcp"``, ``"udp"``,
    ``"websocket"``), made by ``hook`` if given (else ``SO_REUSEADDR`` for stream sockets).

    Raises:
        OSError: the address could not be bound, or the hook returned something that is not
            a socket of the right type.
    """
    want = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    if hook is not None:
        sock = _checked(hook(kind, host, port), "listener")
        if sock.type != want:
            sock.close()
            raise OSError(errno.EINVAL, f"the listener hook returned a {sock.type.name} socket "
                                        f"for {kind}")
        return sock
    sock = socket.socket(family, want)
    try:
        if want == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
