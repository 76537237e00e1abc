"""Bytewax 0.17.2's `TestingInput` and `TestingOutput`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from aiowax._compat.inputs import PartitionedInput
from aiowax._compat.outputs import DynamicOutput
from aiowax._testing.sources import TestingSink, TestingSource, _IterPartition


class _IterPartition0172(_IterPartition):
    # 0.17.2 tests drive a partition by hand with ``part.next_batch()``.
    def next_batch(self, sched: datetime | None = None) -> list[Any]:
        return super().next_batch(sched)


class TestingInput(PartitionedInput, TestingSource):
    """Bytewax 0.17.2's name for `aiowax.testing.TestingSource`.

    Items of an in-memory iterable, ``batch_size`` at a time, read by one
    worker; its partition is built with 0.17.2's
    ``build_part(for_part, resume_state)``.

    Args:
        ib: The items; read once, so a generator works.
        batch_size: Items per batch.
    """

    __test__ = False  # keep pytest from collecting this class

    def __init__(self, ib: Iterable[Any], batch_size: int = 1) -> None:
        TestingSource.__init__(self, ib, batch_size)

    def list_parts(self) -> list[str]:
        """Return the one partition, ``"iterable"``."""
        return TestingSource.list_parts(self)

    def build_part(self, for_part: str, resume_state: int | None) -> _IterPartition0172:  # type: ignore[override]
        """Build the partition, skipping the ``resume_state`` items already read."""
        return _IterPartition0172(self._ib, self._batch_size, resume_state)


class TestingOutput(DynamicOutput, TestingSink):
    """Bytewax 0.17.2's name for `aiowax.testing.TestingSink`: append items to a list.

    Args:
        ls: The list to append to (shared by all workers).
    """

    __test__ = False  # keep pytest from collecting this class

    def __init__(self, ls: list[Any]) -> None:
        TestingSink.__init__(self, ls)
