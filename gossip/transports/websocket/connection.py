"""A gossip WebSocket connection on our own socket, driven by websockets' sans-I/O protocol.

:class:`SocketLink` is a connection this transport dialed or accepted itself. websockets'
documented sans-I/O layer (:class:`websockets.client.ClientProtocol`,
:class:`websockets.server.ServerProtocol`) does the protocol: the handshake, parsing, control
frames, the closing handshake and their errors. We do the I/O, on two threads per connection,
each named ``gossip-<node>-ws-<n>[-read]`` and joined when the connection ends:

- the *writer* (``ws-<n>``) opens the connection first, alone, so a TLS connection is never read
  and written at once while its handshake settles: a dial connects (TCP, TLS, the bearer
  token's challenge on a connection of its own, then the WebSocket handshake); an accepted
  connection finishes TLS and answers the HTTP request after screening it
  (:class:`~.admission.Screen`). It then writes whatever is queued: it takes every admitted
  message at once, frames binary ones itself (:func:`~.framing.binary_frame`) behind what the
  protocol queued (a pong, a close), and writes them in one system call per group, releasing
  buffer room to the senders after each group;
- the *reader* (``ws-<n>-read``) reads into one reused buffer (:class:`~.framing.SocketReader`),
  feeds the protocol (``receive_data``), queues what the protocol answers (``data_to_send``) for
  the writer, and hands every message of one read to the link as one batch; it waits before
  its next read while reading is paused.

One lock guards the protocol object (the reader feeds it, the writer and the sweeper send
through it); the link's own lock guards its buffers and the bytes queued for the socket, so the
protocol's output and our frames reach the socket in the order they were made.

This module imports nothing from :mod:`gossip` but the errors and :mod:`gossip.transports`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLIENT
from websockets.protocol import OPEN as WS_OPEN
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI

from gossip.errors import ConnectError, GossipError, GossipTimeout
from gossip.transports import _wsauth as wsauth
from gossip.transports._sockets import DialHook, close_quietly, dial_socket, shutdown
from gossip.transports.base import Deadline
from gossip.transports.websocket.admission import CHANNEL_HEADER, FRAMES, STREAM, Refusal
from gossip.transports.websocket.framing import Chunk, SocketReader, binary_frame, send_all
from gossip.transports.websocket.link import CLOSED, OPEN, Item, Link, LinkEnv

__all__ = ["SocketLink", "SocketEnv", "USER_AGENT", "set_max_size"]

_log = logging.getLogger("gossip.transports.websocket")
_wslog = logging.getLogger("gossip.transports.websocket.protocol")

USER_AGENT: Final = "gossip"
READ_SIZE: Final = 256 * 1024  # one read's buffer
CLOSE_TIMEOUT: Final = 1.0  # how long a closing handshake waits for the peer
JOIN_TIMEOUT: Final = 5.0
_GROUP = 256 * 1024  # the writer releases buffer room after each group of this many bytes
BINARY, TEXT, CONT = Opcode.BINARY, Opcode.TEXT, Opcode.CONT

ScreenFn = Callable[[str, Any, bool], tuple[str, Refusal | None, bool]]
"""Screens an accepted handshake: ``(path, headers, known_proved) -> (channel, refusal, proved)``."""


def set_max_size(protocol: Protocol, size: int) -> None:
    """Set the largest message ``protocol`` accepts from now on (the limit its constructor's
    ``max_size`` set: ``max_message_size`` from websockets 16, ``max_size`` before)."""
    name = "max_message_size" if hasattr(protocol, "max_message_size") else "max_size"
    setattr(protocol, name, size)


def peer_close_reason(protocol: Protocol) -> str:
    """Describe the close frame the peer sent (``""`` if none)."""
    rcvd = protocol.close_rcvd
    if rcvd is None:
        return ""
    return f"closed by the peer ({int(rcvd.code)} {rcvd.reason})".replace(" )", ")")


@dataclass(frozen=True, slots=True)
class SocketEnv:
    """What a :class:`SocketLink` needs beyond :class:`~.link.LinkEnv`: dialing and accepting.

    Attributes:
        dial_timeout: seconds allowed for the TCP connect of a dial.
        server_ssl: the listener's TLS context (``wss://``), or None.
        client_ssl: returns the TLS context of ``wss://`` dials.
        bearer_token: the token proved on every dial (``""``: none).
        screen: screens an accepted handshake (:class:`~.admission.Screen`).
        dial_failed: a dial to an address failed, and why.
        dialer: makes the TCP socket of a dial (``Config.dialer``), or None.
    """

    dial_timeout: float
    server_ssl: ssl.SSLContext | None
    client_ssl: Callable[[], ssl.SSLContext]
    bearer_token: str
    screen: ScreenFn
    dial_failed: Callable[[str, str], None]
    dialer: DialHook | None = None


class SocketLink(Link):
    """A connection we dialed or accepted ourselves; see the module docstring."""

    def __init__(self, env: LinkEnv, senv: SocketEnv, peer: str, kind: str, accepted: bool, *,
                 sock: socket.socket | None = None, ip: str = "", uri: WebSocketURI | None = None,
                 prefix: bytes = b"") -> None:
        super().__init__(env, peer, kind, accepted, ip)
        self.senv = senv
        self.sock = sock
        self.prefix = prefix  # bytes read from an accepted socket before its thread started
        self.uri = uri
        self.proto: ClientProtocol | ServerProtocol | None = None
        self.proto_lock = threading.Lock()
        self.wire: deque[Chunk] = deque()  # for the writer (under the link's lock)
        self.frag: list[bytes] | None = None  # reader thread only
        self.frag_text = False
        self.close_sent = 0.0
        self.ping_sent = 0.0
        self.partial_since = 0.0  # a message has been arriving since (reader thread)
        self.outcome_counted = False  # an accepted handshake's failure or timeout was counted
        self._reader: SocketReader | None = None
        self.thread = threading.Thread(target=self._run, name=f"gossip-{env.name}-ws-{self.lid}",
                                       daemon=True)
        self.read_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread (which opens the connection)."""
        self.thread.start()

    # ---------------------------------------------------------------- opening (writer thread)

    def _run(self) -> None:
        try:
            opened = self._open_accepted() if self.accepted else self._open_dialed()
        except Exception as exc:  # every failure to open ends here (reported, then torn down)
            self._open_failed(exc)
            self._teardown()
            return
        if not opened:
            self._teardown()
            return
        self.read_thread = threading.Thread(target=self._read_loop, daemon=True,
                                            name=f"{self.thread.name}-read")
        self.read_thread.start()
        try:
            self._write_loop()
        except Exception:
            self.env.count("ws_writer_errors", 1)
            _log.error("%s ! writer of %s failed", self.env.name, self.peer_addr, exc_info=True)
        finally:
            self._teardown()

    def _connect(self, u: WebSocketURI, deadline: Deadline, what: str) -> socket.socket:
        """Open the TCP connection (and TLS) of a dial; it is :attr:`sock` until replaced."""
        left = deadline.remaining(what)
        assert left is not None
        timeout = min(self.senv.dial_timeout, left)
        hook = self.senv.dialer
        if hook is None:
            sock = socket.create_connection((u.host, u.port), timeout=timeout)
        else:
            sock = dial_socket(hook, u.host, u.port, timeout)
        self.sock = sock
        if self.state is CLOSED:
            raise ConnectError(f"{what}: the transport is closing")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            if hook is None:
                raise  # a hook's socket (a Unix socket, a tunnel) may not take TCP options
        if u.secure:
            sock.settimeout(deadline.remaining(what))
            sock = self.senv.client_ssl().wrap_socket(sock, server_hostname=u.host)
            self.sock = sock
        return sock

    def _handshake_event(self, sock: socket.socket, reader: SocketReader,
                         proto: ClientProtocol | ServerProtocol, deadline: Deadline,
                         what: str) -> tuple[Any, list[Any]]:
        """Read until the protocol yields the handshake's request or response; return it and
        the events that came with it (None if the handshake failed or the peer closed)."""
        while True:
            events = proto.events_received()
            if events:
                return events[0], events[1:]
            if proto.handshake_exc is not None:
                return None, []
            sock.settimeout(deadline.remaining(what))
            data = reader.read()
            if data:
                proto.receive_data(bytes(data))
            else:
                proto.receive_eof()
                events = proto.events_received()
                return (events[0], events[1:]) if events else (None, [])

    def _challenge(self, u: WebSocketURI, deadline: Deadline, what: str, channel: str) -> str:
        """The first request of a dial with a bearer token: have the listener prove it holds
        the token, then return the ``Gossip-Auth`` value that proves we do.

        Nothing but a fresh random nonce goes out before the listener's proof is checked.

        Raises:
            ConnectError: the listener did not prove the token (counted ``ws_server_unproven``)
                or the connection failed.
            InvalidStatus: the listener answered neither 401 nor 101.
        """
        token = self.senv.bearer_token
        cnonce = wsauth.new_client_nonce()
        sock = self._connect(u, deadline, what)
        try:
            protocol = ClientProtocol(u, max_size=self.max_in, logger=_wslog)
            request = protocol.connect()
            request.headers["User-Agent"] = USER_AGENT
            request.headers[wsauth.CHALLENGE_HEADER] = cnonce
            if channel == STREAM:
                request.headers[CHANNEL_HEADER] = STREAM
            protocol.send_request(request)
            sock.sendall(b"".join(protocol.data_to_send()))
            response, _rest = self._handshake_event(sock, SocketReader(sock, 65536), protocol,
                                                    deadline, what)
            if not isinstance(response, Response):
                raise ConnectError(f"{what}: the connection closed during the handshake")
        finally:
            shutdown(sock)
            close_quietly(sock)
            self.sock = None
        if response.status_code == 101:
            self.env.count("ws_server_unproven", 1)
            raise ConnectError(
                f"{what}: the server accepted without proving it holds the bearer token (it has "
                "none, or it is not a node of this cluster)")
        if response.status_code != 401:
            raise InvalidStatus(response)
        challenge = wsauth.parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            raise InvalidStatus(response)
        snonce, proof = challenge
        if not wsauth.verify(wsauth.server_proof(token, cnonce, snonce), proof):
            self.env.count("ws_server_unproven", 1)
            raise ConnectError(
                f"{what}: the server did not prove it holds the bearer token (another token, "
                "or not a node of this cluster); nothing was sent to it")
        return wsauth.auth_value(snonce, cnonce, wsauth.client_proof(token, cnonce, snonce, channel))

    def _open_dialed(self) -> bool:
        u = self.uri
        assert u is not None
        what = f"connect to {self.peer_addr}"
        deadline = Deadline(self.env.handshake_timeout)
        self.env.count("ws_dials", 1)
        channel = STREAM if self.kind == STREAM else FRAMES
        proof = self._challenge(u, deadline, what, channel) if self.senv.bearer_token else ""
        if self.state is CLOSED:
            raise ConnectError(f"{what}: the transport is closing")
        sock = self._connect(u, deadline, what)
        proto = ClientProtocol(u, max_size=self.max_in, logger=_wslog)
        request = proto.connect()
        headers = request.headers
        headers["User-Agent"] = USER_AGENT
        if proof:
            headers[wsauth.AUTH_HEADER] = proof
        if self.kind == STREAM:
            headers[CHANNEL_HEADER] = STREAM
        proto.send_request(request)
        sock.settimeout(deadline.remaining(what))
        sock.sendall(b"".join(proto.data_to_send()))
        reader = SocketReader(sock, READ_SIZE)
        response, rest = self._handshake_event(sock, reader, proto, deadline, what)
        if proto.handshake_exc is not None:
            raise proto.handshake_exc
        if not isinstance(response, Response) or proto.state is not WS_OPEN:
            why = peer_close_reason(proto) or "the connection closed during the handshake"
            raise ConnectError(f"{what}: {why}")
        sock.settimeout(None)
        self.proto, self._reader = proto, reader
        self.opened()
        self._on_events(rest, time.monotonic())
        return True

    def _open_accepted(self) -> bool:
        sock = self.sock
        assert sock is not None
        what = f"handshake from {self.peer_addr}"
        deadline = Deadline(self.env.handshake_timeout - (time.monotonic() - self.created))
        server_ssl = self.senv.server_ssl
        if server_ssl is not None:
            sock.settimeout(deadline.remaining(what))
            sock = server_ssl.wrap_socket(sock, server_side=True)
            self.sock = sock
        if self.state is CLOSED:
            raise ConnectError("closed during the TLS handshake")
        proto = ServerProtocol(max_size=self.max_in, logger=_wslog)
        reader = SocketReader(sock, READ_SIZE)
        prefix, self.prefix = self.prefix, b""
        if prefix:
            proto.receive_data(prefix)
        request, rest = self._handshake_event(sock, reader, proto, deadline, what)
        if not isinstance(request, Request):
            # Not an HTTP request we can answer: write what the protocol says (an error
            # response, the end of the stream) and drop the connection.
            self._count_outcome("ws_handshake_failed")
            _log.debug("%s ! bad handshake from %s: %s", self.env.name, self.peer_addr,
                       proto.handshake_exc)
            self._write_now(sock, proto.data_to_send())
            self.abort(f"bad handshake ({proto.handshake_exc})")
            return False
        kind, refusal, proved = self.senv.screen(request.path, request.headers, False)
        if refusal is None:
            if kind == STREAM:
                # Small frames only until the stream layer authenticated the opening
                # (mark_trusted), as on TCP.
                self.max_out = self.env.limits.max_stream_frame_size
            if proved:
                self.trusted = True  # it proved it holds the cluster's token
            self.max_in = self.max_out if self.trusted else min(self.max_out,
                                                                self.env.limits.preauth_frame)
            set_max_size(proto, self.max_in)
            response = proto.accept(request)
        else:
            response = proto.reject(refusal.status, refusal.reason + "\n")
            for name, value in refusal.headers:
                response.headers[name] = value
        proto.send_response(response)
        upgraded = response.status_code == 101
        if upgraded:
            self.kind = kind
        self._write_now(sock, proto.data_to_send())
        if not upgraded:
            if refusal is None:
                self._count_outcome("ws_handshake_failed")
                _log.debug("%s ! bad handshake from %s: %s", self.env.name, self.peer_addr,
                           proto.handshake_exc)
            else:
                self.outcome_counted = True  # the screen counted why
            self._linger(sock, reader, deadline)
            self.abort(f"refused with HTTP {response.status_code}")
            return False
        sock.settimeout(None)
        self.proto, self._reader = proto, reader
        if self.trusted and self.ticket is not None:
            self.env.trust(self.ticket)
        self.opened()
        self._on_events(rest, time.monotonic())
        return True

    @staticmethod
    def _write_now(sock: socket.socket, data: list[bytes]) -> None:
        """Write the protocol's output during the handshake (``b""``: the end of our side)."""
        for chunk in data:
            if chunk:
                sock.sendall(chunk)
            else:
                shutdown(sock, socket.SHUT_WR)

    @staticmethod
    def _linger(sock: socket.socket, reader: SocketReader, deadline: Deadline) -> None:
        """After a refusal: read until the client closes (briefly), so that closing with its
        bytes unread does not reset the connection before it read our answer."""
        end = Deadline(min(CLOSE_TIMEOUT, deadline.remaining("linger") or CLOSE_TIMEOUT))
        try:
            while True:
                sock.settimeout(end.remaining("linger"))
                if not reader.read():
                    return
        except (OSError, GossipTimeout):
            return

    def _count_outcome(self, counter: str) -> None:
        """Count an accepted handshake's failure or timeout, once."""
        with self.lock:
            if self.outcome_counted:
                return
            self.outcome_counted = True
        self.env.count(counter, 1)

    def _open_failed(self, exc: Exception) -> None:
        env = self.env
        if self.accepted:
            if self.state is not CLOSED:  # else the sweeper closed it, and counted why
                timed_out = isinstance(exc, (socket.timeout, GossipTimeout))
                self._count_outcome("ws_handshake_timeouts" if timed_out else "ws_handshake_failed")
            reason = f"TLS handshake failed: {exc}" if isinstance(exc, ssl.SSLError) else str(exc)
            _log.debug("%s ! accepted connection from %s failed: %s", env.name, self.peer_addr,
                       reason)
            self.abort(reason)
            return
        if isinstance(exc, InvalidStatus):
            body = exc.response.body.decode(errors="replace").strip()[:200]
            reason = f"refused with HTTP {exc.response.status_code}" + (f": {body}" if body else "")
        elif isinstance(exc, (socket.timeout, GossipTimeout)):
            reason = f"timed out ({exc})"
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS handshake failed: {exc}"
        elif isinstance(exc, (OSError, InvalidHandshake, GossipError)):
            reason = str(exc) or type(exc).__name__
        else:
            reason = f"{type(exc).__name__}: {exc}"
            _log.error("%s ! dialing %s failed unexpectedly", env.name, self.peer_addr,
                       exc_info=True)
        env.count("ws_dial_failures", 1)
        self.senv.dial_failed(self.peer_addr, reason)
        _log.debug("%s ! connect to %s failed: %s", env.name, self.peer_addr, reason)
        self.abort(reason)

    def _handshake_overdue(self) -> None:
        if self.accepted:
            self._count_outcome("ws_handshake_timeouts")

    # ---------------------------------------------------------------- reading (reader thread)

    def _read_loop(self) -> None:
        proto, reader = self.proto, self._reader
        assert proto is not None and reader is not None
        lock = self.proto_lock
        try:
            while True:
                if self.paused or self.flow_paused:
                    with self.lock:
                        while (self.paused or self.flow_paused) and self.state is OPEN:
                            self.readable.wait(0.25)
                    if self.partial_since:
                        self.partial_since = time.monotonic()  # paused time does not count
                if self.state is CLOSED:
                    break
                try:
                    data = reader.read()
                except (OSError, ValueError):
                    break
                if not data:
                    break
                now = time.monotonic()
                chunk = bytes(data)  # the protocol takes bytes (it keeps what it is fed)
                with lock:
                    proto.receive_data(chunk)
                    events = proto.events_received()
                    out = proto.data_to_send()
                    if out:  # under the protocol's lock: in order with what the writer frames
                        self._queue_wire(out)
                    closing = proto.close_expected()
                    failed = proto.parser_exc
                if events:
                    self.partial_since = 0.0
                    self._on_events(events, now)
                elif not self.partial_since:
                    self.partial_since = now
                if closing and not self.close_sent:
                    self.close_sent = now  # the closing handshake is bounded from now on
                if failed is not None and not self.error:
                    self.error = self._failure_reason(failed)
            with lock:
                try:
                    proto.receive_eof()
                except EOFError:  # pragma: no cover - older releases refuse a second EOF
                    pass
                out = proto.data_to_send()
                if out:
                    self._queue_wire(out)
        except Exception:  # a bug: the connection ends, the thread does not die silently
            self.env.count("ws_protocol_errors", 1)
            _log.error("%s ! reader of %s failed", self.env.name, self.peer_addr, exc_info=True)
        finally:
            self._reader_exited()

    def _on_events(self, events: Sequence[Any], now: float) -> None:
        """Hand the messages of one read to the link, in order, binary ones as one batch."""
        batch: list[bytes] = []
        for event in events:
            frame: Frame = event
            op = frame.opcode
            if op is BINARY or op is TEXT:
                data = frame.data
                if type(data) is not bytes:
                    data = bytes(data)  # the parser hands unmasked payloads out as bytearrays
                if frame.fin:
                    if op is BINARY:
                        batch.append(data)
                    else:
                        batch = self._text(batch, data)
                else:
                    self.frag = [data]
                    self.frag_text = op is TEXT
            elif op is CONT:
                frag = self.frag
                if frag is None:  # the protocol refuses this; nothing to assemble
                    continue
                frag.append(bytes(frame.data))
                if frame.fin:
                    self.frag = None
                    whole = b"".join(frag)
                    if self.frag_text:
                        batch = self._text(batch, whole)
                    else:
                        batch.append(whole)
            else:
                self.last_rx = now  # ping, pong, close: the peer is alive
        if batch:
            self.deliver(batch)

    def _text(self, batch: list[bytes], data: bytes) -> list[bytes]:
        if batch:  # binary messages that came first are handled first
            self.deliver(batch)
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = ""
        self.deliver_text(text)
        return []

    def _failure_reason(self, exc: BaseException) -> str:
        if isinstance(exc, PayloadTooBig):
            return f"message too large ({exc})"
        return f"protocol error ({exc})"

    def _reader_exited(self) -> None:
        """The reader ends: find out why, and close."""
        reason = "connection closed"
        proto = self.proto
        if proto is not None:
            exc = proto.parser_exc
            if isinstance(exc, PayloadTooBig):
                self.env.count("ws_too_large", 1)
                reason = self._failure_reason(exc)
            elif isinstance(exc, WsProtocolError):
                self.env.count("ws_protocol_errors", 1)
                reason = self._failure_reason(exc)
            rcvd = proto.close_rcvd
            if rcvd is not None:
                if rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                    self.clean_end = True
                reason = peer_close_reason(proto)
        self.mark_closed(reason)
        shutdown(self.sock)  # the writer, maybe waiting for room in the kernel, fails at once

    def _raise_limit(self) -> None:
        proto = self.proto
        if proto is not None:
            with self.proto_lock:
                set_max_size(proto, self.max_in)

    # ---------------------------------------------------------------- writing (writer thread)

    def _queue_wire(self, chunks: list[bytes]) -> None:
        """Queue the protocol's output for the writer."""
        with self.lock:
            self.wire.extend(chunks)
            self.wake.notify()

    def _write_loop(self) -> None:
        proto = self.proto
        assert proto is not None
        while True:
            msgs: list[Item] = []
            n = 0
            graceful = False
            with self.lock:
                while True:
                    if self.state is CLOSED:
                        return
                    if self.wire:
                        break
                    if self.state is OPEN and (self.pending or (self.closing and not self.close_sent)):
                        break
                    if self.final and self.close_sent:
                        break
                    self.wake.wait()
                if self.state is OPEN:
                    if self.pending:
                        msgs, n = self.take()
                    elif self.closing and not self.close_sent:
                        graceful = True
            # Groups of at most _GROUP bytes: each group's room goes back to the senders once
            # it is written, so they refill the buffer while the next group is being written.
            i, count = 0, len(msgs)
            while i < count:
                j, size = i, 0
                while j < count and (j == i or size < _GROUP):
                    size += len(msgs[j])
                    j += 1
                if not self._encode(proto, msgs[i:j]):
                    with self.lock:
                        self.pending.extendleft(reversed(msgs[i:]))  # lost with the close
                    self.abort(peer_close_reason(proto) or "the connection is closing")
                    return
                i = j
                if not self._flush_wire():
                    return
                self.written(size)
                n -= size
            if graceful:
                with self.proto_lock:
                    if proto.state is WS_OPEN:
                        proto.send_close(CloseCode.GOING_AWAY if self.final
                                         else CloseCode.NORMAL_CLOSURE)
                        self._queue_wire(proto.data_to_send())
                self.close_sent = time.monotonic()
            if not self._flush_wire():
                return
            self.written(n)
            if self.final and self.close_sent:
                self.abort("the transport is closed")  # written: no need to wait for the peer
                return

    def _encode(self, proto: ClientProtocol | ServerProtocol, msgs: list[Item]) -> bool:
        """Frame ``msgs`` into the wire queue behind what the protocol queued; False if the
        connection is no longer open."""
        with self.proto_lock:
            if proto.state is not WS_OPEN:
                return False
            encoded: list[Chunk] = list(proto.data_to_send())  # a pong... goes first
            mask = proto.side is CLIENT
            own = not proto.extensions  # none negotiated: frames are plain
            for m in msgs:
                if isinstance(m, str):
                    proto.send_text(m.encode())
                    encoded.extend(proto.data_to_send())
                elif own:
                    encoded.extend(binary_frame(m, mask))
                else:  # pragma: no cover - we never negotiate an extension
                    proto.send_binary(bytes(m))
                    encoded.extend(proto.data_to_send())
            with self.lock:
                self.wire.extend(encoded)
        return True

    def _flush_wire(self) -> bool:
        """Write everything queued for the socket; False (the link aborted) if a write failed."""
        sock = self.sock
        assert sock is not None
        try:
            while True:
                with self.lock:
                    if not self.wire:
                        return True
                    chunks = list(self.wire)
                    self.wire.clear()
                start = 0
                for i, chunk in enumerate(chunks):
                    if not chunk:  # the protocol's end of stream
                        if i > start:
                            send_all(sock, chunks[start:i])
                        start = i + 1
                        shutdown(sock, socket.SHUT_WR)
                if start < len(chunks):
                    send_all(sock, chunks[start:])
        except OSError as exc:
            self.env.count("ws_send_errors", 1)
            self.abort(f"write failed: {exc}")
            return False

    def send_ping(self) -> None:
        """Queue a ping (sweeper thread); its pong, like any frame, proves the peer alive."""
        proto = self.proto
        if proto is None:
            return
        with self.proto_lock:
            if proto.state is WS_OPEN:
                proto.send_ping(b"gossip")
                self._queue_wire(proto.data_to_send())

    # ---------------------------------------------------------------- closing

    def abort(self, reason: str) -> None:
        """Close at once: shut the socket down, which fails blocked reads and writes.

        The reader then ends by itself; the writer closes the socket once it has joined it.
        """
        self.mark_closed(reason)
        shutdown(self.sock)

    def _teardown(self) -> None:
        """Writer thread, at its end: everything is closed and the reader joined."""
        self.abort(self.error or "closed")
        reader = self.read_thread
        if reader is not None and reader is not threading.current_thread():
            reader.join(JOIN_TIMEOUT)
        close_quietly(self.sock)
        self.env.done(self)

    # ---------------------------------------------------------------- deadlines

    def _overdue(self, now: float) -> bool:
        if self.close_sent and now - self.close_sent > CLOSE_TIMEOUT:
            # The peer's close frame may have come (it started the closing handshake) and
            # only its end of the TCP connection be late: then its code and reason are the news.
            proto = self.proto
            self.abort((peer_close_reason(proto) if proto is not None else "")
                       or "no close frame from the peer")
            return True
        limit = self.env.limits.frame_timeout
        since = self.partial_since
        if since and not self.reading_blocked() and now - since > limit:
            self.env.count("ws_frame_timeouts", 1)
            self.abort(f"a message did not arrive whole within {limit:.3g}s")
            return True
        return False

    def _keepalive(self, now: float) -> None:
        ping = self.env.ping_interval
        if not ping:
            return
        silent = now - self.last_rx
        if silent > 2 * ping and self.ping_sent > self.last_rx:
            self.env.count("ws_ping_timeouts", 1)
            self.abort(f"no frame or pong for {silent:.1f}s")
        elif silent > ping and now - self.ping_sent > ping:
            self.ping_sent = now
            self.send_ping()

