"""How a failing step reports to the run: the error, and what came before it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from aiowax._engine.channels import DownstreamGone

if TYPE_CHECKING:
    from aiowax._engine.channels import AnyOutlet
    from aiowax._engine.context import RunContext, Tail

T = TypeVar("T")


class StepFailed(Exception):
    """Raised by an operator when user code (or its own check) failed mid-batch.

    Attributes:
        partial: Output the step produced for the items before the failing
            one; the engine passes it on before stopping, so nothing already
            processed is lost.
        error: The exception to report to the caller of the run.
    """

    def __init__(self, error: BaseException, partial: list[Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.partial = partial or []


def note(error: BaseException, step_id: str, role: str) -> BaseException:
    """Attach the step and the role of the failing code to ``error``, once."""
    text = f"raised in step {step_id!r} by the {role}"
    notes = getattr(error, "__notes__", ())
    if text not in notes:
        error.add_note(text)
    return error


def fail(
    error: BaseException, step_id: str, role: str, partial: list[Any] | None = None
) -> StepFailed:
    """Build the `StepFailed` for a user error, with its note added.

    An error already reported as a `StepFailed` (a builder called from the
    folding code, say) passes through unchanged but for ``partial``.
    """
    if isinstance(error, StepFailed):
        if partial:
            error.partial = partial
        return error
    return StepFailed(note(error, step_id, role), partial)


async def user_await(awaitable: Awaitable[T]) -> T:
    """Await user code, telling a real cancellation from a stray one.

    A user coroutine that raises `asyncio.CancelledError` while nobody is
    cancelling the task would otherwise pass for a cancellation of the
    step, and the step would end as if its input had: a silent loss.
    """
    try:
        return await awaitable
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        msg = "raised CancelledError while nothing was cancelling it"
        raise RuntimeError(msg) from None


async def maybe_await(value: Any) -> Any:
    """The value, awaited first if it is awaitable (user code may be either)."""
    if inspect.isawaitable(value):
        return await user_await(value)
    return value


async def report_failure(
    ctx: RunContext, outlet: AnyOutlet, failed: StepFailed, downstream: set[Tail]
) -> None:
    """What a task does when its step failed.

    The error is recorded first, so nothing that follows can mask it; then
    what the step produced before the failure goes downstream (it reaches
    the sinks), then the failure marker.
    """
    ctx.record(failed.error, downstream)
    if failed.partial:
        with contextlib.suppress(DownstreamGone, StepFailed):
            await outlet.send(failed.partial)
    await outlet.failure()


async def with_side_task(
    main: Callable[[], Awaitable[None]], side: Callable[[], Awaitable[None]]
) -> None:
    """Run ``main`` with ``side`` beside it; ``side`` is cancelled when ``main`` ends.

    A task group would wrap what either raises in an ExceptionGroup; the
    engine's own signals (`StepFailed`, `DownstreamGone`) come out bare, so
    the handlers of the caller see them.
    """
    stopped: StepFailed | DownstreamGone | None = None

    async def guarded(fn: Callable[[], Awaitable[None]]) -> None:
        nonlocal stopped
        try:
            await fn()
        except (StepFailed, DownstreamGone) as error:
            if stopped is None:
                stopped = error
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(guarded, side)
        await guarded(main)
        tg.cancel_scope.cancel()
    if stopped is not None:
        raise stopped
