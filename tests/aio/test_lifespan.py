"""The ASGI lifespan driven in-process, the way a server drives it: what it builds from each kind
of argument, a join that fails at startup, a startup that fails, and the state it shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import pytest

import gossip
import gossip.aio
from gossip.contrib.asgi import lifespan, with_lifespan
from gossip.testing import gossip_threads

from . import local, run


class App:
    """An app with a ``state``, as Starlette's and FastAPI's have."""

    def __init__(self) -> None:
        self.state = type("State", (), {})()
        self.calls: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(scope["type"])


async def drive(app: Any, scope_state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the ASGI lifespan protocol against ``app``: startup, then shutdown."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if message["type"].startswith("lifespan.startup."):
            started.set()

    scope: dict[str, Any] = {"type": "lifespan"}
    if scope_state is not None:
        scope["state"] = scope_state
    task = asyncio.create_task(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(started.wait(), 30.0)
    if sent[-1]["type"] == "lifespan.startup.complete":
        await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 30.0)
    return sent


@pytest.mark.parametrize("kind", ["config", "blocking", "asyncio"])
def test_the_lifespan_starts_the_node_shares_it_and_stops_it(kind: str) -> None:
    async def main() -> None:
        given: Any
        if kind == "config":
            given = local()
        elif kind == "blocking":
            given = gossip.Cluster(local())
        else:
            given = gossip.aio.Cluster(local())
        app = App()
        shared: dict[str, Any] = {}
        wrapped = with_lifespan(app, lifespan(given))
        sent = await drive(wrapped, shared)
        assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                             "lifespan.shutdown.complete"]
        node = shared["gossip"]
        assert isinstance(node, gossip.aio.Cluster) and not node.running
        assert node.address.startswith("127.0.0.1:")  # it did run
        assert not gossip_threads()
        if kind == "asyncio":
            assert node is given
        elif kind == "blocking":
            assert node.sync is given
        await wrapped({"type": "http"}, None, None)  # other scopes go to the app
        assert app.calls == ["http"]

    run(main())


def test_startup_sets_app_state_and_joins_or_logs_why_not(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as seed:
            app = App()
            span = lifespan(local(), join=[seed.address], name="node")
            async with span(app) as state:
                node = state["node"]
                assert app.state.node is node
                assert node.num_alive_nodes() == 2  # joined the seed at startup
            assert not node.running
            # A seed that is not there: logged, not fatal (it may join this node later).
            dead = gossip.Cluster(local())
            dead.start()
            nowhere = dead.address  # a node that was there and stopped: nobody answers
            dead.stop()
            with caplog.at_level(logging.WARNING, logger="gossip.contrib.asgi"):
                async with lifespan(local(join_timeout=1.0), join=[nowhere])(object()) as state:
                    assert state["gossip"].running
            assert "could not join" in caplog.text

    run(main())


def test_a_startup_that_fails_is_reported_to_the_server() -> None:
    async def main() -> None:
        async with gossip.aio.Cluster(local()) as taken:
            clash = gossip.Config.local(bind_addr=taken.address)  # the port is in use
            sent = await drive(with_lifespan(App(), lifespan(clash)))
            assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
            assert "Error" in sent[0]["message"]

    run(main())


def test_with_lifespan_reports_a_failed_shutdown_and_ignores_other_openings() -> None:
    import contextlib
    from collections.abc import AsyncIterator

    @contextlib.asynccontextmanager
    async def fails_at_exit(app: Any) -> AsyncIterator[dict[str, Any]]:
        yield {}
        raise RuntimeError("could not stop")

    async def main() -> None:
        sent = await drive(with_lifespan(App(), fails_at_exit))
        assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                             "lifespan.shutdown.failed"]
        assert "could not stop" in sent[1]["message"]
        # A lifespan scope that does not open with a startup is left alone.
        got: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.shutdown"}

        async def send(message: Any) -> None:
            got.append(message)

        await with_lifespan(App(), fails_at_exit)({"type": "lifespan"}, receive, send)
        assert got == []

    run(main())


def test_the_bridge_answers_what_is_not_its_own() -> None:
    from gossip.contrib.asgi import GossipASGI

    async def main() -> None:
        node = gossip.aio.Cluster(local())
        bridge = GossipASGI(node)  # the asyncio face's sync side is the cluster bridged
        assert bridge.cluster is node.sync
        out: list[dict[str, Any]] = []
        inbox: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0) if inbox else {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            out.append(dict(message))

        await bridge({"type": "http", "path": "/"}, receive, send)
        assert out[0]["status"] == 404
        out.clear()
        await bridge({"type": "websocket", "path": "/elsewhere"}, receive, send)
        assert out == [{"type": "websocket.close", "code": 1008, "reason": "not a gossip path"}]
        out.clear()
        inbox.extend([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        await bridge({"type": "lifespan"}, receive, send)
        assert [m["type"] for m in out] == ["lifespan.startup.complete",
                                            "lifespan.shutdown.complete"]
        app = App()
        await GossipASGI(node.sync, fallback=app)({"type": "http", "path": "/x"}, receive, send)
        assert app.calls == ["http"]

    run(main())
