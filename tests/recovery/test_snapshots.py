"""Snapshots that do not fit the flow (`aiowax._recovery.runtime.Recovery`).

A snapshot no step or partition of the flow would restore means a rename:
the resume is refused, listing them, unless the run drops them on purpose
(issue 10, D2). A snapshot the serde cannot load names its step, key and
partition file (U6); so does a state the serde cannot save (U4).
"""

from __future__ import annotations

import gc
import pickle
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiowax._recovery.runtime import ANY_KEY, Recovery
from aiowax._recovery.store import Store
from aiowax.connectors.files import FileSink, FileSource
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.recovery import (
    RecoveryConfig,
    RecoveryError,
    UnmatchedSnapshotsError,
    init_db_dir,
)
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import (
    ClockConfig,
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    SystemClockConfig,
    TumblingWindow,
    WindowConfig,
)


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    init_db_dir(path, 2)
    return path


def _rows(db_dir: Path) -> set[tuple[str, str]]:
    """The live ``(step_id, state_key)`` rows of the newest epoch."""
    store = Store(db_dir)
    try:
        return set(store.load())
    finally:
        store.close()


# -- D2: renamed partitions and steps ---------------------------------------------------


def _file_flow(inp: str, out: str, count_id: str = "count") -> Dataflow:
    flow = Dataflow()
    flow.input("inp", FileSource(inp))
    flow.map("key", lambda line: (line, 1))
    flow.stateful_map(count_id, lambda: 0, lambda c, v: (c + v, c + v))
    flow.map("fmt", lambda kv: (kv[0], f"{kv[0]}={kv[1]}"))
    flow.output("out", FileSink(out))
    return flow


def _part(path: str) -> str:
    """The partition name of a `FileSource` of ``path``."""
    [name] = FileSource(path).list_parts()
    return name


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("".join(f"k{i % 3}\n" for i in range(9)))
    return tmp_path


def test_a_path_spelled_differently_is_refused(files: Path, db_dir: Path) -> None:
    config = RecoveryConfig(db_dir)
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=config)
    written = (files / "out.txt").read_text()
    assert written.split()[-3:] == ["k0=3", "k1=3", "k2=3"]
    absolute = _file_flow(str(files / "in.txt"), str(files / "out.txt"))
    with pytest.raises(UnmatchedSnapshotsError) as info:
        run_main(absolute, recovery_config=config)
    message = str(info.value)
    assert str(db_dir) in message
    before, now = _part("in.txt"), _part(str(files / "in.txt"))
    assert f"step 'inp': 1 snapshot ({before!r}) of partitions it no longer lists" in message
    assert f"(it lists {now!r})" in message
    assert "step 'out': 1 snapshot ('out.txt')" in message
    assert "discard_unmatched=True" in message
    assert isinstance(info.value, RecoveryError)
    # Nothing ran: the output was not truncated, the input not re-read.
    assert (files / "out.txt").read_text() == written
    # Spelled as before, the flow continues (nothing new to read).
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=config)
    assert (files / "out.txt").read_text() == written
    del info
    gc.collect()  # the refused run left no channel open (a ResourceWarning)


def test_a_file_partition_whose_file_system_id_changed_resumes_by_path(
    files: Path, db_dir: Path
) -> None:
    # The default fs id is the device number of the file's directory, which a
    # new container mount can change: the same path under another id is the
    # same partition, so the resume goes on at its position (the source
    # still checks the file itself) instead of refusing or re-reading it.
    config = RecoveryConfig(db_dir)

    def flow(fs_id: str) -> Dataflow:
        f = Dataflow()
        f.input("inp", FileSource("in.txt", get_fs_id=lambda _dir: fs_id))
        f.map("key", lambda line: (line, 1))
        f.stateful_map("count", lambda: 0, lambda c, v: (c + v, c + v))
        f.map("fmt", lambda kv: (kv[0], f"{kv[0]}={kv[1]}"))
        f.output("out", FileSink("out.txt"))
        return f

    run_main(flow("disk-a"), recovery_config=config)
    assert ("inp", "disk-a::in.txt") in _rows(db_dir)
    with (files / "in.txt").open("a") as more:
        more.write("k0\n")
    run_main(flow("disk-b"), recovery_config=config)
    # Only the appended line was read: k0 counts 4, nothing counted twice.
    assert (files / "out.txt").read_text().split()[-1] == "k0=4"
    rows = _rows(db_dir)
    assert ("inp", "disk-b::in.txt") in rows
    assert ("inp", "disk-a::in.txt") not in rows
    run_main(flow("disk-b"), recovery_config=config)  # and again, nothing left over


