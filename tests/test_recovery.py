"""Recovery through the public API: crash, resume, continue, rescale, errors.

Acceptance of the recovery semantics of the API contract: a resumed run
starts after the last epoch every worker finished; state is exactly once
(the final per-key states, and every result, equal a crash-free run's) and
output at least once (only the epoch in flight at the crash is replayed);
``TestingSource.EOF()`` ends a run cleanly and the next run continues after
it; the worker count may change between runs; the partition files are
checked before anything runs, and their size stays flat however many epochs
go by. The last test kills a flow running in a subprocess with SIGKILL at
random points and resumes it until it finishes.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import recovery_crash_flow
from aiowax._engine.context import RunContext
from aiowax._engine.ops.windows import op as window_op
from aiowax.dataflow import Dataflow
from aiowax.recovery import (
    InconsistentPartitionsError,
    MissingPartitionsError,
    NoPartitionsError,
    RecoveryConfig,
    RecoveryError,
    init_db_dir,
)
from aiowax.testing import TestingSink, TestingSource, cluster_main
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    TumblingWindow,
)
from observing import observe_runs

EOF = TestingSource.EOF
ABORT = TestingSource.ABORT

#: Keys of the test flows: item x belongs to key ``k{x % KEYS}``.
KEYS = 7
ITEMS = list(range(1, 301))
#: Items per source batch; with ``epoch_interval=timedelta(0)`` each batch
#: is its own epoch, so item x is in epoch ``(x - 1) // BATCH + 1``.
BATCH = 5
#: The item the crashing mapper raises on, in epoch 31.
CRASH_ON = 152
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ZERO = timedelta(0)


def key_of(x: int) -> str:
    return f"k{x % KEYS}"


def epoch_of(x: int) -> int:
    return (x - 1) // BATCH + 1


@contextmanager
def observe() -> Iterator[list[RunContext]]:
    """Collect the context of every run started inside the block."""
    with observe_runs() as seen:
        yield seen


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recovery"
    init_db_dir(path, 3)
    return path


class Crash:
    """A mapper that raises on item ``on``, in the first run only.

    Before it raises it waits until every epoch before the item's own is
    committed, as a crash a while later would find them: the resume then
    starts exactly at the epoch in flight, and restores the state of all
    the epochs before it.
    """

    def __init__(self, on: int | None, contexts: list[RunContext]) -> None:
        self.on = on
        self.armed = on is not None
        self.contexts = contexts
        #: Epoch of each item, per run (index into ``contexts``).
        self.epochs: list[dict[int, int]] = []

    def record(self, epoch: int, item: int) -> None:
        while len(self.epochs) < len(self.contexts):
            self.epochs.append({})
        self.epochs[len(self.contexts) - 1][item] = epoch

    async def __call__(self, x: int) -> int:
        if self.armed and x == self.on:
            self.armed = False
            ctx = self.contexts[-1]
            before = self.epochs[-1][x] - 1
            with anyio.fail_after(10):
                while ctx.recovery.store.committed < before:
                    # A real pause, not a busy loop: the commit runs in a
                    # thread that needs the GIL.
                    await anyio.sleep(0.0005)
            msg = f"crash on {x}"
            raise RuntimeError(msg)
        return x


def _event_time(x: int) -> datetime:
    # One second apart, with a 20 s pause every 30 items: sessions end there.
    return T0 + timedelta(seconds=x + 20 * (x // 30))


EVENT_CLOCK = EventClockConfig(lambda kv: _event_time(kv), ZERO)


def _add(total: int, x: int) -> tuple[int, tuple[int, int]]:
    return total + x, (x, total + x)


def _freeze(value: Any) -> Any:
    """Results made hashable, to compare them as sets and counters."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


#: Each stateful operator, added after the ``(key, x)`` items.
OPERATORS: dict[str, Callable[[Dataflow], None]] = {
    "stateful_map": lambda f: f.stateful_map("op", lambda: 0, _add),
    "reduce": lambda f: (
        f.map("wrap", lambda kv: (kv[0], (kv[1],))),
        f.reduce("op", lambda a, b: a + b, lambda acc: len(acc) >= 4),
    ),
    "batch": lambda f: f.batch("op", 4, timedelta(hours=1)),
    "fold_window": lambda f: f.fold_window(
        "op",
        EVENT_CLOCK,
        TumblingWindow(timedelta(seconds=30), T0),
        list,
        lambda acc, x: [*acc, x],
    ),
    "reduce_window": lambda f: f.reduce_window(
        "op",
        EVENT_CLOCK,
        SlidingWindow(timedelta(seconds=40), timedelta(seconds=20), T0),
        lambda a, b: a + b,
    ),
    "collect_window": lambda f: f.collect_window(
        "op", EVENT_CLOCK, TumblingWindow(timedelta(seconds=25), T0)
    ),
    "collect_window_session": lambda f: f.collect_window(
        "op", EVENT_CLOCK, SessionWindow(timedelta(seconds=10))
    ),
    # Arrival order matters to a fold: a resumed session must keep it.
    "fold_window_session": lambda f: f.fold_window(
        "op", EVENT_CLOCK, SessionWindow(timedelta(seconds=10)), list, lambda acc, x: [*acc, x]
    ),
}


