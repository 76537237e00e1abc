"""Bytewax 0.17.2's input interfaces: `PartitionedInput`, `DynamicInput` and their sources.

They are the method API's `FixedPartitionedSource`, `DynamicSource` and
partitions under 0.17.2's names and signatures: a subclass written for
0.17.2 (``build_part(for_part, resume_state)``, ``build(worker_index,
worker_count)``, ``next_batch()``) runs as it is. Every input class of the
0.17.2 API derives from `Input`, which is also how a flow tells a 0.17.2
pipeline from one of the method API (its window steps then emit 0.17.2's
``(key, value)``; see `aiowax._definition.steps.WindowStep`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from aiowax._compat.adapt import accept_engine_now
from aiowax._definition.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)


class Input(Source):
    """Base of Bytewax 0.17.2's inputs; subclass `PartitionedInput` or `DynamicInput`.

    A pipeline that starts with an `Input` is run with 0.17.2's semantics
    where they differ from the method API's: its window steps emit
    ``(key, value)``, without the `aiowax.window.WindowMetadata`, and its
    ``inspect_worker`` calls ``inspector(worker_index, item)``.
    """


class StatefulSource(StatefulSourcePartition[Any, Any]):
    """A partition of a `PartitionedInput`, in Bytewax 0.17.2's shape.

    Implement `next_batch` (no ``sched`` argument) and `snapshot`; `next_awake`
    and `close` are optional. It is a
    `aiowax.inputs.StatefulSourcePartition`, so the method API's shape
    (``next_batch(sched)``, ``async def``) works here too.
    """

    @abstractmethod
    def next_batch(self) -> list[Any] | Awaitable[list[Any]]:  # type: ignore[override]
        """Return the next items, possibly none; raise `StopIteration` at the end."""

    def next_awake(self) -> datetime | None:
        """Return when `next_batch` should next be called (``None``: now)."""
        return None

    @abstractmethod
    def snapshot(self) -> Any:
        """Return the position to resume from, after the last item returned."""

    def close(self) -> Awaitable[None] | None:
        """Release resources when the partition stops."""
        return None


class StatelessSource(StatelessSourcePartition[Any]):
    """A partition of a `DynamicInput`, in Bytewax 0.17.2's shape.

    Implement `next_batch` (no ``sched`` argument); `next_awake` and `close`
    are optional.
    """

    @abstractmethod
    def next_batch(self) -> list[Any] | Awaitable[list[Any]]:  # type: ignore[override]
        """Return the next items, possibly none; raise `StopIteration` at the end."""

    def next_awake(self) -> datetime | None:
        """Return when `next_batch` should next be called (``None``: now)."""
        return None

    def close(self) -> Awaitable[None] | None:
        """Release resources when the partition stops."""
        return None


class PartitionedInput(Input, FixedPartitionedSource[Any, Any]):
    """An input of named, resumable partitions, in Bytewax 0.17.2's shape.

    Implement `list_parts` and ``build_part(for_part, resume_state)``,
    without the ``now`` argument of
    `aiowax.inputs.FixedPartitionedSource.build_part`: the method is adapted
    once, when the subclass is created, so the engine can call it. A
    ``build_part(now, for_part, resume_state)`` is called as it is.
    """

    #: Its subclasses take 0.17.2's shape (adapted), not the method API's only.
    _aiowax_legacy_shape = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        accept_engine_now(cls, "build_part", legacy_params=2)

    @abstractmethod
    def list_parts(self) -> list[str]:
        """Return the names of the partitions (a set is accepted too)."""

    @abstractmethod
    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: Any | None
    ) -> StatefulSourcePartition[Any, Any] | Awaitable[StatefulSourcePartition[Any, Any]]:
        """Build the partition named ``for_part``.

        Args:
            for_part: One of the names from `list_parts`.
            resume_state: What the partition's ``snapshot`` returned at the
                last committed epoch, or ``None`` on a fresh start.
        """


class DynamicInput(Input, DynamicSource[Any]):
    """An input built once on every worker, in Bytewax 0.17.2's shape.

    Implement ``build(worker_index, worker_count)``, without the ``now``
    argument of `aiowax.inputs.DynamicSource.build`; it is adapted as
    `PartitionedInput.build_part` is.
    """

    #: Its subclasses take 0.17.2's shape (adapted), not the method API's only.
    _aiowax_legacy_shape = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        accept_engine_now(cls, "build", legacy_params=2)

    @abstractmethod
    def build(  # type: ignore[override]
        self, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[Any] | Awaitable[StatelessSourcePartition[Any]]:
        """Build this worker's partition.

        Args:
            worker_index: Index of the worker building it, from 0.
            worker_count: Number of workers in the execution.
        """
