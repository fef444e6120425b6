"""The dashboard as a WSGI application mounted in a host application, over in-memory clusters
(called directly, no sockets); Cluster.explain and cluster events through the engine; the
``/api/explain`` route of the HTTP API."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults, shift_path_info

import pytest

import gossip
from gossip import Cluster, MemberFlapping, NodeState, PartitionHealed, PartitionSuspected
from gossip.dashboard import ASSETS, PAGE_LIMITS, DashboardApp, app
from gossip.httpapi import EventHub, cluster_event_json
from gossip.httpapi import app as api_app
from gossip.testing import ClusterFactory, wait_until


def host_app(dash: DashboardApp) -> Any:
    """A host WSGI application: the dashboard under /ui, its own page elsewhere."""
    def application(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith("/ui"):
            shift_path_info(environ)
            return dash(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host"]
    return application


def call(application: Any, path: str, method: str = "GET") -> tuple[str, dict[str, str], Any]:
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                               "SCRIPT_NAME": "", "wsgi.input": io.BytesIO(b"")}
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, dict(headers)
        return lambda data: None

    result = application(environ, start_response)
    if isinstance(result, list):
        return got["status"], got["headers"], b"".join(result)
    return got["status"], got["headers"], result


def sse(chunks: Iterator[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events of a stream, as they come (comments and the retry line skipped)."""
    for chunk in chunks:
        m = re.match(r"event: (\w+)\ndata: (.*)\n\n", chunk.decode(), re.S)
        if m:
            yield m.group(1), json.loads(m.group(2))


@pytest.fixture
def trio(gossip_cluster_factory: ClusterFactory) -> list[Cluster]:
    clusters = gossip_cluster_factory(3)
    clusters[1].local_metadata().set_string("role", "<b>worker</b>")
    return clusters


def test_page_and_assets_mounted_under_a_prefix(trio: list[Cluster]) -> None:
    dash = app(trio[0])
    try:
        host = host_app(dash)
        assert call(host, "/other")[2] == b"the host"
        status, headers, _ = call(host, "/ui")
        assert status.startswith("301") and headers["Location"] == "/ui/"   # relative URLs need it
        status, headers, body = call(host, "/ui/")
        assert status == "200 OK" and headers["Content-Type"].startswith("text/html")
        html = body.decode()
        assert 'src="dash/dashboard.js"' in html and 'href="dash/dashboard.css"' in html
        assert json.dumps(PAGE_LIMITS) in html and "{{LIMITS}}" not in html
        for name in ("dashboard.js", "dashboard.css"):
            status, headers, body = call(host, f"/ui/dash/{name}")
            assert status == "200 OK" and headers["Content-Type"] == ASSETS[name]
            assert len(body) > 500
        assert call(host, "/ui/dash/nothing.js")[0].startswith("404")
        assert call(host, "/ui/", method="POST")[0].startswith("405")
    finally:
        dash.close()


def test_the_page_fetches_nothing_from_elsewhere(trio: list[Cluster]) -> None:
    dash = app(trio[0])
    try:
        for name in ASSETS:
            text = call(dash, "/" if name == "index.html" else f"/dash/{name}")[2].decode()
            assert not re.search(r"(https?:)?//[\w.-]+\.\w", text.replace("://127.0.0.1", "")), name
            assert "@import" not in text and "url(" not in text, name
            # Every URL the page asks for is relative to where the dashboard is mounted.
            for url in re.findall(r"""(?:src|href)="([^"]+)"|fetch\(`([^`$]+)|EventSource\("([^"]+)""", text):
                u = "".join(url)
                assert not u.startswith(("/", "http")), (name, u)
        # The script stays small enough to read.
        assert len(call(dash, "/dash/dashboard.js")[2]) < 30_000
    finally:
        dash.close()


