"""Operators that keep no state: map, filter, filter_map, flat_map, inspect*.

Each operator turns a batch into a batch. Sync user functions are applied
with C-level ``map`` into a list that keeps the results of the calls before
a failing one (``list.extend`` retains what it appended); async ones run
concurrently through `call_ordered`. Either way a failure carries the output
of the items before it, which the engine passes on before stopping.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain, compress, repeat
from typing import Any

from aiowax._definition.flow import Step
from aiowax._engine.calls import PartialResults, call_ordered
from aiowax._engine.failure import StepFailed, fail
from aiowax._util import describe, is_async_callable, is_asyncgen_callable


class Operator:
    """One step's logic on one worker; the engine's step task drives it.

    Sync operators implement `process`; async ones set ``is_async`` and
    implement `aprocess`. Both return the output batch (maybe empty).
    """

    is_async = False
    #: Names the user code in error notes ("map mapper"...).
    role = "step"
    #: Set by the runner when an exchange in front already checked that every
    #: item is a (str, value) pair: keyed steps' hot loops skip the check.
    items_checked = False

    def __init__(self, step: Step, worker_index: int) -> None:
        self.step = step
        self.step_id = step.step_id
        self.worker_index = worker_index
        self.epoch = 1

    def process(self, batch: list[Any]) -> list[Any]:
        raise NotImplementedError

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        return self.process(batch)

    async def flush(self) -> list[Any]:
        """Return what is left to emit at the end of input."""
        return []

    def start_recovery(self, restored: dict[str, Any]) -> None:
        """Take over restored state and start tracking changes for snapshots."""

    def snapshot(self) -> dict[str, Any]:
        """The state changes since the last snapshot, by state key.

        A key whose state is gone maps to `aiowax._engine.snapshots.DELETED`.
        """
        return {}

    async def aclose(self) -> None:
        """Release what the operator holds; called once, whatever happened."""


def _stopped(op: Operator, batch: list[Any], index: int, partial: list[Any]) -> StepFailed:
    """The user function raised StopIteration on ``batch[index]``.

    C-level ``map`` ends quietly on a StopIteration from the function it
    calls, so the fast paths check that every item was processed.
    """
    msg = f"{op.role} raised StopIteration on item {describe(batch[index])}"
    return fail(RuntimeError(msg), op.step_id, op.role, partial)


def _user_fn(step: Step, name: str) -> Callable[..., Any]:
    fn: Callable[..., Any] = step.args[name]
    return fn


class MapOp(Operator):
    role = "map mapper"

    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.fn = _user_fn(step, "mapper")
        self.is_async = is_async_callable(self.fn)

    def process(self, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        try:
            out.extend(map(self.fn, batch))
        except Exception as error:
            raise fail(error, self.step_id, self.role, out) from None
        if len(out) != len(batch):
            raise _stopped(self, batch, len(out), out)
        return out

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        try:
            return await call_ordered(self.fn, batch)
        except PartialResults as p:
            raise fail(p.error, self.step_id, self.role, p.done) from None


class FilterOp(Operator):
    role = "filter predicate"

    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.fn = _user_fn(step, "predicate")
        self.is_async = is_async_callable(self.fn)

    def _keep(self, batch: list[Any], flags: list[Any]) -> list[Any]:
        # One C-level pass over the flag types; the slow path only on error.
        if not {type(f) for f in flags} <= {bool}:
            for i, f in enumerate(flags):
                if type(f) is not bool:
                    msg = (
                        f"filter step {self.step_id!r}: the predicate must return a bool, "
                        f"got {describe(f)} for item {describe(batch[i])}"
                    )
                    kept = list(compress(batch[:i], flags[:i]))
                    raise StepFailed(TypeError(msg), kept)
        return list(compress(batch, flags))

    def process(self, batch: list[Any]) -> list[Any]:
        flags: list[Any] = []
        try:
            flags.extend(map(self.fn, batch))
        except Exception as error:
            kept = self._keep(batch, flags)
            raise fail(error, self.step_id, self.role, kept) from None
        if len(flags) != len(batch):
            raise _stopped(self, batch, len(flags), self._keep(batch, flags))
        return self._keep(batch, flags)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        try:
            flags = await call_ordered(self.fn, batch)
        except PartialResults as p:
            kept = self._keep(batch, p.done)
            raise fail(p.error, self.step_id, self.role, kept) from None
        return self._keep(batch, flags)


class FilterMapOp(MapOp):
    role = "filter_map mapper"

    def process(self, batch: list[Any]) -> list[Any]:
        try:
            out = super().process(batch)
        except StepFailed as f:
            f.partial = [x for x in f.partial if x is not None]
            raise
        return [x for x in out if x is not None]

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        try:
            out = await super().aprocess(batch)
        except StepFailed as f:
            f.partial = [x for x in f.partial if x is not None]
            raise
        return [x for x in out if x is not None]


class FlatMapOp(Operator):
    role = "flat_map mapper"

    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.fn = _user_fn(step, "mapper")
        self.is_asyncgen = is_asyncgen_callable(self.fn)
        self.is_async = self.is_asyncgen or is_async_callable(self.fn)

    def process(self, batch: list[Any]) -> list[Any]:
        # Two C-level passes: call the mapper on every item, then flatten.
        # The length check catches a StopIteration, which ``map`` swallows.
        parts: list[Any] = []
        error: Exception | None = None
        try:
            parts.extend(map(self.fn, batch))
        except Exception as e:
            error = e
        out: list[Any] = []
        try:
            out.extend(chain.from_iterable(parts))
        except Exception as e:
            raise fail(e, self.step_id, self.role, out) from None
        if error is not None:
            raise fail(error, self.step_id, self.role, out) from None
        if len(parts) != len(batch):
            raise _stopped(self, batch, len(parts), out)
        return out

    async def _collect(self, item: Any) -> list[Any]:
        if self.is_asyncgen:
            return [x async for x in self.fn(item)]
        return list(await self.fn(item))

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        try:
            parts = await call_ordered(self._collect, batch)
        except PartialResults as p:
            raise fail(
                p.error, self.step_id, self.role, list(chain.from_iterable(p.done))
            ) from None
        return list(chain.from_iterable(parts))


class InspectOp(Operator):
    """Base of the inspectors: call, ignore the result, pass the items on."""

    role = "inspect inspector"

    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.fn = _user_fn(step, "inspector")
        self.is_async = is_async_callable(self.fn)

    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, batch)

    def _call_one(self, item: Any) -> Any:
        return self.fn(item)

    def process(self, batch: list[Any]) -> list[Any]:
        done: list[Any] = []
        try:
            done.extend(self._calls(batch))
        except Exception as error:
            raise fail(error, self.step_id, self.role, batch[: len(done)]) from None
        if len(done) != len(batch):
            raise _stopped(self, batch, len(done), batch[: len(done)])
        return batch

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        try:
            await call_ordered(self._call_one, batch)
        except PartialResults as p:
            raise fail(p.error, self.step_id, self.role, batch[: len(p.done)]) from None
        return batch


class InspectEpochOp(InspectOp):
    role = "inspect_epoch inspector"

    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, repeat(self.epoch), batch)

    def _call_one(self, item: Any) -> Any:
        return self.fn(self.epoch, item)


class InspectWorkerOp(InspectOp):
    role = "inspect_worker inspector"

    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, batch, repeat(self.worker_index))

    def _call_one(self, item: Any) -> Any:
        return self.fn(item, self.worker_index)
