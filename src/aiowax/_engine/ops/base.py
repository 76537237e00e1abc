"""What every operator is: its environment, its lifecycle, its timer.

An operator is one step's logic on one worker. The step task (see
`aiowax._engine.driver`) drives every operator through the same lifecycle,
without knowing its class:

1. ``await start(restored)``: build what it needs; take restored state.
2. ``process(batch)`` (or ``await aprocess(batch)`` when ``is_async``) for
   each batch, returning the output batch.
3. ``epoch_ended(epoch)`` after each aligned epoch end, then ``snapshot()``
   when recovery is on; before both, ``await flush()`` if ``flushes``.
4. ``on_tick()`` (or ``await atick()``) when its timer fired, if it has one.
5. ``await end_of_input()`` once, returning what is left to emit (then
   ``await flush()`` if ``flushes``).
6. ``await aclose()`` once, whatever happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from inspect import isawaitable, iscoroutine
from typing import TYPE_CHECKING, Any

import anyio

from aiowax._checks import describe
from aiowax._definition.steps import Step
from aiowax._engine.clock import Clock
from aiowax._engine.errors import DownstreamGone, StepFailed, fail
from aiowax._engine.timeutil import to_us
from aiowax._engine.usercode import ASYNC_CONCURRENCY, call_ordered

if TYPE_CHECKING:
    from aiowax._engine.kinds import StepKind


@dataclass(frozen=True)
class StepEnv:
    """Where an operator runs: what the wiring tells it when it is made.

    Attributes:
        kind: Its entry in the operator table.
        worker_index: The worker it runs on.
        worker_count: Workers in the run.
        clock: The run's clock.
        start_epoch: The run's first epoch.
        passes_on: Steps follow it in its pipeline (its output is used).
        items_checked: An exchange in front already checked that every item
            is a ``(str, value)`` pair, so its hot loop may skip the check.
        sink_parts: The partitions of a partitioned sink, listed once per run.
    """

    kind: StepKind
    worker_index: int
    worker_count: int
    clock: Clock
    start_epoch: int = 1
    passes_on: bool = False
    items_checked: bool = False
    sink_parts: tuple[str, ...] = ()


class Operator:
    """One step's logic on one worker; see the module docs for its lifecycle.

    Sync operators implement `process`; async ones set ``is_async`` and
    implement `aprocess`. Both return the output batch (maybe empty).
    """

    #: ``aprocess`` is the one to call (a user function is ``async def``).
    is_async = False
    #: An async step may take every batch already waiting at once (its cost
    #: is per batch); an output step keeps batches as they came.
    gathers = True
    #: `flush` must be awaited before each epoch end and after the end of input.
    flushes = False
    #: The timer of a timed operator, run by the driver beside the step.
    timer: StepTimer | None = None
    #: Set by the step task: sends output of a batch ahead of the rest of it
    #: (an async function's results from the start of the batch, while the
    #: calls for later items still run).
    emit_early: Callable[[list[Any]], Awaitable[None]] | None = None

    def __init__(self, step: Step, env: StepEnv) -> None:
        self.step = step
        self.step_id = step.step_id
        self.env = env
        self.worker_index = env.worker_index
        #: Names the main user code in error notes ("map mapper"...).
        self.role = env.kind.role
        self.epoch = env.start_epoch
        #: Most calls of its async user code in flight at once.
        self.limit = step.max_concurrency or ASYNC_CONCURRENCY
        # Counted by the step task per batch, read by `aiowax._stats`.
        self.items_in = 0
        self.items_out = 0
        self.errors = 0

    def stats_extra(self, loop_now: float, wall_us: int) -> dict[str, Any]:
        """What this kind of step adds to its `StepStats` (keys, watermark...).

        Called when somebody asks for stats, never on the data path, with
        the loop clock's now and the wall clock's (microseconds).
        """
        return {}

    def fail(self, error: BaseException, partial: list[Any] | None = None) -> StepFailed:
        """The `StepFailed` for ``error`` raised by the step's main user code."""
        return fail(error, self.step_id, self.role, partial)

    def returned_awaitable(self, role: str, got: object, *more: object) -> StepFailed:
        """The error for a keyed step's sync function that returned an awaitable.

        Its state chains the calls of a key, so an awaitable cannot be
        awaited later; the function must be ``async def``. ``got`` and any
        other coroutines in ``more`` are closed, so none is left unawaited.
        """
        for value in (got, *more):
            close_coroutines(value)
        msg = (
            f"{self.step.kind} step {self.step_id!r}: the {role} returned an awaitable "
            f"({type(got).__name__}); a keyed step awaits only an `async def` function, "
            "so declare it async (e.g. `async def f(...): return await ...`)"
        )
        return StepFailed(TypeError(msg))

    def type_error(self, rule: str, got: object, context: str = "") -> StepFailed:
        """The `StepFailed` for user code that returned the wrong thing."""
        msg = f"{self.step.kind} step {self.step_id!r}: {rule}, got {describe(got)}{context}"
        return StepFailed(TypeError(msg))

    def awaiting(
        self,
        results: list[Any],
        finish: Callable[[list[Any]], list[Any]],
        error: BaseException | None = None,
    ) -> NeedsAwait:
        """Go async, and have the step task await ``results`` for this batch.

        Args:
            results: What the user function returned, item by item.
            finish: Turns the awaited results into the output batch.
            error: What the user function raised after ``results``, if it
                did: raised once they are awaited, with their output.
        """
        self.is_async = True

        async def settle() -> list[Any]:
            try:
                done = await call_ordered(_same, results, self.limit)
            except StepFailed as partly:
                # The coroutines after the failing one were made but never
                # awaited: closed, they go without a warning.
                for result in results:
                    if iscoroutine(result):
                        result.close()
                raise self.fail(partly.error, finish(partly.partial)) from None
            if error is not None:
                raise self.fail(error, finish(done))
            return finish(done)

        return NeedsAwait(settle)

    async def start(self, restored: dict[str, Any] | None) -> None:
        """Get ready to process; ``restored`` is the recovered state, if recovery is on."""
        if restored is not None:
            self.restore(restored)

    def restore(self, restored: dict[str, Any]) -> None:
        """Take over restored state and start tracking changes for snapshots."""

    def process(self, batch: list[Any]) -> list[Any]:
        raise NotImplementedError

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        return self.process(batch)

    async def flush(self) -> None:
        """Finish the work this operator left in flight, before an epoch end passes.

        Awaited only when ``flushes`` is true: a sink that keeps writes in
        flight confirms them here, so an epoch is never committed before
        its output is written.
        """

    def epoch_ended(self, epoch: int) -> None:
        """Everything of ``epoch`` has been processed."""
        self.epoch = epoch + 1

    def snapshot(self) -> dict[str, Any]:
        """The state changes since the last snapshot, by state key.

        A key whose state is gone maps to `aiowax._recovery.runtime.DELETED`.
        """
        return {}

    def on_tick(self) -> list[Any]:
        """The timer fired: return what is due."""
        return []

    async def atick(self) -> list[Any]:
        return self.on_tick()

    async def end_of_input(self) -> list[Any]:
        """Return what is left to emit at the end of input."""
        return []

    async def aclose(self) -> None:
        """Release what the operator holds; called once, whatever happened."""


