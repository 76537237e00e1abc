"""`_OffsetPartition`: the base of the source partitions, reading one file a batch at a time.

It keeps the position, checks on resume that the file is the one the
position was taken in, and reads in a worker thread on the engine's path.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from aiowax._connectors.files.checks import OnReplaced
from aiowax._connectors.files.positions import (
    _WINDOW,
    FilePosition,
    FileState,
    _check_state,
    _Cursor,
    _make_position,
    _offset,
    _what_changed,
)
from aiowax._definition.inputs import StatefulSourcePartition
from aiowax._engine.clock import run_in_thread
from aiowax._errors import FileReplacedError

X = TypeVar("X")

logger = logging.getLogger("aiowax.connectors.files")


class FileSettings(NamedTuple):
    """What a file partition reads, as its source was given it."""

    #: The source class, for messages.
    owner: str
    path: Path
    batch_size: int
    on_replaced: OnReplaced


class _OffsetPartition(StatefulSourcePartition[X, FileState]):
    """One file read a batch at a time; the resume state is a `FilePosition`."""

    def __init__(self, settings: FileSettings, resume_state: object) -> None:
        owner, path, self._batch_size, self._on_replaced = settings
        self._owner, self._path = owner, path
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

    def next_batch(self, sched: datetime | None = None) -> list[X]:
        """Read the next batch here, in the calling thread; the engine uses the async path.

        Raises:
            StopIteration: At the end of the file, as the reference's file
                sources (and on every later call).
        """
        items, cursor = self._read_batch(self._cursor)
        # Kept even with no items: a check or a restart happened at the first read.
        self._cursor = cursor
        if not items:
            raise StopIteration
        return items

    async def _aiowax_anext_batch(self, sched: datetime | None) -> list[X]:
        """`next_batch` in a worker thread: what the engine calls (see the module doc)."""
        items, cursor = await run_in_thread(self._read_batch, self._cursor)
        self._cursor = cursor
        if not items:
            raise StopAsyncIteration
        return items

    def snapshot(self) -> FileState:
        return self._cursor.state

    def close(self) -> None:
        self._f.close()