def test_a_renamed_step_is_refused(files: Path, db_dir: Path) -> None:
    config = RecoveryConfig(db_dir)
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=config)
    with pytest.raises(UnmatchedSnapshotsError) as info:
        run_main(_file_flow("in.txt", "out.txt", count_id="tally"), recovery_config=config)
    message = str(info.value)
    assert "step 'count': 3 snapshots ('k0', 'k1', 'k2'); the flow has no step 'count'" in message
    assert "'inp'" not in message  # the rest matches


def test_discard_unmatched_drops_them_on_purpose(files: Path, db_dir: Path) -> None:
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=RecoveryConfig(db_dir))
    assert ("count", "k0") in _rows(db_dir)
    renamed = _file_flow("in.txt", "out.txt", count_id="tally")
    run_main(renamed, recovery_config=RecoveryConfig(db_dir, discard_unmatched=True))
    rows = _rows(db_dir)
    assert not any(step_id == "count" for step_id, _ in rows)
    # The input position and the output were kept: nothing was read again.
    assert ("inp", _part("in.txt")) in rows
    # Gone for good: the next run, without the flag, is not refused.
    run_main(renamed, recovery_config=RecoveryConfig(db_dir))


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _crashing_items() -> list[Any]:
    """Items at 31, 32, 33 s, then an abort (a crash), then one at 34 s.

    One list for the runs of a test: the abort fires in the first only.
    """
    items: list[Any] = [("a", T0 + timedelta(seconds=s)) for s in (31, 32, 33)]
    return [*items, TestingSource.ABORT(), ("a", T0 + timedelta(seconds=34))]


def _window_flow(
    items: list[Any],
    out: list[Any],
    window: WindowConfig,
    step_id: str = "win",
    clock: ClockConfig | None = None,
) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    clock = clock or EventClockConfig(lambda t: t, timedelta(0))
    flow.collect_window(step_id, clock, window)
    flow.map("seconds", lambda kv: [t.second for t in kv[1][1]])
    flow.output("out", TestingSink(out))
    return flow


TEN_S = TumblingWindow(timedelta(seconds=10), T0)


@pytest.mark.parametrize(
    ("now", "said"),
    [
        (TumblingWindow(timedelta(seconds=60), T0), "60 s windows every 60 s aligned to"),
        (TumblingWindow(timedelta(seconds=10), T0 + timedelta(seconds=5)), "aligned to 2024-01"),
        (SlidingWindow(timedelta(seconds=20), timedelta(seconds=10), T0), "20 s windows every 10"),
        (SessionWindow(timedelta(seconds=10)), "sessions with a 10 s gap"),
    ],
    ids=["longer", "realigned", "sliding", "session"],
)
def test_a_window_step_resumed_with_another_windower_is_refused(
    db_dir: Path, now: WindowConfig, said: str
) -> None:
    # The saved windows are indices (sessions, bounds): under another
    # windower they went in the wrong windows, or were dropped, silently
    # (the helper session's repro; Bytewax 0.17.2 fails with a KeyError or
    # a TypeError). A clear refusal instead, naming the step and both.
    config = RecoveryConfig(db_dir)
    out: list[Any] = []
    items = _crashing_items()
    run_main(_window_flow(items, out, TEN_S), epoch_interval=timedelta(0), recovery_config=config)
    assert out == []  # the abort came before the window closed
    with pytest.raises(UnmatchedSnapshotsError) as info:
        run_main(_window_flow(items, out, now), epoch_interval=timedelta(0), recovery_config=config)
    message = str(info.value)
    assert message.startswith("collect_window step 'win': ") and "('a')" in message
    assert "10 s windows every 10 s aligned to 2024-01-01T00:00:00+00:00" in message
    assert said in message
    assert "discard_unmatched=True" in message
    # The windower put back: the resume goes on with the open window.
    run_main(_window_flow(items, out, TEN_S), epoch_interval=timedelta(0), recovery_config=config)
    assert out == [[31, 32, 33, 34]]


