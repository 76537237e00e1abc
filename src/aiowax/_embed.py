"""Long-running flows inside applications: start, watch, stop, await.

A web service starts its flow in its lifespan's task group, feeds it from
request handlers and reads results out while it runs; `FlowHandle` is what
it holds on to meanwhile.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from aiowax._definition.flow import Dataflow
from aiowax._engine.aio import call_on_loop, running_loop
from aiowax._engine.context import RunContext

if TYPE_CHECKING:
    from aiowax._cluster.runtime import ClusterRun
from aiowax._engine.driver import check_options, flow_name, run_flow
from aiowax._engine.errors import forget_engine_locals
from aiowax._engine.plan import compile_flow
from aiowax._stats.collect import attached_runs, ended_by_abort, flow_stats
from aiowax._stats.model import FlowStats

#: The longest `FlowHandle.stats` from another thread waits for the flow's loop.
STATS_HOP_TIMEOUT = 5.0
#: Where a background flow's failure is reported when no one is waiting for it.
logger = logging.getLogger("aiowax")


class FlowStatus(enum.Enum):
    """Where a background flow is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FlowHandle:
    """A flow running in the background of a task group.

    Get one from `start_flow` or `open_flow`. `stop` ends it gracefully:
    sources stop reading, what was read flows through, sinks close, and with
    recovery a final snapshot is committed. `abort` cancels it at once
    instead.

    A failure that nobody receives at once (the flow's error is kept on the
    handle rather than raised in a task group, and no `wait` or `stop` is
    waiting) is logged at once, with its traceback, at ERROR level on the
    ``aiowax`` logger: a flow that dies in the background of a service shows
    up in the service's logs then, not at shutdown. `status` and `error` tell
    a health check the same.
    """

    def __init__(
        self,
        flow: Dataflow,
        *,
        workers: int = 1,
        epoch_interval: timedelta | None = None,
        recovery_config: Any = None,
        propagate: bool = True,
        cluster: Any = None,
    ) -> None:
        # Definition and argument errors belong to the caller, now.
        compile_flow(flow)
        check_options("FlowHandle", workers, epoch_interval, recovery_config, cluster)
        self._flow = flow
        self._options: dict[str, Any] = {
            "workers": workers,
            "epoch_interval": epoch_interval,
            "recovery_config": recovery_config,
        }
        self._cluster = cluster
        self._propagate = propagate
        self._ctx: RunContext | ClusterRun | None = None
        # The final figures, once the run ended (see `_let_go`).
        self._final: FlowStats | None = None
        self._stop_asked = False
        self._abort_asked = False
        self._scope: anyio.CancelScope | None = None
        # Tasks in `wait` now: a failure they receive needs no log record.
        self._waiters = 0
        self._done = anyio.Event()
        self._status = FlowStatus.STARTING
        self._error: BaseException | None = None
        self._error_tb: TracebackType | None = None
        #: The event loop the flow runs on (reads from other threads go there).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def status(self) -> FlowStatus:
        """The flow's status now."""
        return self._status

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the flow, if one did."""
        return self._error

    @property
    def done(self) -> bool:
        """Whether the flow has ended, whichever way."""
        return self._done.is_set()

    @property
    def flow(self) -> Dataflow:
        """The flow this handle runs."""
        return self._flow

    @property
    def name(self) -> str:
        """The flow's name (`Dataflow(name=...)`, else ``"flow"``)."""
        return flow_name(self._flow)

    def stats(self) -> FlowStats:
        """What the flow has done so far, per step and worker (see `aiowax.stats`).

        Cheap enough to call every second: the counts are kept per batch, and
        the rest is read from the steps now. Works before the start (no
        steps yet) and after the end (the final figures). Safe to call from
        another thread (a metrics exporter's): the read is then done on the
        flow's event loop, which must answer within 5 s.

        Raises:
            TimeoutError: Called from another thread, and the flow's event
                loop did not answer in time.
        """
        loop = self._loop
        if loop is not None and loop is not running_loop() and loop.is_running():
            return call_on_loop(loop, self._read_stats, STATS_HOP_TIMEOUT)
        return self._read_stats()

    def _read_stats(self) -> FlowStats:
        if self._final is not None:
            return self._final
        runs, restoring = attached_runs(self._attached())
        return flow_stats(
            self.name, self._status.value, runs, error=self._error, restoring=restoring
        )

    def request_stop(self) -> None:
        """Ask for a graceful stop without waiting for it (see `stop`)."""
        if self._done.is_set():
            return
        self._stop_asked = True
        if self._status is FlowStatus.RUNNING:
            self._status = FlowStatus.STOPPING
        if self._ctx is not None:
            self._ctx.request_stop()

    async def stop(self, timeout: float | timedelta | None = None) -> None:
        """Stop gracefully and wait until the flow has ended.

        The sources stop reading and what they read flows through to the
        sinks. Without recovery, open windows and batches are flushed as they
        are. With recovery they are not emitted early: a final snapshot keeps
        them, with everything else, and the next run goes on after what this
        one read.

        Args:
            timeout: The longest to wait for the graceful stop, in seconds or
                as a `datetime.timedelta`; ``None`` (the default) waits as long
                as it takes. At the deadline the flow is aborted as by `abort`,
                and `TimeoutError` is raised once it has ended.

        Raises:
            TimeoutError: The flow did not stop within ``timeout`` and was
                aborted: its partitions were closed, but no final snapshot was
                taken (a rerun with recovery resumes from the last epoch
                committed before), and what was in flight was not written.
            Exception: What the flow raised, if it failed (during the stop or
                before it).
            ValueError: ``timeout`` is negative or NaN.
            TypeError: ``timeout`` is neither a number nor a timedelta.
        """
        seconds = _timeout_seconds(timeout)
        self.request_stop()
        if seconds is None:
            await self.wait()
            return
        with anyio.move_on_after(seconds):
            await self.wait()
            return
        # The deadline passed first; the flow may still have ended meanwhile.
        if not self._done.is_set():
            await self.abort()
        self._raise_error()
        if self._status is FlowStatus.CANCELLED:
            msg = (
                f"the flow did not stop within {seconds:g} s and was aborted "
                "(no final snapshot was taken)"
            )
            raise TimeoutError(msg)

    async def abort(self) -> None:
        """Cancel the flow at once (partitions are still closed) and wait.

        With recovery no final snapshot is taken: a rerun resumes from the
        last epoch committed before.
        """
        self._abort_asked = True
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    async def wait(self) -> None:
        """Wait until the flow has ended.

        Raises:
            Exception: What the flow raised, if it failed.
        """
        self._waiters += 1
        try:
            await self._done.wait()
        finally:
            self._waiters -= 1
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            # With the traceback of the flow, each time: every raise would
            # otherwise add its frames to the last one's.
            raise self._error.with_traceback(self._error_tb)

    def _attached(self) -> list[RunContext | ClusterRun]:
        """What the run handed over at its start (`attached_runs` reads the runs in it)."""
        return [] if self._ctx is None else [self._ctx]

    def _attach(self, ctx: RunContext | ClusterRun) -> None:
        self._ctx = ctx
        self._status = FlowStatus.RUNNING
        if self._stop_asked:
            self.request_stop()

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._loop = running_loop()
        task_status.started()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._abort_asked:
                    scope.cancel()
                if self._cluster is not None:
                    from aiowax._cluster.runtime import run_cluster

                    options = {k: v for k, v in self._options.items() if k != "recovery_config"}
                    await run_cluster(self._flow, self._cluster, on_start=self._attach, **options)
                else:
                    await run_flow(self._flow, on_start=self._attach, **self._options)
            if scope.cancelled_caught or ended_by_abort(self._attached()):
                self._status = FlowStatus.CANCELLED
            else:
                self._status = FlowStatus.FINISHED
        except anyio.get_cancelled_exc_class():
            self._status = FlowStatus.CANCELLED
            raise
        except Exception as error:
            self._status = FlowStatus.FAILED
            self._error = error
            self._error_tb = error.__traceback__
            if self._propagate:
                raise
            if not self._waiters:
                # Kept on the handle, it would go unseen until the owner next
                # looks: a service may run for days before it does.
                logger.error(
                    "flow %r failed; it has stopped (%s: %s)",
                    self.name,
                    type(error).__name__,
                    error,
                    exc_info=error,
                )
        except BaseException as error:
            # SystemExit or KeyboardInterrupt from user code (a library that
            # calls sys.exit()): the flow is over, and goes on up; the handle
            # must not say it still runs.
            self._status = FlowStatus.FAILED
            self._error = error
            self._error_tb = error.__traceback__
            raise
        finally:
            try:
                self._let_go()
            finally:
                self._done.set()

    def _let_go(self) -> None:
        """Keep the run's final figures, and let go of the run itself.

        A handle outlives its run (a job list, a metrics source, the live
        page): holding the run would keep every step's state alive with it.
        """
        try:
            self._final = self._read_stats()
        except Exception:  # a step's figures could not be read: keep the run
            logger.exception("reading the final stats of flow %r failed", self.name)
        else:
            self._ctx = None
            if self._error is not None:
                # Its traceback would hold the run in the engine's frames.
                forget_engine_locals(self._error)


