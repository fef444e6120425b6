"""``gossip forget NODE`` and ``gossip send --tag TAG`` against an agent's API (served on
loopback over in-memory clusters), with its token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossip import Cluster, Config, NodeState
from gossip.cli import main
from gossip.httpapi import HttpServer, app
from gossip.testing import wait_until
from gossip.transports.memory import MemoryNetwork

TOKEN = "t0k3n-" + "z" * 30


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[list[Cluster], list[str]]]:
    net = MemoryNetwork(seed=3)
    clusters = [Cluster(Config.local(transport=net.new_transport())) for _ in range(3)]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    api = app(clusters[0], token=TOKEN)
    server = HttpServer(api, "127.0.0.1:0", on_stop=api.close)
    try:
        for c in clusters:
            c.start()
        for c in clusters[1:]:
            c.join(clusters[0].address, timeout=5.0)
        wait_until(lambda: all(c.num_alive_nodes() == 3 for c in clusters), what="three alive")
        server.start()
        yield clusters, ["--agent", server.address, "--token-file", str(token_file)]
    finally:
        server.stop()
        for c in clusters:
            c.stop(timeout=2.0)


def test_forget_and_tagged_send(agent: tuple[list[Cluster], list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    (a, b, c), flags = agent
    got: list[Any] = []
    b.handle_func(128, lambda sender, packet: got.append(packet.unmarshal()))
    b.add_tag("gpu")
    wait_until(lambda: len(a.nodes_by_tag("gpu")) == 1, what="b's tag at a")
    assert main(["send", *flags, "--tag", "gpu", "to the gpus"]) == 0
    assert "tagged gpu" in capsys.readouterr().out
    wait_until(lambda: got == ["to the gpus"], what="the tagged message")
    assert main(["send", *flags, "--tag", "gpu", "--to", b.local_node().id.short, "x"]) == 1
    cid = c.local_node().id
    assert main(["forget", *flags, cid.short]) == 1
    assert "only a dead or left member" in capsys.readouterr().err
    c.stop(timeout=2.0)
    wait_until(lambda: (n := a.get_node(cid)) is not None and n.state is NodeState.LEFT, what="c left")
    assert main(["forget", *flags, cid.short]) == 0
    assert capsys.readouterr().out.strip() == f"forgot {cid}"
    wait_until(lambda: b.get_node(cid) is None, what="c forgotten by b as well")
