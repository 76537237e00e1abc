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


#: How often `call_ordered` hands over the results in so far, while calls run.
EARLY_EVERY_S = 0.005

#: A result of `call_ordered` not in yet (no user function returns it).
_PENDING: Any = object()

#: ``early(results, start)``: results ``start`` to ``start + len(results)`` are ready.
EarlyResults = Callable[[list[Any], int], Awaitable[None]]


class _Workers:
    """The workers of one batch still running; `finished` is set when none is."""

    def __init__(self, count: int) -> None:
        self.running = count
        self.finished = anyio.Event()
        if not count:
            self.finished.set()  # an empty batch: no worker will say so

    def done(self) -> None:
        self.running -= 1
        if not self.running:
            self.finished.set()


async def _hand_over(
    results: list[Any], workers: _Workers, early: EarlyResults, scope: anyio.CancelScope
) -> tuple[int, BaseException | None]:
    """Hand ``early`` the results in from the start, every `EARLY_EVERY_S`, while calls run.

    A batch done sooner goes on whole, and a long one in parts of that
    period at most (a hand-over per completion would cost a send per loop
    turn). What is left when the workers are done is the caller's to hand
    on. Returns how many results went to ``early``, and what ``early``
    raised, if it did (``scope`` is then cancelled: the calls stop).
    """
    n = len(results)
    handed = 0
    while True:
        with anyio.move_on_after(EARLY_EVERY_S):
            await workers.finished.wait()
        if not workers.running:
            return handed, None
        upto = handed
        while upto < n and results[upto] is not _PENDING:
            upto += 1
        if handed < upto:
            try:
                await early(results[handed:upto], handed)
            except BaseException as handing_failed:
                raise_if_cancelled(handing_failed)
                scope.cancel()
                return handed, handing_failed
            handed = upto


def _outputs_to(emit: Callable[[list[Any]], Awaitable[None]]) -> EarlyResults:
    """An `EarlyResults` handing ``emit`` the outputs among keyed calls' results."""

    async def early(results: list[Any], _start: int) -> None:
        out = [r for r in results if r is not NO_OUTPUT]
        if out:
            await emit(out)

    return early


async def call_ordered(
    call: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    limit: int = ASYNC_CONCURRENCY,
    early: EarlyResults | None = None,
) -> list[Any]:
    """Await ``call(a)`` for every ``a`` in ``args``, ``limit`` at a time.

    A call may also return a plain value (a sync function that returns an
    awaitable only sometimes). Results come back in the order of ``args``.
    When a call raises, no new
    call starts, the calls already started for earlier items finish, those
    for later items are cancelled, and the `StepFailed` raised carries the
    results of every call before the first failing one.

    With ``early``, results do not wait for the whole batch: every
    `EARLY_EVERY_S` while calls run, the results in from the start of the
    batch that were not handed over yet are, by awaiting ``early`` (the
    calls go on meanwhile).
    A batch of 1000 calls of 50 ms, 8 at a time, would otherwise hold its
    first result for over 6 s. A batch done within `EARLY_EVERY_S` costs
    one timer more. The return value and the
    `StepFailed` still hold every result, those handed to ``early`` too.

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
    # With ``early``, a result not in yet is `_PENDING`, so the handing
    # over can see how far from the start they are in; the calls do
    # nothing more for it.
    results: list[Any] = [None if early is None else _PENDING] * n
    cursor = 0
    first_error: tuple[int, BaseException] | None = None
    # Calls in flight, by index: after a failure, the ones for later items
    # are cancelled (nothing needs their results); earlier ones finish.
    scopes: dict[int, anyio.CancelScope] = {}
    workers = _Workers(min(limit, n))
    early_error: BaseException | None = None

    async def worker() -> None:
        nonlocal cursor, first_error
        try:
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
        finally:
            workers.done()

    async with anyio.create_task_group() as tg:
        for _ in range(workers.running):
            tg.start_soon(worker)
        if early is not None:
            _, early_error = await _hand_over(results, workers, early, tg.cancel_scope)
    if early_error is not None:
        # Raised here, not in the task group, which would wrap it in a group.
        raise early_error
    if first_error is not None:
        index, error = first_error
        raise StepFailed(error, results[:index]) from error
    return results


async def run_per_key(
    step_id: str,
    batch: list[Any],
    call: KeyedCall,
    limit: int = ASYNC_CONCURRENCY,
    early: Callable[[list[Any]], Awaitable[None]] | None = None,
) -> list[Any]:
    """Apply ``call`` to every ``(key, value)`` item of ``batch``, in order per key.

    The calls of one key run one after the other in arrival order; different
    keys proceed concurrently, ``limit`` at a time. Outputs come back in the
    order of the batch.

    With ``early``, outputs do not wait for the whole batch, as in
    `call_ordered`: those of the items done from the start of the batch go
    to ``early`` while later calls run, and are then neither in the return
    value nor in a `StepFailed`'s ``partial``.

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
    # With ``early``, an item not done yet is `_PENDING` (see `call_ordered`).
    results: list[Any] = [NO_OUTPUT if early is None else _PENDING] * n
    keys = iter(groups.items())
    workers = _Workers(min(limit, len(groups)))
    handed = 0
    early_error: BaseException | None = None

    async def worker() -> None:
        nonlocal stop_at, first_error
        try:
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
        finally:
            workers.done()

    async with anyio.create_task_group() as tg:
        for _ in range(workers.running):
            tg.start_soon(worker)
        if early is not None:
            handed, early_error = await _hand_over(
                results, workers, _outputs_to(early), tg.cancel_scope
            )
    if early_error is not None:
        raise early_error
    out = [r for r in results[handed:stop_at] if r is not NO_OUTPUT]
    if first_error is not None:
        raise StepFailed(first_error, out)
    return out