def _timeout_seconds(timeout: object) -> float | None:
    """``FlowHandle.stop``'s timeout in seconds; ``None`` for no timeout."""
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        msg = f"FlowHandle.stop: timeout must be seconds or a timedelta, got {timeout!r}"
        raise TypeError(msg)
    if not seconds >= 0:
        msg = f"FlowHandle.stop: timeout must be >= 0, got {timeout!r}"
        raise ValueError(msg)
    return seconds


async def start_flow(
    task_group: TaskGroup,
    flow: Dataflow,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    propagate: bool = True,
    cluster: Any = None,
) -> FlowHandle:
    """Start ``flow`` as a task of ``task_group`` and return its handle.

    Args:
        task_group: The group the flow runs in (an app's lifespan group...).
        flow: The dataflow.
        workers: As for `aiowax.run`.
        epoch_interval: As for `aiowax.run`.
        recovery_config: As for `aiowax.run`.
        cluster: As for `aiowax.run`: an `aiowax.cluster.KafkaCluster`.
        propagate: If true (the default), an exception of the flow is raised
            in ``task_group`` too, so it cannot go unnoticed; if false, it is
            kept on the handle and raised by `FlowHandle.wait` and `stop`
            (and logged at once on the ``aiowax`` logger if neither is
            waiting for it then).
    """
    check_options("start_flow", workers, epoch_interval, recovery_config, cluster)
    handle = FlowHandle(
        flow,
        workers=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery_config,
        propagate=propagate,
        cluster=cluster,
    )
    await task_group.start(handle._serve)
    return handle


