"""What `FlowHandle.stats` returns: a typed, immutable picture of a run.

Everything here is read from counters the engine keeps per batch (never per
item) and from the operators' own state at the moment of the call, so a
snapshot costs the run nothing until somebody asks for one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStats:
    """One step on one worker.

    Attributes:
        step_id: The step's id.
        kind: What the step is: ``"input"``, ``"map"``, ``"stateful_map"``,
            ``"fold_window"``, ``"output"``...
        pipeline: The id of the input step whose pipeline it is in.
        worker_index: The worker it runs on.
        items_in: Items it was handed (an input: items its partitions read).
        items_out: Items it passed on (an output: items its sink partitions
            accepted).
        errors: Times its user code raised (the run stops at the first).
        busy_s: Seconds it was working on batches (user code included):
            neither waiting for input nor blocked on a full channel. For an
            input: seconds not blocked, reading from its source or waiting
            for it (the two look alike from the outside).
        blocked_s: Seconds it waited for room in the channel downstream,
            or for a slower worker to catch up with an epoch before a step
            on several workers: what comes after it holds it back
            (back-pressure).
        queued: Messages (batches and markers) waiting in its input channel.
        capacity: The bound of that channel; ``queued == capacity`` means
            whatever feeds it is blocked.
        keys: Keys it holds state for (keyed steps), else ``None``.
        watermark: Its watermark (window steps on event time: the newest of
            its keys' on this worker, and `FlowStats.step` takes the oldest
            of the workers'; on system time: the newest wall time seen).
        watermark_lag_s: How far that watermark is behind now, in seconds.
        windows_open: Windows open across its keys (window steps).
        late: Items it dropped as late, once per window missed (window steps).
        partitions: Source partitions it reads (inputs).
        lag: Messages its partitions are behind the end of their topic
            (inputs whose partitions can tell: `KafkaSource`), else ``None``.
        write_latency_s: Mean seconds per batch written (outputs).
    """

    step_id: str
    kind: str
    pipeline: str
    worker_index: int
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    busy_s: float = 0.0
    blocked_s: float = 0.0
    queued: int = 0
    capacity: int = 0
    keys: int | None = None
    watermark: datetime | None = None
    watermark_lag_s: float | None = None
    windows_open: int | None = None
    late: int | None = None
    partitions: int | None = None
    lag: int | None = None
    write_latency_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowStats:
    """One run of a flow, at one moment.

    Attributes:
        name: The flow's name (`Dataflow(name=...)`), telling flows of one
            process apart.
        status: ``"starting"``, ``"running"``, ``"stopping"``, ``"finished"``,
            ``"failed"`` or ``"cancelled"``.
        workers: Workers of the run.
        epoch: The epoch the run is in (the last one, once it ended).
        started_at: When the run started (UTC), ``None`` before.
        uptime_s: Seconds since it started (until it ended, once it has).
        snapshots: Commits to the recovery store by this run (one commit
            covers every epoch that ended since the one before).
        last_snapshot_at: When the last of those commits ended (UTC).
        last_snapshot_s: Seconds that commit took.
        restoring: The run is loading its state (cluster mode: a new
            assignment's changelogs) and processes nothing yet.
        error: The error that ended the run, as ``"Type: message"``.
        steps: Every step on every worker, inputs first, in flow order.
    """

    name: str
    status: str
    workers: int = 1
    epoch: int = 0
    started_at: datetime | None = None
    uptime_s: float = 0.0
    snapshots: int = 0
    last_snapshot_at: datetime | None = None
    last_snapshot_s: float | None = None
    restoring: bool = False
    error: str | None = None
    steps: tuple[StepStats, ...] = field(default_factory=tuple)

    def step(self, step_id: str) -> StepStats:
        """One step's figures summed over its workers.

        Counts and seconds add up; ``watermark`` is the oldest, ``lag`` and
        the other sizes add up; ``write_latency_s`` is the mean.

        Raises:
            KeyError: No step has that id.
        """
        rows = [s for s in self.steps if s.step_id == step_id]
        if not rows:
            msg = f"no step {step_id!r} in flow {self.name!r}"
            raise KeyError(msg)
        return _sum(rows)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO-8601 strings)."""
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


def _add(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _sum(rows: list[StepStats]) -> StepStats:
    first = rows[0]
    marks = [r.watermark for r in rows if r.watermark is not None]
    lags = [r.watermark_lag_s for r in rows if r.watermark_lag_s is not None]
    latencies = [r.write_latency_s for r in rows if r.write_latency_s is not None]
    return StepStats(
        step_id=first.step_id,
        kind=first.kind,
        pipeline=first.pipeline,
        worker_index=-1 if len(rows) > 1 else first.worker_index,
        items_in=sum(r.items_in for r in rows),
        items_out=sum(r.items_out for r in rows),
        errors=sum(r.errors for r in rows),
        busy_s=sum(r.busy_s for r in rows),
        blocked_s=sum(r.blocked_s for r in rows),
        queued=sum(r.queued for r in rows),
        capacity=sum(r.capacity for r in rows),
        keys=_add([r.keys for r in rows]),
        watermark=min(marks) if marks else None,
        watermark_lag_s=max(lags) if lags else None,
        windows_open=_add([r.windows_open for r in rows]),
        late=_add([r.late for r in rows]),
        partitions=_add([r.partitions for r in rows]),
        lag=_add([r.lag for r in rows]),
        write_latency_s=sum(latencies) / len(latencies) if latencies else None,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