def make_flow(
    items: list[Any], out: list[Any], op: str, crash: Crash | None = None, batch: int = BATCH
) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch))
    flow.inspect_epoch(crash.record if crash is not None else lambda epoch, x: None)
    flow.map("crash", crash if crash is not None else lambda x: x)
    flow.map("key", lambda x: (key_of(x), x))
    OPERATORS[op](flow)
    flow.output("out", TestingSink(out))
    return flow


def run(
    flow: Dataflow,
    db_dir: Path | None,
    workers: int = 1,
    epoch_interval: timedelta | None = ZERO,
    **config: Any,
) -> None:
    recovery = RecoveryConfig(db_dir, **config) if db_dir is not None else None
    cluster_main(
        flow,
        [],
        0,
        worker_count_per_proc=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery,
    )


def crash_free(items: list[Any], op: str, workers: int = 1) -> list[Any]:
    out: list[Any] = []
    run(make_flow(items, out, op), None, workers)
    return [_freeze(r) for r in out]


def final_states(results: list[Any]) -> dict[str, int]:
    """Last running total per key, from stateful_map results ``(key, (x, total))``."""
    last: dict[str, tuple[int, int]] = {}
    for key, (x, total) in results:
        if key not in last or x > last[key][0]:
            last[key] = (x, total)
    return {key: total for key, (_, total) in last.items()}


# -- crash and resume, per operator ----------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("op", list(OPERATORS))
def test_crash_then_resume_equals_a_crash_free_run(db_dir: Path, op: str, workers: int) -> None:
    expected = crash_free(ITEMS, op, workers)
    with observe() as contexts:
        crash = Crash(CRASH_ON, contexts)
        first: list[Any] = []
        with pytest.raises(RuntimeError, match=f"crash on {CRASH_ON}"):
            run(make_flow(ITEMS, first, op, crash), db_dir, workers)
        second: list[Any] = []
        run(make_flow(ITEMS, second, op, crash), db_dir, workers)
    first = [_freeze(r) for r in first]
    second = [_freeze(r) for r in second]
    # The second run resumed at the epoch in flight, with the states of the
    # epochs before it restored.
    assert contexts[1].start_epoch == epoch_of(CRASH_ON)
    assert min(crash.epochs[1]) == (epoch_of(CRASH_ON) - 1) * BATCH + 1
    # Every result of a crash-free run, and nothing it would not emit (a
    # state counted twice or lost would change the results).
    assert set(first) | set(second) == set(expected)
    assert not Counter(expected) - Counter(first + second)
    if op == "stateful_map":
        # Only results of the replayed epoch come twice.
        twice = Counter(first + second) - Counter(expected)
        assert {x for _, (x, _) in twice} <= {x for x in ITEMS if epoch_of(x) == epoch_of(CRASH_ON)}
        assert final_states(first + second) == final_states(expected)


