"""memberlist's framing on sockets: UDP datagrams and one-message TCP streams on one port.

A datagram out: the message (compound, say), LZW-compressed when asked and smaller, a CRC
prefix for a peer of protocol 5, encrypted with the primary key (the label as associated
data), the label header in front. A datagram in: the same undone, refused (and counted under
``bad_packets.<Error>``) if its label is not ours or no key opens it.

A stream carries one message, as memberlist's: the dialer writes the label header, then the
message (encrypted as ``10 | length | sealed``; a user message as ``8 | {UserMsgLen} |
payload``); a push/pull or a ping is answered on the same connection, then it closes. Push/pull
answers go to the receive path in a reply envelope (:func:`.profile.envelope`). Every stream
is bounded: memberlist's 20 MiB push state and user message, its 40 MiB decompression, its
``TCPTimeout`` (``tcp_timeout``), and at most ``max_connections`` served at once.

This module is the wire's I/O: sockets and threads, no protocol decisions.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from ..address import format_host_port, split_ip_port
from ..errors import (
    ClusterClosed,
    ConnectError,
    DecodeError,
    EncryptionError,
    GossipError,
    RemoteProtocolError,
    SendError,
    TransportError,
)
from ..transports.base import Incoming, OnPackets, OnStream, StreamConn
from . import codec as ml
from .profile import REPLY_ENVELOPE, envelope, expects_answer, is_stream_type
from .security import (
    ENCRYPT_MSG,
    HAS_LABEL,
    MLKeyring,
    check_label,
    encrypt,
    decrypt,
    label_header,
    remove_label,
    stream_decrypt,
    stream_encrypt,
    stream_length,
)

__all__ = ["MemberlistTransport"]

logger = logging.getLogger("gossip.memberlist")

_MAX_DATAGRAM = 65536


class _ReplyConn:
    """The accepted stream a request came on: its answer is written back, framed."""

    def __init__(self, sock: socket.socket, peer: str, frame: Callable[[bytes], bytes]) -> None:
        self._sock = sock
        self._peer = peer
        self._frame = frame
        self.answered = False

    def send_frame(self, data: bytes, timeout: float | None = None) -> None:
        """Write the answer (framed as a stream message)."""
        try:
            self._sock.sendall(self._frame(data))
            self.answered = True
        except OSError as exc:
            raise SendError(f"cannot answer {self._peer}: {exc}") from exc

    def pause_reading(self) -> None:
        """Nothing to pause: one message per stream."""

    def resume_reading(self) -> None:
        """Nothing to resume."""

    def mark_trusted(self) -> None:
        """No pre-authentication state on this wire."""

    def mark_rejected(self) -> None:
        """No pre-authentication state on this wire."""

    def close(self) -> None:
        """Closed by the transport once the message is handled."""

    @property
    def peer(self) -> str:
        """The remote address."""
        return self._peer


class MemberlistTransport:
    """UDP and TCP on one port, framed as memberlist frames them.

    Args:
        bind_addr: ``ip:port`` (port 0 picks a free one for both).
        keyring: the keys (None: no encryption).
        label: the cluster label (empty: none).
        encryption_version: 0 (padded) or 1.
        crc_for: ``crc_for(addr)``: whether datagrams to ``addr`` carry a CRC.
        compress: compress outgoing messages (LZW) when it makes them smaller.
        require_encryption: refuse plain datagrams and streams when a keyring is set.
        tcp_timeout: the deadline of a whole stream exchange (memberlist's ``TCPTimeout``).
        max_connections: streams served at once; more are closed unread.
        name: for thread names.
    """

    def __init__(self, bind_addr: str, *, keyring: MLKeyring | None = None, label: str = "",
                 encryption_version: int = 1, crc_for: Callable[[str], bool] | None = None,
                 compress: bool = False, require_encryption: bool = True,
                 tcp_timeout: float = 10.0, max_connections: int = 128, name: str = "") -> None:
        self._bind = bind_addr
        self._keyring = keyring
        self._label = label.encode("utf-8")
        self._label_header = label_header(self._label)
        self._version = encryption_version
        self._crc_for = crc_for or (lambda addr: False)
        self._compress = compress
        self._require = require_encryption and keyring is not None
        self._timeout = tcp_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._name = name or "ml"
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._on_packets: OnPackets | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._stats: dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self._local = ""

    # ------------------------------------------------------------------ interface

    def start(self, on_packets: OnPackets, on_stream: OnStream | None = None) -> None:
        """Bind UDP and TCP on one port and start the reader threads."""
        if self._closed:
            raise ClusterClosed("the transport is closed")
        host, port, version = split_ip_port(self._bind)
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        for _ in range(16):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((host, port))
                real = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, real))
                tcp.listen(128)
            except OSError as exc:
                udp.close()
                tcp.close()
                if port:
                    raise TransportError(f"cannot bind {self._bind}: {exc}") from exc
                continue
            break
        else:
            raise TransportError(f"cannot bind UDP and TCP on one free port of {host}")
        self._udp, self._tcp = udp, tcp
        self._local = format_host_port(host, real)
        self._on_packets = on_packets
        for target, what in ((self._udp_loop, "udp"), (self._accept_loop, "accept")):
            t = threading.Thread(target=target, name=f"gossip-{self._name}-ml-{what}", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def local_addr(self) -> str:
        """The bound ``ip:port``."""
        return self._local

    @property
    def stats(self) -> dict[str, int]:
        """The transport's counters."""
        with self._stats_lock:
            return dict(self._stats)

    def link_kind(self, addr: str, reliable: bool) -> str:
        """``tcp`` for stream messages, ``udp`` for datagrams."""
        return "tcp" if reliable else "udp"

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        """Send a datagram, or one stream message (answered on its stream if a push/pull or
        a ping: the answer goes to the receive path)."""
        if self._closed:
            raise ClusterClosed("the transport is closed")
        if reliable and is_stream_type(data):
            self._exchange(addr, data, timeout or self._timeout)
            return
        self._datagram(addr, data)

    def request(self, addr: str, data: bytes, timeout: float) -> bytes:
        """Not carried: memberlist's wire has no request/reply."""
        raise GossipError("memberlist's wire carries no request/reply (wire_protocol='memberlist')")

    def dial_stream(self, addr: str, timeout: float) -> StreamConn:
        """Not carried: memberlist's wire has no streams."""
        raise GossipError("memberlist's wire carries no streams (wire_protocol='memberlist')")

    def close(self) -> None:
        """Close both sockets and join the reader threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for s in (self._udp, self._tcp):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(2.0)

    # ------------------------------------------------------------------ framing

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n

    def seal_datagram(self, addr: str, data: bytes) -> bytes:
        """Frame a message as a datagram to ``addr``."""
        if self._compress:
            packed = ml.compress(data)
            if len(packed) < len(data):
                data = packed
        if self._crc_for(addr):
            data = ml.with_crc(data)
        if self._keyring is not None:
            data = encrypt(self._keyring, self._version, data, self._label)
        return self._label_header + data

    def open_datagram(self, data: bytes) -> bytes:
        """Undo a datagram's label and encryption.

        Raises:
            RemoteProtocolError: another label, no key opens it, or plain when encryption
                is required.
        """
        label, rest = remove_label(data)
        check_label(label, self._label)
        if self._keyring is not None:
            try:
                rest = decrypt(self._keyring, rest, self._label)
            except EncryptionError:
                if self._require:
                    raise
        if not rest or rest[0] == REPLY_ENVELOPE:
            raise DecodeError("empty datagram or unknown message type")
        return rest

    def frame_stream(self, data: bytes) -> bytes:
        """Frame a message for a stream (without the label header)."""
        if data and data[0] == ml.MsgType.USER:
            data = ml.user_stream(data[1:])
        elif data and data[0] == ml.MsgType.COMPOUND:
            # A stream carries one message: an ack's piggybacked updates stay behind.
            parts = ml.split_compound(data[1:])
            data = parts[0] if parts else data
        if self._compress:
            data = ml.compress(data)
        if self._keyring is not None:
            data = stream_encrypt(self._keyring, self._version, data, self._label)
        return data

    def read_stream(self, r: ml.StreamReader, labelled: bool) -> tuple[ml.Message, int]:
        """Read one message from a stream (label header first if ``labelled``)."""
        first = r.read(1)[0]
        if labelled:
            label = b""
            if first == HAS_LABEL:
                size = r.read(1)[0]
                if size < 1:
                    raise DecodeError("label header cannot be empty when present")
                label = r.read(size)
                first = r.read(1)[0]
            check_label(label, self._label)
        if first == ENCRYPT_MSG:
            if self._keyring is None:
                raise EncryptionError("remote state is encrypted and encryption is not configured")
            head = bytes((first,)) + r.read(4)
            plain = stream_decrypt(self._keyring, head, r.read(stream_length(head)), self._label)
            return ml.read_stream(ml.StreamReader(plain, limit=ml.MAX_DECOMPRESSED))
        if self._require:
            raise EncryptionError("encryption is configured but the remote state is not encrypted")
        r.unread(1)
        return ml.read_stream(r)

    # ------------------------------------------------------------------ threads

    def _deliver(self, data: bytes, src: str, reliable: bool, conn: _ReplyConn | None) -> None:
        cb = self._on_packets
        if cb is not None and not self._closed:
            cb([Incoming(data, src, reliable, conn, time.monotonic(), "tcp" if reliable else "udp")])

    def _udp_loop(self) -> None:
        sock = self._udp
        assert sock is not None
        while not self._closed:
            try:
                data, src = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:
                if self._closed:
                    return
                continue
            if self._closed or src is None:
                return
            addr = format_host_port(src[0], src[1])
            try:
                plain = self.open_datagram(data)
            except RemoteProtocolError as exc:
                self._count(f"bad_packets.{type(exc).__name__}")
                continue
            try:
                self._deliver(plain, addr, False, None)
            except Exception:  # the engine's bug must not kill the reader
                self._count("errors.deliver")
                logger.exception("bug: delivering a datagram failed")

    def _accept_loop(self) -> None:
        sock = self._tcp
        assert sock is not None
        while not self._closed:
            try:
                conn, src = sock.accept()
            except OSError:
                if self._closed:
                    return
                continue
            if not self._slots.acquire(blocking=False):
                self._count("dropped.stream_limit")
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn, format_host_port(src[0], src[1])),
                                 name=f"gossip-{self._name}-ml-stream", daemon=True)
            t.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        try:
            conn.settimeout(self._timeout)
            r = ml.StreamReader(more=conn.recv)
            msg, t = self.read_stream(r, True)
            if t not in (ml.MsgType.PUSH_PULL, ml.MsgType.PING, ml.MsgType.USER):
                self._count("dropped.stream_type")
                return
            reply = _ReplyConn(conn, peer, self.frame_stream)
            self._deliver(ml.encode(msg), peer, True, reply)
            self._count("streams_in")
        except RemoteProtocolError as exc:
            self._count(f"bad_packets.{type(exc).__name__}")
            try:
                conn.sendall(self.frame_stream(ml.encode(ml.Err(str(exc)))))
            except OSError:
                pass
        except OSError:
            self._count("errors.stream_io")
        except Exception:
            self._count("errors.stream")
            logger.exception("bug: serving a stream from %s failed", peer)
        finally:
            conn.close()
            self._slots.release()

    def _datagram(self, addr: str, data: bytes) -> None:
        sock = self._udp
        if sock is None:
            raise ClusterClosed("the transport is not started")
        host, port, _ = split_ip_port(addr)
        try:
            sock.sendto(self.seal_datagram(addr, data), (host, port))
        except OSError as exc:
            raise SendError(f"cannot send to {addr}: {exc}") from exc

    def _exchange(self, addr: str, data: bytes, timeout: float) -> None:
        host, port, _ = split_ip_port(addr)
        try:
            sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {addr}: {exc}") from exc
        with sock:
            try:
                sock.settimeout(timeout)
                sock.sendall(self._label_header + self.frame_stream(data))
                if not expects_answer(data):
                    return
                msg, t = self.read_stream(ml.StreamReader(more=sock.recv), False)
            except OSError as exc:
                raise SendError(f"stream to {addr} failed: {exc}") from exc
            except RemoteProtocolError as exc:
                self._count(f"bad_packets.{type(exc).__name__}")
                raise SendError(f"bad answer from {addr}: {exc}") from exc
        answer = ml.encode(msg)
        if data[0] == ml.MsgType.PUSH_PULL:
            answer = envelope(data, answer)
        self._deliver(answer, addr, True, None)
