"""Running a flow: one task group, one task per source partition and step.

For every pipeline and worker the runner links the steps with bounded
channels: lanes (one per source partition) -> step -> step -> ... The last
step of a pipeline on a worker is its tail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup

from aiowax._definition.flow import STATEFUL_KINDS, Step
from aiowax._definition.outputs import FixedPartitionedSink
from aiowax._engine.channels import (
    AnyOutlet,
    DownstreamGone,
    EpochBarrier,
    Inlet,
    Outlet,
    Sender,
    channel,
)
from aiowax._engine.clock import current_clock
from aiowax._engine.context import RunContext, Tail, run_observers
from aiowax._engine.exchange import ExchangeOutlet, KeyRouter, PartRouter, RoundRobin, key_owner
from aiowax._engine.failure import StepFailed, report_failure, with_side_task
from aiowax._engine.messages import TICK, EndOfInput, EpochEnd
from aiowax._engine.plan import Pipeline, compile_flow
from aiowax._engine.sinks import OutputOp, sink_part_names
from aiowax._engine.snapshots import Recovery
from aiowax._engine.sources import Lane, lane_parts
from aiowax._engine.stateful import BatchOp, RedistributeOp, ReduceOp, StatefulMapOp, TimedOp
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
from aiowax._engine.windows import CollectWindowOp, FoldWindowOp, ReduceWindowOp, WindowOp
from aiowax._recovery.config import RecoveryConfig

DEFAULT_EPOCH_INTERVAL = timedelta(seconds=10)

#: Steps that need their items moved between workers first.
EXCHANGE_KINDS = STATEFUL_KINDS | {"redistribute"}

Router = Callable[[list[Any]], list[list[Any]]]

_WINDOW_OPERATORS: dict[str, type[WindowOp]] = {
    "fold_window": FoldWindowOp,
    "reduce_window": ReduceWindowOp,
    "collect_window": CollectWindowOp,
}

_OPERATORS: dict[str, type[Operator]] = {
    "stateful_map": StatefulMapOp,
    "reduce": ReduceOp,
    "redistribute": RedistributeOp,
    "map": MapOp,
    "filter": FilterOp,
    "filter_map": FilterMapOp,
    "flat_map": FlatMapOp,
    "inspect": InspectOp,
    "inspect_epoch": InspectEpochOp,
    "inspect_worker": InspectWorkerOp,
}


def _operator(
    step: Step, worker: int, ctx: RunContext, passes_on: bool, sink_parts: list[str] | None
) -> Operator:
    kind = step.kind
    if kind == "output":
        return OutputOp(step, worker, ctx.worker_count, passes_on, sink_parts)
    if kind == "batch":
        return BatchOp(step, worker, ctx.clock)
    if kind in _WINDOW_OPERATORS:
        return _WINDOW_OPERATORS[kind](step, worker, ctx.clock)
    return _OPERATORS[kind](step, worker)


def check_run_args(workers: object, epoch_interval: object, recovery_config: object) -> float:
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
    if recovery_config is not None and not isinstance(recovery_config, RecoveryConfig):
        msg = f"recovery_config must be an aiowax.recovery.RecoveryConfig, got {recovery_config!r}"
        raise TypeError(msg)
    return epoch_interval.total_seconds()


#: Most items an async step gathers from batches already waiting.
ASYNC_GATHER_ITEMS = 4096


async def _drive(
    ctx: RunContext,
    op: Operator,
    inlet: Inlet,
    outlet: AnyOutlet,
    tail: Tail | None,
    downstream: set[Tail],
    timer_send: Sender | None = None,
) -> None:
    """The task of one step on one worker."""
    try:
        if isinstance(op, OutputOp):
            await op.start()
        if isinstance(op, TimedOp) and timer_send is not None:
            timed, sender = op, timer_send
            await with_side_task(
                lambda: _step_loop(ctx, op, inlet, outlet, tail),
                lambda: _run_timer(ctx, timed, sender),
            )
        else:
            await _step_loop(ctx, op, inlet, outlet, tail)
    except StepFailed as failed:
        await report_failure(ctx, outlet, failed, downstream)
    except DownstreamGone:
        pass
    finally:
        if timer_send is not None:
            timer_send.close()
        inlet.close()
        outlet.close()
        if not ctx.abort:
            try:
                await op.aclose()
            except StepFailed as failed:
                # Downstream may still hold output: let it drain first.
                ctx.record(failed.error, downstream)
        if tail is not None:
            ctx.tail_done(tail)


async def _step_loop(
    ctx: RunContext, op: Operator, inlet: Inlet, outlet: AnyOutlet, tail: Tail | None
) -> None:
    recovery = ctx.recovery
    process = op.process
    aprocess = op.aprocess
    is_async = op.is_async
    # Async steps pay per batch (a task group, awaits): let them take every
    # batch already waiting at once. Output steps keep batches as they are.
    gather = is_async and not isinstance(op, OutputOp)
    async for msg in inlet:
        if type(msg) is list:
            if gather:
                for more in inlet.take_ready(ASYNC_GATHER_ITEMS - len(msg)):
                    msg = msg + more
            out = await aprocess(msg) if is_async else process(msg)
            if out:
                await outlet.send(out)
        elif isinstance(msg, EpochEnd):
            op.epoch = msg.epoch + 1
            if recovery is not None:
                recovery.record(msg.epoch, op.step_id, op.snapshot())
                if tail is not None:
                    recovery.tail_done(tail, msg.epoch)
            await outlet.epoch_end(msg.epoch)
        elif isinstance(msg, EndOfInput):
            rest = await op.flush()
            if rest:
                await outlet.send(rest)
            if recovery is not None:
                # The last epoch ends with the input: its snapshot makes a
                # later run continue after what this one read.
                recovery.record(op.epoch, op.step_id, op.snapshot())
                if tail is not None:
                    recovery.tail_finished(tail, op.epoch)
            await outlet.end_of_input()
            return
        elif msg is TICK:
            assert isinstance(op, TimedOp)
            out = await op.atick()
            op.ticked.set()
            if out:
                await outlet.send(out)
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


async def _run_timer(ctx: RunContext, op: TimedOp, send: Sender) -> None:
    """Put a tick in the step's channel whenever its earliest deadline passes."""
    clock = ctx.clock
    while True:
        op.wake = anyio.Event()
        deadline = op.next_deadline()
        if deadline is None:
            await op.wake.wait()
            continue
        if deadline > clock.monotonic():
            with anyio.move_on_after(deadline - clock.monotonic()):
                await op.wake.wait()
            continue
        op.ticked = anyio.Event()
        try:
            await send.send(TICK)
        except (DownstreamGone, anyio.ClosedResourceError):
            return
        await op.ticked.wait()


