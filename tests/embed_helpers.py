"""What the tests of embedded flows share: a gated sink, a counting inspector.

Used by ``tests/test_embed.py`` (`FlowHandle`) and
``tests/connectors/test_inproc.py`` (the in-process connectors). Every
scenario reaches the state it checks through events it controls, inside
``fail_after(WATCHDOG)``; nothing sleeps to wait.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition

WATCHDOG = 2


class Seen:
    """An inspector that sets ``reached`` once it has seen ``target`` items."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = anyio.Event()

    def __call__(self, item: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


class _GatedPart(StatelessSinkPartition[Any]):
    def __init__(self, sink: GatedSink) -> None:
        self.sink = sink

    async def write_batch(self, items: list[Any]) -> None:
        self.sink.writing.set()
        await self.sink.gate.wait()
        self.sink.out.extend(items)

    def close(self) -> None:
        self.sink.closed += 1


class GatedSink(DynamicSink[Any]):
    """A sink whose writes wait until the test opens ``gate``."""

    def __init__(self, open_: bool = False) -> None:
        self.gate = anyio.Event()
        if open_:
            self.gate.set()
        self.writing = anyio.Event()
        self.out: list[Any] = []
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _GatedPart:
        return _GatedPart(self)


def push_flow(source: PushSource[Any], sink: Any) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    return flow


async def settle() -> None:
    """Return once every other task waits (a few cheap yields first: anyio's
    `wait_all_tasks_blocked` sleeps 0.1 s whenever a task is still ready)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def stop_after_yielding(seed: int) -> tuple[AsyncIterator[int], list[int], anyio.Event]:
    """An endless source of ints that sometimes waits before an item (a socket, a queue).

    Returns the iterable, the list of what it yielded (filled as it yields)
    and an event it sets once it has yielded a few (seeded, random) items:
    the moment to stop the flow, while items keep coming.
    """
    rng = random.Random(seed)
    yielded: list[int] = []
    reached = anyio.Event()
    stop_at = rng.randrange(1, 200)

    async def events() -> AsyncIterator[int]:
        i = 0
        while True:
            if rng.random() < 0.3:
                await anyio.sleep(0.0005)
            elif rng.random() < 0.5:
                await anyio.lowlevel.checkpoint()
            yielded.append(i)  # handed to the reader right below
            yield i
            i += 1
            if i == stop_at:
                reached.set()

    return events(), yielded, reached
