"""Wiring: from the pipelines of a flow to the graph of tasks that runs it.

For every pipeline and worker: one lane per source partition, then one task
per step, each step fed by a `Link` (a `LocalLink`, or an exchange when the
operator table says its items must move between workers). The last step of
a pipeline on a worker is its tail; a pipeline with no steps gets a drain
task instead. Nothing runs here: `aiowax._engine.driver` starts the tasks.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from aiowax._definition.outputs import FixedPartitionedSink
from aiowax._definition.steps import OutputStep, Step
from aiowax._engine.channels import AnyOutlet, EpochBarrier, Inlet, Outlet, Sender
from aiowax._engine.context import RunContext, Tail
from aiowax._engine.errors import StepFailed
from aiowax._engine.exchange import InProcessExchange, Link, LocalLink
from aiowax._engine.kinds import Routing, StepKind, kind_of
from aiowax._engine.lanes import Lane, lane_parts
from aiowax._engine.ops.base import Operator, StepEnv
from aiowax._engine.ops.output import sink_part_names
from aiowax._engine.plan import Pipeline
from aiowax._engine.routing import KeyRouter, PartRouter, RoundRobin, Router
from aiowax._keys import key_owner
from aiowax._recovery.runtime import ANY_KEY, AnyKey


@dataclass
class StepTask:
    """One step on one worker: its operator and what it is linked to."""

    name: str
    op: Operator
    inlet: Inlet
    outlet: AnyOutlet
    #: The pipeline tail this task is, if it is the last step on its worker.
    tail: Tail | None
    #: The tails that drain what this task sends (a failure waits for them).
    downstream: set[Tail]
    #: Where its timer puts ticks (timed operators only).
    timer_sender: Sender | None
    #: Its restored state, when recovery is on.
    restored: dict[str, Any] | None
    #: The id of its pipeline's input step.
    pipeline: str = ""
    #: When its task started and ended (``perf_counter``), for its busy time.
    started: float | None = None
    ended: float | None = None


@dataclass
class LaneTask:
    """One source partition on one worker."""

    name: str
    lane: Lane
    downstream: set[Tail]


@dataclass
class DrainTask:
    """Reads an input with no steps after it, so its source still runs."""

    name: str
    inlet: Inlet
    tail: Tail


@dataclass
class Graph:
    """Every task of a run, linked, and not yet started."""

    lanes: list[LaneTask] = field(default_factory=list)
    steps: list[StepTask] = field(default_factory=list)
    drains: list[DrainTask] = field(default_factory=list)
    tails: set[Tail] = field(default_factory=set)

    @property
    def operators(self) -> dict[tuple[str, int], Operator]:
        """Every step's operator, by ``(step_id, worker_index)``."""
        return {(t.op.step_id, t.op.worker_index): t.op for t in self.steps}


def build_graph(ctx: RunContext, pipelines: list[Pipeline]) -> Graph:
    """Wire every pipeline of a flow for the workers of ``ctx`` (and set ``ctx.graph``)."""
    n = ctx.worker_count
    try:
        parts = [lane_parts(pipeline.input, n) for pipeline in pipelines]
    except StepFailed as failed:
        raise failed.error from None
    # One epoch clock for the whole flow: every partition of every input
    # closes epoch e before any of them starts e + 1, so an epoch is a
    # consistent cut of all inputs (what a snapshot needs).
    barrier = EpochBarrier(sum(len(lanes) for by_worker in parts for lanes in by_worker))
    if ctx.recovery is not None:
        # Before any operator takes its states: a step whose kind changed
        # under its id must not be handed the other kind's.
        kinds = {p.input.step_id: p.input.kind for p in pipelines}
        kinds.update((step.step_id, step.kind) for p in pipelines for step in p.steps)
        ctx.recovery.check_kinds(kinds)
    graph = Graph()
    for pipeline, by_worker in zip(pipelines, parts, strict=True):
        _wire_pipeline(graph, ctx, pipeline, by_worker, barrier)
    if ctx.recovery is not None:
        # Refuse snapshots of steps or partitions this flow no longer has
        # (renamed: resuming would restore only part of the state), and
        # snapshots that failed to load, before anything runs.
        expected: dict[str, AbstractSet[str] | AnyKey] = {
            p.input.step_id: {name for names in by_worker for name in names if name is not None}
            for p, by_worker in zip(pipelines, parts, strict=True)
        }
        for task in graph.steps:
            env = task.op.env
            expected[task.op.step_id] = ANY_KEY if env.kind.keyed else set(env.sink_parts)
        # A source may say where a partition went that no longer matches
        # (a file source whose file system id changed).
        moved = {
            p.input.step_id: hook
            for p in pipelines
            if (hook := getattr(p.input.source, "_aiowax_partition_moved", None)) is not None
        }
        try:
            ctx.recovery.check_unmatched(expected, moved)
        except BaseException:
            # Nothing will run: close every channel end, or they leak.
            for task in graph.steps:
                task.inlet.close()
                task.outlet.close()
                if task.timer_sender is not None:
                    task.timer_sender.close()
            for lane_task in graph.lanes:
                lane_task.lane.outlet.close()
            for drain in graph.drains:
                drain.inlet.close()
            raise
    ctx.live_tails |= graph.tails
    ctx.graph = graph
    return graph


