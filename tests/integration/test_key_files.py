"""Key files that others can read are warned about when they are loaded (the agent's
``--key-file``: tests/test_agent_settings.py; a node's TLS key: here, on loopback)."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

from gossip import Cluster, Config

from .tls import make_pki

pytestmark = pytest.mark.integration


def test_a_tls_key_others_can_read_is_warned_about_at_start(tmp_path: pathlib.Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    pki = make_pki(tmp_path)
    os.chmod(pki.key, 0o644)
    cfg = Config.local(socket_transport_enabled=False, websocket_bind_addr="127.0.0.1:0",
                       tls_cert_file=pki.cert, tls_key_file=pki.key)
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with Cluster(cfg):
            pass
    warned = [r.getMessage() for r in caplog.records if "TLS key" in r.getMessage()]
    assert warned and pki.key in warned[0] and "chmod 600" in warned[0]
    os.chmod(pki.key, 0o600)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gossip"):
        with Cluster(cfg):
            pass
    assert not [r for r in caplog.records if "TLS key" in r.getMessage()]
