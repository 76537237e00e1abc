"""Recovery in a run (`aiowax._recovery.runtime`): timers across downtime, windows, replay, commits.

Most tests drive a one-partition async source from a script on the virtual
clock (`ScriptSource`): items at given loop times, a ``Sync`` that waits until
what was read so far is committed, and a ``Crash`` that fails the first run.
The wall clock of the virtual loop is 2024-01-01 plus the loop time, so the
test sleeping between two runs is downtime of the flow: saved timers (batch
timeouts, watermarks) count it as elapsed.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiowax
from aiowax._engine.clock import LoopClock, reset_clock, set_clock
from aiowax._engine.context import RunContext
from aiowax._recovery.store import Store
from aiowax._testing.virtual import VIRTUAL_EPOCH, VirtualClockEventLoop
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import FixedPartitionedSink, StatefulSinkPartition
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource, cluster_main
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SystemClockConfig,
    TumblingWindow,
    WindowMetadata,
)
from observing import observe_runs, operators_of

VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])
#: Epochs on the virtual clock: long sleeps would close far too many
#: epochs of 0 s (a pending read closes one every few milliseconds).
EPOCH = timedelta(seconds=1)
T0 = VIRTUAL_EPOCH


def at(seconds: float) -> datetime:
    """Wall time on the virtual loop at loop time ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def loop_time() -> float:
    return asyncio.get_running_loop().time()


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recovery"
    init_db_dir(path, 2)
    return path


@contextmanager
def observe() -> Iterator[list[RunContext]]:
    with observe_runs() as seen:
        yield seen


# -- a scripted source ----------------------------------------------------------------


@dataclass
class At:
    """Return ``items`` at loop time ``t`` (at once if it passed)."""

    t: float
    items: tuple[Any, ...] = ()

    def __init__(self, t: float, *items: Any) -> None:
        self.t = t
        self.items = items


@dataclass
class Sync:
    """First run only: wait until the epochs of every item read so far are committed."""

    armed: bool = True


@dataclass
class Crash:
    """First run only: ``next_batch`` raises."""

    armed: bool = True


@dataclass
class SlowRead:
    """A read that returns ``items`` at loop time ``t``; in the first run it
    fails then instead, once epochs that ended during it are committed."""

    t: float
    items: tuple[Any, ...] = ()
    armed: bool = True

    def __init__(self, t: float, *items: Any) -> None:
        self.t = t
        self.items = items
        self.armed = True


@dataclass
class Until:
    """Wait (real time, at most ``timeout``) until ``done()``."""

    done: Callable[[], bool]
    timeout: float = 5.0


@dataclass
class Script:
    """The entries of a `ScriptSource`, and what the runs saw of them."""

    entries: list[Any]
    contexts: list[RunContext] = field(default_factory=list)
    #: Epoch of every item, as `inspect_epoch` saw it (last run wins).
    epochs: dict[Any, int] = field(default_factory=dict)
    #: Resume states the partition was built with, per run.
    resumed_from: list[int | None] = field(default_factory=list)

    def record(self, epoch: int, item: Any) -> None:
        self.epochs[item] = epoch

    async def wait_committed(self, item: Any, after: int = 0) -> None:
        """Wait until the epoch of ``item`` (plus ``after``) is committed."""
        recovery = self.contexts[-1].recovery
        virtual = isinstance(asyncio.get_running_loop(), VirtualClockEventLoop)
        deadline = time.monotonic() + 10
        while item not in self.epochs or recovery.store.committed < self.epochs[item] + after:
            assert time.monotonic() < deadline, f"epoch of {item!r} never committed"
            # On the virtual clock a timed sleep would move time; on a real
            # loop a pause lets the commit's thread have the GIL.
            await anyio.sleep(0 if virtual else 0.0005)


