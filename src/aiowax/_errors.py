"""The exception tree of aiowax: every public exception class is defined here.

User exceptions raised inside a step keep their own type and get a note
naming the step; only problems that aiowax itself detects use these classes.
Each class is re-exported by the public module its users import it from
(``aiowax``, ``aiowax.inputs``, ``aiowax.recovery``,
``aiowax.connectors.inproc``), and reports that module as its ``__module__``
(see `aiowax._util.fixup_module_metadata`).

    Exception
    ├── AiowaxError
    │   ├── FlowDefinitionError (also a ValueError)
    │   ├── RecoveryError
    │   │   ├── NoPartitionsError
    │   │   ├── MissingPartitionsError
    │   │   └── InconsistentPartitionsError
    │   ├── SourceClosedError
    │   ├── SourceFullError (also an anyio.WouldBlock)
    │   └── SubscriberOverflowError
    └── RuntimeError
        └── AbortExecution
"""

from __future__ import annotations

import anyio


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


# -- recovery (exported by aiowax.recovery) -----------------------------------


class RecoveryError(AiowaxError):
    """Base of the errors about a recovery directory."""


class NoPartitionsError(RecoveryError):
    """The recovery directory holds no partition files."""


class MissingPartitionsError(RecoveryError):
    """Some partition files of the recovery directory are missing."""


class InconsistentPartitionsError(RecoveryError):
    """The partition files come from different points in time or setups."""


# -- in-process connectors (exported by aiowax.connectors.inproc) --------------


class SourceClosedError(AiowaxError):
    """The source was closed (or its flow ended): it takes no more items."""


class SourceFullError(AiowaxError, anyio.WouldBlock):
    """`PushSource.send_nowait` found the buffer full: the flow is behind."""


class SubscriberOverflowError(AiowaxError):
    """A subscriber fell further behind than its buffer and was disconnected."""
