"""Local files as sources and sinks: lines, CSV rows, directories of files.

In a flow, reads and writes run in worker threads, a batch at a time, so the
event loop never waits on the disk. The partitions' own methods are
synchronous, as the reference's: ``part.next_batch(sched)`` returns a list
and raises `StopIteration` at the end of the file, ``part.write_batch(items)``
has written (and fsynced) them when it returns, so a test can drive a
partition by hand. Positions are byte offsets, so every connector here
resumes where the last committed epoch left it.

A source's position (a `FilePosition`) also names the file it was taken in,
so a resumed run notices a file that was replaced meanwhile (log rotation, a
regenerated export) instead of reading it from the old offset: it raises
`FileReplacedError`, or reads the new file from its start if the source was
made with ``on_replaced="restart"``.

Source partitions are named ``f"{fs_id}::{path}"`` (``fs_id`` from the
sources' ``get_fs_id``, by default the directory's device id), as in the
reference. Older aiowax versions named them by the bare path: positions a
recovery directory holds under those names match no partition now, and
aiowax refuses to resume with them (`aiowax.recovery.UnmatchedSnapshotsError`)
until they are discarded on purpose; the files are then read again from
their start.

`FileInput`, `DirInput`, `CSVInput`, `FileOutput` and `DirOutput` are
Bytewax 0.17.2's names, with its constructors.
"""

from aiowax._compat.connectors import CSVInput, DirInput, DirOutput, FileInput, FileOutput
from aiowax._connectors.files import (
    CSVSource,
    DirSink,
    DirSource,
    FilePosition,
    FileSink,
    FileSource,
)
from aiowax._errors import FileReplacedError
from aiowax._util import fixup_module_metadata

__all__ = [
    "CSVInput",
    "CSVSource",
    "DirInput",
    "DirOutput",
    "DirSink",
    "DirSource",
    "FileInput",
    "FileOutput",
    "FilePosition",
    "FileReplacedError",
    "FileSink",
    "FileSource",
]

fixup_module_metadata(__name__, __all__, globals())
