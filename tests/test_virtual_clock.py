"""The virtual-clock event loop (`aiowax._testing.virtual`): it jumps, but not over threads.

The clock jumps to the next timer when every task waits; while a worker
thread works for the flow, real time passes instead, or a 60 s batch
timeout would fire while a 10 ms blocking call runs in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.testing import TestingSink

Blocking = Callable[[], Awaitable[None]]


async def _asyncio_to_thread() -> None:
    await asyncio.to_thread(time.sleep, 0.01)


async def _anyio_to_thread() -> None:
    await anyio.to_thread.run_sync(time.sleep, 0.01)


async def _run_in_executor() -> None:
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)


class _ThreadedPart(StatefulSourcePartition[tuple[str, int], None]):
    """Each read waits for a blocking call in a worker thread (a blocking client)."""

    def __init__(self, blocking: Blocking) -> None:
        self.blocking = blocking
        self.items = [("k", 1), ("k", 2), ("k", 3)]

    async def next_batch(self, sched: Any) -> list[tuple[str, int]]:
        if not self.items:
            raise StopAsyncIteration
        await self.blocking()
        return [self.items.pop(0)]

    def snapshot(self) -> None:
        return None


class _ThreadedSource(FixedPartitionedSource[tuple[str, int], None]):
    def __init__(self, blocking: Blocking) -> None:
        self.blocking = blocking

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _ThreadedPart:
        return _ThreadedPart(self.blocking)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize(
    "blocking",
    [_asyncio_to_thread, _anyio_to_thread, _run_in_executor],
    ids=["asyncio.to_thread", "anyio.to_thread.run_sync", "run_in_executor"],
)
async def test_the_clock_does_not_jump_while_a_worker_thread_works(blocking: Blocking) -> None:
    # The clock jumped 3,200 s during each 10 ms thread call: the 60 s batch
    # timeout split the batch in three (a helper session's repro).
    loop = asyncio.get_running_loop()
    out: list[Any] = []
    emitted: list[float] = []
    flow = Dataflow()
    flow.input("inp", _ThreadedSource(blocking))
    flow.batch("b", 10, timedelta(seconds=60))
    flow.inspect(lambda _batch: emitted.append(loop.time()))
    flow.output("out", TestingSink(out))
    await aiowax.run(flow)
    assert out == [("k", [1, 2, 3])]  # as on a real loop
    assert emitted[0] < 1.0  # at the end of the input, not at a timeout


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_the_clock_jumps_when_only_timers_are_left() -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    await asyncio.sleep(3600)
    assert loop.time() == pytest.approx(3600)
    assert time.monotonic() - started < 60  # an hour took no such real time
