"""Moving a running plain cluster to encryption, one rolling step at a time (memberlist's
GossipVerifyIncoming / GossipVerifyOutgoing): every step talks with the steps next to it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import gossip
from gossip import Cluster, Config, NodeState
from gossip.transports.memory import MemoryNetwork

KEY = bytes(range(32))
STAGES: dict[str, dict[str, object]] = {
    "plain": {},
    "keys installed": {"encryption_key": KEY, "require_encryption": False, "encrypt_outgoing": False},
    "encrypting": {"encryption_key": KEY, "require_encryption": False},
    "required": {"encryption_key": KEY},
}


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("a, b", [("plain", "keys installed"), ("keys installed", "encrypting"),
                                  ("encrypting", "required")])
def test_neighbouring_stages_form_one_cluster(a: str, b: str) -> None:
    net = MemoryNetwork(seed=31)
    first = Cluster(Config.local(transport=net.new_transport(), **STAGES[a]))  # type: ignore[arg-type]
    second = Cluster(Config.local(transport=net.new_transport(), **STAGES[b]))  # type: ignore[arg-type]
    with first, second:
        assert second.join(first.address, timeout=5.0) == 1
        for c, other in ((first, second), (second, first)):
            wait_until(lambda c=c, other=other: (n := c.get_node(other.local_node().id)) is not None
                       and n.state is NodeState.ALIVE, what=f"{a} and {b} to see each other")
        for c in (first, second):
            if c.config.encryption_key and c.config.encrypt_outgoing:
                assert c.stats()["keyring.primary_seals"] > 0


def test_a_node_that_requires_encryption_refuses_a_plain_one() -> None:
    net = MemoryNetwork(seed=32)
    plain = Cluster(Config.local(transport=net.new_transport()))
    strict = Cluster(Config.local(transport=net.new_transport(), encryption_key=KEY))
    with plain, strict:
        with pytest.raises(gossip.JoinError):
            plain.join(strict.address, timeout=1.0)
        wait_until(lambda: strict.stats().get("bad_packets.EncryptionError", 0) > 0,
                   what="the plain join to be refused")
        assert strict.num_alive_nodes() == 1
