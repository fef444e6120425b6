"""A blocked event loop never makes anyone suspect anyone: the protocol runs on the engine's
threads, never on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import gossip
import gossip.aio
from gossip import Node, NodeState, Packet

from . import joined, local, node_of, run, until

T = gossip.USER_MSG + 310


# Seconds the handler blocks its loop. The local preset probes every second and suspects a
# member that misses one 200 ms probe and its indirect check, so two seconds would already be
# several missed probes if the protocol ran on the loop; ten seconds is the full story (slow).
@pytest.mark.parametrize("BLOCK", [pytest.param(2.0, id="2s"),
                                   pytest.param(10.0, id="10s", marks=pytest.mark.slow)])
def test_a_blocked_loop_causes_no_suspicion_and_queued_requests_complete(BLOCK: float) -> None:
    async def main() -> None:
        nodes = [gossip.aio.Cluster(local()) for _ in range(3)]
        seen: list[tuple[str, str, NodeState]] = []  # (viewer, node, state) from the event threads
        for c in nodes:
            name = c.local_node().id.short
            c.sync.handle_node_state_change_func(
                lambda n, prev, name=name: seen.append((name, n.id.short, n.state)))
        async with nodes[0] as a, nodes[1] as b, nodes[2] as c:
            blocked = threading.Event()  # set on the loop, read by the asking threads
            unblocked: list[float] = []

            async def blocks_the_loop(sender: Node, packet: Packet) -> None:
                blocked.set()
                time.sleep(BLOCK)  # a blocking call in a coroutine: the whole loop stops
                unblocked.append(time.monotonic())

            async def answer(sender: Node, packet: Packet) -> int:
                return int(packet.unmarshal()) + 1

            a.handle_func(T, blocks_the_loop)
            for x in (a, b, c):
                x.handle_func_with_reply(T + 1, answer)
            await joined(a, b, c)
            seen.clear()
            # Another process stands for the rest of the world: a blocking cluster on its own
            # threads, asking the asyncio nodes while their loop is blocked.
            outside = gossip.Cluster(local())
            outside.start()
            answers: list[tuple[int, float]] = []
            errors: list[BaseException] = []
            try:
                await asyncio.to_thread(outside.join, [a.address])
                await until(lambda: all(x.num_alive_nodes() == 4 for x in (a, b, c, outside)),
                            10.0, "the outside node seen by all")
                targets = [node_of(outside, x) for x in (a, b, c)]

                def ask(i: int, node: Node) -> None:
                    if not blocked.wait(30.0):
                        return
                    time.sleep(BLOCK / 4)  # well inside the blocked window
                    try:
                        got = outside.send_to_with_response(node, T + 1, i, timeout=BLOCK + 20.0)
                        answers.append((got, time.monotonic()))
                    except BaseException as exc:
                        errors.append(exc)

                before = [x.stats().get("core.suspicions_started", 0) for x in (a, b, c)]
                askers = [threading.Thread(target=ask, args=(i, n), name=f"test-asker-{i}")
                          for i, n in enumerate(targets)]
                for t in askers:
                    t.start()  # each asks once the loop is blocked
                await b.send_to_reliable(node_of(b, a), T, "block")
                # The handler runs at the loop's next turn and blocks it for BLOCK seconds.
                for t in askers:
                    await asyncio.to_thread(t.join, BLOCK + 30.0)
                assert blocked.is_set() and len(unblocked) == 1
                assert not errors, errors
                # Asked during the block, answered after it: they waited on the loop, queued.
                assert sorted(v for v, _ in answers) == [1, 2, 3]
                assert all(at >= unblocked[0] for _, at in answers)
                suspicions = [s for s in seen if s[2] in (NodeState.SUSPECT, NodeState.DEAD)]
                assert suspicions == [], suspicions
                after = [x.stats().get("core.suspicions_started", 0) for x in (a, b, c)]
                assert after == before
                for x in (a, b, c):
                    assert x.num_alive_nodes() == 4 and x.num_suspect_nodes() == 0
                assert outside.num_suspect_nodes() == 0
                assert outside.stats().get("core.suspicions_started", 0) == 0
            finally:
                await asyncio.to_thread(outside.stop)

    run(main(), timeout=90.0)
