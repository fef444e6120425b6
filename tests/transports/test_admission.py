"""The shared admission counts (:mod:`gossip.transports._admission`) and the WebSocket token's
challenge-response (:mod:`gossip.transports._wsauth`), without sockets."""

from __future__ import annotations

import pytest

from gossip.transports import _wsauth as wsauth
from gossip.transports._admission import (
    REJECTED,
    REJECTED_PER_SOURCE,
    REJECTED_RESERVED,
    UNTRUSTED_PER_SOURCE_REFUSED,
    UNTRUSTED_REFUSED,
    Admission,
    DialBudget,
    Ticket,
    host_of,
)


@pytest.mark.parametrize("addr, host", [
    ("127.0.0.1:7946", "127.0.0.1"),
    ("[::1]:7946", "::1"),
    ("[fe80::1%eth0]:80", "fe80::1"),
    ("ws://Node-7.Example.com:8080/gossip", "node-7.example.com"),
    ("wss://[::1]/gossip?x=1", "::1"),
    ("wss://user@host.example/gossip", "host.example"),
    ("127.0.0.3", "127.0.0.3"),
    ("::1", "::1"),
])
def test_host_of(addr: str, host: str) -> None:
    assert host_of(addr) == host


def _admit(adm: Admission, ip: str) -> Ticket:
    t = adm.admit(ip)
    assert isinstance(t, Ticket), t
    return t


def test_slots_per_source_untrusted_and_reserved_for_members() -> None:
    adm = Admission(max_connections=7, max_per_source=4, reserved_for_members=2, max_untrusted=3,
                    max_untrusted_per_source=2, is_member=lambda ip: ip == "127.0.0.1")
    a1, a2 = _admit(adm, "127.0.0.2"), _admit(adm, "127.0.0.2")
    assert adm.admit("127.0.0.2") == UNTRUSTED_PER_SOURCE_REFUSED
    adm.trust(a1)
    adm.trust(a1)  # idempotent
    _admit(adm, "127.0.0.3")
    _admit(adm, "127.0.0.4")
    assert adm.admit("127.0.0.5") == UNTRUSTED_REFUSED  # a2 and the two others: 3 untrusted
    adm.trust(a2)
    _admit(adm, "127.0.0.5")
    assert adm.admit("127.0.0.6") == REJECTED_RESERVED  # 5 held: the last 2 are members'
    m1, m2 = _admit(adm, "127.0.0.1"), _admit(adm, "127.0.0.1")  # members skip untrusted caps
    assert adm.admit("127.0.0.1") == REJECTED
    assert adm.connections == 7 and adm.untrusted == 5
    for t in (m1, m2, a1):
        adm.release(t)
        adm.release(t)  # idempotent
    assert adm.connections == 4 and adm.untrusted == 3
    small = Admission(max_connections=9, max_per_source=2, max_untrusted_per_source=9)
    small.trust(_admit(small, "127.0.0.9"))
    _admit(small, "127.0.0.9")
    assert small.admit("127.0.0.9") == REJECTED_PER_SOURCE


def test_the_largest_holder_is_the_one_to_close() -> None:
    adm = Admission(max_connections=10, max_per_source=10, max_untrusted=10,
                    max_untrusted_per_source=10, preauth_bytes=1000, preauth_bytes_per_source=600)
    hog = [_admit(adm, "127.0.0.2") for _ in range(3)]
    for t, owner in zip(hog, "abc"):
        t.owner = owner
    newcomer = _admit(adm, "127.0.0.3")
    newcomer.owner = "new"
    assert adm.hold(hog[0], 300) == [] and adm.hold(hog[1], 250) == []
    assert adm.hold(hog[2], 100) == ["a"]  # the host is over its own 600: its largest goes
    adm.release(hog[0])
    assert adm.held_bytes == 350
    assert adm.hold(newcomer, 500) == []
    assert adm.hold(newcomer, 700) == ["new"]  # now it holds the most of the 1000
    adm.trust(newcomer)
    assert adm.held_bytes == 350  # trusted connections hold nothing against the budget


def test_dial_budgets_are_separate_and_capped_per_host() -> None:
    budget = DialBudget(max_members=3, max_per_member_host=2, max_others=2, max_per_other_host=1,
                        is_member=lambda host: host == "127.0.0.1")
    s1 = budget.acquire("ws://127.0.0.9:1/gossip")
    assert not isinstance(s1, str)
    assert budget.acquire("ws://127.0.0.9:2/gossip") == "dial_refused_other_host"
    s2 = budget.acquire("127.0.0.8:7946")
    assert not isinstance(s2, str)
    assert budget.acquire("127.0.0.7:7946") == "dial_refused_others"
    m = [budget.acquire("127.0.0.1:7946"), budget.acquire("ws://127.0.0.1:8/gossip")]
    assert all(not isinstance(s, str) for s in m)  # the strangers' dials took nothing of these
    assert budget.acquire("127.0.0.1:7947") == "dial_refused_member_host"
    assert budget.counts() == (2, 2)
    budget.release(s1)
    budget.release(s1)
    assert budget.acquire("127.0.0.7:7946") is not None and budget.counts() == (2, 2)
    assert not isinstance(DialBudget(max_members=1, max_per_member_host=1, max_others=1,
                                     max_per_other_host=1).acquire("127.0.0.50:1"), str)


def test_the_challenge_response_is_mutual_and_bound() -> None:
    token = "t-9f2c"
    cnonce = wsauth.new_client_nonce()
    nonces = wsauth.ServerNonces(ttl=5.0)
    snonce = nonces.issue()
    proof = wsauth.server_proof(token, cnonce, snonce)
    assert wsauth.parse_challenge(wsauth.challenge_value(snonce, proof)) == (snonce, proof)
    assert wsauth.parse_challenge('Bearer realm="gossip"') is None
    # The server's proof names the client's nonce: it is no proof for another dial.
    assert not wsauth.verify(wsauth.server_proof(token, wsauth.new_client_nonce(), snonce), proof)
    assert not wsauth.verify(wsauth.server_proof("another", cnonce, snonce), proof)
    client = wsauth.client_proof(token, cnonce, snonce, "frames")
    assert client != proof  # a server's proof is never a client's
    assert not wsauth.verify(wsauth.client_proof(token, cnonce, snonce, "stream"), client)
    assert wsauth.parse_auth(wsauth.auth_value(snonce, cnonce, client)) == (snonce, cnonce, client)
    assert wsauth.parse_auth('nonce="x"') is None
    assert nonces.accept(snonce) == ""
    assert nonces.accept(snonce) == "nonce already used"
    assert wsauth.ServerNonces(ttl=5.0).accept(nonces.issue()) == "not a nonce of this listener"
    assert nonces.accept("@@@") == "malformed nonce"
    assert wsauth.ServerNonces(ttl=-1.0).accept(nonces.issue()) != ""
    assert wsauth.valid_client_nonce(cnonce) and not wsauth.valid_client_nonce("short")
