"""Source lanes: one task per source partition, feeding its pipeline.

A lane calls ``next_batch``, sends what it got, and closes epochs. With a
``next_batch`` that keeps returning items at once, the lane coalesces
several results into one message (it stops once it holds `COALESCE_ITEMS`
items or has spent `COALESCE_SECONDS`), so a source of one-item batches does
not pay a channel hop per item; it never waits for more items to fill a
message. An ``async def next_batch`` is run until it first waits: one that
returns without waiting (a queue with a backlog) is gathered like a sync
one, and what was gathered goes on as soon as a read waits.

Gathering also ends once the source has caught up with its input: the
reads after the first have averaged less than a `CAUGHT_UP`-th of its
items. A live source's first read of a turn has what came in while the
steps ran, each later one only what came in during one call; a source
working off a backlog hands out about the same sizes from the first read
on, whether they vary (the lines of each block) or not. The steps after a
lane run only when it lets go of the loop, and an item crosses one step per
turn of the loop, so a lane that kept polling a live source for
`COALESCE_SECONDS` would hold every item in the pipeline that long for each
step it has still to cross.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from time import perf_counter
from types import CoroutineType
from typing import Any

import anyio

from aiowax._checks import describe
from aiowax._definition.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax._definition.steps import InputStep
from aiowax._engine.aio import (
    Doorbell,
    Suspended,
    run_until_suspended,
    user_await,
    yield_now,
)
from aiowax._engine.channels import AnyOutlet, EpochBarrier
from aiowax._engine.context import LANE_RUN, RunContext
from aiowax._engine.errors import (
    DownstreamGone,
    RoutingFailed,
    StepFailed,
    fail,
    with_side_task,
)
from aiowax._engine.ops.base import close_coroutines
from aiowax._engine.usercode import maybe_await
from aiowax._util import is_async_callable

#: Largest number of items a lane gathers into one message.
COALESCE_ITEMS = 1024
#: Longest a lane keeps calling a source that answers at once before it sends what it has.
COALESCE_SECONDS = 0.002
#: A gathering ends once at least two reads after its first have averaged
#: less than this fraction of the first's items (see the module docstring).
CAUGHT_UP = 4
#: Back-off after empty batches from a source that has no ``next_awake``.
BACKOFF_MIN = 0.001
BACKOFF_MAX = 0.02
logger = logging.getLogger("aiowax")

#: The base classes' ``next_awake``, which always answers None.
_NEVER_AWAKE = (StatefulSourcePartition.next_awake, StatelessSourcePartition.next_awake)

Partition = StatefulSourcePartition[Any, Any] | StatelessSourcePartition[Any]

#: Default of `Lane._snapshot`: take the partition's position now.
_NOW: Any = object()
#: What `Lane._read` holds until the read returns.
_ABANDONED: Any = object()


class _ReadAbandoned(Exception):
    """A graceful stop cancelled the read in flight; a later run reads it again."""


def lane_parts(step: InputStep, worker_count: int) -> list[list[str | None]]:
    """The partitions each worker reads, by worker (``None``: a dynamic one).

    ``list_parts`` is called once per run, so every worker sees one list.
    """
    source = step.source
    if isinstance(source, FixedPartitionedSource):
        try:
            parts = list(source.list_parts())
        except BaseException as error:
            raise fail(error, step.step_id, "input list_parts") from None
        for name in parts:
            if not isinstance(name, str):
                msg = (
                    f"input step {step.step_id!r}: list_parts must return str names, "
                    f"got {describe(name)}"
                )
                raise StepFailed(TypeError(msg))
        if len(set(parts)) != len(parts):
            msg = f"input step {step.step_id!r}: list_parts returned duplicate names: {parts!r}"
            raise StepFailed(ValueError(msg))
        return [
            [p for i, p in enumerate(parts) if i % worker_count == w] for w in range(worker_count)
        ]
    if isinstance(source, DynamicSource):
        return [[None] for _ in range(worker_count)]
    msg = (
        f"input step {step.step_id!r}: the source must subclass FixedPartitionedSource "
        f"or DynamicSource, got {type(source).__name__}"
    )
    raise StepFailed(TypeError(msg))


def _next_batch_method(part: Partition) -> Callable[[datetime | None], Any]:
    """The partition's private async read hook if it has one, else ``next_batch``.

    A private hook of aiowax's own partitions (``aiowax._connectors.files``):
    their public ``next_batch`` is synchronous, as the reference's, and
    ``_aiowax_anext_batch(sched)`` does the same read in a worker thread.
    """
    hook: Callable[[datetime | None], Any] | None = getattr(part, "_aiowax_anext_batch", None)
    return hook if hook is not None else part.next_batch


def _batch_fn(part: Partition) -> Callable[[datetime | None], Any]:
    method = _next_batch_method(part)
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return method
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind == p.VAR_POSITIONAL for p in params):
        # Later Bytewax releases dropped ``sched``; accept both shapes.
        return lambda _sched: method()  # type: ignore[call-arg]
    return method


def _as_list(batch: Any, step_id: str) -> list[Any]:
    """What ``next_batch`` returned, as a plain list: a list subclass or a tuple is taken.

    Anything else (a generator, a set, a dict) is refused. The real type is
    looked at, not ``__class__``, which a proxy object can fake.
    """
    if issubclass(type(batch), list | tuple):
        return list(batch)
    msg = f"input step {step_id!r}: next_batch must return a list, got {describe(batch)}"
    if inspect.isawaitable(batch):
        # A read the run cannot stop (no cancel scope around a sync call) is
        # not awaited on the user's behalf; closed, it warns of nothing.
        if inspect.iscoroutine(batch):
            batch.close()
        msg += "; a next_batch that awaits must be declared 'async def next_batch'"
    raise StepFailed(TypeError(msg))


def _coroutine_raised_stop(error: BaseException) -> bool:
    """Whether ``error`` is an ``async def next_batch``'s ``raise StopIteration``.

    Python turns a StopIteration leaving a coroutine into this RuntimeError
    (PEP 479). The end of a partition is StopIteration or StopAsyncIteration
    (the docs, as Bytewax's, say the first): it ends an async partition too.
    """
    return (
        type(error) is RuntimeError
        and isinstance(error.__cause__, StopIteration)
        and "raised StopIteration" in str(error)
    )


def _drain_on_stop(part: Partition | None) -> list[Any]:
    """What a partition already holds, handed over at once on a graceful stop.

    A private hook of in-process partitions: a `PushSource` told its senders
    their items were accepted, so a graceful stop must not drop them.
    """
    drain = getattr(part, "drain_on_stop", None)
    return list(drain()) if drain is not None else []


class Lane:
    """Reads one partition and sends its batches and epoch markers downstream."""

    def __init__(
        self,
        ctx: RunContext,
        step: InputStep,
        part_name: str | None,
        worker_index: int,
        outlet: AnyOutlet,
        barrier: EpochBarrier,
    ) -> None:
        self.ctx = ctx
        self.step = step
        self.part_name = part_name
        self.worker_index = worker_index
        self.outlet = outlet
        self.barrier = barrier
        self.epoch = ctx.start_epoch
        self.part: Partition | None = None
        # Items read but not yet sent; on failure they still go downstream.
        self.pending: list[Any] = []
        self.epoch_deadline = 0.0
        # Async partitions: while a read is in flight, a watcher task closes
        # the epochs that end meanwhile (with the position from before the
        # read), so one quiet partition never holds the others back.
        self.in_read = False
        self.pre_read: Any = None
        self.closing: anyio.Event | None = None
        self._read_bell = Doorbell()
        # The cancel scope of the read in flight: a graceful stop cancels it
        # (and only it), so what any other await of the lane was doing is
        # never cut short.
        self._read_scope = anyio.CancelScope()
        self._abandoned = False
        #: Whether the last async read waited: one that did not may be
        #: gathered with the next, as a sync source's batches are.
        self.read_waited = True
        #: The size of the first batch gathered into `pending` (0 while it
        #: is empty), and how many were gathered after it, counted only if
        #: it had `CAUGHT_UP` items or more (see `_caught_up`).
        self.floor = 0
        self.reads = 0
        #: Items sent downstream (read by `aiowax._stats`).
        self.items_read = 0
        #: Times the source's code raised (the run stops at the first).
        self.errors = 0
        #: Seconds spent waiting for the source (asleep until it may have
        #: items, awaiting an async read) or for the steps after it to run
        #: between two reads. Not busy, in the stats.
        self.waited_s = 0.0
        #: When the wait in progress began (``perf_counter``), 0.0 if none.
        self.waiting_since = 0.0
        #: When the lane stopped reading (``perf_counter``), None while it reads.
        self.ended_at: float | None = None

    def waited_total(self) -> float:
        """Seconds waiting for the source so far, the wait in progress included."""
        since = self.waiting_since
        return self.waited_s + (perf_counter() - since if since else 0.0)

    async def _wait_for_source(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable``, counting the time as waiting for the source."""
        started = self.waiting_since = perf_counter()
        try:
            return await awaitable
        finally:
            self.waited_s += perf_counter() - started
            self.waiting_since = 0.0

    def _caught_up(self, read: int = 0) -> bool:
        """Whether the reads gathered after the first averaged under a `CAUGHT_UP`-th of it.

        Two reads at least: one alone says little about a backlog whose
        batch sizes vary. Counted only after a first read of `CAUGHT_UP`
        items or more (`reads`).

        Args:
            read: The size of one more read, neither counted nor gathered
                yet (0: none).
        """
        reads = self.reads + (read > 0)
        gathered = len(self.pending) + read - self.floor
        return reads >= 2 and gathered * CAUGHT_UP < self.floor * reads

    def _send_gathered(self) -> None:
        """Send what was gathered, now that the read after it waits.

        Items do not wait for later ones, and an epoch the watcher closes
        during the read (at the position before it) has them all before its
        marker. Without awaiting: the suspended read may hold scopes of its
        own open, whose deadlines must not land in the lane's send. The lane
        gathers only while its outlet has room, and nothing ran since it
        looked, so this cannot wait.
        """
        # An engine invariant: gathered items must never wait for the read
        # after them (an epoch could close past them).
        assert self.outlet.has_room(), "gathered items with no room downstream"
        out, self.pending = self.pending, []
        self.floor = self.reads = 0
        self.outlet.send_nowait(out)
        self.items_read += len(out)

    async def _build(self) -> Partition:
        source: Any = self.step.source
        now = self.ctx.clock.now()
        role = "input build" if self.part_name is None else "input build_part"
        try:
            if self.part_name is None:
                made = source.build(now, self.worker_index, self.ctx.worker_count)
            else:
                resume = None
                if self.ctx.recovery is not None:
                    resume = self.ctx.recovery.restored(self.step.step_id).get(self.part_name)
                made = source.build_part(now, self.part_name, resume)
            part = await maybe_await(made)
        except BaseException as error:
            raise fail(error, self.step.step_id, role) from None
        if not isinstance(part, StatefulSourcePartition | StatelessSourcePartition):
            msg = (
                f"input step {self.step.step_id!r}: {role.split()[1]} must return a source "
                f"partition, got {describe(part)}"
            )
            raise StepFailed(TypeError(msg))
        return part

    async def run(self, downstream: set[tuple[int, int]]) -> None:
        """Read the partition until it ends, the run fails, or it is cancelled.

        Args:
            downstream: The pipeline tails that drain what this lane sends.
        """
        LANE_RUN.set(weakref.ref(self.ctx))  # this task's own context
        try:
            self.part = await self._build()
            if is_async_callable(_next_batch_method(self.part)):
                await self._run_async()
            else:
                await self._loop()
        except StepFailed as failed:
            # What was read before the failure still goes downstream.
            failed.partial = self.pending + failed.partial
            self.items_read += len(failed.partial)
            self.pending = []
            if isinstance(failed, RoutingFailed):
                # Those handed on before the refused one were read and sent.
                self.items_read += failed.passed
                self.ctx.count_routing_error(failed, self.worker_index)
            else:
                self.errors += 1
            await self.ctx.report(self.outlet, failed, downstream)
        finally:
            if self.ended_at is None:
                self.ended_at = perf_counter()
            self.barrier.leave()
            self.outlet.close()
            await self._close(downstream)

    async def _run_async(self) -> None:
        """The read loop of an async partition, with its epoch watcher."""

        async def read() -> None:
            try:
                await self._loop()
            except _ReadAbandoned:
                self._abandoned = True

        await with_side_task(read, self._watch)
        if self._abandoned:
            # The read in flight is abandoned: a later run reads it again.
            rest = _drain_on_stop(self.part)
            if rest:
                self.items_read += len(rest)
                await self.outlet.send(rest)
            self._snapshot(self.pre_read)
            await self.outlet.end_of_input(stopped=True)

    async def _watch(self) -> None:
        clock = self.ctx.clock
        # With epochs of one batch each, the lane closes them after every
        # read; step in only for a read that stays pending a while.
        grace = 0.0 if self.ctx.epoch_interval else BACKOFF_MAX
        while not self.ctx.stopping:
            await self._interruptible(clock.sleep_until(self.epoch_deadline + grace))
            if self.ctx.stopping:
                break
            if clock.monotonic() < self.epoch_deadline + grace:
                continue  # the lane closed that epoch itself
            if not self.in_read:
                # The lane is busy (sending, sleeping): it closes the epoch
                # itself, unless it starts a read first.
                await self._interruptible(self._read_bell.wait())
                continue
            self.closing = anyio.Event()
            try:
                await self._close_epoch(self.pre_read, self.ctx.epoch_interval or BACKOFF_MAX)
            finally:
                closing, self.closing = self.closing, None
                closing.set()
        if self.in_read:
            self._read_scope.cancel()

    def _mark_pre_read(self) -> None:
        """Take the position before a read, recorded if an epoch ends or a stop comes during it."""
        recovery = self.ctx.recovery
        if recovery is not None and isinstance(self.part, StatefulSourcePartition):
            try:
                position = self.part.snapshot()
            except BaseException as error:
                raise fail(error, self.step.step_id, "input snapshot") from None
            # Serialised now: the read may change the object returned (a dict
            # the partition keeps its position in).
            assert self.part_name is not None
            self.pre_read = recovery.freeze(self.step.step_id, self.part_name, position)

    async def _read(
        self,
        next_batch: Callable[[datetime | None], Any],
        sched: datetime | None,
        gather_until: float = 0.0,
        monotonic: Callable[[], float] = perf_counter,
    ) -> Any:
        """One async read, and with ``gather_until``, the ones after it that do not wait.

        Those are gathered into `pending` in the same cancel scope (a scope
        costs more than such a read) until ``monotonic()`` reaches
        ``gather_until`` or `COALESCE_ITEMS` are held; a read after which
        the source has caught up (`_caught_up`) is returned instead, for the
        caller to add and send.
        """
        self._mark_pre_read()
        if self.ctx.stopping:
            raise _ReadAbandoned
        scope = self._read_scope = anyio.CancelScope()
        batch: Any = _ABANDONED
        # The first gathered read's size (0: none yet). Below `CAUGHT_UP`
        # (one-item reads, the common case) later reads are not counted.
        floor = self.floor
        started = 0.0
        send_error: BaseException | None = None
        try:
            with scope:
                read: Any = next_batch(sched)
                while type(read) is CoroutineType:
                    # Run the read until it first waits (inside its scope:
                    # it may open scopes of its own). One that returns at
                    # once, a queue with a backlog, is done here.
                    read = run_until_suspended(read)
                    if type(read) is Suspended:
                        if self.pending:
                            try:
                                self._send_gathered()
                            except BaseException as error:
                                # The read waits with scopes of its own open:
                                # cancel it, and let it unwind them, before
                                # the error goes on.
                                send_error = error
                                scope.cancel()
                                cancelled = anyio.get_cancelled_exc_class()
                                with contextlib.suppress(Exception, cancelled):
                                    await read
                                raise
                        break
                    if not (
                        gather_until
                        and type(read) is list
                        and read
                        and len(self.pending) < COALESCE_ITEMS
                        and monotonic() < gather_until
                    ):
                        self.read_waited = False
                        return read
                    if not floor:
                        self.floor = floor = len(read)
                    elif floor >= CAUGHT_UP:
                        if self._caught_up(len(read)):
                            # The caller counts it, adds it and sends.
                            self.read_waited = False
                            return read
                        self.reads += 1
                    self.pending += read
                    self._mark_pre_read()
                    read = next_batch(sched)
                self.read_waited = True
                self.in_read = True
                self._read_bell.ring()
                # Timed here rather than through `_wait_for_source`: a
                # coroutine frame less for every read.
                started = self.waiting_since = perf_counter()
                batch = await user_await(read)
        except Exception as error:
            if not scope.cancel_called or error is send_error:
                raise
            # The stop's cancellation came out as another error (a client
            # that turns it into ConnectionError, say): the read was
            # abandoned all the same, and the stop is no failure.
            logger.info(
                "input step %r: its read, cancelled by the graceful stop, raised %s: %s",
                self.step.step_id,
                type(error).__name__,
                error,
            )
        finally:
            if started:
                self.waited_s += perf_counter() - started
                self.waiting_since = 0.0
            self.in_read = False
            if self.closing is not None:
                # The watcher is closing the epoch this read started in:
                # what the read returned belongs to the next one.
                await self.closing.wait()
        if batch is _ABANDONED:
            # Cancelled by a graceful stop before it returned: a read that
            # did return (a thread finishing, say) keeps its items.
            raise _ReadAbandoned
        return batch

    async def _close_epoch(self, position: Any, pace: float) -> None:
        """Snapshot, mark the end of the epoch, and wait for the other lanes."""
        self._snapshot(position)
        await self.outlet.epoch_end(self.epoch)
        self.epoch += 1
        await self.barrier.wait()
        if self.ctx.recovery is not None:
            await self.ctx.recovery.wait_for_room(self.epoch)
        self.epoch_deadline = self.ctx.clock.monotonic() + pace

    async def _interruptible(self, awaitable: Awaitable[Any]) -> tuple[Any, bool]:
        """Await ``awaitable`` unless a graceful stop interrupts it.

        Returns:
            Its result, and whether the stop interrupted it instead.
        """
        scope = anyio.CancelScope()
        if self.ctx.stopping:
            scope.cancel()
        self.ctx.wait_scopes.add(scope)
        result: Any = None
        try:
            with scope:
                result = await awaitable
        finally:
            self.ctx.wait_scopes.discard(scope)
        return result, scope.cancelled_caught

    def _snapshot(self, position: Any = _NOW) -> None:
        """Hand this partition's position for the current epoch to recovery."""
        recovery = self.ctx.recovery
        if recovery is None or not isinstance(self.part, StatefulSourcePartition):
            return
        if position is _NOW:
            try:
                position = self.part.snapshot()
            except BaseException as error:
                raise fail(error, self.step.step_id, "input snapshot") from None
        assert self.part_name is not None
        recovery.record(self.epoch, self.step.step_id, {self.part_name: position})

    async def _close(self, downstream: set[tuple[int, int]]) -> None:
        if self.part is None or self.ctx.abort:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await maybe_await(self.part.close())
            except BaseException as error:
                # Downstream may still hold output: let it drain first.
                failed = fail(error, self.step.step_id, "input close")
                self.ctx.record(failed.error, downstream)

    async def _sleep_until_awake(self, awake: datetime) -> None:
        """Sleep until ``awake``, closing epochs that end meanwhile.

        The other partitions of the input wait for this one at each epoch
        end: a partition sleeping until a far ``next_awake`` must keep
        closing epochs on time.
        """
        if not isinstance(awake, datetime):
            close_coroutines(awake)  # an async def next_awake: never awaited, say so once
            msg = (
                f"input step {self.step.step_id!r}: next_awake must return an aware "
                f"datetime or None, got {describe(awake)}"
            )
            raise StepFailed(TypeError(msg))
        if awake.tzinfo is None:
            msg = (
                f"input step {self.step.step_id!r}: next_awake must return an aware "
                f"datetime, got {awake!r}"
            )
            raise StepFailed(TypeError(msg))
        clock = self.ctx.clock
        deadline = clock.deadline_for(awake)
        pace = self.ctx.epoch_interval or BACKOFF_MAX
        while deadline > self.epoch_deadline and not self.ctx.stopping:
            _, interrupted = await self._wait_for_source(
                self._interruptible(clock.sleep_until(self.epoch_deadline))
            )
            if interrupted:
                return
            if clock.monotonic() >= self.epoch_deadline:  # else the watcher did
                await self._close_epoch(_NOW, pace)
        await self._wait_for_source(self._interruptible(clock.sleep_until(deadline)))

    async def _loop(self) -> None:
        assert self.part is not None
        clock = self.ctx.clock
        monotonic = clock.timer()
        interval = self.ctx.epoch_interval
        next_batch = _batch_fn(self.part)
        next_awake = self.part.next_awake
        # Most partitions keep the base class's next_awake (always None):
        # a Python call less per batch, which counts for one-item batches.
        asks_awake = getattr(next_awake, "__func__", None) not in _NEVER_AWAKE
        is_async = is_async_callable(_next_batch_method(self.part))
        step_id = self.step.step_id
        outlet = self.outlet
        sched: datetime | None = None
        backoff = BACKOFF_MIN
        self.epoch_deadline = monotonic() + interval
        # A partition may ask to be called later even the first time.
        try:
            first_awake = next_awake()
        except BaseException as error:
            raise fail(error, step_id, "input next_awake") from None
        if first_awake is not None:
            await self._sleep_until_awake(first_awake)
            sched = first_awake
        started = monotonic()
        while True:
            stopping = ended = self.ctx.stopping
            batch: Any
            try:
                if ended:
                    batch = _drain_on_stop(self.part)
                elif is_async:
                    # The read has a cancel scope of its own, which only a
                    # graceful stop cancels; the watcher closes the epochs
                    # that end while it is in flight.
                    gather_until = 0.0
                    if not asks_awake and outlet.has_room():
                        since = started if self.pending else monotonic()
                        gather_until = min(self.epoch_deadline, since + COALESCE_SECONDS)
                    batch = await self._read(next_batch, sched, gather_until, monotonic)
                else:
                    batch = next_batch(sched)
            except (StopIteration, StopAsyncIteration):
                ended = True
                batch = []
            except (_ReadAbandoned, DownstreamGone):
                raise  # a stop; or the steps after it stopped (their error is the run's)
            except BaseException as error:
                if not (is_async and _coroutine_raised_stop(error)):
                    raise fail(error, step_id, "input next_batch") from None
                ended = True
                batch = []
            if type(batch) is not list:
                batch = _as_list(batch, step_id)
            if batch:
                if not self.pending:
                    started = monotonic()
                    self.floor = len(batch)
                elif self.floor >= CAUGHT_UP:
                    self.reads += 1
                self.pending.extend(batch)
            awake = None
            if asks_awake:
                try:
                    awake = next_awake()
                except BaseException as error:
                    raise fail(error, step_id, "input next_awake") from None
            now = monotonic()
            if (
                batch
                and not ended
                and (not is_async or (not self.read_waited and outlet.has_room()))
                and awake is None
                and now < self.epoch_deadline
                and len(self.pending) < COALESCE_ITEMS
                and now - started < COALESCE_SECONDS
                and not self._caught_up()
            ):
                if asks_awake or is_async:
                    continue  # more may be ready right now: gather it first
                # The same, in a tighter loop: a sync source that answers at
                # once (one-item batches) pays only its own call and a clock
                # read per batch until the message is full or due.
                pending = self.pending
                limit = min(self.epoch_deadline, started + COALESCE_SECONDS)
                # The clock is read after every call: a source that turns slow
                # (a blocking read once its backlog is drained) must not hold
                # what was gathered, nor the event loop, past one more call.
                cap = COALESCE_ITEMS
                # So does a source that has caught up (`_caught_up`, inlined);
                # below `CAUGHT_UP` items first (one-item batches) that is
                # only an empty batch, which costs nothing more per call.
                floor = self.floor
                sized = floor >= CAUGHT_UP
                reads = self.reads
                try:
                    while True:
                        batch = next_batch(sched)
                        if type(batch) is not list or not batch:
                            if type(batch) is not list:
                                batch = _as_list(batch, step_id)
                            if not batch:
                                break
                        pending += batch
                        if len(pending) >= cap or monotonic() >= limit:
                            break
                        if sized:
                            reads += 1
                            if reads >= 2 and (len(pending) - floor) * CAUGHT_UP < floor * reads:
                                break
                except (StopIteration, StopAsyncIteration):
                    ended = True
                    batch = []
                except StepFailed:
                    raise
                except BaseException as error:
                    raise fail(error, step_id, "input next_batch") from None
                now = monotonic()
            sent = bool(self.pending)
            if sent:
                out, self.pending = self.pending, []
                self.floor = self.reads = 0
                await outlet.send(out)
                self.items_read += len(out)
            if ended:
                # The final position belongs to the last epoch: a later run
                # continues after everything this one read.
                self._snapshot()
                await outlet.end_of_input(stopping)
                # Ended now, not once the epoch watcher is wound down (the
                # steps after it may run first, on their own time).
                self.ended_at = perf_counter()
                return
            if now >= self.epoch_deadline:
                await self._close_epoch(_NOW, interval)
            if awake is not None:
                await self._sleep_until_awake(awake)
                sched = awake
                backoff = BACKOFF_MIN
            elif not batch and not sent:
                await self._wait_for_source(
                    self._interruptible(clock.sleep_until(monotonic() + backoff))
                )
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                # Items came this round (even if the last call had none): the
                # source is live, so it is called again once the steps ran,
                # and a wait after it starts short again.
                backoff = BACKOFF_MIN
                # Let the steps run: their time is not the input's work.
                await self._wait_for_source(yield_now())
