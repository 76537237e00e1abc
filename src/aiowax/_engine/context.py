"""State shared by all tasks of one run: its settings and its first failure."""

from __future__ import annotations

import contextlib
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from aiowax._engine.clock import Clock
from aiowax._engine.errors import DownstreamGone, RoutingFailed, StepFailed
from aiowax._errors import AbortExecution

if TYPE_CHECKING:
    from aiowax._engine.channels import AnyOutlet
    from aiowax._engine.wiring import Graph

#: A pipeline's tail on one worker: ``(pipeline index, worker index)``.
Tail = tuple[int, int]


@dataclass
class RunContext:
    """Settings of a run, and how it stops after its first failure.

    A failing step passes on what it produced before the failure, then a
    failure marker. The run waits until the tails of the pipelines downstream
    of the failure have taken everything in front of that marker (so it gets
    written), and only then cancels whatever is still running.

    Attributes:
        clock: Where every timer of the run reads time.
        epoch_interval: Seconds between epoch ends of each input.
        worker_count: Workers in this run.
        failure: The first error of the run; later ones are dropped.
        abort: The failure is an `AbortExecution`: nothing is closed.
    """

    clock: Clock
    epoch_interval: float
    worker_count: int = 1
    #: The first epoch of this run (after the last committed one on resume).
    start_epoch: int = 1
    #: The run's recovery (a `aiowax._recovery.runtime.Recovery`), if any.
    recovery: Any = None
    failure: BaseException | None = None
    abort: bool = False
    cancel_scope: anyio.CancelScope | None = None
    live_tails: set[Tail] = field(default_factory=set)
    #: What the wiring built for this run (set once it is built).
    graph: Graph | None = None
    awaited_tails: set[Tail] | None = None

    #: The flow's name, for stats.
    name: str = "flow"
    #: When the tasks were started (wall clock, and ``perf_counter``), and
    #: when they ended; for stats.
    started_at: datetime | None = None
    started: float | None = None
    ended: float | None = None
    #: The run's end on the loop clock and the wall clock (stats of a run
    #: that ended are read as of then).
    ended_loop: float | None = None
    ended_at: datetime | None = None

    #: Items an exchange refused, by the step they were going to and the
    #: sender's worker: that step's errors, in the stats.
    routing_errors: dict[tuple[str, int], int] = field(default_factory=dict)

    #: A graceful stop was asked for: sources end as if their input ended.
    stopping: bool = False
    #: Cancel scopes around what sources wait on (async reads, sleeps).
    wait_scopes: set[anyio.CancelScope] = field(default_factory=set)

    def request_stop(self) -> None:
        """Stop the sources; everything read so far still flows to the sinks."""
        self.stopping = True
        for scope in list(self.wait_scopes):
            scope.cancel()

    def count_routing_error(self, failed: RoutingFailed, worker_index: int) -> None:
        """Count a refused item as an error of the step it was going to."""
        key = (failed.step_id, worker_index)
        self.routing_errors[key] = self.routing_errors.get(key, 0) + 1

    def record(self, error: BaseException, downstream: set[Tail] | None = None) -> None:
        """Keep ``error`` if it is the run's first, and start the shutdown.

        Args:
            error: What to raise to the caller of the run.
            downstream: The tails that will drain what the failing task
                passed on; ``None`` when there is nothing to wait for.
        """
        if self.failure is not None:
            return
        self.failure = error
        self.abort = isinstance(error, AbortExecution)
        self.awaited_tails = set(downstream or ()) & self.live_tails
        self._maybe_cancel()

    async def report(self, outlet: AnyOutlet, failed: StepFailed, downstream: set[Tail]) -> None:
        """What a task does when its step (or lane) failed.

        The error is recorded first, so nothing that follows can mask it;
        then what the step produced before the failure goes downstream (it
        reaches the sinks), then the failure marker.
        """
        self.record(failed.error, downstream)
        if failed.partial:
            with contextlib.suppress(DownstreamGone, StepFailed):
                await outlet.send(failed.partial)
        await outlet.failure()

    def tail_done(self, tail: Tail) -> None:
        """A pipeline's tail task ended (drained, finished or failed)."""
        self.live_tails.discard(tail)
        if self.awaited_tails is not None:
            self.awaited_tails.discard(tail)
            self._maybe_cancel()

    def _maybe_cancel(self) -> None:
        if not self.awaited_tails and self.cancel_scope is not None:
            self.cancel_scope.cancel()


#: The run whose source lane is the current task (set by each lane for its
#: own task): user code a source awaits can tell a graceful stop. A weak
#: reference: copies of the lane's context outlive the run (in asyncio's
#: cancelled timers, dropped lazily at their deadline), and must not keep it
#: and every step's state alive.
LANE_RUN: ContextVar[weakref.ref[RunContext] | None] = ContextVar("aiowax_lane_run", default=None)


def stopping_gracefully() -> bool:
    """Whether the current task is a source lane whose run is stopping gracefully."""
    ref = LANE_RUN.get()
    ctx = None if ref is None else ref()
    return ctx is not None and ctx.stopping
