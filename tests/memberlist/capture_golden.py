"""Capture a Go memberlist node's real traffic, for the golden byte tests.

Runs ``mlnode`` (tests/memberlist/go) against fake peers made of raw loopback sockets and
records what it sends: the join's push/pull, pings (compound, compressed, with CRC), an
indirect ping with the nack flag, acks, a nack, suspect and dead, user messages (datagram and
stream), an err answer, and the same join encrypted. Prints one JSON object:
``{name: hex}``. Run: ``python tests/memberlist/capture_golden.py /path/to/mlnode``.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time

from gossip.memberlist import codec as c
from gossip.memberlist import security as sec

LO = "127.0.0.1"
VSN = bytes([1, 5, 2, 0, 0, 0])
KEY = bytes(range(16))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


class Fake:
    """A fake member: UDP + TCP on one port, records everything."""

    def __init__(self, name: str, answer: bool, key: bytes | None = None) -> None:
        self.name = name
        self.answer = answer
        self.key = sec.MLKeyring([key]) if key else None
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LO, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((LO, self.port))
        self.tcp.listen(8)
        self.udp_in: list[bytes] = []
        self.tcp_in: list[bytes] = []
        self.states: tuple[c.PushNodeState, ...] = ()
        threading.Thread(target=self._udp, daemon=True).start()
        threading.Thread(target=self._accept, daemon=True).start()

    def state(self) -> c.PushNodeState:
        return c.PushNodeState(self.name, socket.inet_aton(LO), self.port, b"", 1, 0, VSN)

    def _udp(self) -> None:
        while True:
            data, src = self.udp.recvfrom(65536)
            self.udp_in.append(data)
            if not self.answer:
                continue
            plain = self.key.open(data, b"") if self.key else data
            for m in c.unpack(plain):
                msg = c.decode(m)
                if isinstance(msg, c.Ping):
                    out = c.encode(c.Ack(msg.seq))
                    if self.key:
                        out = self.key.seal(1, out, b"")
                    self.udp.sendto(out, src)

    def _accept(self) -> None:
        while True:
            conn, _ = self.tcp.accept()
            conn.settimeout(2)
            data = b""
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if data[:1] in (b"\x06", b"\x09", b"\x0a") and self.answer:
                        try:
                            self._reply(conn, data)
                            break
                        except Exception:
                            continue
            except OSError:
                pass
            self.tcp_in.append(data)
            conn.close()

    def _reply(self, conn: socket.socket, data: bytes) -> None:
        if data[0] == 10:
            assert self.key
            plain = sec.stream_decrypt(self.key, data[:5], data[5:5 + sec.stream_length(data[:5])])
        else:
            plain = data
        msg, t = c.read_stream(c.StreamReader(plain))
        if t != c.MsgType.PUSH_PULL:
            raise ValueError
        out = c.encode(c.PushPull(False, self.states))
        if self.key:
            out = sec.stream_encrypt(self.key, 1, out)
        conn.sendall(out)


def main() -> None:
    exe = sys.argv[1]
    out: dict[str, str] = {}
    e = Fake("fake-e", True)
    silent = Fake("fake-c", False)
    e.states = (e.state(), silent.state())
    gport = free_port()
    go = subprocess.Popen([exe, "--name", "go1", "--bind", f"{LO}:{gport}", "--join", f"{LO}:{e.port}",
                           "--probe-interval-ms", "300", "--probe-timeout-ms", "150",
                           "--gossip-interval-ms", "100", "--meta", "hello", "--max-runtime-s", "60"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert go.stdin
    time.sleep(1.0)
    go.stdin.write(json.dumps({"cmd": "send", "to": "fake-e", "payload": "hi-udp"}) + "\n")
    go.stdin.write(json.dumps({"cmd": "send", "to": "fake-e", "payload": "hi-tcp", "reliable": True}) + "\n")
    go.stdin.flush()
    # Our ping to go1, and an indirect ping with nack for a member that never answers.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LO, 0))
    probe.settimeout(2)
    probe.sendto(c.encode(c.Ping(77, "go1", socket.inet_aton(LO), probe.getsockname()[1], "fake-p")), (LO, gport))
    out["ack_reply"] = probe.recvfrom(65536)[0].hex()
    probe.sendto(c.encode(c.IndirectPing(78, socket.inet_aton(LO), silent.port, "fake-c", True,
                                         socket.inet_aton(LO), probe.getsockname()[1], "fake-p")), (LO, gport))
    try:
        out["nack_reply"] = probe.recvfrom(65536)[0].hex()
    except OSError:
        pass
    # An encrypted stream to a node without a key: it answers with an err message.
    s = socket.create_connection((LO, gport), 2)
    s.sendall(sec.stream_encrypt(sec.MLKeyring([KEY]), 1, c.encode(c.PushPull(False, ()))))
    s.settimeout(2)
    try:
        out["err_reply"] = s.recv(65536).hex()
    except OSError:
        pass
    s.close()
    time.sleep(4.0)
    go.stdin.write(json.dumps({"cmd": "leave"}) + "\n")
    go.stdin.flush()
    time.sleep(1.0)
    go.kill()
    for i, d in enumerate(e.tcp_in):
        out[f"e_tcp_{i}"] = d.hex()
    for i, d in enumerate(e.udp_in):
        out[f"e_udp_{i}"] = d.hex()
    for i, d in enumerate(silent.udp_in[:4]):
        out[f"c_udp_{i}"] = d.hex()

    # Encrypted: the join's push/pull and a ping, under KEY.
    ek = Fake("fake-k", True, KEY)
    ek.states = (ek.state(),)
    gport = free_port()
    go = subprocess.Popen([exe, "--name", "go2", "--bind", f"{LO}:{gport}", "--join", f"{LO}:{ek.port}",
                           "--key", base64.b64encode(KEY).decode(), "--max-runtime-s", "20",
                           "--probe-interval-ms", "300"], stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    go.kill()
    for i, d in enumerate(ek.tcp_in):
        out[f"k_tcp_{i}"] = d.hex()
    for i, d in enumerate(ek.udp_in[:3]):
        out[f"k_udp_{i}"] = d.hex()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
