"""The memberlist wire profile: the protocol core's messages to and from memberlist's.

:class:`MemberlistCodec` stands where :class:`~gossip.packet.PacketCodec` stands in the engine:
it turns the core's messages (their plain, codec-ready form) into memberlist messages, and the
messages of a received datagram or stream into :class:`~gossip.packet.Packet` objects that the
receive path feeds to the same core. It never changes what the core decides.

==========================  =============================================================
core                        memberlist
==========================  =============================================================
Ping (+ updates, buddy)     compound: ping, suspect(target) when suspected, the updates
Ack (+ updates)             compound: ack, the updates
PingReq / Nack              indirect ping (with ``Nack``) / nack
Gossip(updates)             alive / suspect / dead, compound when several
Join / PushPull             push/pull on a stream (``Join`` flag), answered on it
JoinReply / PushPullReply   the push/pull answer (an ``err`` refuses a join)
user message (type 128)     user message (opaque bytes)
==========================  =============================================================

Framing (label, encryption, CRC for peers of protocol 5, compression) is the transport's
(:mod:`gossip.memberlist.transport`); this class gives it :meth:`wants_crc`. A push/pull answer
reaches the receive path wrapped by the transport in a local *reply envelope*
(``0xF0 | request length u32 | request | answer``, never on the wire) so that the answer
is matched to the request the core sent.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from .. import messages as core
from ..codecs import DEFAULT_CODEC, Codec
from ..errors import DecodeError, LocalProtocolError, MessageTooLarge, RemoteProtocolError
from ..node import PROTOCOL_VERSION, NodeID, NodeState
from ..packet import Packet
from ..wire import RESERVED_MSGS_START, USER_MSG, MessageType
from . import codec as ml
from .identity import NameTable, compatible, decode_meta, encode_meta, join_addr, our_vsn, split_addr

__all__ = ["MemberlistCodec", "REPLY_ENVELOPE", "envelope", "wire_inc", "core_inc"]

REPLY_ENVELOPE = 0xF0
"""First byte of the transport's local reply envelope (not a memberlist type)."""
_ENV = struct.Struct(">BI")
_STATE_TO_ML = {NodeState.ALIVE: ml.NodeStateType.ALIVE, NodeState.SUSPECT: ml.NodeStateType.SUSPECT,
                NodeState.DEAD: ml.NodeStateType.DEAD, NodeState.LEFT: ml.NodeStateType.LEFT}
_ML_TO_STATE = {int(v): k for k, v in _STATE_TO_ML.items()}
_PENDING = 256  # push/pull requests remembered for their answers
_CARRIED = (core.Alive, core.Suspect, core.Dead)  # the updates this wire has a form for
_U32 = 0xFFFFFFFF


def wire_inc(inc: int) -> int:
    """The incarnation memberlist sees for the core's ``inc``: one more. memberlist starts a
    node at 1 and takes an alive message of incarnation 0 from a newcomer as no news (it
    keeps the newcomer dead), so the core's first incarnation, 0, must travel as 1."""
    return min(inc + 1, _U32)


def core_inc(inc: int) -> int:
    """The core's incarnation for memberlist's ``inc`` (the inverse of :func:`wire_inc`)."""
    return max(inc - 1, 0)


def envelope(request: bytes, answer: bytes) -> bytes:
    """Wrap a stream answer with the request it answers (see the module docstring)."""
    return _ENV.pack(REPLY_ENVELOPE, len(request)) + request + answer


