"""Request/reply exchanges of the WebSocket transport, each on a connection dedicated to it.

:class:`Requests` serves :meth:`WebSocketTransport.request`: the request is one binary message
on a connection of its own (channel ``frames`` to the peer, kind ``request`` here), whose next
message is the reply. After a clean exchange the connection waits in a small idle pool per URL
for the next request (the sweeper closes it once idle for ``idle_timeout``); one that died in the
pool is replaced by one new dial.

It is given a dialer and the handshake wait; it never holds the transport.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from gossip.errors import SendError
from gossip.transports.base import Deadline
from gossip.transports.websocket.connection import SocketLink
from gossip.transports.websocket.link import CLOSED, OPEN, Link

__all__ = ["Requests"]

IDLE_PER_ADDR: Final = 4  # idle request connections kept per URL


class Requests:
    """Request connections of one WebSocket transport; see the module docstring.

    Args:
        dial: dials a new request connection to a URL (registered and started).
        wait_open: waits until a link's handshake finished (raises ConnectError).
        is_closed: True once the transport is closed.
    """

    def __init__(self, *, dial: Callable[[str], SocketLink],
                 wait_open: Callable[[Link, str, Deadline], None],
                 is_closed: Callable[[], bool]) -> None:
        self._dial = dial
        self._wait_open = wait_open
        self._is_closed = is_closed
        self._lock = threading.Lock()
        self._idle: dict[str, list[SocketLink]] = {}

    def request(self, addr: str, data: bytes, deadline: Deadline) -> bytes:
        """Write ``data`` to ``addr`` and return the single reply.

        Raises:
            GossipTimeout: no reply before ``deadline``.
            ConnectError, SendError, ClusterClosed: the exchange failed.
        """
        what = f"request to {addr}"
        for attempt in range(2):
            link, reused = self._take(addr)
            clean = False
            try:
                self._wait_open(link, what, deadline)
                with link.lock:
                    link.mailbox.clear()
                    link.expect_reply = True
                    link.unclean = False
                try:
                    link.put(data, deadline, what)
                except SendError:
                    if reused and not attempt:
                        continue
                    raise
                with link.lock:
                    while not link.mailbox:
                        if link.state is CLOSED:
                            if reused and not attempt:
                                break
                            raise SendError(f"{what}: connection closed before the reply "
                                            f"({link.error})")
                        left = deadline.remaining(what)
                        link.readable.wait(left)
                    if not link.mailbox:
                        continue  # a reused connection died before answering: dial once more
                    reply = link.mailbox.popleft()
                    link.expect_reply = False
                    clean = not link.unclean and link.state is OPEN
                return reply
            finally:
                self._give_back(addr, link, clean)
        raise SendError(f"{what}: no connection")  # pragma: no cover - the loop returns or raises

    def _take(self, addr: str) -> tuple[SocketLink, bool]:
        with self._lock:
            idle = self._idle.get(addr)
            while idle:
                link = idle.pop()
                if not idle:
                    del self._idle[addr]
                if link.state is OPEN and not link.closing:
                    return link, True
                idle = self._idle.get(addr)
        return self._dial(addr), False

    def _give_back(self, addr: str, link: SocketLink, clean: bool) -> None:
        with self._lock:
            keep = (clean and not self._is_closed() and link.state is OPEN
                    and len(self._idle.get(addr, ())) < IDLE_PER_ADDR)
            if keep:
                link.expect_reply = False
                self._idle.setdefault(addr, []).append(link)
        if not keep:
            link.abort("request connection released")

    def forget(self, link: Link) -> None:
        """A connection closed: it leaves the idle pool."""
        with self._lock:
            idle = self._idle.get(link.peer_addr)
            if idle and link in idle:
                idle.remove(link)
                if not idle:
                    del self._idle[link.peer_addr]

    def idle(self) -> set[Link]:
        """The connections waiting in the idle pool now."""
        with self._lock:
            return {link for links in self._idle.values() for link in links}
