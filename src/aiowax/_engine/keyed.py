"""Running async user code per key: one key's calls in order, keys at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from aiowax._engine.calls import ASYNC_CONCURRENCY
from aiowax._engine.exchange import bad_item_error
from aiowax._engine.failure import StepFailed, user_await

#: ``step(key, value) -> output``, or `NO_OUTPUT` when the item emits nothing.
KeyedStep = Callable[[str, Any], Awaitable[Any]]
NO_OUTPUT: Any = object()


async def run_per_key(
    step_id: str, batch: list[Any], step: KeyedStep, limit: int = ASYNC_CONCURRENCY
) -> list[Any]:
    """Apply ``step`` to every item of ``batch``, sequentially per key.

    The calls of one key run one after the other in arrival order; different
    keys proceed concurrently, ``limit`` at a time. Outputs come back in the
    order of the batch.

    Raises:
        StepFailed: An item was not a ``(str, value)`` pair or ``step``
            raised; ``partial`` holds the outputs of every item before it.
    """
    n = len(batch)
    stop_at = n
    first_error: BaseException | None = None
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(batch):
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
            stop_at = i
            first_error = bad_item_error(step_id, item)
            break
        groups.setdefault(item[0], []).append(i)
    results: list[Any] = [NO_OUTPUT] * n
    keys = iter(groups.items())

    async def worker() -> None:
        nonlocal stop_at, first_error
        for key, indices in keys:
            for i in indices:
                if i >= stop_at:
                    break
                try:
                    results[i] = await user_await(step(key, batch[i][1]))
                except StepFailed as failed:
                    if i < stop_at:
                        stop_at, first_error = i, failed.error
                    break
                except Exception as error:
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