@pytest.mark.parametrize("first", ["system", "event"])
def test_a_window_step_resumed_on_the_other_clock_is_refused(db_dir: Path, first: str) -> None:
    # Only the windower was checked: system -> event time dropped every
    # item before today's watermark as late, event -> system time put the
    # new items in the old event times' windows, silently (helper-64's
    # repros; Bytewax 0.17.2 emits them all, each clock's way). A clear
    # refusal, as for a windower, on purpose: an open window's items were
    # placed by the other clock's times.
    clocks = {"system": SystemClockConfig(), "event": EventClockConfig(lambda t: t, timedelta(0))}
    then, now = clocks[first], clocks["event" if first == "system" else "system"]
    config = RecoveryConfig(db_dir)
    out: list[Any] = []
    items = _crashing_items()
    zero = timedelta(0)
    flow = _window_flow(items, out, TEN_S, clock=then)
    run_main(flow, epoch_interval=zero, recovery_config=config)
    assert out == []  # the abort came before the window closed
    with pytest.raises(UnmatchedSnapshotsError) as info:
        flow = _window_flow(items, out, TEN_S, clock=now)
        run_main(flow, epoch_interval=zero, recovery_config=config)
    message = str(info.value)
    assert message.startswith("collect_window step 'win': ") and "('a')" in message
    named = {"system": "SystemClockConfig", "event": "EventClockConfig"}
    assert f"open on the {first} clock ({named[first]})" in message
    assert "discard_unmatched=True" in message
    # The clock put back: the resume goes on with the open window.
    flow = _window_flow(items, out, TEN_S, clock=then)
    run_main(flow, epoch_interval=zero, recovery_config=config)
    assert out == [[31, 32, 33, 34]]


def test_a_window_step_under_a_new_id_drops_the_old_windows_on_purpose(db_dir: Path) -> None:
    # What the refusal advises: a new step id, and discard_unmatched once.
    out: list[Any] = []
    items = _crashing_items()
    zero = timedelta(0)
    run_main(
        _window_flow(items, out, TEN_S), epoch_interval=zero, recovery_config=RecoveryConfig(db_dir)
    )
    session = SessionWindow(timedelta(seconds=10))
    discard = RecoveryConfig(db_dir, discard_unmatched=True)
    run_main(
        _window_flow(items, out, session, "win2"), epoch_interval=zero, recovery_config=discard
    )
    assert out == [[34]]


def test_discarding_a_renamed_partition_reads_it_from_the_start(files: Path, db_dir: Path) -> None:
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=RecoveryConfig(db_dir))
    absolute = _file_flow(str(files / "in.txt"), str(files / "out.txt"))
    run_main(absolute, recovery_config=RecoveryConfig(db_dir, discard_unmatched=True))
    # What the flag is for and what it costs: the input is read again, on
    # top of the counts restored.
    assert (files / "out.txt").read_text().split()[-3:] == ["k0=6", "k1=6", "k2=6"]
    assert ("inp", _part("in.txt")) not in _rows(db_dir)
    run_main(absolute, recovery_config=RecoveryConfig(db_dir))


@pytest.fixture
def recovery(db_dir: Path) -> Iterator[Recovery]:
    x = pickle.dumps("x")
    restored = {
        ("src", "p0"): x,
        ("src", "p9"): x,
        ("keyed", "a"): x,
        ("dyn", "w0"): x,
        **{("gone", f"key{i}"): x for i in range(7)},
    }
    rec = Recovery(RecoveryConfig(db_dir), Store(db_dir), 0.0, 1, restored)
    yield rec
    rec.close()


def test_check_unmatched_lists_what_matches_nothing(recovery: Recovery) -> None:
    expected = {"src": {"p0", "p1"}, "keyed": ANY_KEY, "dyn": set[str]()}
    with pytest.raises(UnmatchedSnapshotsError) as info:
        recovery.check_unmatched(expected)
    lines = str(info.value).splitlines()
    assert lines[1:4] == [
        "  step 'dyn': 1 snapshot ('w0'); the step keeps no snapshots now",
        "  step 'gone': 7 snapshots ('key0', 'key1', 'key2', 'key3', 'key4' and 2 more); "
        "the flow has no step 'gone'",
        "  step 'src': 1 snapshot ('p9') of partitions it no longer lists (it lists 'p0', 'p1')",
    ]


def test_check_unmatched_accepts_what_matches(recovery: Recovery) -> None:
    recovery.check_unmatched(
        {"src": {"p0", "p9"}, "keyed": ANY_KEY, "dyn": {"w0"}, "gone": ANY_KEY}
    )
    assert recovery.restored("src") == {"p0": "x", "p9": "x"}


