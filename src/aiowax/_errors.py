"""The exception tree of aiowax.

User exceptions raised inside a step keep their own type and get a note
naming the step; only problems that aiowax itself detects use these classes.
"""

from __future__ import annotations


class AiowaxError(Exception):
    """Base class of the errors raised by aiowax itself."""


class FlowDefinitionError(AiowaxError, ValueError):
    """A dataflow cannot run as defined (no input, no output, misplaced step).

    It is also a ``ValueError``, so code written for the reference keeps
    catching it.
    """


class AbortExecution(RuntimeError):
    """Raised by a source to stop the whole execution abruptly.

    Nothing is closed and no final snapshot is taken, as after a crash;
    ``TestingSource.ABORT()`` raises it to rehearse recovery.
    """

    # Exported by aiowax.inputs (as in the reference) and by aiowax.
    __module__ = "aiowax.inputs"
