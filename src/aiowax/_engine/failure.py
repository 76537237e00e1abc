"""How a failing step reports to the run: the error, and what came before it."""

from __future__ import annotations

from typing import Any


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