class NeedsAwait(Exception):
    """Raised by a sync ``process`` whose user function returned awaitables.

    A sync callable may return a coroutine (``lambda x: enrich(x, client)``).
    The step task awaits `settle` for this batch's output; the operator has
    switched to its async path for every batch after it.
    """

    def __init__(self, settle: Callable[[], Awaitable[list[Any]]]) -> None:
        super().__init__()
        self.settle = settle


def returned_awaitables(results: list[Any]) -> bool:
    """Whether a user function's results are awaitables (first or last: O(1) per batch)."""
    return bool(results) and (isawaitable(results[0]) or isawaitable(results[-1]))


def close_coroutines(value: object, seen: set[int] | None = None) -> None:
    """Close the coroutines in ``value`` (and in lists, tuples and dicts of them).

    A coroutine not started yet holds its arguments, which may be earlier
    coroutines (an accumulator chained through calls): those are closed too,
    so none is reported as never awaited.
    """
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if iscoroutine(value):
        frame = value.cr_frame
        if frame is not None and value.cr_running is False:
            for local in list(frame.f_locals.values()):
                close_coroutines(local, seen)
        value.close()
    elif isinstance(value, list | tuple):
        for item in value:
            close_coroutines(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            close_coroutines(item, seen)


def _same(value: Any) -> Any:
    return value


class StepTimer:
    """Puts a tick in a timed step's own channel when its earliest deadline passes.

    The operator owns it and says when its earliest deadline may have moved
    earlier (`rearm`); the driver runs it beside the step's loop and reports
    each tick handled (`tick_handled`), so no tick is sent before the last
    one was answered.
    """

    def __init__(self, clock: Clock, next_deadline: Callable[[], float | None]) -> None:
        self._clock = clock
        self._next_deadline = next_deadline
        self._wake = anyio.Event()
        self._ticked = anyio.Event()

    def rearm(self) -> None:
        """The earliest deadline may have moved earlier: look again."""
        self._wake.set()

    def tick_handled(self) -> None:
        self._ticked.set()

    async def run(self, send_tick: Callable[[], Awaitable[None]]) -> None:
        clock = self._clock
        while True:
            self._wake = anyio.Event()
            deadline = self._next_deadline()
            if deadline is None:
                await self._wake.wait()
                continue
            if deadline > clock.monotonic():
                with anyio.move_on_after(deadline - clock.monotonic()):
                    await self._wake.wait()
                continue
            self._ticked = anyio.Event()
            try:
                await send_tick()
            except (DownstreamGone, anyio.ClosedResourceError):
                return
            await self._ticked.wait()


@dataclass(frozen=True, slots=True)
class WallAnchor:
    """One moment on both clocks: converts loop times to wall microseconds and back.

    Snapshots save deadlines and watermarks as wall time, so that the time a
    flow was down counts as elapsed when it resumes.
    """

    loop: float
    wall_us: int

    def to_wall_us(self, loop_time: float) -> int:
        return self.wall_us + round((loop_time - self.loop) * 1e6)

    def to_loop(self, wall_us: int) -> float:
        return self.loop + (wall_us - self.wall_us) / 1e6


class TimedOp(Operator):
    """An operator with deadlines on the event-loop clock (batch timeouts, windows)."""

    timer: StepTimer

    def __init__(self, step: Step, env: StepEnv) -> None:
        super().__init__(step, env)
        self.clock = env.clock
        self.now = env.clock.timer()
        self.timer = StepTimer(env.clock, self.next_deadline)

    def next_deadline(self) -> float | None:
        """The loop time of the earliest deadline, if any."""
        raise NotImplementedError

    def anchor(self) -> WallAnchor:
        """Now, on the loop clock and the wall clock."""
        return WallAnchor(self.now(), to_us(self.clock.now()))