class _ScriptPartition(StatefulSourcePartition[Any, int]):
    def __init__(self, script: Script, resume_state: int | None) -> None:
        self.script = script
        self.pos = resume_state or 0
        self.last: Any = None

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        entries = self.script.entries
        if self.pos >= len(entries):
            raise StopAsyncIteration
        entry = entries[self.pos]
        if isinstance(entry, At):
            await anyio.sleep_until(entry.t)
            self.pos += 1
            if entry.items:
                self.last = entry.items[-1]
            return list(entry.items)
        if isinstance(entry, Sync):
            if entry.armed and self.last is not None:
                entry.armed = False
                await self.script.wait_committed(self.last)
            self.pos += 1
            return []
        if isinstance(entry, Crash):
            self.pos += 1
            if entry.armed:
                entry.armed = False
                msg = "crash"
                raise RuntimeError(msg)
            return []
        if isinstance(entry, SlowRead):
            await anyio.sleep_until(entry.t)
            if entry.armed:
                entry.armed = False
                # Two epochs after the last item's ended during this read.
                await self.script.wait_committed(self.last, after=2)
                msg = "crash"
                raise RuntimeError(msg)
            self.pos += 1
            return list(entry.items)
        assert isinstance(entry, Until)
        deadline = time.monotonic() + entry.timeout
        while not entry.done() and time.monotonic() < deadline:
            await anyio.sleep(0.001)
        self.pos += 1
        return []

    def snapshot(self) -> int:
        return self.pos