@pytest.mark.parametrize("workers", [1, 3])
def test_sessions_folded_early_give_the_same_results_and_resume_exactly(
    db_dir: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key's only session folds its items into one entry every so often
    # (`state.Folded`), so that a key that never pauses holds no list of its
    # items; here every two items. Arrival order, snapshots and the resume
    # must not change a result.
    op = "fold_window_session"
    unfolded = crash_free(ITEMS, op, workers)
    monkeypatch.setattr(window_op, "COMPACT_LEN", 2 + 3 * 2)
    assert Counter(crash_free(ITEMS, op, workers)) == Counter(unfolded)
    test_crash_then_resume_equals_a_crash_free_run(db_dir, op, workers)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_crash_before_any_commit_starts_over(db_dir: Path, workers: int) -> None:
    expected = crash_free(ITEMS, "stateful_map", workers)
    armed = [True]

    def crash(x: int) -> int:
        if x == 1 and armed[0]:
            armed[0] = False
            raise RuntimeError("crash at once")
        return x

    def flow(out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(ITEMS, BATCH))
        f.map("crash", crash)
        f.map("key", lambda x: (key_of(x), x))
        f.stateful_map("op", lambda: 0, _add)
        f.output("out", TestingSink(out))
        return f

    first: list[Any] = []
    with pytest.raises(RuntimeError, match="crash at once"):
        run(flow(first), db_dir, workers)
    assert first == []
    second: list[Any] = []
    run(flow(second), db_dir, workers)
    assert sorted(second) == sorted(expected)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("op", ["stateful_map", "reduce", "collect_window_session", "batch"])
def test_abort_then_resume(db_dir: Path, op: str, workers: int) -> None:
    expected = crash_free(ITEMS, op, workers)
    items: list[Any] = [*ITEMS[:150], ABORT(), *ITEMS[150:]]
    first: list[Any] = []
    run(make_flow(items, first, op), db_dir, workers)  # ends as a crash would
    second: list[Any] = []
    run(make_flow(items, second, op), db_dir, workers)  # the abort fired already
    results = [_freeze(r) for r in first + second]
    assert set(results) == set(expected)
    assert not Counter(expected) - Counter(results)
    if op == "stateful_map":
        assert final_states(results) == final_states(expected)
    # Nothing left: a third run reads nothing more.
    third: list[Any] = []
    run(make_flow(items, third, op), db_dir, workers)
    assert third == []


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("epoch_interval", [ZERO, None], ids=["every-batch", "default-10s"])
def test_eof_ends_a_run_and_the_next_continues_after_it(
    db_dir: Path, workers: int, epoch_interval: timedelta | None
) -> None:
    expected = crash_free(ITEMS, "stateful_map")
    items: list[Any] = [*ITEMS[:100], EOF(), *ITEMS[100:220], EOF(), *ITEMS[220:]]
    runs = []
    for _ in range(4):
        out: list[Any] = []
        run(make_flow(items, out, "stateful_map"), db_dir, workers, epoch_interval)
        runs.append([_freeze(r) for r in out])
    # Clean ends: each run emits exactly its segment, with the states carried.
    for got, (low, high) in zip(runs, [(1, 100), (101, 220), (221, 300), (1, 0)], strict=True):
        assert sorted(got) == sorted(r for r in expected if low <= r[1][0] <= high)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "epoch_interval",
    [ZERO, timedelta(milliseconds=1), None],
    ids=["every-batch", "1ms", "default-10s"],
)
@pytest.mark.parametrize("op", ["stateful_map", "reduce"])
def test_continuation_with_appended_input_processes_only_the_new_items(
    db_dir: Path, op: str, workers: int, epoch_interval: timedelta | None
) -> None:
    # With the default interval the whole first run is shorter than one
    # epoch: its end of input still commits what it read.
    expected = crash_free(ITEMS, op)
    first: list[Any] = []
    run(make_flow(ITEMS[:120], first, op), db_dir, workers, epoch_interval)
    second: list[Any] = []
    run(make_flow(ITEMS, second, op), db_dir, workers, epoch_interval)
    first = [_freeze(r) for r in first]
    second = [_freeze(r) for r in second]
    assert sorted(first) == sorted(crash_free(ITEMS[:120], op))
    # No double counting: the second run's results are those of a single
    # run over all the items, minus what the first run emitted.
    assert Counter(first) + Counter(second) == Counter(expected)
    if op == "stateful_map":
        assert {r[1][0] for r in second} == set(ITEMS[120:])
    again: list[Any] = []
    run(make_flow(ITEMS, again, op), db_dir, workers, epoch_interval)
    assert again == []


def test_continuation_carries_state_of_keys_not_seen_again(db_dir: Path) -> None:
    first: list[Any] = []
    run(make_flow([1, 2, 3, 8], first, "stateful_map"), db_dir)
    second: list[Any] = []
    # Only key k1 comes back; k2 and k3 keep their totals for later runs.
    run(make_flow([1, 2, 3, 8, 15], second, "stateful_map"), db_dir)
    assert second == [("k1", (15, 24))]
    third: list[Any] = []
    run(make_flow([1, 2, 3, 8, 15, 9, 10], third, "stateful_map"), db_dir)
    assert third == [("k2", (9, 11)), ("k3", (10, 13))]


# -- rescaling -------------------------------------------------------------------------


def _rescale_time(kv: int) -> datetime:
    return T0 + timedelta(seconds=kv - 1)


#: Operators whose results do not depend on where the runs end: the segments
#: below end at window boundaries, after a multiple of 4 items per key.
RESCALE_OPERATORS: dict[str, Callable[[Dataflow], None]] = {
    "stateful_map": OPERATORS["stateful_map"],
    "reduce": OPERATORS["reduce"],
    "batch": OPERATORS["batch"],
    "collect_window": lambda f: f.collect_window(
        "op",
        EventClockConfig(_rescale_time, ZERO),
        TumblingWindow(timedelta(seconds=28), T0),
    ),
}
#: 84 and 112 items: 12 and 16 per key, and item 85 opens the window at 84 s.
SEGMENTS = [ITEMS[:84], ITEMS[84:196], ITEMS[196:]]