def test_discard_unmatched_of_some_steps_only(files: Path, db_dir: Path) -> None:
    run_main(_file_flow("in.txt", "out.txt"), recovery_config=RecoveryConfig(db_dir))
    # Both the keyed step and the paths renamed; only the step is let go.
    changed = _file_flow(str(files / "in.txt"), str(files / "out.txt"), count_id="tally")
    config = RecoveryConfig(db_dir, discard_unmatched=["count"])
    with pytest.raises(UnmatchedSnapshotsError) as info:
        run_main(changed, recovery_config=config)
    message = str(info.value)
    assert "step 'inp'" in message
    assert "step 'out'" in message
    assert "step 'count'" not in message
    assert any(step_id == "count" for step_id, _ in _rows(db_dir))  # nothing dropped
    config = RecoveryConfig(db_dir, discard_unmatched={"count", "inp", "out"})
    run_main(changed, recovery_config=config)
    assert not any(step_id == "count" for step_id, _ in _rows(db_dir))


@pytest.mark.parametrize("bad", [1, None, "count", b"count", ["count", 2]])
def test_discard_unmatched_is_a_bool_or_step_ids(db_dir: Path, bad: Any) -> None:
    with pytest.raises(TypeError, match="discard_unmatched must be a bool or a collection"):
        RecoveryConfig(db_dir, discard_unmatched=bad)
    assert RecoveryConfig(db_dir).discard_unmatched is False
    config = RecoveryConfig(db_dir, discard_unmatched=("a", "b", "a"))
    assert config.discard_unmatched == frozenset({"a", "b"})
    assert config == RecoveryConfig(db_dir, discard_unmatched={"a", "b"})


# -- U6: a snapshot that fails to load ------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.n = 0


def _bump(tally: _Tally, value: Any) -> tuple[_Tally, int]:
    tally.n += 1
    return tally, tally.n


def _tally_flow(items: list[str]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    flow.map("key", lambda x: (x, 1))
    flow.stateful_map("tally", _Tally, _bump)
    flow.output("out", TestingSink([]))
    return flow


@pytest.mark.parametrize("damage", ["class renamed", "corrupt row"])
def test_a_snapshot_that_fails_to_load_names_step_key_and_file(
    db_dir: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RecoveryConfig(db_dir)
    run_main(_tally_flow(["a"]), recovery_config=config)
    again = _tally_flow(["a"])
    if damage == "class renamed":
        monkeypatch.delitem(globals(), "_Tally")
    else:
        for path in sorted(db_dir.glob("part-*.sqlite3")):
            conn = sqlite3.connect(path)
            try:
                conn.execute("UPDATE snaps SET ser = x'80059501' WHERE step_id = 'tally'")
                conn.commit()
            finally:
                conn.close()
    store = Store(db_dir)
    part = store.part_of("tally", "a")
    store.close()
    with pytest.raises(Exception) as info:
        run_main(again, recovery_config=config)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "while loading the snapshot of key 'a' of step 'tally'" in notes
    assert str(db_dir / f"part-{part}.sqlite3") in notes
    del info
    gc.collect()  # the refused run left no channel open (a ResourceWarning)


# -- a step whose kind changed under the same id (helper-56) -----------------------------------


def _agg_flow(kind: str, out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), TestingSource.EOF(), ("a", 2)]))
    if kind == "stateful_map":
        flow.stateful_map("agg", lambda: 0, lambda n, v: (n + v, n + v))
    elif kind == "batch":
        flow.batch("agg", 10, timedelta(seconds=10))
    else:
        clock = EventClockConfig(lambda v: datetime(2024, 1, 1, tzinfo=UTC), timedelta(0))
        flow.fold_window("agg", clock, TumblingWindow(timedelta(seconds=1), ALIGN), list, add)
        flow.map("values", lambda kv: (kv[0], kv[1][1]))
    flow.output("out", TestingSink(out))
    return flow


def add(acc: list[int], value: int) -> list[int]:
    return [*acc, value]


