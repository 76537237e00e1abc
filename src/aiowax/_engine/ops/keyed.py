"""Keyed operators: stateful_map and reduce, over a dict of per-key state.

Each runs on the worker that owns its keys (the exchange in front sees to
that). Sync user functions run in a tight loop over the batch; async ones
through `run_per_key`, which keeps each key's calls in order while
different keys overlap.

The hot loops check each item with the rule of `aiowax._keys.is_keyed_item`
written inline: a function call per item would cost more than the check
(``tests/test_keys.py`` holds every inlined copy to the rule). An item that
fails it goes through `aiowax._keys.as_keyed_item`, which makes a namedtuple
or a str-subclass key a plain pair, or refuses it.
"""

from __future__ import annotations

from inspect import isawaitable
from typing import Any, TypeVar

from aiowax._checks import describe
from aiowax._definition.steps import ReduceStep, StatefulMapStep, Step
from aiowax._engine.errors import StepFailed, fail
from aiowax._engine.ops.base import Operator, StepEnv
from aiowax._engine.usercode import NO_OUTPUT, KeyedCall, maybe_await, run_per_key
from aiowax._keys import as_keyed_item, bad_item_error
from aiowax._recovery.runtime import DELETED
from aiowax._util import is_async_callable

_MISSING: Any = object()

#: A table that held at least this many entries is rebuilt once it holds
#: fewer than a quarter of them (see `compacted`).
COMPACT_FROM = 1024

K = TypeVar("K")
V = TypeVar("V")


def compacted(table: dict[K, V], peak: int) -> tuple[dict[K, V], int]:
    """``table`` and its peak size, rebuilt if it fell well below that peak.

    CPython never shrinks a dict when entries go: the table of a million
    keys that all ended stays a million slots wide. A copy is sized for what
    is left. Called once a batch: the copy costs as many entries as are
    left, under a quarter of the deletions since the peak, so O(1) for each.
    """
    size = len(table)
    if size >= peak:
        return table, size
    if size < peak >> 2 and peak >= COMPACT_FROM:
        return dict(table), size
    return table, peak


class KeyedOp(Operator):
    """Base of the keyed operators: a dict of per-key state."""

    def __init__(self, step: Step, env: StepEnv) -> None:
        super().__init__(step, env)
        self.state: dict[str, Any] = {}
        # The most keys ``state`` held lately (see `compacted`).
        self.state_peak = 0
        # Keys changed since the last snapshot; None while recovery is off,
        # so runs without it do not pay for the bookkeeping. Emptied (which
        # frees its table) at every snapshot.
        self.dirty: set[str] | None = None

    def restore(self, restored: dict[str, Any]) -> None:
        self.state.update(restored)
        self.dirty = set()

    def snapshot(self) -> dict[str, Any]:
        if not self.dirty:
            return {}
        out = self.saved_states(self.dirty)
        self.dirty.clear()
        return out

    def saved_states(self, keys: set[str]) -> dict[str, Any]:
        """What to save of ``keys``: each one's state, or `DELETED`."""
        state = self.state
        return {key: state.get(key, DELETED) for key in keys}

    async def per_key(self, batch: list[Any], call: KeyedCall) -> list[Any]:
        """``call(key, value)`` on every item, one key's in order, keys at once.

        The outputs of the items done from the start of the batch go out
        (`emit_early`) while later calls run; what this returns, or a
        failure carries, is the output of the rest.
        """
        try:
            return await run_per_key(self.step_id, batch, call, self.limit, self.emit_early)
        finally:
            self.compact_state()

    def compact_state(self) -> None:
        """After a batch: give back the room of keys gone (see `compacted`)."""
        self.state, self.state_peak = compacted(self.state, self.state_peak)

    def _pair(self, item: object) -> tuple[str, Any]:
        """``item`` as a plain ``(str, value)`` pair (see `aiowax._keys.as_keyed_item`)."""
        pair = as_keyed_item(item)
        if pair is None:
            raise StepFailed(bad_item_error(self.step_id, item))
        return pair

    def state_size(self) -> int:
        """Keys holding state on this worker."""
        return len(self.state)

    def stats_extra(self, loop_now: float, wall_us: int) -> dict[str, Any]:
        return {"keys": self.state_size()}


