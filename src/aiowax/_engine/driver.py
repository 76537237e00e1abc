"""Driving a flow: one task group, every task of the wired graph, one failure path.

`run_flow` checks the arguments, compiles the flow, opens recovery, has the
graph wired (`aiowax._engine.wiring`), then runs every lane, step and drain
task in one task group. A step task drives its operator through the
lifecycle of `aiowax._engine.ops.base`, whatever the operator's class.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Callable
from datetime import timedelta
from time import perf_counter
from typing import Any

import anyio

from aiowax._checks import positive_int, timedelta_arg
from aiowax._definition.steps import OutputStep
from aiowax._engine.aio import require_asyncio
from aiowax._engine.channels import Inlet
from aiowax._engine.clock import current_clock
from aiowax._engine.context import RunContext, Tail
from aiowax._engine.edges import run_edges
from aiowax._engine.errors import (
    DownstreamGone,
    RoutingFailed,
    StepFailed,
    lone_error,
    with_side_task,
)
from aiowax._engine.lanes import Lane
from aiowax._engine.messages import TICK, EndOfInput, EpochEnd
from aiowax._engine.ops.base import NeedsAwait
from aiowax._engine.plan import Pipeline, compile_flow
from aiowax._engine.wiring import StepTask, build_graph
from aiowax._observe import span
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.runtime import Recovery

logger = logging.getLogger("aiowax")

DEFAULT_EPOCH_INTERVAL = timedelta(seconds=10)

#: Most items an async step gathers from batches already waiting.
ASYNC_GATHER_ITEMS = 4096


def check_run_args(
    workers: object, epoch_interval: object, recovery_config: object, where: str = "run"
) -> float:
    """Check the arguments of a run; return the epoch interval in seconds."""
    refuse_while_spawning(where)
    positive_int(where, "workers", workers)
    if epoch_interval is None:
        epoch_interval = DEFAULT_EPOCH_INTERVAL
    interval = timedelta_arg(where, "epoch_interval", epoch_interval, allow_zero=True)
    if recovery_config is not None and not isinstance(recovery_config, RecoveryConfig):
        msg = (
            f"{where}: recovery_config must be an aiowax.recovery.RecoveryConfig, "
            f"got {recovery_config!r}"
        )
        raise TypeError(msg)
    return interval.total_seconds()


def check_options(
    where: str, workers: object, epoch_interval: object, recovery_config: object, cluster: object
) -> None:
    """Check the options of a run (with ``cluster`` too), naming ``where`` in errors.

    Raises:
        TypeError: An option of the wrong type.
        ValueError: An option out of range, or both ``cluster`` and
            ``recovery_config``.
    """
    check_run_args(workers, epoch_interval, recovery_config, where)
    if cluster is not None and recovery_config is not None:
        msg = f"{where}: cluster mode keeps its state in Kafka; recovery_config must be None"
        raise ValueError(msg)


def refuse_while_spawning(where: str) -> None:
    """Refuse a run in a process that ``spawn`` is still starting.

    Such a process (a worker of a step's ``processes=``, or any the user's
    code starts with ``spawn``) imports the script's ``__main__`` module
    again: a script that runs its flow outside an ``if __name__ ==
    "__main__":`` block would run the whole flow once more in every such
    process, writing to its sinks, before the process could do its job.
    ``multiprocessing`` refuses to start processes there for the same reason.

    Raises:
        RuntimeError: This process is being started by ``spawn``.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        msg = (
            f"{where}: called while this process, started with 'spawn' (a worker "
            "process of a step's processes=, say), imports the script's __main__ "
            "module again: the script runs its flow at the top level. Run it under "
            "'if __name__ == \"__main__\":' (see docs/parallel.md)"
        )
        raise RuntimeError(msg)


def flow_name(flow: object) -> str:
    """The name a flow goes by in stats and logs."""
    name = getattr(flow, "name", None)
    return name if isinstance(name, str) else "flow"


async def run_flow(
    flow: object,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    on_start: Callable[[RunContext], None] | None = None,
) -> None:
    """Run ``flow`` to completion in the current event loop (see `aiowax.run`).

    ``on_start`` is called with the run's context once every task is set up
    (the flow handle uses it to ask for a graceful stop).
    """
    require_asyncio("run")
    interval = check_run_args(workers, epoch_interval, recovery_config)
    pipelines = compile_flow(flow)
    for pipeline in pipelines:
        if not any(isinstance(step, OutputStep) for step in pipeline.steps):
            # Allowed (its steps may have effects of their own), but it is
            # far more often a forgotten flow.output(...).
            logger.warning(
                "the items of input step %r reach no output step: they are read, "
                "processed and dropped",
                pipeline.input.step_id,
            )
    with run_edges(pipelines):
        recovery = None
        if recovery_config is not None:
            recovery = await Recovery.open(recovery_config, interval, workers)
        await run_pipelines(
            pipelines,
            workers=workers,
            interval=interval,
            recovery=recovery,
            on_start=on_start,
            name=flow_name(flow),
        )


