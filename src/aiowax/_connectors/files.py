r"""Sources and sinks over local files: lines, CSV rows, directories of files.

Every read and write runs in a worker thread (`anyio.to_thread.run_sync`), a
whole batch per hop, so a large file never blocks the event loop. Positions
are byte offsets: a source resumes after the last line (or CSV record) it
handed out, and a sink truncates its file back to the last committed offset
before it writes again, so a resumed run does not duplicate output past the
last committed epoch.

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
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias, TypedDict, TypeVar
from zlib import adler32

from aiowax._checks import callable_arg, positive_int
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import FixedPartitionedSink, StatefulSinkPartition
from aiowax._engine.clock import run_in_thread
from aiowax._errors import FileReplacedError

X = TypeVar("X")

_ENCODING = "utf-8"

#: Bytes hashed at each end of what a source has read, to recognise the file.
_WINDOW = 4096

logger = logging.getLogger("aiowax.connectors.files")

OnReplaced: TypeAlias = Literal["error", "restart"]


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


def _check_on_replaced(owner: str, on_replaced: object) -> OnReplaced:
    if on_replaced == "error" or on_replaced == "restart":
        return on_replaced
    msg = f'{owner}: on_replaced must be "error" or "restart", got {on_replaced!r}'
    raise ValueError(msg)


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


# -- partition names -----------------------------------------------------------


def _get_path_dev(path: Path) -> str:
    """Return the device id of ``path`` in hex: the default ``get_fs_id``, as the reference."""
    return hex(path.stat().st_dev)


def _fs_id(owner: str, get_fs_id: Callable[[Path], str], directory: Path) -> str:
    fs_id = get_fs_id(directory)
    if not isinstance(fs_id, str):
        msg = f"{owner}: get_fs_id must return a str, got {fs_id!r}"
        raise TypeError(msg)
    if "::" in fs_id:
        # "::" separates the id from the path in partition names.
        msg = f"{owner}: the result of get_fs_id must not contain '::', got {fs_id!r}"
        raise ValueError(msg)
    return fs_id


class _OneFile:
    """The single partition of `FileSource` and `CSVSource`: ``f"{fs_id}::{path}"``."""

    def __init__(self, owner: str, path: Path, get_fs_id: Callable[[Path], str]) -> None:
        self.owner = owner
        self.path = path
        self._get_fs_id = get_fs_id
        self._name: str | None = None

    def list_parts(self) -> list[str]:
        # Asked once per run: the id is of the disk the file is on now.
        fs_id = _fs_id(self.owner, self._get_fs_id, self.path.parent)
        self._name = f"{fs_id}::{self.path}"
        return [self._name]

    def check(self, for_part: str) -> None:
        name = self._name if self._name is not None else self.list_parts()[0]
        if for_part != name:
            msg = f"{self.owner}: unknown partition {for_part!r}; the only one is {name!r}"
            raise ValueError(msg)


# -- positions -----------------------------------------------------------------


class FilePosition(TypedDict):
    """A file source's snapshot: where it stands, and the file it stands in.

    Plain data (ints and a str), so any snapshot serde can store it.
    """

    offset: int
    """Bytes handed out: the next line or record starts here."""
    size: int
    """The file's size when ``offset`` was reached."""
    dev: int
    """``st_dev`` of the file read."""
    ino: int
    """``st_ino`` of the file read."""
    digest: str
    """BLAKE2b (16 bytes, hex) of the first and the last ``_WINDOW`` bytes before ``offset``."""


#: A source partition's resume state; a plain int is the older format.
FileState: TypeAlias = FilePosition | int

_POSITION_INTS = ("offset", "size", "dev", "ino")


def _check_state(owner: str, path: Path, resume_state: object) -> FileState | None:
    if not isinstance(resume_state, dict):
        # None, or an offset saved before positions named their file.
        return None if resume_state is None else _check_offset(owner, path, resume_state)
    fields = [resume_state.get(key) for key in _POSITION_INTS]
    ints = [v for v in fields if isinstance(v, int) and not isinstance(v, bool)]
    digest = resume_state.get("digest")
    if len(ints) != len(fields) or not isinstance(digest, str):
        msg = (
            f"{owner}: the resume state of {str(path)!r} must be a byte offset or a "
            f"position taken by snapshot() (keys offset, size, dev, ino, digest), "
            f"got {resume_state!r}"
        )
        raise TypeError(msg)
    offset, size, dev, ino = ints
    _check_offset(owner, path, offset)
    return FilePosition(offset=offset, size=size, dev=dev, ino=ino, digest=digest)


