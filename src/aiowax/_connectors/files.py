r"""Sources and sinks over local files: lines, CSV rows, directories of files.

Every read and write runs in a worker thread (`anyio.to_thread.run_sync`), a
whole batch per hop, so a large file never blocks the event loop. Positions
are byte offsets: a source resumes after the last line (or CSV record) it
handed out, and a sink truncates its file back to the last committed offset
before it writes again, so a resumed run does not duplicate output past the
last committed epoch.

Text is UTF-8. Lines end at ``"\n"``, ``"\r\n"`` or a lone ``"\r"``
(Python's universal newlines, as the reference reads text files), and come
out without their line break.
"""

from __future__ import annotations

import csv
import os
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from zlib import adler32

from aiowax._checks import callable_arg, positive_int
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import FixedPartitionedSink, StatefulSinkPartition
from aiowax._engine.clock import run_in_thread

X = TypeVar("X")

_ENCODING = "utf-8"


def _check_path(owner: str, name: str, path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        msg = f"{owner}: {name} must be a str or a path, got {path!r}"
        raise TypeError(msg)
    return Path(path)


def _check_offset(owner: str, path: Path, resume_state: object) -> int:
    if resume_state is None:
        return 0
    if isinstance(resume_state, bool) or not isinstance(resume_state, int):
        msg = (
            f"{owner}: the resume state of {str(path)!r} must be a byte offset "
            f"(an int), got {resume_state!r}"
        )
        raise TypeError(msg)
    if resume_state < 0:
        msg = f"{owner}: the resume state of {str(path)!r} must be >= 0, got {resume_state!r}"
        raise ValueError(msg)
    return resume_state


def _check_end(owner: str, end: object) -> str:
    if not isinstance(end, str):
        msg = f"{owner}: end must be a str, got {end!r}"
        raise TypeError(msg)
    return end


def _note_position(error: BaseException, path: Path, offset: int) -> None:
    error.add_note(f"while reading {str(path)!r} near byte offset {offset}")


def _split_lines(data: bytes) -> list[str]:
    """Decode whole lines and split them at universal newlines, dropping the breaks."""
    text = data.decode(_ENCODING)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # the data ended with a line break, not a partial line
    return lines


# -- line sources ------------------------------------------------------------


class _OffsetPartition(StatefulSourcePartition[X, int]):
    """One file read a batch at a time; the resume state is the byte offset reached."""

    def __init__(self, owner: str, path: Path, batch_size: int, resume_state: int | None) -> None:
        self._path = path
        self._batch_size = batch_size
        self._offset = _check_offset(owner, path, resume_state)
        # Opening is quick and says at once whether the file is there; the
        # reads themselves happen in a worker thread.
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()

    @abstractmethod
    def _read(self, start: int) -> tuple[list[X], int]:
        """Read the batch after byte ``start``: its items and the offset after them."""

    async def next_batch(self, sched: datetime | None) -> list[X]:
        items, offset = await run_in_thread(self._read, self._offset)
        if not items:
            raise StopAsyncIteration
        self._offset = offset
        return items

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._f.close()


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


class FileSource(FixedPartitionedSource[str, int]):
    r"""Read a text file line by line, without the line breaks.

    The file is one partition, named after the path, so one worker reads it.
    Lines are decoded as UTF-8 and split at ``"\n"``, ``"\r\n"`` or
    ``"\r"``. The position is the byte offset after the last line handed
    out, so a resumed run continues with the next line.

    Args:
        path: The file to read. A missing file raises `FileNotFoundError`
            when the partition is built.
        batch_size: Lines per batch, read in one hop to a worker thread.
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 1000) -> None:
        self._path = _check_path("FileSource", "path", path)
        self._batch_size = positive_int("FileSource", "batch_size", batch_size)

    def list_parts(self) -> list[str]:
        """Return the one partition: the path."""
        return [str(self._path)]

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[str, int]:
        """Open the file and start reading at ``resume_state`` (bytes), or at 0."""
        if for_part != str(self._path):
            msg = f"FileSource: unknown partition {for_part!r}; the only one is {str(self._path)!r}"
            raise ValueError(msg)
        return _LinePartition("FileSource", self._path, self._batch_size, resume_state)


class DirSource(FixedPartitionedSource[str, int]):
    """Read every matching file of a directory line by line.

    Each file is a partition, named by its path relative to ``dir_path``
    (sorted), so each file is read by exactly one worker and lines of
    different files interleave. Lines come as with `FileSource`.

    Args:
        dir_path: The directory; it must exist.
        glob_pat: Which files to read, as for `pathlib.Path.glob` (``"**/*"``
            descends into subdirectories). Directories that match are skipped.
        batch_size: Lines per batch.

    Raises:
        ValueError: ``dir_path`` does not exist or is not a directory.
    """

    def __init__(
        self, dir_path: str | os.PathLike[str], glob_pat: str = "*", batch_size: int = 1000
    ) -> None:
        self._dir_path = _check_path("DirSource", "dir_path", dir_path)
        if not isinstance(glob_pat, str) or not glob_pat:
            msg = f"DirSource: glob_pat must be a non-empty str, got {glob_pat!r}"
            raise TypeError(msg)
        self._glob_pat = glob_pat
        self._batch_size = positive_int("DirSource", "batch_size", batch_size)
        if not self._dir_path.exists():
            msg = f"DirSource: input directory {str(self._dir_path)!r} does not exist"
            raise ValueError(msg)
        if not self._dir_path.is_dir():
            msg = f"DirSource: input path {str(self._dir_path)!r} is not a directory"
            raise ValueError(msg)

    def list_parts(self) -> list[str]:
        """Return the matching files' paths relative to the directory, sorted."""
        return sorted(
            path.relative_to(self._dir_path).as_posix()
            for path in self._dir_path.glob(self._glob_pat)
            if path.is_file()
        )

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[str, int]:
        """Open one file of the directory and start reading at ``resume_state``."""
        return _LinePartition(
            "DirSource", self._dir_path / for_part, self._batch_size, resume_state
        )


# -- CSV ---------------------------------------------------------------------


class _RawLines(Iterator[str]):
    """The lines of a binary file, with their breaks, for the `csv` module.

    Splits like a text file opened with ``newline=""`` (what `csv` expects)
    and knows the byte offset after the last line it handed out.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0
        self._split: deque[tuple[str, int]] = deque()

    def seek(self, offset: int) -> None:
        self._f.seek(offset)
        self.offset = offset
        self._split.clear()

    def __next__(self) -> str:
        if self._split:
            line, self.offset = self._split.popleft()
            return line
        raw = self._f.readline()
        if not raw:
            raise StopIteration
        start = self.offset
        if b"\r" in raw:
            parts = raw.splitlines(keepends=True)  # a lone "\r" ends a line too
            if len(parts) > 1:
                for part in parts:
                    start += len(part)
                    self._split.append((part.decode(_ENCODING), start))
                line, self.offset = self._split.popleft()
                return line
        self.offset = start + len(raw)
        return raw.decode(_ENCODING)


class _CSVPartition(_OffsetPartition[dict[str, Any]]):
    def __init__(
        self, path: Path, batch_size: int, resume_state: int | None, fmtparams: dict[str, Any]
    ) -> None:
        super().__init__("CSVSource", path, batch_size, resume_state)
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


class CSVSource(FixedPartitionedSource[dict[str, Any], int]):
    """Read a CSV file as one dict per row, keyed by the header's columns.

    Rows are what `csv.DictReader` makes of the file (the first record is
    the header, unless ``fieldnames`` is given). Quoted fields may span
    lines. The position is the byte offset after the last record handed
    out.

    Args:
        path: The file to read, UTF-8. A missing file raises
            `FileNotFoundError` when the partition is built.
        batch_size: Rows per batch.
        **fmtparams: Passed to `csv.DictReader`: ``fieldnames``, ``restkey``,
            ``restval``, ``dialect``, ``delimiter``, ``quotechar``...
    """

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int = 1000, **fmtparams: Any
    ) -> None:
        self._path = _check_path("CSVSource", "path", path)
        self._batch_size = positive_int("CSVSource", "batch_size", batch_size)
        try:
            csv.DictReader(iter(()), **fmtparams)
        except (TypeError, csv.Error) as error:
            msg = f"CSVSource: bad format parameters {fmtparams!r}: {error}"
            raise TypeError(msg) from None
        self._fmtparams = fmtparams

    def list_parts(self) -> list[str]:
        """Return the one partition: the path."""
        return [str(self._path)]

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[dict[str, Any], int]:
        """Open the file and start after the record ending at ``resume_state``."""
        if for_part != str(self._path):
            msg = f"CSVSource: unknown partition {for_part!r}; the only one is {str(self._path)!r}"
            raise ValueError(msg)
        return _CSVPartition(self._path, self._batch_size, resume_state, self._fmtparams)


# -- sinks -------------------------------------------------------------------


class _FileSinkPartition(StatefulSinkPartition[Any, int]):
    """Appends ``str(value) + end`` per value; the state is the file's length."""

    def __init__(self, owner: str, path: Path, resume_state: int | None, end: str) -> None:
        self._path = path
        self._end = end
        offset = _check_offset(owner, path, resume_state)
        self._f: BinaryIO = open(path, "ab")  # noqa: SIM115 - closed by close()
        try:
            size = os.fstat(self._f.fileno()).st_size
            if offset > size:
                msg = (
                    f"{owner}: cannot resume {str(path)!r} at byte {offset}: the file "
                    f"has only {size} bytes, so it changed since that snapshot"
                )
                raise ValueError(msg)
            # Drop what was written after the snapshot (or everything, on a
            # fresh start): the resumed run writes it again.
            self._f.truncate(offset)
        except BaseException:
            self._f.close()
            raise
        self._offset = offset

    def _write(self, values: list[Any]) -> None:
        end = self._end
        data = (end.join(map(str, values)) + end).encode(_ENCODING)
        f = self._f
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        self._offset += len(data)

    async def write_batch(self, values: list[Any]) -> None:
        if values:
            await run_in_thread(self._write, values)

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._f.close()


class FileSink(FixedPartitionedSink[Any, int]):
    """Write the values of ``(key, value)`` items to one file, one per line.

    Each value is written as ``str(value) + end``, in order; the file is one
    partition, so one worker writes it. A fresh run truncates the file; a
    resumed run truncates it back to its length at the last committed epoch
    and goes on from there, so replayed output is not duplicated. Every
    batch is flushed and fsynced before it counts as written. Don't tail the
    file while a flow writes it: it may shrink on resume.

    Args:
        path: The file to write; its directory must exist.
        end: Written after each value.
    """

    def __init__(self, path: str | os.PathLike[str], end: str = "\n") -> None:
        self._path = _check_path("FileSink", "path", path)
        self._end = _check_end("FileSink", end)

    def list_parts(self) -> list[str]:
        """Return the one partition: the path."""
        return [str(self._path)]

    def part_fn(self, item_key: str) -> int:
        """Send every item to the one partition."""
        return 0

    def build_part(
        self, for_part: str, resume_state: int | None
    ) -> StatefulSinkPartition[Any, int]:
        """Open the file, truncated to ``resume_state`` bytes (0 on a fresh start)."""
        if for_part != str(self._path):
            msg = f"FileSink: unknown partition {for_part!r}; the only one is {str(self._path)!r}"
            raise ValueError(msg)
        return _FileSinkPartition("FileSink", self._path, resume_state, self._end)


def _default_file_namer(i: int, n: int) -> str:
    return f"part_{i}"


def _default_assign_file(key: str) -> int:
    # Adler-32, as the reference: stable across processes and runs.
    return adler32(key.encode())


class DirSink(FixedPartitionedSink[Any, int]):
    """Write the values of ``(key, value)`` items to a set of files in a directory.

    Each file is a partition, so different workers write different files;
    ``assign_file(key)`` (modulo ``file_count``) picks an item's file, so
    one key's values stay together and in order. Files are written and
    resumed as with `FileSink`.

    Args:
        dir_path: The directory; it must exist when the flow runs.
        file_count: How many files.
        file_namer: Called as ``file_namer(index, file_count)``; returns the
            name of that file in ``dir_path``. Defaults to ``part_{index}``.
        assign_file: Called with each item's key; returns the index of its
            file (wrapped to ``file_count``). Must give the same answer in
            every process and run; defaults to `zlib.adler32` of the UTF-8
            key.
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
        self._dir_path = _check_path("DirSink", "dir_path", dir_path)
        self._file_count = positive_int("DirSink", "file_count", file_count)
        callable_arg("DirSink", "file_namer", file_namer)
        callable_arg("DirSink", "assign_file", assign_file)
        self._file_namer = file_namer
        self._assign_file = assign_file
        self._end = _check_end("DirSink", end)

    def list_parts(self) -> list[str]:
        """Return the file names, in index order."""
        names = [self._file_namer(i, self._file_count) for i in range(self._file_count)]
        for name in names:
            if not isinstance(name, str) or not name:
                msg = f"DirSink: file_namer must return non-empty str names, got {name!r}"
                raise TypeError(msg)
        if len(set(names)) != len(names):
            msg = f"DirSink: file_namer returned duplicate names: {names!r}"
            raise ValueError(msg)
        return names

    def part_fn(self, item_key: str) -> int:
        """Pick the file for a key with ``assign_file``."""
        return self._assign_file(item_key)

    def build_part(
        self, for_part: str, resume_state: int | None
    ) -> StatefulSinkPartition[Any, int]:
        """Open one file, truncated to ``resume_state`` bytes (0 on a fresh start)."""
        return _FileSinkPartition("DirSink", self._dir_path / for_part, resume_state, self._end)
