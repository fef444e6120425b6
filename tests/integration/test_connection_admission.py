"""A cluster's connection slots under a stranger's flood, on loopback: other loopback sources
than ``127.0.0.1`` are other hosts, and the nodes' own host is a member's.

Every wait is bounded; nothing asserts on speed.
"""

from __future__ import annotations

import socket

import gossip
from gossip import Cluster, Config

from . import scaled, wait_until
from .test_loopback import node_of, stop_all, wait_converged

ASK = gossip.USER_MSG + 45


def test_strangers_filling_the_tcp_slots_never_lock_members_out() -> None:
    # 80 slots, of which 64 (reserved_member_connections) only members' hosts may take.
    target = Cluster(Config.local(bind_addr="127.0.0.1:0", tcp_max_connections=80))
    member = Cluster(Config.local(bind_addr="127.0.0.1:0"))
    held: list[socket.socket] = []
    try:
        target.start()
        target.handle_func_with_reply(ASK, lambda sender, packet: packet.unmarshal() * 2)
        host, port = target.address.rsplit(":", 1)
        for i in range(4):  # 4 hosts x 20 silent connections: every slot, as the old limits went
            for _ in range(20):
                s = socket.create_connection((host, int(port)), timeout=scaled(5.0),
                                             source_address=(f"127.0.2.{i + 1}", 0))
                held.append(s)

        def handled() -> int:
            st = target.stats()
            return sum(v for k, v in st.items()
                       if k in ("transport.tcp_accepts", "transport.tcp_rejected",
                                "transport.tcp_rejected_per_source",
                                "transport.tcp_rejected_reserved_for_members",
                                "transport.tcp_untrusted_per_source_refused"))

        wait_until(lambda: handled() == 80, 10.0, "the listener took or refused every connection")
        member.start()
        assert member.join(target.address, timeout=scaled(5.0)) == 1
        wait_converged([target, member])
        # A request travels on a TCP connection of its own: the member still gets one.
        assert member.send_to_with_response(node_of(member, target), ASK, 21,
                                            timeout=scaled(5.0)) == 42
        st = target.stats()
        assert st["transport.tcp_untrusted_per_source_refused"] + \
            st["transport.tcp_rejected_reserved_for_members"] >= 80 - 16
    finally:
        for s in held:
            s.close()
        stop_all([target, member])
