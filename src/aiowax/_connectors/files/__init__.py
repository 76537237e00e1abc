r"""Sources and sinks over local files: lines, CSV rows, directories of files.

The partitions' public methods are synchronous, as the reference's:
``next_batch`` returns a list (and raises `StopIteration` at the end of the
file, as bytewax's file sources do), and ``write_batch`` has written and
fsynced its values when it returns, so a test can drive a partition by hand.
A flow does not call them: each partition also has a private async twin,
``_aiowax_anext_batch(sched)`` (raising `StopAsyncIteration` at the end) or
``_aiowax_awrite_batch(values)``, that does the same work in a worker thread
(``aiowax._engine.clock.run_in_thread``), a whole batch per hop, so a large
file never blocks the event loop. The engine prefers these hooks whenever a
partition has them (``aiowax._engine.lanes._next_batch_method`` and
``aiowax._engine.ops.output._write_method``); they are not public API.

Positions are byte offsets: a source resumes after the last line (or CSV
record) it handed out, and a sink truncates its file back to the last
committed offset before it writes again, so a resumed run does not duplicate
output past the last committed epoch.

A source's position also records which file it was taken in: its device and
inode, its size, and a hash of its first and last 4 KiB before the offset.
On resume the file at the path must still hold those bytes, or the source
refuses to go on (`FileReplacedError`) or, if asked, reads it again from the
start: a rotated log or a regenerated export is a different file, and its
lines do not start at the old offset.

Source partitions are named ``f"{fs_id}::{path}"``, where ``fs_id`` comes
from ``get_fs_id`` (by default the device id of the directory), as in the
reference, so that equal paths on different disks are different partitions.

Text is UTF-8. Lines end at ``"\n"``, ``"\r\n"`` or a lone ``"\r"``
(Python's universal newlines, as the reference reads text files), and come
out without their line break.

The modules: ``checks`` (argument checks), ``text`` (decoding and line
splitting), ``names`` (partition names), ``positions`` (`FilePosition`, and
how a replaced file is told apart), ``offset_partition`` (the reading base
of the source partitions), ``sources`` and ``sinks``.
"""

from aiowax._connectors.files.checks import OnReplaced
from aiowax._connectors.files.names import _get_path_dev
from aiowax._connectors.files.offset_partition import _OffsetPartition
from aiowax._connectors.files.positions import FilePosition, FileState
from aiowax._connectors.files.sinks import DirSink, FileSink
from aiowax._connectors.files.sources import CSVSource, DirSource, FileSource
from aiowax._connectors.files.text import _split_lines

__all__ = [
    "CSVSource",
    "DirSink",
    "DirSource",
    "FilePosition",
    "FileSink",
    "FileSource",
    "FileState",
    "OnReplaced",
    "_OffsetPartition",
    "_get_path_dev",
    "_split_lines",
]
