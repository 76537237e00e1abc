"""Bytewax 0.17.2's connectors: stdout, files, and the polling input.

Each is the method API's connector under its 0.17.2 name and constructor,
and also a 0.17.2 `PartitionedInput` (or `DynamicOutput`...), so a subclass
written for 0.17.2 that overrides ``build_part(for_part, resume_state)`` and
calls ``super()`` keeps working. They read, write and resume as the method
API's connectors do; docs/migration.md lists where that differs from 0.17.2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Set
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiowax._compat.adapt import build_now
from aiowax._compat.inputs import PartitionedInput
from aiowax._compat.outputs import DynamicOutput, PartitionedOutput
from aiowax._connectors.files import (
    CSVSource,
    DirSink,
    DirSource,
    FileSink,
    FileSource,
    FileState,
)
from aiowax._connectors.files.sinks import _default_assign_file, _default_file_namer
from aiowax._connectors.files.sources import _OneFile
from aiowax._connectors.polling import SimplePollingSource
from aiowax._connectors.stdio import StdOutSink
from aiowax._definition.inputs import StatefulSourcePartition
from aiowax._definition.outputs import StatefulSinkPartition

# The file inputs and outputs below forward to the method API's classes by
# naming them (FileSource.list_parts(self)): in the MRO, PartitionedInput's
# abstract 0.17.2-shaped methods come first.


class StdOutput(DynamicOutput, StdOutSink):
    """Bytewax 0.17.2's name for `aiowax.connectors.stdio.StdOutSink`: print every item."""


# 0.17.2's file inputs name their partitions by path, and keep their settings
# in the attributes below: 0.17.2's own CSVInput is a FileInput subclass whose
# build_part reads self._path and self._batch_size, and user code copies that
# pattern (or opens ``for_part`` as the path). The method API's sources name
# partitions f"{fs_id}::{path}"; these classes keep 0.17.2's names and map them.


def _renamed_partition(saved: str, names: Set[str]) -> str | None:
    """The partition a snapshot of an earlier aiowax belongs to: it named it f"{fs_id}::{name}".

    Asked by the engine (as ``_aiowax_partition_moved``) for snapshots that
    match no partition; the file's own check (inode, bytes) still refuses
    a file that was replaced.
    """
    _fs, sep, name = saved.partition("::")
    return name if sep and name in names else None


def _method_api_name(owner: str, part: _OneFile, for_part: str) -> str:
    """The method API's name of the one partition, which 0.17.2 names ``for_part``."""
    if for_part != str(part.path):
        msg = f"{owner}: unknown partition {for_part!r}; the only one is {str(part.path)!r}"
        raise ValueError(msg)
    return part.list_parts()[0]


class FileInput(PartitionedInput, FileSource):
    """Bytewax 0.17.2's name for `aiowax.connectors.files.FileSource`: a file's lines.

    As in 0.17.2, the partition is named by the path as given, and a
    subclass may read ``self._path`` and ``self._batch_size``. Unlike
    0.17.2, a missing file is an error (`FileNotFoundError`) rather than an
    input with no partition.

    Args:
        path: The file to read.
        batch_size: Lines per batch.
    """

    _aiowax_partition_moved = staticmethod(_renamed_partition)

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 1000) -> None:
        FileSource.__init__(self, path, batch_size)
        self._path: Path = self._part.path
        self._batch_size: int = self._part.batch_size

    def list_parts(self) -> list[str]:
        """Return the one partition: the path, as given."""
        return [str(self._path)]

    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """Open the file to read on from ``resume_state``, or from its start."""
        name = _method_api_name("FileInput", self._part, for_part)
        return FileSource.build_part(self, build_now(), name, resume_state)


class DirInput(PartitionedInput, DirSource):
    """Bytewax 0.17.2's name for `aiowax.connectors.files.DirSource`: a directory's files.

    As in 0.17.2, each file's partition is named by its path relative to
    the directory, and a subclass may read ``self._dir_path``,
    ``self._glob_pat`` and ``self._batch_size``.

    Args:
        dir_path: The directory; it must exist.
        glob_pat: Which files to read, as for `pathlib.Path.glob`.
        batch_size: Lines per batch.
    """

    _aiowax_partition_moved = staticmethod(_renamed_partition)

    def __init__(
        self, dir_path: str | os.PathLike[str], glob_pat: str = "*", batch_size: int = 1000
    ) -> None:
        DirSource.__init__(self, dir_path, glob_pat, batch_size)

    def list_parts(self) -> list[str]:
        """Return each matching file's path relative to the directory, sorted."""
        return [name.partition("::")[2] for name in DirSource.list_parts(self)]

    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """Open one file of the directory to read on from ``resume_state``."""
        if not for_part:
            where = str(self._dir_path)
            msg = f"DirInput: unknown partition ''; partitions are paths relative to {where!r}"
            raise ValueError(msg)
        return self._open_file(for_part, resume_state)


