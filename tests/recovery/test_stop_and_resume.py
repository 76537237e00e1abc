"""A graceful stop and a resume give the same results as a run that never stopped.

- W1: with recovery, a graceful stop (a deploy) keeps open windows and
  unfinished batches in the final snapshot instead of emitting them early;
  without recovery it flushes them, as there is no next run to finish them.
- W7: an event-time watermark restored from a snapshot goes on from where
  it was, so items replayed after a crash are judged as they were before it,
  whatever the downtime (the reference adds the downtime to the watermark;
  we do not, on purpose).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiowax
from aiowax._testing.virtual import VIRTUAL_EPOCH
from aiowax.dataflow import Dataflow
from aiowax.inputs import AbortExecution, FixedPartitionedSource, StatefulSourcePartition
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import EventClockConfig, TumblingWindow, WindowMetadata

VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])
T0 = VIRTUAL_EPOCH


@pytest.fixture
def config(tmp_path: Path) -> RecoveryConfig:
    init_db_dir(tmp_path, 1)
    return RecoveryConfig(tmp_path)


class _PausingPart(StatefulSourcePartition[Any, int]):
    """Ten ``("clicks", i)`` items, with a long quiet moment after the fifth."""

    def __init__(self, position: int | None) -> None:
        self.i = position or 0

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.i >= 10:
            raise StopAsyncIteration
        if self.i == 5:
            await anyio.sleep(3600)  # the operator stops the flow meanwhile
        self.i += 1
        return [("clicks", self.i - 1)]

    def snapshot(self) -> int:
        return self.i


class _PausingSource(FixedPartitionedSource[Any, int]):
    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _PausingPart:
        return _PausingPart(resume_state)


def _hourly_counts(out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("in", _PausingSource())
    flow.fold_window(
        "per_hour",
        EventClockConfig(lambda i: T0 + timedelta(minutes=i), timedelta(minutes=5)),
        TumblingWindow(timedelta(hours=1), T0),
        lambda: 0,
        lambda n, _: n + 1,
    )
    flow.output("out", TestingSink(out))
    return flow


def _batches(out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("in", _PausingSource())
    flow.batch("tens", 10, timedelta(days=1))
    flow.output("out", TestingSink(out))
    return flow


async def _stop_mid_way(flow: Dataflow, config: RecoveryConfig | None) -> None:
    async with aiowax.open_flow(flow, recovery_config=config) as handle:
        await anyio.sleep(60)  # the first five items are in; the source is quiet
        await handle.stop()


@VIRTUAL
async def test_a_graceful_stop_with_recovery_keeps_the_open_window(config: RecoveryConfig) -> None:
    first: list[Any] = []
    with anyio.fail_after(7200):
        await _stop_mid_way(_hourly_counts(first), config)
    assert first == []  # nothing emitted early
    second: list[Any] = []
    with anyio.fail_after(7200):
        await aiowax.run(_hourly_counts(second), recovery_config=config)
    assert second == [("clicks", (WindowMetadata(T0, T0 + timedelta(hours=1)), 10))]


@VIRTUAL
async def test_a_graceful_stop_with_recovery_keeps_the_unfinished_batch(
    config: RecoveryConfig,
) -> None:
    first: list[Any] = []
    with anyio.fail_after(7200):
        await _stop_mid_way(_batches(first), config)
    assert first == []
    second: list[Any] = []
    with anyio.fail_after(7200):
        await aiowax.run(_batches(second), recovery_config=config)
    assert second == [("clicks", list(range(10)))]


@VIRTUAL
async def test_a_graceful_stop_without_recovery_flushes() -> None:
    windows: list[Any] = []
    batches: list[Any] = []
    with anyio.fail_after(7200):
        await _stop_mid_way(_hourly_counts(windows), None)
        await _stop_mid_way(_batches(batches), None)
    assert windows == [("clicks", (WindowMetadata(T0, T0 + timedelta(hours=1)), 5))]
    assert batches == [("clicks", [0, 1, 2, 3, 4])]


# -- W7: the watermark after a resume does not depend on the downtime ----------------------

ITEMS = [("k", T0 + timedelta(milliseconds=100 * i)) for i in range(20)]  # 2 s of event time


def _per_second(items: list[Any], out: list[Any], late: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size=1))
    flow.fold_window(
        "count_per_second",
        EventClockConfig(
            lambda t: t,
            wait_for_system_duration=timedelta(0),
            on_late=lambda k, v, t, wm: late.append(t),
        ),
        TumblingWindow(length=timedelta(seconds=1), align_to=T0),
        lambda: 0,
        lambda acc, _: acc + 1,
    )
    flow.map("fmt", lambda kv: (kv[1][0].open_time, kv[1][1]))
    flow.output("out", TestingSink(out))
    return flow


@VIRTUAL
@pytest.mark.parametrize("downtime", [0.0, 2.0, 3600.0])
async def test_a_resume_judges_replayed_items_as_before_the_crash(
    config: RecoveryConfig, downtime: float
) -> None:
    never_crashed: list[Any] = []
    late: list[Any] = []
    await aiowax.run(_per_second(ITEMS, never_crashed, late), epoch_interval=timedelta(0))
    assert late == []
    out: list[Any] = []
    flow = _per_second([*ITEMS[:12], TestingSource.ABORT(), *ITEMS[12:]], out, late)
    with contextlib.suppress(AbortExecution):  # earlier releases raised it
        await aiowax.run(flow, epoch_interval=timedelta(0), recovery_config=config)
    await anyio.sleep(downtime)
    await aiowax.run(flow, epoch_interval=timedelta(0), recovery_config=config)
    assert late == []
    assert sorted(set(out)) == sorted(never_crashed) == [(T0, 10), (T0 + timedelta(seconds=1), 10)]


class _MutablePositionPart(StatefulSourcePartition[int, dict[str, int]]):
    """Forty items, five a read; its position is a dict it moves before each read's wait."""

    def __init__(self, position: dict[str, int] | None) -> None:
        self.position = position if position is not None else {"next": 0}

    async def next_batch(self, sched: datetime | None) -> list[int]:
        start = self.position["next"]
        if start >= 40:
            raise StopAsyncIteration
        self.position["next"] = start + 5  # before the read's wait: taken, not yet handed out
        await anyio.sleep(0.1)
        return list(range(start, start + 5))

    def snapshot(self) -> dict[str, int]:
        return self.position  # not a copy: the object the next read changes