ALIGN = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("now", ["batch", "fold_window"])
def test_a_step_of_another_kind_under_the_same_id_is_refused(db_dir: Path, now: str) -> None:
    # Its snapshots went to the new step, which failed on them when built
    # (batch) or on the key's next item, mid-run (fold_window), blamed on
    # the user's folder; a mapper would be handed a batch's own tuple.
    first: list[Any] = []
    run_main(_agg_flow("stateful_map", first), recovery_config=RecoveryConfig(db_dir))
    assert first == [("a", 1)]
    out: list[Any] = []
    with pytest.raises(UnmatchedSnapshotsError) as info:
        run_main(_agg_flow(now, out), recovery_config=RecoveryConfig(db_dir))
    message = str(info.value)
    assert f"step 'agg': 1 snapshot(s) of a stateful_map step, which is a {now} step now" in message
    assert "discard_unmatched" in message
    assert out == []
    # Dropped on purpose, the new step starts from nothing, and is the kind
    # the directory knows from then on.
    config = RecoveryConfig(db_dir, discard_unmatched={"agg"})
    run_main(_agg_flow(now, out), recovery_config=config)
    assert out == [("a", [2])]
    run_main(_agg_flow(now, out), recovery_config=RecoveryConfig(db_dir))
    assert out == [("a", [2])]


def test_a_directory_that_recorded_no_kinds_resumes_as_before(db_dir: Path) -> None:
    # Directories of earlier releases have no kinds: nothing to compare.
    import sqlite3

    ended = TestingSource.EOF
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), ended(), ("a", 2)]))
    flow.stateful_map("agg", lambda: 0, lambda n, v: (n + v, n + v))
    out: list[Any] = []
    flow.output("out", TestingSink(out))
    run_main(flow, recovery_config=RecoveryConfig(db_dir))
    conn = sqlite3.connect(db_dir / "part-0.sqlite3")
    with conn:
        conn.execute("DROP TABLE step_kinds")
    conn.close()
    run_main(flow, recovery_config=RecoveryConfig(db_dir))
    assert out == [("a", 1), ("a", 3)]


# -- U4: a state the serde cannot save ---------------------------------------------------------


def test_an_unpicklable_state_names_step_and_key(db_dir: Path) -> None:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(5), batch_size=1))
    flow.map("key", lambda i: ("k", i))
    flow.stateful_map("with_lock", lambda: {"lock": threading.Lock()}, lambda s, v: (s, v))
    flow.output("out", TestingSink(out))
    with pytest.raises(TypeError, match="cannot pickle") as info:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(db_dir))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "raised in step 'with_lock'" in notes
    assert "snapshot of key 'k' of step 'with_lock'" in notes
    assert out[:1] == [("k", 0)]  # output before the failure is written


class _ForgetsAReturn:
    """helper-56's serde: ``ser`` returns None for dicts (a missing ``return``)."""

    def ser(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            pickle.dumps(obj)
            return None
        return pickle.dumps(obj)

    def de(self, data: bytes) -> Any:
        return pickle.loads(data)


def test_a_serde_returning_none_fails_the_run_instead_of_dropping_the_state(
    db_dir: Path,
) -> None:
    # None was stored as NULL, which reads back as "no state": the key's
    # state was lost without a word, and the resumed run counted from 0.
    def add(state: dict[str, int], value: int) -> tuple[dict[str, int], int]:
        state = {"total": state.get("total", 0) + value}
        return state, state["total"]

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), ("a", 2)]))
    flow.stateful_map("sum", dict, add)
    flow.output("out", TestingSink(out))
    config = RecoveryConfig(db_dir, snapshot_serde=_ForgetsAReturn())
    with pytest.raises(
        TypeError, match=r"_ForgetsAReturn\.ser returned NoneType, not bytes"
    ) as info:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "snapshot of key 'a' of step 'sum'" in notes


class _GeneratorPosition(StatefulSourcePartition[int, Any]):
    def __init__(self) -> None:
        self.i = 0

    def next_batch(self) -> list[int]:
        if self.i >= 3:
            raise StopIteration
        self.i += 1
        return [self.i]

    def snapshot(self) -> Any:
        return (x for x in [self.i])  # a generator: not picklable


class _GeneratorSource(FixedPartitionedSource[int, Any]):
    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: Any) -> _GeneratorPosition:
        return _GeneratorPosition()


def test_an_unpicklable_source_position_names_step_and_partition(db_dir: Path) -> None:
    flow = Dataflow()
    flow.input("src", _GeneratorSource())
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match="cannot pickle") as info:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(db_dir))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "raised in step 'src'" in notes
    assert "snapshot of key 'p' of step 'src'" in notes
