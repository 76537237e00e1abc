"""The metrics a flow's stats export, for Prometheus and OpenTelemetry alike.

One table (`STEP_METRICS`, `FLOW_METRICS`) names each figure of a
`FlowStats` twice, in Prometheus style (``aiowax_step_items_in_total``) and
in OpenTelemetry style (``aiowax.step.items_in``, unit ``{item}``), so the
two exporters cannot drift apart. `Sources` reads the flows an exporter
was given; `Monotonic` keeps the time counters from stepping back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiowax._embed import FlowHandle
from aiowax._stats.model import FlowStats, StepStats

logger = logging.getLogger("aiowax")

#: What an exporter reads: a `FlowHandle`, or a function returning the
#: latest `FlowStats` (``None`` while it has none).
StatsSource: TypeAlias = FlowHandle | Callable[[], FlowStats | None]

#: Every status a flow can be in (`FlowStats.status`).
STATUSES = ("starting", "running", "stopping", "finished", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported figure.

    Attributes:
        prom: The Prometheus name, ``_total`` included for counters.
        otel: The OpenTelemetry instrument name.
        counter: A monotonic count (else a gauge).
        unit: The OpenTelemetry unit (UCUM: ``s``, ``{item}``...).
        help: What it means, for HELP lines and instrument descriptions.
        value: Its value in a row, ``None`` where the row has none.
    """

    prom: str
    otel: str
    counter: bool
    unit: str
    help: str
    value: Callable[[Any], float | None]

    @property
    def prom_unit(self) -> str:
        """The Prometheus unit: the base unit its name ends with, if one."""
        family = self.prom.removesuffix("_total") if self.counter else self.prom
        return "seconds" if family.endswith("_seconds") else ""


def _channel(value: int, row: StepStats) -> int | None:
    # An input step has no input channel: capacity 0.
    return value if row.capacity else None


def _timestamp(row: StepStats) -> float | None:
    return None if row.watermark is None else row.watermark.timestamp()


STEP_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "aiowax_step_items_in_total",
        "aiowax.step.items_in",
        True,
        "{item}",
        "Items handed to the step (an input: items read from its partitions).",
        lambda r: r.items_in,
    ),
    MetricSpec(
        "aiowax_step_items_out_total",
        "aiowax.step.items_out",
        True,
        "{item}",
        "Items the step passed on (an output: items its sink partitions accepted).",
        lambda r: r.items_out,
    ),
    MetricSpec(
        "aiowax_step_errors_total",
        "aiowax.step.errors",
        True,
        "{error}",
        "Times the step's user code raised.",
        lambda r: r.errors,
    ),
    MetricSpec(
        "aiowax_step_busy_seconds_total",
        "aiowax.step.busy_time",
        True,
        "s",
        "Seconds the step spent on batches, user code included.",
        lambda r: r.busy_s,
    ),
    MetricSpec(
        "aiowax_step_blocked_seconds_total",
        "aiowax.step.blocked_time",
        True,
        "s",
        "Seconds the step waited for room downstream (back-pressure).",
        lambda r: r.blocked_s,
    ),
    MetricSpec(
        "aiowax_step_queued_messages",
        "aiowax.step.queued",
        False,
        "{message}",
        "Messages (batches and markers) waiting in the step's input channel.",
        lambda r: _channel(r.queued, r),
    ),
    MetricSpec(
        "aiowax_step_queue_capacity_messages",
        "aiowax.step.queue_capacity",
        False,
        "{message}",
        "Bound of the step's input channel; queued at capacity means back-pressure.",
        lambda r: _channel(r.capacity, r),
    ),
    MetricSpec(
        "aiowax_step_keys",
        "aiowax.step.keys",
        False,
        "{key}",
        "Keys the keyed step holds state for.",
        lambda r: r.keys,
    ),
    MetricSpec(
        "aiowax_window_watermark_timestamp_seconds",
        "aiowax.window.watermark",
        False,
        "s",
        "The window step's watermark, as a Unix timestamp.",
        _timestamp,
    ),
    MetricSpec(
        "aiowax_window_watermark_lag_seconds",
        "aiowax.window.watermark_lag",
        False,
        "s",
        "Seconds the window step's watermark is behind now.",
        lambda r: r.watermark_lag_s,
    ),
    MetricSpec(
        "aiowax_window_open",
        "aiowax.window.open",
        False,
        "{window}",
        "Windows open across the window step's keys.",
        lambda r: r.windows_open,
    ),
    MetricSpec(
        "aiowax_window_late_items_total",
        "aiowax.window.late_items",
        True,
        "{item}",
        "Items the window step dropped as late, once per window missed.",
        lambda r: r.late,
    ),
    MetricSpec(
        "aiowax_input_partitions",
        "aiowax.input.partitions",
        False,
        "{partition}",
        "Source partitions the input step reads on this worker.",
        lambda r: r.partitions,
    ),
    MetricSpec(
        "aiowax_input_lag_messages",
        "aiowax.input.lag",
        False,
        "{message}",
        "Messages the input's partitions are behind the end of their topics.",
        lambda r: r.lag,
    ),
    MetricSpec(
        "aiowax_output_write_latency_seconds",
        "aiowax.output.write_latency",
        False,
        "s",
        "Mean seconds the output step took per batch written.",
        lambda r: r.write_latency_s,
    ),
)