async def run_pipelines(
    pipelines: list[Pipeline],
    *,
    workers: int,
    interval: float,
    recovery: Recovery | None,
    on_start: Callable[[RunContext], None] | None = None,
    name: str = "flow",
) -> None:
    """Run compiled pipelines, with ``recovery`` open already if any (closed at the end).

    What `run_flow` runs once it has checked its arguments; cluster mode
    (`aiowax._cluster`) runs its flows here, with a recovery on Kafka.
    """
    ctx = RunContext(
        clock=current_clock(), epoch_interval=interval, worker_count=workers, name=name
    )
    if recovery is not None:
        ctx.recovery = recovery
        ctx.start_epoch = recovery.resume_epoch
    with span("aiowax.run", flow=name, workers=workers, start_epoch=ctx.start_epoch):
        try:
            await _run(ctx, pipelines, on_start)
        finally:
            if ctx.recovery is not None:
                ctx.recovery.close()


async def _run(
    ctx: RunContext,
    pipelines: list[Pipeline],
    on_start: Callable[[RunContext], None] | None,
) -> None:
    graph = build_graph(ctx, pipelines)
    ctx.started_at = ctx.clock.now()
    ctx.started = perf_counter()
    try:
        async with anyio.create_task_group() as tg:
            ctx.cancel_scope = tg.cancel_scope
            for lane in graph.lanes:
                tg.start_soon(_run_lane, lane.lane, lane.downstream, name=lane.name)
            for drain in graph.drains:
                tg.start_soon(_drain, ctx, drain.inlet, drain.tail, name=drain.name)
            for task in graph.steps:
                tg.start_soon(_drive, ctx, task, name=task.name)
            if ctx.recovery is not None:
                tg.start_soon(ctx.recovery.writer, set(graph.tails), name="aiowax snapshots")
            if on_start is not None:
                on_start(ctx)
    except BaseExceptionGroup as group:
        # User errors are recorded, and the first one is what the caller
        # gets; anything else here is internal. Never leak a group of one,
        # nor the engine's own signals.
        if ctx.abort:
            return
        if ctx.failure is not None:
            raise ctx.failure from None
        lone = lone_error(group)
        if lone is not group:
            raise lone from None
        raise
    finally:
        ctx.ended = perf_counter()
        ctx.ended_loop = ctx.clock.timer()()
        ctx.ended_at = ctx.clock.now()
    if ctx.failure is not None:
        if ctx.recovery is not None:
            try:
                await ctx.recovery.commit_done(set(graph.tails))
            except Exception as error:
                # The step's failure is what the caller must get (cluster
                # mode would take a lost-partitions error for a rebalance):
                # the commit's error goes with it as a note.
                if ctx.abort:
                    raise
                ctx.failure.add_note(
                    f"and committing the epochs done before it failed: "
                    f"{type(error).__name__}: {error}"
                )
        if ctx.abort:
            # `AbortExecution` ends the run as a crash would (nothing closed,
            # no final snapshot), and, as in the reference, the caller is not
            # told: it is how tests rehearse a crash.
            return
        raise ctx.failure


async def _run_lane(lane: Lane, downstream: set[Tail]) -> None:
    with contextlib.suppress(DownstreamGone):
        await lane.run(downstream)


async def _drive(ctx: RunContext, task: StepTask) -> None:
    """The task of one step on one worker."""
    op = task.op
    task.started = perf_counter()
    try:
        await op.start(task.restored)
        timer, ticks = op.timer, task.timer_sender
        if timer is not None and ticks is not None:

            async def send_tick() -> None:
                await ticks.send(TICK)

            await with_side_task(lambda: _step_loop(ctx, task), lambda: timer.run(send_tick))
        else:
            await _step_loop(ctx, task)
    except RoutingFailed as failed:
        # Its output was refused on the way to the next step: that step's error.
        ctx.count_routing_error(failed, op.worker_index)
        op.items_out += failed.passed
        await ctx.report(task.outlet, failed, task.downstream)
    except StepFailed as failed:
        op.errors += 1
        # What it produced before the failure goes on too (`report`).
        op.items_out += len(failed.partial)
        await ctx.report(task.outlet, failed, task.downstream)
    except DownstreamGone:
        pass
    except BaseException as error:
        # User code's exceptions arrive as StepFailed; anything else that
        # gets here (a BaseException from a path that does not catch it)
        # still stops the run the orderly way, with the step named.
        await ctx.report(task.outlet, op.fail(error), task.downstream)
    finally:
        task.ended = perf_counter()
        if task.timer_sender is not None:
            task.timer_sender.close()
        task.inlet.close()
        task.outlet.close()
        if not ctx.abort:
            try:
                await op.aclose()
            except StepFailed as failed:
                op.errors += 1
                # Downstream may still hold output: let it drain first.
                ctx.record(failed.error, task.downstream)
        if task.tail is not None:
            ctx.tail_done(task.tail)


