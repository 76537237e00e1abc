"""`IterableSource`: a source reading an async iterable, ahead of the flow."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Generic, TypeVar

from aiowax._checks import positive_int
from aiowax._connectors.inproc.timing import IDLE_RETURN_SECONDS
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._engine.aio import END, PendingRead, next_or_end
from aiowax._errors import SourceClosedError

X = TypeVar("X")


class IterableSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source reading an async iterable (an async generator, a stream...).

    Like `PushSource`, it is not replayed after a crash. Each run reads
    ``aiter(aiterable)``: an iterable that makes a fresh iterator each time
    may feed any number of runs, but an iterator (an async generator...) is
    read once, and a second run on it fails with `SourceClosedError`.

    Args:
        aiterable: What to read.
        batch_size: Most items handed to the flow at once; a positive int.

    Raises:
        TypeError: ``aiterable`` is not an async iterable, or ``batch_size``
            is not an int.
        ValueError: ``batch_size`` is not positive.
    """

    def __init__(self, aiterable: AsyncIterable[X], batch_size: int = 1024) -> None:
        if not hasattr(aiterable, "__aiter__"):
            msg = f"IterableSource needs an async iterable, got {aiterable!r}"
            raise TypeError(msg)
        # Named after the class called, so a StreamSource error says StreamSource.
        self.batch_size = positive_int(type(self).__name__, "batch_size", batch_size)
        self._aiterable = aiterable
        # An iterator is its own iterable: a run has read (and closed) it.
        self._iterator_read = False

    def list_parts(self) -> list[str]:
        """One partition: the iterable."""
        return ["iterable"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _IterablePartition[X]:
        """Build the partition that reads the iterable.

        Raises:
            SourceClosedError: The iterable is a one-shot iterator that an
                earlier run read.
        """
        it = self._aiterable.__aiter__()
        if it is self._aiterable:
            if self._iterator_read:
                # Reading it again would end the run at once, silently.
                msg = (
                    f"{type(self).__name__} reads an async iterator once, and an earlier "
                    "run read this one; pass a new iterator for each run, or an iterable "
                    "whose __aiter__ makes a fresh one"
                )
                raise SourceClosedError(msg)
            self._iterator_read = True
        return _IterablePartition(it, self.batch_size)


class _ReadAhead(PendingRead):
    """A `PendingRead` that a graceful stop can cancel without waiting.

    The engine's stop hook (``drain_on_stop``) is synchronous; the partition's
    ``close`` then waits for the read to end.
    """

    def cancel_soon(self) -> None:
        self._task.cancel()


class _IterablePartition(StatefulSourcePartition[X, None]):
    """Reads ahead in a task of its own, so waiting never loses an item.

    The read task itself puts what the iterator yields in ``_held``, in the
    same step: whatever interrupts ``next_batch`` (a timeout, or a graceful
    stop cancelling it), an item the iterator gave stays there, for the next
    call or for `drain_on_stop`.
    """

    def __init__(self, it: AsyncIterator[X] | None, batch_size: int) -> None:
        self._it = it
        self._batch_size = batch_size
        self._read: _ReadAhead | None = None
        self._held: list[X] = []
        self._ended = False

    async def _open(self) -> AsyncIterator[X]:
        """The iterator to read (subclasses may open it lazily)."""
        assert self._it is not None
        return self._it

    async def _read_one(self) -> None:
        if self._it is None:
            self._it = await self._open()
        value = await next_or_end(self._it)
        if value is END:
            self._ended = True
        else:
            self._held.append(value)

    async def next_batch(self, sched: datetime | None) -> list[X]:
        # At once if a read finished meanwhile; else wait a while for one.
        timeout: float = 0 if self._held else IDLE_RETURN_SECONDS
        while not self._ended and len(self._held) < self._batch_size:
            if self._read is None:
                self._read = _ReadAhead(self._read_one())
            try:
                got, _ = await self._read.get(timeout)
            except Exception:
                if self._held:
                    # What came before the error goes first; the failed read
                    # stays, and raises on the next call.
                    break
                raise
            if not got:
                break
            self._read = None
            timeout = 0  # then only what is ready at once
        batch, self._held = self._held, []
        if not batch and self._ended:
            raise StopAsyncIteration
        return batch

    def drain_on_stop(self) -> list[X]:
        """A graceful stop: read no more, but hand over what the iterator gave."""
        if self._read is not None:
            # Stopped now, it cannot take an item from the iterator after
            # this hand-over: that item would be lost. (An error it raised
            # after the stop is dropped with it by close().)
            self._read.cancel_soon()
        batch, self._held = self._held, []
        return batch

    def snapshot(self) -> None:
        return None

    async def close(self) -> None:
        read, self._read = self._read, None
        if read is not None:
            # The read may be suspended inside the generator: let the cancel
            # get it out first, or aclose() finds the generator running.
            await read.cancel()
        await self._shut()

    async def _shut(self) -> None:
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            await aclose()
