"""`aiowax.otel`: instruments that report the stats, and spans around runs and snapshots.

The SDK is configured here only, never by aiowax: metrics go to an
`InMemoryMetricReader` of a meter provider made per test and handed to
`instrument_metrics`; spans go to an `InMemorySpanExporter` on the global
tracer provider, which a process can set only once (the module fixture
sets it, or joins the SDK provider another module set).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import aiowax
from aiowax import _observe
from aiowax._cluster import runtime as cluster_runtime
from aiowax._cluster.runtime import ClusterRun
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.otel import StatsInstruments, instrument_metrics
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.stats import FlowStats, StepStats
from aiowax.testing import TestingSink, TestingSource
from embed_helpers import WATCHDOG, settle

#: OTel instrument -> (the `StepStats` field, unit, a counter?).
STEP_INSTRUMENTS = {
    "aiowax.step.items_in": ("items_in", "{item}", True),
    "aiowax.step.items_out": ("items_out", "{item}", True),
    "aiowax.step.errors": ("errors", "{error}", True),
    "aiowax.step.busy_time": ("busy_s", "s", True),
    "aiowax.step.blocked_time": ("blocked_s", "s", True),
    "aiowax.step.keys": ("keys", "{key}", False),
    "aiowax.input.partitions": ("partitions", "{partition}", False),
    "aiowax.output.write_latency": ("write_latency_s", "s", False),
}


def known_flow(name: str = "known") -> Dataflow:
    flow = Dataflow(name)
    flow.input("inp", TestingSource(range(1000), batch_size=10))
    flow.map("key", lambda x: (f"k{x % 5}", x))
    flow.filter("even", lambda kv: kv[1] % 2 == 0)
    flow.stateful_map("count", lambda: 0, lambda n, _v: (n + 1, n + 1))
    flow.output("out", TestingSink([]))
    return flow


async def final_stats(flow: Dataflow, **options: Any) -> FlowStats:
    seen: list[FlowStats] = []
    await aiowax.run(flow, on_stats=seen.append, **options)
    return seen[-1]


@pytest.fixture
def reader() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    yield metric_reader, provider
    provider.shutdown()


def collected(metric_reader: InMemoryMetricReader) -> dict[str, Any]:
    """Each instrument's SDK metric, by name."""
    data = metric_reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(metric: Any) -> dict[tuple[Any, ...], float]:
    return {
        tuple(sorted(dict(point.attributes or {}).items())): point.value
        for point in metric.data.data_points
    }


def row_key(flow: str, step_id: str, worker: int) -> tuple[Any, ...]:
    return tuple(sorted({"flow": flow, "step_id": step_id, "worker_index": worker}.items()))


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_metric_values_equal_the_stats(
    workers: int, reader: tuple[InMemoryMetricReader, MeterProvider]
) -> None:
    metric_reader, provider = reader
    stats = await final_stats(known_flow(), workers=workers)
    instruments = instrument_metrics(lambda: stats, meter=provider.get_meter("test"))
    assert isinstance(instruments, StatsInstruments)
    metrics = collected(metric_reader)

    for name, (field, unit, counter) in STEP_INSTRUMENTS.items():
        metric = metrics[name]
        assert metric.unit == unit
        assert metric.description
        if counter:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic
        else:
            assert isinstance(metric.data, Gauge)
        expected = {
            row_key("known", r.step_id, r.worker_index): getattr(r, field)
            for r in stats.steps
            if getattr(r, field) is not None
        }
        assert points(metric) == expected, name
    items_out = points(metrics["aiowax.step.items_out"])
    assert sum(v for k, v in items_out.items() if ("step_id", "even") in k) == 500
    assert sum(points(metrics["aiowax.step.keys"]).values()) == 5

    flow_key = (("flow", "known"),)
    assert points(metrics["aiowax.flow.workers"]) == {flow_key: workers}
    assert points(metrics["aiowax.flow.epoch"]) == {flow_key: stats.epoch}
    assert points(metrics["aiowax.flow.uptime"]) == {flow_key: stats.uptime_s}
    assert metrics["aiowax.flow.uptime"].unit == "s"
    assert points(metrics["aiowax.flow.snapshots"]) == {flow_key: 0}
    status = {dict(k)["status"]: v for k, v in points(metrics["aiowax.flow.status"]).items()}
    assert status["finished"] == 1
    assert sum(status.values()) == 1
    # Absent figures report nothing.
    for absent in ("aiowax.window.watermark_lag", "aiowax.input.lag", "aiowax.window.late_items"):
        assert absent not in metrics or not points(metrics[absent])
    assert "aiowax.flow.last_snapshot.time" not in metrics or not points(
        metrics["aiowax.flow.last_snapshot.time"]
    )
    instruments.close()