@pytest.mark.parametrize("ending", ["eof", "abort"])
@pytest.mark.parametrize("op", list(RESCALE_OPERATORS))
def test_rescale_3_5_1_workers_carries_state(
    db_dir: Path, monkeypatch: pytest.MonkeyPatch, op: str, ending: str
) -> None:
    monkeypatch.setitem(OPERATORS, "rescaled", RESCALE_OPERATORS[op])
    expected = crash_free(ITEMS, "rescaled")
    middle: list[Any] = list(SEGMENTS[1])
    if ending == "abort":
        middle.insert(50, ABORT())
    items: list[Any] = [*SEGMENTS[0], EOF(), *middle, EOF(), *SEGMENTS[2]]
    results = []
    worker_counts = [3, 5, 1] if ending == "eof" else [3, 5, 4, 1]
    for workers in worker_counts:
        out: list[Any] = []
        run(make_flow(items, out, "rescaled", batch=3), db_dir, workers)
        results.append([_freeze(r) for r in out])
    everything = [r for run_results in results for r in run_results]
    if ending == "eof":
        # Clean ends only: every result exactly once.
        assert Counter(everything) == Counter(expected)
    else:
        assert set(everything) == set(expected)
        assert not Counter(expected) - Counter(everything)
    if op == "stateful_map":
        assert final_states(everything) == final_states(expected)
        # The last run (one worker) took over the states of all five.
        assert {r[1][0] for r in results[-1]} == set(SEGMENTS[2])


# -- the recovery directory ------------------------------------------------------------


def _tiny_flow(out: list[Any], items: list[Any] | None = None) -> Dataflow:
    return make_flow(items if items is not None else [1, 2, 3], out, "stateful_map")


@pytest.mark.parametrize("ends", ["eof", "longer_input"])
def test_an_incomplete_reduce_goes_on_in_the_resumed_run(db_dir: Path, ends: str) -> None:
    # "Dropped at end of input" means not emitted: the accumulator is state,
    # snapshotted with the rest, and a resumed run goes on from it. As in
    # Bytewax 0.17.2 (checked: its run over [a:1, a:1], then over the same
    # input with a third a:1 resumed after two: [], then [('a', 3)]); it has
    # no EOF marker, which ends a run as the end of its input does.
    def flow(items: list[Any], out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(items))
        f.reduce("red", lambda acc, x: acc + x, lambda acc: acc >= 3)
        f.output("out", TestingSink(out))
        return f

    if ends == "eof":
        runs = [[("a", 1), ("a", 1), TestingSource.EOF(), ("a", 1)]] * 2
    else:
        runs = [[("a", 1), ("a", 1)], [("a", 1), ("a", 1), ("a", 1)]]
    outs: list[list[Any]] = []
    for items in runs:
        outs.append([])
        run(flow(items, outs[-1]), db_dir)
    assert outs == [[], [("a", 3)]]