async def _run_lane(lane: Lane, downstream: set[Tail]) -> None:
    with contextlib.suppress(DownstreamGone):
        await lane.run(downstream)


def _needs_exchange(step: Step) -> bool:
    # A partitioned sink's partition lives on one worker: items go there.
    if step.kind == "output":
        return isinstance(step.args["sink"], FixedPartitionedSink)
    return step.kind in EXCHANGE_KINDS


def _partitions(ctx: RunContext, pipeline: Pipeline) -> list[list[str | None]]:
    """The source partitions each worker reads, by worker."""
    n = ctx.worker_count
    step = pipeline.input
    try:
        return lane_parts(step.args["source"], step, n)
    except StepFailed as failed:
        raise failed.error from None


def _start_pipeline(
    tg: TaskGroup,
    ctx: RunContext,
    pipeline: Pipeline,
    parts_by_worker: list[list[str | None]],
    barrier: EpochBarrier,
) -> None:
    """Start the lanes and step tasks of one pipeline on every worker."""
    n = ctx.worker_count
    p = pipeline.index
    restored = _restored_states(ctx, pipeline)
    # Each partitioned sink is listed once, for its router and every worker.
    try:
        sink_parts = {
            s.step_id: sink_part_names(s)
            for s in pipeline.steps
            if s.kind == "output" and isinstance(s.args["sink"], FixedPartitionedSink)
        }
    except StepFailed as failed:
        raise failed.error from None
    total_lanes = sum(len(parts) for parts in parts_by_worker)
    steps = pipeline.steps
    m = len(steps)
    exchange = [n > 1 and _needs_exchange(s) for s in steps] + [False]
    all_tails = {(p, w) for w in range(n)}
    for w in range(n):
        ctx.live_tails.add((p, w))

    def downstream(i: int, w: int) -> set[Tail]:
        # Past an exchange, a failure reaches (and waits for) every worker.
        return all_tails if any(exchange[i + 1 :]) else {(p, w)}

    # chans[i][w]: the channel into step i on worker w (step m: none).
    chans = [[channel() for _ in range(n)] for _ in range(max(m, 1))]

    def outlet_into(i: int, w: int, sender: int) -> AnyOutlet:
        if i >= m:
            return Outlet(None, 0)
        if exchange[i]:
            step = steps[i]
            route: Router
            if step.kind == "redistribute":
                route = RoundRobin(n)
            elif step.kind == "output":
                route = PartRouter(
                    step.step_id, step.args["sink"], n, len(sink_parts[step.step_id])
                )
            else:
                route = KeyRouter(step.step_id, n)
            return ExchangeOutlet([chans[i][x][0].clone() for x in range(n)], sender, route)
        return Outlet(chans[i][w][0].clone(), sender)

    # Lanes feed step 0 (or a drain task when the input has no steps).
    senders_into_first: list[int] = []
    lane_id = 0
    for w in range(n):
        for local, part in enumerate(parts_by_worker[w]):
            sender = lane_id if exchange[0] else local
            outlet = outlet_into(0, w, sender) if m else Outlet(chans[0][w][0].clone(), local)
            lane = Lane(ctx, pipeline.input, part, w, outlet, barrier)
            name = f"aiowax lane {pipeline.input.step_id}[{part}]@{w}"
            tg.start_soon(_run_lane, lane, downstream(-1, w), name=name)
            lane_id += 1
        senders_into_first.append(total_lanes if exchange[0] else len(parts_by_worker[w]))
    for w in range(n):
        if senders_into_first[w] == 0:
            # Nothing feeds this worker: its first step hears at once that
            # input ended.
            chans[0][w][0].send_nowait(EndOfInput(0))
            senders_into_first[w] = 1

    if not m:
        for w in range(n):
            inlet = Inlet(chans[0][w][1], chans[0][w][2], senders_into_first[w], ctx.start_epoch)
            tg.start_soon(_drain, ctx, inlet, (p, w))
    for i, step in enumerate(steps):
        for w in range(n):
            senders = senders_into_first[w] if i == 0 else (n if exchange[i] else 1)
            inlet = Inlet(chans[i][w][1], chans[i][w][2], senders, ctx.start_epoch)
            outlet = outlet_into(i + 1, w, w if exchange[i + 1] else 0)
            op = _operator(step, w, ctx, i < m - 1, sink_parts.get(step.step_id))
            op.epoch = ctx.start_epoch
            if exchange[i] and step.kind in STATEFUL_KINDS:
                op.items_checked = True  # the key router checked them
            if ctx.recovery is not None:
                states = restored.get(step.step_id, {})
                if n > 1 and step.kind in STATEFUL_KINDS:
                    # Keys go to the worker that owns them now, whatever the
                    # worker count of the run that saved them.
                    states = {k: v for k, v in states.items() if key_owner(k, n) == w}
                op.start_recovery(states)
            ctx.operators[(step.step_id, w)] = op
            timer_send = chans[i][w][0].clone() if isinstance(op, TimedOp) else None
            tail = (p, w) if i == m - 1 else None
            name = f"aiowax step {step.step_id}@{w}"
            tg.start_soon(
                _drive, ctx, op, inlet, outlet, tail, downstream(i, w), timer_send, name=name
            )
    for row in chans:
        for send, _, _ in row:
            send.close()


