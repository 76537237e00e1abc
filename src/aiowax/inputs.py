"""Where items come from: the source interfaces and helpers to write sources.

Implement `FixedPartitionedSource` for an input made of named, resumable
partitions (files, Kafka partitions...), or `DynamicSource` for one that each
worker reads its own way. Every ``next_batch`` may be ``async def``.
"""

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
    "DynamicSource",
    "FixedPartitionedSource",
    "SimplePollingSource",
    "Source",
    "StatefulSourcePartition",
    "StatelessSourcePartition",
    "batch",
    "batch_async",
    "batch_getter",
    "batch_getter_ex",
]

fixup_module_metadata(__name__, __all__, globals())
