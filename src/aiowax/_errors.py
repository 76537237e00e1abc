"""The exception tree of aiowax: every public exception class is defined here.

User exceptions raised inside a step keep their own type and get a note
naming the step; only problems that aiowax itself detects use these classes.
Each class is re-exported by the public module its users import it from
(``aiowax``, ``aiowax.inputs``, ``aiowax.recovery``,
``aiowax.connectors.inproc``, ``aiowax.connectors.files``,
``aiowax.connectors.kafka``), and reports
that module as its ``__module__`` (see `aiowax._util.fixup_module_metadata`).

    Exception
    ├── AiowaxError
    │   ├── FlowDefinitionError (also a ValueError)
    │   ├── RecoveryError
    │   │   ├── NoPartitionsError
    │   │   ├── MissingPartitionsError
    │   │   ├── InconsistentPartitionsError
    │   │   ├── RecoveryLockedError
    │   │   ├── RecoveryPermissionError (also a PermissionError)
    │   │   └── UnmatchedSnapshotsError
    │   ├── FileReplacedError (also a ValueError)
    │   ├── KafkaConnectorError (also a RuntimeError)
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

    Nothing is closed and no final snapshot is taken, as after a crash, and
    the run returns without raising it (as in the reference);
    ``TestingSource.ABORT()`` raises it to rehearse recovery.
    """


# -- recovery (exported by aiowax.recovery) -----------------------------------


class RecoveryError(AiowaxError):
    """Base of the errors about a recovery directory."""


class NoPartitionsError(RecoveryError, FileNotFoundError):
    """The recovery directory holds no partition files (or does not exist).

    A `FileNotFoundError` too, as in Bytewax: code written for it catches it.
    """


class MissingPartitionsError(RecoveryError, FileNotFoundError):
    """Some partition files of the recovery directory are missing (a `FileNotFoundError`)."""


class InconsistentPartitionsError(RecoveryError, ValueError):
    """The partition files come from different points in time or setups (a `ValueError`)."""


class RecoveryLockedError(RecoveryError):
    """Another run, in this process or another, is using the recovery directory.

    Two runs committing into one directory would leave a mix of their
    snapshots for the next resume, so a run holds a lock on the directory
    while it runs; the message names the holder (pid and host).
    """


class RecoveryPermissionError(RecoveryError, PermissionError):
    """This process may not read or write the recovery directory or its files.

    It is also a ``PermissionError``. The files themselves may be fine: fix
    the owner or the mode (or the mount) rather than re-creating them.
    """


class UnmatchedSnapshotsError(RecoveryError):
    """Snapshots in the recovery directory match no step or partition of the flow.

    A step or a partition was renamed (or removed) since they were taken.
    Resuming would ignore them while restoring the rest; rename it back, or
    run once with ``RecoveryConfig(..., discard_unmatched=True)`` to drop
    them on purpose.
    """


# -- in-process connectors (exported by aiowax.connectors.inproc) --------------


class SourceClosedError(AiowaxError):
    """The source was closed (or its flow ended): it takes no more items."""


class SourceFullError(AiowaxError, anyio.WouldBlock):
    """`PushSource.send_nowait` found the buffer full: the flow is behind."""


class SubscriberOverflowError(AiowaxError):
    """A subscriber fell further behind than its buffer and was disconnected."""


class FlowFailedError(AiowaxError):
    """The flow writing to a `BroadcastSink` failed.

    A reader gets it after every item the sink was given before the failure;
    the flow's own error is its ``__cause__``.
    """


# -- file connectors (exported by aiowax.connectors.files) --------------------


class FileReplacedError(AiowaxError, ValueError):
    """A file source or sink cannot resume: the file is not the one its position was taken in.

    A rotated log or a regenerated export, for instance, or a sink's
    relative path resumed from another working directory (the sink then
    leaves the file as it is); the message names the file, says what
    changed and how to go on. It is also a ``ValueError``, as `FileSink`'s
    refusal of a file shorter than its position is.
    """


# -- Kafka connectors (exported by aiowax.connectors.kafka) -------------------


class KafkaConnectorError(AiowaxError, RuntimeError):
    """A Kafka source or sink cannot go on: its message names the topic (and partition).

    Raised for brokers that cannot be reached within the source's
    ``timeout``, a topic the brokers do not know, a fatal client error or
    one that persists past the ``timeout``, and a message the sink could not
    deliver. It is also a ``RuntimeError``, as the reference's errors were.
    """


class ClusterError(AiowaxError):
    """Cluster mode cannot run this flow, or its Kafka topics do not fit it.

    Raised before anything runs, naming the step, source or topic at fault:
    a source or sink kind cluster mode cannot share out, an internal topic
    whose partition count changed since the last start, an app id or step
    id that cannot name a Kafka topic.

    Attributes:
        before_run: True when the copy refused to start (nothing of the flow
            ran); False for an error of a running copy.
    """

    before_run: bool = False