class _MutablePositionSource(FixedPartitionedSource[int, dict[str, int]]):
    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(
        self, now: datetime, for_part: str, resume_state: dict[str, int] | None
    ) -> _MutablePositionPart:
        return _MutablePositionPart(resume_state)


@VIRTUAL
async def test_an_async_sources_position_is_the_one_before_the_read_in_flight(
    config: RecoveryConfig,
) -> None:
    # A stop during a read records the position taken before the read (an
    # epoch closing during a read does too). It was recorded as the object
    # the partition had returned, which the read had changed by then: the
    # resume skipped the read's items (15-19 here; the helper session's
    # crash repro, an epoch closed mid-read then a SIGKILL, lost 22-24).
    out: list[int] = []

    def flow() -> Dataflow:
        f = Dataflow()
        f.input("in", _MutablePositionSource())
        f.output("out", TestingSink(out))
        return f

    epoch = timedelta(seconds=10)
    async with aiowax.open_flow(flow(), epoch_interval=epoch, recovery_config=config) as handle:
        await anyio.sleep(0.35)  # in the fourth read
        await handle.stop()
    assert out == list(range(15))
    await aiowax.run(flow(), epoch_interval=epoch, recovery_config=config)
    assert out == list(range(40))  # a graceful stop replays nothing, and loses nothing
