"""Multicast discovery: announce this node on a LAN group and join those heard in the cluster.

:class:`MulticastDiscovery` owns one thread (``<prefix>-mcast``) and one
:class:`~gossip.transports.multicast.MulticastSocket`. Every ``multicast_interval`` (jittered by
up to a quarter) it sends an announcement (:mod:`gossip.announce`): its node id, its advertised
address, its cluster label and a tag drawn from the label and the cluster's key, authenticated
with the key when there is one. Between announcements it reads the group:

* its own announcements, and those of members it already holds alive or suspect, are skipped;
* an announcement of another cluster (label, key), one that is not authentic, malformed or
  stale, is dropped and counted (``discovery.refused_<reason>``);
* without a cluster key, nothing is authenticated, so an announcement is only believed if the
  address it names is on the host the datagram came from (``discovery.refused_source``);
* otherwise the node joins the announced address (``join(addr)``), at most once per
  ``multicast_interval`` per address, remembering at most ``multicast_max_peers`` addresses.

A join that succeeds sets :attr:`MulticastDiscovery.joined`.

This module imports the announcements, the multicast socket and the errors.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from ..address import host_of
from ..announce import MAX_SIZE, AnnouncementRefused, decode, encode
from ..counters import Counters
from ..errors import AddressError, ClusterClosed, GossipError
from ..transports.multicast import MulticastSocket

__all__ = ["MulticastDiscovery", "parse_multicast_seed"]


def parse_multicast_seed(seed: str, default_port: int) -> tuple[str, int]:
    """Return the group and port of a ``mcast://group[:port]`` seed.

    Raises:
        AddressError: not an IPv4 multicast group, or a bad port.
    """
    text = seed[8:].rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port)
    try:
        group = ipaddress.IPv4Address(host)
        port = int(port_text)
    except ValueError:
        group, port = ipaddress.IPv4Address("0.0.0.0"), -1
    if not group.is_multicast or not 0 <= port <= 65535:
        raise AddressError(f"{seed!r}: expected mcast://<IPv4 multicast group>[:port]")
    return str(group), port


class MulticastDiscovery:
    """Announces this node on a multicast group and joins the members of its cluster it hears.

    Args:
        sock: the group's socket (owned from now on: :meth:`close` closes it).
        node: this node's id (16 bytes).
        addr: returns this node's advertised address.
        label: the cluster label.
        keys: returns the cluster's keys, the primary first (empty without encryption).
        is_member: whether a node id is a member held alive or suspect.
        join: joins one address, raising :class:`~gossip.errors.GossipError` if it fails.
        interval: seconds between announcements (``multicast_interval``).
        max_peers: addresses remembered for the retry limit (``multicast_max_peers``).
        counters: where ``discovery.*`` counts go.
        rng: jitters the announcements.
        log: the engine's logger.
        prefix: the thread is named ``<prefix>-mcast``.
        clock: the wall clock (the announcements' times).
    """

    def __init__(self, sock: MulticastSocket, node: bytes, addr: Callable[[], str], label: str,
                 keys: Callable[[], Sequence[bytes]], is_member: Callable[[bytes], bool],
                 join: Callable[[str], object], *, interval: float, max_peers: int,
                 counters: Counters, rng: random.Random,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger], prefix: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.sock = sock
        self._node = node
        self._addr = addr
        self._label = label
        self._keys = keys
        self._is_member = is_member
        self._join = join
        self._interval = interval
        self._max_peers = max_peers
        self._counters = counters
        self._rng = rng
        self._log = log
        self._clock = clock
        self._stop = threading.Event()
        self._tried: dict[str, float] = {}  # address -> when it was last joined (monotonic)
        self.joined = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"{prefix}-mcast")

    @property
    def max_age(self) -> float:
        """How old an announcement may be: four intervals, and at least a minute of clock skew."""
        return max(60.0, 4 * self._interval)

    def start(self) -> None:
        """Start the thread (it announces at once)."""
        self.thread.start()

    def close(self) -> None:
        """Stop announcing and close the socket; the thread ends within its read timeout."""
        self._stop.set()
        self.sock.close()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        next_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_at:
                self.announce()
                next_at = now + self._interval * (0.75 + 0.25 * self._rng.random())
            try:
                got = self.sock.recv(min(0.25, max(0.0, next_at - now)))
            except OSError:
                return  # closed
            if got is not None:
                self.heard(*got)

    def announce(self) -> None:
        """Send one announcement (a failure is counted, never raised)."""
        keys = self._keys()
        try:
            data = encode(self._node, self._addr(), self._clock(), self._label,
                          keys[0] if keys else None)
            self.sock.send(data)
            self._counters.inc("discovery.announced")
        except (OSError, ValueError) as exc:
            self._counters.inc("discovery.send_errors")
            self._log.debug("multicast announcement not sent: %s", exc)

    def heard(self, data: bytes, src_ip: str) -> None:
        """Handle one datagram from the group (from ``src_ip``)."""
        counters = self._counters
        if len(data) > MAX_SIZE:
            counters.inc("discovery.refused_malformed")
            return
        try:
            ann = decode(data, self._label, self._keys(), self._clock(), self.max_age)
        except AnnouncementRefused as exc:
            counters.inc(f"discovery.refused_{exc.reason}")
            self._log.debug("multicast from %s: %s", src_ip, exc)
            return
        if ann.node == self._node:
            return  # our own, looped back
        counters.inc("discovery.heard")
        if not ann.keyed and host_of(ann.addr) != src_ip:
            # Unauthenticated: only a node speaking for its own host is believed.
            counters.inc("discovery.refused_source")
            return
        if self._is_member(ann.node):
            return
        now = time.monotonic()
        last = self._tried.get(ann.addr)
        if last is not None and now - last < self._interval:
            return
        self._tried.pop(ann.addr, None)
        self._tried[ann.addr] = now
        while len(self._tried) > self._max_peers:
            del self._tried[next(iter(self._tried))]
        counters.inc("discovery.joins")
        try:
            self._join(ann.addr)
        except ClusterClosed:
            self._stop.set()
            return
        except GossipError as exc:
            counters.inc("discovery.join_failures")
            self._log.info("multicast: could not join %s: %s", ann.addr, exc)
            return
        self._log.info("multicast: joined %s", ann.addr)
        self.joined.set()
