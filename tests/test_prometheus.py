"""`aiowax.prometheus`: the collector's output, parsed by prometheus-client, is the stats.

Every flow here has known counts; the exposition is rendered with
``generate_latest`` and read back with prometheus-client's own parser, and
each sample is compared with the `FlowStats` row it comes from.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import aiowax
from aiowax._stats.metrics import Monotonic
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.prometheus import StatsCollector, make_asgi_app
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.stats import FlowStats, StepStats
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import EventClockConfig, TumblingWindow
from embed_helpers import WATCHDOG, settle

T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: Prometheus name (without ``_total``) -> the `StepStats` field it exports.
STEP_COUNTERS = {
    "aiowax_step_items_in": "items_in",
    "aiowax_step_items_out": "items_out",
    "aiowax_step_errors": "errors",
    "aiowax_step_busy_seconds": "busy_s",
    "aiowax_step_blocked_seconds": "blocked_s",
}


def known_flow(out: list[Any], name: str = "known") -> Dataflow:
    flow = Dataflow(name)
    flow.input("inp", TestingSource(range(1000), batch_size=10))
    flow.map("key", lambda x: (f"k{x % 5}", x))
    flow.filter("even", lambda kv: kv[1] % 2 == 0)
    flow.stateful_map("count", lambda: 0, lambda n, _v: (n + 1, n + 1))
    flow.output("out", TestingSink(out))
    return flow


async def final_stats(flow: Dataflow, **options: Any) -> FlowStats:
    seen: list[FlowStats] = []
    await aiowax.run(flow, on_stats=seen.append, **options)
    return seen[-1]


def scrape(*sources: Any) -> str:
    registry = CollectorRegistry()
    registry.register(StatsCollector(*sources))
    return generate_latest(registry).decode()


def parse(text: str) -> tuple[dict[str, Any], dict[str, list[Sample]]]:
    """The families by name, and the samples by sample name."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples: dict[str, list[Sample]] = defaultdict(list)
    for family in families.values():
        for sample in family.samples:
            samples[sample.name].append(sample)
    return families, samples


def by_row(samples: list[Sample]) -> dict[tuple[str, int], float]:
    return {(s.labels["step_id"], int(s.labels["worker_index"])): s.value for s in samples}


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_counters_equal_the_stats_per_step_and_worker(workers: int) -> None:
    out: list[Any] = []
    stats = await final_stats(known_flow(out), workers=workers)
    families, samples = parse(scrape(lambda: stats))

    for family, field in STEP_COUNTERS.items():
        assert families[family].type == "counter"
        got = by_row(samples[f"{family}_total"])
        assert got == {(r.step_id, r.worker_index): getattr(r, field) for r in stats.steps}
    # And the truth the stats hold: summed over the workers.
    items_in = by_row(samples["aiowax_step_items_in_total"])
    items_out = by_row(samples["aiowax_step_items_out_total"])
    expected = {
        "inp": (1000, 1000),
        "key": (1000, 1000),
        "even": (1000, 500),
        "count": (500, 500),
        "out": (500, 500),
    }
    summed = {
        step: (
            sum(v for (s, _), v in items_in.items() if s == step),
            sum(v for (s, _), v in items_out.items() if s == step),
        )
        for step in expected
    }
    assert summed == expected
    assert len(out) == 500
    assert {worker for _, worker in items_in} == set(range(workers))
    # Keys: the keyed step only, per worker, as the stats say.
    assert by_row(samples["aiowax_step_keys"]) == {
        ("count", r.worker_index): r.keys for r in stats.steps if r.step_id == "count"
    }
    assert sum(by_row(samples["aiowax_step_keys"]).values()) == 5
    assert families["aiowax_step_keys"].type == "gauge"