class StatefulMapOp(KeyedOp):
    def __init__(self, step: StatefulMapStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.builder = step.builder
        self.mapper = step.mapper
        self.is_async = is_async_callable(self.builder) or is_async_callable(self.mapper)

    def _bad_result(self, result: object) -> StepFailed:
        if isawaitable(result):
            return self.returned_awaitable("mapper", result)
        return self.type_error("the mapper must return a (new_state, output) 2-tuple", result)

    def _build(self, error: BaseException) -> StepFailed:
        return fail(error, self.step_id, "stateful_map builder")

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.env.items_checked
        out: list[Any] = []
        append = out.append
        states = self.state
        builder = self.builder
        mapper = self.mapper
        dirty = self.dirty
        try:
            for item in batch:
                # `aiowax._keys.is_keyed_item`, inlined: an exact tuple first
                # (unpacking anything else could run user code), unpacking
                # checks the length, then the key (see the module).
                if unchecked and type(item) is not tuple:
                    item = self._pair(item)
                try:
                    key, value = item
                except ValueError:
                    raise StepFailed(bad_item_error(self.step_id, item)) from None
                if unchecked and type(key) is not str:
                    key, value = self._pair(item)
                state = states.get(key)
                if state is None:
                    try:
                        state = builder()
                    except BaseException as error:
                        raise self._build(error) from None
                try:
                    result = mapper(state, value)
                except BaseException as error:
                    raise self.fail(error) from None
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
        finally:
            self.compact_state()
        return out

    async def _one(self, key: str, value: Any) -> Any:
        state = self.state.get(key)
        if state is None:
            try:
                state = await maybe_await(self.builder())
            except BaseException as error:
                raise self._build(error) from None
        try:
            result = await maybe_await(self.mapper(state, value))
        except BaseException as error:
            raise self.fail(error) from None
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
        return await self.per_key(batch, self._one)


class ReduceOp(KeyedOp):
    def __init__(self, step: ReduceStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.reducer = step.reducer
        self.is_complete = step.is_complete
        self.is_async = is_async_callable(self.reducer) or is_async_callable(self.is_complete)

    def _not_bool(self, result: object, acc: object) -> StepFailed:
        if isawaitable(result):
            return self.returned_awaitable("is_complete", result, acc, self.state)
        if isawaitable(acc):
            return self.returned_awaitable("reducer", acc, self.state)
        return self.type_error(
            "is_complete must return a bool", result, f" for the accumulator {describe(acc)}"
        )

    def _completed(self, error: BaseException) -> StepFailed:
        return fail(error, self.step_id, "reduce is_complete")

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.env.items_checked
        out: list[Any] = []
        accs = self.state
        reducer = self.reducer
        is_complete = self.is_complete
        missing = _MISSING
        dirty = self.dirty
        reduced: Any = missing
        try:
            for item in batch:
                # `aiowax._keys.is_keyed_item`, inlined: an exact tuple first
                # (unpacking anything else could run user code), unpacking
                # checks the length, then the key (see the module).
                if unchecked and type(item) is not tuple:
                    item = self._pair(item)
                try:
                    key, value = item
                except ValueError:
                    raise StepFailed(bad_item_error(self.step_id, item)) from None
                if unchecked and type(key) is not str:
                    key, value = self._pair(item)
                acc = accs.get(key, missing)
                if acc is missing:
                    acc = value
                else:
                    try:
                        acc = reduced = reducer(acc, value)
                    except BaseException as error:
                        raise self.fail(error) from None
                try:
                    done = is_complete(acc)
                except BaseException as error:
                    raise self._completed(error) from None
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
        finally:
            self.compact_state()
        if reduced is not missing and isawaitable(reduced):
            # A reducer returning awaitables does so on every call: its last
            # result in the batch tells, at no cost per item.
            raise self.returned_awaitable("reducer", reduced, self.state, out)
        return out

    async def _one(self, key: str, value: Any) -> Any:
        acc = self.state.get(key, _MISSING)
        if acc is _MISSING:
            acc = value
        else:
            try:
                acc = await maybe_await(self.reducer(acc, value))
            except BaseException as error:
                raise self.fail(error) from None
        try:
            done = await maybe_await(self.is_complete(acc))
        except BaseException as error:
            raise self._completed(error) from None
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
        return await self.per_key(batch, self._one)

    # Incomplete accumulators are dropped at the end of input, as in the
    # reference: ``end_of_input`` keeps the base class's empty result.
