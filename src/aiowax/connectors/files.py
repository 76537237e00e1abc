"""Local files as sources and sinks: lines, CSV rows, directories of files.

Reads and writes run in worker threads, a batch at a time, so the event loop
never waits on the disk. Positions are byte offsets, so every connector here
resumes where the last committed epoch left it.
"""

from aiowax._connectors.files import CSVSource, DirSink, DirSource, FileSink, FileSource
from aiowax._util import fixup_module_metadata

__all__ = ["CSVSource", "DirSink", "DirSource", "FileSink", "FileSource"]

fixup_module_metadata(__name__, __all__, globals())