@pytest.mark.asyncio
async def test_flow_metrics_and_labels() -> None:
    stats = await final_stats(known_flow([]), workers=2)
    families, samples = parse(scrape(lambda: stats))

    status = {s.labels["status"]: s.value for s in samples["aiowax_flow_status"]}
    assert status == {
        "starting": 0,
        "running": 0,
        "stopping": 0,
        "finished": 1,
        "failed": 0,
        "cancelled": 0,
    }
    one = {name: s[0] for name, s in samples.items() if name.startswith("aiowax_flow_")}
    assert one["aiowax_flow_workers"].value == 2
    assert one["aiowax_flow_epoch"].value == stats.epoch
    assert one["aiowax_flow_uptime_seconds"].value == stats.uptime_s
    assert stats.started_at is not None
    assert one["aiowax_flow_start_time_seconds"].value == stats.started_at.timestamp()
    assert one["aiowax_flow_snapshots_total"].value == 0
    assert one["aiowax_flow_restoring"].value == 0
    assert families["aiowax_flow_snapshots"].type == "counter"

    # Labels: flow on every series; step_id and worker_index on the steps'
    # series; nothing else (no keys, no items).
    for name, rows in samples.items():
        for sample in rows:
            assert sample.labels["flow"] == "known"
            if name == "aiowax_flow_status":
                assert set(sample.labels) == {"flow", "status"}
            elif name == "aiowax_step_info":
                assert set(sample.labels) == {"flow", "step_id", "kind", "pipeline"}
            elif name.startswith("aiowax_flow_"):
                assert set(sample.labels) == {"flow"}
            else:
                assert set(sample.labels) == {"flow", "step_id", "worker_index"}, name
    info = {
        s.labels["step_id"]: (s.labels["kind"], s.labels["pipeline"], s.value)
        for s in samples["aiowax_step_info"]
    }
    assert info == {
        "inp": ("input", "inp", 1),
        "key": ("map", "inp", 1),
        "even": ("filter", "inp", 1),
        "count": ("stateful_map", "inp", 1),
        "out": ("output", "inp", 1),
    }
    # HELP text on every family.
    assert all(family.documentation for family in families.values())


@pytest.mark.asyncio
async def test_absent_figures_have_no_series() -> None:
    stats = await final_stats(known_flow([]))
    families, samples = parse(scrape(lambda: stats))
    # No window step, no lag (TestingSource cannot tell), no recovery.
    for absent in (
        "aiowax_window_watermark_lag_seconds",
        "aiowax_window_watermark_timestamp_seconds",
        "aiowax_window_open",
        "aiowax_window_late_items",
        "aiowax_input_lag_messages",
        "aiowax_flow_last_snapshot_timestamp_seconds",
        "aiowax_flow_last_snapshot_duration_seconds",
    ):
        assert absent not in families
    # Per step, only where the step has the figure.
    assert {s.labels["step_id"] for s in samples["aiowax_step_keys"]} == {"count"}
    assert {s.labels["step_id"] for s in samples["aiowax_input_partitions"]} == {"inp"}
    assert by_row(samples["aiowax_input_partitions"]) == {("inp", 0): 1}
    latency = by_row(samples["aiowax_output_write_latency_seconds"])
    assert latency == {("out", 0): stats.step("out").write_latency_s}
    # An input has no input channel.
    queued = by_row(samples["aiowax_step_queued_messages"])
    capacity = by_row(samples["aiowax_step_queue_capacity_messages"])
    assert set(queued) == set(capacity) == {("key", 0), ("even", 0), ("count", 0), ("out", 0)}
    assert capacity == {(r.step_id, 0): r.capacity for r in stats.steps if r.kind != "input"}
    assert all(value > 0 for value in capacity.values())


@pytest.mark.asyncio
async def test_window_figures_and_late_items() -> None:
    flow = Dataflow("late")
    times = [0, 5, 12, 3, 25, 11]
    flow.input("inp", TestingSource([("a", T0 + timedelta(seconds=t)) for t in times]))
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(0))
    flow.collect_window("win", clock, TumblingWindow(length=timedelta(seconds=10), align_to=T0))
    flow.output("out", TestingSink([]))
    stats = await final_stats(flow)
    families, samples = parse(scrape(lambda: stats))
    assert families["aiowax_window_late_items"].type == "counter"
    assert by_row(samples["aiowax_window_late_items_total"]) == {("win", 0): 2}
    # Every window closed at the end of input: none open, no keys, no watermark.
    assert by_row(samples["aiowax_window_open"]) == {("win", 0): 0}
    assert "aiowax_window_watermark_lag_seconds" not in families