async def _step_loop(ctx: RunContext, task: StepTask) -> None:
    op, inlet, outlet, tail = task.op, task.inlet, task.outlet, task.tail
    recovery = ctx.recovery
    process = op.process
    aprocess = op.aprocess
    is_async = op.is_async
    # Async steps pay per batch (a task group, awaits): let them take every
    # batch already waiting at once.
    gather = is_async and op.gathers

    async def emit_early(out: list[Any]) -> None:
        await outlet.send(out)
        op.items_out += len(out)

    op.emit_early = emit_early
    async for msg in inlet:
        if type(msg) is list:
            if gather:
                for more in inlet.take_ready(ASYNC_GATHER_ITEMS - len(msg)):
                    msg = msg + more
            op.items_in += len(msg)
            if is_async:
                out = await aprocess(msg)
            else:
                try:
                    out = process(msg)
                except NeedsAwait as pending:
                    # Its sync user function returned awaitables: this batch
                    # is awaited here, the next ones take the async path.
                    out = await pending.settle()
                    is_async = op.is_async
                    gather = is_async and op.gathers
            if out:
                await outlet.send(out)
                op.items_out += len(out)
        elif isinstance(msg, EpochEnd):
            if op.flushes:
                await op.flush()
            op.epoch_ended(msg.epoch)
            if recovery is not None:
                recovery.record(msg.epoch, op.step_id, op.snapshot())
                if tail is not None:
                    recovery.tail_done(tail, msg.epoch)
            await outlet.epoch_end(msg.epoch)
        elif isinstance(msg, EndOfInput):
            # A graceful stop with recovery keeps open windows and batches
            # in the final snapshot, for the next run to go on with; without
            # recovery they would be lost, so they are flushed.
            if not (msg.stopped and recovery is not None):
                rest = await op.end_of_input()
                if rest:
                    await outlet.send(rest)
                    op.items_out += len(rest)
            if op.flushes:
                await op.flush()
            if recovery is not None:
                # The last epoch ends with the input: its snapshot makes a
                # later run continue after what this one read.
                recovery.record(op.epoch, op.step_id, op.snapshot())
                if tail is not None:
                    recovery.tail_finished(tail, op.epoch)
            await outlet.end_of_input(msg.stopped)
            return
        elif msg is TICK:
            out = await op.atick()
            if op.timer is not None:
                op.timer.tick_handled()
            if out:
                # Windows and batches emit on timers mostly: counted as any.
                await outlet.send(out)
                op.items_out += len(out)
        else:
            await outlet.failure()
            return
    await _ended_without_marker(ctx)


async def _ended_without_marker(ctx: RunContext) -> None:
    """An inlet ended with no end-of-input nor failure marker.

    That happens when the run is being cancelled (upstream tasks went
    first; this one follows at the checkpoint), when a failure elsewhere
    stopped the senders (the run then waits for the tails to drain: this
    task ends quietly), or when upstream stopped abnormally: never take it
    for the end of the input.
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    if ctx.failure is not None:
        return
    msg = "a step's input ended without an end-of-input marker (an internal error)"
    raise RuntimeError(msg)


async def _drain(ctx: RunContext, inlet: Inlet, tail: Tail) -> None:
    """Consume an input that has no steps after it, so its source still runs."""
    recovery = ctx.recovery
    epoch = ctx.start_epoch
    try:
        async for msg in inlet:
            if isinstance(msg, EpochEnd):
                epoch = msg.epoch + 1
                if recovery is not None:
                    recovery.tail_done(tail, msg.epoch)
            elif isinstance(msg, EndOfInput):
                if recovery is not None:
                    recovery.tail_finished(tail, epoch)
                break
            elif type(msg) is not list:
                break
        else:
            await _ended_without_marker(ctx)
    finally:
        inlet.close()
        ctx.tail_done(tail)