class CSVInput(PartitionedInput, CSVSource):
    """Bytewax 0.17.2's name for `aiowax.connectors.files.CSVSource`: a CSV file's rows as dicts.

    As in 0.17.2, the partition is named by the path as given, and a
    subclass may read ``self._path``, ``self._batch_size`` and
    ``self._fmtparams``.

    Args:
        path: The file to read.
        batch_size: Rows per batch.
        **fmtparams: Passed to `csv.DictReader` (``delimiter``, ``quotechar``...).
    """

    _aiowax_partition_moved = staticmethod(_renamed_partition)

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int = 1000, **fmtparams: Any
    ) -> None:
        CSVSource.__init__(self, path, batch_size, **fmtparams)
        self._path: Path = self._part.path
        self._batch_size: int = self._part.batch_size

    def list_parts(self) -> list[str]:
        """Return the one partition: the path, as given."""
        return [str(self._path)]

    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[dict[str, Any], FileState]:
        """Open the file to read on after the record ending at ``resume_state``."""
        name = _method_api_name("CSVInput", self._part, for_part)
        return CSVSource.build_part(self, build_now(), name, resume_state)


class FileOutput(PartitionedOutput, FileSink):
    """Bytewax 0.17.2's name for `aiowax.connectors.files.FileSink`.

    Writes the values of ``(key, value)`` items to one file, one per line.

    Args:
        path: The file to write; its directory must exist.
        end: Written after each value.
    """

    def __init__(self, path: str | os.PathLike[str], end: str = "\n") -> None:
        FileSink.__init__(self, path, end)

    def list_parts(self) -> list[str]:
        """Return the one partition: the path."""
        return FileSink.list_parts(self)

    def part_fn(self, item_key: str) -> int:
        """Send every item to the one partition."""
        return 0

    def build_part(
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSinkPartition[Any, FileState]:
        """Open the file, truncated to ``resume_state``'s offset (0 on a fresh start)."""
        return FileSink.build_part(self, for_part, resume_state)


class DirOutput(PartitionedOutput, DirSink):
    """Bytewax 0.17.2's name for `aiowax.connectors.files.DirSink`.

    Writes the values of ``(key, value)`` items to ``file_count`` files of a
    directory, picked by ``assign_file(key)``.

    Args:
        dir_path: The directory; it must exist when the flow runs.
        file_count: How many files.
        file_namer: ``file_namer(index, file_count)`` names a file.
        assign_file: ``assign_file(key)`` picks a file's index.
        end: Written after each value.
    """

    def __init__(
        self,
        dir_path: str | os.PathLike[str],
        file_count: int,
        file_namer: Callable[[int, int], str] = _default_file_namer,
        assign_file: Callable[[str], int] = _default_assign_file,
        end: str = "\n",
    ) -> None:
        DirSink.__init__(self, dir_path, file_count, file_namer, assign_file, end)

    def list_parts(self) -> list[str]:
        """Return the file names, in index order."""
        return DirSink.list_parts(self)

    def part_fn(self, item_key: str) -> int:
        """Pick the file for a key with ``assign_file``."""
        return DirSink.part_fn(self, item_key)

    def build_part(
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSinkPartition[Any, FileState]:
        """Open one file, truncated to ``resume_state``'s offset (0 on a fresh start)."""
        return DirSink.build_part(self, for_part, resume_state)


class SimplePollingInput(PartitionedInput, SimplePollingSource[Any]):
    """Bytewax 0.17.2's name for `aiowax.inputs.SimplePollingSource`.

    Subclass it and implement ``next_item()``, called once every
    ``interval``. Unlike 0.17.2, ``align_to`` is honoured, and a ``None``
    from ``next_item`` means "nothing this time" rather than a ``None`` item.

    Args:
        interval: Time between calls; at least 10 ms, as in 0.17.2.
        align_to: If given, calls happen at ``align_to + k * interval``.

    Raises:
        ValueError: ``interval`` is shorter than 10 ms.
    """

    def __init__(self, interval: timedelta, align_to: datetime | None = None) -> None:
        if isinstance(interval, timedelta) and interval < timedelta(milliseconds=10):
            msg = f"SimplePollingInput: interval must be at least 10 ms, got {interval}"
            raise ValueError(msg)
        SimplePollingSource.__init__(self, interval, align_to)

    def list_parts(self) -> list[str]:
        """Return the one partition, ``"singleton"``."""
        return SimplePollingSource.list_parts(self)

    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[Any, None]:
        """Build the partition that calls ``next_item`` on schedule."""
        return SimplePollingSource.build_part(self, build_now(), for_part, resume_state)
