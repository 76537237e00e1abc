"""Running a flow: one task group, one task per source partition and step.

For every pipeline and worker the runner links the steps with bounded
channels: lanes (one per source partition) -> step -> step -> ... The last
step of a pipeline on a worker is its tail.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import anyio

from aiowax._definition.flow import Step
from aiowax._engine.channels import DownstreamGone, EpochBarrier, Inlet, Outlet, channel
from aiowax._engine.clock import current_clock
from aiowax._engine.context import RunContext, Tail
from aiowax._engine.failure import StepFailed
from aiowax._engine.messages import EndOfInput, EpochEnd
from aiowax._engine.plan import Pipeline, compile_flow
from aiowax._engine.sinks import OutputOp
from aiowax._engine.sources import Lane, lane_parts
from aiowax._engine.stateless import (
    FilterMapOp,
    FilterOp,
    FlatMapOp,
    InspectEpochOp,
    InspectOp,
    InspectWorkerOp,
    MapOp,
    Operator,
)

DEFAULT_EPOCH_INTERVAL = timedelta(seconds=10)

_STATELESS: dict[str, type[Operator]] = {
    "map": MapOp,
    "filter": FilterOp,
    "filter_map": FilterMapOp,
    "flat_map": FlatMapOp,
    "inspect": InspectOp,
    "inspect_epoch": InspectEpochOp,
    "inspect_worker": InspectWorkerOp,
}


def _operator(step: Step, worker: int, workers: int, passes_on: bool) -> Operator:
    if step.kind == "output":
        return OutputOp(step, worker, workers, passes_on)
    return _STATELESS[step.kind](step, worker)


def _check_run_args(workers: object, epoch_interval: object, recovery_config: object) -> float:
    if isinstance(workers, bool) or not isinstance(workers, int):
        msg = f"workers must be an int, got {workers!r}"
        raise TypeError(msg)
    if workers < 1:
        msg = f"workers must be at least 1, got {workers!r}"
        raise ValueError(msg)
    if epoch_interval is None:
        epoch_interval = DEFAULT_EPOCH_INTERVAL
    if not isinstance(epoch_interval, timedelta):
        msg = f"epoch_interval must be a datetime.timedelta, got {epoch_interval!r}"
        raise TypeError(msg)
    if epoch_interval < timedelta(0):
        msg = f"epoch_interval must not be negative, got {epoch_interval!r}"
        raise ValueError(msg)
    if recovery_config is not None:
        msg = "recovery is not implemented yet in aiowax; pass recovery_config=None"
        raise NotImplementedError(msg)
    return epoch_interval.total_seconds()


async def _drive(
    ctx: RunContext,
    op: Operator,
    inlet: Inlet,
    outlet: Outlet,
    tail: Tail | None,
    downstream: set[Tail],
) -> None:
    """The task of one step on one worker."""
    process = op.process
    aprocess = op.aprocess
    is_async = op.is_async
    try:
        if isinstance(op, OutputOp):
            await op.start()
        async for msg in inlet:
            if type(msg) is list:
                out = await aprocess(msg) if is_async else process(msg)
                if out:
                    await outlet.send(out)
            elif isinstance(msg, EpochEnd):
                op.epoch = msg.epoch + 1
                await outlet.epoch_end(msg.epoch)
            elif isinstance(msg, EndOfInput):
                rest = await op.flush()
                if rest:
                    await outlet.send(rest)
                await outlet.end_of_input()
                break
            else:
                await outlet.failure()
                break
    except StepFailed as failed:
        try:
            if failed.partial:
                await outlet.send(failed.partial)
        except DownstreamGone:
            pass
        ctx.record(failed.error, downstream)
        await outlet.failure()
    except DownstreamGone:
        pass
    finally:
        inlet.close()
        outlet.close()
        if not ctx.abort:
            try:
                await op.aclose()
            except StepFailed as failed:
                ctx.record(failed.error)
        if tail is not None:
            ctx.tail_done(tail)


async def _run_lane(ctx: RunContext, lane: Lane, downstream: set[Tail]) -> None:
    with contextlib.suppress(DownstreamGone):
        await lane.run(downstream)


def _start_pipeline(tg: anyio.abc.TaskGroup, ctx: RunContext, pipeline: Pipeline) -> None:
    workers = ctx.worker_count
    parts_by_worker: list[list[str | None]] = []
    for w in range(workers):
        try:
            parts_by_worker.append(
                lane_parts(pipeline.input.args["source"], pipeline.input, w, workers)
            )
        except StepFailed as failed:
            raise failed.error from None
    barrier = EpochBarrier(sum(len(p) for p in parts_by_worker))
    steps = pipeline.steps
    for w in range(workers):
        tail: Tail = (pipeline.index, w)
        downstream = {tail}
        send, receive = channel()
        lanes = parts_by_worker[w]
        if not lanes:
            # No partition here: tell the first step at once that input ended.
            send.send_nowait(EndOfInput(0))
        for sender, part in enumerate(lanes):
            lane = Lane(ctx, pipeline.input, part, w, Outlet(send.clone(), sender), barrier)
            tg.start_soon(
                _run_lane,
                ctx,
                lane,
                downstream,
                name=f"aiowax lane {pipeline.input.step_id}[{part}]@{w}",
            )
        senders = max(len(lanes), 1)
        send.close()
        if not steps:
            # An input with no steps: drain it so its source still runs.
            tg.start_soon(_drain, ctx, Inlet(receive, senders), tail)
            ctx.live_tails.add(tail)
            continue
        ctx.live_tails.add(tail)
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last:
                next_send, next_receive = None, None
            else:
                next_send, next_receive = channel()
            op = _operator(step, w, workers, passes_on=not last)
            inlet = Inlet(receive, senders)
            outlet = Outlet(next_send, 0)
            tg.start_soon(
                _drive,
                ctx,
                op,
                inlet,
                outlet,
                tail if last else None,
                downstream,
                name=f"aiowax step {step.step_id}@{w}",
            )
            if next_receive is not None:
                receive = next_receive
            senders = 1


async def _drain(ctx: RunContext, inlet: Inlet, tail: Tail) -> None:
    try:
        async for msg in inlet:
            if not isinstance(msg, list | EpochEnd):
                break
    finally:
        inlet.close()
        ctx.tail_done(tail)


async def run_flow(
    flow: object,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
) -> None:
    """Run ``flow`` to completion in the current event loop (see `aiowax.run`)."""
    interval = _check_run_args(workers, epoch_interval, recovery_config)
    pipelines = compile_flow(flow)
    ctx = RunContext(clock=current_clock(), epoch_interval=interval, worker_count=workers)
    try:
        async with anyio.create_task_group() as tg:
            ctx.cancel_scope = tg.cancel_scope
            for pipeline in pipelines:
                _start_pipeline(tg, ctx, pipeline)
    except BaseExceptionGroup as group:
        # Internal errors only (user errors are recorded, not raised): never
        # leak a group of one to the caller.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    if ctx.failure is not None:
        raise ctx.failure


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