def test_stream_sends_snapshot_samples_and_live_events(trio: list[Cluster]) -> None:
    a, b, _ = trio
    dash = app(a, sample_interval=0.2)
    try:
        status, headers, stream = call(dash, "/dash/stream")
        assert status == "200 OK" and headers["Content-Type"].startswith("text/event-stream")
        events = sse(stream)
        (kind, snap), (kind2, sample) = next(events), next(events)
        assert (kind, kind2) == ("snapshot", "sample")
        assert snap["node"] == str(a.local_node().id) and len(snap["members"]) == 3
        assert snap["members"][0]["local"] and {"rtt", "flap", "metadata"} <= set(snap["members"][1])
        assert snap["flap_threshold"] == a.config.flap_threshold and snap["limits"] == PAGE_LIMITS
        assert sample["counts"]["alive"] == 3 and sample["hist"]["bounds"]
        b.local_metadata().set_string("zone", "eu")
        seen = []
        for ev in events:   # bounded: the metadata change arrives within a few samples
            seen.append(ev[0])
            if ev[0] == "metadata" and ev[1]["node"]["metadata"].get("zone") == "eu" or len(seen) > 100:
                break
        assert seen[-1] == "metadata", seen
        kind, later = next(events)                         # samples keep coming after events
        assert kind == "sample" and later["at"] > sample["at"]
        dash.close()                                       # ends the stream (its own hub)
        assert list(stream) == []
    finally:
        dash.close()


def test_explain_of_a_crashed_member_names_accuser_and_death(trio: list[Cluster]) -> None:
    a, b, c = trio
    victim = c.local_node().id
    before = time.time()
    c._crash()
    wait_until(lambda: all(x.get_node(victim).state is NodeState.DEAD for x in (a, b)),  # type: ignore[union-attr]
               15.0, "both survivors declare the crashed member dead")
    exp = a.explain(victim)
    assert exp is not None and exp.state is NodeState.DEAD and not exp.local
    ep = exp.episodes[-1]
    assert ep.outcome == "dead" and ep.accuser in (a.local_node().id, b.local_node().id)
    assert before <= ep.started_at <= ep.ended_at <= time.time()            # wall-clock times
    assert ep.declared_by in (a.local_node().id, b.local_node().id)
    assert a.explain(a.local_node().id).local                              # type: ignore[union-attr]
    assert a.explain(gossip.NodeID(int=12345)) is None
    # The dashboard and the API serve it, by a short id too.
    dash, api = app(a), api_app(a)
    try:
        for application, path in ((dash, "/dash/explain"), (api, "/api/explain")):
            status, headers, body = call(application, f"{path}?node={victim.short}")
            assert status == "200 OK" and headers["Content-Type"] == "application/json"
            x = json.loads(body if isinstance(body, bytes) else b"".join(body))
            assert x["node"] == str(victim) and x["state"] == "dead"
            assert x["episodes"][-1]["outcome"] == "dead" and x["observer"] == str(a.local_node().id)
            assert x["names"][x["episodes"][-1]["accuser"]]["address"] in (a.address, b.address)
            assert call(application, f"{path}?node=ffffffff")[0].startswith("404")
            assert call(application, path)[0].startswith("400")
    finally:
        dash.close()
        api.close()


def test_cluster_events_reach_handlers_in_order_and_the_event_stream(trio: list[Cluster]) -> None:
    a = trio[0]
    got: list[Any] = []
    done = threading.Event()
    threads: set[str] = set()

    def on_cluster(ev: Any) -> None:
        got.append(("cluster", type(ev).__name__))
        threads.add(threading.current_thread().name)

    def on_state(node: Any, prev: Any) -> None:
        got.append(("state", str(node.state)))
        threads.add(threading.current_thread().name)
        done.set()

    hid = a.handle_cluster_event_func(on_cluster)
    a.handle_node_state_change_func(on_state)
    hub = EventHub(a)
    q = hub.subscribe()
    try:
        node = a.nodes()[1]
        flap = MemberFlapping(node.id, node.address, 6, 120.0, 6, False, time.time())
        part = PartitionSuspected((node.id,), 0.5, 10.0, time.time())
        healed = PartitionHealed((node.id,), (node.id,), 3.0, time.time())
        engine = a._engine
        for ev in (flap, part):
            engine.emit(("cluster", ev, None))
        engine.emit(("state", node, NodeState.SUSPECT))
        engine.emit(("cluster", healed, None))
        wait_until(lambda: len(got) == 4, 5.0, "four events delivered")
        assert got == [("cluster", "MemberFlapping"), ("cluster", "PartitionSuspected"), ("state", "alive"),
                       ("cluster", "PartitionHealed")]
        assert len(threads) == 1 and next(iter(threads)).endswith("-events")
        kinds = []
        while len(kinds) < 4:
            item = q.get(timeout=5.0)
            assert item is not None
            kinds.append(item[0])
        assert kinds == ["flapping", "partition", "state", "healed"]
        assert a.remove_cluster_event_handler(hid) and not a.remove_cluster_event_handler(hid)
    finally:
        hub.close()


