"""The settings both socket-based transports share (:mod:`gossip.transports.limits`): one default,
one check, one meaning."""

from __future__ import annotations

import dataclasses

import pytest

from gossip import Config
from gossip.transports.limits import ConnectionLimits, limits_from_config
from gossip.transports.socket import SocketTransport
from gossip.transports.websocket import WebSocketTransport


def test_both_transports_start_from_the_same_defaults() -> None:
    assert SocketTransport("127.0.0.1:0").limits == ConnectionLimits()
    assert WebSocketTransport("127.0.0.1:0").limits == ConnectionLimits()


@pytest.mark.parametrize("field, value", [
    ("max_frame_size", 0), ("max_frame_size", 1 << 32), ("max_stream_frame_size", -1),
    ("dial_timeout", 0), ("io_timeout", -1.0), ("idle_timeout", 0), ("preauth_timeout", 0),
    ("frame_timeout", 0), ("conn_buffer_size", 0), ("max_connections", 0),
    ("max_connections_per_source", 0), ("preauth_max_frame_size", 0),
    ("preauth_buffer_limit", 0), ("preauth_buffer_per_source", 0), ("max_rejected_frames", 0),
    ("max_untrusted_per_source", 0), ("max_member_dials", 0), ("max_other_dials_per_host", 0),
    ("reserved_for_members", -1), ("reserved_for_members", 1024),
])
def test_a_bad_value_is_refused_by_name_the_same_way_by_both_transports(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**{field: value})
    with pytest.raises(ValueError, match=field):
        SocketTransport("127.0.0.1:0", **{field: value})
    with pytest.raises(ValueError, match=field):
        WebSocketTransport("127.0.0.1:0", **{field: value})


def test_an_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="frame_timout"):
        SocketTransport("127.0.0.1:0", frame_timout=1.0)
    with pytest.raises(TypeError, match="frame_timout"):
        ConnectionLimits().replace(frame_timout=1.0)


def test_keywords_override_the_limits_given() -> None:
    base = ConnectionLimits(idle_timeout=5.0, frame_timeout=3.0)
    t = WebSocketTransport("", limits=base, idle_timeout=7.0)
    assert t.limits == dataclasses.replace(base, idle_timeout=7.0)


def test_the_config_fields_map_onto_the_limits() -> None:
    cfg = Config.local(bind_addr="127.0.0.1:0", tcp_max_packet_size=2 << 20,
                       stream_max_packet_size=3 << 20, tcp_frame_timeout=4.0, preauth_timeout=6.0,
                       tcp_preauth_buffer_limit=32 << 20, tcp_preauth_buffer_per_source=4 << 20,
                       max_untrusted_connections_per_source=5, reserved_member_connections=7)
    limits = limits_from_config(cfg)
    assert limits.max_frame_size == 2 << 20
    assert limits.max_stream_frame_size == (3 << 20) + 1024  # room for a stream frame's header
    assert (limits.frame_timeout, limits.preauth_timeout) == (4.0, 6.0)
    assert (limits.preauth_buffer_limit, limits.preauth_buffer_per_source) == (32 << 20, 4 << 20)
    assert (limits.max_untrusted_per_source, limits.reserved_for_members) == (5, 7)
    assert limits.io_timeout == cfg.tcp_deadline and limits.dial_timeout == cfg.tcp_dial_timeout


def test_the_preauth_byte_budget_bounds_both_transports() -> None:
    limits = ConnectionLimits(preauth_max_frame_size=1 << 20, preauth_buffer_limit=3 << 20,
                              preauth_buffer_per_source=2 << 20, max_untrusted_per_source=8)
    # TCP measures the bytes each untrusted connection holds.
    measured = limits.measured_admission(None)
    assert (measured.preauth_bytes, measured.preauth_bytes_per_source) == (3 << 20, 2 << 20)
    # WebSocket reserves each one's worst case: three in all, two per source.
    reserved = limits.reserved_admission(None)
    tickets = [reserved.admit(f"127.0.0.{i}") for i in (1, 1, 1, 2, 3)]
    assert tickets[2] == "untrusted_per_source_refused"
    assert tickets[4] == "untrusted_refused"
    assert not isinstance(tickets[3], str)


def test_the_preauth_frame_never_exceeds_the_frame_limit() -> None:
    assert ConnectionLimits(max_frame_size=1000, preauth_max_frame_size=5000).preauth_frame == 1000