@asynccontextmanager
async def open_flow(
    flow: Dataflow,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    cluster: Any = None,
) -> AsyncIterator[FlowHandle]:
    """Run ``flow`` in the background for the duration of an ``async with``.

    Leaving the block normally stops the flow gracefully and waits for it;
    leaving it with an exception aborts the flow. An exception of the flow
    itself is raised from the ``async with``; if the flow fails while the
    block still runs, and the block is not waiting for it (`FlowHandle.wait`,
    `FlowHandle.stop`), the failure is also logged at once (see `FlowHandle`).

    >>> import anyio, aiowax
    >>> from aiowax.dataflow import Dataflow
    >>> from aiowax.testing import TestingSource, TestingSink
    >>> async def main():
    ...     out = []
    ...     flow = Dataflow()
    ...     flow.input("inp", TestingSource([1, 2, 3]))
    ...     flow.output("out", TestingSink(out))
    ...     async with aiowax.open_flow(flow) as handle:
    ...         await handle.wait()
    ...     return out, handle.status
    >>> anyio.run(main)
    ([1, 2, 3], <FlowStatus.FINISHED: 'finished'>)
    """
    check_options("open_flow", workers, epoch_interval, recovery_config, cluster)
    handle = FlowHandle(
        flow,
        workers=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery_config,
        propagate=False,
        cluster=cluster,
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(handle._serve)
        try:
            yield handle
        except Exception as error:
            # Raised below, outside the task group, which would wrap it in
            # an ExceptionGroup.
            failure = error
            await handle.abort()
        except BaseException:
            await handle.abort()
            raise
        else:
            try:
                await handle.stop()
            except Exception as error:
                failure = error
    if failure is not None:
        raise failure