@pytest.mark.asyncio
async def test_window_watermark_and_open_windows_of_a_running_flow() -> None:
    source: PushSource[Any] = PushSource()
    flow = Dataflow("windows")
    flow.input("inp", source)
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(seconds=30))
    flow.collect_window("win", clock, TumblingWindow(length=timedelta(hours=1), align_to=T0))
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            newest = datetime.now(UTC)
            for key in ("a", "b", "c"):
                await source.send((key, newest - timedelta(hours=2)))
            await source.send(("a", newest))
            while handle.stats().step("win").items_in < 4:
                await settle()
            now = handle.stats()
            await handle.stop()
    _, samples = parse(scrape(lambda: now))
    win = now.step("win")
    assert win.watermark is not None and win.watermark_lag_s is not None
    marks = by_row(samples["aiowax_window_watermark_timestamp_seconds"])
    assert marks == {("win", 0): win.watermark.timestamp()}
    lags = by_row(samples["aiowax_window_watermark_lag_seconds"])
    assert lags == {("win", 0): win.watermark_lag_s}
    assert 29 < lags[("win", 0)] < 60
    assert by_row(samples["aiowax_window_open"]) == {("win", 0): 3}
    assert by_row(samples["aiowax_step_keys"]) == {("win", 0): 3}


@pytest.mark.asyncio
async def test_snapshot_metrics_with_recovery(tmp_path: Path) -> None:
    flow = Dataflow("saved")
    flow.input("inp", TestingSource(range(30), batch_size=10))
    flow.map("key", lambda x: ("k", x))
    flow.stateful_map("sum", lambda: 0, lambda s, x: (s + x, s + x))
    flow.output("out", TestingSink([]))
    init_db_dir(tmp_path, 1)
    stats = await final_stats(
        flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(tmp_path))
    )
    _, samples = parse(scrape(lambda: stats))
    assert stats.snapshots >= 1 and stats.last_snapshot_at is not None
    assert samples["aiowax_flow_snapshots_total"][0].value == stats.snapshots
    when = samples["aiowax_flow_last_snapshot_timestamp_seconds"][0].value
    assert when == stats.last_snapshot_at.timestamp()
    took = samples["aiowax_flow_last_snapshot_duration_seconds"][0].value
    assert took == stats.last_snapshot_s


@pytest.mark.asyncio
async def test_a_flow_handle_is_read_fresh_at_each_scrape() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow("live")
    flow.input("inp", source)
    flow.map("inc", lambda x: x + 1)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            registry = CollectorRegistry()
            registry.register(StatsCollector(handle))
            for sent in (1, 2):
                await source.send(sent)
                while handle.stats().step("out").items_out < sent:
                    await settle()
                _, samples = parse(generate_latest(registry).decode())
                now = handle.stats()
                assert by_row(samples["aiowax_step_items_out_total"]) == {
                    (r.step_id, r.worker_index): r.items_out for r in now.steps
                }
                running = [s for s in samples["aiowax_flow_status"] if s.value == 1]
                assert [s.labels["status"] for s in running] == ["running"]
            await handle.stop()
            _, samples = parse(generate_latest(registry).decode())
            assert [s.labels["status"] for s in samples["aiowax_flow_status"] if s.value] == [
                "finished"
            ]


@pytest.mark.asyncio
async def test_a_scrape_from_another_thread_reads_on_the_flows_loop() -> None:
    # As prometheus_client.start_http_server scrapes: in a thread of its own.
    source: PushSource[int] = PushSource()
    flow = Dataflow("threaded")
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            registry = CollectorRegistry()
            registry.register(StatsCollector(handle))
            await source.send(7)
            while handle.stats().step("out").items_out < 1:
                await settle()
            text = await anyio.to_thread.run_sync(generate_latest, registry)
            _, samples = parse(text.decode())
            assert by_row(samples["aiowax_step_items_out_total"]) == {("inp", 0): 1, ("out", 0): 1}
            await handle.stop()


@pytest.mark.asyncio
async def test_several_flows_in_one_collector() -> None:
    first = await final_stats(known_flow([], "first"))
    second = await final_stats(known_flow([], "second"))
    _, samples = parse(scrape(lambda: first, lambda: second))
    flows = {s.labels["flow"]: s.value for s in samples["aiowax_flow_workers"]}
    assert flows == {"first": 1, "second": 1}
    got = {
        (s.labels["flow"], s.labels["step_id"]): s.value
        for s in samples["aiowax_step_items_in_total"]
    }
    assert got[("first", "even")] == got[("second", "even")] == 1000