def test_no_directory_raises_no_partitions(tmp_path: Path) -> None:
    out: list[Any] = []
    with pytest.raises(NoPartitionsError, match="does not exist"):
        run(_tiny_flow(out), tmp_path / "nope")
    assert out == []
    # Bytewax 0.17.2 raises FileNotFoundError there: caught the same way.
    with pytest.raises(FileNotFoundError):
        run(_tiny_flow(out), tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_empty_directory_raises_no_partitions(tmp_path: Path) -> None:
    (tmp_path / "unrelated.txt").write_text("x")
    (tmp_path / "part-x.sqlite3").write_text("not a partition name")
    out: list[Any] = []
    with pytest.raises(NoPartitionsError) as info:
        run(_tiny_flow(out), tmp_path)
    assert f"python -m aiowax.recovery {tmp_path} COUNT" in str(info.value)
    assert isinstance(info.value, RecoveryError)
    assert out == []


def test_a_missing_part_file_raises_missing_partitions(db_dir: Path) -> None:
    run(_tiny_flow([]), db_dir)
    (db_dir / "part-1.sqlite3").unlink()
    out: list[Any] = []
    with pytest.raises(MissingPartitionsError, match=r"lacks partition files part-1\.sqlite3"):
        run(_tiny_flow(out, [1, 2, 3, 4]), db_dir)
    assert out == []


def test_missing_highest_part_files_are_found_too(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 4)
    (tmp_path / "part-2.sqlite3").unlink()
    (tmp_path / "part-3.sqlite3").unlink()
    with pytest.raises(MissingPartitionsError, match=r"part-2\.sqlite3, part-3\.sqlite3 \(of 4\)"):
        run(_tiny_flow([]), tmp_path)


def test_a_part_file_from_an_earlier_point_in_time_is_inconsistent(
    db_dir: Path, tmp_path: Path
) -> None:
    items: list[Any] = [*ITEMS[:20], EOF(), *ITEMS[20:40], EOF(), *ITEMS[40:60]]
    run(_tiny_flow([], items), db_dir)
    backup = tmp_path / "early-part-0.sqlite3"
    shutil.copy(db_dir / "part-0.sqlite3", backup)
    run(_tiny_flow([], items), db_dir)
    run(_tiny_flow([], items), db_dir)
    assert not (db_dir / "part-0.sqlite3-wal").exists()  # closed cleanly
    shutil.copy(backup, db_dir / "part-0.sqlite3")
    out: list[Any] = []
    with pytest.raises(InconsistentPartitionsError, match="different points in time"):
        run(_tiny_flow(out, items), db_dir)
    assert out == []


def test_part_files_of_another_directory_are_inconsistent(db_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_db_dir(other, 2)
    shutil.copy(other / "part-1.sqlite3", db_dir / "part-1.sqlite3")
    with pytest.raises(InconsistentPartitionsError, match="disagree on their count"):
        run(_tiny_flow([]), db_dir)


def test_a_part_file_renamed_to_another_index_is_inconsistent(db_dir: Path) -> None:
    (db_dir / "part-2.sqlite3").unlink()
    shutil.copy(db_dir / "part-1.sqlite3", db_dir / "part-2.sqlite3")
    with pytest.raises(InconsistentPartitionsError, match="does not describe partition 2"):
        run(_tiny_flow([]), db_dir)


def test_a_part_file_beyond_the_count_is_inconsistent(db_dir: Path) -> None:
    shutil.copy(db_dir / "part-2.sqlite3", db_dir / "part-3.sqlite3")
    with pytest.raises(InconsistentPartitionsError):
        run(_tiny_flow([]), db_dir)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "not a database":
        path.write_bytes(b"this is not an SQLite database\n" * 200)
    elif how == "cut short":
        path.write_bytes(data[:3000])
    elif how == "pages overwritten":
        # The header (first 100 bytes) intact, the pages after it not.
        path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "a directory":
        path.unlink()
        path.mkdir()
    elif how == "a named pipe":
        path.unlink()
        os.mkfifo(path)
    elif how == "a dangling link":
        path.unlink()
        path.symlink_to(path.with_name("gone.sqlite3"))
    else:  # a loop of links
        path.unlink()
        path.with_name("other").symlink_to(path)
        path.symlink_to(path.with_name("other"))


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("not a database", "is damaged, or is not a partition file \\(SQLite: file is not a"),
        ("cut short", "is damaged, or is not a partition file \\(SQLite: database disk image"),
        ("pages overwritten", "is damaged, or is not a partition file \\(SQLite: database disk"),
        ("empty", "is empty, not a partition file"),
        # SQLite said "disk I/O error" for these two, and would read a pipe for ever.
        ("a directory", "is a directory, not a partition file"),
        ("a named pipe", "is not a regular file, not a partition file"),
        ("a dangling link", "is a symbolic link that leads to no file \\(.*gone.sqlite3: "),
        ("a loop of links", "is a symbolic link that leads to no file \\(.*: Too many levels"),
    ],
)
def test_a_damaged_part_file_is_refused_saying_what_is_wrong(
    db_dir: Path, how: str, said: str
) -> None:
    # Committed state first, so that the damaged file is not a fresh one.
    run(_tiny_flow([]), db_dir)
    path = db_dir / "part-1.sqlite3"
    _damage(path, how)
    out: list[Any] = []
    with pytest.raises(InconsistentPartitionsError, match=f"^{re.escape(str(path))} {said}"):
        run(_tiny_flow(out), db_dir)
    assert out == []
    # The other files are left as they were: they still open.
    with contextlib.closing(sqlite3.connect(db_dir / "part-0.sqlite3")) as conn:
        assert conn.execute("SELECT * FROM meta").fetchall()