def _offset(state: FileState) -> int:
    return state if isinstance(state, int) else state["offset"]


def _make_position(st: os.stat_result, offset: int, head: bytes, tail: bytes) -> FilePosition:
    """The position at ``offset`` in a file with ``st``, its first and last bytes before it."""
    return FilePosition(
        offset=offset,
        size=st.st_size,
        dev=st.st_dev,
        ino=st.st_ino,
        digest=hashlib.blake2b(head + tail, digest_size=16).hexdigest(),
    )


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A partition's position; a new one per batch, so a cancelled read changes nothing."""

    offset: int
    #: What `snapshot` returns.
    state: FileState
    #: The file's first ``min(offset, _WINDOW)`` bytes, kept so they are read
    #: only once; ``None`` until the file was checked against ``state``.
    head: bytes | None


def _what_changed(saved: FileState, now: FilePosition) -> str | None:
    """Say how the file differs from the one ``saved`` was taken in, or ``None``."""
    offset = now["offset"]
    if isinstance(saved, int):
        # An old-format offset: no identity to compare, but a file shorter
        # than what was read from it is certainly another one.
        if now["size"] < offset:
            return (
                f"it now has {now['size']} bytes, fewer than the {offset} already read "
                "(the saved position is a plain offset from an older aiowax, so only "
                "the size could be checked)"
            )
        return None
    if now["size"] < offset:
        change = (
            f"it now has {now['size']} bytes, fewer than the {offset} already read "
            f"(it had {saved['size']} then)"
        )
    elif now["digest"] != saved["digest"]:
        change = (
            f"its bytes before that offset differ from those read then (it had "
            f"{saved['size']} bytes then, {now['size']} now)"
        )
    else:
        # The bytes read are still there: the same file, grown or not, or a
        # copy of it (restored from a backup, moved to another disk).
        return None
    if (now["dev"], now["ino"]) == (saved["dev"], saved["ino"]):
        return f"{change}; it is the same file (inode {saved['ino']}) rewritten in place"
    return (
        f"{change}; it is another file (device {saved['dev']}, inode {saved['ino']} then; "
        f"device {now['dev']}, inode {now['ino']} now), as after a log rotation or a "
        "regenerated export"
    )


# -- line sources ------------------------------------------------------------


