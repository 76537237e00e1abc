"""Calling user code: many awaits at once, results in input order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from aiowax._engine.failure import user_await

#: Most calls of one async user function in flight at once within a batch.
ASYNC_CONCURRENCY = 128


class PartialResults(Exception):
    """Call number ``len(done)`` raised ``error``; ``done`` holds the ones before."""

    def __init__(self, done: list[Any], error: Exception) -> None:
        super().__init__(error)
        self.done = done
        self.error = error


async def call_ordered(
    call: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    limit: int = ASYNC_CONCURRENCY,
) -> list[Any]:
    """Await ``call(a)`` for every ``a`` in ``args``, ``limit`` at a time.

    Results come back in the order of ``args``. When a call raises, no new
    call starts, the calls already started for earlier items finish, those
    for later items are cancelled, and `PartialResults` carries the results
    of every call before the first failing one: what counts as processed
    does not depend on timing.
    """
    n = len(args)
    if n == 1:
        try:
            return [await user_await(call(args[0]))]
        except Exception as only_error:
            raise PartialResults([], only_error) from only_error
    results: list[Any] = [None] * n
    cursor = 0
    first_error: tuple[int, Exception] | None = None
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
                    results[i] = await user_await(call(args[i]))
                except Exception as error:
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
        raise PartialResults(results[:index], error) from error
    return results
