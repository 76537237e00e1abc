"""`BroadcastSink`, which hands every item to each `Subscription` reading it."""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Coroutine
from typing import Any, Generic, Literal, TypeVar

import anyio

from aiowax._checks import positive_int
from aiowax._connectors.inproc.timing import REWAKE_SECONDS
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._engine.aio import running_loop, yield_now
from aiowax._errors import FlowFailedError, SubscriberOverflowError

X = TypeVar("X")


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
        # Set when the runs it read ended: ``(None,)`` finished, ``(error,)``
        # failed. A run starting later does not clear it: a reader of a
        # failed run still gets the failure after its buffer.
        self._end: tuple[BaseException | None] | None = None

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
            if self._closed:
                raise StopAsyncIteration
            end = self._end
            if end is None and self._sink._ended:
                # Subscribed while no run was going, after one had ended.
                end = (self._sink._failure,)
            if end is not None:
                failure = end[0]
                if failure is None:
                    raise StopAsyncIteration
                self.close()
                msg = (
                    f"the flow writing to this BroadcastSink failed "
                    f"({type(failure).__name__}: {failure}); this reader got every item "
                    "the sink was given before the failure"
                )
                raise FlowFailedError(msg) from failure
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


class _Readers(Generic[X]):
    """A sink's subscriptions, held weakly (see `BroadcastSink.__init__`).

    Not a `weakref.WeakSet`: its iteration costs a write of small batches
    a few percent.
    """

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Subscription[X]]] = {}

    def add(self, sub: Subscription[X]) -> None:
        refs, key = self._refs, id(sub)
        # The callback runs as the subscription is freed, before its id can
        # be another's; a discarded entry's reference, and with it its
        # callback, is gone already.
        refs[key] = weakref.ref(sub, lambda _ref: refs.pop(key, None))

    def discard(self, sub: Subscription[X]) -> None:
        self._refs.pop(id(sub), None)

    def now(self) -> list[Subscription[X]]:
        """The subscriptions now, as a list (they may unsubscribe meanwhile)."""
        return [sub for ref in list(self._refs.values()) if (sub := ref()) is not None]

    def __len__(self) -> int:
        return len(self._refs)


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

    Items written while nobody is subscribed are not kept. When the run
    ends, readers finish after draining their buffers; when it fails (even
    before the sink was built), their iteration then raises
    `FlowFailedError` (the flow's error is its ``__cause__``), so a reader
    can tell a failed flow from a finished one. A graceful stop or a
    cancellation of the run finishes them. The sink may serve one run after
    another: a reader waits for the first run, and for the next one once it
    has started; one that reads while no run is going, after one ended,
    ends at once rather than wait for a run that may never come. A reader
    of a run that ended takes nothing of a later run (it ends, or gets the
    failure, after its buffer). Two runs may write here at once: readers
    end when both have ended.

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
        # Weakly: a subscription dropped before it was ever read (a handler
        # that failed between subscribe() and its loop) unsubscribes itself,
        # instead of taking every item written, for ever.
        self._subscribers: _Readers[X] = _Readers()
        # Runs writing here now (two flows may share the sink).
        self._runs = 0
        # No run is going: one ended (readers end after their buffers).
        # Before the first run, readers wait for it.
        self._ended = False
        # The first error of the runs that ended last, if one failed.
        self._failure: BaseException | None = None
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
        return _BroadcastPartition(self)

    def _aiowax_run_starting(self) -> None:
        # The engine's run-level call (`aiowax._engine.edges`): readers of
        # this run wait for its items, even before the sink is built.
        if self._runs == 0:
            self._ended = False
            self._failure = None
        self._runs += 1

    def _aiowax_run_ended(self, failure: Exception | None) -> None:
        # Not when the partitions close: in cluster mode they close and are
        # built again at each rebalance, within one run; and a run that
        # failed before building them must end its readers too. With two
        # runs writing here, the readers end with the last one.
        self._runs -= 1
        if self._failure is None:
            self._failure = failure
        if self._runs > 0:
            return
        self._ended = True
        for sub in self._subscribers.now():
            # Done: it takes no item of a later run, and ends as this one did.
            sub._end = (self._failure,)
            self._subscribers.discard(sub)
            sub._event.set()

    async def _write(self, items: list[X]) -> None:
        if not items or not self._subscribers:
            return
        end = len(items)
        behind: list[tuple[Subscription[X], int]] = []
        for sub in self._subscribers.now():
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


class _BroadcastPartition(StatelessSinkPartition[X]):
    def __init__(self, sink: BroadcastSink[X]) -> None:
        self._sink = sink

    async def write_batch(self, items: list[X]) -> None:
        await self._sink._write(items)