class ScriptSource(FixedPartitionedSource[Any, int]):
    def __init__(self, script: Script) -> None:
        self.script = script

    def list_parts(self) -> list[str]:
        return ["script"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        self.script.resumed_from.append(resume_state)
        return _ScriptPartition(self.script, resume_state)


def stamped_flow(script: Script, add: Callable[[Dataflow], None], out: list[Any]) -> Dataflow:
    """Script source -> epochs recorded -> ``add``'s steps -> (loop time, item)."""
    flow = Dataflow()
    flow.input("inp", ScriptSource(script))
    flow.inspect_epoch(script.record)
    add(flow)
    flow.map("stamp", lambda item: (loop_time(), item))
    flow.output("out", TestingSink(out))
    return flow


async def run_twice(
    script: Script,
    add: Callable[[Dataflow], None],
    db_dir: Path,
    downtime_until: float,
    epoch_interval: timedelta = EPOCH,
) -> tuple[list[Any], list[Any], float]:
    """Run until the script crashes, stay down, resume; return both outputs."""
    config = RecoveryConfig(db_dir)
    first: list[Any] = []
    second: list[Any] = []
    with observe_runs(script.contexts.append):
        with pytest.raises(RuntimeError, match="crash"):
            await aiowax.run(
                stamped_flow(script, add, first),
                epoch_interval=epoch_interval,
                recovery_config=config,
            )
        await anyio.sleep_until(downtime_until)
        resumed_at = loop_time()
        await aiowax.run(
            stamped_flow(script, add, second),
            epoch_interval=epoch_interval,
            recovery_config=config,
        )
    return first, second, resumed_at


# -- batch timers ------------------------------------------------------------------------


@VIRTUAL
@pytest.mark.parametrize(("down_until", "emitted_at"), [(100, 300), (500, 500)])
async def test_batch_timeout_counts_the_downtime(
    db_dir: Path, down_until: float, emitted_at: float
) -> None:
    # The list of "a" starts at 0 with a 300 s timeout. The flow crashes at
    # 60 and is down until ``down_until``: the saved deadline is wall time,
    # so the list goes out at 300 when the flow is back by then, and at once
    # on resume when it is not.
    script = Script([At(0, ("a", 1)), At(10, ("a", 2)), At(20), Sync(), At(60), Crash(), At(1000)])
    first, second, resumed_at = await run_twice(
        script, lambda f: f.batch("b", 10, timedelta(seconds=300)), db_dir, down_until
    )
    assert first == []
    assert resumed_at == down_until
    assert second == [(emitted_at, ("a", [1, 2]))]


@VIRTUAL
async def test_batch_lists_of_several_keys_keep_their_own_deadlines(db_dir: Path) -> None:
    script = Script(
        [
            At(0, ("a", 1)),
            At(100, ("b", 1)),
            At(150, ("a", 2)),
            At(160),
            Sync(),
            At(200),
            Crash(),
            At(250, ("b", 2), ("c", 1)),
            At(2000),
        ]
    )
    first, second, _ = await run_twice(
        script, lambda f: f.batch("b", 10, timedelta(seconds=300)), db_dir, 220
    )
    assert first == []
    # a: started at 0, due at 300; b: started at 100, due at 400; c: 550.
    assert second == [(300, ("a", [1, 2])), (400, ("b", [1, 2])), (550, ("c", [1]))]


# -- windows ----------------------------------------------------------------------------------


def _event_clock(wait: float) -> EventClockConfig:
    return EventClockConfig(lambda v: at(v), timedelta(seconds=wait))


@VIRTUAL
@pytest.mark.parametrize("down_until", [50, 200, 900])
async def test_event_time_watermark_goes_on_from_the_snapshot_whatever_the_downtime(
    db_dir: Path, down_until: float
) -> None:
    # Item time 10 s, seen at loop time 0, waiting 30 s: the watermark is at
    # -20 s and advances with the loop while the key is idle. A key is saved
    # when it changes: its snapshot (end of epoch 1, at 1 s) holds the
    # watermark at -19 s, and a resume goes on from there, so the window
    # (close 60 s) closes 79 s after the resume, whatever the downtime. (It
    # used to count the downtime, which drops replayed items as late: see
    # W7 in tests/recovery/test_stop_and_resume.py.)
    script = Script([At(0, ("a", 10)), At(5), Sync(), At(40), Crash(), At(2000)])
    first, second, resumed_at = await run_twice(
        script,
        lambda f: f.collect_window(
            "w", _event_clock(30), TumblingWindow(timedelta(seconds=60), T0)
        ),
        db_dir,
        down_until,
    )
    assert first == []
    assert second == [(resumed_at + 79, ("a", (WindowMetadata(at(0), at(60)), [10])))]


@VIRTUAL
@pytest.mark.parametrize(("down_until", "closed_at"), [(40, 60), (500, 500)])
async def test_system_clock_window_due_during_downtime_closes_at_once(
    db_dir: Path, down_until: float, closed_at: float
) -> None:
    script = Script(
        [At(10, ("a", "x")), At(20, ("a", "y")), At(25), Sync(), At(30), Crash(), At(1000)]
    )
    first, second, _ = await run_twice(
        script,
        lambda f: f.collect_window(
            "w", SystemClockConfig(), TumblingWindow(timedelta(seconds=60), T0)
        ),
        db_dir,
        down_until,
    )
    assert first == []
    assert second == [(closed_at, ("a", (WindowMetadata(at(0), at(60)), ["x", "y"])))]


@VIRTUAL
async def test_a_key_with_only_a_watermark_starts_afresh_on_the_other_clock(db_dir: Path) -> None:
    # A step moved from event time to the system clock. Keys with a window
    # open are refused (tests/recovery/test_snapshots.py); a key whose
    # windows all closed kept its event-time watermark, which the system
    # clock took as the time of its next items: with event times ahead of
    # the wall clock, they went in windows of that time (helper-64's repro:
    # 2030). Such a key starts afresh, and one the resume does not touch is
    # deleted from the directory at its first snapshot.
    ahead = 100_000  # event time, s: a day ahead of the wall clock
    script = Script(
        [
            At(10, ("a", ahead), ("b", ahead)),
            At(40, ("z", 1)),  # a's and b's windows closed at 30: watermarks alone
            At(45),
            Sync(),
            Crash(),
            At(100, ("a", 7)),
            At(105),
            Sync(),
            Crash(),
            At(200),
        ]
    )

    def windows(clock: EventClockConfig | SystemClockConfig) -> Callable[[Dataflow], None]:
        def add(f: Dataflow) -> None:
            f.filter("not_z", lambda kv: kv[0] != "z")
            f.collect_window("w", clock, TumblingWindow(timedelta(seconds=60), T0))

        return add

    def rows() -> set[tuple[str, str]]:
        store = Store(db_dir)
        try:
            return set(store.load())
        finally:
            store.close()

    config = RecoveryConfig(db_dir)
    first: list[Any] = []
    second: list[Any] = []
    with observe_runs(script.contexts.append):
        with pytest.raises(RuntimeError, match="crash"):
            flow = stamped_flow(script, windows(_event_clock(0)), first)
            await aiowax.run(flow, epoch_interval=EPOCH, recovery_config=config)
        assert {("w", "a"), ("w", "b")} <= rows()
        with pytest.raises(RuntimeError, match="crash"):
            flow = stamped_flow(script, windows(SystemClockConfig()), [])
            await aiowax.run(flow, epoch_interval=EPOCH, recovery_config=config)
        assert ("w", "a") in rows()
        assert ("w", "b") not in rows()
        flow = stamped_flow(script, windows(SystemClockConfig()), second)
        await aiowax.run(flow, epoch_interval=EPOCH, recovery_config=config)
    assert len(first) == 2
    # a's item came at 100 s of the wall clock: in its minute, closed at 120.
    assert second == [(120, ("a", (WindowMetadata(at(60), at(120)), [7])))]


@pytest.mark.asyncio
async def test_system_clock_window_closes_at_once_with_another_wall_clock(db_dir: Path) -> None:
    # The same on a real loop: the second run's wall clock starts two hours
    # after the first's, so the open window is due the moment it resumes,
    # long before the source ends.
    out: list[Any] = []
    script = Script(
        [
            At(0, ("a", "x"), ("b", "y")),
            Sync(),
            Crash(),
            Until(lambda: len(out) == 2),
            At(0, ("a", "late")),
        ]
    )

    def windows(f: Dataflow) -> None:
        f.collect_window("w", SystemClockConfig(), TumblingWindow(timedelta(minutes=1), T0))

    config = RecoveryConfig(db_dir)
    with observe_runs(script.contexts.append):
        token = set_clock(LoopClock(T0 + timedelta(seconds=10)))
        try:
            with pytest.raises(RuntimeError, match="crash"):
                await aiowax.run(
                    stamped_flow(script, windows, []),
                    epoch_interval=timedelta(0),
                    recovery_config=config,
                )
        finally:
            reset_clock(token)
        token = set_clock(LoopClock(T0 + timedelta(hours=2)))
        try:
            await aiowax.run(
                stamped_flow(script, windows, out),
                epoch_interval=timedelta(0),
                recovery_config=config,
            )
        finally:
            reset_clock(token)
    meta = WindowMetadata(T0, T0 + timedelta(minutes=1))
    late_meta = WindowMetadata(T0 + timedelta(hours=2), T0 + timedelta(hours=2, minutes=1))
    # The two restored windows first (while the source waited for them),
    # then the new item's own window at the end of input.
    assert sorted(item for _, item in out[:2]) == [("a", (meta, ["x"])), ("b", (meta, ["y"]))]
    assert [item for _, item in out[2:]] == [("a", (late_meta, ["late"]))]


def _fold_session(f: Dataflow) -> None:
    f.fold_window(
        "w",
        _event_clock(3600),
        SessionWindow(timedelta(seconds=10)),
        list,
        lambda acc, v: [*acc, v],
    )


def _collect_session(f: Dataflow) -> None:
    f.collect_window("w", _event_clock(3600), SessionWindow(timedelta(seconds=10)))


@VIRTUAL
@pytest.mark.parametrize("add", [_fold_session, _collect_session], ids=["fold", "collect"])
async def test_session_state_survives_recovery(
    db_dir: Path, add: Callable[[Dataflow], None]
) -> None:
    # Two sessions of "a" before the crash; after it, one item extends the
    # first and one bridges it with the second: a single session of all of
    # them, the fold seeing the values in arrival order.
    script = Script(
        [
            At(0, ("a", 0), ("a", 3)),
            At(1, ("a", 20), ("a", 23), ("b", 100)),
            At(5),
            Sync(),
            At(6),
            Crash(),
            At(7, ("a", 5)),
            At(8, ("a", 14)),
            At(9),
        ]
    )
    first, second, _ = await run_twice(script, add, db_dir, 6.5)
    assert first == []
    a_values = [0, 3, 20, 23, 5, 14]
    if add is _collect_session:
        a_values.sort()
    assert sorted(item for _, item in second) == [
        ("a", (WindowMetadata(at(0), at(23)), a_values)),
        ("b", (WindowMetadata(at(100), at(100)), [100])),
    ]


@VIRTUAL
async def test_a_key_whose_windows_closed_keeps_its_watermark_across_recovery(
    db_dir: Path,
) -> None:
    # "a" has one window, closed at loop time 9 by its watermark (item time
    # 1 s, no waiting, advancing with the loop); the key is dropped but its
    # watermark stays, so an item of "a" at 2 s is late, with or without a
    # crash in between.
    def windows(f: Dataflow) -> None:
        f.collect_window("w", _event_clock(0), TumblingWindow(timedelta(seconds=10), T0))

    with observe() as contexts:
        script = Script(
            [At(0, ("a", 1)), At(20, ("b", 100)), At(21), Sync(), At(22), Crash(), At(30, ("a", 2))]
        )
        first, second, _ = await run_twice(script, windows, db_dir, 25)
    assert first == [(9, ("a", (WindowMetadata(at(0), at(10)), [1])))]
    assert [item for _, item in second] == [("b", (WindowMetadata(at(100), at(110)), [100]))]
    late = sum(op.late_count for op in operators_of(contexts[-1:], "w"))
    assert late == 1


# -- async reads in flight at an epoch end ----------------------------------------------------


@VIRTUAL
async def test_a_read_in_flight_when_the_flow_crashes_is_read_again(db_dir: Path) -> None:
    # The third read takes from loop time 1 to 20 and fails in the first run.
    # The epochs that end meanwhile are committed with the position from
    # before it, so the resume reads it again: nothing lost, nothing twice.
    script = Script([At(0, ("a", 1)), At(1, ("a", 2)), SlowRead(20, ("a", 3)), At(21, ("a", 4))])
    first, second, _ = await run_twice(
        script, lambda f: f.stateful_map("sum", lambda: 0, lambda s, v: (s + v, s + v)), db_dir, 30
    )
    assert [item for _, item in first] == [("a", 1), ("a", 3)]
    assert script.resumed_from == [None, 2]
    assert [item for _, item in second] == [("a", 6), ("a", 10)]


# -- replay only of the epoch in flight ---------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_only_the_epoch_in_flight_is_replayed(db_dir: Path, workers: int) -> None:
    # Epochs of 4 items (one batch each); the mapper fails on item 22, in
    # epoch 6, after the epochs before it went through every step. A resume
    # starts at epoch 6: only the results of items 20 and 21 come twice.
    armed = [True]

    def crash(x: int) -> int:
        if x == 22 and armed[0]:
            armed[0] = False
            raise RuntimeError("crash")
        return x

    epochs: list[dict[int, int]] = [{}, {}]
    run_index = [0]

    def flow(out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(range(1, 41), 4))
        f.inspect_epoch(lambda epoch, x: epochs[run_index[0]].__setitem__(x, epoch))
        f.map("crash", crash)
        f.map("key", lambda x: (f"k{x % 3}", x))
        f.stateful_map("sum", lambda: 0, lambda s, x: (s + x, (x, s + x)))
        f.output("out", TestingSink(out))
        return f

    config = RecoveryConfig(db_dir)
    first: list[Any] = []
    with pytest.raises(RuntimeError, match="crash"):
        cluster_main(
            flow(first),
            [],
            0,
            worker_count_per_proc=workers,
            epoch_interval=timedelta(0),
            recovery_config=config,
        )
    run_index[0] = 1
    second: list[Any] = []
    cluster_main(
        flow(second),
        [],
        0,
        worker_count_per_proc=workers,
        epoch_interval=timedelta(0),
        recovery_config=config,
    )
    assert epochs[0][22] == 6
    assert min(epochs[1]) == 21  # the resume started at epoch 6
    assert epochs[1][21] == 6
    twice = Counter(first) & Counter(second)
    # Item 21 went through before the failure, in the epoch in flight.
    assert sorted(x for _, (x, _) in twice.elements()) == [21]
    assert len(first) + len(second) == 40 + 1


# -- a crash in the middle of a commit ----------------------------------------------------------


class _SimulatedKill(Exception):
    pass


def test_a_crash_between_the_files_of_a_commit_resumes_from_the_commit_before(
    db_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit writes the partition files one after the other. Kill the run
    # after the first file of a commit that spans several epochs: the files
    # are one commit apart, and a resume must start from the older commit.
    real_commit = Store.commit
    real_commit_file = Store._commit_file
    calls = itertools.count()
    torn: list[tuple[int, int]] = []

    def commit(
        self: Store, epoch: int, changes: Any, worker_count: int, keep_from: int | None
    ) -> None:
        n = next(calls)
        if n >= 1 and epoch - self.committed >= 2 and not torn:
            torn.append((self.committed, epoch))
        real_commit(self, epoch, changes, worker_count, keep_from)
        time.sleep(0.05)  # let the next commit span several epochs

    def commit_file(self: Store, index: int, epoch: int, *rest: Any) -> None:
        # The kill: after the first file of the torn commit.
        if torn and epoch == torn[0][1] and index >= 1:
            raise _SimulatedKill
        real_commit_file(self, index, epoch, *rest)

    def flow(out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(range(3_000)))
        f.map("key", lambda x: (f"k{x % 5}", x))
        f.stateful_map("sum", lambda: 0, lambda s, x: (s + x, (x, s + x)))
        f.output("out", TestingSink(out))
        return f

    expected: list[Any] = []
    cluster_main(flow(expected), [], 0)
    config = RecoveryConfig(db_dir)
    monkeypatch.setattr(Store, "commit", commit)
    monkeypatch.setattr(Store, "_commit_file", commit_file)
    first: list[Any] = []
    with pytest.raises(_SimulatedKill):
        cluster_main(flow(first), [], 0, epoch_interval=timedelta(0), recovery_config=config)
    monkeypatch.undo()
    assert torn, "no commit spanned several epochs"
    second: list[Any] = []
    with observe() as contexts:
        cluster_main(flow(second), [], 0, epoch_interval=timedelta(0), recovery_config=config)
    older, newer = torn[0]
    assert newer >= older + 2
    assert contexts[0].start_epoch == older + 1
    assert set(first) | set(second) == set(expected)
    assert not Counter(expected) - Counter(first + second)


# -- stateful sinks and sources ----------------------------------------------------------------


class _CountingPart(StatefulSinkPartition[Any, int]):
    def __init__(self, sink: CountingSink, name: str, resume_state: int | None) -> None:
        self.sink = sink
        self.name = name
        self.count = resume_state or 0

    def write_batch(self, values: list[Any]) -> None:
        self.count += len(values)
        self.sink.written.setdefault(self.name, []).extend(values)

    def snapshot(self) -> int:
        return self.count


class CountingSink(FixedPartitionedSink[Any, int]):
    def __init__(self) -> None:
        self.written: dict[str, list[Any]] = {}
        self.resumed: dict[str, int | None] = {}

    def list_parts(self) -> list[str]:
        return ["even", "odd"]

    def part_fn(self, item_key: str) -> int:
        return int(item_key[1:]) % 2

    def build_part(self, for_part: str, resume_state: int | None) -> _CountingPart:
        self.resumed[for_part] = resume_state
        return _CountingPart(self, for_part, resume_state)


@pytest.mark.parametrize("workers", [(1, 1), (2, 1), (1, 3)])
def test_stateful_sink_partitions_resume_from_their_snapshots(
    db_dir: Path, workers: tuple[int, int]
) -> None:
    crash_at = 62  # in epoch 13, of 5 items each
    armed = [True]
    epochs: dict[int, int] = {}

    def flow(sink: CountingSink, contexts: list[RunContext]) -> Dataflow:
        async def crash(x: int) -> int:
            if x == crash_at and armed[0]:
                armed[0] = False
                recovery = contexts[-1].recovery
                while recovery.store.committed < epochs[x] - 1:
                    await anyio.sleep(0.0005)
                raise RuntimeError("crash")
            return x

        f = Dataflow()
        f.input("inp", TestingSource(range(1, 101), 5))
        f.inspect_epoch(lambda epoch, x: epochs.__setitem__(x, epoch))
        f.map("crash", crash)
        f.map("key", lambda x: (f"k{x % 4}", x))
        f.output("out", sink)
        return f

    config = RecoveryConfig(db_dir)
    first, second = CountingSink(), CountingSink()
    with observe() as contexts:
        with pytest.raises(RuntimeError, match="crash"):
            cluster_main(
                flow(first, contexts),
                [],
                0,
                worker_count_per_proc=workers[0],
                epoch_interval=timedelta(0),
                recovery_config=config,
            )
        cluster_main(
            flow(second, contexts),
            [],
            0,
            worker_count_per_proc=workers[1],
            epoch_interval=timedelta(0),
            recovery_config=config,
        )
    # Each partition resumes from its count as of the last committed epoch
    # (12): the values of items 1..60 it got.
    assert second.resumed == {"even": 30, "odd": 30}
    for name, parity in (("even", 0), ("odd", 1)):
        assert second.written[name] == [x for x in range(61, 101) if x % 2 == parity]
        done = {x for x in range(1, 61) if x % 2 == parity}
        assert done <= set(first.written[name]) <= done | {61}


class _Parts(FixedPartitionedSource[int, int]):
    """Three partitions of different lengths, with a crash in one of them."""

    def __init__(self, crash: list[bool]) -> None:
        self.crash = crash
        self.resumed: dict[str, int | None] = {}

    def list_parts(self) -> list[str]:
        return ["p0", "p1", "p2"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        self.resumed[for_part] = resume_state
        base = int(for_part[1]) * 1000
        return _PartsPartition(range(base, base + 40 * (int(for_part[1]) + 1)), resume_state, self)


class _PartsPartition(StatefulSourcePartition[int, int]):
    def __init__(self, items: range, resume: int | None, owner: _Parts) -> None:
        self.items = items
        self.pos = resume or 0
        self.owner = owner

    def next_batch(self, sched: datetime | None) -> list[int]:
        if self.pos >= len(self.items):
            raise StopIteration
        if self.items[0] == 2000 and self.pos == 60 and self.owner.crash[0]:
            self.owner.crash[0] = False
            raise RuntimeError("crash")
        batch = list(self.items[self.pos : self.pos + 3])
        self.pos += len(batch)
        return batch

    def snapshot(self) -> int:
        return self.pos


@pytest.mark.parametrize("workers", [(3, 1), (1, 2), (2, 3)])
def test_source_partitions_resume_from_their_positions(
    db_dir: Path, workers: tuple[int, int]
) -> None:
    crash = [True]

    def flow(source: _Parts, out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", source)
        f.map("key", lambda x: (f"p{x // 1000}", x))
        f.stateful_map("sum", lambda: 0, lambda s, x: (s + x, (x, s + x)))
        f.output("out", TestingSink(out))
        return f

    expected: list[Any] = []
    cluster_main(flow(_Parts([False]), expected), [], 0)
    config = RecoveryConfig(db_dir)
    first: list[Any] = []
    with pytest.raises(RuntimeError, match="crash"):
        cluster_main(
            flow(_Parts(crash), first),
            [],
            0,
            worker_count_per_proc=workers[0],
            epoch_interval=timedelta(0),
            recovery_config=config,
        )
    source = _Parts(crash)
    second: list[Any] = []
    cluster_main(
        flow(source, second),
        [],
        0,
        worker_count_per_proc=workers[1],
        epoch_interval=timedelta(0),
        recovery_config=config,
    )
    assert set(first) | set(second) == set(expected)
    assert not Counter(expected) - Counter(first + second)
    # Every partition got its own position (or none, if nothing of it was committed).
    assert set(source.resumed) == {"p0", "p1", "p2"}
    for name, length in (("p0", 40), ("p1", 80), ("p2", 120)):
        position = source.resumed[name]
        assert position is None or 0 <= position <= length
    assert source.resumed["p2"] is None or source.resumed["p2"] <= 60


# -- backups ------------------------------------------------------------------------------------


def _snap_epochs(db_dir: Path, step_id: str) -> list[int]:
    epochs: list[int] = []
    for path in sorted(db_dir.glob("part-*.sqlite3")):
        conn = sqlite3.connect(path)
        try:
            query = "SELECT epoch FROM snaps WHERE step_id = ?"
            epochs += [e for (e,) in conn.execute(query, (step_id,))]
        finally:
            conn.close()
    return sorted(epochs)


class _Lockstep(StatefulSourcePartition[Any, int]):
    """One item per virtual second (at i + 0.5 s), each only once the epoch
    of the one before is committed: one commit per epoch, deterministically."""

    def __init__(self, script: Script, count: int, resume: int | None) -> None:
        self.script = script
        self.count = count
        self.pos = resume or 0

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.pos >= self.count:
            raise StopAsyncIteration
        await anyio.sleep_until(self.pos + 0.5)
        if self.pos:
            await self.script.wait_committed(("hot", self.pos - 1))
        self.pos += 1
        return [("hot", self.pos - 1)]

    def snapshot(self) -> int:
        return self.pos


class _LockstepSource(FixedPartitionedSource[Any, int]):
    def __init__(self, script: Script, count: int) -> None:
        self.script = script
        self.count = count

    def list_parts(self) -> list[str]:
        return ["hot"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        return _Lockstep(self.script, self.count, resume_state)


@VIRTUAL
@pytest.mark.parametrize(
    ("backup", "kept"),
    [(None, 0), (timedelta(0), 0), (timedelta(seconds=10), 10), (timedelta(hours=1), 10_000)],
    ids=["none", "zero", "10s", "1h"],
)
async def test_backup_interval_keeps_superseded_rows_for_its_duration(
    db_dir: Path, backup: timedelta | None, kept: int
) -> None:
    # 40 epochs of 1 s, the key changing in each, one commit per epoch. A
    # commit of epoch e keeps the rows after e - 1 - (backup / 1 s), plus the
    # newest row before that; without a backup interval, two rows per key.
    items = 40
    script = Script([])
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", _LockstepSource(script, items))
    flow.inspect_epoch(script.record)
    flow.stateful_map("sum", lambda: 0, lambda s, x: (s + x, s + x))
    flow.output("out", TestingSink(out))
    config = RecoveryConfig(db_dir, backup_interval=backup)
    with observe() as contexts:
        script.contexts = contexts
        await aiowax.run(flow, epoch_interval=EPOCH, recovery_config=config)
    assert [script.epochs[("hot", i)] for i in range(items)] == list(range(1, items + 1))
    assert contexts[0].recovery.commits == items
    rows = _snap_epochs(db_dir, "sum")
    assert rows == list(range(max(1, items - 1 - kept), items + 1))
    assert out[-1] == ("hot", sum(range(items)))


# -- the files of a directory move together -----------------------------------------------------


def test_a_copy_of_the_directory_resumes_like_the_original(db_dir: Path, tmp_path: Path) -> None:
    # After a clean end every file has committed the same last epoch; a copy
    # of the whole directory taken then (a backup) continues like it.
    items: list[Any] = [*range(50), TestingSource.EOF(), *range(50, 60)]

    def flow(out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(items, 5))
        f.map("key", lambda x: (f"k{x % 3}", x))
        f.stateful_map("sum", lambda: 0, lambda s, x: (s + x, (x, s + x)))
        f.output("out", TestingSink(out))
        return f

    def run(out: list[Any], directory: Path) -> None:
        cluster_main(
            flow(out), [], 0, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(directory)
        )

    expected: list[Any] = []
    cluster_main(flow(expected), [], 0)  # without recovery the EOF ends the input
    run([], db_dir)
    tops = set()
    for path in sorted(db_dir.glob("part-*.sqlite3")):
        conn = sqlite3.connect(path)
        try:
            tops.add(conn.execute("SELECT MAX(epoch) FROM commits").fetchone()[0])
        finally:
            conn.close()
    assert len(tops) == 1
    backup = tmp_path / "backup"
    shutil.copytree(db_dir, backup)
    totals: dict[str, int] = {}
    for x in range(50):
        totals[f"k{x % 3}"] = totals.get(f"k{x % 3}", 0) + x
    later = []
    for x in range(50, 60):
        totals[f"k{x % 3}"] += x
        later.append((f"k{x % 3}", (x, totals[f"k{x % 3}"])))
    for directory in (db_dir, backup):
        out: list[Any] = []
        run(out, directory)
        assert out == later


# -- a plain asyncio cancellation while the store opens ------------------------------


@pytest.mark.asyncio
async def test_a_plain_asyncio_cancel_while_the_store_opens_closes_it_after_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # task.cancel() (asyncio.timeout, wait_for) does not wait for the worker
    # thread that opens the store, as an anyio cancel scope does: the store
    # was closed on the loop while the thread still read it (a segfault,
    # helper-60), or, cancelled before the thread had made it, left open
    # with the directory's lock for the rest of the process.
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 1)
    loading, release, closed = threading.Event(), threading.Event(), threading.Event()
    closed_during_load: list[bool] = []
    real_load, real_close = Store.load, Store.close

    def slow_load(store: Store) -> dict[tuple[str, str], bytes]:
        loading.set()
        release.wait(30)
        return real_load(store)

    def watched_close(store: Store) -> None:
        closed_during_load.append(not release.is_set())
        real_close(store)
        closed.set()

    monkeypatch.setattr(Store, "load", slow_load)
    monkeypatch.setattr(Store, "close", watched_close)

    def flow(out: list[int]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource([1, 2, 3]))
        f.output("out", TestingSink(out))
        return f

    task = asyncio.ensure_future(aiowax.run(flow([]), recovery_config=RecoveryConfig(db_dir)))
    assert await anyio.to_thread.run_sync(loading.wait, 30)
    task.cancel()
    for _ in range(20):  # the cancellation reaches the run, the thread still loads
        await asyncio.sleep(0)
    assert not task.done()  # the run waits for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()  # before the run returned
    assert closed_during_load == [False]  # and not while the thread still read it
    monkeypatch.undo()
    out: list[int] = []
    await aiowax.run(flow(out), recovery_config=RecoveryConfig(db_dir))  # not locked
    assert out == [1, 2, 3]
