"""Source interfaces: what a connector implements to feed a dataflow.

Every ``next_batch`` may be a plain method or ``async def``; the runtime
looks once, when it builds the partition, and calls it accordingly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Generic, TypeVar

from aiowax._compat.adapt import refuse_other_shape

X = TypeVar("X")
S = TypeVar("S")


class Source(ABC):  # noqa: B024 - a marker base, like the reference's
    """Base of every input; subclass `FixedPartitionedSource` or `DynamicSource`."""


class StatefulSourcePartition(ABC, Generic[X, S]):
    """One resumable partition of a `FixedPartitionedSource`."""

    @abstractmethod
    def next_batch(self, sched: datetime | None) -> list[X] | Awaitable[list[X]]:
        """Return the next items, possibly none.

        Raise `StopIteration` (or `StopAsyncIteration`) when the partition
        is exhausted. May be ``async def``; an async implementation may wait
        for data, but should return (perhaps an empty list) at least once per
        epoch so that snapshots keep flowing.

        Args:
            sched: The time `next_awake` asked to be woken at, or ``None``.
        """

    def next_awake(self) -> datetime | None:
        """Return when `next_batch` should next be called.

        ``None`` means as soon as possible; after an empty batch the runtime
        then backs off a little so an idle source does not spin.
        """
        return None

    @abstractmethod
    def snapshot(self) -> S:
        """Return the position to resume from, taken right after a batch."""

    def close(self) -> Awaitable[None] | None:
        """Release resources; called once when the partition stops (may be async)."""


class FixedPartitionedSource(Source, Generic[X, S]):
    """An input made of named partitions, each read by exactly one worker."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "_aiowax_legacy_shape", False):
            refuse_other_shape(
                cls,
                "build_part",
                "now, for_part, resume_state",
                "add `now` first, or subclass aiowax.inputs.PartitionedInput, "
                "which takes Bytewax 0.17.2's build_part(for_part, resume_state)",
            )

    @abstractmethod
    def list_parts(self) -> list[str]:
        """Return the names of every partition of this input."""

    @abstractmethod
    def build_part(
        self, now: datetime, for_part: str, resume_state: S | None
    ) -> StatefulSourcePartition[X, S]:
        """Build the partition named ``for_part``.

        Args:
            now: The current time (UTC).
            for_part: One of the names from `list_parts`.
            resume_state: What the partition's `snapshot` returned at the last
                committed epoch, or ``None`` on a fresh start.
        """


class StatelessSourcePartition(ABC, Generic[X]):
    """A partition of a `DynamicSource`: no position to resume from."""

    @abstractmethod
    def next_batch(self, sched: datetime | None) -> list[X] | Awaitable[list[X]]:
        """Return the next items; see `StatefulSourcePartition.next_batch`."""

    def next_awake(self) -> datetime | None:
        """Return when `next_batch` should next be called (``None``: now)."""
        return None

    def close(self) -> Awaitable[None] | None:
        """Release resources; called once when the partition stops (may be async)."""


class DynamicSource(Source, Generic[X]):
    """An input built once on every worker."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "_aiowax_legacy_shape", False):
            refuse_other_shape(
                cls,
                "build",
                "now, worker_index, worker_count",
                "add `now` first (a sink's build has none; a source's has), or subclass "
                "aiowax.inputs.DynamicInput, which takes Bytewax 0.17.2's "
                "build(worker_index, worker_count)",
            )

    @abstractmethod
    def build(
        self, now: datetime, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[X]:
        """Build this worker's partition.

        Args:
            now: The current time (UTC).
            worker_index: Index of the worker building it, from 0.
            worker_count: Number of workers in the execution.
        """