#: The tables of a Bytewax 0.17.2 recovery partition, as ``python -m
#: bytewax.recovery DIR 2`` makes them (read from its files' sqlite_master).
BYTEWAX_0172_SCHEMA = """
CREATE TABLE parts (created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    part_index INTEGER PRIMARY KEY NOT NULL CHECK (part_index >= 0),
    part_count INTEGER NOT NULL CHECK (part_count > 0), CHECK (part_index < part_count)) STRICT;
CREATE TABLE exs (created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ex_num INTEGER NOT NULL PRIMARY KEY, worker_count INTEGER NOT NULL CHECK (worker_count > 0),
    resume_epoch INTEGER NOT NULL) STRICT;
CREATE TABLE fronts (created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ex_num INTEGER NOT NULL, worker_index INTEGER NOT NULL CHECK (worker_index >= 0),
    worker_frontier INTEGER NOT NULL, PRIMARY KEY (ex_num, worker_index)) STRICT;
CREATE TABLE commits (created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    part_index INTEGER PRIMARY KEY NOT NULL, commit_epoch INTEGER NOT NULL) STRICT;
CREATE TABLE snaps (created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, step_id TEXT NOT NULL,
    state_key TEXT NOT NULL, snap_epoch INTEGER NOT NULL, ser_change TEXT,
    PRIMARY KEY (step_id, state_key, snap_epoch)) STRICT;
"""


def _foreign_dir(path: Path, schema: str, *, wal: bool = False) -> dict[str, bytes]:
    """Two SQLite files named like partitions, made with ``schema``; their bytes by name."""
    path.mkdir()
    for index in range(2):
        conn = sqlite3.connect(path / f"part-{index}.sqlite3")
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)
        conn.close()
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_a_bytewax_recovery_directory_is_refused_as_bytewax_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    # Bytewax 0.17.2 cannot read an aiowax directory either; the point here is
    # the message, and that aiowax leaves Bytewax's directory untouched: no
    # aiowax.lock in it (it was left there before), no file changed, and no
    # -wal and -shm beside them (Bytewax's files are in WAL mode, and a
    # read-only connection left both).
    path = tmp_path / "bytewax"
    before = _foreign_dir(path, BYTEWAX_0172_SCHEMA, wal=True)
    out: list[Any] = []
    with pytest.raises(InconsistentPartitionsError, match="a Bytewax recovery partition") as info:
        run(_tiny_flow(out), path)
    assert "python -m aiowax.recovery" in str(info.value)
    assert out == []
    assert {p.name: p.read_bytes() for p in sorted(path.iterdir())} == before


def test_a_bytewax_directory_a_crashed_run_left_a_wal_in_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    # Bytewax's files are in WAL mode: a crashed Bytewax run leaves rows in
    # each -wal. A read-write probe moved them into the file on closing;
    # read-only, the files and their -wal stay byte for byte.
    live = tmp_path / "live"
    live.mkdir()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    conns = []
    for index in range(2):
        conn = sqlite3.connect(live / f"part-{index}.sqlite3")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(BYTEWAX_0172_SCHEMA)
        conn.execute("INSERT INTO parts (part_index, part_count) VALUES (?, 2)", (index,))
        conn.commit()
        conns.append(conn)
    # Copied while the writers are open: the image a crash leaves.
    for path in live.iterdir():
        if not path.name.endswith("-shm"):
            shutil.copy(path, crashed / path.name)
    for conn in conns:
        conn.close()
    before = {p.name: p.read_bytes() for p in sorted(crashed.iterdir())}
    assert "part-0.sqlite3-wal" in before and len(before["part-0.sqlite3-wal"]) > 0
    with pytest.raises(InconsistentPartitionsError, match="a Bytewax recovery partition"):
        run(_tiny_flow([]), crashed)
    after = {p.name: p.read_bytes() for p in sorted(crashed.iterdir())}
    # SQLite's -shm (an index of the -wal it rebuilds) may appear; nothing else.
    assert {name: data for name, data in after.items() if not name.endswith("-shm")} == before


def test_an_sqlite_file_of_another_program_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "other"
    before = _foreign_dir(path, "CREATE TABLE users (name TEXT);")
    with pytest.raises(InconsistentPartitionsError, match=r"no meta table \(tables: users\)"):
        run(_tiny_flow([]), path)
    assert {p.name: p.read_bytes() for p in sorted(path.iterdir())} == before


