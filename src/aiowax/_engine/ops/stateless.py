"""Operators that keep no state: map, filter, filter_map, flat_map, inspect*, redistribute.

Each operator turns a batch into a batch. Sync user functions are applied
with C-level ``map`` into a list that keeps the results of the calls before
a failing one (``list.extend`` retains what it appended); async ones run
concurrently through `call_ordered`; with ``processes=``, the function runs
in worker processes (`aiowax._engine.ops.processes`), a batch at a time.
Either way a failure carries the output of the items before it, which the
engine passes on before stopping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from inspect import isawaitable
from itertools import chain, compress, repeat
from typing import Any

from aiowax._checks import describe
from aiowax._definition.steps import (
    FilterMapStep,
    FilterStep,
    FlatMapStep,
    InspectEpochStep,
    InspectStep,
    InspectWorkerStep,
    MapStep,
    PoolableStep,
)
from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.base import Operator, StepEnv, returned_awaitables
from aiowax._engine.ops.processes import ProcessPool
from aiowax._engine.usercode import call_ordered
from aiowax._util import is_async_callable, is_asyncgen_callable


def _stop_error(op: Operator, batch: list[Any], index: int) -> RuntimeError:
    """The user function raised StopIteration on ``batch[index]``.

    C-level ``map`` ends quietly on a StopIteration from the function it
    calls, so the fast paths check that every item was processed.
    """
    return RuntimeError(f"{op.role} raised StopIteration on item {describe(batch[index])}")


def _call_all(
    op: Operator,
    calls: Iterable[Any],
    batch: list[Any],
    finish: Callable[[list[Any]], list[Any]],
) -> list[Any]:
    """Run ``calls`` (the user function mapped over ``batch``) and ``finish`` the results.

    A failure passes on the output of the calls before it; awaitable results
    (a sync callable returning coroutines) are handed to the step to await.
    """
    results: list[Any] = []
    try:
        results.extend(calls)
    except BaseException as error:
        if returned_awaitables(results):
            raise op.awaiting(results, finish, error) from None
        raise op.fail(error, finish(results)) from None
    if returned_awaitables(results):
        stopped = None if len(results) == len(batch) else _stop_error(op, batch, len(results))
        raise op.awaiting(results, finish, stopped)
    if len(results) != len(batch):
        raise op.fail(_stop_error(op, batch, len(results)), finish(results))
    return finish(results)


def _inspected(batch: list[Any], done: list[Any]) -> list[Any]:
    """The items an inspector was called on: all of them, or those before a failure."""
    return batch if len(done) == len(batch) else batch[: len(done)]


def _flatten(parts: list[Any]) -> list[Any]:
    return list(chain.from_iterable(parts))


class AsyncCallingOp(Operator):
    """An operator calling an async function per item, its output passed on as it comes."""

    async def call_async(
        self,
        call: Callable[[Any], Any],
        batch: list[Any],
        finish: Callable[[list[Any], int], list[Any]],
    ) -> list[Any]:
        """``call`` on every item, concurrently, in order; output as results come.

        ``finish(results, start)`` makes the output of the results of items
        ``start`` on. The output of the first items goes out (`emit_early`)
        while later calls still run; what this returns, or a failure
        carries, is the output of the rest.
        """
        sent = 0
        emit = self.emit_early
        early = None
        # What the hand-over itself raised (``finish`` refusing a result, a
        # send failing): out as it is, not taken for a failed call's.
        handing: list[BaseException] = []
        if emit is not None:

            async def early(results: list[Any], start: int) -> None:
                nonlocal sent
                try:
                    out = finish(results, start)
                    sent = start + len(results)
                    if out:
                        await emit(out)
                except BaseException as error:
                    handing.append(error)
                    raise

        try:
            results = await call_ordered(call, batch, self.limit, early)
        except StepFailed as p:
            if handing and p is handing[0]:
                raise
            raise self.fail(p.error, finish(p.partial[sent:], sent)) from None
        return finish(results[sent:], sent)


class PoolableOp(AsyncCallingOp):
    """An operator whose sync function may run in worker processes (``processes=``)."""

    #: The worker processes, when the step asked for them.
    pool: ProcessPool | None = None

    def __init__(self, step: PoolableStep, env: StepEnv, fn: Any, flat: bool = False) -> None:
        super().__init__(step, env)
        self.fn = fn
        if step.processes is not None:
            self.pool = ProcessPool(self, fn, step.processes, flat)
        # Awaiting the processes is the async path too.
        self.is_async = self.pool is not None or is_async_callable(fn)

    async def start(self, restored: dict[str, Any] | None) -> None:
        await super().start(restored)
        if self.pool is not None:
            await self.pool.start()

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


class MapOp(PoolableOp):
    def __init__(self, step: MapStep | FilterMapStep, env: StepEnv) -> None:
        super().__init__(step, env, step.mapper)

    def _finish(self, out: list[Any]) -> list[Any]:
        """The output batch from the mapper's results."""
        return out

    def process(self, batch: list[Any]) -> list[Any]:
        return _call_all(self, map(self.fn, batch), batch, self._finish)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        if self.pool is not None:
            return await self.pool.apply(batch, self._finish)
        return await self.call_async(self.fn, batch, lambda out, _: self._finish(out))