@pytest.mark.asyncio
async def test_the_asgi_app_serves_the_registry() -> None:
    stats = await final_stats(known_flow([]))
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: stats))
    app = make_asgi_app(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    _, samples = parse(answer.text)
    assert by_row(samples["aiowax_step_items_out_total"]) == {
        (r.step_id, r.worker_index): r.items_out for r in stats.steps
    }
    with pytest.raises(TypeError, match="CollectorRegistry"):
        make_asgi_app(object())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_asgi_app_is_a_route_of_a_starlette_app() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    stats = FlowStats(name="f", status="running")
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: stats))
    app = Starlette(routes=[Route("/metrics", make_asgi_app(registry))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    _, samples = parse(answer.text)
    assert samples["aiowax_flow_workers"][0].labels == {"flow": "f"}


@pytest.mark.asyncio
async def test_the_asgi_app_served_alone_answers_the_lifespan_protocol() -> None:
    app = make_asgi_app(CollectorRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with anyio.fail_after(WATCHDOG):
        await app({"type": "lifespan"}, receive, send)
    assert sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]


def test_nothing_goes_to_the_global_registry() -> None:
    before = {metric.name for metric in REGISTRY.collect()}
    StatsCollector(lambda: FlowStats(name="f", status="running"))
    after = {metric.name for metric in REGISTRY.collect()}
    assert before == after
    assert not any(name.startswith("aiowax") for name in after)


def test_a_registry_refuses_a_second_collector() -> None:
    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: None))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(StatsCollector(lambda: None))


def test_sources_are_checked() -> None:
    with pytest.raises(TypeError, match=r"a source must be an aiowax\.FlowHandle"):
        StatsCollector(3)  # type: ignore[arg-type]
    one, two = aiowax.FlowHandle(known_flow([])), aiowax.FlowHandle(known_flow([]))
    with pytest.raises(ValueError, match="several flows are named 'known'"):
        StatsCollector(one, two)


def test_no_stats_yet_and_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> FlowStats:
        raise OSError("gone")

    good = FlowStats(name="good", status="running")
    with caplog.at_level(logging.ERROR, logger="aiowax"):
        _, samples = parse(scrape(lambda: None, broken, lambda: good, lambda: 3))
    assert {s.labels["flow"] for s in samples["aiowax_flow_workers"]} == {"good"}
    failures = [r for r in caplog.records if "reading the stats" in r.getMessage()]
    assert len(failures) == 2
    assert "not an aiowax.stats.FlowStats" in str(failures[1].exc_info[1])  # type: ignore[index]


def test_a_flow_name_met_twice_is_exported_once(caplog: pytest.LogCaptureFixture) -> None:
    rows = (StepStats(step_id="s", kind="map", pipeline="i", worker_index=0, items_in=1),)
    first = FlowStats(name="same", status="running", steps=rows)
    second = FlowStats(name="same", status="failed")
    collector = StatsCollector(lambda: first, lambda: second)
    registry = CollectorRegistry()
    registry.register(collector)
    with caplog.at_level(logging.WARNING, logger="aiowax"):
        for _ in range(2):
            _, samples = parse(generate_latest(registry).decode())
            assert [s.labels["status"] for s in samples["aiowax_flow_status"] if s.value] == [
                "running"
            ]
    assert len([r for r in caplog.records if "two flows are named" in r.getMessage()]) == 1


def test_busy_time_never_steps_back_within_a_run() -> None:
    def stats(items: int, busy: float) -> FlowStats:
        row = StepStats(
            step_id="s", kind="map", pipeline="i", worker_index=0, items_in=items, busy_s=busy
        )
        return FlowStats(name="f", status="running", steps=(row,))

    guard = Monotonic()
    values = []
    for items, busy in [(10, 5.0), (10, 3.0), (12, 4.0), (12, 6.0), (0, 0.5)]:
        reading = stats(items, busy)
        values.append(guard.value(reading, reading.steps[0], "busy", busy))
    # Held at 5 while the raw value is below; a drop in items is a new run.
    assert values == [5.0, 5.0, 5.0, 6.0, 0.5]


