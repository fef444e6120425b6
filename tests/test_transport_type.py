"""``gossip.TransportType`` and the ``transport=`` argument of every send: ``RELIABLE`` sends as
the ``*_reliable`` twin does, ``BEST_EFFORT`` (the default) as the plain method does, on the
Cluster and on node groups. The in-memory transport records what the engine asked of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gossip
from gossip import Cluster, Config, NodeGroup, TransportType
from gossip.errors import LocalProtocolError
from gossip.testing import wait_until
from gossip.transports.memory import MemoryNetwork, MemoryTransport

T = gossip.USER_MSG + 7


class Recording:
    """Wraps a memory transport's send to note (destination, reliable) of each user packet."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.sent: list[tuple[str, bool]] = []
        self._send = transport.send
        transport.send = self.send  # type: ignore[method-assign]

    def send(self, addr: str, data: bytes, reliable: bool = False, timeout: float | None = None) -> None:
        if b"user-payload" in data:
            self.sent.append((addr, reliable))
        self._send(addr, data, reliable, timeout)

    def take(self) -> list[tuple[str, bool]]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def three() -> Iterator[tuple[list[Cluster], Recording]]:
    net = MemoryNetwork(seed=3)
    first = net.new_transport()
    rec = Recording(first)
    clusters = [Cluster(Config.local(transport=t, compressor=None))
                for t in (first, net.new_transport(), net.new_transport())]
    for c in clusters:
        c.local_metadata().set_string("role", "worker")
        c.start()
    for c in clusters[1:]:
        assert c.join(clusters[0].address, timeout=5.0) == 1
    wait_until(lambda: all(c.num_alive_nodes() == 3 for c in clusters), what="three members")
    yield clusters, rec
    for c in clusters:
        c.stop(timeout=2.0)


def test_the_enum_is_gos() -> None:
    assert (int(TransportType.BEST_EFFORT), int(TransportType.RELIABLE)) == (0, 1)
    assert gossip.TransportType is TransportType and "TransportType" in gossip.__all__


def _delivered(clusters: list[Cluster], got: list[Any], n: int) -> None:
    wait_until(lambda: len(got) >= n, what=f"{n} deliveries")


@pytest.mark.parametrize("transport,reliable", [(None, False), (TransportType.BEST_EFFORT, False),
                                                (TransportType.RELIABLE, True)],
                         ids=["default", "best-effort", "reliable"])
def test_each_send_takes_the_transport_it_is_given(
        three: tuple[list[Cluster], Recording], transport: TransportType | None, reliable: bool) -> None:
    (a, b, c), rec = three
    got: list[Any] = []
    for x in (b, c):
        x.handle_func_no_forward(T, lambda s, p: got.append(p.unmarshal()))
    kw: dict[str, Any] = {} if transport is None else {"transport": transport}
    nb, nc = a.get_node(b.local_node().id), a.get_node(c.local_node().id)
    assert nb is not None and nc is not None
    sends = {
        "send_to": lambda: a.send_to(nb, T, "user-payload", **kw),
        "send_to_peers": lambda: a.send_to_peers([nb, nc], T, "user-payload", **kw),
        "send": lambda: a.send(T, "user-payload", **kw),
        "send_excluding": lambda: a.send_excluding(T, "user-payload", [nc.id], **kw),
    }
    for name, send in sends.items():
        rec.take()
        got.clear()
        send()
        _delivered([b, c], got, 1)
        sent = rec.take()
        assert sent and all(r is reliable for _, r in sent), (name, sent)
        if name == "send_excluding":
            assert nc.address not in {addr for addr, _ in sent}


def test_reliable_is_the_same_as_the_reliable_twins(three: tuple[list[Cluster], Recording]) -> None:
    (a, b, c), rec = three
    nb = a.get_node(b.local_node().id)
    assert nb is not None
    b.handle_func_no_forward(T, lambda s, p: None)
    for twin in (lambda: a.send_to_reliable(nb, T, "user-payload"),
                 lambda: a.send_to_peers_reliable([nb], T, "user-payload"),
                 lambda: a.send_reliable(T, "user-payload")):
        rec.take()
        twin()
        wait_until(lambda: bool(rec.sent), what="a send")
        assert all(r for _, r in rec.take())


def test_group_sends_take_the_transport(three: tuple[list[Cluster], Recording]) -> None:
    (a, b, c), rec = three
    got: list[Any] = []
    for x in (b, c):
        x.handle_func_no_forward(T, lambda s, p: got.append(p.unmarshal()))
    with NodeGroup(a, {"role": "worker"}) as group:
        wait_until(lambda: group.count() == 3, what="the group's three members")
        for transport, reliable in ((TransportType.BEST_EFFORT, False), (TransportType.RELIABLE, True)):
            rec.take()
            got.clear()
            assert group.send_to_peers(T, "user-payload", transport=transport) == 2
            _delivered([b, c], got, 2)
            sent = rec.take()
            assert len(sent) == 2 and all(r is reliable for _, r in sent), sent
        rec.take()
        assert group.send_to_peers_reliable(T, "user-payload") == 2
        wait_until(lambda: len(rec.sent) == 2, what="two sends")
        assert all(r for _, r in rec.take())
        with pytest.raises(LocalProtocolError, match="transport must be TransportType"):
            group.send_to_peers(T, "x", transport="tcp")  # type: ignore[arg-type]


def test_a_transport_that_is_not_one_is_refused(three: tuple[list[Cluster], Recording]) -> None:
    (a, b, _), _ = three
    nb = a.get_node(b.local_node().id)
    assert nb is not None
    for bad in ("reliable", 2, None):
        with pytest.raises(LocalProtocolError, match="transport must be TransportType"):
            a.send_to(nb, T, "x", transport=bad)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            a.send(T, "x", transport=bad)  # type: ignore[arg-type]
