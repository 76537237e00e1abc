"""Calling async user code: many calls at once, results in input order.

Sync user functions are called straight from the operators' hot loops.
Async ones come here: `call_ordered` for the stateless operators (calls
overlap, results keep the batch order), `run_per_key` for the keyed ones
(one key's calls in order, different keys at once). Both stop at the first
failure and report what the calls before it produced, so what counts as
processed never depends on timing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from aiowax._engine.aio import raise_if_cancelled, user_await
from aiowax._engine.errors import StepFailed
from aiowax._keys import all_keyed_items, as_keyed_item, bad_item_error

#: Most calls of one async user function in flight at once within a batch.
ASYNC_CONCURRENCY = 128

#: Returned by a keyed call whose item emits nothing.
NO_OUTPUT: Any = object()

#: ``call(key, value) -> output``, or `NO_OUTPUT` when the item emits nothing.
KeyedCall = Callable[[str, Any], Awaitable[Any]]


async def maybe_await(value: Any) -> Any:
    """The value, awaited first if it is awaitable (user code may be either)."""
    if inspect.isawaitable(value):
        return await user_await(value)
    return value


async def call_ordered(
    call: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    limit: int = ASYNC_CONCURRENCY,
) -> list[Any]:
    """Await ``call(a)`` for every ``a`` in ``args``, ``limit`` at a time.

    A call may also return a plain value (a sync function that returns an
    awaitable only sometimes). Results come back in the order of ``args``.
    When a call raises, no new
    call starts, the calls already started for earlier items finish, those
    for later items are cancelled, and the `StepFailed` raised carries the
    results of every call before the first failing one.

    Raises:
        StepFailed: A call raised; ``error`` is its exception (no note yet).
    """
    n = len(args)
    if n == 1:
        try:
            return [await maybe_await(call(args[0]))]
        except BaseException as only_error:
            raise_if_cancelled(only_error)
            raise StepFailed(only_error, []) from only_error
    results: list[Any] = [None] * n
    cursor = 0
    first_error: tuple[int, BaseException] | None = None
    # Calls in flight, by index: after a failure, the ones for later items
    # are cancelled (nothing needs their results); earlier ones finish.
    scopes: dict[int, anyio.CancelScope] = {}

    async def worker() -> None:
        nonlocal cursor, first_error
        while cursor < n and first_error is None:
            i = cursor
            cursor += 1
            with anyio.CancelScope() as scope:
                scopes[i] = scope
                try:
                    results[i] = await maybe_await(call(args[i]))
                except BaseException as error:
                    raise_if_cancelled(error)
                    if first_error is None or i < first_error[0]:
                        first_error = (i, error)
                        for j, later in scopes.items():
                            if j > i:
                                later.cancel()
                    return
                finally:
                    del scopes[i]

    async with anyio.create_task_group() as tg:
        for _ in range(min(limit, n)):
            tg.start_soon(worker)
    if first_error is not None:
        index, error = first_error
        raise StepFailed(error, results[:index]) from error
    return results


async def run_per_key(
    step_id: str, batch: list[Any], call: KeyedCall, limit: int = ASYNC_CONCURRENCY
) -> list[Any]:
    """Apply ``call`` to every ``(key, value)`` item of ``batch``, in order per key.

    The calls of one key run one after the other in arrival order; different
    keys proceed concurrently, ``limit`` at a time. Outputs come back in the
    order of the batch.

    Raises:
        StepFailed: An item was not a ``(str, value)`` pair or ``call``
            raised; ``partial`` holds the outputs of every item before it.
    """
    n = len(batch)
    stop_at = n
    first_error: BaseException | None = None
    if all_keyed_items(batch):
        pairs: list[tuple[str, Any]] = batch
    else:
        pairs = []
        for i, item in enumerate(batch):
            pair = as_keyed_item(item)
            if pair is None:
                stop_at, first_error = i, bad_item_error(step_id, item)
                break
            pairs.append(pair)
    groups: dict[str, list[int]] = {}
    for i in range(stop_at):
        groups.setdefault(pairs[i][0], []).append(i)
    results: list[Any] = [NO_OUTPUT] * n
    keys = iter(groups.items())

    async def worker() -> None:
        nonlocal stop_at, first_error
        for key, indices in keys:
            for i in indices:
                if i >= stop_at:
                    break
                try:
                    results[i] = await user_await(call(key, pairs[i][1]))
                except StepFailed as failed:
                    if i < stop_at:
                        stop_at, first_error = i, failed.error
                    break
                except BaseException as error:
                    raise_if_cancelled(error)
                    if i < stop_at:
                        stop_at, first_error = i, error
                    break

    async with anyio.create_task_group() as tg:
        for _ in range(min(limit, len(groups))):
            tg.start_soon(worker)
    out = [r for r in results[:stop_at] if r is not NO_OUTPUT]
    if first_error is not None:
        raise StepFailed(first_error, out)
    return out
