"""Config: presets, validation of every field, aliases, and environment loading."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from gossip.transports.memory import MemoryNetwork

import gossip
from gossip.config import Config, default_config, format_duration, parse_duration
from gossip.errors import ConfigError

# One bad value for every field (type or range), with the field it must be blamed on.
BAD: dict[str, list[Any]] = {
    "node_id": ["not-a-uuid", 42],
    "name": [5, "x" * 513],
    "wire_protocol": ["", "serf", None],
    "serf": ["yes", 1],
    "memberlist_compress": ["yes"],
    "memberlist_encryption_version": [2, -1, "1"],
    "bind_addr": ["", "127.0.0.1", "127.0.0.1:70000", "example.com:80", "ws://x:1", "localhost:8000",
                  ":7946", "::1:80"],
    "advertise_addr": ["host:0", ":80", "host:notaport", "wss://host:0/gossip", "ws://",
                       "https://host/gossip", "ws://h/gossip?x=1"],
    "application_version": [1.5, "x" * 300],
    "tags": ["gpu", {"bad tag"}, {""}, {"x" * 65}, [3], {f"t{i}" for i in range(65)}, None],
    "application_version_check": ["yes"],
    "default_port": [0, 70000, True, "80"],
    "cluster_label": ["x" * 256, 7],
    "encryption_key": [b"short", "0123456789abcdef", b"x" * 33],
    "insecure": [1, "yes", None],
    "secondary_keys": [[b"short"], "nope"],
    "cipher": ["chacha20"],
    "msg_codec": ["yaml", 3],
    "compressor": ["zstd", object(), 5],
    "compress_min_size": [-1, 1.5],
    "max_metadata_size": [10, 1 << 21],
    "require_encryption": ["yes", 1],
    "encrypt_outgoing": [None],
    "replay_window": [-1, 0.01, 1e6, "60s"],
    "replay_max_entries": [0, 1 << 25, 1.5],
    "transport": [object()],
    "logger": ["stdout"],
    "resolver": [object()],
    "dialer": ["socket.create_connection", 42],
    "listener": [object()],
    "tracing": [None, "yes", 1, 0, object()],
    "discovery": ["mdns", 1],
    "multicast_group": ["127.0.0.1", "ff02::1", "x", 5],
    "multicast_port": [-1, 70000, "7947"],
    "multicast_interval": [0, -1],
    "multicast_ttl": [-1, 256],
    "multicast_interface": ["eth0", "::1", 1],
    "multicast_max_peers": [0, 1 << 20],
    "prefer_ipv6": [1, "true"],
    "socket_transport_enabled": [None],
    "websocket_bind_addr": ["localhost:8080", "127.0.0.1", "::1:80", "127.0.0.1:70000", 5],
    "websocket_path": ["gossip", "/a b", "/x?y", "/x#y", 3],
    "http_bind_addr": ["localhost:8080", "127.0.0.1", "::1:80", "127.0.0.1:70000", 5],
    "http_path": ["gossip", "/a b", "/x?y", 3],
    "http_reply_wait": [0, -1.0, 301.0, "1"],
    "http_pool_size": [-1, 1025, 1.5],
    "http_auth_window": [0.5, 3601.0, "60"],
    "http_max_frames_per_body": [0, 1 << 21],
    "allow_insecure_http": ["yes", 1],
    "websocket_handshake_timeout": [0, "5s"],
    "websocket_ping_interval": [-1, 0.01],
    "allow_insecure_websockets": ["no"],
    "bearer_token": [5, "two words", "line\nbreak", "x" * 4097],
    "tls_server_context": ["server.pem"],
    "tls_client_context": [object()],
    "tls_cert_file": ["/no/such/cert.pem", 3],
    "tls_key_file": ["/no/such/key.pem"],
    "tls_ca_file": ["/no/such/ca.pem"],
    "force_reliable_transport": [0],
    "tcp_dial_timeout": [0, -1, float("nan"), "2s"],
    "tcp_deadline": [0, 1e9],
    "udp_deadline": [0],
    "udp_max_packet_size": [100, 70000],
    "tcp_max_packet_size": [10],
    "stream_max_packet_size": [10],
    "max_concurrent_streams": [0, 70000, 1.5],
    "stream_open_timeout": [0, -1, "5s"],
    "stream_timeout": [-1, float("inf")],
    "send_timeout": [-1, "5s"],
    "best_effort_full_policy": ["block", None],
    "connection_buffer_size": [100, 1.5],
    "udp_recv_buffer_size": [-1],
    "udp_send_buffer_size": [1 << 31],
    "idle_timeout": [0],
    "tcp_max_connections": [0],
    "tcp_max_connections_per_source": [0],
    "tcp_preauth_max_frame_size": [10],
    "tcp_preauth_buffer_limit": [10],
    "tcp_frame_timeout": [0],
    "preauth_timeout": [0, -1],
    "max_rejected_frames": [0],
    "max_untrusted_connections_per_source": [0],
    "tcp_preauth_buffer_per_source": [10, 65 * 1024 * 1024],
    "reserved_member_connections": [-1, 1024],
    "max_member_dials": [0],
    "max_member_dials_per_host": [0, 2048],
    "max_other_dials": [0],
    "max_other_dials_per_host": [0, 65],
    "max_opening_streams_per_source": [0],
    "websocket_allowed_origins": ["https://a.example", ["https://a.example/path"], ["*"], [3]],
    "websocket_host_max_size": [-1],
    "gossip_interval": [0, -5],
    "gossip_max_interval": [0],
    "msg_history_gc_interval": [0],
    "msg_history_max_age": [0],
    "msg_history_shard_count": [3, 0],
    "msg_history_max_entries": [0, 8, 1 << 25],
    "node_shard_count": [6],
    "num_send_workers": [0, 1000],
    "send_queue_size": [0],
    "num_incoming_workers": [0],
    "incoming_packet_queue_depth": [0],
    "async_handler_limit": [0, 1 << 21, 2.5],
    "incoming_queue_max_bytes": [100, "1MB"],
    "health_check_interval": [0, float("inf")],
    "ping_timeout": [0],
    "enable_indirect_pings": ["on"],
    "suspect_retention_period": [0],
    "recovery_attempt_interval": [0],
    "dead_node_retention_period": [-1],
    "state_sync_interval": [-1],
    "fan_out_multiplier": [0, 1000],
    "state_exchange_multiplier": [0],
    "ttl_multiplier": [-1],
    "broadcast_redundancy": [0, 9, 1.5],
    "health_check_sample_size": [0],
    "activity_threshold_percent": [1.5],
    "suspect_threshold": [0],
    "suspect_attempt_interval": [0],
    "refutation_threshold": [0],
    "max_parallel_suspect_evaluations": [-1],
    "indirect_ping_multiplier": [-0.1],
    "indirect_checks": [-1, 100],
    "suspicion_mult": [0],
    "suspicion_max_timeout_mult": [0],
    "retransmit_mult": [0],
    "awareness_max_multiplier": [0],
    "dissemination_interval": [0],
    "dissemination_fan_out": [0],
    "gossip_to_the_dead_time": [-1],
    "dead_node_reclaim_time": [-1],
    "broadcast_queue_size": [1],
    "max_members": [0, 8, 1 << 23, "100"],
    "max_members_per_message": [0, 1 << 23],
    "max_members_per_source": [0, -5],
    "max_incarnation_jump": [0, 1 << 32, True],
    "max_pending_relays": [0, 1 << 21],
    "lifeguard_enabled": ["yes"],
    "tcp_pings": [None],
    "leave_timeout": [-1],
    "leave_attempts": [0, 101, 2.5],
    "join_timeout": [0],
    "adaptive_ping_timeout": [1, "yes"],
    "ping_timeout_max": [-1, "1s"],
    "adaptive_ping_percentile": [0.4, 1.1, "p99"],
    "adaptive_ping_factor": [0.9, 11, "x"],
    "adaptive_ping_samples": [3, 2000, 4.5],
    "join_retry_interval": [0, -1, "1s", 7200.0],
    "join_retry_max_interval": [0, -1, "1m"],
    "suspicion_history_size": [0, 2000, 1.5],
    "flap_window": [0, -1, "60s"],
    "flap_threshold": [1, 65, 2.5],
    "flap_damping": ["off", 1],
    "flap_damping_hold": [0, float("nan")],
    "partition_threshold": [0, 1.5, "30%"],
    "partition_window": [0, float("inf")],
    "partition_min_members": [0, 1.0],
    "incarnation_budget": [0, 1 << 32, True, 1.5],
    "incarnation_budget_window": [0.0, -1.0, float("inf"), "60"],
    "max_clock_drift": [0.0, -1.0, float("nan"), 1e9],
    "max_unconfirmed_share": [0.0, 1.5, float("nan"), "half"],
    "sender_key_cache_size": [0, 15, 1 << 21, None],
    "reconnect_interval": [-1, 0.001, float("inf"), "30s"],
    "reconnect_timeout": [-1, float("nan")],
    "max_reconnect_targets": [-1, 1.5, 1 << 21],
    "http_read_timeout": [0, -1, "10s"],
    "http_max_connections": [1, 1 << 17, 64.0],
    "http_max_event_streams": [0, 64, 1000],
    "http_event_queue_bytes": [1024, 1 << 31],
    "http_event_payload_bytes": [10, 1 << 19, 2 << 20],
}
FIELDS = [f.name for f in dataclasses.fields(Config)]
# Fields that take anything (an object the library duck-types later).
FREE: set[str] = set()


def test_every_field_has_a_bad_value_test() -> None:
    assert set(FIELDS) - FREE == set(BAD)


@pytest.mark.parametrize("field, value", [(f, v) for f, vs in BAD.items() for v in vs])
def test_bad_value_is_refused_naming_the_field(field: str, value: Any) -> None:
    cfg = default_config()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field.split("[")[0] == field
    assert field in str(info.value)


@pytest.mark.parametrize("preset", [Config.lan, Config.wan, Config.local, default_config])
def test_presets_are_valid(preset: Any) -> None:
    preset().validate()


def test_preset_numbers_follow_memberlist() -> None:
    lan, wan, local = Config.lan(), Config.wan(), Config.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.indirect_checks, lan.suspicion_mult) == (1.0, 0.5, 3, 4)
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.dissemination_fan_out) == (5.0, 3.0, 6, 4)
    assert (local.probe_timeout, local.indirect_checks, local.retransmit_mult, local.dissemination_interval) == \
        (0.2, 1, 2, 0.1)
    assert lan.push_pull_interval == 30.0 and wan.push_pull_interval == 60.0 and local.push_pull_interval == 15.0
    assert default_config() == Config.lan() == gossip.default_config()
    assert lan.gossip_interval == 5.0 and lan.dissemination_interval == 0.2   # two distinct periods


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"ping_timeout": 2.0, "health_check_interval": 1.0}, "ping_timeout"),
        ({"gossip_interval": 10.0, "gossip_max_interval": 5.0}, "gossip_max_interval"),
        ({"join_retry_interval": 10.0, "join_retry_max_interval": 5.0}, "join_retry_max_interval"),
        ({"ping_timeout": 0.5, "ping_timeout_max": 0.4}, "ping_timeout_max"),
        ({"dialer": lambda h, p, t: None, "transport": MemoryNetwork().new_transport()}, "dialer"),
        ({"listener": lambda k, h, p: None, "transport": MemoryNetwork().new_transport()}, "listener"),
        ({"health_check_interval": 1.0, "ping_timeout_max": 1.0}, "ping_timeout_max"),
        ({"udp_max_packet_size": 60000, "tcp_max_packet_size": 50000}, "udp_max_packet_size"),
        ({"tcp_max_packet_size": 9 << 20}, "tcp_max_packet_size"),
        ({"secondary_keys": [b"k" * 16]}, "secondary_keys"),
        ({"socket_transport_enabled": False}, "socket_transport_enabled"),
        ({"max_metadata_size": 2000}, "max_metadata_size"),
        ({"max_metadata_size": 1000}, "max_metadata_size"),     # no room left for the alive's other fields
        ({"msg_history_max_entries": 16, "msg_history_shard_count": 32}, "msg_history_max_entries"),
        ({"max_members_per_message": 2048, "max_members": 1024}, "max_members_per_message"),
        ({"encryption_key": b"k" * 16, "encrypt_outgoing": False}, "encrypt_outgoing"),
        # A node listens only on what it advertises, and the rest must be able to work.
        ({"websocket_bind_addr": "127.0.0.1:0"}, "websocket_bind_addr"),
        ({"advertise_addr": "wss://example.com/gossip"}, "advertise_addr"),
        ({"tls_cert_file": __file__}, "tls_cert_file"),
        ({"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0",
          "advertise_addr": "127.0.0.9:7946"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0",
          "advertise_addr": "wss://example.com/gossip"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0",
          "advertise_addr": "ws://127.0.0.1:9000/gossip", "tls_cert_file": __file__}, "advertise_addr"),
        ({"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0",
          "advertise_addr": "ws://127.0.0.1:9000/other"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "advertise_addr": "ws://gossip.example.com:80/gossip"},
         "advertise_addr"),
        ({"socket_transport_enabled": False, "websocket_bind_addr": "192.0.2.3:0"},
         "websocket_bind_addr"),
        ({"socket_transport_enabled": False, "advertise_addr": "wss://example.com/gossip",
          "tls_cert_file": __file__}, "tls_cert_file"),
        ({"tls_key_file": __file__}, "tls_key_file"),
        # HTTP: a node listens on one transport, on what it advertises
        ({"http_bind_addr": "127.0.0.1:0"}, "http_bind_addr"),
        ({"advertise_addr": "http://127.0.0.1:80/gossip"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "127.0.0.1:0",
          "websocket_bind_addr": "127.0.0.1:0"}, "websocket_bind_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "127.0.0.1:0",
          "advertise_addr": "127.0.0.9:7946"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "127.0.0.1:0",
          "advertise_addr": "https://127.0.0.1:9000/gossip"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "127.0.0.1:0",
          "advertise_addr": "http://127.0.0.1:9000/other"}, "advertise_addr"),
        ({"socket_transport_enabled": False, "advertise_addr": "http://gossip.example.com/gossip",
          "encryption_key": b"k" * 16}, "advertise_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "192.0.2.3:0",
          "encryption_key": b"k" * 16}, "http_bind_addr"),
        ({"socket_transport_enabled": False, "http_bind_addr": "192.0.2.3:0",
          "allow_insecure_http": True}, "encryption_key"),
        ({"wire_protocol": "memberlist", "socket_transport_enabled": True,
          "http_bind_addr": "127.0.0.1:0"}, "wire_protocol"),
        ({"wire_protocol": "memberlist", "cipher": "xchacha20-poly1305", "encryption_key": b"k" * 32},
         "cipher"),
        ({"wire_protocol": "memberlist", "compressor": "snappy"}, "compressor"),
        ({"wire_protocol": "memberlist", "tags": {"db"}}, "tags"),
        ({"tls_cert_file": __file__, "tls_server_context": __import__("ssl").create_default_context()},
         "tls_cert_file"),
        ({"tls_ca_file": __file__, "tls_client_context": __import__("ssl").create_default_context()},
         "tls_ca_file"),
        # The host's server (ASGI...) buffers a stranger's message whole: a token, or a small limit.
        ({"socket_transport_enabled": False, "advertise_addr": "wss://example.com/gossip"},
         "bearer_token"),
        ({"socket_transport_enabled": False, "advertise_addr": "wss://example.com/gossip",
          "websocket_host_max_size": 12 << 20}, "bearer_token"),
        ({"reserved_member_connections": 100, "tcp_max_connections": 100},
         "reserved_member_connections"),
        ({"tcp_preauth_buffer_per_source": 2 << 20, "tcp_preauth_buffer_limit": 1 << 20},
         "tcp_preauth_buffer_per_source"),
        ({"max_other_dials": 8, "max_other_dials_per_host": 9}, "max_other_dials_per_host"),
    ],
)
def test_contradictory_values_are_refused(changes: dict[str, Any], field: str) -> None:
    cfg = default_config().copy(**changes)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field == field


def test_aliases_read_and_write_the_same_field() -> None:
    cfg = default_config()
    cfg.probe_interval = 2.0
    cfg.probe_timeout = 0.7
    cfg.push_pull_interval = 45.0
    assert (cfg.health_check_interval, cfg.ping_timeout, cfg.state_sync_interval) == (2.0, 0.7, 45.0)
    assert cfg.copy(probe_interval=3.0).health_check_interval == 3.0
    with pytest.raises(ConfigError, match="no_such_field"):
        cfg.copy(no_such_field=1)


def test_good_objects_are_accepted() -> None:
    cfg = default_config().copy(logger=logging.getLogger("x"), encryption_key=b"k" * 32,
                                secondary_keys=[b"o" * 16], application_version_check=lambda v: True,
                                advertise_addr="srv+_gossip._tcp.example.com", bind_addr="[::1]:0")
    cfg.validate()


@pytest.mark.parametrize(
    "changes",
    [
        {"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0"},
        {"socket_transport_enabled": False, "websocket_bind_addr": "0.0.0.0:8080", "insecure": True},
        {"socket_transport_enabled": False, "websocket_bind_addr": "[::1]:0", "websocket_path": "/g/1"},
        {"socket_transport_enabled": False, "advertise_addr": "wss://gossip.example.com/gossip",
         "bearer_token": "t0ken", "encryption_key": b"k" * 32},
        {"socket_transport_enabled": False, "advertise_addr": "wss://gossip.example.com/gossip",
         "websocket_host_max_size": 512 * 1024, "encryption_key": b"k" * 32},
        {"socket_transport_enabled": False, "websocket_bind_addr": "0.0.0.0:8443",
         "advertise_addr": "wss://node5.example.com:8443/gossip", "tls_cert_file": __file__,
         "encryption_key": b"k" * 16},
        {"socket_transport_enabled": False, "websocket_bind_addr": "[::]:8080",
         "allow_insecure_websockets": True, "insecure": True},
        {"bearer_token": "s3cr3t-Token_with.chars~+/=", "tls_ca_file": __file__},
    ],
)
def test_websocket_configurations_that_work_are_accepted(changes: dict[str, Any]) -> None:
    default_config().copy(**changes).validate()


@pytest.mark.parametrize(
    "text, seconds",
    [("200ms", 0.2), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("250us", 0.00025), ("3", 3.0), ("0", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "fast", "-1s", "1d", "1.2.3s", "ms"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_from_env_round_trips() -> None:
    cfg = Config.wan(node_id="0191a4c2-3f4e-7d2a-9b1c-2d3e4f5a6b7c", encryption_key=b"\x01" * 32,
                     secondary_keys=[b"\x02" * 16, b"\x03" * 24], cluster_label="prod", compressor=None,
                     msg_codec="json", dissemination_interval=0.25, lifeguard_enabled=False)
    env = cfg.to_env()
    back = Config.from_env(environ=env)
    assert back == cfg
    back.validate()


def test_from_env_reads_units_aliases_and_presets() -> None:
    env = {"GOSSIP_PRESET": "local", "GOSSIP_PROBE_INTERVAL": "2s", "GOSSIP_PING_TIMEOUT": "300ms",
           "GOSSIP_BIND_ADDR": "0.0.0.0:7946", "GOSSIP_FORCE_RELIABLE_TRANSPORT": "yes",
           "GOSSIP_ENCRYPTION_KEY": "00" * 16, "OTHER": "ignored"}
    cfg = Config.from_env(environ=env)
    assert cfg.health_check_interval == 2.0 and cfg.ping_timeout == pytest.approx(0.3)
    assert cfg.indirect_checks == 1                  # from the local preset
    assert cfg.force_reliable_transport is True and cfg.encryption_key == bytes(16)
    assert cfg.bind_addr == "0.0.0.0:7946"


@pytest.mark.parametrize(
    "env, field",
    [
        ({"GOSSIP_PROBE_INTERVAL": "soon"}, "health_check_interval"),
        ({"GOSSIP_NUM_SEND_WORKERS": "many"}, "num_send_workers"),
        ({"GOSSIP_PREFER_IPV6": "maybe"}, "prefer_ipv6"),
        ({"GOSSIP_ENCRYPTION_KEY": "!!not base64!!"}, "encryption_key"),
        ({"GOSSIP_LOGGER": "x"}, "logger"),
        ({"GOSSIP_PRESET": "moon"}, "preset"),
    ],
)
def test_from_env_bad_values_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env(environ=env)
    assert info.value.field == field


def test_cluster_refuses_bad_config_naming_the_field() -> None:
    cfg = default_config()
    cfg.num_send_workers = 0
    with pytest.raises(ConfigError, match="num_send_workers"):
        gossip.Cluster(cfg)


def test_bounds_are_read_from_the_environment() -> None:
    env = {"GOSSIP_MAX_MEMBERS": "5000", "GOSSIP_MAX_INCARNATION_JUMP": "64", "GOSSIP_REPLAY_WINDOW": "90s",
           "GOSSIP_REQUIRE_ENCRYPTION": "false", "GOSSIP_MSG_HISTORY_MAX_ENTRIES": "1024",
           "GOSSIP_MAX_PENDING_RELAYS": "8", "GOSSIP_LEAVE_ATTEMPTS": "2"}
    cfg = Config.from_env(environ=env)
    assert (cfg.max_members, cfg.max_incarnation_jump, cfg.replay_window, cfg.require_encryption,
            cfg.msg_history_max_entries, cfg.max_pending_relays, cfg.leave_attempts) == \
        (5000, 64, 90.0, False, 1024, 8, 2)
    cfg.validate()
    with pytest.raises(ConfigError) as info:
        Config.from_env(environ={"GOSSIP_MAX_MEMBERS": "0"}).validate()
    assert info.value.field == "max_members"


@pytest.mark.parametrize("require, encrypt", [(False, False), (False, True), (True, True)])
def test_every_step_of_the_encryption_upgrade_is_valid(require: bool, encrypt: bool) -> None:
    Config.lan(encryption_key=b"k" * 32, require_encryption=require, encrypt_outgoing=encrypt).validate()
    Config.lan(require_encryption=require, encrypt_outgoing=encrypt).validate()   # no key: no effect


# -------------------------------------------------------------------------------- secure by default


@pytest.mark.parametrize("changes, exposed", [
    ({"bind_addr": "0.0.0.0:7946"}, "0.0.0.0:7946"),
    ({"bind_addr": "[::]:0"}, "[::]:0"),
    ({"bind_addr": "192.0.2.7:7946"}, "192.0.2.7:7946"),
    ({"bind_addr": "127.0.0.1:7946", "advertise_addr": "198.51.100.3:7946"}, "198.51.100.3:7946"),
    ({"socket_transport_enabled": False, "websocket_bind_addr": "0.0.0.0:0"}, "0.0.0.0:0"),
    ({"socket_transport_enabled": False, "advertise_addr": "wss://node.example.com/gossip",
      "websocket_host_max_size": 512 * 1024}, "wss://node.example.com/gossip"),
])
def test_a_node_reachable_beyond_loopback_needs_a_key_or_insecure(changes: dict[str, Any], exposed: str) -> None:
    cfg = default_config().copy(**changes)
    assert cfg.exposed_address() == exposed
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field == "encryption_key"
    text = str(info.value)
    assert exposed in text and "gossip keygen" in text and "insecure=True" in text
    assert "GOSSIP_INSECURE=1" in text and "--insecure" in text and "trusted" in text
    cfg.copy(encryption_key=b"k" * 32).validate()
    cfg.copy(insecure=True).validate()
    with pytest.raises(ConfigError):
        gossip.Cluster(cfg)                      # refused before anything is bound


@pytest.mark.parametrize("changes", [
    {}, {"bind_addr": "127.0.0.1:0"}, {"bind_addr": "[::1]:0"}, {"bind_addr": "127.8.9.10:7946"},
    {"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0"},
    {"socket_transport_enabled": False, "advertise_addr": "ws://localhost:8080/gossip",
     "websocket_host_max_size": 512 * 1024},
])
def test_loopback_stays_keyless(changes: dict[str, Any]) -> None:
    cfg = default_config().copy(**changes)
    assert cfg.exposed_address() == ""
    cfg.validate()


def test_insecure_comes_from_the_environment() -> None:
    env = {"GOSSIP_BIND_ADDR": "0.0.0.0:7946"}
    with pytest.raises(ConfigError, match="encryption_key"):
        Config.from_env(environ=env).validate()
    cfg = Config.from_env(environ={**env, "GOSSIP_INSECURE": "1"})
    assert cfg.insecure is True
    cfg.validate()


def test_an_insecure_node_says_so_at_start(caplog: pytest.LogCaptureFixture) -> None:
    # Advertised beyond loopback, bound on loopback: nothing is reachable from elsewhere in fact.
    cfg = Config.local(bind_addr="127.0.0.1:0", advertise_addr="192.0.2.1:7946", insecure=True)
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with gossip.Cluster(cfg):
            pass
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("insecure=True" in m and "192.0.2.1:7946" in m and "without encryption" in m
               for m in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with gossip.Cluster(Config.local(bind_addr="127.0.0.1:0")):
            pass
    assert not [r for r in caplog.records if "insecure" in r.getMessage()]


# -------------------------------------------------------------------------------- secrets


def test_repr_never_shows_keys_or_tokens() -> None:
    key, old, token = bytes(range(32)), b"\xa5" * 16, "Zm9vYmFyYmF6cXV4"
    cfg = Config.lan(encryption_key=key, secondary_keys=[old], bearer_token=token)
    for text in (repr(cfg), str(cfg), repr(cfg.frozen()), repr(gossip.Cluster(cfg).config)):
        assert key.hex() not in text and repr(key)[2:20] not in text and old.hex() not in text
        assert repr(old)[2:14] not in text and token not in text
        assert "encryption_key=<32-byte key>" in text and "secondary_keys=[<16-byte key>]" in text
        assert "bearer_token='<redacted>'" in text and "cluster_label=''" in text
    assert "encryption_key=None" in repr(Config()) and "bearer_token=''" in repr(Config())


@pytest.mark.parametrize("variable, value, words", [
    ("GOSSIP_ENCRYPTION_KEY", "c2VjcmV0LW5vdC1hLWtleS14eXo=", "decodes to 20 bytes"),
    ("GOSSIP_ENCRYPTION_KEY", "c2VjcmV0LW5vdC1hLWtleS14eXo", "not a key"),     # padding dropped
    ("GOSSIP_ENCRYPTION_KEY", "0123456789abcdef0123456789abcdef0123", "decodes to 27 bytes"),
    ("GOSSIP_ENCRYPTION_KEY", "c2VjcmV0", "decodes to 6 bytes"),
    ("GOSSIP_SECONDARY_KEYS", "00" * 16 + ",hunter2hunter2", "not a key"),
])
def test_a_bad_key_in_the_environment_is_described_never_echoed(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env(environ={variable: value})
    text = str(info.value)
    assert words in text and "gossip keygen" in text and variable in text
    assert "padding" not in text.lower()
    for secret in value.split(","):
        if secret != "00" * 16:
            assert secret not in text and secret[:8] not in text, text


# -------------------------------------------------------------------------------- the environment


def test_unrelated_gossip_variables_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    env = {"GOSSIP_TOKEN": "t", "GOSSIP_STREAM_DIR": "/tmp/x", "GOSSIP_AGENT": "127.0.0.1:7980",
           "GOSSIP_WHATEVER_ELSE": "1", "GOSSIP_PROBE_INTERVAL": "2s"}
    with caplog.at_level(logging.WARNING, logger="gossip.config"):
        cfg = Config.from_env(environ=env)
    assert cfg.health_check_interval == 2.0
    assert caplog.records == []


@pytest.mark.parametrize("variable, meant", [
    ("GOSSIP_PROBE_INTERVL", "GOSSIP_PROBE_INTERVAL"),
    ("GOSSIP_ENCRYPTON_KEY", "GOSSIP_ENCRYPTION_KEY"),
    ("GOSSIP_CLUSTER_LABLE", "GOSSIP_CLUSTER_LABEL"),
    ("GOSSIP_BIND_ADR", "GOSSIP_BIND_ADDR"),
])
def test_a_near_miss_of_a_field_name_is_warned_about(caplog: pytest.LogCaptureFixture, variable: str,
                                                     meant: str) -> None:
    with caplog.at_level(logging.WARNING, logger="gossip.config"):
        cfg = Config.from_env(environ={variable: "x"})
    assert cfg == Config.lan()
    [record] = caplog.records
    assert variable in record.getMessage() and meant in record.getMessage()
    with pytest.raises(ConfigError, match=f"names no Config field .*{meant}"):
        Config.from_env(environ={variable: "x"}, strict=True)


# -------------------------------------------------------------------------------- one default port


def test_one_default_port_everywhere() -> None:
    from gossip.address import DEFAULT_PORT, Address
    from gossip.cli.agent import build_settings
    from gossip.cli import build_parser

    cfg = Config()
    assert cfg.default_port == DEFAULT_PORT == 7946
    assert cfg.bind_addr.endswith(":7946")
    assert str(Address.parse("127.0.0.1")) == "127.0.0.1:7946"
    agent = build_settings(build_parser().parse_args(["agent"]), {})
    assert agent.config.bind_addr == "127.0.0.1:7946" and agent.config.default_port == 7946


def test_tags_are_validated_against_the_metadata_bound_and_read_from_the_environment() -> None:
    cfg = Config.local(tags={f"tag-{i:03d}" for i in range(60)}, max_metadata_size=256)
    with pytest.raises(ConfigError, match="tags.*max_metadata_size"):
        cfg.validate()
    env = Config.from_env(environ={"GOSSIP_TAGS": "gpu, zone=eu-1"})
    assert set(env.tags) == {"gpu", "zone=eu-1"}
    env.validate()
    assert env.copy(tags={"a", "b"}).to_env()["GOSSIP_TAGS"] == "a,b"