def _timestamp_of(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


FLOW_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "aiowax_flow_restoring",
        "aiowax.flow.restoring",
        False,
        "1",
        "1 while the flow loads its state (cluster mode) and processes nothing, else 0.",
        lambda f: int(f.restoring),
    ),
    MetricSpec(
        "aiowax_flow_workers",
        "aiowax.flow.workers",
        False,
        "{worker}",
        "Workers of the run.",
        lambda f: f.workers,
    ),
    MetricSpec(
        "aiowax_flow_epoch",
        "aiowax.flow.epoch",
        False,
        "{epoch}",
        "The epoch the run is in.",
        lambda f: f.epoch,
    ),
    MetricSpec(
        "aiowax_flow_start_time_seconds",
        "aiowax.flow.start_time",
        False,
        "s",
        "When the run started, as a Unix timestamp.",
        lambda f: _timestamp_of(f.started_at),
    ),
    MetricSpec(
        "aiowax_flow_uptime_seconds",
        "aiowax.flow.uptime",
        False,
        "s",
        "Seconds since the run started (its length, once ended).",
        lambda f: f.uptime_s,
    ),
    MetricSpec(
        "aiowax_flow_snapshots_total",
        "aiowax.flow.snapshots",
        True,
        "{snapshot}",
        "Commits this run made to its recovery store (each: the epochs ended since the last).",
        lambda f: f.snapshots,
    ),
    MetricSpec(
        "aiowax_flow_last_snapshot_timestamp_seconds",
        "aiowax.flow.last_snapshot.time",
        False,
        "s",
        "When the last commit to the recovery store ended, as a Unix timestamp.",
        lambda f: _timestamp_of(f.last_snapshot_at),
    ),
    MetricSpec(
        "aiowax_flow_last_snapshot_duration_seconds",
        "aiowax.flow.last_snapshot.duration",
        False,
        "s",
        "Seconds the last commit to the recovery store took.",
        lambda f: f.last_snapshot_s,
    ),
)

#: The flow's status as a state set: one series per status, 1 for the current.
STATUS_METRIC = MetricSpec(
    "aiowax_flow_status",
    "aiowax.flow.status",
    False,
    "1",
    "1 for the status the flow is in, 0 for the others (label status).",
    lambda f: None,
)

#: What each step is: always 1, with labels kind and pipeline to join on.
STEP_INFO_HELP = "Each step of the flow, always 1: its kind and the input of its pipeline."


def step_labels(stats: FlowStats, row: StepStats) -> dict[str, str]:
    """The labels of one step row (no keys, no values: low cardinality)."""
    return {"flow": stats.name, "step_id": row.step_id, "worker_index": str(row.worker_index)}


