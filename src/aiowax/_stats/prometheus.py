"""A prometheus-client collector over flows' stats, and an ASGI app to serve it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, TypeAlias

from aiowax._util import install_hint

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:
    msg = "aiowax.prometheus needs prometheus-client, which is not installed: " + install_hint(
        "prometheus"
    )
    raise ImportError(msg, name=error.name) from error

from aiowax._stats.metrics import (
    FLOW_METRICS,
    GUARDED,
    STATUS_METRIC,
    STATUSES,
    STEP_INFO_HELP,
    STEP_METRICS,
    MetricSpec,
    Monotonic,
    Sources,
    StatsSource,
    step_labels,
)
from aiowax._stats.model import FlowStats
from aiowax._util import answer_lifespan

_Scope: TypeAlias = MutableMapping[str, Any]
_Message: TypeAlias = MutableMapping[str, Any]
#: An ASGI application, as Starlette and FastAPI type it.
ASGIApp: TypeAlias = Callable[
    [_Scope, Callable[[], Awaitable[_Message]], Callable[[_Message], Awaitable[None]]],
    Awaitable[None],
]

_Family: TypeAlias = CounterMetricFamily | GaugeMetricFamily

_STEP_LABELS = ["flow", "step_id", "worker_index"]


def _family(spec: MetricSpec, labels: list[str]) -> _Family:
    kind = CounterMetricFamily if spec.counter else GaugeMetricFamily
    return kind(spec.prom, spec.help, labels=labels, unit=spec.prom_unit)


class StatsCollector:
    """Prometheus metrics of running flows, read fresh at each scrape.

    Register it in your own registry; aiowax never registers anything in
    prometheus-client's global default one::

        registry = CollectorRegistry()
        registry.register(StatsCollector(handle))
        app.add_route("/metrics", aiowax.prometheus.make_asgi_app(registry))

    Each scrape calls every source once: a `aiowax.FlowHandle`'s
    `aiowax.FlowHandle.stats`, or a function that returns a
    `aiowax.stats.FlowStats` (for instance the last one that
    ``aiowax.run(flow, on_stats=...)`` handed over), or ``None`` while it has
    none. Steps are labelled ``flow``, ``step_id`` and ``worker_index``, and
    ``aiowax_step_info`` adds each step's ``kind`` and ``pipeline``; no
    label ever holds a key or an item. A figure a step does not have (keys
    of a map, lag of a source that cannot tell) has no series.

    Give one collector every flow of a process: two collectors in one
    registry would export the same metric names, and the registry refuses
    the second. Flows are told apart by their name (``Dataflow(name=...)``);
    a name met twice in one scrape is exported once and logged.

    Args:
        *sources: The flows: `aiowax.FlowHandle` objects, or functions taking
            no argument and returning a `aiowax.stats.FlowStats` or ``None``.

    Raises:
        TypeError: A source is neither.
        ValueError: Two handles have the same flow name.
    """

    def __init__(self, *sources: StatsSource) -> None:
        self._sources = Sources("StatsCollector", sources)
        self._monotonic = Monotonic()

    def describe(self) -> list[Metric]:
        """The metric families, without samples (how the registry finds clashes)."""
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        """Every metric of every source's stats now."""
        flows = self._sources.read()
        self._monotonic.keep(flows)
        families = _families()
        for stats in flows:
            _add_flow(families, stats, self._monotonic)
        for family in families.values():
            if family.samples:
                yield family


def _families() -> dict[str, _Family]:
    families: dict[str, _Family] = {
        STATUS_METRIC.prom: _family(STATUS_METRIC, ["flow", "status"]),
        "aiowax_step_info": GaugeMetricFamily(
            "aiowax_step_info", STEP_INFO_HELP, labels=["flow", "step_id", "kind", "pipeline"]
        ),
    }
    for spec in FLOW_METRICS:
        families[spec.prom] = _family(spec, ["flow"])
    for spec in STEP_METRICS:
        families[spec.prom] = _family(spec, _STEP_LABELS)
    return families


def _add_flow(families: dict[str, _Family], stats: FlowStats, monotonic: Monotonic) -> None:
    status = families[STATUS_METRIC.prom]
    for name in STATUSES:
        status.add_metric([stats.name, name], 1.0 if stats.status == name else 0.0)
    for spec in FLOW_METRICS:
        value = spec.value(stats)
        if value is not None:
            families[spec.prom].add_metric([stats.name], value)
    info = families["aiowax_step_info"]
    described: set[str] = set()
    for row in stats.steps:
        if row.step_id not in described:
            described.add(row.step_id)
            info.add_metric([stats.name, row.step_id, row.kind, row.pipeline], 1.0)
        labels = step_labels(stats, row)
        label_values = [labels[name] for name in _STEP_LABELS]
        for spec in STEP_METRICS:
            value = spec.value(row)
            if value is None:
                continue
            if spec.prom in GUARDED:
                value = monotonic.value(stats, row, spec.prom, value)
            families[spec.prom].add_metric(label_values, value)


class _MetricsApp:
    """prometheus-client's ASGI app, answering the lifespan protocol too.

    An instance, not a function, so Starlette's ``Route`` and FastAPI's
    ``add_route`` take it as an ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(
        self,
        scope: _Scope,
        receive: Callable[[], Awaitable[_Message]],
        send: Callable[[_Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            # Served alone (``uvicorn module:metrics_app``): nothing to start.
            await answer_lifespan(receive, send)
            return
        await self._app(scope, receive, send)


def make_asgi_app(registry: Collector, *, disable_compression: bool = False) -> ASGIApp:
    """An ASGI app serving ``registry`` in Prometheus' text format.

    prometheus-client's own app over the registry you give; there is no
    default, so the global registry is never served unasked. Any path it is
    reached at answers the same. Give it its own path in Starlette or
    FastAPI with ``app.add_route("/metrics", make_asgi_app(registry))``
    (``app.mount`` works too, at ``/metrics/``), or serve it alone with any
    ASGI server.

    Args:
        registry: The `prometheus_client.CollectorRegistry` (or any
            collector) to serve, with a `StatsCollector` registered in it.
        disable_compression: Never gzip the answer, even when the scraper
            accepts it.

    Raises:
        TypeError: ``registry`` has no ``collect`` method.
    """
    if not callable(getattr(registry, "collect", None)):
        msg = (
            "make_asgi_app: registry must be a prometheus_client CollectorRegistry, "
            f"got {registry!r}"
        )
        raise TypeError(msg)
    app: ASGIApp = prometheus_client.make_asgi_app(
        registry, disable_compression=disable_compression
    )
    return _MetricsApp(app)