def test_init_db_dir_creates_the_directory_and_files(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    init_db_dir(str(path), 2)
    assert sorted(p.name for p in path.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3"]
    # Other files in the directory do not matter.
    other = tmp_path / "other"
    other.mkdir()
    (other / "README").write_text("x")
    init_db_dir(other, 1)
    assert (other / "part-0.sqlite3").is_file()


def test_init_db_dir_refuses_a_directory_with_partitions(db_dir: Path) -> None:
    with pytest.raises(ValueError, match="already holds partition files"):
        init_db_dir(db_dir, 3)
    (db_dir / "part-0.sqlite3").unlink()
    with pytest.raises(ValueError, match=r"part-1\.sqlite3, part-2\.sqlite3"):
        init_db_dir(db_dir, 1)


@pytest.mark.parametrize(
    ("count", "error", "message"),
    [
        (0, ValueError, "count must be positive"),
        (-1, ValueError, "count must be positive"),
        (True, TypeError, "count must be an int"),
        (1.5, TypeError, "count must be an int"),
        ("2", TypeError, "count must be an int"),
        (None, TypeError, "count must be an int"),
    ],
)
def test_init_db_dir_bad_count(
    tmp_path: Path, count: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        init_db_dir(tmp_path / "d", count)
    assert not (tmp_path / "d").exists()


def _recovery_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    return subprocess.run(
        [sys.executable, "-m", "aiowax.recovery", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_recovery_command_line(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    made = _recovery_cli(str(path), "3")
    assert (made.returncode, made.stderr) == (0, "")
    assert made.stdout == f"created 3 partition file(s) in {path}\n"
    assert sorted(p.name for p in path.iterdir()) == [f"part-{i}.sqlite3" for i in range(3)]
    # The files work.
    out: list[Any] = []
    run(_tiny_flow(out), path)
    assert sorted(out) == [("k1", (1, 1)), ("k2", (2, 2)), ("k3", (3, 3))]

    again = _recovery_cli(str(path), "3")
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr.startswith("error: init_db_dir: ")
    assert "already holds partition files" in again.stderr

    for bad in ("0", "-2"):
        result = _recovery_cli(str(tmp_path / "bad"), bad)
        assert result.returncode == 2
        assert f"init_db_dir: count must be positive, got {bad}" in result.stderr
    not_a_number = _recovery_cli(str(tmp_path / "bad"), "three")
    assert not_a_number.returncode == 2
    assert "invalid int value: 'three'" in not_a_number.stderr
    usage = _recovery_cli()
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: python -m aiowax.recovery")
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_recovery_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aiowax.recovery import main

    assert main([str(tmp_path / "r"), "2"]) == 0
    assert main([str(tmp_path / "r"), "2"]) == 2
    err = capsys.readouterr().err
    assert "already holds partition files" in err


# -- garbage collection and backups ----------------------------------------------------


def _db_stats(db_dir: Path) -> tuple[int, int]:
    """Rows in the snaps tables, and bytes of all part files (incl. -wal)."""
    rows = 0
    for path in sorted(db_dir.glob("part-*.sqlite3")):
        conn = sqlite3.connect(path)
        try:
            rows += conn.execute("SELECT COUNT(*) FROM snaps").fetchone()[0]
        finally:
            conn.close()
    size = sum(p.stat().st_size for p in db_dir.glob("part-*"))
    return rows, size


def _gc_flow(items: range, out: list[Any], contexts: list[RunContext]) -> Dataflow:
    epochs: dict[int, int] = {}

    async def catch_up(x: int) -> int:
        # Every 100th item waits until the epochs before it are committed:
        # however busy the loop keeps the writer's thread, at least 100
        # commits (and garbage collections) happen.
        if x % 100 == 99:
            recovery = contexts[-1].recovery
            with anyio.fail_after(10):
                while recovery.store.committed < epochs[x] - 1:
                    await anyio.sleep(0.0005)
        return x

    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size=1))
    flow.inspect_epoch(lambda epoch, x: epochs.__setitem__(x, epoch))
    flow.map("catch_up", catch_up)
    flow.map("key", lambda x: (f"k{x % 10}", x))
    flow.stateful_map("sum", lambda: 0, lambda total, x: (total + x, total + x))
    flow.output("out", TestingSink(out))
    return flow


def test_gc_keeps_the_database_flat_over_10000_epochs(db_dir: Path) -> None:
    started = time.monotonic()
    with observe() as contexts:
        first: list[Any] = []
        run(_gc_flow(range(1_000), first, contexts), db_dir)
        rows_1k, size_1k = _db_stats(db_dir)
        second: list[Any] = []
        run(_gc_flow(range(10_000), second, contexts), db_dir)
        rows_10k, size_10k = _db_stats(db_dir)
    assert len(first) + len(second) == 10_000
    assert contexts[1].start_epoch > 1_000  # one epoch per item
    assert contexts[0].recovery.commits >= 10
    assert contexts[1].recovery.commits >= 90
    # 10 live keys and one source position, each with at most the row
    # before the last commit: a small constant, not growing with epochs.
    assert rows_1k <= 2 * 11
    assert rows_10k <= 2 * 11
    assert size_10k <= size_1k + 16 * 1024
    assert time.monotonic() - started < 10


def test_gc_drops_deleted_states(db_dir: Path) -> None:
    # 5,000 keys, each deleted at once: their deletions only hide older
    # rows until a later commit, so a continuation's first commit leaves
    # nothing of them behind.
    def flow(items: list[int]) -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource(items, batch_size=1))
        f.map("key", lambda x: (f"key-{x}" if x < 5_000 else "live", x))
        f.stateful_map("once", lambda: 0, lambda state, x: (None if x < 5_000 else x, x))
        f.output("out", TestingSink([]))
        return f

    run(flow(list(range(5_000))), db_dir)
    run(flow([*range(5_000), 5_000]), db_dir)
    rows, _ = _db_stats(db_dir)
    # The live key, and the source position before and at the last commit.
    assert rows <= 3


def _hot_flow(items: list[int], out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size=1))
    flow.map("key", lambda x: ("hot", x))
    flow.stateful_map("sum", lambda: 0, lambda total, x: (total + x, total + x))
    flow.output("out", TestingSink(out))
    return flow


def _hot_rows(db_dir: Path) -> int:
    rows = 0
    for path in sorted(db_dir.glob("part-*.sqlite3")):
        conn = sqlite3.connect(path)
        try:
            query = "SELECT COUNT(*) FROM snaps WHERE step_id = 'sum'"
            rows += conn.execute(query).fetchone()[0]
        finally:
            conn.close()
    return rows


@pytest.mark.parametrize(
    ("backup", "most"),
    [(None, 2), (ZERO, 2), (timedelta(hours=1), 3)],
    ids=["none", "zero", "1h"],
)
def test_backup_interval_rows_and_resume(db_dir: Path, backup: timedelta | None, most: int) -> None:
    # With every batch its own epoch, a backup interval keeps the rows of
    # one more epoch than resuming needs; the engine tests check intervals
    # worth many epochs. Either way the resume restores the newest state.
    items = list(range(2_000))
    run(_hot_flow(items, []), db_dir, backup_interval=backup)
    assert 1 <= _hot_rows(db_dir) <= most
    out: list[Any] = []
    run(_hot_flow([*items, 1000], out), db_dir, backup_interval=backup)
    assert out == [("hot", sum(items) + 1000)]


# -- SIGKILL at random points ------------------------------------------------------------

CRASH_FLOW = Path(__file__).with_name("recovery_crash_flow.py")


def _start(db_dir: Path, out: Path, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.Popen(
        [sys.executable, str(CRASH_FLOW), str(db_dir), str(out), str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_output(proc: subprocess.Popen[bytes], out: Path, size: int) -> None:
    """Wait until the flow wrote something new, or ended."""
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.stat().st_size > size:
            return
        time.sleep(0.005)


@pytest.fixture(scope="module")
def expected_lines() -> dict[int, tuple[str, int]]:
    return recovery_crash_flow.expected_lines()


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_random_points_then_resume(
    tmp_path: Path, seed: int, expected_lines: dict[int, tuple[str, int]]
) -> None:
    rng = random.Random(seed)
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    out = tmp_path / "out.txt"
    kills = rng.randint(1, 2)
    killed = 0
    starts = 0
    while True:
        starts += 1
        assert starts <= kills + 3, "the flow never finished"
        workers = rng.choice([1, 2, 3])
        size = out.stat().st_size if out.exists() else 0
        proc = _start(db_dir, out, workers)
        if killed < kills:
            _wait_for_output(proc, out, size)
            time.sleep(rng.uniform(0, 1.5 if killed == 0 else 0.5))
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            continue
        assert (proc.returncode, err.decode()) == (0, "")
        break
    assert killed >= 1  # the first start was killed mid-run

    lines = recovery_crash_flow.parse(out)
    # State exactly once: every total is what a crash-free run computes for
    # that item, so nothing was counted twice or lost.
    wrong = [(i, key, total) for i, key, total in lines if expected_lines[i] != (key, total)]
    assert wrong == []
    # Output at least once: every item's result was written.
    assert {i for i, _, _ in lines} == set(expected_lines)
    # Resumed, not restarted: replays are a small part of the whole.
    assert len(lines) - len(expected_lines) < killed * len(expected_lines) // 2
    # The final per-key state: the total of each key's last item.
    last: dict[str, tuple[int, int]] = {}
    for i, key, total in lines:
        if key not in last or i > last[key][0]:
            last[key] = (i, total)
    assert {key: total for key, (_, total) in last.items()} == recovery_crash_flow.final_totals()


def test_crash_flow_without_a_crash(
    tmp_path: Path, expected_lines: dict[int, tuple[str, int]]
) -> None:
    # The flow of the kill test, run in this process without a crash: one
    # line per item, each as `expected_lines` computes it.
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 1)
    out = tmp_path / "out.txt"
    flow = recovery_crash_flow.make_flow(out)
    run(flow, db_dir, 2, recovery_crash_flow.EPOCH_INTERVAL)
    lines = recovery_crash_flow.parse(out)
    assert len(lines) == len(expected_lines)
    assert {i: (key, total) for i, key, total in lines} == expected_lines
