"""The batch step (`aiowax._engine.ops.batch`): a list per key, out by size or timeout.

A key's list goes out when it is full, when its timeout (counted from its
first item) expires, or at the end of input, whichever comes first. Timeouts
run on the virtual clock loop. What batch shares with every keyed step is
in ``test_keyed.py``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink
from flow_helpers import VIRTUAL_WATCHDOG, TimedSource, record_times, run, simple_flow


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 100])
async def test_batch_emits_by_size_and_flushes_at_end(workers: int, batch_size: int) -> None:
    items = [("a", i) for i in range(7)] + [("b", i) for i in range(2)]
    flow, out = simple_flow(items, lambda f: f.batch("b", 3, timedelta(hours=1)), batch_size)
    await run(flow, workers=workers)
    # No waiting for the hour-long timeout: end of input flushes at once.
    assert sorted(out) == [("a", [0, 1, 2]), ("a", [3, 4, 5]), ("a", [6]), ("b", [0, 1])]
    assert [v for k, v in out if k == "a"] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_batch_timeout_on_the_virtual_clock(workers: int) -> None:
    source = TimedSource([(0, [("k", 1)])], end=600)
    seen: list[tuple[float, Any]] = []
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 100, timedelta(minutes=5))
    record_times(flow, seen)
    flow.output("out", TestingSink(out))
    assert asyncio.get_running_loop().time() == 0
    await run(flow, workers=workers, watchdog=VIRTUAL_WATCHDOG)
    assert source.parts[0].calls[0] == 0.0
    assert seen == [(300.0, ("k", [1]))]
    assert out == [("k", [1])]
    # The run lasted until the source ended, not longer.
    assert asyncio.get_running_loop().time() == 600.0


async def batch_times(
    script: list[tuple[float, list[Any]]],
    end: float,
    max_size: int,
    timeout: timedelta,
    workers: int = 1,
) -> list[tuple[float, Any]]:
    """Run ``script`` (a `TimedSource`'s) through a batch step; its output, with loop times."""
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", TimedSource(script, end=end))
    flow.batch("b", max_size, timeout)
    record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await run(flow, workers=workers, watchdog=VIRTUAL_WATCHDOG)
    return seen


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_timeout_counts_from_the_first_item_of_the_list() -> None:
    script = [(0, [("a", 1)]), (200, [("a", 2)]), (350, [("a", 3)]), (400, [("a", 4)])]
    seen = await batch_times(script, 1000, 100, timedelta(seconds=300))
    assert seen == [(300.0, ("a", [1, 2])), (650.0, ("a", [3, 4]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_list_that_went_out_full_does_not_time_out_the_keys_next_list() -> None:
    # The step's queue of deadlines keeps the entry of a list that went out
    # full (a list of "a" at 0 s); when it comes up at 300 s, the key's
    # newer list (from 100 s) is not due until 400 s. Two lists that start
    # in one batch (at 500 s, "b" fills one and starts the next) have the
    # same deadline: the second goes out once, at 800 s.
    script = [(0, [("a", 1), ("a", 2)]), (100, [("a", 3)]), (500, [("b", 1), ("b", 2), ("b", 3)])]
    seen = await batch_times(script, 1000, 2, timedelta(seconds=300))
    assert seen == [
        (0.0, ("a", [1, 2])),
        (400.0, ("a", [3])),
        (500.0, ("b", [1, 2])),
        (800.0, ("b", [3])),
    ]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 3])
async def test_batch_keys_are_independent(workers: int) -> None:
    script = [
        (0, [("a", 1)]),
        (100, [("b", 1)]),
        (150, [("a", 2)]),  # a is full: out at once; b keeps waiting
        (200, [("a", 3)]),  # a new list for a, due at 500
    ]
    seen = await batch_times(script, 1000, 2, timedelta(seconds=300), workers)
    assert seen == [(150.0, ("a", [1, 2])), (400.0, ("b", [1])), (500.0, ("a", [3]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_end_of_input_flushes_before_timeout() -> None:
    script = [(0, [("a", 1), ("b", 2)]), (10, [("a", 3)])]
    seen = await batch_times(script, 60, 100, timedelta(minutes=5))
    assert sorted(seen) == [(60.0, ("a", [1, 3])), (60.0, ("b", [2]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_zero_timeout_emits_each_input_batch() -> None:
    script = [(0, [("a", 1), ("a", 2)]), (5, [("a", 3)])]
    seen = await batch_times(script, 10, 100, timedelta(0))
    assert seen == [(0.0, ("a", [1, 2])), (5.0, ("a", [3]))]
