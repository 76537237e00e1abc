"""Where items come from: the source interfaces and helpers to write sources.

Implement `FixedPartitionedSource` for an input made of named, resumable
partitions (files, Kafka partitions...), or `DynamicSource` for one that each
worker reads its own way. Every ``next_batch`` may be ``async def``.

Bytewax 0.17.2's names are here too, with 0.17.2's signatures: subclass
`PartitionedInput` (``build_part(for_part, resume_state)``) with a
`StatefulSource` (``next_batch()``), or `DynamicInput` (``build(worker_index,
worker_count)``) with a `StatelessSource`. docs/migration.md says how a
0.17.2 pipeline differs from one of the method API.
"""

from aiowax._compat.inputs import (
    DynamicInput,
    Input,
    PartitionedInput,
    StatefulSource,
    StatelessSource,
)
from aiowax._connectors.batching import batch, batch_async, batch_getter, batch_getter_ex
from aiowax._connectors.polling import SimplePollingSource
from aiowax._definition.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax._errors import AbortExecution
from aiowax._util import fixup_module_metadata

__all__ = [
    "AbortExecution",
    "DynamicInput",
    "DynamicSource",
    "FixedPartitionedSource",
    "Input",
    "PartitionedInput",
    "SimplePollingSource",
    "Source",
    "StatefulSource",
    "StatefulSourcePartition",
    "StatelessSource",
    "StatelessSourcePartition",
    "batch",
    "batch_async",
    "batch_getter",
    "batch_getter_ex",
]

fixup_module_metadata(__name__, __all__, globals())