class MemberlistCodec:
    """Encode the core's messages as memberlist's, decode memberlist's as the core's.

    Args:
        name: this node's member name.
        serf: announce Serf's delegate versions and encode metadata as Serf tags.
        max_states: the most node states a push/pull may carry.
        max_packet_size: the largest message built or accepted on a stream.
    """

    def __init__(self, name: str, *, serf: bool = False, max_states: int = ml.MAX_STATES,
                 max_packet_size: int = ml.MAX_PUSH_STATE) -> None:
        self.names = NameTable(name)
        self.serf = serf
        self.vsn = our_vsn(serf)
        self._max_states = max_states
        self._max_packet_size = max_packet_size
        self._vsns: dict[str, bytes] = {}       # name -> the Vsn it announced
        self._addr_names: dict[str, str] = {}   # "ip:port" -> name
        self._pending: OrderedDict[bytes, deque[tuple[bool, int]]] = OrderedDict()
        # Our own metadata stamps by incarnation: memberlist carries no stamp, so an echo of our
        # alive gets back the stamp we sent it with (else we would refute our own echo).
        self._own_stamps: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self.refused_versions = 0

    # ------------------------------------------------------------------ PacketCodec's face

    @property
    def codec(self) -> Codec:
        """The codec of the core's plain forms (msgpack)."""
        return DEFAULT_CODEC

    keyring = None
    """Encryption is the transport's on this wire (:class:`~.security.MLKeyring`)."""
    label = ""
    encrypts = False
    requires_encryption = False
    overhead = 0

    @property
    def max_packet_size(self) -> int:
        """The largest message built or accepted on a stream."""
        return self._max_packet_size

    @property
    def own_id(self) -> NodeID:
        """This node's id (from its name)."""
        return self.names.own_id

    def wants_crc(self, addr: str) -> bool:
        """True if the member at ``addr`` speaks protocol 5 (datagrams carry a CRC)."""
        name = self._addr_names.get(addr)
        vsn = self._vsns.get(name) if name is not None else None
        return vsn is not None and vsn[1] >= 5

    def encode(self, msg_type: int, sender: bytes, msg_id: int, ttl: int, payload: Any) -> bytes:
        """Encode a plain value (see :meth:`encode_raw`)."""
        return self.encode_raw(msg_type, sender, msg_id, ttl, DEFAULT_CODEC.encode(payload))

    def encode_raw(self, msg_type: int, sender: bytes, msg_id: int, ttl: int, payload: bytes) -> bytes:
        """Return the memberlist message for a core message (``payload``: its msgpack plain
        form) or a user message (type 128: bytes travel as they are).

        Raises:
            LocalProtocolError: a message type this wire does not carry, or metadata over
                512 bytes.
            MessageTooLarge: over ``max_packet_size``.
        """
        if RESERVED_MSGS_START <= msg_type < USER_MSG:
            raise LocalProtocolError(
                f"memberlist's wire carries no add-on messages (type {msg_type}: leader election, "
                "groups); use wire_protocol='gossip' for them")
        if msg_type >= USER_MSG or msg_type == MessageType.REPLY:
            if msg_type != USER_MSG:
                raise LocalProtocolError(
                    f"memberlist's wire carries user messages of type {USER_MSG} only, not {msg_type}")
            value = msgpack.unpackb(payload, raw=False)
            data = ml.encode(ml.User(value if isinstance(value, bytes) else payload))
        else:
            try:
                msg = core.from_wire(msg_type, DEFAULT_CODEC.decode(payload), self._max_states)
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"cannot carry message type {msg_type}: {exc}") from exc
            data = self.encode_message(msg)
        if len(data) > self._max_packet_size:
            raise MessageTooLarge(f"message of {len(data)} bytes over {self._max_packet_size}")
        return data

    # ------------------------------------------------------------------ core -> memberlist

    def encode_message(self, msg: core.Message) -> bytes:
        """Return the memberlist bytes of one core message."""
        me = self.names.own_name
        t = type(msg)
        if t is core.Ping:
            assert isinstance(msg, core.Ping)
            ip, port = split_addr(msg.source_addr)
            target = self.names.name_of(msg.target)
            parts = [ml.encode(ml.Ping(msg.seq, target, ip, port, me))]
            if msg.suspect_inc >= 0:
                parts.append(ml.encode(ml.Suspect(wire_inc(msg.suspect_inc), target, me)))
            return self._many(parts + self._updates(msg.updates))
        if t is core.Ack:
            assert isinstance(msg, core.Ack)
            return self._many([ml.encode(ml.Ack(msg.seq))] + self._updates(msg.updates))
        if t is core.PingReq:
            assert isinstance(msg, core.PingReq)
            tip, tport = split_addr(msg.target_addr)
            sip, sport = split_addr(msg.source_addr)
            return ml.encode(ml.IndirectPing(msg.seq, tip, tport, self.names.name_of(msg.target),
                                             msg.nack, sip, sport, me))
        if t is core.Nack:
            assert isinstance(msg, core.Nack)
            return ml.encode(ml.Nack(msg.seq))
        if t is core.Gossip:
            assert isinstance(msg, core.Gossip)
            parts = self._updates(msg.updates)
            if not parts:
                raise LocalProtocolError("no update of this gossip travels on memberlist's wire")
            return self._many(parts)
        if t is core.Join or t is core.PushPull:
            assert isinstance(msg, (core.Join, core.PushPull))
            join = t is core.Join or bool(getattr(msg, "join", False))
            data = ml.encode(ml.PushPull(join, tuple(self._state(s) for s in msg.states)))
            with self._lock:
                q = self._pending.setdefault(data, deque(maxlen=16))
                q.append((t is core.Join, msg.seq))
                self._pending.move_to_end(data)
                while len(self._pending) > _PENDING:
                    self._pending.popitem(last=False)
            return data
        if t is core.JoinReply:
            assert isinstance(msg, core.JoinReply)
            if not msg.accepted:
                return ml.encode(ml.Err(msg.reason))
            return ml.encode(ml.PushPull(False, tuple(self._state(s) for s in msg.states)))
        assert isinstance(msg, core.PushPullReply)
        return ml.encode(ml.PushPull(False, tuple(self._state(s) for s in msg.states)))

    def _many(self, parts: list[bytes]) -> bytes:
        if len(parts) == 1:
            return parts[0]
        return ml.compound(parts[:255])

    def _vsn_of(self, node: NodeID) -> bytes:
        if node == self.names.own_id:
            return self.vsn
        return self._vsns.get(self.names.name_of(node), self.vsn)

    def _own_stamp(self, node: NodeID, inc: int, stamp: int) -> None:
        if node == self.names.own_id:
            with self._lock:
                self._own_stamps[inc] = stamp
                self._own_stamps.move_to_end(inc)
                while len(self._own_stamps) > 64:
                    self._own_stamps.popitem(last=False)

    def _stamp_of(self, node: NodeID, inc: int) -> int:
        if node == self.names.own_id:
            return self._own_stamps.get(inc, inc)
        return inc

    def _updates(self, updates: Iterable[core.Update]) -> list[bytes]:
        """The updates memberlist's wire carries (alive, suspect, dead), encoded; others (a
        removal) have no form on it and stay behind."""
        return [self._update(u) for u in updates if type(u) in _CARRIED]

    def _update(self, u: core.Update) -> bytes:
        names = self.names
        if type(u) is core.Alive:
            self._own_stamp(u.node, u.incarnation, u.meta_stamp)
            ip, port = split_addr(u.addr)
            return ml.encode(ml.Alive(wire_inc(u.incarnation), names.name_of(u.node), ip, port,
                                      self._meta(u.meta), self._vsn_of(u.node)))
        if type(u) is core.Suspect:
            return ml.encode(ml.Suspect(wire_inc(u.incarnation), names.name_of(u.node),
                                        names.name_of(u.sender)))
        assert type(u) is core.Dead
        return ml.encode(ml.Dead(wire_inc(u.incarnation), names.name_of(u.node), names.name_of(u.sender)))

    def _meta(self, meta: Mapping[str, Any]) -> bytes:
        return encode_meta(meta, self.serf)

    def _state(self, s: core.MemberState) -> ml.PushNodeState:
        self._own_stamp(s.node, s.incarnation, s.meta_stamp)
        ip, port = split_addr(s.addr)
        return ml.PushNodeState(self.names.name_of(s.node), ip, port, self._meta(s.meta),
                                wire_inc(s.incarnation),
                                int(_STATE_TO_ML.get(s.state, ml.NodeStateType.DEAD)),
                                self._vsn_of(s.node))

    # ------------------------------------------------------------------ memberlist -> core

    def decode_all(self, data: bytes, src: str, max_payload: int | None = None,
                   type_limits: Mapping[int, int] | None = None) -> list[Packet]:
        """Return the packets of one received datagram or stream message (already
        unlabelled and decrypted by the transport), for the receive path.

        Raises:
            RemoteProtocolError: malformed, over a bound, or from a name that cannot be mapped.
        """
        if not data:
            raise DecodeError("empty packet")
        if data[0] == REPLY_ENVELOPE:
            return [self._answer(data, src)]
        limit = self._max_packet_size if max_payload is None else min(max_payload * 4, ml.MAX_DECOMPRESSED)
        updates: list[Any] = []
        out: list[Packet] = []
        size = len(data)
        for part in ml.unpack(data, limit):
            msg = ml.decode(part, self._max_states)
            t = type(msg)
            if t is ml.Alive or t is ml.Suspect or t is ml.Dead:
                u = self._core_update(msg)
                if u is not None:
                    updates.append(core.encode_update(u))
                continue
            out.append(self._core(msg, src, size))
        if updates:
            out.append(self._packet(MessageType.GOSSIP, self._sender_at(src), [updates], size))
        return out

    def _packet(self, mt: int, sender: bytes, value: Any, size: int) -> Packet:
        return Packet(int(mt), sender, 0, 1, DEFAULT_CODEC.encode(value), DEFAULT_CODEC,
                      False, False, size)

    def _sender_at(self, src: str) -> bytes:
        name = self._addr_names.get(src)
        return self.names.id_of(name).bytes if name is not None else bytes(16)

    def _addr(self, ip: bytes, port: int, src: str) -> str:
        if ip and port:
            return join_addr(ip, port)
        return src

    def _core(self, msg: ml.Message, src: str, size: int) -> Packet:
        names = self.names
        t = type(msg)
        if t is ml.Ping:
            assert isinstance(msg, ml.Ping)
            target = names.id_of(msg.node) if msg.node else names.own_id
            sender = names.id_of(msg.source_node).bytes if msg.source_node else self._sender_at(src)
            addr = self._addr(msg.source_addr, msg.source_port, src)
            return self._packet(MessageType.PING, sender,
                                [msg.seq, target.bytes, addr, [], -1], size)
        if t is ml.IndirectPing:
            assert isinstance(msg, ml.IndirectPing)
            sender = names.id_of(msg.source_node).bytes if msg.source_node else self._sender_at(src)
            return self._packet(MessageType.PING_REQ, sender,
                                [msg.seq, names.id_of(msg.node).bytes, join_addr(msg.target, msg.port),
                                 self._addr(msg.source_addr, msg.source_port, src), msg.nack, 0], size)
        if t is ml.Ack:
            assert isinstance(msg, ml.Ack)
            return self._packet(MessageType.ACK, self._sender_at(src), [msg.seq, []], size)
        if t is ml.Nack:
            assert isinstance(msg, ml.Nack)
            return self._packet(MessageType.NACK, self._sender_at(src), [msg.seq], size)
        if t is ml.User:
            assert isinstance(msg, ml.User)
            return Packet(USER_MSG, self._sender_at(src), 0, 1, DEFAULT_CODEC.encode(msg.payload),
                          DEFAULT_CODEC, False, False, size)
        if t is ml.PushPull:
            assert isinstance(msg, ml.PushPull)
            states = [self._core_state(s) for s in msg.states]
            return self._packet(MessageType.PUSH_PULL, self._sender_at(src),
                                [0, src, [s for s in states if s is not None], msg.join], size)
        raise DecodeError(f"a {type(msg).__name__} message does not travel here")

    def _answer(self, data: bytes, src: str) -> Packet:
        if len(data) < _ENV.size:
            raise DecodeError("truncated reply envelope")
        n = _ENV.unpack_from(data)[1]
        request = data[_ENV.size:_ENV.size + n]
        answer = data[_ENV.size + n:]
        with self._lock:
            q = self._pending.get(request)
            entry = q.popleft() if q else None
            if q is not None and not q:
                del self._pending[request]
        if entry is None:
            raise DecodeError("an answer to no push/pull of ours")
        is_join, seq = entry
        msg = ml.read_stream(ml.StreamReader(answer, limit=self._max_packet_size), self._max_states)[0]
        if isinstance(msg, ml.Err):
            if is_join:
                return self._packet(MessageType.JOIN_REPLY, bytes(16), [seq, False, msg.error, []], len(data))
            raise DecodeError(f"the peer refused our push/pull: {msg.error}")
        if not isinstance(msg, ml.PushPull):
            raise DecodeError(f"a push/pull answered with a {type(msg).__name__}")
        states = [s for s in (self._core_state(x) for x in msg.states) if s is not None]
        sender = self._sender_at(src)
        if is_join:
            # The responder's own state goes first: the core takes it as the responder.
            name = self._addr_names.get(src)
            if name is not None:
                own = self.names.id_of(name).bytes
                states.sort(key=lambda s: s[0] != own)
            return self._packet(MessageType.JOIN_REPLY, sender, [seq, True, "", states], len(data))
        return self._packet(MessageType.PUSH_PULL_REPLY, sender, [seq, states], len(data))

    def _learn(self, name: str, ip: bytes, port: int, vsn: bytes) -> tuple[str, int]:
        """Remember a member's address and versions; return its address and our pv for it."""
        addr = join_addr(ip, port)
        self._addr_names[addr] = name
        if vsn:
            self._vsns[name] = vsn
        if len(self._addr_names) > (1 << 20):
            self._addr_names.clear()
        ok = compatible(vsn)
        if not ok:
            self.refused_versions += 1
        return addr, PROTOCOL_VERSION if ok else 0

    def _core_update(self, msg: ml.Message) -> core.Update | None:
        names = self.names
        if isinstance(msg, ml.Alive):
            nid = names.id_of(msg.node)
            addr, pv = self._learn(msg.node, msg.addr, msg.port, msg.vsn)
            inc = core_inc(msg.incarnation)
            return core.Alive(nid, inc, addr, decode_meta(msg.meta or b""), self._stamp_of(nid, inc), pv, "")
        assert isinstance(msg, (ml.Suspect, ml.Dead))
        nid = names.id_of(msg.node)
        sender = names.id_of(msg.sender) if msg.sender else nid
        if isinstance(msg, ml.Suspect):
            return core.Suspect(nid, core_inc(msg.incarnation), sender)
        return core.Dead(nid, core_inc(msg.incarnation), sender)

    def _core_state(self, s: ml.PushNodeState) -> list[Any] | None:
        state = _ML_TO_STATE.get(s.state)
        if state is None:
            return None
        nid = self.names.id_of(s.name)
        addr, pv = self._learn(s.name, s.addr, s.port, s.vsn)
        inc = core_inc(s.incarnation)
        return [nid.bytes, addr, int(state), inc, decode_meta(s.meta or b""), self._stamp_of(nid, inc), pv, ""]


def is_stream_type(data: bytes) -> bool:
    """True if a message may travel on a stream (push/pull, ping, user, err)."""
    return bool(data) and data[0] in (ml.MsgType.PUSH_PULL, ml.MsgType.PING, ml.MsgType.USER,
                                      ml.MsgType.ERR)


def expects_answer(data: bytes) -> bool:
    """True if a stream message is answered on its stream (push/pull, ping)."""
    return bool(data) and data[0] in (ml.MsgType.PUSH_PULL, ml.MsgType.PING)

