"""Where items go: the sink interfaces.

Implement `FixedPartitionedSink` for an output made of named, resumable
partitions, or `DynamicSink` for one built on every worker. Every
``write_batch`` may be ``async def``.
"""

from aiowax._definition.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax._util import fixup_module_metadata

__all__ = [
    "DynamicSink",
    "FixedPartitionedSink",
    "Sink",
    "StatefulSinkPartition",
    "StatelessSinkPartition",
]

fixup_module_metadata(__name__, __all__, globals())