def _restored_states(ctx: RunContext, pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Restored states of the pipeline's keyed steps, by step id."""
    if ctx.recovery is None:
        return {}
    return {step.step_id: ctx.recovery.restored(step.step_id) for step in pipeline.steps}


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
    interval = check_run_args(workers, epoch_interval, recovery_config)
    pipelines = compile_flow(flow)
    ctx = RunContext(clock=current_clock(), epoch_interval=interval, worker_count=workers)
    if recovery_config is not None:
        ctx.recovery = await Recovery.open(recovery_config, interval, workers)
        ctx.start_epoch = ctx.recovery.resume_epoch
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
    parts = [_partitions(ctx, pipeline) for pipeline in pipelines]
    # One epoch clock for the whole flow: every partition of every input
    # closes epoch e before any of them starts e + 1, so an epoch is a
    # consistent cut of all inputs (what a snapshot needs).
    barrier = EpochBarrier(sum(len(lanes) for by_worker in parts for lanes in by_worker))
    try:
        async with anyio.create_task_group() as tg:
            ctx.cancel_scope = tg.cancel_scope
            for pipeline, by_worker in zip(pipelines, parts, strict=True):
                _start_pipeline(tg, ctx, pipeline, by_worker, barrier)
            all_tails = set(ctx.live_tails)
            if ctx.recovery is not None:
                tg.start_soon(ctx.recovery.writer, all_tails, name="aiowax snapshots")
            for observe in run_observers:
                observe(ctx)
            if on_start is not None:
                on_start(ctx)
    except BaseExceptionGroup as group:
        # User errors are recorded, and the first one is what the caller
        # gets; anything else here is internal. Never leak a group of one,
        # nor the engine's own signals.
        if ctx.failure is not None:
            raise ctx.failure from None
        leaves = [
            leaf.error if isinstance(leaf, StepFailed) else leaf
            for leaf in _leaves(group)
            if not isinstance(leaf, DownstreamGone)
        ]
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    if ctx.failure is not None:
        if ctx.recovery is not None:
            await ctx.recovery.commit_done(all_tails)
        raise ctx.failure


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
