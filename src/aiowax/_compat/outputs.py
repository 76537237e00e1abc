"""Bytewax 0.17.2's output interfaces: `PartitionedOutput`, `DynamicOutput` and their sinks.

0.17.2's sinks already had the method API's signatures, so these are the
method API's classes under 0.17.2's names, with 0.17.2's defaults where they
differ: `PartitionedOutput.part_fn` hashes with Adler-32 (the method API's
default is CRC-32), so keys land in the same partitions as with 0.17.2, and
`StatefulSink.snapshot` is optional.
"""

from __future__ import annotations

from typing import Any
from zlib import adler32

from aiowax._definition.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)


class Output(Sink):
    """Base of Bytewax 0.17.2's outputs; subclass `PartitionedOutput` or `DynamicOutput`."""


class StatefulSink(StatefulSinkPartition[Any, Any]):
    """A partition of a `PartitionedOutput`, in Bytewax 0.17.2's shape.

    Implement ``write_batch(values)``; `snapshot` returns ``None`` unless
    overridden, as in 0.17.2.
    """

    def snapshot(self) -> Any:
        """Return what this partition needs to resume after the last write (``None``)."""
        return None


class StatelessSink(StatelessSinkPartition[Any]):
    """A partition of a `DynamicOutput`: implement ``write_batch(items)``."""


class PartitionedOutput(Output, FixedPartitionedSink[Any, Any]):
    """An output of named, resumable partitions, in Bytewax 0.17.2's shape.

    Implement `list_parts` and ``build_part(for_part, resume_state)``, as in
    `aiowax.outputs.FixedPartitionedSink`.
    """

    def part_fn(self, item_key: str) -> int:
        """Pick the partition index for a key: Adler-32 of the key, as 0.17.2."""
        return adler32(item_key.encode())


class DynamicOutput(Output, DynamicSink[Any]):
    """An output built once on every worker: implement ``build(worker_index, worker_count)``."""
