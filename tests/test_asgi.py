"""`aiowax.asgi`: the live app's endpoints, and the Starlette lifespan helpers.

The endpoints are called through httpx's `ASGITransport` (no server), on a
flow that runs in the test's task group and is fed by the test. Every state
a test checks is reached through conditions it waits for under
``fail_after``; nothing sleeps a fixed time.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import aiowax
from aiowax import visualize
from aiowax.asgi import flow_handle, flow_lifespan, live_app
from aiowax.connectors.inproc import PushSource
from aiowax.recovery import RecoveryConfig
from aiowax.stats import FlowStats
from embed_helpers import GatedSink, push_flow, settle
from live_helpers import STEP_IDS, WATCHDOG, DemoFlow, running

COUNTS = ("items_in", "items_out", "errors", "keys", "windows_open", "late", "partitions")


@asynccontextmanager
async def client_of(app: Any, base: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


async def fed_demo(demo: DemoFlow) -> None:
    """Orders 1..12 and three clicks, all through to where they go."""
    await demo.send_orders(list(range(1, 13)))
    await demo.send_clicks([demo.click(f"u{i}", i) for i in range(3)])
    await demo.until("totals", "items_out", 12)
    await demo.until("clicks_per_minute", "items_in", 3)


# -- the endpoints ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_stats_are_the_handles_stats_as_json() -> None:
    demo = DemoFlow()
    with anyio.fail_after(WATCHDOG):
        async with running(demo) as handle, client_of(live_app(handle)) as client:
            await fed_demo(demo)
            await settle()
            response = await client.get("/stats")
            expected = handle.stats()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["ready"] is True
    assert body["reason"] == "the flow is running"
    assert re.match(r"\d{4}-\d\d-\d\dT", body["now"])
    want = expected.to_dict()
    for key in ("name", "status", "workers", "epoch", "started_at", "snapshots", "error"):
        assert body[key] == want[key], key
    assert body["name"] == "shop"
    # Inputs first, then the other steps in flow order.
    assert [s["step_id"] for s in body["steps"]] == ["orders", "clicks"] + [
        step for step in STEP_IDS if step not in ("orders", "clicks")
    ]
    for got, row in zip(body["steps"], want["steps"], strict=True):
        for key in ("step_id", "kind", "pipeline", "worker_index", *COUNTS):
            assert got[key] == row[key], (row["step_id"], key)
    steps = {s["step_id"]: s for s in body["steps"]}
    assert steps["totals"]["items_out"] == 12
    assert steps["running_total"]["keys"] == 4


@pytest.mark.asyncio
async def test_stats_of_several_workers_list_each_worker() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    flow = push_flow(source, sink)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, workers=3)
            async with client_of(live_app(handle)) as client:
                await source.send_many(list(range(30)))
                while len(sink.out) < 30:
                    await anyio.sleep(0.005)
                body = (await client.get("/stats")).json()
            await handle.stop()
    rows = [s for s in body["steps"] if s["step_id"] == "out"]
    assert sorted(r["worker_index"] for r in rows) == [0, 1, 2]
    assert sum(r["items_out"] for r in rows) == 30
    assert body["workers"] == 3


@pytest.mark.asyncio
async def test_dataflow_is_the_graph_of_the_flow() -> None:
    demo = DemoFlow()
    with anyio.fail_after(WATCHDOG):
        async with running(demo) as handle:
            async with client_of(live_app(handle)) as client:
                response = await client.get("/dataflow")
            # A function source, with the flow given: the graph is there
            # before the flow starts.
            async with client_of(live_app(lambda: None, flow=demo.flow)) as client:
                early = await client.get("/dataflow")
            async with client_of(live_app(lambda: None)) as client:
                unknown = await client.get("/dataflow")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == visualize.to_dict(demo.flow)
    assert early.json() == visualize.to_dict(demo.flow)
    assert unknown.status_code == 503
    assert "flow=" in unknown.json()["error"]


@pytest.mark.asyncio
async def test_readyz_follows_the_flow_from_start_to_end() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    flow = push_flow(source, sink)
    # Not started: a handle that was made but never ran, and a function
    # that has no handle yet.
    async with client_of(live_app(aiowax.FlowHandle(flow))) as client:
        before = await client.get("/readyz")
    async with client_of(live_app(lambda: None, flow=flow)) as client:
        nothing = await client.get("/readyz")
        stats = (await client.get("/stats")).json()
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            async with client_of(live_app(handle)) as client:
                while handle.status is not aiowax.FlowStatus.RUNNING:
                    await anyio.sleep(0.005)
                during = await client.get("/readyz")
                await handle.stop()
                after = await client.get("/readyz")
                alive = await client.get("/livez")
    assert (before.status_code, before.json()) == (
        503,
        {"ready": False, "status": "starting", "reason": "the flow is starting"},
    )
    assert nothing.status_code == 503
    assert nothing.json()["reason"] == "the flow has not started"
    assert (stats["status"], stats["steps"], stats["ready"]) == ("starting", [], False)
    assert (during.status_code, during.json()) == (
        200,
        {"ready": True, "status": "running", "reason": "the flow is running"},
    )
    assert during.headers["cache-control"] == "no-store"
    assert (after.status_code, after.json()["status"]) == (503, "finished")
    assert (alive.status_code, alive.json()) == (200, {"live": True})


@pytest.mark.asyncio
async def test_readyz_is_503_while_stopping() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()  # holds the write, so the stop cannot finish
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            async with client_of(live_app(handle)) as client:
                await source.send(1)
                await sink.writing.wait()
                handle.request_stop()
                stopping = await client.get("/readyz")
                sink.gate.set()
                await handle.wait()
    assert stopping.status_code == 503
    assert stopping.json() == {
        "ready": False,
        "status": "stopping",
        "reason": "the flow is stopping",
    }


@pytest.mark.asyncio
async def test_readyz_is_503_while_restoring() -> None:
    handle = aiowax.FlowHandle(push_flow(PushSource(), GatedSink()))
    restoring = FlowStats(name="flow", status="running", restoring=True)
    handle.stats = lambda: restoring  # type: ignore[method-assign]
    async with client_of(live_app(handle)) as client:
        response = await client.get("/readyz")
        handle.stats = lambda: replace(restoring, restoring=False)  # type: ignore[method-assign]
        ready = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "the flow is restoring its state"
    assert ready.status_code == 200


@pytest.mark.asyncio
async def test_a_failed_flow_is_not_ready_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    demo = DemoFlow()
    with anyio.fail_after(WATCHDOG), caplog.at_level(logging.ERROR, "aiowax"):
        async with running(demo) as handle, client_of(live_app(handle)) as client:
            await demo.send_orders([1, "poison"])
            while not handle.done:
                await anyio.sleep(0.005)
            ready = await client.get("/readyz")
            alive = await client.get("/livez")
            stats = (await client.get("/stats")).json()
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "status": "failed",
        "reason": "the flow failed",
        "error": "ValueError: poison order: refused",
    }
    assert alive.status_code == 200  # the process still serves
    assert stats["error"] == "ValueError: poison order: refused"
    assert [s["errors"] for s in stats["steps"] if s["step_id"] == "parse"] == [1]


@pytest.mark.asyncio
async def test_unknown_paths_are_404_and_other_methods_405() -> None:
    handle = aiowax.FlowHandle(push_flow(PushSource(), GatedSink()))
    async with client_of(live_app(handle)) as client:
        missing = await client.get("/nope")
        post = await client.post("/stats", json={})
        delete = await client.delete("/")
        head = await client.head("/stats")
    assert missing.status_code == 404
    assert missing.json()["paths"] == ["/", "/dataflow", "/livez", "/metrics", "/readyz", "/stats"]
    for response in (post, delete):
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0


@pytest.mark.asyncio
async def test_the_page_is_one_self_contained_file() -> None:
    handle = aiowax.FlowHandle(push_flow(PushSource(), GatedSink()))
    async with client_of(live_app(handle)) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith("<!doctype html>")
    assert "http://" not in page
    assert "https://" not in page
    # Nothing is loaded from anywhere: no external scripts, styles, images.
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", page)
    assert 'fetch("stats"' in page  # relative: works under any mount prefix
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp


@pytest.mark.asyncio
async def test_mounted_under_a_prefix_in_starlette() -> None:
    demo = DemoFlow()
    with anyio.fail_after(WATCHDOG):
        async with running(demo) as handle:
            app = Starlette(routes=[Mount("/ops/live", live_app(handle))])
            async with client_of(app) as client:
                await fed_demo(demo)
                stats = await client.get("/ops/live/stats")
                page = await client.get("/ops/live/")
                bare = await client.get("/ops/live", follow_redirects=False)
                ready = await client.get("/ops/live/readyz")
    assert [s["items_out"] for s in stats.json()["steps"] if s["step_id"] == "totals"] == [12]
    assert page.text.startswith("<!doctype html>")
    assert bare.status_code in (307, 308)
    assert bare.headers["location"].endswith("/ops/live/")
    assert ready.status_code == 200


@pytest.mark.asyncio
async def test_the_app_alone_redirects_to_its_slash_and_acknowledges_lifespan() -> None:
    app = live_app(aiowax.FlowHandle(push_flow(PushSource(), GatedSink())))
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": "/live", "root_path": "/live"}
    scope["query_string"] = b"x=1"
    await app(scope, _never, send)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    await app({"type": "lifespan"}, receive, send)
    assert sent[0]["status"] == 307
    assert (b"location", b"/live/?x=1") in sent[0]["headers"]
    assert [m["type"] for m in sent[2:]] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def _never() -> Any:
    raise AssertionError("the app read the request body")


def test_live_app_refuses_what_is_not_a_handle() -> None:
    with pytest.raises(TypeError, match="expected a FlowHandle or a function"):
        live_app(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flow must be a Dataflow"):
        live_app(lambda: None, flow="flow")  # type: ignore[arg-type]


# -- /metrics -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text_equal_to_the_stats() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    pytest.importorskip("aiowax.prometheus")
    demo = DemoFlow()
    with anyio.fail_after(WATCHDOG):
        async with running(demo) as handle, client_of(live_app(handle)) as client:
            await fed_demo(demo)
            await settle()
            response = await client.get("/metrics")
            stats = handle.stats()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, s.labels.get("step_id")): s.value
        for family in parser.text_string_to_metric_families(response.text)
        for s in family.samples
        if s.labels.get("flow") == "shop"
    }
    for step_id in STEP_IDS:
        step = stats.step(step_id)
        assert samples[("aiowax_step_items_in_total", step_id)] == step.items_in
        assert samples[("aiowax_step_items_out_total", step_id)] == step.items_out


@pytest.mark.asyncio
@pytest.mark.parametrize("missing", ["prometheus_client", "aiowax.prometheus"])
async def test_metrics_without_prometheus_are_404_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    # None in sys.modules makes the import fail as for a missing package.
    monkeypatch.setitem(sys.modules, missing, None)
    app = live_app(aiowax.FlowHandle(push_flow(PushSource(), GatedSink())))
    async with client_of(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404
    hint = "pip install '.[prometheus]' in the aiowax checkout (the prometheus extra)"
    assert response.json()["hint"] == hint


@pytest.mark.asyncio
async def test_metrics_use_a_registry_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Any] = []

    class StatsCollector:
        def __init__(self, *sources: Any) -> None:
            registered.append(sources)

        def collect(self) -> list[Any]:
            return []

    fake = types.ModuleType("aiowax.prometheus")
    fake.StatsCollector = StatsCollector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aiowax.prometheus", fake)
    prometheus_client = pytest.importorskip("prometheus_client")

    def refuse(collector: Any) -> None:
        raise AssertionError("registered in the global registry")

    monkeypatch.setattr(prometheus_client.REGISTRY, "register", refuse)
    handle = aiowax.FlowHandle(push_flow(PushSource(), GatedSink()))
    async with client_of(live_app(handle)) as client:
        for _ in range(2):
            assert (await client.get("/metrics")).status_code == 200
    assert registered == [(handle,)]  # one collector, of this handle


# -- flow_lifespan and flow_handle ------------------------------------------------------


async def count_endpoint(request: Request) -> JSONResponse:
    handle = flow_handle(request)
    return JSONResponse(
        {"status": handle.status.value, "out": handle.stats().step("out").items_out}
    )


def starlette_app(flow: Any, **options: Any) -> Starlette:
    app = Starlette(
        lifespan=flow_lifespan(flow, **options),
        routes=[Route("/count", count_endpoint)],
    )
    app.router.routes.append(
        Mount("/live", live_app(lambda: getattr(app.state, "flow", None), flow=flow))
    )
    return app


@pytest.mark.asyncio
async def test_flow_lifespan_runs_the_flow_while_the_app_serves() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    app = starlette_app(push_flow(source, sink))
    with anyio.fail_after(WATCHDOG):
        async with client_of(app) as client:
            before = await client.get("/live/readyz")
            async with app.router.lifespan_context(app):
                handle = app.state.flow
                assert isinstance(handle, aiowax.FlowHandle)
                await source.send_many([1, 2, 3])
                while len(sink.out) < 3:
                    await anyio.sleep(0.005)
                await settle()
                counted = (await client.get("/count")).json()
                ready = await client.get("/live/readyz")
            after = await client.get("/live/readyz")
    assert before.status_code == 503
    assert counted == {"status": "running", "out": 3}
    assert ready.status_code == 200
    # The shutdown stopped it gracefully.
    assert handle.status is aiowax.FlowStatus.FINISHED
    assert after.json()["status"] == "finished"


@pytest.mark.asyncio
async def test_flow_lifespan_aborts_a_stop_that_takes_too_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()  # never opens: the graceful stop cannot finish
    app = starlette_app(push_flow(source, sink), stop_timeout=0.05)
    with anyio.fail_after(WATCHDOG), caplog.at_level(logging.WARNING, "aiowax"):
        async with app.router.lifespan_context(app):
            await source.send(1)
            await sink.writing.wait()
    assert app.state.flow.status is aiowax.FlowStatus.CANCELLED
    assert "did not stop within 0.05 s: aborted" in caplog.text


@pytest.mark.asyncio
async def test_a_failed_flow_does_not_take_the_app_down(caplog: pytest.LogCaptureFixture) -> None:
    demo = DemoFlow()
    app = starlette_app(demo.flow)
    with anyio.fail_after(WATCHDOG), caplog.at_level(logging.ERROR, "aiowax"):
        async with client_of(app) as client, app.router.lifespan_context(app):
            handle = app.state.flow
            await demo.send_orders(["poison"])
            while not handle.done:
                await anyio.sleep(0.005)
            ready = await client.get("/live/readyz")
            alive = await client.get("/live/livez")
        # The shutdown did not raise it again.
    assert handle.status is aiowax.FlowStatus.FAILED
    assert ready.status_code == 503
    assert alive.status_code == 200
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1  # logged when it happened, once


@pytest.mark.asyncio
async def test_flow_handle_without_the_lifespan_says_what_to_do() -> None:
    app = Starlette(routes=[Route("/count", count_endpoint)])
    async with client_of(app) as client:
        with pytest.raises(RuntimeError, match=r"app\.state\.flow: give the app the lifespan"):
            await client.get("/count")


def test_flow_handle_tells_fastapi_it_takes_the_request() -> None:
    parameters = inspect.signature(flow_handle).parameters
    assert list(parameters) == ["request"]
    assert parameters["request"].annotation is Request


@pytest.mark.asyncio
async def test_flow_handle_as_a_fastapi_dependency() -> None:
    fastapi = pytest.importorskip("fastapi")
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    flow = push_flow(source, sink)
    app = fastapi.FastAPI(lifespan=flow_lifespan(flow))

    @app.get("/status")
    def status(
        handle: aiowax.FlowHandle = fastapi.Depends(flow_handle),  # noqa: B008
    ) -> dict[str, str]:
        return {"flow": handle.status.value}

    app.mount("/live", live_app(lambda: getattr(app.state, "flow", None), flow=flow))
    with anyio.fail_after(WATCHDOG):
        async with client_of(app) as client, app.router.lifespan_context(app):
            while app.state.flow.status is not aiowax.FlowStatus.RUNNING:
                await anyio.sleep(0.005)
            body = (await client.get("/status")).json()
            ready = await client.get("/live/readyz")
    assert body == {"flow": "running"}
    assert ready.status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"propagate": True}, TypeError, "unknown run option"),
        ({"state_name": "my flow"}, ValueError, "identifier"),
        ({"stop_timeout": -1}, ValueError, ">= 0"),
        ({"stop_timeout": "soon"}, TypeError, "seconds or a timedelta"),
        # The run options' values too, named after flow_lifespan, not run.
        ({"workers": "2"}, TypeError, "^flow_lifespan: workers must be an int"),
        ({"epoch_interval": -1}, TypeError, "^flow_lifespan: epoch_interval"),
        ({"recovery_config": "dir"}, TypeError, "^flow_lifespan: recovery_config must be"),
        (
            {"recovery_config": RecoveryConfig("d"), "cluster": object()},
            ValueError,
            "^flow_lifespan: cluster mode keeps its state in Kafka",
        ),
    ],
)
def test_flow_lifespan_checks_its_arguments_at_once(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    flow = push_flow(PushSource(), GatedSink())
    with pytest.raises(error, match=message):
        flow_lifespan(flow, **kwargs)
    with pytest.raises(TypeError, match="must be a Dataflow"):
        flow_lifespan("flow")  # type: ignore[arg-type]


def test_importing_aiowax_asgi_does_not_import_starlette() -> None:
    code = "import sys, aiowax.asgi; print(sorted(m for m in sys.modules if 'starlette' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# -- the example web service --------------------------------------------------------------


def _load_example() -> Any:
    path = Path(__file__).resolve().parents[1] / "examples" / "web_service.py"
    spec = importlib.util.spec_from_file_location("aiowax_example_web_service_live", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_the_example_web_service_mounts_the_live_page_at_live() -> None:
    web_service = _load_example()
    # The reading's window must not close before the stats are read (its
    # key would be forgotten: keys 0, seen once in CI): an hour-long window
    # with half an hour left.
    half_an_hour_ago = datetime.now(UTC) - timedelta(minutes=30)
    app = web_service.create_app(timedelta(hours=1), align_to=half_an_hour_ago)
    service = app.state.service
    with anyio.fail_after(WATCHDOG):
        async with client_of(app) as client, app.router.lifespan_context(app):
            while service.handle.status is not aiowax.FlowStatus.RUNNING:
                await anyio.sleep(0.005)
            posted = await client.post("/events", json={"sensor": "a", "value": 1.5})
            while service.handle.stats().step("stats").items_in < 1:
                await anyio.sleep(0.005)
            stats = (await client.get("/live/stats")).json()
            ready = await client.get("/live/readyz")
            page = await client.get("/live/")
            graph = (await client.get("/live/dataflow")).json()
    assert posted.status_code == 202
    steps = {s["step_id"]: s for s in stats["steps"]}
    assert steps["stats"]["items_in"] == 1
    assert steps["stats"]["keys"] == 1
    assert ready.status_code == 200
    assert page.text.startswith("<!doctype html>")
    assert graph == visualize.to_dict(service.flow)
