"""Sink interfaces: what a connector implements to receive a dataflow's items.

Every ``write_batch`` may be a plain method or ``async def``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar
from zlib import crc32

from aiowax._compat.adapt import refuse_other_shape

X = TypeVar("X")
V = TypeVar("V")
S = TypeVar("S")


class Sink(ABC):  # noqa: B024 - a marker base, like the reference's
    """Base of every output; subclass `FixedPartitionedSink` or `DynamicSink`."""


class StatefulSinkPartition(ABC, Generic[V, S]):
    """One resumable partition of a `FixedPartitionedSink`."""

    @abstractmethod
    def write_batch(self, values: list[V]) -> Awaitable[None] | None:
        """Write the values routed to this partition, in order."""

    @abstractmethod
    def snapshot(self) -> S:
        """Return what this partition needs to resume after the last write."""

    def close(self) -> Awaitable[None] | None:
        """Release resources; called once when the partition stops (may be async)."""


class FixedPartitionedSink(Sink, Generic[V, S]):
    """An output made of named partitions; items are ``(key, value)`` pairs.

    Each item goes to the partition ``part_fn(key)`` picks, and its value is
    what that partition writes.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_other_shape(
            cls,
            "build_part",
            "for_part, resume_state",
            "a sink's build_part takes no `now` (a source's does)",
        )

    @abstractmethod
    def list_parts(self) -> list[str]:
        """Return the names of every partition of this output."""

    def part_fn(self, item_key: str) -> int:
        """Pick the partition index for a key (taken modulo the part count).

        The default is a CRC-32 of the UTF-8 key: stable across processes
        and runs, unlike the salted built-in ``hash``.
        """
        return crc32(item_key.encode("utf-8", "surrogatepass"))

    @abstractmethod
    def build_part(self, for_part: str, resume_state: S | None) -> StatefulSinkPartition[V, S]:
        """Build the partition named ``for_part``, resuming from its snapshot."""


class StatelessSinkPartition(ABC, Generic[X]):
    """A partition of a `DynamicSink`."""

    @abstractmethod
    def write_batch(self, items: list[X]) -> Awaitable[None] | None:
        """Write items, in order."""

    def close(self) -> Awaitable[None] | None:
        """Release resources; called once when the partition stops (may be async)."""


class DynamicSink(Sink, Generic[X]):
    """An output built once on every worker."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_other_shape(
            cls,
            "build",
            "worker_index, worker_count",
            "a sink's build takes no `now` (a source's does)",
        )

    @abstractmethod
    def build(self, worker_index: int, worker_count: int) -> StatelessSinkPartition[X]:
        """Build this worker's partition."""
