"""In-process connectors: application code pushes items in and reads results out.

`PushSource` is fed with ``await source.send(item)``; it is bounded, so a
full flow makes senders wait (or `send_nowait` refuse, which a web handler
can turn into a 429). `IterableSource` reads any async iterable.
`BroadcastSink` hands every item to each of its subscribers, read with
``async for``; each subscriber has its own bounded buffer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import anyio

from aiowax._checks import positive_int
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._engine.aio import END, PendingRead, next_or_end
from aiowax._errors import SourceClosedError, SourceFullError, SubscriberOverflowError

X = TypeVar("X")

#: Longest an idle in-process source waits before returning an empty batch,
#: so that epochs (and their snapshots) keep closing while nothing arrives.
IDLE_RETURN_SECONDS = 0.25


class PushSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source that application code feeds, with back-pressure.

    Items sent here are not replayed after a crash: the source has no
    position to resume from (its snapshot is ``None``).

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
        self._closed = False
        self._sent = 0
        # Events are made lazily: the source is usually built before any loop.
        self._data: anyio.Event | None = None
        self._space: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """Whether `close` was called (or the flow's partition closed)."""
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
            msg = "the PushSource is closed"
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
        """End the input: the flow finishes what is buffered, then its input ends."""
        self._closed = True
        self._wake_reader()
        if self._space is not None:
            self._space.set()

    async def _take(self) -> list[X]:
        if not self._buffer and not self._closed:
            self._data = anyio.Event()
            with anyio.move_on_after(IDLE_RETURN_SECONDS):
                await self._data.wait()
        if not self._buffer:
            if self._closed:
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
        """Build the partition that drains the buffer."""
        return _PushPartition(self)


class _PushPartition(StatefulSourcePartition[X, None]):
    def __init__(self, source: PushSource[X]) -> None:
        self._source = source

    async def next_batch(self, sched: datetime | None) -> list[X]:
        return await self._source._take()

    def snapshot(self) -> None:
        return None

    def drain_on_stop(self) -> list[X]:
        """A graceful stop: accept no more, but hand over what was accepted."""
        source = self._source
        source.close()
        items = list(source._buffer)
        source._buffer.clear()
        return items

    def close(self) -> None:
        # Senders must not wait forever on a flow that is gone.
        self._source.close()


class IterableSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source reading an async iterable (an async generator, a stream...).

    The iterable is read once; like `PushSource`, it is not replayed after a
    crash.

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

    def list_parts(self) -> list[str]:
        """One partition: the iterable."""
        return ["iterable"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _IterablePartition[X]:
        """Build the partition that reads the iterable."""
        return _IterablePartition(self._aiterable.__aiter__(), self.batch_size)


class _IterablePartition(StatefulSourcePartition[X, None]):
    """Reads ahead in a task of its own, so waiting never loses an item."""

    def __init__(self, it: AsyncIterator[X] | None, batch_size: int) -> None:
        self._it = it
        self._batch_size = batch_size
        self._read: PendingRead | None = None

    async def _open(self) -> AsyncIterator[X]:
        """The iterator to read (subclasses may open it lazily)."""
        assert self._it is not None
        return self._it

    async def _next(self) -> Any:
        if self._it is None:
            self._it = await self._open()
        return await next_or_end(self._it)

    async def next_batch(self, sched: datetime | None) -> list[X]:
        batch: list[X] = []
        timeout: float | None = IDLE_RETURN_SECONDS
        while len(batch) < self._batch_size:
            if self._read is None:
                self._read = PendingRead(self._next())
            got, value = await self._read.get(timeout)
            if not got:
                break
            self._read = None
            if value is END:
                if not batch:
                    raise StopAsyncIteration
                break
            batch.append(value)
            timeout = 0  # then only what is ready at once
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


Overflow = Literal["disconnect", "drop_oldest", "block"]


class Subscription(Generic[X]):
    """One reader of a `BroadcastSink`: iterate it with ``async for``.

    Leave the loop (or call `close`) to unsubscribe; the flow goes on.
    """

    def __init__(self, sink: BroadcastSink[X], buffer: int) -> None:
        self._sink = sink
        self.buffer = buffer
        self._items: deque[X] = deque()
        self._event = anyio.Event()
        self._space = anyio.Event()
        self._overflowed = False
        self._closed = False
        #: Items dropped for this subscriber under the ``drop_oldest`` policy.
        self.dropped = 0

    def __aiter__(self) -> _SubscriptionIterator[X]:
        # A fresh iterator per loop: when the loop ends (break, return, an
        # exception), the iterator is dropped at once and unsubscribes.
        return _SubscriptionIterator(self)

    async def __anext__(self) -> X:
        while not self._items:
            if self._overflowed:
                self.close()
                msg = (
                    f"this subscriber fell more than {self.buffer} items behind "
                    "the flow and was disconnected"
                )
                raise SubscriberOverflowError(msg)
            if self._closed or self._sink._ended:
                raise StopAsyncIteration
            self._event = anyio.Event()
            await self._event.wait()
        item = self._items.popleft()
        self._space.set()
        return item

    def close(self) -> None:
        """Unsubscribe."""
        self._closed = True
        self._sink._subscribers.discard(self)
        self._event.set()
        self._space.set()

    async def __aenter__(self) -> Subscription[X]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _offer(self, items: list[X], overflow: Overflow) -> None:
        if self._closed:
            return
        if overflow == "block":
            start = 0
            while start < len(items):
                room = self.buffer - len(self._items)
                if room <= 0:
                    self._space = anyio.Event()
                    await self._space.wait()
                    if self._closed:
                        return
                    continue
                # As many as fit at once, so a large batch is not handed over
                # (and its reader woken) one item at a time.
                self._items.extend(items[start : start + room])
                start += room
                self._event.set()
            return
        self._items.extend(items)
        excess = len(self._items) - self.buffer
        if excess > 0:
            if overflow == "drop_oldest":
                for _ in range(excess):
                    self._items.popleft()
                self.dropped += excess
            else:
                # What it holds is kept; it is told it missed the rest.
                for _ in range(excess):
                    self._items.pop()
                self._overflowed = True
                self._sink._subscribers.discard(self)
        self._event.set()


class _SubscriptionIterator(Generic[X]):
    __slots__ = ("_sub",)

    def __init__(self, sub: Subscription[X]) -> None:
        self._sub = sub

    def __aiter__(self) -> _SubscriptionIterator[X]:
        return self

    async def __anext__(self) -> X:
        return await self._sub.__anext__()

    def __del__(self) -> None:
        # Nobody reads the subscription any more, so nothing waits on its
        # events: closing it here touches no event loop.
        self._sub.close()


class BroadcastSink(DynamicSink[X], Generic[X]):
    """A sink whose items application code reads as async iterators.

    Every subscriber gets every item written after it subscribed, in order.
    Each has its own buffer of ``buffer`` items; what happens when a reader
    falls further behind is the ``overflow`` policy:

    - ``"disconnect"`` (default): the slow reader keeps what it has buffered,
      then its iteration raises `SubscriberOverflowError`; the flow and the
      other readers never wait for it.
    - ``"drop_oldest"``: the slow reader loses its oldest items (counted in
      `Subscription.dropped`); the flow never waits.
    - ``"block"``: the flow waits for the slowest reader (lossless, with
      back-pressure); choose it when one consumer must see everything.

    Items written while nobody is subscribed are not kept. When the flow
    ends, readers finish after draining their buffers.

    Args:
        buffer: Items each subscriber may hold; a positive int.
        overflow: The policy for a full subscriber, as above.

    Raises:
        TypeError: ``buffer`` is not an int.
        ValueError: ``buffer`` is not positive, or ``overflow`` is not one of
            the policies.
    """

    def __init__(self, buffer: int = 1024, overflow: Overflow = "disconnect") -> None:
        positive_int("BroadcastSink", "buffer", buffer)
        if overflow not in ("disconnect", "drop_oldest", "block"):
            msg = (
                "BroadcastSink: overflow must be 'disconnect', 'drop_oldest' or 'block', "
                f"got {overflow!r}"
            )
            raise ValueError(msg)
        self.buffer = buffer
        self.overflow: Overflow = overflow
        self._subscribers: set[Subscription[X]] = set()
        self._ended = False
        self._open_parts = 0

    def subscribe(self, buffer: int | None = None) -> Subscription[X]:
        """A new reader, receiving every item written from now on.

        Args:
            buffer: This reader's buffer, a positive int (default: the sink's).

        Raises:
            TypeError: ``buffer`` is neither an int nor ``None``.
            ValueError: ``buffer`` is not positive.
        """
        if buffer is None:
            buffer = self.buffer
        else:
            positive_int("BroadcastSink.subscribe", "buffer", buffer)
        sub = Subscription(self, buffer)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        """Readers subscribed now."""
        return len(self._subscribers)

    def build(self, worker_index: int, worker_count: int) -> _BroadcastPartition[X]:
        """One partition per worker, all writing to the same subscribers."""
        self._ended = False
        self._open_parts += 1
        return _BroadcastPartition(self)

    async def _write(self, items: list[X]) -> None:
        for sub in list(self._subscribers):
            await sub._offer(items, self.overflow)

    def _part_closed(self) -> None:
        self._open_parts -= 1
        if self._open_parts <= 0:
            self._ended = True
            for sub in list(self._subscribers):
                sub._event.set()


class _BroadcastPartition(StatelessSinkPartition[X]):
    def __init__(self, sink: BroadcastSink[X]) -> None:
        self._sink = sink

    async def write_batch(self, items: list[X]) -> None:
        await self._sink._write(items)

    def close(self) -> None:
        self._sink._part_closed()
