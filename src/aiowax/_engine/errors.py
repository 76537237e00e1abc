"""The engine's own signals: a step that failed, a receiver that is gone.

Neither ever reaches the user. `StepFailed` is the one carrier of "an error
plus the output produced before it": operators, routers, user-code helpers
and source lanes all raise it, and the step task passes the output on before
it stops, so nothing already processed is lost. `DownstreamGone` tells a
sender that its receiver has stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import anyio

from aiowax._engine.aio import CancelledError, raise_if_cancelled


class StepFailed(Exception):
    """User code (or a check of the engine) failed in the middle of a batch.

    Attributes:
        error: The exception to report to the caller of the run.
        partial: What was produced for the items before the failing one:
            output items, or, from a router, the items routed per worker.
    """

    def __init__(self, error: BaseException, partial: list[Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.partial = partial or []


class RoutingFailed(StepFailed):
    """An exchange refused an item on its way to ``step_id`` (not a (key, value) pair...).

    Raised in the task that sends the item, but the error is the receiving
    step's: it is counted there in the stats, not on the sender.

    Attributes:
        step_id: The step the items were going to.
        passed: Items of the batch handed on before the refused one.
    """

    def __init__(self, error: BaseException, step_id: str, passed: int) -> None:
        super().__init__(error)
        self.step_id = step_id
        self.passed = passed


class DownstreamGone(Exception):
    """The receiving step has stopped; the sender should stop quietly too."""


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
    """Build the `StepFailed` for what user code raised, with its note added.

    Any exception counts, `BaseException` too (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``...): the output before it is
    passed on, every partition is closed, and the caller of the run gets it
    with its note. Two kinds cannot travel as they are and are raised as a
    `RuntimeError` caused by them: ``StopIteration``/``StopAsyncIteration``
    (Python turns them into an anonymous RuntimeError once they leave a
    coroutine) and a ``CancelledError`` that is no real cancellation (it
    would pass for one). A real cancellation is raised again, untouched.

    An error already reported as a `StepFailed` (a builder called from the
    folding code, say) passes through unchanged but for ``partial``.
    """
    if isinstance(error, StepFailed):
        if partial:
            error.partial = partial
        return error
    raise_if_cancelled(error)
    if isinstance(error, StopIteration | StopAsyncIteration | CancelledError):
        wrapped = RuntimeError(
            f"raised {type(error).__name__}"
            + (" while nothing was cancelling it" if isinstance(error, CancelledError) else "")
        )
        wrapped.__cause__ = error
        error = wrapped
    return StepFailed(note(error, step_id, role), partial)


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


def lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group's ``group`` holds, else the group itself.

    The engine's own signals are not errors (`DownstreamGone`), and a
    `StepFailed` stands for the user's error it carries: a run never leaks
    a group of one, nor nested groups of one, to its caller.
    """
    leaves = [
        leaf.error if isinstance(leaf, StepFailed) else leaf
        for leaf in _leaves(group)
        if not isinstance(leaf, DownstreamGone)
    ]
    return leaves[0] if len(leaves) == 1 else group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


#: Source files of aiowax's own frames: the package directory, as imported
#: (a frame's file name is the path its module was loaded from, unresolved).
_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "")


def forget_engine_locals(error: BaseException) -> None:
    """Clear the variables of aiowax's own frames that ``error`` keeps alive.

    An exception kept after its run (`FlowHandle.error`) holds, through its
    traceback and each frame's caller, the engine's frames, and with them
    the run: every step's state and channel (20 MB for a failed 200,000-key
    `stateful_map`, for as long as the handle lived). Call it once the run
    is over: its frames are done then, but for the one handling ``error``,
    which is running and left as it is. The user's own frames keep their
    variables, for a debugger; the traceback prints as before.
    """
    frames: set[int] = set()
    errors: set[int] = set()
    pending = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in errors:
            continue
        errors.add(id(exc))
        pending.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        tb = exc.__traceback__
        while tb is not None:
            frame: FrameType | None = tb.tb_frame
            while frame is not None and id(frame) not in frames:
                frames.add(id(frame))
                if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                    with contextlib.suppress(RuntimeError):  # still running
                        frame.clear()
                frame = frame.f_back
            tb = tb.tb_next
