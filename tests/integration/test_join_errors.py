"""Joins that fail say why, over real sockets on loopback.

A seed with another encryption key or cluster label must not look like a dead one: the seed
warns (once per source) and counts, and the joiner's error names the likely causes, or the
exact one when it could read that much. A join that succeeds through one seed still reports
every seed that failed. Every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import pathlib
import pickle
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gossip import Cluster, Config, JoinError, JoinOutcome, Keyring
from gossip.packet import PacketCodec
from gossip.security import cipher_available
from gossip.wire import MessageType

from . import loopback_blackhole, scaled, wait_until
from .tls import make_pki

K1, K2 = os.urandom(32), os.urandom(32)


@contextmanager
def _nodes(*configs: dict[str, Any]) -> Iterator[list[Cluster]]:
    clusters = []
    try:
        for kw in configs:
            kw = dict(kw)
            c = Cluster(Config.local(bind_addr=kw.pop("bind", "127.0.0.1:0"), **kw))
            c.start()
            clusters.append(c)
        yield clusters
    finally:
        for c in clusters:
            c.stop(timeout=2.0)


def _why_not(joiner: Cluster, seed: str, timeout: float) -> str:
    """Join ``seed``, which must fail; return the reason given for it."""
    with pytest.raises(JoinError) as info:
        joiner.join(seed, timeout=scaled(timeout))
    return info.value.failures[seed]


def _refusals(caplog: pytest.LogCaptureFixture, host: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith(f"refused packets from {host}:")]


def test_a_joiner_with_another_key_is_told_and_the_seed_warns_once_per_source(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gossip")
    with _nodes({"encryption_key": K1}, {"encryption_key": K2},
                {"encryption_key": K2}) as (seed, j1, j2):
        why = _why_not(j1, seed.address, 3.0)
        assert "accepted the connection" in why
        assert "another encryption key or cluster label" in why
        assert seed.stats().get("bad_packets.AuthenticationError", 0) >= 1
        warnings = _refusals(caplog, "127.0.0.1")
        assert len(warnings) == 1 and "another encryption key" in warnings[0]
        # A second node from the same host: counted, not logged again (once per source).
        before = seed.stats()["bad_packets.AuthenticationError"]
        with pytest.raises(JoinError):
            j2.join(seed.address, timeout=scaled(3.0))
        assert seed.stats()["bad_packets.AuthenticationError"] > before
        assert len(_refusals(caplog, "127.0.0.1")) == 1
        # Another source is another warning: datagrams of a node with K2 at 127.0.0.2.
        other = PacketCodec(keyring=Keyring([K2]))
        host, _, port = seed.address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.2", 0))
            for i in range(3):
                udp.sendto(other.encode(int(MessageType.PING), b"\x07" * 16, i + 1, 1, [i]),
                           (host, int(port)))
            wait_until(lambda: len(_refusals(caplog, "127.0.0.2")) == 1, 5.0,
                       "the seed warned about the second source")
        wait_until(lambda: seed.stats()["bad_packets.AuthenticationError"] >= before + 4, 5.0,
                   "every refused datagram counted")
        assert len(_refusals(caplog, "127.0.0.2")) == 1


def test_a_joiner_with_another_label_is_told_and_the_seed_warns(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gossip")
    with _nodes({"cluster_label": "blue"}, {"cluster_label": "green"}) as (seed, joiner):
        with pytest.raises(JoinError, match="another encryption key or cluster label"):
            joiner.join(seed.address, timeout=scaled(3.0))
        assert seed.stats().get("bad_packets.LabelMismatch", 0) >= 1
        warnings = _refusals(caplog, "127.0.0.1")
        assert len(warnings) == 1 and "another cluster label" in warnings[0]


def test_a_seed_whose_answer_fails_authentication_is_named_exactly(
        caplog: pytest.LogCaptureFixture) -> None:
    # The seed holds the joiner's key as a secondary (it reads the join) but seals with another
    # primary: the joiner gets an answer it cannot open, and says exactly that.
    caplog.set_level(logging.WARNING, logger="gossip")
    with _nodes({"encryption_key": K2, "secondary_keys": [K1]},
                {"encryption_key": K1}) as (seed, joiner):
        why = _why_not(joiner, seed.address, 30.0)
        assert "the seed answered, but this node refused its answer" in why
        assert "the seed has another encryption key (AuthenticationError" in why
        assert joiner.stats().get("bad_packets.AuthenticationError", 0) >= 1
        assert len(_refusals(caplog, "127.0.0.1")) == 1


def test_a_seed_that_never_answers_is_named_as_possibly_down_or_of_another_cluster() -> None:
    # The dial hangs (a loopback blackhole) past the join's timeout: nothing at all is known.
    with _nodes({"tcp_dial_timeout": 30.0}) as (joiner,), loopback_blackhole() as addr:
        why = _why_not(joiner, addr, 1.0)
        assert "the seed may be down, or have another encryption key or cluster label" in why


# ---------------------------------------------------------------------------------- partial joins


def test_a_partial_join_lists_every_seed_that_failed_and_warns(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    # A wss:// seed whose certificate this node cannot verify (a private CA it was not given),
    # a seed that is down, and one good seed: the join succeeds, and says what failed.
    caplog.set_level(logging.WARNING, logger="gossip")
    pki = make_pki(tmp_path)
    with _nodes({"socket_transport_enabled": False, "websocket_bind_addr": "127.0.0.1:0",
                 "tls_cert_file": pki.cert, "tls_key_file": pki.key},
                {}, {}) as (wss_seed, good_seed, joiner), socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a dial is refused at once
        down = f"127.0.0.1:{closed.getsockname()[1]}"
        assert wss_seed.address.startswith("wss://")
        outcome = joiner.join([wss_seed.address, good_seed.address, down],
                              timeout=scaled(10.0))
        assert outcome == 1 and isinstance(outcome, int)  # what join() always returned
        assert isinstance(outcome, JoinOutcome) and not outcome.complete
        assert outcome.joined == (good_seed.address,)
        assert set(outcome.failures) == {wss_seed.address, down}
        assert "certificate" in outcome.failures[wss_seed.address].lower()
        assert "ConnectError" in outcome.failures[down]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and r.getMessage().startswith("joined through 1 of 3 peers")]
        assert len(warnings) == 1
        assert wss_seed.address in warnings[0] and down in warnings[0]
        # A join through every seed it was given is complete, and says nothing.
        again = joiner.join(good_seed.address, timeout=scaled(5.0))
        assert again == 1 and again.complete and again.failures == {}
        assert pickle.loads(pickle.dumps(outcome)).failures == outcome.failures


@pytest.mark.skipif(not cipher_available("xchacha20-poly1305"),
                    reason="PyNaCl is not installed (the xchacha extra: "
                           "pip install 'gossip-cluster[xchacha]')")
@pytest.mark.parametrize("seed_cipher,joiner_cipher", [("aes-gcm", "xchacha20-poly1305"),
                                                       ("xchacha20-poly1305", "aes-gcm")])
def test_nodes_of_different_ciphers_cannot_join_and_are_told_why(
        caplog: pytest.LogCaptureFixture, seed_cipher: str, joiner_cipher: str) -> None:
    # The same key, the same label: only the cipher differs. The seed refuses the join from its
    # clear flags, before trying to open it, and says which cipher each side uses.
    caplog.set_level(logging.WARNING, logger="gossip")
    with _nodes({"encryption_key": K1, "cipher": seed_cipher},
                {"encryption_key": K1, "cipher": joiner_cipher}) as (seed, joiner):
        why = _why_not(joiner, seed.address, 3.0)
        assert "another cipher" in why
        assert seed.stats().get("bad_packets.CipherMismatch", 0) >= 1
        assert seed.stats().get("bad_packets.AuthenticationError", 0) == 0
        warnings = _refusals(caplog, "127.0.0.1")
        assert len(warnings) == 1, warnings
        assert f"packet sealed with {joiner_cipher}, this node uses {seed_cipher}" in warnings[0]
        assert "is it a node with another cipher (Config.cipher)?" in warnings[0]
        assert seed.num_nodes() == 1 and joiner.num_nodes() == 1
