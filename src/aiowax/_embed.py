"""Long-running flows inside applications: start, watch, stop, await.

A web service starts its flow in its lifespan's task group, feeds it from
request handlers and reads results out while it runs; `FlowHandle` is what
it holds on to meanwhile.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from aiowax._definition.flow import Dataflow
from aiowax._engine.context import RunContext
from aiowax._engine.driver import check_run_args, run_flow
from aiowax._engine.plan import compile_flow


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
    sources stop reading, what was read flows through, windows and batches
    flush, sinks close, and with recovery a final snapshot is committed.
    `abort` cancels it at once instead.
    """

    def __init__(
        self,
        flow: Dataflow,
        *,
        workers: int = 1,
        epoch_interval: timedelta | None = None,
        recovery_config: Any = None,
        propagate: bool = True,
    ) -> None:
        # Definition and argument errors belong to the caller, now.
        compile_flow(flow)
        check_run_args(workers, epoch_interval, recovery_config)
        self._flow = flow
        self._options: dict[str, Any] = {
            "workers": workers,
            "epoch_interval": epoch_interval,
            "recovery_config": recovery_config,
        }
        self._propagate = propagate
        self._ctx: RunContext | None = None
        self._stop_asked = False
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self._status = FlowStatus.STARTING
        self._error: BaseException | None = None

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

    def request_stop(self) -> None:
        """Ask for a graceful stop without waiting for it (see `stop`)."""
        if self._done.is_set():
            return
        self._stop_asked = True
        if self._status is FlowStatus.RUNNING:
            self._status = FlowStatus.STOPPING
        if self._ctx is not None:
            self._ctx.request_stop()

    async def stop(self) -> None:
        """Stop gracefully and wait until the flow has ended.

        Raises:
            Exception: What the flow raised, if it failed.
        """
        self.request_stop()
        await self.wait()

    async def abort(self) -> None:
        """Cancel the flow at once (partitions are still closed) and wait."""
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    async def wait(self) -> None:
        """Wait until the flow has ended.

        Raises:
            Exception: What the flow raised, if it failed.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error

    def _attach(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._status = FlowStatus.RUNNING
        if self._stop_asked:
            self.request_stop()

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                await run_flow(self._flow, on_start=self._attach, **self._options)
            if scope.cancelled_caught:
                self._status = FlowStatus.CANCELLED
            else:
                self._status = FlowStatus.FINISHED
        except anyio.get_cancelled_exc_class():
            self._status = FlowStatus.CANCELLED
            raise
        except Exception as error:
            self._status = FlowStatus.FAILED
            self._error = error
            if self._propagate:
                raise
        finally:
            self._done.set()


async def start_flow(
    task_group: TaskGroup,
    flow: Dataflow,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    propagate: bool = True,
) -> FlowHandle:
    """Start ``flow`` as a task of ``task_group`` and return its handle.

    Args:
        task_group: The group the flow runs in (an app's lifespan group...).
        flow: The dataflow.
        workers: As for `aiowax.run`.
        epoch_interval: As for `aiowax.run`.
        recovery_config: As for `aiowax.run`.
        propagate: If true (the default), an exception of the flow is raised
            in ``task_group`` too, so it cannot go unnoticed; if false, it is
            kept on the handle and raised by `FlowHandle.wait` and `stop`.
    """
    handle = FlowHandle(
        flow,
        workers=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery_config,
        propagate=propagate,
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
) -> AsyncIterator[FlowHandle]:
    """Run ``flow`` in the background for the duration of an ``async with``.

    Leaving the block normally stops the flow gracefully and waits for it;
    leaving it with an exception aborts the flow. An exception of the flow
    itself is raised from the ``async with``.

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
    handle = FlowHandle(
        flow,
        workers=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery_config,
        propagate=False,
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
