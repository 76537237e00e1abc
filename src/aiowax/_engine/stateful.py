"""Keyed operators: stateful_map, reduce, batch (and redistribute's pass-through).

Each runs on the worker that owns its keys (the exchange before it sees to
that) and keeps its state in plain dicts. Sync user functions run in a tight
loop over the batch; async ones through `run_per_key`, which keeps each
key's calls in order while different keys overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from aiowax._definition.flow import Step
from aiowax._engine.clock import Clock
from aiowax._engine.exchange import bad_item_error
from aiowax._engine.failure import StepFailed, fail, maybe_await
from aiowax._engine.keyed import NO_OUTPUT, run_per_key
from aiowax._engine.snapshots import DELETED
from aiowax._engine.stateless import Operator
from aiowax._engine.timeutil import to_us
from aiowax._util import describe, is_async_callable


class KeyedOp(Operator):
    """Base of the keyed operators: a dict of per-key state."""

    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.state: dict[str, Any] = {}
        # Keys changed since the last snapshot; None while recovery is off,
        # so runs without it do not pay for the bookkeeping.
        self.dirty: set[str] | None = None

    def start_recovery(self, restored: dict[str, Any]) -> None:
        self.state.update(restored)
        self.dirty = set()

    def snapshot(self) -> dict[str, Any]:
        if not self.dirty:
            return {}
        state = self.state
        out = {key: state.get(key, DELETED) for key in self.dirty}
        self.dirty.clear()
        return out

    def _bad(self, item: object) -> StepFailed:
        return StepFailed(bad_item_error(self.step_id, item))

    def state_size(self) -> int:
        """Keys holding state on this worker (a test and metrics view)."""
        return len(self.state)


class StatefulMapOp(KeyedOp):
    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.builder: Callable[[], Any] = step.args["builder"]
        self.mapper: Callable[[Any, Any], Any] = step.args["mapper"]
        self.is_async = is_async_callable(self.builder) or is_async_callable(self.mapper)

    def _bad_result(self, result: object) -> StepFailed:
        msg = (
            f"stateful_map step {self.step_id!r}: the mapper must return a "
            f"(new_state, output) 2-tuple, got {describe(result)}"
        )
        return StepFailed(TypeError(msg))

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.items_checked
        out: list[Any] = []
        append = out.append
        states = self.state
        builder = self.builder
        mapper = self.mapper
        dirty = self.dirty
        try:
            for item in batch:
                if unchecked and (
                    type(item) is not tuple or len(item) != 2 or type(item[0]) is not str
                ):
                    raise self._bad(item)
                key, value = item
                state = states.get(key)
                if state is None:
                    try:
                        state = builder()
                    except Exception as error:
                        raise fail(error, self.step_id, "stateful_map builder") from None
                try:
                    result = mapper(state, value)
                except Exception as error:
                    raise fail(error, self.step_id, "stateful_map mapper") from None
                if type(result) is not tuple or len(result) != 2:
                    raise self._bad_result(result)
                new_state, output = result
                if new_state is None:
                    states.pop(key, None)
                else:
                    states[key] = new_state
                if dirty is not None:
                    dirty.add(key)
                append((key, output))
        except StepFailed as failed:
            failed.partial = out
            raise
        return out

    async def _one(self, key: str, value: Any) -> Any:
        state = self.state.get(key)
        if state is None:
            try:
                state = await maybe_await(self.builder())
            except Exception as error:
                raise fail(error, self.step_id, "stateful_map builder") from None
        try:
            result = await maybe_await(self.mapper(state, value))
        except Exception as error:
            raise fail(error, self.step_id, "stateful_map mapper") from None
        if type(result) is not tuple or len(result) != 2:
            raise self._bad_result(result)
        new_state, output = result
        if new_state is None:
            self.state.pop(key, None)
        else:
            self.state[key] = new_state
        if self.dirty is not None:
            self.dirty.add(key)
        return (key, output)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        return await run_per_key(self.step_id, batch, self._one)


class ReduceOp(KeyedOp):
    def __init__(self, step: Step, worker_index: int) -> None:
        super().__init__(step, worker_index)
        self.reducer: Callable[[Any, Any], Any] = step.args["reducer"]
        self.is_complete: Callable[[Any], Any] = step.args["is_complete"]
        self.is_async = is_async_callable(self.reducer) or is_async_callable(self.is_complete)

    def _not_bool(self, result: object, acc: object) -> StepFailed:
        msg = (
            f"reduce step {self.step_id!r}: is_complete must return a bool, "
            f"got {describe(result)} for the accumulator {describe(acc)}"
        )
        return StepFailed(TypeError(msg))

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.items_checked
        out: list[Any] = []
        accs = self.state
        reducer = self.reducer
        is_complete = self.is_complete
        missing = _MISSING
        dirty = self.dirty
        try:
            for item in batch:
                if unchecked and (
                    type(item) is not tuple or len(item) != 2 or type(item[0]) is not str
                ):
                    raise self._bad(item)
                key, value = item
                acc = accs.get(key, missing)
                if acc is missing:
                    acc = value
                else:
                    try:
                        acc = reducer(acc, value)
                    except Exception as error:
                        raise fail(error, self.step_id, "reduce reducer") from None
                try:
                    done = is_complete(acc)
                except Exception as error:
                    raise fail(error, self.step_id, "reduce is_complete") from None
                if done is True:
                    accs.pop(key, None)
                    out.append((key, acc))
                elif done is False:
                    accs[key] = acc
                else:
                    raise self._not_bool(done, acc)
                if dirty is not None:
                    dirty.add(key)
        except StepFailed as failed:
            failed.partial = out
            raise
        return out

    async def _one(self, key: str, value: Any) -> Any:
        acc = self.state.get(key, _MISSING)
        if acc is _MISSING:
            acc = value
        else:
            try:
                acc = await maybe_await(self.reducer(acc, value))
            except Exception as error:
                raise fail(error, self.step_id, "reduce reducer") from None
        try:
            done = await maybe_await(self.is_complete(acc))
        except Exception as error:
            raise fail(error, self.step_id, "reduce is_complete") from None
        if type(done) is not bool:
            raise self._not_bool(done, acc)
        if self.dirty is not None:
            self.dirty.add(key)
        if done:
            self.state.pop(key, None)
            return (key, acc)
        self.state[key] = acc
        return NO_OUTPUT

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        return await run_per_key(self.step_id, batch, self._one)

    # Incomplete accumulators are dropped at the end of input, as in the
    # reference: ``flush`` keeps the base class's empty result.


class TimedOp(KeyedOp):
    """A keyed operator with deadlines on the event-loop clock.

    The step's timer task sleeps until `next_deadline` and then puts a tick
    in the step's own channel; the step answers it with `on_tick`. `wake` is
    set whenever the earliest deadline may have moved earlier.
    """

    def __init__(self, step: Step, worker_index: int, clock: Clock) -> None:
        super().__init__(step, worker_index)
        self.clock = clock
        self.now = clock.timer()
        self.wake = anyio.Event()
        self.ticked = anyio.Event()

    def next_deadline(self) -> float | None:
        raise NotImplementedError

    def on_tick(self) -> list[Any]:
        raise NotImplementedError

    async def atick(self) -> list[Any]:
        return self.on_tick()


class BatchOp(TimedOp):
    def __init__(self, step: Step, worker_index: int, clock: Clock) -> None:
        super().__init__(step, worker_index, clock)
        self.max_size: int = step.args["max_size"]
        self.timeout: float = step.args["timeout"].total_seconds()
        # Key -> deadline, in the order the lists started: as every list
        # waits the same timeout, the first entry is always the earliest.
        self.deadlines: dict[str, float] = {}

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.items_checked
        out: list[Any] = []
        lists = self.state
        deadlines = self.deadlines
        max_size = self.max_size
        now = self.now()
        was_idle = not deadlines
        dirty = self.dirty
        try:
            for item in batch:
                if unchecked and (
                    type(item) is not tuple or len(item) != 2 or type(item[0]) is not str
                ):
                    raise self._bad(item)
                key, value = item
                values = lists.get(key)
                if values is None:
                    values = lists[key] = []
                    deadlines[key] = now + self.timeout
                values.append(value)
                if len(values) >= max_size:
                    del lists[key], deadlines[key]
                    out.append((key, values))
                if dirty is not None:
                    dirty.add(key)
        except StepFailed as failed:
            failed.partial = out
            raise
        out.extend(self.on_tick())
        if was_idle and deadlines:
            self.wake.set()
        return out

    def next_deadline(self) -> float | None:
        for deadline in self.deadlines.values():
            return deadline
        return None

    def on_tick(self) -> list[Any]:
        out: list[Any] = []
        now = self.now()
        deadlines = self.deadlines
        while deadlines:
            key, deadline = next(iter(deadlines.items()))
            if deadline > now:
                break
            del deadlines[key]
            out.append((key, self.state.pop(key)))
            if self.dirty is not None:
                self.dirty.add(key)
        return out

    def start_recovery(self, restored: dict[str, Any]) -> None:
        # Saved deadlines are wall-clock times: time the flow was down
        # counts, and lists whose timeout passed meanwhile go out at once.
        now, wall = self.now(), to_us(self.clock.now())
        for key, (values, deadline_us) in sorted(restored.items(), key=lambda kv: kv[1][1]):
            self.state[key] = values
            self.deadlines[key] = now + (deadline_us - wall) / 1e6
        self.dirty = set()
        if self.deadlines:
            self.wake.set()

    def snapshot(self) -> dict[str, Any]:
        if not self.dirty:
            return {}
        now, wall = self.now(), to_us(self.clock.now())
        out: dict[str, Any] = {}
        for key in self.dirty:
            values = self.state.get(key)
            if values is None:
                out[key] = DELETED
            else:
                out[key] = (values, wall + round((self.deadlines[key] - now) * 1e6))
        self.dirty.clear()
        return out

    async def flush(self) -> list[Any]:
        out = list(self.state.items())
        if self.dirty is not None:
            self.dirty.update(self.state)
        self.state.clear()
        self.deadlines.clear()
        return out


class RedistributeOp(Operator):
    """Passes batches on; the exchange in front of it did the spreading."""

    def process(self, batch: list[Any]) -> list[Any]:
        return batch


_MISSING: Any = object()