class FilterOp(PoolableOp):
    def __init__(self, step: FilterStep, env: StepEnv) -> None:
        super().__init__(step, env, step.predicate)

    def _keep(self, batch: list[Any], flags: list[Any]) -> list[Any]:
        # C-level passes over the flag types (a list and a count by identity
        # cost less than a set of them); the slow path only on error.
        if list(map(type, flags)).count(bool) != len(flags):
            for i, f in enumerate(flags):
                if type(f) is not bool:
                    failed = self.type_error(
                        "the predicate must return a bool", f, f" for item {describe(batch[i])}"
                    )
                    failed.partial = list(compress(batch[:i], flags[:i]))
                    raise failed
        return list(compress(batch, flags))

    def process(self, batch: list[Any]) -> list[Any]:
        return _call_all(self, map(self.fn, batch), batch, lambda f: self._keep(batch, f))

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        if self.pool is not None:
            return await self.pool.apply(batch, lambda flags: self._keep(batch, flags))

        def keep(flags: list[Any], start: int) -> list[Any]:
            return self._keep(batch[start : start + len(flags)], flags)

        return await self.call_async(self.fn, batch, keep)


class FilterMapOp(MapOp):
    def _finish(self, out: list[Any]) -> list[Any]:
        return [x for x in out if x is not None]


class FlatMapOp(PoolableOp):
    def __init__(self, step: FlatMapStep, env: StepEnv) -> None:
        super().__init__(step, env, step.mapper, flat=True)
        self.is_asyncgen = is_asyncgen_callable(self.fn)
        self.is_async = self.is_async or self.is_asyncgen

    def process(self, batch: list[Any]) -> list[Any]:
        # Two C-level passes: call the mapper on every item, then flatten.
        # The length check catches a StopIteration, which ``map`` swallows.
        parts: list[Any] = []
        error: BaseException | None = None
        try:
            parts.extend(map(self.fn, batch))
        except BaseException as e:
            error = e
        if returned_awaitables(parts):
            raise self.awaiting(parts, _flatten, error)
        out: list[Any] = []
        try:
            out.extend(chain.from_iterable(parts))
        except BaseException as e:
            raise self.fail(e, out) from None
        if error is not None:
            raise self.fail(error, out) from None
        if len(parts) != len(batch):
            raise self.fail(_stop_error(self, batch, len(parts)), out)
        return out

    async def _collect(self, item: Any) -> list[Any]:
        if self.is_asyncgen:
            return [x async for x in self.fn(item)]
        parts = self.fn(item)
        if isawaitable(parts):
            parts = await parts
        # Else a sync mapper that returned a coroutine for some items only:
        # once the step switched to this path, its lists come here too.
        return list(parts)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        if self.pool is not None:
            return await self.pool.apply(batch, list)
        return await self.call_async(
            self._collect, batch, lambda parts, _: list(chain.from_iterable(parts))
        )


class InspectOp(AsyncCallingOp):
    """Base of the inspectors: call, ignore the result, pass the items on."""

    def __init__(
        self, step: InspectStep | InspectEpochStep | InspectWorkerStep, env: StepEnv
    ) -> None:
        super().__init__(step, env)
        self.fn: Any = step.inspector
        self.is_async = is_async_callable(self.fn)

    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, batch)

    def _call_one(self, item: Any) -> Any:
        return self.fn(item)

    def process(self, batch: list[Any]) -> list[Any]:
        return _call_all(self, self._calls(batch), batch, lambda d: _inspected(batch, d))

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        # The items inspected go on, those from the start of the batch
        # while the calls for later ones run.
        return await self.call_async(
            self._call_one, batch, lambda done, start: batch[start : start + len(done)]
        )


class InspectEpochOp(InspectOp):
    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, repeat(self.epoch), batch)

    def _call_one(self, item: Any) -> Any:
        return self.fn(self.epoch, item)


class InspectWorkerOp(InspectOp):
    def _calls(self, batch: list[Any]) -> Any:
        return map(self.fn, batch, repeat(self.worker_index))

    def _call_one(self, item: Any) -> Any:
        return self.fn(item, self.worker_index)


class RedistributeOp(Operator):
    """Passes batches on; the exchange in front of it did the spreading."""

    def process(self, batch: list[Any]) -> list[Any]:
        return batch
