"""The output operator: writes each batch to this worker's sink partitions."""

from __future__ import annotations

from typing import Any

import anyio

from aiowax._definition.flow import Step
from aiowax._definition.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax._engine.failure import StepFailed, fail, maybe_await, note, user_await
from aiowax._engine.stateless import Operator
from aiowax._util import describe, is_async_callable

SinkPartition = StatefulSinkPartition[Any, Any] | StatelessSinkPartition[Any]


def sink_part_names(step: Step) -> list[str]:
    """The partitions of a step's `FixedPartitionedSink`, listed once per run."""
    try:
        names = list(step.args["sink"].list_parts())
    except Exception as error:
        raise fail(error, step.step_id, "output list_parts") from None
    if not names:
        msg = f"output step {step.step_id!r}: list_parts returned no partitions"
        raise StepFailed(ValueError(msg))
    return names


class OutputOp(Operator):
    """Writes batches, then passes them on unchanged.

    A `DynamicSink` gets one partition per worker and whole batches. A
    `FixedPartitionedSink` gets ``(key, value)`` items: each value goes to the
    partition ``part_fn(key)`` picks, in arrival order.
    """

    is_async = True
    role = "output write_batch"

    def __init__(
        self,
        step: Step,
        worker_index: int,
        worker_count: int,
        passes_on: bool,
        part_names: list[str] | None = None,
    ) -> None:
        super().__init__(step, worker_index)
        self.sink = step.args["sink"]
        self.worker_count = worker_count
        # Only copy batches for downstream steps when there are any: a sink
        # may legitimately clear or reuse the list it was handed.
        self.passes_on = passes_on
        self.parts: dict[int, SinkPartition] = {}
        self.part_names: list[str] = part_names or []
        self.async_write: dict[int, bool] = {}
        self.resume: dict[str, Any] = {}

    def _check_part(self, part: object, role: str) -> SinkPartition:
        if not isinstance(part, StatefulSinkPartition | StatelessSinkPartition):
            msg = (
                f"output step {self.step_id!r}: {role} must return a sink partition, "
                f"got {describe(part)}"
            )
            raise StepFailed(TypeError(msg))
        return part

    async def start(self) -> None:
        """Build the partitions this worker writes to."""
        sink = self.sink
        if isinstance(sink, DynamicSink):
            try:
                part = await maybe_await(sink.build(self.worker_index, self.worker_count))
            except Exception as error:
                raise fail(error, self.step_id, "output build") from None
            self.parts[0] = self._check_part(part, "build")
        elif isinstance(sink, FixedPartitionedSink):
            if not self.part_names:
                self.part_names = sink_part_names(self.step)
            for index, name in enumerate(self.part_names):
                if index % self.worker_count != self.worker_index:
                    continue  # another worker owns it; the exchange routes there
                try:
                    part = await maybe_await(sink.build_part(name, self.resume.get(name)))
                except Exception as error:
                    raise fail(error, self.step_id, "output build_part") from None
                self.parts[index] = self._check_part(part, "build_part")
        else:
            msg = (
                f"output step {self.step_id!r}: the sink must subclass FixedPartitionedSink "
                f"or DynamicSink, got {type(sink).__name__}"
            )
            raise StepFailed(TypeError(msg))
        self.async_write = {i: is_async_callable(p.write_batch) for i, p in self.parts.items()}

    async def _write(self, index: int, values: list[Any]) -> None:
        part = self.parts[index]
        try:
            if self.async_write[index]:
                await user_await(part.write_batch(values))  # type: ignore[arg-type]
            else:
                part.write_batch(values)
        except Exception as error:
            raise fail(error, self.step_id, self.role) from None

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        if not self.part_names:
            await self._write(0, batch.copy() if self.passes_on else batch)
            return batch
        routed, bad = self._route(batch)
        for index, values in routed.items():
            await self._write(index, values)
        if bad is not None:
            # Everything before the bad item was written; pass it on too.
            raise StepFailed(bad.error, batch[: bad.index])
        return batch

    def _route(self, batch: list[Any]) -> tuple[dict[int, list[Any]], _BadItem | None]:
        count = len(self.part_names)
        part_fn = self.sink.part_fn
        routed: dict[int, list[Any]] = {}
        for position, item in enumerate(batch):
            if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
                msg = (
                    f"output step {self.step_id!r}: a FixedPartitionedSink needs "
                    f"(str key, value) 2-tuples, got {describe(item)}"
                )
                return routed, _BadItem(position, TypeError(msg))
            key, value = item
            try:
                index = part_fn(key) % count
            except Exception as error:
                return routed, _BadItem(position, note(error, self.step_id, "output part_fn"))
            routed.setdefault(index, []).append(value)
        return routed, None

    def start_recovery(self, restored: dict[str, Any]) -> None:
        self.resume = restored

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, part in self.parts.items():
            if isinstance(part, StatefulSinkPartition):
                try:
                    out[self.part_names[index]] = part.snapshot()
                except Exception as error:
                    raise fail(error, self.step_id, "output snapshot") from None
        return out

    async def aclose(self) -> None:
        first: BaseException | None = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for part in self.parts.values():
                try:
                    await maybe_await(part.close())
                except Exception as error:
                    first = first or note(error, self.step_id, "output close")
        if first is not None:
            raise StepFailed(first)


class _BadItem:
    __slots__ = ("error", "index")

    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error
