"""What several test files build and run their flows with.

`run` runs a flow under a watchdog; `simple_flow` is the flow most operator
tests need (a list in, the steps under test, a list out). `run_clock` picks
the clock a run reads its wall time from. The sources here are the ones more
than one test file uses; a file's own sources stay in that file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

import aiowax
from aiowax._engine.clock import LoopClock, reset_clock, set_clock
from aiowax._testing.virtual import VIRTUAL_EPOCH
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.testing import TestingSink, TestingSource

#: Seconds; a healthy run of these flows takes milliseconds.
WATCHDOG = 5
#: On the virtual clock a watchdog counts loop time, which jumps.
VIRTUAL_WATCHDOG = 24 * 3600


async def run(flow: Dataflow, *, watchdog: float = WATCHDOG, **kwargs: Any) -> None:
    """``await aiowax.run(flow, **kwargs)``, failing after ``watchdog`` seconds of loop time."""
    with anyio.fail_after(watchdog):
        await aiowax.run(flow, **kwargs)


def simple_flow(
    items: list[Any], add: Callable[[Dataflow], None], batch_size: int = 1
) -> tuple[Dataflow, list[Any]]:
    """``items`` in batches of ``batch_size``, the steps ``add`` adds, and the output list."""
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size))
    add(flow)
    flow.output("out", TestingSink(out))
    return flow, out


# -- clocks ---------------------------------------------------------------------------

#: Wall time at loop time 0 on the virtual loop (its own clock and ours).
START = VIRTUAL_EPOCH
#: Another start, for a clock installed explicitly.
OTHER_START = datetime(2031, 5, 17, 12, 0, 0, 250000, tzinfo=UTC)


@contextlib.contextmanager
def run_clock(kind: str) -> Iterator[datetime]:
    """Yield the wall time at loop time 0 of the clock the run will use.

    ``default``: the virtual loop's own clock; ``loop``: a `LoopClock`
    installed explicitly, starting elsewhere.
    """
    if kind == "default":
        yield START
        return
    token = set_clock(LoopClock(OTHER_START))
    try:
        yield OTHER_START
    finally:
        reset_clock(token)


def record_times(flow: Dataflow, seen: list[tuple[float, Any]]) -> None:
    """Add a step recording ``(loop time, item)`` of every item that passes."""

    def stamp(item: Any) -> Any:
        seen.append((asyncio.get_running_loop().time(), item))
        return item

    flow.map("stamp", stamp)


# -- sources ----------------------------------------------------------------------------


class _PartsPartition(StatefulSourcePartition[Any, int]):
    def __init__(self, owner: PartsSource, name: str, is_async: bool) -> None:
        self.owner = owner
        self.name = name
        self.items = owner.parts[name]
        self.pos = 0
        if is_async:
            self.next_batch = self._anext_batch  # type: ignore[method-assign]

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.pos >= len(self.items):
            raise StopIteration
        out = self.items[self.pos : self.pos + self.owner.batch_size]
        self.pos += len(out)
        return out

    async def _anext_batch(self, sched: datetime | None) -> list[Any]:
        await anyio.lowlevel.checkpoint()
        if self.pos >= len(self.items):
            raise StopAsyncIteration
        out = self.items[self.pos : self.pos + self.owner.batch_size]
        self.pos += len(out)
        return out

    def snapshot(self) -> int:
        return self.pos

    def close(self) -> None:
        self.owner.closed.append(self.name)


class PartsSource(FixedPartitionedSource[Any, int]):
    """One partition per entry of ``parts``, read ``batch_size`` items at a time.

    Records what it built (``now``, partition, resume state) and what it closed.
    """

    def __init__(self, parts: dict[str, list[Any]], batch_size: int = 2, is_async: bool = False):
        self.parts = parts
        self.batch_size = batch_size
        self.is_async = is_async
        self.built: list[tuple[datetime, str, Any]] = []
        self.closed: list[str] = []

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _PartsPartition:
        self.built.append((now, for_part, resume_state))
        return _PartsPartition(self, for_part, self.is_async)


class _TimedPart(StatelessSourcePartition[Any]):
    """Yields each batch at its loop time, then ends at ``end``."""

    def __init__(self, schedule: list[tuple[float, list[Any]]], end: float) -> None:
        self.schedule = list(schedule)
        self.end = end
        self.calls: list[float] = []

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        self.calls.append(loop.time())
        if not self.schedule:
            await anyio.sleep(self.end - loop.time())
            raise StopAsyncIteration
        at, items = self.schedule.pop(0)
        if at > loop.time():
            await anyio.sleep(at - loop.time())
        return items


class TimedSource(DynamicSource[Any]):
    """On worker 0 only: ``items`` at the given loop times (seconds)."""

    def __init__(self, schedule: list[tuple[float, list[Any]]], end: float) -> None:
        self.schedule = schedule
        self.end = end
        self.parts: list[_TimedPart] = []

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _TimedPart:
        part = _TimedPart(self.schedule if worker_index == 0 else [], self.end)
        self.parts.append(part)
        return part
