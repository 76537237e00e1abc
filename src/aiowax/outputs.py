"""Where items go: the sink interfaces.

Implement `FixedPartitionedSink` for an output made of named, resumable
partitions, or `DynamicSink` for one built on every worker. Every
``write_batch`` may be ``async def``.

Bytewax 0.17.2's names are here too: `PartitionedOutput` with `StatefulSink`,
and `DynamicOutput` with `StatelessSink`; their methods have the same
signatures as the method API's.
"""

from aiowax._compat.outputs import (
    DynamicOutput,
    Output,
    PartitionedOutput,
    StatefulSink,
    StatelessSink,
)
from aiowax._definition.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax._util import fixup_module_metadata

__all__ = [
    "DynamicOutput",
    "DynamicSink",
    "FixedPartitionedSink",
    "Output",
    "PartitionedOutput",
    "Sink",
    "StatefulSink",
    "StatefulSinkPartition",
    "StatelessSink",
    "StatelessSinkPartition",
]

fixup_module_metadata(__name__, __all__, globals())
