"""In-memory sources and sinks for tests, examples and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain, islice
from typing import Any

from aiowax._checks import positive_int
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._errors import AbortExecution

#: Whether this process ever made a marker (see `_Marker.__new__`): until it
#: does, no batch can hold one, and reading skips the per-item type scan.
_markers_made = False


class _Marker:
    __slots__ = ("_name",)

    def __new__(cls, *args: Any) -> Any:
        # ``__new__``, not ``__init__``: copies and unpickled markers pass here too.
        global _markers_made
        _markers_made = True
        return super().__new__(cls)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"TestingSource.{self._name}()"


class _Eof(_Marker):
    """Ends the execution cleanly when the source reaches it."""

    def __init__(self) -> None:
        super().__init__("EOF")


class _Abort(_Marker):
    def __init__(self) -> None:
        super().__init__("ABORT")
        # An abort fires once: a resumed run skips it.
        self.triggered = False


_MARKER_TYPES = frozenset({_Eof, _Abort})
#: The end of the iterator, told apart from any item it may hold.
_END = object()


class _IterPartition(StatefulSourcePartition[Any, int]):
    def __init__(self, ib: Iterable[Any], batch_size: int, resume_state: int | None) -> None:
        # The position counts the elements of the iterable read so far.
        self._index = resume_state or 0
        it = iter(ib)
        if self._index:
            # Skip what a resumed run read before; then read the iterator
            # itself (an islice around it would cost every item a call).
            next(islice(it, self._index, self._index), None)
        self._it: Iterator[Any] = it
        self._batch_size = batch_size
        # Set when a marker was met: raised by the next call, after the
        # items in front of the marker went out.
        self._stop: BaseException | None = None

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if self._stop is not None:
            raise self._stop
        batch = list(islice(self._it, self._batch_size))
        return self._checked(batch)

    def _checked(self, batch: list[Any]) -> list[Any]:
        """``batch`` as read, up to a marker that stops the execution; counted."""
        if not batch:
            raise StopIteration
        if not _markers_made or _MARKER_TYPES.isdisjoint(map(type, batch)):
            self._index += len(batch)
            return batch
        batch = self._past_markers(batch)
        if not batch and self._stop is not None:
            raise self._stop
        if not batch:
            raise StopIteration
        return batch

    def _past_markers(self, batch: list[Any]) -> list[Any]:
        """The items of ``batch`` up to the first marker that stops the execution.

        A triggered ABORT (from an earlier execution) takes no position and
        no room: it is skipped, and the batch is filled from behind it.
        """
        out: list[Any] = []
        pending = batch
        while pending:
            for i, item in enumerate(pending):
                if isinstance(item, _Eof):
                    # Counts as read: a resumed execution starts after it.
                    self._index += 1
                    self._stop = StopIteration()
                elif isinstance(item, _Abort) and not item.triggered:
                    # Takes no position: a resumed execution meets it again,
                    # already triggered, and reads on across it.
                    item.triggered = True
                    self._stop = AbortExecution("TestingSource.ABORT() reached")
                elif isinstance(item, _Abort):
                    self._index += 1
                    continue
                else:
                    out.append(item)
                    self._index += 1
                    continue
                # Items behind the marker are read again by a later call
                # (or a later execution).
                self._it = chain(
                    pending[i + 1 :] if isinstance(item, _Eof) else pending[i:], self._it
                )
                return out
            pending = list(islice(self._it, self._batch_size - len(out)))
        return out

    def snapshot(self) -> int:
        return self._index


class _OneByOnePartition(_IterPartition):
    """Batches of one item: how tests step a flow through its batches.

    The common case costs a ``next`` and a one-item list: no islice, no type
    scan, one test that covers the end, markers and a stop alike.
    """

    def next_batch(self, sched: datetime | None) -> list[Any]:
        item = next(self._it, _END)
        if _markers_made or item is _END:
            return self._rare(item)
        self._index += 1
        return [item]

    def _rare(self, item: Any) -> list[Any]:
        if self._stop is not None:
            if item is not _END:
                # Read a call too early: the stop comes first.
                self._it = chain((item,), self._it)
            raise self._stop
        return self._checked([] if item is _END else [item])


class TestingSource(FixedPartitionedSource[Any, int]):
    """A source over an in-memory iterable, in batches of ``batch_size``.

    Put ``TestingSource.EOF()`` in the iterable to end the execution there
    (a resumed run continues after it), or ``TestingSource.ABORT()`` to end
    it abruptly once, as a crash would: the run returns without raising, and
    a resumed run reads on across the marker, which takes no position.

    Args:
        ib: The items. Each run reads it anew; a generator (or any other
            iterator) can be read by one run only.
        batch_size: Items per batch.
    """

    __test__ = False  # keep pytest from collecting this class
    EOF = _Eof
    ABORT = _Abort

    def __init__(self, ib: Iterable[Any], batch_size: int = 1) -> None:
        self._ib = ib
        self._batch_size = positive_int("TestingSource", "batch_size", batch_size)
        # An iterator given as ``ib`` that a run has read (see `build_part`).
        self._read = False

    def list_parts(self) -> list[str]:
        return ["iterable"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _IterPartition:
        """The partition that reads the items (from ``resume_state`` on).

        Raises:
            ValueError: ``ib`` is an iterator that an earlier run read: a
                second run would read nothing (or resume at a wrong place).
        """
        if isinstance(self._ib, Iterator):
            if self._read:
                msg = (
                    f"TestingSource was given an iterator ({type(self._ib).__name__}), "
                    "which an earlier run read: it cannot be read again; pass a list "
                    "or another iterable that can be read more than once"
                )
                raise ValueError(msg)
            self._read = True
        if self._batch_size == 1:
            return _OneByOnePartition(self._ib, 1, resume_state)
        return _IterPartition(self._ib, self._batch_size, resume_state)


class _ListPartition(StatelessSinkPartition[Any]):
    def __init__(self, ls: list[Any]) -> None:
        self._ls = ls

    def write_batch(self, items: list[Any]) -> None:
        self._ls.extend(items)


class TestingSink(DynamicSink[Any]):
    """A sink that appends every item to a list you hold.

    Args:
        ls: The list to append to (shared by all workers).
    """

    __test__ = False

    def __init__(self, ls: list[Any]) -> None:
        if not isinstance(ls, list):
            msg = f"TestingSink: expected a list, got {ls!r}"
            raise TypeError(msg)
        self._ls = ls

    def build(self, worker_index: int, worker_count: int) -> _ListPartition:
        return _ListPartition(self._ls)