def test_busy_time_of_a_flow_run_again_under_its_name_starts_afresh() -> None:
    # The second run of a flow with the same items in (a service restarting
    # its flow) reported the first run's busy time, held as a floor, while
    # its own stats said 0.02 s: the start time tells the runs apart.
    def stats(started: datetime, busy: float) -> FlowStats:
        row = StepStats(
            step_id="s", kind="map", pipeline="i", worker_index=0, items_in=20, busy_s=busy
        )
        return FlowStats(name="f", status="finished", started_at=started, steps=(row,))

    guard = Monotonic()
    first = stats(datetime(2026, 1, 1, tzinfo=UTC), 0.6)
    second = stats(datetime(2026, 1, 1, 0, 5, tzinfo=UTC), 0.02)
    assert guard.value(first, first.steps[0], "busy", 0.6) == 0.6
    assert guard.value(second, second.steps[0], "busy", 0.02) == 0.02


def test_a_collector_forgets_the_flows_its_sources_no_longer_report() -> None:
    # A source that reports the latest job, named by its id: the guard kept
    # a floor for every name ever seen (1.4 KB a name, for ever).
    latest: list[FlowStats] = []

    def job(n: int) -> FlowStats:
        row = StepStats(step_id="s", kind="map", pipeline="i", worker_index=0, busy_s=1.0)
        return FlowStats(name=f"job-{n}", status="running", steps=(row,))

    collector = StatsCollector(lambda: latest[-1])
    for n in range(200):
        latest.append(job(n))
        busy = [m for m in collector.collect() if m.name == "aiowax_step_busy_seconds"]
        assert [s.labels["flow"] for s in busy[0].samples] == [f"job-{n}"]
    # The last few, each until it has been missing from FORGET_AFTER readings.
    assert list(collector._monotonic._runs) == [f"job-{n}" for n in range(195, 200)]


def test_a_failed_read_of_a_source_does_not_drop_its_floor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One read that failed (stats() timing out) left the flow out of a
    # reading; forgetting its floor then let the next, lower reading step
    # the counter back: a reset, to Prometheus.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    busy = iter([1.000000002, None, 1.000000001])  # an idle step's rounding jitter

    def source() -> FlowStats:
        value = next(busy)
        if value is None:
            raise TimeoutError("the flow's event loop did not answer in 5 s")
        row = StepStats(
            step_id="s", kind="map", pipeline="i", worker_index=0, items_in=10, busy_s=value
        )
        return FlowStats(name="f", status="running", started_at=start, steps=(row,))

    registry = CollectorRegistry()
    registry.register(StatsCollector(source))
    labels = {"flow": "f", "step_id": "s", "worker_index": "0"}
    values = [registry.get_sample_value("aiowax_step_busy_seconds_total", labels) for _ in range(3)]
    assert values == [1.000000002, None, 1.000000002]


def test_concurrent_scrapes_of_flows_named_anew_each_read_do_not_fail() -> None:
    # prometheus-client's threaded server scrapes concurrently; forgetting a
    # flow while another scrape added one failed with "dictionary changed
    # size during iteration" (helper-50's repro, made smaller).
    import itertools
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the race shows at once
    counter = itertools.count()
    row = StepStats(step_id="s", kind="map", pipeline="i", worker_index=0, busy_s=1.0)

    def source(i: int) -> FlowStats:
        return FlowStats(name=f"job-{next(counter)}-{i}", status="running", steps=(row,))

    collector = StatsCollector(*(functools.partial(source, i) for i in range(20)))
    errors: list[BaseException] = []

    def scrape() -> None:
        for _ in range(100):
            try:
                list(collector.collect())
            except Exception as error:  # any error is the failure
                errors.append(error)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_a_missing_prometheus_client_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "aiowax.prometheus")
    monkeypatch.delitem(sys.modules, "aiowax._stats.prometheus")
    with pytest.raises(ImportError, match=r"pip install '\.\[prometheus\]' in the aiowax checkout"):
        importlib.import_module("aiowax.prometheus")
