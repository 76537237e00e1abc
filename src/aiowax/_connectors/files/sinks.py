"""The file sinks: `FileSink` and `DirSink`, and the partition writing one file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from zlib import adler32

from aiowax._checks import callable_arg, positive_int
from aiowax._connectors.files.checks import _check_end, _check_offset, _check_path
from aiowax._connectors.files.text import _ENCODING
from aiowax._connectors.threaded import ThreadedWrites
from aiowax._definition.outputs import FixedPartitionedSink, StatefulSinkPartition


class _FileSinkPartition(ThreadedWrites, StatefulSinkPartition[Any, int]):
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
