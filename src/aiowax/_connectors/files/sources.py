"""The file sources: `FileSource`, `DirSource`, `CSVSource`, and their partitions."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from aiowax._checks import callable_arg, non_empty_str, positive_int
from aiowax._connectors.files.checks import OnReplaced, _check_on_replaced, _check_path
from aiowax._connectors.files.names import _fs_id, _get_path_dev, _moved_partition
from aiowax._connectors.files.offset_partition import FileSettings, _OffsetPartition
from aiowax._connectors.files.positions import FileState
from aiowax._connectors.files.text import _note_position, _RawLines, _split_lines
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition


class _OneFile:
    """The single partition of `FileSource` and `CSVSource`, ``f"{fs_id}::{path}"``.

    It also holds the settings both sources check alike (``path``,
    ``batch_size``, ``get_fs_id``, ``on_replaced``, in that order).
    """

    def __init__(
        self,
        owner: str,
        path: str | os.PathLike[str],
        batch_size: int,
        get_fs_id: Callable[[Path], str],
        on_replaced: OnReplaced,
    ) -> None:
        self.owner = owner
        self.path = _check_path(owner, "path", path)
        self.batch_size = positive_int(owner, "batch_size", batch_size)
        callable_arg(owner, "get_fs_id", get_fs_id)
        self._get_fs_id = get_fs_id
        self.on_replaced = _check_on_replaced(owner, on_replaced)
        self._name: str | None = None

    def list_parts(self) -> list[str]:
        # Asked once per run: the id is of the disk the file is on now.
        fs_id = _fs_id(self.owner, self._get_fs_id, self.path.parent)
        self._name = f"{fs_id}::{self.path}"
        return [self._name]

    def settings(self) -> FileSettings:
        """What its partition reads."""
        return FileSettings(self.owner, self.path, self.batch_size, self.on_replaced)

    def check(self, for_part: str) -> None:
        name = self._name if self._name is not None else self.list_parts()[0]
        if for_part != name:
            msg = f"{self.owner}: unknown partition {for_part!r}; the only one is {name!r}"
            raise ValueError(msg)


class _LinePartition(_OffsetPartition[str]):
    """The lines of one file."""

    def _read(self, start: int) -> tuple[list[str], int]:
        f = self._f
        # A read abandoned by a cancellation may have moved the file past
        # the committed offset: always start from the committed one.
        if f.tell() != start:
            f.seek(start)
        # Binary lines end at b"\n", so "\r\n" never straddles two batches.
        raw = list(islice(f, self._batch_size))
        if not raw:
            return [], start
        data = b"".join(raw)
        try:
            lines = _split_lines(data)
        except UnicodeDecodeError as error:
            _note_position(error, self._path, start + error.start)
            raise
        return lines, start + len(data)


class FileSource(FixedPartitionedSource[str, FileState]):
    r"""Read a text file line by line, without the line breaks.

    The file is one partition, named ``f"{fs_id}::{path}"``, so one worker
    reads it. Lines are decoded as UTF-8 and split at ``"\n"``, ``"\r\n"``
    or ``"\r"``.

    The snapshot is a `FilePosition`: the byte offset after the last line
    handed out, so a resumed run continues with the next line, and what
    identifies the file there (device and inode, size, a hash of the first
    and the last 4 KiB before the offset). A resumed run first checks that
    the file at ``path`` still holds the bytes read: after a log rotation or
    a regenerated export it does not, and the new file's lines do not start
    at the old offset. What then happens is ``on_replaced``'s choice. The
    same file grown by appends, or a copy of it (restored from a backup,
    moved to another disk: another inode, the same bytes), resumes as
    usual. Only those 8 KiB are compared, so an edit between them that
    keeps the size goes unnoticed. A plain int offset, as saved by aiowax
    before positions named their file, resumes as before; only a file now
    shorter than that offset counts as replaced.

    Older aiowax versions named the partition by the bare path. Positions a
    recovery directory holds under that name match no partition now: aiowax
    refuses to resume with them (`aiowax.recovery.UnmatchedSnapshotsError`)
    until they are discarded on purpose, and the file is then read again
    from its start.

    Args:
        path: The file to read. A missing file raises `FileNotFoundError`
            when the partition is built.
        batch_size: Lines per batch, read in one hop to a worker thread.
        get_fs_id: Called with the file's directory when the flow starts;
            returns an id of its filesystem, the same on every run, without
            ``"::"``. Defaults to the device id (``st_dev``, in hex). The
            partition's name, under which recovery stores its position,
            includes it; if the device id is not stable (a network or
            container filesystem that gets a new one when remounted), return
            a constant: ``lambda _dir: "shared"``.
        on_replaced: What to do on resume if the file is not the one the
            saved position was taken in: ``"error"`` (the default) raises
            `FileReplacedError`, naming the file and what changed;
            ``"restart"`` logs a warning and reads the file from its start.

    Raises:
        ValueError: ``on_replaced`` is not ``"error"`` or ``"restart"``.
    """

    _aiowax_partition_moved = staticmethod(_moved_partition)

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 1000,
        get_fs_id: Callable[[Path], str] = _get_path_dev,
        *,
        on_replaced: OnReplaced = "error",
    ) -> None:
        self._part = _OneFile("FileSource", path, batch_size, get_fs_id, on_replaced)

    def list_parts(self) -> list[str]:
        """Return the one partition: ``f"{fs_id}::{path}"``."""
        return self._part.list_parts()

    def build_part(
        self, now: datetime, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """Open the file to read on from ``resume_state``, or from its start."""
        part = self._part
        part.check(for_part)
        return _LinePartition(part.settings(), resume_state)


class DirSource(FixedPartitionedSource[str, FileState]):
    """Read every matching file of a directory line by line.

    Each file is a partition, named ``f"{fs_id}::{relative_path}"`` (sorted
    by path), so each file is read by exactly one worker and lines of
    different files interleave. Lines, positions, the check on resume and
    the partition names of older versions are as with `FileSource`.

    Args:
        dir_path: The directory; it must exist.
        glob_pat: Which files to read, as for `pathlib.Path.glob` (``"**/*"``
            descends into subdirectories). Directories that match are skipped.
        batch_size: Lines per batch.
        get_fs_id: Called with ``dir_path`` when the flow starts; as for
            `FileSource`.
        on_replaced: As for `FileSource`, per file.

    Raises:
        ValueError: ``dir_path`` does not exist or is not a directory, or
            ``on_replaced`` is not ``"error"`` or ``"restart"``.
    """

    _aiowax_partition_moved = staticmethod(_moved_partition)

    def __init__(
        self,
        dir_path: str | os.PathLike[str],
        glob_pat: str = "*",
        batch_size: int = 1000,
        get_fs_id: Callable[[Path], str] = _get_path_dev,
        *,
        on_replaced: OnReplaced = "error",
    ) -> None:
        self._dir_path = _check_path("DirSource", "dir_path", dir_path)
        self._glob_pat = non_empty_str("DirSource", "glob_pat", glob_pat)
        self._batch_size = positive_int("DirSource", "batch_size", batch_size)
        self._get_fs_id = callable_arg("DirSource", "get_fs_id", get_fs_id)
        self._on_replaced = _check_on_replaced("DirSource", on_replaced)
        self._fs_id: str | None = None
        if not self._dir_path.exists():
            msg = f"DirSource: input directory {str(self._dir_path)!r} does not exist"
            raise ValueError(msg)
        if not self._dir_path.is_dir():
            msg = f"DirSource: input path {str(self._dir_path)!r} is not a directory"
            raise ValueError(msg)

    def list_parts(self) -> list[str]:
        """Return ``f"{fs_id}::{relative_path}"`` for each matching file, sorted by path."""
        # Asked once per run: the id is of the disk the directory is on now.
        fs_id = self._fs_id = _fs_id("DirSource", self._get_fs_id, self._dir_path)
        paths = sorted(
            path.relative_to(self._dir_path).as_posix()
            for path in self._dir_path.glob(self._glob_pat)
            if path.is_file()
        )
        return [f"{fs_id}::{path}" for path in paths]

    def build_part(
        self, now: datetime, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """Open one file of the directory to read on from ``resume_state``."""
        if self._fs_id is None:
            self._fs_id = _fs_id("DirSource", self._get_fs_id, self._dir_path)
        fs_id, sep, relative = for_part.partition("::")
        if not sep or fs_id != self._fs_id or not relative:
            msg = (
                f"DirSource: unknown partition {for_part!r}; partitions are named "
                f"'{self._fs_id}::<path relative to {str(self._dir_path)!r}>'"
            )
            raise ValueError(msg)
        return self._open_file(relative, resume_state)

    def _open_file(
        self, relative: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """The partition of the file at ``relative`` in the directory."""
        settings = FileSettings(
            "DirSource", self._dir_path / relative, self._batch_size, self._on_replaced
        )
        return _LinePartition(settings, resume_state)


class _CSVPartition(_OffsetPartition[dict[str, Any]]):
    def __init__(
        self, settings: FileSettings, resume_state: object, fmtparams: dict[str, Any]
    ) -> None:
        super().__init__(settings, resume_state)
        self._lines = _RawLines(self._f)
        self._reader = csv.DictReader(self._lines, **fmtparams)
        self._header_read = False

    def _read(self, start: int) -> tuple[list[dict[str, Any]], int]:
        lines = self._lines
        try:
            if not self._header_read:
                # The header is always the file's first record, even on resume.
                lines.seek(0)
                _ = self._reader.fieldnames
                self._header_read = True
                start = max(start, lines.offset)
            if lines.offset != start:
                lines.seek(start)
            # The csv module pulls lines only until a record is complete, so
            # after each row the offset is the end of that row's record.
            rows = list(islice(self._reader, self._batch_size))
        except (csv.Error, UnicodeDecodeError) as error:
            _note_position(error, self._path, lines.offset)
            raise
        return rows, lines.offset


class CSVSource(FixedPartitionedSource[dict[str, Any], FileState]):
    """Read a CSV file as one dict per row, keyed by the header's columns.

    Rows are what `csv.DictReader` makes of the file (the first record is
    the header, unless ``fieldnames`` is given). Quoted fields may span
    lines. The file is one partition, named ``f"{fs_id}::{path}"``; the
    position is the byte offset after the last record handed out, checked
    on resume as with `FileSource` (the header is among the bytes checked).

    Args:
        path: The file to read, UTF-8. A missing file raises
            `FileNotFoundError` when the partition is built.
        batch_size: Rows per batch.
        get_fs_id: As for `FileSource`.
        on_replaced: As for `FileSource`.
        **fmtparams: Passed to `csv.DictReader`: ``fieldnames``, ``restkey``,
            ``restval``, ``dialect``, ``delimiter``, ``quotechar``...
    """

    _aiowax_partition_moved = staticmethod(_moved_partition)

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 1000,
        get_fs_id: Callable[[Path], str] = _get_path_dev,
        *,
        on_replaced: OnReplaced = "error",
        **fmtparams: Any,
    ) -> None:
        self._part = _OneFile("CSVSource", path, batch_size, get_fs_id, on_replaced)
        try:
            csv.DictReader(iter(()), **fmtparams)
        except (TypeError, csv.Error) as error:
            msg = f"CSVSource: bad format parameters {fmtparams!r}: {error}"
            raise TypeError(msg) from None
        self._fmtparams = fmtparams

    def list_parts(self) -> list[str]:
        """Return the one partition: ``f"{fs_id}::{path}"``."""
        return self._part.list_parts()

    def build_part(
        self, now: datetime, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[dict[str, Any], FileState]:
        """Open the file to read on after the record ending at ``resume_state``."""
        part = self._part
        part.check(for_part)
        return _CSVPartition(part.settings(), resume_state, self._fmtparams)
