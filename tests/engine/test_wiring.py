"""From a Config to a keyring, a codec and a transport (gossip.engine.wiring); the facade builds
none of them."""

from __future__ import annotations

import pytest

import gossip
from gossip.config import Config
from gossip.engine import wiring
from gossip.errors import AuthenticationError, TransportError
from gossip.transports.memory import MemoryNetwork
from gossip.transports.multi import MultiTransport
from gossip.transports.socket import SocketTransport


KEY, OLD = b"k" * 16, b"o" * 16


def test_no_key_no_keyring_and_plain_packets() -> None:
    cfg = Config.local()
    assert wiring.keyring_for(cfg) is None
    codec = wiring.codec_for(cfg, None)
    assert codec.decode(codec.encode(gossip.USER_MSG, bytes(16), 1, 1, "x")).encrypted is False


def test_the_keys_make_a_keyring_and_the_codec_seals_under_the_label() -> None:
    cfg = Config.local(encryption_key=KEY, secondary_keys=[OLD], cluster_label="prod")
    keyring = wiring.keyring_for(cfg)
    assert keyring is not None and list(keyring.keys) == [KEY, OLD] and keyring.primary_key == KEY
    codec = wiring.codec_for(cfg, keyring)
    pkt = codec.decode(codec.encode(gossip.USER_MSG, bytes(16), 1, 1, "x"))
    assert pkt.encrypted
    other_label = wiring.codec_for(cfg.copy(cluster_label="test"), keyring)
    with pytest.raises(gossip.LabelMismatch):
        other_label.decode(codec.encode(gossip.USER_MSG, bytes(16), 1, 1, "x"))
    other_key = wiring.codec_for(cfg, wiring.keyring_for(Config.local(encryption_key=b"j" * 16)))
    with pytest.raises(AuthenticationError):
        other_key.decode(codec.encode(gossip.USER_MSG, bytes(16), 1, 1, "x"))


def test_a_socket_node_listens_on_sockets_and_dials_websockets_on_first_use() -> None:
    cfg = Config.local(udp_max_packet_size=600, tcp_max_packet_size=1 << 20)
    transport = wiring.build_transport(cfg, "n1", lambda host: False)
    try:
        assert isinstance(transport, MultiTransport)
        side = transport.socket
        assert isinstance(side, SocketTransport)
        assert (side.max_udp_size, side.max_frame_size) == (600, 1 << 20)
        assert transport.websocket is None  # built when a ws:// peer is first dialed
    finally:
        transport.close()


def test_a_websocket_node_with_an_unreadable_certificate_is_refused_clearly() -> None:
    cfg = Config.local(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0",
                       advertise_addr="wss://127.0.0.1:8443/gossip",
                       tls_cert_file="/nonexistent/cert.pem", tls_key_file="/nonexistent/key.pem")
    with pytest.raises(TransportError, match="cannot set up the WebSocket transport"):
        wiring.build_transport(cfg, "n1", lambda host: False)


@pytest.mark.parametrize("advertise, local, any_host, expected", [
    ("", "127.0.0.1:7946", "", "127.0.0.1:7946"),
    ("", "0.0.0.0:7946", "", "127.0.0.1:7946"),          # dialable, not unspecified
    ("", "[::]:7946", "", "127.0.0.1:7946"),
    ("127.0.0.9:7000", "127.0.0.1:7946", "", "127.0.0.9:7000"),
    ("", "0.0.0.0:41000", "127.0.0.5", "127.0.0.5:41000"),  # the bound port, the route's host
])
def test_the_advertised_address(advertise: str, local: str, any_host: str, expected: str) -> None:
    cfg = Config.local(advertise_addr=advertise)
    assert wiring.advertised_address(cfg, local, any_host) == expected


def test_only_a_built_in_transport_bound_to_every_interface_asks_for_the_route_s_host() -> None:
    assert wiring.advertise_host_for_any(Config.local(bind_addr="127.0.0.1:0")) == ""
    net = MemoryNetwork()
    given = Config.local(bind_addr="0.0.0.0:0", insecure=True, transport=net.new_transport())
    assert wiring.advertise_host_for_any(given) == ""


def test_a_node_without_a_websocket_side_is_not_running_for_hosted_connections() -> None:
    assert wiring.websocket_side(None) is None
    assert wiring.websocket_side(MemoryNetwork().new_transport()) is None
    refusal = wiring.not_running()
    assert (refusal.status, refusal.reason) == (503, "gossip is not running")


