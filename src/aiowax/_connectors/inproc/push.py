"""`PushSource`: a source application code feeds with ``await source.send(item)``."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Generic, TypeVar

import anyio

from aiowax._checks import positive_int
from aiowax._connectors.inproc.timing import IDLE_RETURN_SECONDS
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._engine.aio import yield_now
from aiowax._errors import SourceClosedError, SourceFullError

X = TypeVar("X")


class PushSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source that application code feeds, with back-pressure.

    Items sent here are not replayed after a crash: the source has no
    position to resume from (its snapshot is ``None``).

    One source may feed one run after another (a flow stopped and started
    again, after a configuration reload say), and runs that overlap (the
    new one started before the old one stops): each item goes to one of
    them, and only the end of the last one affects the senders. A run that
    ends without the input ending (stopped, failed, aborted) closes the
    source, so that senders get `SourceClosedError` rather than wait for a
    flow that is gone; the next run reopens it as it starts (before
    `aiowax.open_flow` or `aiowax.start_flow` returns), and reads what the
    last one left buffered. `close` instead ends the input for good: the run
    reading it finishes with what is buffered, and once a run has read it to
    its end, a later run on this source fails at once with
    `SourceClosedError`.

    Args:
        max_buffer: Items held before `send` waits; a positive int.
        batch_size: Most items handed to the flow at once; a positive int.

    Raises:
        TypeError: ``max_buffer`` or ``batch_size`` is not an int.
        ValueError: ``max_buffer`` or ``batch_size`` is not positive.
    """

    def __init__(self, max_buffer: int = 1024, batch_size: int = 1024) -> None:
        self.max_buffer = positive_int("PushSource", "max_buffer", max_buffer)
        self.batch_size = positive_int("PushSource", "batch_size", batch_size)
        self._buffer: deque[X] = deque()
        # Sends are refused (by close(), or once a run ended, until the next
        # one reads the source). Before the first run they are buffered.
        self._closed = False
        # close() was called: the input ends for good, a stop only pauses it.
        self._ended = False
        # A run read the ended input to its end: a later run has nothing to read.
        self._spent = False
        self._sent = 0
        # Runs started and not ended, and their partitions still reading: a
        # new run may start before the old one has stopped (a hot swap).
        # The last reader to stop drains the buffer and closes the source.
        self._runs = 0
        self._reading = 0
        # Events are made lazily: the source is usually built before any loop.
        self._data: anyio.Event | None = None
        self._space: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """Whether sends are refused: `close` was called, or a run ended and none reads it yet.

        Before the first run sends are taken (the buffer waits for it).
        """
        return self._closed

    def qsize(self) -> int:
        """Items waiting for the flow to take them."""
        return len(self._buffer)

    def _wake_reader(self) -> None:
        if self._data is not None:
            self._data.set()

    def send_nowait(self, item: X) -> None:
        """Add ``item`` if there is room.

        Raises:
            SourceFullError: The buffer is full.
            SourceClosedError: The source is closed.
        """
        if self._closed:
            if self._ended:
                msg = "the PushSource is closed: close() ended its input for good"
            else:
                msg = (
                    "the PushSource is closed: its run ended, and no run reads it now "
                    "(the next run on it takes sends again)"
                )
            raise SourceClosedError(msg)
        if len(self._buffer) >= self.max_buffer:
            msg = f"the PushSource buffer is full ({self.max_buffer} items)"
            raise SourceFullError(msg)
        self._buffer.append(item)
        self._wake_reader()

    async def send(self, item: X) -> None:
        """Add ``item``, waiting while the buffer is full.

        Raises:
            SourceClosedError: The source is (or gets) closed.
        """
        while True:
            try:
                self.send_nowait(item)
            except SourceFullError:
                if self._space is None or self._space.is_set():
                    self._space = anyio.Event()
                await self._space.wait()
            else:
                # A checkpoint per item would cost an event-loop turn each;
                # yielding every so often keeps the sender cancellable and
                # lets the flow run, and a full buffer makes it wait anyway.
                self._sent += 1
                if self._sent % 256 == 0:
                    await anyio.lowlevel.checkpoint()
                return

    async def send_many(self, items: list[X]) -> None:
        """Send several items, in order, waiting for room as needed."""
        for item in items:
            await self.send(item)

    def close(self) -> None:
        """End the input: the flow finishes what is buffered, then its input ends.

        This is for good: once a run has read the input to its end, another
        run on this source raises `SourceClosedError`.
        """
        self._ended = True
        self._shut()

    def _shut(self) -> None:
        """Refuse sends, and wake the reader and every waiting sender."""
        self._closed = True
        self._wake_reader()
        if self._space is not None:
            self._space.set()

    def _aiowax_run_starting(self) -> None:
        # The engine's run-level call (`aiowax._engine.edges`): sends are
        # taken from the start of the run, not only once its input task has
        # built the partition. An ended input stays closed (build_part then
        # fails the run, naming the step).
        self._runs += 1
        if not self._ended:
            self._closed = False

    def _aiowax_run_ended(self, failure: Exception | None) -> None:
        # Also when the run failed before building the partition: senders
        # must not wait for a flow that is gone (unless another run reads).
        self._runs = max(0, self._runs - 1)
        if self._runs == 0:
            self._shut()

    def _stop_reading(self) -> bool:
        """A partition stops reading; return whether it was the last one reading."""
        self._reading = max(0, self._reading - 1)
        return self._reading == 0

    def _open_for_run(self) -> None:
        """A run starts reading: reopen the source a previous run closed."""
        if self._spent:
            msg = (
                "this PushSource's input has ended: close() was called and an earlier "
                "run read it to its end; use a new PushSource for a new run"
            )
            raise SourceClosedError(msg)
        if not self._ended:
            self._closed = False

    async def _take(self) -> list[X]:
        if not self._buffer and not self._closed:
            # Senders usually have more on the way: one turn of the loop
            # first, far cheaper than setting up the wait below.
            await yield_now()
        if not self._buffer and not self._closed:
            # Runs that overlap (a hot swap) wait on one event: a reader that
            # made its own would leave the other's unset, and that one would
            # notice items only at its idle return.
            data = self._data
            if data is None or data.is_set():
                data = self._data = anyio.Event()
            with anyio.move_on_after(IDLE_RETURN_SECONDS):
                await data.wait()
        if not self._buffer:
            if self._closed:
                if self._ended:
                    self._spent = True
                raise StopAsyncIteration
            return []
        size = min(self.batch_size, len(self._buffer))
        popleft = self._buffer.popleft
        batch = [popleft() for _ in range(size)]
        if self._space is not None:
            self._space.set()
        return batch

    def list_parts(self) -> list[str]:
        """One partition: the buffer."""
        return ["push"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _PushPartition[X]:
        """Build the partition that drains the buffer (reopening the source).

        Raises:
            SourceClosedError: The input ended (`close`) and an earlier run
                read it to its end.
        """
        self._open_for_run()
        self._reading += 1
        return _PushPartition(self)


class _PushPartition(StatefulSourcePartition[X, None]):
    def __init__(self, source: PushSource[X]) -> None:
        self._source = source
        self._reading = True

    async def next_batch(self, sched: datetime | None) -> list[X]:
        return await self._source._take()

    def snapshot(self) -> None:
        return None

    def drain_on_stop(self) -> list[X]:
        """A graceful stop: accept no more, but hand over what was accepted.

        While another run reads the source too, the stop leaves the buffer,
        and the sends, to it.
        """
        source = self._source
        if not self._last_reader():
            return []
        source._shut()
        items = list(source._buffer)
        source._buffer.clear()
        if source._ended:
            source._spent = True  # everything up to the end was handed over
        return items

    def close(self) -> None:
        # Senders must not wait forever on a flow that is gone; the next run
        # reopens the source (unless close() ended its input).
        if self._last_reader():
            self._source._shut()

    def _last_reader(self) -> bool:
        """Stop reading (once); whether no other partition reads the source now.

        A stop after this one's (another run stopped at the same moment)
        must find it gone, so that the last of them drains the buffer.
        """
        if self._reading:
            self._reading = False
            return self._source._stop_reading()
        return self._source._reading == 0
