"""The file sinks: `FileSink` and `DirSink`, and the partition writing one file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from zlib import adler32

from aiowax._checks import callable_arg, positive_int
from aiowax._connectors.files.checks import _check_end, _check_path
from aiowax._connectors.files.positions import (
    _WINDOW,
    FilePosition,
    FileState,
    _check_state,
    _make_position,
    _offset,
)
from aiowax._connectors.files.text import _ENCODING
from aiowax._connectors.threaded import ThreadedWrites
from aiowax._definition.outputs import FixedPartitionedSink, StatefulSinkPartition
from aiowax._errors import FileReplacedError


class _FileSinkPartition(ThreadedWrites, StatefulSinkPartition[Any, FileState]):
    """Appends ``str(value) + end`` per value; the state is a `FilePosition` at the file's end.

    On resume the file is truncated back to the saved position's offset, but
    only once its bytes before it are seen to be those this sink wrote (the
    position's digest): a relative path resumed from another working
    directory, say, names another file, which must not be cut. A plain int
    state (an older aiowax's) can only be checked against the file's size.
    """

    def __init__(self, owner: str, path: Path, resume_state: object, end: str) -> None:
        self._path = path
        self._end = end
        state = _check_state(owner, path, resume_state)
        offset = 0 if state is None else _offset(state)
        self._f: BinaryIO = open(path, "ab")  # noqa: SIM115 - closed by close()
        try:
            st = os.fstat(self._f.fileno())
            if offset > st.st_size:
                msg = (
                    f"{owner}: cannot resume {str(path)!r} at byte {offset}: the file "
                    f"has only {st.st_size} bytes, so it changed since that snapshot"
                )
                raise ValueError(msg)
            # The first and the last bytes before the offset: what a position's
            # digest covers (kept up to date by each write, so never read again).
            self._head = self._tail = b""
            if offset:
                with open(path, "rb") as f:
                    self._head = f.read(min(offset, _WINDOW))
                    f.seek(max(0, offset - _WINDOW))
                    self._tail = f.read(min(offset, _WINDOW))
            if isinstance(state, dict):
                now = _make_position(st, offset, self._head, self._tail)
                # Nothing written before the snapshot: no bytes to compare, but
                # a file with bytes of its own that is not the one the sink
                # had open is not its output either.
                other = (now["dev"], now["ino"]) != (state["dev"], state["ino"])
                if now["digest"] != state["digest"] or (not offset and st.st_size and other):
                    raise FileReplacedError(_not_written_here(owner, path, state, now))
            # Drop what was written after the snapshot (or everything, on a
            # fresh start): the resumed run writes it again.
            self._f.truncate(offset)
        except BaseException:
            self._f.close()
            raise
        self._offset = offset
        self._id = st

    def _write(self, values: list[Any]) -> None:
        end = self._end
        data = (end.join(map(str, values)) + end).encode(_ENCODING)
        f = self._f
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        self._offset += len(data)
        if len(self._head) < _WINDOW:
            self._head = (self._head + data)[:_WINDOW]
        self._tail = (self._tail + data[-_WINDOW:])[-_WINDOW:]

    def snapshot(self) -> FileState:
        return _make_position(self._id, self._offset, self._head, self._tail, self._offset)

    def close(self) -> None:
        self._f.close()


def _not_written_here(owner: str, path: Path, saved: FilePosition, now: FilePosition) -> str:
    """Why a sink's file is not the one its snapshot was taken of."""
    offset = saved["offset"]
    same = (now["dev"], now["ino"]) == (saved["dev"], saved["ino"])
    which = (
        f"the same file (inode {saved['ino']}), rewritten since"
        if same
        else f"another file (device {saved['dev']}, inode {saved['ino']} then; device "
        f"{now['dev']}, inode {now['ino']} now)"
    )
    return (
        f"{owner}: will not resume {str(path)!r}: its first {offset} bytes are not the "
        f"ones this sink wrote before the snapshot; it is {which}. Resuming would cut "
        f"it to {offset} bytes and append to it, so it was left as it is. A relative "
        "path names another file when the flow runs from another working directory: "
        "run it from the directory of the first run, or put back the file it wrote; "
        "to start the whole flow over, use a new recovery directory."
    )


class FileSink(FixedPartitionedSink[Any, FileState]):
    """Write the values of ``(key, value)`` items to one file, one per line.

    Each value is written as ``str(value) + end``, in order; the file is one
    partition, so one worker writes it. A fresh run truncates the file; a
    resumed run truncates it back to its length at the last committed epoch
    and goes on from there, so replayed output is not duplicated. It first
    checks that the file's bytes up to there are the ones it wrote, and
    raises `FileReplacedError` (leaving the file alone) if not: a relative
    path resumed from another working directory names another file. Every
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
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSinkPartition[Any, FileState]:
        """Open the file, truncated to ``resume_state``'s offset (0 on a fresh start)."""
        if for_part != str(self._path):
            msg = f"FileSink: unknown partition {for_part!r}; the only one is {str(self._path)!r}"
            raise ValueError(msg)
        return _FileSinkPartition("FileSink", self._path, resume_state, self._end)


def _default_file_namer(i: int, n: int) -> str:
    return f"part_{i}"


def _default_assign_file(key: str) -> int:
    # Adler-32, as the reference: stable across processes and runs.
    return adler32(key.encode())


class DirSink(FixedPartitionedSink[Any, FileState]):
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
        self, for_part: str, resume_state: FileState | None
    ) -> StatefulSinkPartition[Any, FileState]:
        """Open one file, truncated to ``resume_state``'s offset (0 on a fresh start)."""
        return _FileSinkPartition("DirSink", self._dir_path / for_part, resume_state, self._end)