@pytest.mark.asyncio
async def test_a_flow_handle_is_read_at_each_collection(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    metric_reader, provider = reader
    source: PushSource[int] = PushSource()
    flow = Dataflow("live")
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            with instrument_metrics(handle, meter=provider.get_meter("test")):
                for sent in (1, 2):
                    await source.send(sent)
                    while handle.stats().step("out").items_out < sent:
                        await settle()
                    metrics = collected(metric_reader)
                    got = points(metrics["aiowax.step.items_out"])
                    assert got[row_key("live", "out", 0)] == sent
            await handle.stop()


@pytest.mark.asyncio
async def test_a_collection_in_another_thread_reads_on_the_flows_loop(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    # As the SDK's PeriodicExportingMetricReader collects: in a thread of its own.
    metric_reader, provider = reader
    source: PushSource[int] = PushSource()
    flow = Dataflow("threaded")
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            with instrument_metrics(handle, meter=provider.get_meter("test")):
                await source.send(7)
                while handle.stats().step("out").items_out < 1:
                    await settle()
                metrics = await anyio.to_thread.run_sync(collected, metric_reader)
                assert points(metrics["aiowax.step.items_out"]) == {
                    row_key("threaded", "inp", 0): 1,
                    row_key("threaded", "out", 0): 1,
                }
            await handle.stop()


def test_sources_are_read_once_per_collection_and_not_after_close(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    metric_reader, provider = reader
    calls: list[int] = []

    def source() -> FlowStats:
        calls.append(1)
        return FlowStats(name="f", status="running")

    instruments = instrument_metrics(source, meter=provider.get_meter("test"))
    collected(metric_reader)
    collected(metric_reader)
    assert len(calls) == 2
    instruments.close()
    assert instruments.closed
    # Nothing observed, nothing read.
    assert all(not points(metric) for metric in collected(metric_reader).values())
    assert len(calls) == 2
    instruments.close()


def test_the_default_meter_and_checked_sources() -> None:
    # The global meter provider: the API's (no SDK set), which observes nothing.
    with instrument_metrics(lambda: None) as instruments:
        assert len(instruments.instruments) == 24
        # Its meter is one object for every call (the API's proxy meters
        # are new on each), so a second open set is refused here too, not
        # left unreported by the SDK set later.
        with pytest.raises(ValueError, match="close them first"):
            instrument_metrics(lambda: None)
    with instrument_metrics(lambda: None) as again:
        assert again is instruments
    with pytest.raises(TypeError, match="a source must be"):
        instrument_metrics("flow")  # type: ignore[arg-type]


# Spans ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider
    span_exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield span_exporter
    # A provider cannot drop a processor: the stopped exporter keeps nothing more.
    span_exporter.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


@pytest.mark.asyncio
async def test_a_run_with_recovery_has_a_run_span_and_snapshot_spans(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    exporter.clear()
    flow = Dataflow("saved")
    flow.input("inp", TestingSource(range(30), batch_size=10))
    flow.map("key", lambda x: ("k", x))
    flow.stateful_map("sum", lambda: 0, lambda s, x: (s + x, s + x))
    flow.output("out", TestingSink([]))
    init_db_dir(tmp_path, 1)
    stats = await final_stats(
        flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(tmp_path))
    )
    spans = exporter.get_finished_spans()
    [run] = named(spans, "aiowax.run")
    assert run.attributes is not None
    assert dict(run.attributes) == {
        "aiowax.flow": "saved",
        "aiowax.workers": 1,
        "aiowax.start_epoch": 1,
    }
    assert run.status.status_code is StatusCode.UNSET
    snapshots = named(spans, "aiowax.snapshot")
    assert len(snapshots) == stats.snapshots >= 1
    epochs = [span.attributes["aiowax.epoch"] for span in snapshots if span.attributes]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)
    for snapshot in snapshots:
        # Inside the run, each a child of its span.
        assert snapshot.parent is not None and run.context is not None
        assert snapshot.parent.span_id == run.context.span_id
        assert snapshot.status.status_code is StatusCode.UNSET
    # Nothing per item: the run and its commits only.
    assert {span.name for span in spans} == {"aiowax.run", "aiowax.snapshot"}


@pytest.mark.asyncio
async def test_a_failed_run_has_an_error_status(exporter: InMemorySpanExporter) -> None:
    exporter.clear()

    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    flow = Dataflow("failing")
    flow.input("inp", TestingSource(range(10)))
    flow.map("boom", boom)
    flow.output("out", TestingSink([]))
    with pytest.raises(ValueError, match="three"):
        await aiowax.run(flow)
    [run] = named(exporter.get_finished_spans(), "aiowax.run")
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description is not None and "three" in run.status.description
    assert [event.name for event in run.events] == ["exception"]


@pytest.mark.asyncio
async def test_an_aborted_run_is_no_error(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    source: PushSource[int] = PushSource()
    flow = Dataflow("aborted")
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            await source.send(1)
            await handle.abort()
    [run] = named(exporter.get_finished_spans(), "aiowax.run")
    assert run.status.status_code is StatusCode.UNSET


@pytest.mark.asyncio
async def test_a_cluster_generation_and_its_restore_have_spans(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No broker: the restore fails at once, which both spans record.
    class Store:
        def __init__(self, *args: Any) -> None:
            pass

        def load(self) -> Any:
            raise ConnectionError("broker gone")

    topology = SimpleNamespace(
        cluster=SimpleNamespace(app_id="app"), generation_flow=lambda assigned: object()
    )
    member = SimpleNamespace(commit=None, committed=None)
    control = ClusterRun()
    monkeypatch.setattr(cluster_runtime, "KafkaStore", Store)
    monkeypatch.setattr(cluster_runtime, "check_topics", lambda topology: None)
    exporter.clear()
    with pytest.raises(ConnectionError, match="broker gone"):
        await cluster_runtime._generation(
            topology,  # type: ignore[arg-type]
            member,  # type: ignore[arg-type]
            control,
            1.0,
            {"orders": [3, 0], "aiowax-app-repartition": [1]},
        )
    assert not control.restoring
    spans = exporter.get_finished_spans()
    [generation] = named(spans, "aiowax.cluster.generation")
    [restore] = named(spans, "aiowax.cluster.restore")
    assert generation.attributes is not None
    assert dict(generation.attributes) == {
        "aiowax.app_id": "app",
        "aiowax.partitions": "aiowax-app-repartition:1 orders:0,3",
    }
    assert restore.parent is not None and generation.context is not None
    assert restore.parent.span_id == generation.context.span_id
    for span in (generation, restore):
        assert span.status.status_code is StatusCode.ERROR


# Without opentelemetry-api -------------------------------------------------


@pytest.fixture
def no_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    _observe._tracer.cache_clear()
    yield
    _observe._tracer.cache_clear()


@pytest.mark.usefixtures("no_opentelemetry")
def test_spans_cost_nothing_without_the_api() -> None:
    first = _observe.span("aiowax.run", flow="f")
    assert first is _observe.span("aiowax.snapshot", epoch=1)
    with first as value:
        assert value is None


@pytest.mark.usefixtures("no_opentelemetry")
def test_a_missing_api_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "aiowax.otel")
    monkeypatch.delitem(sys.modules, "aiowax._stats.otel")
    with pytest.raises(ImportError, match=r"pip install '\.\[otel\]' in the aiowax checkout"):
        importlib.import_module("aiowax.otel")


def test_instruments_forget_the_flows_their_sources_no_longer_report(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    # A source that reports the latest job, named by its id: the busy-time
    # guard kept a floor for every name ever seen.
    metric_reader, provider = reader
    latest: list[FlowStats] = []

    def job(n: int) -> FlowStats:
        row = StepStats(step_id="s", kind="map", pipeline="i", worker_index=0, busy_s=1.0)
        return FlowStats(name=f"job-{n}", status="running", steps=(row,))

    instruments = instrument_metrics(lambda: latest[-1], meter=provider.get_meter("test"))
    for n in range(50):
        latest.append(job(n))
        busy = points(collected(metric_reader)["aiowax.step.busy_time"])
        assert busy[row_key(f"job-{n}", "s", 0)] == 1.0
    # The last few, each until it has been missing from FORGET_AFTER readings.
    assert list(instruments._monotonic._runs) == [f"job-{n}" for n in range(45, 50)]


def test_the_instruments_of_a_meter_report_each_run_in_turn_and_let_go_of_the_last(
    reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    # A service that restarts its flow, following the docs' `with
    # instrument_metrics(handle)` for each run: the second call made
    # instruments an SDK ignores (runs after the first reported nothing),
    # and the closed first ones kept the first run alive for good.
    import gc
    import weakref

    metric_reader, provider = reader
    meter = provider.get_meter("test")

    class Run:
        def __init__(self, name: str) -> None:
            row = StepStats(step_id="s", kind="map", pipeline="i", worker_index=0, items_in=7)
            self.stats = FlowStats(name=name, status="running", steps=(row,))

        def __call__(self) -> FlowStats:
            return self.stats

    first = Run("run-1")
    with instrument_metrics(first, meter=meter) as instruments:
        assert points(collected(metric_reader)["aiowax.step.items_in"]) == {
            row_key("run-1", "s", 0): 7
        }
        # While they are open, a second call on the meter is refused.
        with pytest.raises(ValueError, match="close them first"):
            instrument_metrics(Run("other"), meter=meter)
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None  # closed instruments keep no flow alive
    second = Run("run-2")
    with instrument_metrics(second, meter=meter) as again:
        assert again is instruments
        items_in = points(collected(metric_reader)["aiowax.step.items_in"])
        assert items_in[row_key("run-2", "s", 0)] == 7
