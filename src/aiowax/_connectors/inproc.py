"""In-process connectors: application code pushes items in and reads results out.

`PushSource` is fed with ``await source.send(item)``; it is bounded, so a
full flow makes senders wait (or `send_nowait` refuse, which a web handler
can turn into a 429). `IterableSource` reads any async iterable.
`BroadcastSink` hands every item to each of its subscribers, read with
``async for``; each subscriber has its own bounded buffer.

A graceful stop (`aiowax.FlowHandle.stop`) loses nothing these sources
accepted: what was sent to a `PushSource`, and what an `IterableSource`'s
iterator already yielded, still flows to the sinks. The engine finds it
through the partitions' private ``drain_on_stop`` hook.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import anyio

from aiowax._checks import positive_int
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._engine.aio import END, PendingRead, next_or_end, running_loop, yield_now
from aiowax._errors import SourceClosedError, SourceFullError, SubscriberOverflowError

X = TypeVar("X")

#: Longest an idle in-process source waits before returning an empty batch,
#: so that epochs (and their snapshots) keep closing while nothing arrives.
IDLE_RETURN_SECONDS = 0.25

#: How often a write blocked on `BroadcastSink` readers looks at them again
#: without being woken: a subscription dropped by the garbage collector
#: outside the loop's thread cannot wake it.
REWAKE_SECONDS = 1.0


class PushSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source that application code feeds, with back-pressure.

    Items sent here are not replayed after a crash: the source has no
    position to resume from (its snapshot is ``None``).

    One source may feed one run after another (a flow stopped and started
    again, after a configuration reload say). A run that ends without the
    input ending (stopped, failed, aborted) closes the source, so that
    senders get `SourceClosedError` rather than wait for a flow that is gone;
    the next run reopens it, and reads what the last one left buffered.
    `close` instead ends the input for good: the run reading it finishes with
    what is buffered, and once a run has read it to its end, a later run on
    this source fails at once with `SourceClosedError`.

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
        # Sends are refused (by close(), or while no run reads the source).
        self._closed = False
        # close() was called: the input ends for good, a stop only pauses it.
        self._ended = False
        # A run read the ended input to its end: a later run has nothing to read.
        self._spent = False
        self._sent = 0
        # Events are made lazily: the source is usually built before any loop.
        self._data: anyio.Event | None = None
        self._space: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """Whether sends are refused: `close` was called, or no run reads the source."""
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
            self._data = anyio.Event()
            with anyio.move_on_after(IDLE_RETURN_SECONDS):
                await self._data.wait()
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
        source._shut()
        items = list(source._buffer)
        source._buffer.clear()
        if source._ended:
            source._spent = True  # everything up to the end was handed over
        return items

    def close(self) -> None:
        # Senders must not wait forever on a flow that is gone; the next run
        # reopens the source (unless close() ended its input).
        self._source._shut()


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


Overflow = Literal["disconnect", "drop_oldest", "block"]


class Subscription(Generic[X]):
    """One reader of a `BroadcastSink`: iterate it with ``async for``.

    Leave the loop (or call `close`) to unsubscribe; the flow goes on.
    """

    def __init__(self, sink: BroadcastSink[X], buffer: int) -> None:
        self._sink = sink
        self.buffer = buffer
        # A blocked write is woken once this reader's buffer is down to half:
        # it refills the buffer while the reader still has items to read.
        self._low = buffer // 2
        self._items: deque[X] = deque()
        self._event = anyio.Event()
        self._overflowed = False
        self._closed = False
        # Items taken so far: whether it moved while a write let the reader
        # run tells a reader that keeps up from one that fell behind.
        self._taken = 0
        # Writes of the ``block`` policy waiting for room in this buffer.
        self._blocked = 0
        #: Items dropped for this subscriber under the ``drop_oldest`` policy.
        self.dropped = 0

    def __aiter__(self) -> _SubscriptionIterator[X]:
        # A fresh iterator per loop: when the loop ends (break, return, an
        # exception), the iterator is dropped at once and unsubscribes.
        return _SubscriptionIterator(self)

    async def __anext__(self) -> X:
        items = self._items
        while not items:
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
        item = items.popleft()
        self._taken += 1
        if self._blocked and len(items) <= self._low:
            self._sink._wake_writers()
        return item

    def close(self) -> None:
        """Unsubscribe."""
        self._close(wake=True)

    def _close(self, *, wake: bool) -> None:
        self._closed = True
        self._sink._subscribers.discard(self)
        if wake:
            self._event.set()
            if self._blocked:
                self._sink._wake_writers()  # it waits for this reader no more

    async def __aenter__(self) -> Subscription[X]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _put(self, items: list[X], start: int) -> int:
        """Hand over ``items[start:]`` as far as the buffer has room.

        Returns:
            Where the items not handed over start: ``len(items)`` once all
            were, or when this reader is gone.
        """
        end = len(items)
        if self._closed or self._overflowed:
            return end
        room = self.buffer - len(self._items)
        if room <= 0:
            return start
        stop = min(end, start + room)
        self._items.extend(items if start == 0 and stop == end else items[start:stop])
        self._event.set()
        return stop

    def _fell_behind(self, items: list[X], start: int, overflow: Overflow) -> None:
        """Apply ``overflow`` (not ``block``) for ``items[start:]``: the buffer is full."""
        if overflow == "drop_oldest":
            rest = items[start:]
            held = self._items
            excess = len(held) + len(rest) - self.buffer
            if excess > 0:
                self.dropped += excess
                if excess >= len(held):
                    rest = rest[excess - len(held) :]
                    held.clear()
                else:
                    for _ in range(excess):
                        held.popleft()
            held.extend(rest)
        else:
            # What it holds is kept; it is told it missed the rest.
            self._overflowed = True
            self._sink._subscribers.discard(self)
        self._event.set()


class _SubscriptionIterator(Generic[X]):
    __slots__ = ("_sub",)

    def __init__(self, sub: Subscription[X]) -> None:
        self._sub = sub

    def __aiter__(self) -> _SubscriptionIterator[X]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, X]:
        # The subscription's own coroutine: one frame per item, not two.
        return self._sub.__anext__()

    def __del__(self) -> None:
        # Nobody reads the subscription any more. Outside the loop's thread
        # (a garbage collection elsewhere) no event may be touched: a write
        # blocked on this reader then notices within REWAKE_SECONDS.
        self._sub._close(wake=running_loop() is not None)


class BroadcastSink(DynamicSink[X], Generic[X]):
    """A sink whose items application code reads as async iterators.

    Every subscriber gets every item written after it subscribed, in order.
    Each has its own buffer of ``buffer`` items. Items are handed over as the
    reader takes them: a batch of the flow larger than the buffer is given in
    parts, the sink letting the other tasks run between parts, so a reader
    that takes its items as soon as it runs gets them all, whatever the size
    of the flow's batches. A reader whose buffer is full and that took
    nothing while the sink let it run has fallen ``buffer`` items behind;
    what happens then is the ``overflow`` policy:

    - ``"disconnect"`` (default): the slow reader keeps what it has buffered,
      then its iteration raises `SubscriberOverflowError`; the flow and the
      other readers do not wait for it.
    - ``"drop_oldest"``: the slow reader loses its oldest items (counted in
      `Subscription.dropped`); the flow does not wait for it.
    - ``"block"``: the flow waits for the slow readers (lossless, with
      back-pressure), all at once: it goes at the pace of the slowest one.
      Choose it when every consumer must see everything.

    Items written while nobody is subscribed are not kept. When the flow
    ends, readers finish after draining their buffers. The sink may serve
    one run after another.

    Args:
        buffer: Items each subscriber may hold; a positive int.
        overflow: The policy for a reader that fell behind, as above.

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
        # Blocked writes wait on these; a reader that made room sets them.
        self._writers: list[anyio.Event] = []

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
        if not items or not self._subscribers:
            return
        end = len(items)
        behind: list[tuple[Subscription[X], int]] = []
        for sub in list(self._subscribers):
            done = sub._put(items, 0)
            if done < end:
                behind.append((sub, done))
        if not behind:
            return
        if self.overflow == "block":
            await self._wait_for_room(items, behind)
        else:
            await self._hand_over_or_give_up(items, behind)

    async def _hand_over_or_give_up(
        self, items: list[X], behind: list[tuple[Subscription[X], int]]
    ) -> None:
        """Hand the rest to readers that take their items; the policy for the others.

        Overflow is judged item by item, as if the items came one by one: a
        reader is behind only once its buffer is full and it took nothing
        while the other tasks ran once (readers the last part woke run first).
        A reader that takes one item per turn of the loop slows this write to
        its pace, as items arriving one at a time would have.
        """
        end = len(items)
        overflow = self.overflow
        while behind:
            taken = [sub._taken for sub, _ in behind]
            await yield_now()
            still: list[tuple[Subscription[X], int]] = []
            for (sub, done), before in zip(behind, taken, strict=True):
                if sub._closed or sub._overflowed:
                    continue
                if sub._taken == before:
                    sub._fell_behind(items, done, overflow)
                    continue
                done = sub._put(items, done)
                if done < end:
                    still.append((sub, done))
            behind = still

    async def _wait_for_room(
        self, items: list[X], behind: list[tuple[Subscription[X], int]]
    ) -> None:
        """Hand the rest over as readers make room, waiting for all of them at once.

        Every reader keeps reading its buffer while the write waits for any of
        them, so the flow goes at the pace of the slowest reader, not at the
        sum of their paces.
        """
        end = len(items)
        for sub, _ in behind:
            sub._blocked += 1
        try:
            while behind:
                event = anyio.Event()
                self._writers.append(event)
                try:
                    with anyio.move_on_after(REWAKE_SECONDS):
                        await event.wait()
                finally:
                    with contextlib.suppress(ValueError):
                        self._writers.remove(event)
                still: list[tuple[Subscription[X], int]] = []
                for sub, done in behind:
                    done = sub._put(items, done)
                    if done < end:
                        still.append((sub, done))
                    else:
                        sub._blocked -= 1
                behind = still
        finally:
            for sub, _ in behind:
                sub._blocked -= 1

    def _wake_writers(self) -> None:
        writers, self._writers = self._writers, []
        for event in writers:
            event.set()

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