class _OffsetPartition(StatefulSourcePartition[X, FileState]):
    """One file read a batch at a time; the resume state is a `FilePosition`."""

    def __init__(
        self,
        owner: str,
        path: Path,
        batch_size: int,
        resume_state: object,
        on_replaced: OnReplaced,
    ) -> None:
        self._owner = owner
        self._path = path
        self._batch_size = batch_size
        self._on_replaced = on_replaced
        state = _check_state(owner, path, resume_state)
        # Opening is quick and says at once whether the file is there; the
        # reads themselves happen in a worker thread.
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            if state is None or _offset(state) == 0:
                # Nothing was read: nothing to check, and the position at 0
                # needs no read, only the file's identity.
                start = _make_position(os.fstat(self._f.fileno()), 0, b"", b"")
                self._cursor = _Cursor(0, start, b"")
            else:
                # Checked against the file by the first read, in the thread.
                self._cursor = _Cursor(_offset(state), state, None)
        except BaseException:
            self._f.close()
            raise

    @abstractmethod
    def _read(self, start: int) -> tuple[list[X], int]:
        """Read the batch after byte ``start``: its items and the offset after them."""

    def _position(self, offset: int, head: bytes | None = None) -> tuple[bytes, FilePosition]:
        """Take the position at ``offset`` in the open file (in a worker thread).

        Returns:
            The file's first ``min(offset, _WINDOW)`` bytes (``head`` if given),
            and the position.
        """
        f = self._f
        st = os.fstat(f.fileno())
        here = f.tell()
        try:
            if head is None:
                f.seek(0)
                head = f.read(min(offset, _WINDOW))
            f.seek(max(0, offset - _WINDOW))
            tail = f.read(min(offset, _WINDOW))
        finally:
            # The subclasses read on from where they left the file.
            f.seek(here)
        return head, _make_position(st, offset, head, tail)

    def _check_file(self, cursor: _Cursor) -> _Cursor:
        """Check that the file is the one ``cursor.state`` was taken in (in a worker thread)."""
        head, now = self._position(cursor.offset)
        change = _what_changed(cursor.state, now)
        if change is None:
            return _Cursor(cursor.offset, now, head)
        path = str(self._path)
        if self._on_replaced == "error":
            msg = (
                f"{self._owner}: cannot resume {path!r} at byte {cursor.offset}: the file "
                f"changed since that position was saved: {change}. Its lines do not start "
                "at the saved offset, so resuming there would skip or split them. To read "
                f'it again from its start, pass on_replaced="restart" to {self._owner}; to '
                "resume, put back the file the position was taken in; to start the whole "
                "flow over, use a new recovery directory."
            )
            raise FileReplacedError(msg)
        logger.warning(
            "%s: %r changed since its position at byte %d was saved: %s; reading it from "
            'its start (on_replaced="restart")',
            self._owner,
            path,
            cursor.offset,
            change,
        )
        head, start = self._position(0)
        return _Cursor(0, start, head)

    def _read_batch(self, cursor: _Cursor) -> tuple[list[X], _Cursor]:
        """Read the batch after ``cursor`` and say where it ends (in a worker thread)."""
        if cursor.head is None:
            cursor = self._check_file(cursor)
        items, end = self._read(cursor.offset)
        if not items:
            return items, cursor
        head = cursor.head if cursor.head is not None and len(cursor.head) == _WINDOW else None
        head, position = self._position(end, head)
        return items, _Cursor(end, position, head)

    async def next_batch(self, sched: datetime | None) -> list[X]:
        items, cursor = await run_in_thread(self._read_batch, self._cursor)
        # Kept even with no items: a check or a restart happened at the first read.
        self._cursor = cursor
        if not items:
            raise StopAsyncIteration
        return items

    def snapshot(self) -> FileState:
        return self._cursor.state

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

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 1000,
        get_fs_id: Callable[[Path], str] = _get_path_dev,
        *,
        on_replaced: OnReplaced = "error",
    ) -> None:
        self._path = _check_path("FileSource", "path", path)
        self._batch_size = positive_int("FileSource", "batch_size", batch_size)
        callable_arg("FileSource", "get_fs_id", get_fs_id)
        self._part = _OneFile("FileSource", self._path, get_fs_id)
        self._on_replaced = _check_on_replaced("FileSource", on_replaced)

    def list_parts(self) -> list[str]:
        """Return the one partition: ``f"{fs_id}::{path}"``."""
        return self._part.list_parts()

    def build_part(
        self, now: datetime, for_part: str, resume_state: FileState | None
    ) -> StatefulSourcePartition[str, FileState]:
        """Open the file to read on from ``resume_state``, or from its start."""
        self._part.check(for_part)
        return _LinePartition(
            "FileSource", self._path, self._batch_size, resume_state, self._on_replaced
        )


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
        if not isinstance(glob_pat, str) or not glob_pat:
            msg = f"DirSource: glob_pat must be a non-empty str, got {glob_pat!r}"
            raise TypeError(msg)
        self._glob_pat = glob_pat
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
        return _LinePartition(
            "DirSource",
            self._dir_path / relative,
            self._batch_size,
            resume_state,
            self._on_replaced,
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
        self,
        path: Path,
        batch_size: int,
        resume_state: object,
        on_replaced: OnReplaced,
        fmtparams: dict[str, Any],
    ) -> None:
        super().__init__("CSVSource", path, batch_size, resume_state, on_replaced)
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

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 1000,
        get_fs_id: Callable[[Path], str] = _get_path_dev,
        *,
        on_replaced: OnReplaced = "error",
        **fmtparams: Any,
    ) -> None:
        self._path = _check_path("CSVSource", "path", path)
        self._batch_size = positive_int("CSVSource", "batch_size", batch_size)
        callable_arg("CSVSource", "get_fs_id", get_fs_id)
        self._part = _OneFile("CSVSource", self._path, get_fs_id)
        self._on_replaced = _check_on_replaced("CSVSource", on_replaced)
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
        self._part.check(for_part)
        return _CSVPartition(
            self._path, self._batch_size, resume_state, self._on_replaced, self._fmtparams
        )


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
