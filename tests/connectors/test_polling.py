"""`SimplePollingSource` (`aiowax._connectors.polling`): interval, retry, alignment, errors.

On the virtual clock loop, with the loop's own clock and with a `LoopClock`
installed explicitly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import SimplePollingSource
from aiowax.testing import TestingSink
from flow_helpers import VIRTUAL_WATCHDOG, run, run_clock


class Poller(SimplePollingSource[Any]):
    def __init__(self, results: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = list(results)
        self.calls: list[float] = []

    def next_item(self) -> Any:
        self.calls.append(anyio.current_time())
        result = self.results.pop(0) if self.results else None
        if isinstance(result, Exception):
            raise result
        return result


class AsyncPoller(Poller):
    async def next_item(self) -> Any:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return super().next_item()


async def _poll(source: Poller, seconds: float) -> tuple[list[float], list[Any]]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("poll", source)
    flow.output("out", TestingSink(out))
    start = anyio.current_time()
    with anyio.move_on_after(seconds):
        await aiowax.run(flow)
    return [t - start for t in source.calls], out


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("cls", [Poller, AsyncPoller], ids=["sync", "async"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_interval(cls: type[Poller], clock: str) -> None:
    source = cls(["a", None, "b", "c"], interval=timedelta(seconds=10))
    with run_clock(clock):
        times, out = await _poll(source, 35)
    assert times == pytest.approx([0, 10, 20, 30], abs=1e-6)
    assert out == ["a", "b", "c"]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_retry(clock: str) -> None:
    retry = SimplePollingSource.Retry
    source = Poller(
        [
            retry(timedelta(seconds=2)),
            retry(timedelta(seconds=3)),
            "a",
            retry(timedelta(seconds=1)),
            "b",
        ],
        interval=timedelta(minutes=1),
    )
    with run_clock(clock):
        times, out = await _poll(source, 200)
    # 0: retry in 2 s; 2: retry in 3 s; 5: "a", next in 60 s; 65: retry in 1 s; 66: "b"; 126...
    assert times == pytest.approx([0, 2, 5, 65, 66, 126, 186], abs=1e-6)
    assert out == ["a", "b"]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("offset", [3, -7, -3607], ids=["ahead", "behind", "long-ago"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_align_to(clock: str, offset: int) -> None:
    """Calls happen at ``align_to + k * interval`` only, the first one included."""
    with run_clock(clock) as start:
        align_to = start + timedelta(seconds=offset)
        source = Poller(["x", "y"], interval=timedelta(seconds=10), align_to=align_to)
        times, out = await _poll(source, 30)
    assert times == pytest.approx([3, 13, 23], abs=1e-6)
    assert out == ["x", "y"]


def test_simple_polling_source_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval"):
        Poller([], interval=timedelta(0))
    with pytest.raises(TypeError, match="interval"):
        Poller([], interval=10)
    # A naive datetime is a TypeError everywhere (as 0.17.2's windows raise).
    with pytest.raises(TypeError, match="align_to must be timezone-aware"):
        Poller([], interval=timedelta(seconds=1), align_to=datetime(2024, 1, 1))


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_simple_polling_source_error_stops_the_flow() -> None:
    source = Poller(["a", KeyError("gone")], interval=timedelta(seconds=5))
    out: list[Any] = []
    flow = Dataflow()
    flow.input("poll", source)
    flow.output("out", TestingSink(out))
    with pytest.raises(KeyError) as info:
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert any("'poll'" in n for n in info.value.__notes__)
    assert out == ["a"]
