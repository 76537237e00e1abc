"""Read a run's counters into a `FlowStats`, and report them while it runs.

The engine keeps counts per batch on its operators and lanes, and times
only where a task waits anyway (an idle inlet, a full channel); everything
else (keys, watermarks, open windows, partition lag) is read from the
operators here, when asked. So stats cost the data path a few additions per
batch, and a poll costs the poller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from time import perf_counter
from typing import Any

import anyio

from aiowax._engine.aio import user_await
from aiowax._engine.clock import Clock, current_clock
from aiowax._engine.context import RunContext
from aiowax._engine.timeutil import to_us
from aiowax._engine.wiring import Graph, LaneTask, StepTask
from aiowax._stats.model import FlowStats, StepStats

logger = logging.getLogger("aiowax")


def _busy(started: float | None, ended: float | None, idle: float, blocked: float) -> float:
    if started is None:
        return 0.0
    elapsed = (ended if ended is not None else perf_counter()) - started
    return max(0.0, elapsed - idle - blocked)


def _kind(connector: object, kind: str) -> str:
    """A step's kind, or its connector's own (cluster mode's internal steps)."""
    own: str = getattr(connector, "_aiowax_stats_kind", kind)
    return own


def _lanes(ctx: RunContext, lanes: list[LaneTask]) -> list[StepStats]:
    """One row per input step and worker: its lanes (partitions) summed."""
    now = ctx.ended if ctx.ended is not None else perf_counter()
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for task in lanes:
        lane = task.lane
        # A lane's own time: one whose input ended is not busy while the
        # rest of the run goes on.
        end = lane.ended_at if lane.ended_at is not None else now
        elapsed = end - ctx.started if ctx.started is not None else 0.0
        row = rows.setdefault(
            (lane.step.step_id, lane.worker_index),
            {"items": 0, "busy": 0.0, "blocked": 0.0, "partitions": 0, "lag": None, "errors": 0},
        )
        blocked = lane.outlet.blocked_s
        row["items"] += lane.items_read
        # Busy reading: neither waiting for the source (asleep until it may
        # have items, awaiting an async read) nor for room downstream.
        row["busy"] += max(0.0, elapsed - blocked - lane.waited_total())
        row["blocked"] += blocked
        row["partitions"] += 1
        row["errors"] += lane.errors
        probe = getattr(lane.part, "_aiowax_lag", None)
        lag = probe() if probe is not None else None
        if lag is not None:
            row["lag"] = (row["lag"] or 0) + lag
    kinds = {task.lane.step.step_id: _kind(task.lane.step.source, "input") for task in lanes}
    return [
        StepStats(
            step_id=step_id,
            kind=kinds[step_id],
            pipeline=step_id,
            worker_index=worker,
            items_in=row["items"],
            items_out=row["items"],
            errors=row["errors"] + ctx.routing_errors.get((step_id, worker), 0),
            busy_s=row["busy"],
            blocked_s=row["blocked"],
            partitions=row["partitions"],
            lag=row["lag"],
        )
        for (step_id, worker), row in rows.items()
    ]


def _step(ctx: RunContext, task: StepTask, loop_now: float, wall_us: int) -> StepStats:
    op = task.op
    queued, capacity = task.inlet.fill()
    blocked = task.outlet.blocked_s
    busy = _busy(task.started, task.ended, task.inlet.idle_total(), blocked)
    extra = op.stats_extra(loop_now, wall_us)
    kind = op.step.kind
    items_out = op.items_out
    if kind == "output":
        items_out = getattr(op, "written", items_out)
        batches = getattr(op, "batches", 0)
        extra["write_latency_s"] = busy / batches if batches else None
        kind = _kind(getattr(op.step, "sink", None), kind)
    return StepStats(
        step_id=op.step_id,
        kind=kind,
        pipeline=task.pipeline,
        worker_index=op.worker_index,
        items_in=op.items_in,
        items_out=items_out,
        errors=op.errors + ctx.routing_errors.get((op.step_id, op.worker_index), 0),
        busy_s=busy,
        blocked_s=blocked,
        queued=queued,
        capacity=capacity,
        **extra,
    )


def graph_steps(ctx: RunContext, graph: Graph) -> list[StepStats]:
    """Every step of one run on every worker: inputs first, then the steps in order."""
    clock = ctx.clock
    if ctx.ended_loop is not None and ctx.ended_at is not None:
        # Ended: watermark lags are as of the end, not growing for ever.
        loop_now, wall_us = ctx.ended_loop, to_us(ctx.ended_at)
    else:
        loop_now, wall_us = clock.timer()(), to_us(clock.now())
    return _lanes(ctx, graph.lanes) + [_step(ctx, task, loop_now, wall_us) for task in graph.steps]


def flow_stats(
    name: str,
    status: str,
    runs: Iterable[RunContext],
    *,
    error: BaseException | None = None,
    restoring: bool = False,
) -> FlowStats:
    """The stats of a flow made of ``runs`` (one, or a cluster copy's several)."""
    steps: list[StepStats] = []
    epoch = 0
    started_at: datetime | None = None
    uptime = 0.0
    workers = 1
    snapshots = 0
    last_at: datetime | None = None
    last_s: float | None = None
    for ctx in runs:
        graph = ctx.graph
        workers = ctx.worker_count
        if graph is not None:
            steps.extend(graph_steps(ctx, graph))
            epochs = [task.lane.epoch for task in graph.lanes]
            epoch = max([epoch, ctx.start_epoch, *epochs])
        if ctx.started_at is not None and (started_at is None or ctx.started_at < started_at):
            started_at = ctx.started_at
        if ctx.started is not None:
            end = ctx.ended if ctx.ended is not None else perf_counter()
            uptime = max(uptime, end - ctx.started)
        recovery = ctx.recovery
        if recovery is not None:
            snapshots += recovery.commits
            if recovery.last_commit_at is not None and (
                last_at is None or recovery.last_commit_at > last_at
            ):
                last_at, last_s = recovery.last_commit_at, recovery.last_commit_s
    return FlowStats(
        name=name,
        status=status,
        workers=workers,
        epoch=epoch,
        started_at=started_at,
        uptime_s=uptime,
        snapshots=snapshots,
        last_snapshot_at=last_at,
        last_snapshot_s=last_s,
        restoring=restoring,
        error=None if error is None else f"{type(error).__name__}: {error}",
        steps=tuple(steps),
    )


StatsCallback = Callable[[FlowStats], Awaitable[None] | None]


def ended_by_abort(attached: Iterable[Any]) -> bool:
    """Whether a run ended by `AbortExecution`: a crash on purpose, returning as if finished."""
    return any(ctx.abort for ctx in attached_runs(attached)[0])


def attached_runs(attached: Iterable[Any]) -> tuple[list[RunContext], bool]:
    """The runs behind what a run's ``on_start`` handed over, and whether one restores.

    A plain run hands over its `RunContext`; a cluster copy its
    ``ClusterRun``, whose runs (the front flow, each generation) come and go.
    """
    runs: list[RunContext] = []
    restoring = False
    for item in attached:
        if isinstance(item, RunContext):
            runs.append(item)
        else:
            runs.extend(item.runs)
            restoring = restoring or bool(item.restoring)
    return runs, restoring


async def _deliver(on_stats: StatsCallback, stats: FlowStats) -> None:
    # A CancelledError of the callback's own, while nothing cancels the run,
    # is its failure (logged), not a cancellation: it would cut the run short.
    try:
        result = on_stats(stats)
    except asyncio.CancelledError as error:  # a sync call cannot be cancelled
        msg = "on_stats raised CancelledError while nothing was cancelling it"
        raise RuntimeError(msg) from error
    if result is not None:
        await user_await(result)


async def run_reporting(
    name: str,
    run: Callable[[Callable[[RunContext], None]], Awaitable[None]],
    on_stats: StatsCallback,
    interval: float,
    clock: Clock | None = None,
) -> None:
    """Await ``run(on_start)``, calling ``on_stats`` every ``interval`` seconds and at the end.

    The last call has the run's final status (``"finished"``, ``"failed"``
    or ``"cancelled"``); what the run raised is raised here as it was.
    """
    clock = clock or current_clock()
    attached: list[Any] = []
    failure: list[Exception] = []

    def stats(status: str, error: BaseException | None = None) -> FlowStats:
        runs, restoring = attached_runs(attached)
        return flow_stats(name, status, runs, error=error, restoring=restoring)

    async def main() -> None:
        try:
            await run(attached.append)
        except Exception as error:
            failure.append(error)
        finally:
            tg.cancel_scope.cancel()

    status = "cancelled"
    failed_calls = 0
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(main)
            now = clock.timer()
            while True:
                await clock.sleep_until(now() + interval)
                try:
                    await _deliver(on_stats, stats("running"))
                except Exception:
                    # Watching a flow must never stop it: the error is
                    # logged (its traceback once) and the next call made.
                    failed_calls += 1
                    if failed_calls == 1:
                        logger.exception(
                            "flow %r: on_stats raised; the flow goes on, and on_stats is "
                            "still called (later failures are logged without traceback)",
                            name,
                        )
                    else:
                        logger.error(
                            "flow %r: on_stats raised again (%d times)", name, failed_calls
                        )
        status = "failed" if failure else "cancelled" if ended_by_abort(attached) else "finished"
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await _deliver(on_stats, stats(status, failure[0] if failure else None))
            except Exception:
                logger.exception("flow %r: on_stats failed on the final stats", name)
    if failure:
        raise failure[0]