def test_cluster_event_json_forms() -> None:
    n1, n2 = gossip.NodeID(int=1), gossip.NodeID(int=2)
    kind, data = cluster_event_json(MemberFlapping(n1, "h:1", 7, 120.0, 6, True, 5.0))
    assert kind == "flapping" and data == {"node": str(n1), "short": n1.short, "address": "h:1", "score": 7,
                                           "window": 120.0, "threshold": 6, "damped": True, "at": 5.0}
    kind, data = cluster_event_json(PartitionSuspected((n1, n2), 0.4, 10.0, 6.0))
    assert kind == "partition" and data["members"] == [str(n1), str(n2)] and data["share"] == 0.4
    kind, data = cluster_event_json(PartitionHealed((n1, n2), (n1,), 30.0, 7.0))
    assert kind == "healed" and data["returned"] == [str(n1)] and data["duration"] == 30.0
    assert data["missing"] == [str(n2)]
    kind, data = cluster_event_json(gossip.JoinSucceeded(("127.0.0.1:1",), {}, 3, True, 8.0))
    assert kind == "joined" and data == {"joined": ["127.0.0.1:1"], "failures": {}, "attempt": 3,
                                         "rejoin": True, "at": 8.0}
    kind, data = cluster_event_json(gossip.JoinAttemptFailed(
        "127.0.0.1:1: refused", {"127.0.0.1:1": "refused"}, 2, 1.5, False, 9.0))
    assert kind == "join_failed" and data["reason"] == "127.0.0.1:1: refused"
    assert data["retry_in"] == 1.5 and data["failures"] == {"127.0.0.1:1": "refused"}
    kind, data = cluster_event_json(gossip.MemberRefused(n2, "127.0.0.2:7946", "no version", 4.0))
    assert kind == "refused" and data == {"node": str(n2), "short": n2.short,
                                          "address": "127.0.0.2:7946", "reason": "no version", "at": 4.0}


def test_members_api_carries_the_flap_score(trio: list[Cluster]) -> None:
    api = api_app(trio[0])
    try:
        body = json.loads(call(api, "/api/members")[2])
        assert all(m["flap"] == 0 for m in body["members"])
        assert trio[0].flap_scores() == {}
    finally:
        api.close()


def test_sample_interval_must_be_positive(trio: list[Cluster]) -> None:
    with pytest.raises(ValueError, match="sample_interval"):
        app(trio[0], sample_interval=0)


def test_snapshots_show_a_damped_member_suspect(trio: list[Cluster]) -> None:
    a, b, _ = trio
    bid = b.local_node().id
    engine = a._engine
    with engine.host.lock:                       # as damping holds a flapping member (see flap.py)
        engine.host.core.insight.held[bid] = float("inf")
    try:
        assert a.get_node(bid).state is NodeState.SUSPECT                       # type: ignore[union-attr]
        assert {n.id: n.state for n in a.nodes()}[bid] is NodeState.SUSPECT
        assert a.explain(bid).damped                                             # type: ignore[union-attr]
        assert engine.host.core.members[bid].state is NodeState.ALIVE           # the protocol's view
    finally:
        with engine.host.lock:
            engine.host.core.insight.held.pop(bid, None)
    assert a.get_node(bid).state is NodeState.ALIVE                             # type: ignore[union-attr]