def _check(owner: str, sources: Sequence[object]) -> None:
    for source in sources:
        if not (isinstance(source, FlowHandle) or callable(source)):
            msg = (
                f"{owner}: a source must be an aiowax.FlowHandle or a function returning "
                f"an aiowax.stats.FlowStats, got {source!r}"
            )
            raise TypeError(msg)
    names = [s.name for s in sources if isinstance(s, FlowHandle)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        msg = (
            f"{owner}: several flows are named {', '.join(map(repr, twice))}; "
            "name them apart with Dataflow(name=...)"
        )
        raise ValueError(msg)


class _Reader:
    """Reads one source: a `FlowHandle` (safe from any thread) or a function."""

    __slots__ = ("source",)

    def __init__(self, source: StatsSource) -> None:
        self.source = source

    def __repr__(self) -> str:
        return repr(self.source)

    def __call__(self) -> object:
        source = self.source
        return source.stats() if isinstance(source, FlowHandle) else source()


class Sources:
    """The flows an exporter reads, checked once, read fresh on each call."""

    def __init__(self, owner: str, sources: Sequence[StatsSource]) -> None:
        _check(owner, sources)
        self._readers = [_Reader(source) for source in sources]
        self._warned: set[str] = set()

    def read(self) -> list[FlowStats]:
        """Every source's stats now; a failing source is logged and left out.

        A flow name met twice is exported once (the first); the others are
        logged, once per name, since their series would clash.
        """
        out: list[FlowStats] = []
        seen: set[str] = set()
        for reader in self._readers:
            try:
                stats = reader()
                if stats is not None and not isinstance(stats, FlowStats):
                    msg = f"a stats source returned {stats!r}, not an aiowax.stats.FlowStats"
                    raise TypeError(msg)
            except Exception:
                logger.exception("aiowax metrics: reading the stats of %r failed", reader)
                continue
            if stats is None:
                continue
            if stats.name in seen:
                if stats.name not in self._warned:
                    self._warned.add(stats.name)
                    logger.warning(
                        "aiowax metrics: two flows are named %r; only the first is exported "
                        "(name them apart with Dataflow(name=...))",
                        stats.name,
                    )
                continue
            seen.add(stats.name)
            out.append(stats)
        return out


class Monotonic:
    """Keeps exported counters from stepping back within one run.

    A step's busy time is its elapsed time less its waits (the one in
    progress too), computed from floats read at slightly different moments:
    it may step back by a rounding error, and a counter must not (a drop
    reads as a restart). Each series is held at the most it has reported,
    until a new run: the flow's start time changes (a flow run again under
    its name), or the row's items in drop (a cluster copy's new generation).
    """

    def __init__(self) -> None:
        # By flow name: the run's start, and each series' (items in, most).
        self._runs: dict[str, tuple[object, dict[tuple[str, int, str], tuple[int, float]]]] = {}
        # By flow name: readings in a row that did not report it.
        self._missed: dict[str, int] = {}
        # Scrapes may run at once (prometheus-client's threaded server).
        self._lock = threading.Lock()

    def keep(self, flows: list[FlowStats]) -> None:
        """Forget the flows missing from `FORGET_AFTER` readings of the sources in a row.

        A source that names each run anew (a job id) would otherwise leave
        a floor behind for every name it ever reported; one reading that
        missed a flow (its read failed or timed out) must not drop its floor.
        """
        names = {stats.name for stats in flows}
        with self._lock:
            for name in list(self._runs):
                if name in names:
                    self._missed.pop(name, None)
                    continue
                missed = self._missed[name] = self._missed.get(name, 0) + 1
                if missed >= FORGET_AFTER:
                    del self._runs[name], self._missed[name]

    def value(self, stats: FlowStats, row: StepStats, metric: str, raw: float) -> float:
        """What to report for ``metric`` of ``row`` now that it reads ``raw``."""
        with self._lock:
            run = self._runs.get(stats.name)
            if run is None or run[0] != stats.started_at:
                # A new run of this flow: what the last one reported is no floor.
                run = self._runs[stats.name] = (stats.started_at, {})
            high = run[1]
            key = (row.step_id, row.worker_index, metric)
            seen = high.get(key)
            if seen is not None and row.items_in >= seen[0] and raw < seen[1]:
                return seen[1]
            high[key] = (row.items_in, raw)
            return raw


#: Readings in a row without a flow after which `Monotonic` forgets it.
FORGET_AFTER = 5


#: The counters `Monotonic` guards (the others only ever add).
GUARDED = frozenset({"aiowax_step_busy_seconds_total"})