def _router(step: Step, kind: StepKind, n: int, sink_parts: tuple[str, ...]) -> Router | None:
    """The router in front of ``step``, or None when its items stay local."""
    if n == 1 or kind.routing is Routing.LOCAL:
        return None
    if kind.routing is Routing.BY_KEY:
        return KeyRouter(step.step_id, n)
    if kind.routing is Routing.SPREAD:
        return RoundRobin(n)
    # A partitioned sink's partition lives on one worker: items go there.
    if isinstance(step, OutputStep) and isinstance(step.sink, FixedPartitionedSink):
        return PartRouter(step.step_id, step.sink.part_fn, len(sink_parts), n)
    return None


def _sink_parts(step: Step) -> tuple[str, ...]:
    """A partitioned sink's partitions (listed once per run), else nothing."""
    if not (isinstance(step, OutputStep) and isinstance(step.sink, FixedPartitionedSink)):
        return ()
    try:
        return sink_part_names(step)
    except StepFailed as failed:
        raise failed.error from None


def _restored(ctx: RunContext, step: Step, kind: StepKind) -> list[dict[str, Any] | None]:
    """Each worker's share of a step's restored state (None: recovery is off)."""
    n = ctx.worker_count
    if ctx.recovery is None:
        return [None] * n
    states: dict[str, Any] = ctx.recovery.restored(step.step_id)
    if n == 1 or not kind.keyed:
        return [states] * n
    # Keys go to the worker that owns them now, whatever the worker count
    # of the run that saved them.
    shares: list[dict[str, Any] | None] = [{} for _ in range(n)]
    for key, state in states.items():
        share = shares[key_owner(key, n)]
        assert share is not None
        share[key] = state
    return shares


def _wire_pipeline(
    graph: Graph,
    ctx: RunContext,
    pipeline: Pipeline,
    parts_by_worker: list[list[str | None]],
    barrier: EpochBarrier,
) -> None:
    n = ctx.worker_count
    p = pipeline.index
    steps = pipeline.steps
    kinds = [kind_of(step) for step in steps]
    sink_parts = [_sink_parts(step) for step in steps]
    routers = [
        _router(step, kind, n, parts)
        for step, kind, parts in zip(steps, kinds, sink_parts, strict=True)
    ]
    # links[i] feeds step i; with no steps, links[0] feeds the drain.
    links: list[Link] = [
        LocalLink(n, ctx.start_epoch)
        if route is None
        else InProcessExchange(n, ctx.start_epoch, route)
        for route in routers
    ] or [LocalLink(n, ctx.start_epoch)]
    tails = {(p, w) for w in range(n)}
    graph.tails |= tails

    def downstream(i: int, w: int) -> set[Tail]:
        # Past an exchange, a failure reaches (and waits for) every worker.
        return tails if any(r is not None for r in routers[i + 1 :]) else {(p, w)}

    step_id = pipeline.input.step_id
    for w in range(n):
        for part in parts_by_worker[w]:
            lane = Lane(ctx, pipeline.input, part, w, links[0].outlet(w), barrier)
            graph.lanes.append(
                LaneTask(f"aiowax lane {step_id}[{part}]@{w}", lane, downstream(-1, w))
            )
    if not steps:
        for w in range(n):
            graph.drains.append(DrainTask(f"aiowax drain {step_id}@{w}", links[0].inlet(w), (p, w)))

    last = len(steps) - 1
    for i, (step, kind) in enumerate(zip(steps, kinds, strict=True)):
        assert kind.operator is not None
        restored = _restored(ctx, step, kind)
        for w in range(n):
            env = StepEnv(
                kind=kind,
                worker_index=w,
                worker_count=n,
                clock=ctx.clock,
                start_epoch=ctx.start_epoch,
                passes_on=i < last,
                items_checked=routers[i] is not None and kind.keyed,
                sink_parts=sink_parts[i],
            )
            op = kind.operator(step, env)
            graph.steps.append(
                StepTask(
                    name=f"aiowax step {step.step_id}@{w}",
                    op=op,
                    inlet=links[i].inlet(w),
                    outlet=links[i + 1].outlet(w) if i < last else Outlet(None, 0),
                    tail=(p, w) if i == last else None,
                    downstream=downstream(i, w),
                    timer_sender=links[i].loopback(w) if op.timer is not None else None,
                    restored=restored[w],
                    pipeline=step_id,
                )
            )
    for link in links:
        link.seal()
