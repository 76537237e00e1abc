"""The output operator: writes each batch to this worker's sink partitions."""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any

import anyio

from aiowax._definition.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax._definition.steps import OutputStep
from aiowax._engine.aio import user_await
from aiowax._engine.errors import StepFailed, fail
from aiowax._engine.ops.base import Operator, StepEnv, StepTimer
from aiowax._engine.routing import split_by_sink_part
from aiowax._engine.usercode import maybe_await
from aiowax._util import is_async_callable

SinkPartition = StatefulSinkPartition[Any, Any] | StatelessSinkPartition[Any]

#: Seconds after a write left in flight before the output step confirms it.
FLUSH_AFTER_S = 1.0


def sink_part_names(step: OutputStep) -> tuple[str, ...]:
    """The partitions of a step's `FixedPartitionedSink`, listed once per run."""
    assert isinstance(step.sink, FixedPartitionedSink)
    try:
        names = tuple(step.sink.list_parts())
    except BaseException as error:
        raise fail(error, step.step_id, "output list_parts") from None
    if not names:
        msg = f"output step {step.step_id!r}: list_parts returned no partitions"
        raise StepFailed(ValueError(msg))
    return names


def _write_method(part: SinkPartition) -> Callable[[list[Any]], Any]:
    """The partition's private async write hook if it has one, else ``write_batch``.

    A private hook of aiowax's own partitions (``aiowax._connectors.files``):
    their public ``write_batch`` is synchronous, as the reference's, and
    ``_aiowax_awrite_batch(values)`` does the same write in a worker thread.
    """
    hook: Callable[[list[Any]], Any] | None = getattr(part, "_aiowax_awrite_batch", None)
    return hook if hook is not None else part.write_batch


def _flush_method(part: SinkPartition) -> Callable[[], Any] | None:
    """The partition's private hook that confirms the writes it left in flight, if any.

    A partition of aiowax's own (``aiowax._connectors.kafka``) may return
    from ``_aiowax_awrite_batch`` before its writes are confirmed;
    ``_aiowax_aflush()`` waits for them and raises if one failed. The
    output step awaits it before each epoch end passes on and at the end of
    the input, so no epoch is committed before its output is written.
    """
    hook: Callable[[], Any] | None = getattr(part, "_aiowax_aflush", None)
    return hook


class OutputOp(Operator):
    """Writes batches, then passes them on unchanged.

    A `DynamicSink` gets one partition per worker and whole batches. A
    `FixedPartitionedSink` gets ``(key, value)`` items: each value goes to the
    partition ``part_fn(key)`` picks, in arrival order.
    """

    is_async = True
    gathers = False

    def __init__(self, step: OutputStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.sink = step.sink
        # Only copy batches for downstream steps when there are any: a sink
        # may legitimately clear or reuse the list it was handed.
        self.passes_on = env.passes_on
        self.parts: dict[int, SinkPartition] = {}
        self.part_names = env.sink_parts
        self.async_write: dict[int, bool] = {}
        self.flushers: list[Callable[[], Any]] = []
        # Writes left in flight are confirmed at the latest this long after
        # the first of them, so a delivery failure surfaces even while the
        # input is idle between epoch ends.
        self.now = env.clock.timer()
        self.flush_due: float | None = None
        self.flush_timer = StepTimer(env.clock, lambda: self.flush_due)
        self.timer = self.flush_timer
        #: Items its sink partitions accepted, and the batches they came in
        #: (read by `aiowax._stats`: the mean write latency).
        self.written = 0
        self.batches = 0

    def _check_part(self, part: object, role: str) -> SinkPartition:
        if not isinstance(part, StatefulSinkPartition | StatelessSinkPartition):
            raise self.type_error(f"{role} must return a sink partition", part)
        return part

    async def start(self, restored: dict[str, Any] | None) -> None:
        """Build the partitions this worker writes to."""
        sink = self.sink
        worker, workers = self.env.worker_index, self.env.worker_count
        if isinstance(sink, DynamicSink):
            try:
                part = await maybe_await(sink.build(worker, workers))
            except BaseException as error:
                raise fail(error, self.step_id, "output build") from None
            self.parts[0] = self._check_part(part, "build")
        elif isinstance(sink, FixedPartitionedSink):
            resume = restored or {}
            for index, name in enumerate(self.part_names):
                if index % workers != worker:
                    continue  # another worker owns it; the exchange routes there
                try:
                    part = await maybe_await(sink.build_part(name, resume.get(name)))
                except BaseException as error:
                    raise fail(error, self.step_id, "output build_part") from None
                self.parts[index] = self._check_part(part, "build_part")
        else:
            raise self.type_error(
                "the sink must subclass FixedPartitionedSink or DynamicSink",
                type(sink).__name__,
            )
        self.async_write = {i: is_async_callable(_write_method(p)) for i, p in self.parts.items()}
        self.flushers = [h for h in map(_flush_method, self.parts.values()) if h is not None]
        self.flushes = bool(self.flushers)

    async def _write(self, index: int, values: list[Any]) -> None:
        part = self.parts[index]
        try:
            if self.async_write[index]:
                await user_await(_write_method(part)(values))
            else:
                done = part.write_batch(values)
                if done is not None and isawaitable(done):
                    # A sync write_batch that returns a coroutine (a lambda
                    # around an async client): awaited, as a map's would be.
                    await user_await(done)
        except BaseException as error:
            raise self.fail(error) from None
        self.written += len(values)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        self.batches += 1
        if self.flushes and self.flush_due is None:
            self.flush_due = self.now() + FLUSH_AFTER_S
            self.flush_timer.rearm()
        if not self.part_names:
            await self._write(0, batch.copy() if self.passes_on else batch)
            return batch
        assert isinstance(self.sink, FixedPartitionedSink)
        routed, failed = split_by_sink_part(
            self.step_id, self.sink.part_fn, len(self.part_names), batch
        )
        for index, items in routed.items():
            await self._write(index, [value for _, value in items])
        if failed is not None:
            # Everything before the bad item was written; pass it on too.
            raise failed
        return batch

    async def flush(self) -> None:
        self.flush_due = None
        for hook in self.flushers:
            try:
                await user_await(hook())
            except BaseException as error:
                raise fail(error, self.step_id, "output sink confirming its writes") from None

    async def atick(self) -> list[Any]:
        await self.flush()
        return []

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, part in self.parts.items():
            if isinstance(part, StatefulSinkPartition):
                try:
                    out[self.part_names[index]] = part.snapshot()
                except BaseException as error:
                    raise fail(error, self.step_id, "output snapshot") from None
        return out

    async def aclose(self) -> None:
        first: BaseException | None = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for part in self.parts.values():
                try:
                    # aiowax's own partitions may close off the loop (a
                    # producer waiting for its last deliveries).
                    aclose = getattr(part, "_aiowax_aclose", None)
                    await (aclose() if aclose is not None else maybe_await(part.close()))
                except BaseException as error:
                    first = first or fail(error, self.step_id, "output close").error
        if first is not None:
            raise StepFailed(first)
