"""aiowax.connectors.files: line, directory and CSV sources; file and directory sinks."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import shutil
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zlib import adler32

import anyio
import pytest

import aiowax
import aiowax._connectors.files as files_impl
from aiowax import AiowaxError
from aiowax.connectors.files import (
    CSVSource,
    DirSink,
    DirSource,
    FilePosition,
    FileReplacedError,
    FileSink,
    FileSource,
)
from aiowax.dataflow import Dataflow
from aiowax.inputs import StatefulSourcePartition
from aiowax.outputs import StatefulSinkPartition
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource, cluster_main, run_main

NOW = datetime(2024, 1, 1, tzinfo=UTC)


async def _anext(part: StatefulSourcePartition[Any, Any]) -> list[Any]:
    """A read through the async path the engine takes (in a worker thread)."""
    batch: list[Any] = await part._aiowax_anext_batch(None)  # type: ignore[attr-defined]
    return batch


async def _awrite(part: StatefulSinkPartition[Any, Any], values: list[Any]) -> None:
    """A write through the async path the engine takes (in a worker thread)."""
    await part._aiowax_awrite_batch(values)  # type: ignore[attr-defined]


async def _drain(part: StatefulSourcePartition[Any, Any]) -> list[list[Any]]:
    batches = []
    while True:
        try:
            batches.append(await _anext(part))
        except StopAsyncIteration:
            return batches


def _flat(batches: Any) -> list[Any]:
    return [item for batch in batches for item in batch]


def _name(source: Any) -> str:
    """The one partition of a single-file source."""
    [name] = source.list_parts()
    assert isinstance(name, str)
    return name


def _dev(path: Path) -> str:
    """The default filesystem id of files in ``path``: its device id, in hex."""
    return hex(path.stat().st_dev)


def _reference_lines(path: Path) -> list[str]:
    """What bytewax 0.18's FileSource yields: text mode, ``rstrip("\\n")``."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _reference_rows(path: Path, **fmtparams: Any) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, **fmtparams))


def _collect(source: Any, *, workers: int = 1) -> list[Any]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


# -- FileSource ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"one\ntwo\nthree\n",
        b"no trailing newline\nlast",
        b"\n\nblank lines\n\n",
        b"crlf\r\nline\r\n",
        b"lone\rcarriage\rreturns\r",
        b"mixed\r\nends\rhere\n\r\n",
        "unicode \u00e9\u00e8 \u2603\nand \U0001f600\n".encode(),
        b"",
        b"\n",
        b"  spaces kept \t\n",
    ],
)
def test_file_source_yields_lines_like_the_reference(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    assert _collect(FileSource(path, batch_size=2)) == _reference_lines(path)


def test_file_source_one_partition_named_after_the_device_and_path(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    # As the reference: "{fs_id}::{path}", the id being the directory's st_dev.
    assert FileSource(path).list_parts() == [f"{_dev(tmp_path)}::{path}"]
    assert FileSource(str(path)).list_parts() == [f"{_dev(tmp_path)}::{path}"]
    with pytest.raises(ValueError, match="unknown partition"):
        FileSource(path).build_part(NOW, "other", None)
    with pytest.raises(ValueError, match="unknown partition"):
        FileSource(path).build_part(NOW, str(path), None)  # the name of older versions


@pytest.mark.asyncio
async def test_file_source_batches_and_resume_positions(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    lines = [f"line {i}" + "\u00e9" * (i % 3) for i in range(10)]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    source = FileSource(path, batch_size=3)

    name = _name(source)
    part = source.build_part(NOW, name, None)
    assert part.snapshot()["offset"] == 0  # type: ignore[index]
    try:
        first = await _anext(part)
        state = part.snapshot()
    finally:
        part.close()
    assert first == lines[:3]
    assert state["offset"] == len("".join(f"{line}\n" for line in lines[:3]).encode())  # type: ignore[index]

    # Resuming at the snapshot continues with the next line, in batches of 3.
    part = source.build_part(NOW, name, state)
    try:
        assert await _drain(part) == [lines[3:6], lines[6:9], lines[9:]]
        assert part.snapshot()["offset"] == path.stat().st_size  # type: ignore[index]
        # Exhausted: it stays exhausted.
        with pytest.raises(StopAsyncIteration):
            await _anext(part)
    finally:
        part.close()

    # Every line boundary is a valid resume position (here as a plain offset,
    # the snapshot of older versions).
    ends = [0]
    for line in lines:
        ends.append(ends[-1] + len(f"{line}\n".encode()))
    for i, end in enumerate(ends):
        part = source.build_part(NOW, name, end)
        try:
            assert _flat(await _drain(part)) == lines[i:]
        finally:
            part.close()


@pytest.mark.asyncio
async def test_file_source_resume_after_lone_carriage_returns(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\rb\r\nc\n\rd")
    source = FileSource(path, batch_size=1)
    part = source.build_part(NOW, _name(source), None)
    got = []
    try:
        while True:
            try:
                batch = await _anext(part)
            except StopAsyncIteration:
                break
            got.append((batch, part.snapshot()["offset"]))  # type: ignore[index]
    finally:
        part.close()
    # Batches are whole b"\n"-terminated chunks; a lone "\r" splits within one.
    assert got == [(["a", "b"], 5), (["c"], 7), (["", "d"], 9)]
    assert _flat(b for b, _ in got) == _reference_lines(path)


def test_file_source_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    source = FileSource(path)  # defining the flow does not need the file yet
    with pytest.raises(FileNotFoundError, match=r"nope\.txt") as info:
        source.build_part(NOW, _name(source), None)
    assert info.value.filename == str(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        _collect(source)


@pytest.mark.parametrize(
    ("batch_size", "error"),
    [(0, ValueError), (-1, ValueError), ("10", TypeError), (1.5, TypeError), (True, TypeError)],
)
def test_bad_batch_size(tmp_path: Path, batch_size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="batch_size"):
        FileSource(tmp_path / "x", batch_size=batch_size)
    with pytest.raises(error, match="batch_size"):
        DirSource(tmp_path, batch_size=batch_size)
    with pytest.raises(error, match="batch_size"):
        CSVSource(tmp_path / "x", batch_size=batch_size)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="path"):
        FileSource(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="end"):
        FileSink(tmp_path / "x", end=None)  # type: ignore[arg-type]
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    name = _name(FileSource(path))
    with pytest.raises(TypeError, match="byte offset"):
        FileSource(path).build_part(NOW, name, "12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        FileSource(path).build_part(NOW, name, -1)


@pytest.mark.asyncio
async def test_file_source_reads_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{i}\n" for i in range(100)))
    threads: set[int] = set()
    split = files_impl._split_lines

    def spy(data: bytes) -> list[str]:
        threads.add(threading.get_ident())
        return split(data)

    monkeypatch.setattr(files_impl.sources, "_split_lines", spy)
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", FileSource(path, batch_size=7))
    flow.output("out", TestingSink(out))
    with anyio.fail_after(10):
        await aiowax.run(flow)
    assert out == [str(i) for i in range(100)]
    assert threads and threading.get_ident() not in threads


# -- DirSource ----------------------------------------------------------------------


def _make_dir(root: Path, count: int) -> dict[str, list[str]]:
    expected = {}
    for i in range(count):
        name = f"file_{i:03d}.txt"
        lines = [f"{name}:{j}" for j in range(i % 7 + 1)]
        (root / name).write_text("".join(f"{line}\n" for line in lines))
        expected[name] = lines
    return expected


def test_dir_source_partitions_are_sorted_relative_files(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("b\n")
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "c.csv").write_text("c\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("d\n")
    dev = _dev(tmp_path)
    assert DirSource(tmp_path).list_parts() == [f"{dev}::a.txt", f"{dev}::b.txt", f"{dev}::c.csv"]
    assert DirSource(tmp_path, "*.txt").list_parts() == [f"{dev}::a.txt", f"{dev}::b.txt"]
    assert DirSource(tmp_path, "**/*.txt").list_parts() == [
        f"{dev}::a.txt",
        f"{dev}::b.txt",
        f"{dev}::sub/d.txt",
    ]
    assert sorted(_collect(DirSource(tmp_path, "**/*.txt"))) == ["a", "b", "d"]


def test_dir_source_rejects_a_missing_or_non_directory_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        DirSource(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        DirSource(tmp_path / "f")


def test_dir_source_each_file_read_once_by_one_worker(tmp_path: Path) -> None:
    expected = _make_dir(tmp_path, 100)
    seen: list[tuple[str, int]] = []
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", DirSource(tmp_path, "*.txt", batch_size=2))
    flow.inspect_worker(lambda item, worker: seen.append((item, worker)))
    flow.output("out", TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=3)

    by_file: dict[str, list[str]] = defaultdict(list)
    workers_by_file: dict[str, set[int]] = defaultdict(set)
    for line, worker in seen:
        name = line.split(":")[0]
        by_file[name].append(line)
        workers_by_file[name].add(worker)
    assert by_file == expected  # every line of every file exactly once, in order
    names = sorted(expected)
    for name, workers in workers_by_file.items():
        # Partition i is read by worker i % 3, and by no other.
        assert workers == {names.index(name) % 3}
    assert Counter(w for ws in workers_by_file.values() for w in ws) == {0: 34, 1: 33, 2: 33}
    assert Counter(out) == Counter(line for lines in expected.values() for line in lines)


@pytest.mark.asyncio
async def test_dir_source_resume_state_per_file(tmp_path: Path) -> None:
    expected = _make_dir(tmp_path, 3)
    source = DirSource(tmp_path, batch_size=2)
    name = f"{_dev(tmp_path)}::file_002.txt"
    assert name in source.list_parts()
    part = source.build_part(NOW, name, None)
    try:
        assert await _anext(part) == expected["file_002.txt"][:2]
        state = part.snapshot()
    finally:
        part.close()
    part = source.build_part(NOW, name, state)
    try:
        assert _flat(await _drain(part)) == expected["file_002.txt"][2:]
    finally:
        part.close()


# -- CSVSource ----------------------------------------------------------------------

CSV_TEXT = (
    "id,name,note\r\n"
    '1,alice,"line one\nline two"\r\n'
    '2,"bob, jr","he said ""hi"""\r\n'
    '3,carol,"crlf\r\ninside, and\rlone cr"\r\n'
    "\r\n"
    "4,dave,\r\n"
    '5,"\u00e9mile",x,extra\r\n'
    "6,short\r\n"
    '7,"quoted\n\nblank lines",end'
)


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_csv_source_rows_match_dictreader(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "in.csv"
    text = CSV_TEXT if newline == "\r\n" else CSV_TEXT.replace(",\r\n", ",\n")
    path.write_bytes(text.encode())
    rows = _collect(CSVSource(path, batch_size=2))
    assert rows == _reference_rows(path)
    assert rows[0] == {"id": "1", "name": "alice", "note": "line one\nline two"}
    assert rows[2]["note"] == "crlf\r\ninside, and\rlone cr"
    assert rows[4] == {"id": "5", "name": "\u00e9mile", "note": "x", None: ["extra"]}
    assert rows[5] == {"id": "6", "name": "short", "note": None}
    assert len(rows) == 7


def test_csv_source_format_parameters(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("a\t'b\tc'\nd\te\n")
    rows = _collect(CSVSource(path, fieldnames=["x", "y"], delimiter="\t", quotechar="'"))
    assert rows == [{"x": "a", "y": "b\tc"}, {"x": "d", "y": "e"}]
    with pytest.raises(TypeError, match="format parameters"):
        CSVSource(path, no_such_param=1)
    with pytest.raises(TypeError, match="format parameters"):
        CSVSource(path, delimiter="too long")


def test_csv_source_empty_and_header_only(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("")
    assert _collect(CSVSource(path)) == []
    path.write_text("a,b\n")
    assert _collect(CSVSource(path)) == []


@pytest.mark.asyncio
async def test_csv_source_resumes_at_every_record(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV_TEXT.encode())
    expected = _reference_rows(path)
    source = CSVSource(path, batch_size=1)
    # Read one record at a time, noting the offset after each.
    name = _name(source)
    states = []
    part = source.build_part(NOW, name, None)
    try:
        states.append(part.snapshot())
        assert states[0]["offset"] == 0  # type: ignore[index]
        for row in expected:
            assert await _anext(part) == [row]
            states.append(part.snapshot())
        with pytest.raises(StopAsyncIteration):
            await _anext(part)
    finally:
        part.close()
    assert states[-1]["offset"] == len(CSV_TEXT.encode())  # type: ignore[index]
    # The snapshot before the first batch and after every record resume
    # right after what was handed out; the header is never a row. So do
    # the same positions as plain offsets, as older versions saved them.
    offsets = [state["offset"] for state in states]  # type: ignore[index]
    for i, state in [*enumerate(states), *enumerate(offsets)]:
        part = CSVSource(path, batch_size=3).build_part(NOW, name, state)
        try:
            assert _flat(await _drain(part)) == expected[i:]
        finally:
            part.close()


def test_csv_source_flow_resumes_after_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV_TEXT.encode())
    expected = _reference_rows(path)
    out_path = tmp_path / "out.jsonl"
    db = tmp_path / "db"
    db.mkdir()
    init_db_dir(db, 1)
    armed = [True]
    seen: list[dict[str, Any]] = []

    def mapper(row: dict[Any, Any]) -> tuple[str, str]:
        if armed[0] and row["id"] == "5":
            armed[0] = False
            raise RuntimeError("boom")
        seen.append(row)
        return ("k", json.dumps({str(k): v for k, v in row.items()}))

    def flow() -> Dataflow:
        f = Dataflow()
        f.input("inp", CSVSource(path, batch_size=1))
        f.map("to_json", mapper)
        f.output("out", FileSink(out_path))
        return f

    config = RecoveryConfig(db)
    with pytest.raises(RuntimeError, match="boom"):
        run_main(flow(), epoch_interval=timedelta(0), recovery_config=config)
    first = len(seen)
    run_main(flow(), epoch_interval=timedelta(0), recovery_config=config)
    assert len(seen) - first < len(expected)  # the second run did not start over
    got = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert got == [{str(k): v for k, v in row.items()} for row in expected]


# -- FileSink -----------------------------------------------------------------------


def _write_flow(sink: Any, items: list[Any], workers: int = 1) -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size=3))
    flow.output("out", sink)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


def test_file_sink_writes_str_of_values(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("stale content from an earlier run\n")
    items = [("a", "x"), ("b", 1), ("a", None), ("c", "\u00e9"), ("d", [1, 2])]
    _write_flow(FileSink(path), items, workers=2)
    # A fresh start truncates, as the reference does.
    assert path.read_text(encoding="utf-8") == "x\n1\nNone\n\u00e9\n[1, 2]\n"
    _write_flow(FileSink(path, end=";"), items)
    assert path.read_text(encoding="utf-8") == "x;1;None;\u00e9;[1, 2];"


def test_file_sink_needs_key_value_items(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"\(str key, value\)"):
        _write_flow(FileSink(tmp_path / "out.txt"), ["plain"])


def test_file_sink_missing_directory(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "no_dir" / "out.txt")
    with pytest.raises(FileNotFoundError, match="no_dir"):
        sink.build_part(str(tmp_path / "no_dir" / "out.txt"), None)


@pytest.mark.asyncio
async def test_file_sink_resume_truncates_to_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    sink = FileSink(path)
    assert sink.list_parts() == [str(path)]
    assert sink.part_fn("any key") == 0
    part = sink.build_part(str(path), None)
    try:
        assert part.snapshot()["offset"] == 0  # type: ignore[index]
        await _awrite(part, ["a", "\u00e9"])
        committed = part.snapshot()
        assert isinstance(committed, dict)
        assert committed["offset"] == len("a\n\u00e9\n".encode())
        await _awrite(part, [])
        assert part.snapshot() == committed
        await _awrite(part, ["not committed"])
    finally:
        part.close()
    assert path.read_text(encoding="utf-8") == "a\n\u00e9\nnot committed\n"

    part = sink.build_part(str(path), committed)
    try:
        assert path.read_text(encoding="utf-8") == "a\n\u00e9\n"
        assert part.snapshot() == committed
        await _awrite(part, ["b"])
        assert part.snapshot()["offset"] == path.stat().st_size  # type: ignore[index]
    finally:
        part.close()
    assert path.read_text(encoding="utf-8") == "a\n\u00e9\nb\n"

    # An older aiowax's state, a plain offset: resumed, checked only by size.
    sink.build_part(str(path), 2).close()
    assert path.read_text(encoding="utf-8") == "a\n"
    with pytest.raises(ValueError, match="changed since"):
        sink.build_part(str(path), 10_000)
    with pytest.raises(ValueError, match="unknown partition"):
        sink.build_part("elsewhere", None)


@pytest.mark.asyncio
async def test_file_sink_resumes_only_the_file_it_wrote(tmp_path: Path) -> None:
    # helper-58: a relative FileSink path resumed from another working
    # directory cut that directory's own file to the committed length (its
    # partition name, the path as given, matched). The snapshot now names
    # the bytes written, and a file whose bytes differ is left alone.
    path = tmp_path / "out.txt"
    sink = FileSink(path)
    part = sink.build_part(str(path), None)
    try:
        # Over 2 x 4096 bytes, in several writes: the digest covers the
        # first and the last 4096 bytes, kept up to date write by write.
        for i in range(40):
            await _awrite(part, [f"line {i} " + "x" * 300])
        committed = part.snapshot()
        await _awrite(part, ["after the snapshot"])
    finally:
        part.close()
    assert isinstance(committed, dict)
    ours = path.read_bytes()[: committed["offset"]]

    # Another file at the path, longer than the offset: refused, untouched.
    other = b"important line\n" * 2000
    path.write_bytes(other)
    with pytest.raises(FileReplacedError, match="not the ones this sink wrote") as info:
        sink.build_part(str(path), committed)
    assert "another file" in str(info.value) and "working directory" in str(info.value)
    assert path.read_bytes() == other
    # The same file rewritten in place: one byte in its middle differs.
    changed = bytearray(ours + b"more\n")
    changed[len(ours) // 2] ^= 1
    with open(path, "r+b") as f:
        f.write(bytes(changed))
        f.truncate()
    inode = path.stat().st_ino
    # Unchanged head and tail (the digest's windows) with a changed middle is
    # not noticed: the check is of the first and last 4096 bytes, as the
    # sources' is. A changed last byte before the offset is.
    changed[len(ours) - 1] ^= 1
    with open(path, "r+b") as f:
        f.write(bytes(changed))
    assert path.stat().st_ino == inode
    with pytest.raises(FileReplacedError, match="the same file"):
        sink.build_part(str(path), committed)
    assert path.read_bytes() == bytes(changed)

    # A snapshot taken before anything was written has no bytes to compare:
    # another file with bytes of its own is still refused, an empty one not.
    empty = tmp_path / "empty.txt"
    start = FileSink(empty).build_part(str(empty), None)
    at_zero = start.snapshot()
    start.close()
    other = tmp_path / "other.txt"  # made while the first exists: another inode
    other.write_text("someone else's\n")
    other.replace(empty)
    with pytest.raises(FileReplacedError, match="another file"):
        FileSink(empty).build_part(str(empty), at_zero)
    assert empty.read_text() == "someone else's\n"
    empty.write_text("")
    FileSink(empty).build_part(str(empty), at_zero).close()

    # A copy of what it wrote (restored from a backup: another inode) resumes.
    path.unlink()
    path.write_bytes(ours + b"written after the snapshot\n")
    part = sink.build_part(str(path), committed)
    try:
        await _awrite(part, ["resumed"])
        again = part.snapshot()
    finally:
        part.close()
    assert path.read_bytes() == ours + b"resumed\n"
    # And the position a resumed run takes resumes too.
    sink.build_part(str(path), again).close()
    assert path.read_bytes() == ours + b"resumed\n"


def test_file_sink_resumed_from_another_directory_leaves_its_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # helper-58's run: the same flow, a relative path, one recovery
    # directory, run in A and then in B, which holds a file of its own.
    a, b, db = tmp_path / "a", tmp_path / "b", tmp_path / "db"
    for d in (a, b, db):
        d.mkdir()
    init_db_dir(db, 1)
    config = RecoveryConfig(db)

    def flow() -> Dataflow:
        f = Dataflow()
        f.input("inp", TestingSource([("k", "x"), ("k", "y")]))
        f.output("out", FileSink("out.txt"))
        return f

    monkeypatch.chdir(a)
    run_main(flow(), recovery_config=config)
    assert (a / "out.txt").read_text() == "x\ny\n"
    mine = "important line 1\nimportant line 2\nimportant line 3\n"
    (b / "out.txt").write_text(mine)
    monkeypatch.chdir(b)
    with pytest.raises(FileReplacedError, match=r"'out\.txt'.*working directory"):
        run_main(flow(), recovery_config=config)
    assert (b / "out.txt").read_text() == mine
    # From A, the resume goes on (the input is done: nothing more is written).
    monkeypatch.chdir(a)
    run_main(flow(), recovery_config=config)
    assert (a / "out.txt").read_text() == "x\ny\n"


@pytest.mark.asyncio
async def test_file_sink_writes_off_the_event_loop(tmp_path: Path) -> None:
    threads: list[int] = []

    class Value:
        def __str__(self) -> str:
            threads.append(threading.get_ident())
            return "v"

    path = tmp_path / "out.txt"
    part = FileSink(path).build_part(str(path), None)
    try:
        await _awrite(part, [Value(), Value()])
    finally:
        part.close()
    assert path.read_text() == "v\nv\n"
    assert len(threads) == 2 and threading.get_ident() not in threads


# -- DirSink ------------------------------------------------------------------------


def test_dir_sink_spreads_keys_with_the_stable_assignment(tmp_path: Path) -> None:
    items = [(f"key{k}", f"key{k}-{n}") for n in range(5) for k in range(40)]
    _write_flow(DirSink(tmp_path, 4), items, workers=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part_0", "part_1", "part_2", "part_3"]
    expected: dict[int, list[str]] = defaultdict(list)
    for key, value in items:
        expected[adler32(key.encode()) % 4].append(value)
    for i in range(4):
        lines = (tmp_path / f"part_{i}").read_text().splitlines()
        # Every key's values land in one file, in order; files are not empty.
        assert lines == expected[i]
        assert lines
    # The assignment does not depend on the process: it is plain adler32.
    assert DirSink(tmp_path, 4).part_fn("key7") == adler32(b"key7")


def test_dir_sink_custom_namer_and_assignment(tmp_path: Path) -> None:
    sink = DirSink(
        tmp_path,
        3,
        file_namer=lambda i, n: f"out-{i}-of-{n}.txt",
        assign_file=lambda key: int(key),
        end="|",
    )
    assert sink.list_parts() == ["out-0-of-3.txt", "out-1-of-3.txt", "out-2-of-3.txt"]
    _write_flow(sink, [(str(k), k * 10) for k in range(7)])
    assert (tmp_path / "out-0-of-3.txt").read_text() == "0|30|60|"
    assert (tmp_path / "out-1-of-3.txt").read_text() == "10|40|"
    assert (tmp_path / "out-2-of-3.txt").read_text() == "20|50|"


def test_dir_sink_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file_count"):
        DirSink(tmp_path, 0)
    with pytest.raises(TypeError, match="file_count"):
        DirSink(tmp_path, "2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="file_namer"):
        DirSink(tmp_path, 2, file_namer="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        DirSink(tmp_path, 2, file_namer=lambda i, n: "same").list_parts()


@pytest.mark.asyncio
async def test_dir_sink_resume_per_file(tmp_path: Path) -> None:
    sink = DirSink(tmp_path, 2)
    parts: dict[str, StatefulSinkPartition[Any, int]] = {
        name: sink.build_part(name, None) for name in sink.list_parts()
    }
    try:
        await _awrite(parts["part_0"], ["a0"])
        await _awrite(parts["part_1"], ["b0", "b1"])
        states = {name: part.snapshot() for name, part in parts.items()}
        await _awrite(parts["part_0"], ["lost"])
    finally:
        for part in parts.values():
            part.close()
    for name, state in states.items():
        sink.build_part(name, state).close()
    assert (tmp_path / "part_0").read_text() == "a0\n"
    assert (tmp_path / "part_1").read_text() == "b0\nb1\n"


# -- large files, end to end ----------------------------------------------------------

BIG_LINES = 1_300_000


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 100 MB: 1.3 M distinct lines of 81 bytes."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    filler = "x" * 70
    text = "".join([f"{i:09d} {filler}\n" for i in range(BIG_LINES)])
    path.write_bytes(text.encode())
    return path


def _copy_flow(src: Path, dst: Path, mapper: Any) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", FileSource(src, batch_size=10_000))
    flow.map("keyed", mapper)
    flow.output("out", FileSink(dst))
    return flow


@pytest.mark.timeout(60)
def test_big_file_round_trip(tmp_path: Path, big_file: Path) -> None:
    out = tmp_path / "out.txt"
    started = time.monotonic()
    run_main(_copy_flow(big_file, out, lambda line: ("k", line)))
    assert time.monotonic() - started < 20
    assert out.stat().st_size == big_file.stat().st_size > 100_000_000
    assert out.read_bytes() == big_file.read_bytes()


@pytest.mark.timeout(60)
def test_big_file_resumes_from_the_middle_without_duplicates(
    tmp_path: Path, big_file: Path
) -> None:
    out = tmp_path / "out.txt"
    db = tmp_path / "db"
    db.mkdir()
    init_db_dir(db, 1)
    config = RecoveryConfig(db)
    epochs = timedelta(seconds=0.2)
    count = [0]
    armed = [True]

    def mapper(line: str) -> tuple[str, str]:
        count[0] += 1
        if armed[0] and count[0] == BIG_LINES * 2 // 3:
            armed[0] = False
            raise RuntimeError("crash in the middle")
        return ("k", line)

    with pytest.raises(RuntimeError, match="crash in the middle"):
        run_main(_copy_flow(big_file, out, mapper), epoch_interval=epochs, recovery_config=config)
    # The crash left output behind, beyond what the last committed epoch covers.
    assert 0 < out.stat().st_size < big_file.stat().st_size

    count[0] = 0
    run_main(_copy_flow(big_file, out, mapper), epoch_interval=epochs, recovery_config=config)
    # The second run resumed: it read only the lines after the committed
    # epoch. (Where that is depends on how far the commits kept up before
    # the crash: on a loaded machine, a third of the file in, once.)
    assert 0 < count[0] < BIG_LINES
    with open(out, "rb") as got, open(big_file, "rb") as want:
        while True:
            a = got.read(1 << 22)
            b = want.read(1 << 22)
            assert a == b
            if not a:
                break


@pytest.mark.asyncio
async def test_dir_to_dir_in_a_running_loop(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    expected = _make_dir(src, 10)
    flow = Dataflow()
    flow.input("inp", DirSource(src))
    flow.map("key", lambda line: (line.split(":")[0], line))
    flow.output("out", DirSink(dst, 3))
    with anyio.fail_after(10):
        await aiowax.run(flow, workers=2)
    written = {p.name: p.read_text().splitlines() for p in dst.iterdir()}
    assert sorted(written) == ["part_0", "part_1", "part_2"]
    for name, lines in expected.items():
        target = written[f"part_{adler32(name.encode()) % 3}"]
        assert [line for line in target if line.startswith(name)] == lines


def test_file_source_takes_paths_only() -> None:
    # The reference's FileSource takes paths only; so does this one.
    with pytest.raises(TypeError, match="path"):
        FileSource(io.StringIO("a\n"))  # type: ignore[arg-type]


def test_rerun_after_completion_keeps_output_on_any_worker_count(tmp_path: Path) -> None:
    # A finished run committed its final positions: a later run with the same
    # recovery directory reads nothing more and must not cut the output back.
    src = tmp_path / "in.txt"
    src.write_text("".join(f"{i}\n" for i in range(2000)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    db = tmp_path / "db"
    db.mkdir()
    init_db_dir(db, 2)

    def flow() -> Dataflow:
        f = Dataflow()
        f.input("inp", FileSource(src, batch_size=100))
        f.map("key", lambda line: (line, line))
        f.output("file", FileSink(tmp_path / "out.txt"))
        f.output("dir", DirSink(out_dir, 3))
        return f

    for workers in (1, 3, 2):
        cluster_main(
            flow(),
            [],
            0,
            worker_count_per_proc=workers,
            epoch_interval=timedelta(0),
            recovery_config=RecoveryConfig(db),
        )
        assert (tmp_path / "out.txt").read_text() == src.read_text()
        lines = [line for p in out_dir.iterdir() for line in p.read_text().splitlines()]
        assert sorted(lines, key=int) == [str(i) for i in range(2000)]


# -- resuming in a replaced file (issue 10, D6) ----------------------------------------


def _numbered(prefix: str, count: int) -> str:
    return "".join(f"{prefix}-{i}\n" for i in range(count))


def _replace(path: Path, text: str, how: str) -> None:
    """Put ``text`` at ``path``: in another file, or rewriting the same one."""
    if how == "rotated":
        # As logrotate or an export written aside and renamed over: a new
        # inode at the path. The old file is kept, so its inode is not reused.
        path.rename(path.with_name(path.name + ".1"))
        path.write_text(text)
    else:
        assert how == "in_place"
        inode = path.stat().st_ino
        path.write_text(text)  # truncated and rewritten: the same inode
        assert path.stat().st_ino == inode


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    path.mkdir()
    init_db_dir(path, 1)
    return path


def _run_resumable(source: Any, db: Path) -> list[Any]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(db))
    return out


@pytest.mark.parametrize("new_count", [10, 200], ids=["shorter", "longer"])
@pytest.mark.parametrize("how", ["rotated", "in_place"])
def test_file_source_refuses_to_resume_in_a_replaced_file(
    tmp_path: Path, db: Path, how: str, new_count: int
) -> None:
    # Repro 21: the resumed run skipped a shorter new file entirely and
    # dropped the first lines of a longer one, without a word.
    path = tmp_path / "events.log"
    path.write_text(_numbered("old", 100))
    assert _run_resumable(FileSource(path), db) == [f"old-{i}" for i in range(100)]

    _replace(path, _numbered("new", new_count), how)
    with pytest.raises(FileReplacedError) as info:
        _run_resumable(FileSource(path), db)
    message = str(info.value)
    # It names the file, says what changed, and how to go on.
    assert repr(str(path)) in message
    assert "at byte 690" in message  # the bytes of the 100 old lines
    if new_count == 10:
        assert "now has 60 bytes, fewer than the 690 already read" in message
    else:
        assert "bytes before that offset differ" in message
    if how == "rotated":
        assert "it is another file" in message
    else:
        assert "the same file" in message and "rewritten in place" in message
    assert 'on_replaced="restart"' in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, AiowaxError)

    # Refusing changed nothing: the next run refuses again.
    with pytest.raises(FileReplacedError):
        _run_resumable(FileSource(path), db)


def test_file_source_restarts_a_replaced_file_when_asked(
    tmp_path: Path, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.log"
    path.write_text(_numbered("old", 100))
    _run_resumable(FileSource(path, on_replaced="restart"), db)

    _replace(path, _numbered("new", 200), "rotated")
    with caplog.at_level(logging.WARNING, logger="aiowax.connectors.files"):
        second = _run_resumable(FileSource(path, on_replaced="restart"), db)
    assert second == [f"new-{i}" for i in range(200)]  # all of the new file
    [record] = [r for r in caplog.records if r.name == "aiowax.connectors.files"]
    assert record.levelno == logging.WARNING
    assert str(path) in record.getMessage()
    assert "reading it from its start" in record.getMessage()

    # The position is now in the new file: appends resume after it.
    caplog.clear()
    with path.open("a") as f:
        f.write(_numbered("more", 3))
    third = _run_resumable(FileSource(path, on_replaced="restart"), db)
    assert third == ["more-0", "more-1", "more-2"]
    assert _run_resumable(FileSource(path, on_replaced="restart"), db) == []
    assert [r for r in caplog.records if r.name == "aiowax.connectors.files"] == []


def test_file_source_restart_of_an_emptied_file_is_remembered(tmp_path: Path, db: Path) -> None:
    path = tmp_path / "events.log"
    path.write_text(_numbered("old", 5))
    _run_resumable(FileSource(path, on_replaced="restart"), db)
    _replace(path, "", "in_place")
    assert _run_resumable(FileSource(path, on_replaced="restart"), db) == []
    # The empty file's position was saved: what is appended is read once.
    path.write_text(_numbered("new", 2))
    assert _run_resumable(FileSource(path), db) == ["new-0", "new-1"]
    assert _run_resumable(FileSource(path), db) == []


@pytest.mark.parametrize("how", ["appended", "copied", "rewritten_identically"])
def test_file_source_resumes_in_the_same_bytes(tmp_path: Path, db: Path, how: str) -> None:
    # What was read is still there: the same file grown, a copy of it (a
    # restore from a backup, a move to another disk), or a rewrite that
    # kept the bytes already read. All resume after what was read.
    path = tmp_path / "events.log"
    old = _numbered("old", 3000)  # beyond both 4 KiB windows
    path.write_text(old)
    assert len(_run_resumable(FileSource(path), db)) == 3000
    grown = old + _numbered("more", 3)
    if how == "appended":
        with path.open("a") as f:
            f.write(_numbered("more", 3))
    elif how == "copied":
        copy = tmp_path / "copy"
        shutil.copy(path, copy)
        with copy.open("a") as f:
            f.write(_numbered("more", 3))
        os.replace(copy, path)
    else:
        path.write_text(grown)
    assert path.read_text() == grown
    assert _run_resumable(FileSource(path), db) == ["more-0", "more-1", "more-2"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("changed_at", "detected"),
    [(0, True), (8000, False), (15990, True)],
    ids=["first_bytes", "middle", "bytes_before_the_offset"],
)
async def test_file_source_checks_the_first_and_last_4_kib_read(
    tmp_path: Path, changed_at: int, detected: bool
) -> None:
    # The check reads 8 KiB at most, whatever the offset: the first and the
    # last 4 KiB before it. A same-size change between them goes unnoticed.
    path = tmp_path / "in.txt"
    path.write_bytes(b"x" * 15999 + b"\n" + b"tail\n")
    source = FileSource(path)
    part = source.build_part(NOW, _name(source), None)
    try:
        assert await _anext(part) == ["x" * 15999, "tail"]
        state = part.snapshot()
    finally:
        part.close()
    assert state["offset"] == 16005  # type: ignore[index]
    data = bytearray(path.read_bytes())
    data[changed_at] = ord("y")
    path.write_bytes(bytes(data))

    part = source.build_part(NOW, _name(source), state)
    try:
        if detected:
            with pytest.raises(FileReplacedError, match="rewritten in place"):
                await _anext(part)
        else:
            with pytest.raises(StopAsyncIteration):
                await _anext(part)
    finally:
        part.close()


def test_csv_source_refuses_a_regenerated_export(tmp_path: Path, db: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("id,name\n" + "".join(f"{i},old{i}\n" for i in range(50)))
    assert len(_run_resumable(CSVSource(path), db)) == 50
    # Regenerated with other rows, written aside and renamed over.
    fresh = tmp_path / "export.csv.tmp"
    fresh.write_text("id,name\n" + "".join(f"{i},new{i}\n" for i in range(80)))
    os.replace(fresh, path)
    with pytest.raises(FileReplacedError, match=r"CSVSource: cannot resume .*export\.csv"):
        _run_resumable(CSVSource(path), db)
    rows = _run_resumable(CSVSource(path, on_replaced="restart"), db)
    assert rows == [{"id": str(i), "name": f"new{i}"} for i in range(80)]


def test_dir_source_checks_each_file(tmp_path: Path, db: Path) -> None:
    src = tmp_path / "logs"
    src.mkdir()
    (src / "a.log").write_text(_numbered("a", 20))
    (src / "b.log").write_text(_numbered("b", 20))
    assert len(_run_resumable(DirSource(src, "*.log"), db)) == 40
    _replace(src / "b.log", _numbered("b2", 5), "in_place")
    with pytest.raises(FileReplacedError, match=r"DirSource: cannot resume .*b\.log"):
        _run_resumable(DirSource(src, "*.log"), db)
    with (src / "a.log").open("a") as f:
        f.write(_numbered("a2", 1))
    # With restart, b.log is read again from its start; a.log resumes.
    got = _run_resumable(DirSource(src, "*.log", on_replaced="restart"), db)
    assert sorted(got) == ["a2-0", *(f"b2-{i}" for i in range(5))]


@pytest.mark.asyncio
async def test_file_source_resumes_from_an_old_plain_offset(tmp_path: Path) -> None:
    # Snapshots of older versions are plain byte offsets: no identity known,
    # so they resume as they did; the next snapshot is a full position.
    path = tmp_path / "in.txt"
    path.write_text(_numbered("line", 10))
    source = FileSource(path, batch_size=2)
    name = _name(source)
    part = source.build_part(NOW, name, len("line-0\n") * 3)
    try:
        assert part.snapshot() == 21  # not yet checked against the file
        assert await _anext(part) == ["line-3", "line-4"]
        state = part.snapshot()
    finally:
        part.close()
    assert isinstance(state, dict)
    assert state["offset"] == 35
    assert state["ino"] == path.stat().st_ino


@pytest.mark.asyncio
async def test_file_source_old_plain_offset_past_the_end_is_a_replaced_file(
    tmp_path: Path,
) -> None:
    # Before, the resumed run read nothing and ended: the repro's shorter file.
    path = tmp_path / "in.txt"
    path.write_text(_numbered("new", 3))
    source = FileSource(path)
    part = source.build_part(NOW, _name(source), 690)
    try:
        with pytest.raises(FileReplacedError, match="plain offset from an older aiowax"):
            await _anext(part)
    finally:
        part.close()
    part = FileSource(path, on_replaced="restart").build_part(NOW, _name(source), 690)
    try:
        assert _flat(await _drain(part)) == ["new-0", "new-1", "new-2"]
    finally:
        part.close()


@pytest.mark.asyncio
async def test_file_position_is_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text(_numbered("line", 10))
    source = FileSource(path, batch_size=4)
    name = _name(source)
    part = source.build_part(NOW, name, None)
    try:
        fresh = part.snapshot()
        await _anext(part)
        state = part.snapshot()
    finally:
        part.close()
    st = path.stat()
    assert fresh == {
        "offset": 0,
        "size": st.st_size,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "digest": fresh["digest"],  # type: ignore[index]
    }
    assert isinstance(state, dict)
    assert set(state) == FilePosition.__required_keys__
    assert state["offset"] == 28 and state["size"] == st.st_size
    assert isinstance(state["digest"], str) and len(state["digest"]) == 32
    # Picklable, and JSON-able for other serdes; either copy resumes.
    for copy in (pickle.loads(pickle.dumps(state)), json.loads(json.dumps(state))):
        assert copy == state
        part = source.build_part(NOW, name, copy)
        try:
            assert _flat(await _drain(part)) == [f"line-{i}" for i in range(4, 10)]
        finally:
            part.close()


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"offset": 3}, TypeError),
        ({"offset": 3, "size": 3, "dev": 1, "ino": 1, "digest": None}, TypeError),
        ({"offset": True, "size": 3, "dev": 1, "ino": 1, "digest": "d"}, TypeError),
        ({"offset": -1, "size": 3, "dev": 1, "ino": 1, "digest": "d"}, ValueError),
        (2.5, TypeError),
    ],
)
def test_file_source_rejects_a_malformed_resume_state(
    tmp_path: Path, state: Any, error: type[Exception]
) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    source = FileSource(path)
    with pytest.raises(error, match="resume state"):
        source.build_part(NOW, _name(source), state)


def test_on_replaced_is_error_or_restart(tmp_path: Path) -> None:
    for make in (
        lambda **kw: FileSource(tmp_path / "f", **kw),
        lambda **kw: DirSource(tmp_path, **kw),
        lambda **kw: CSVSource(tmp_path / "f", **kw),
    ):
        with pytest.raises(ValueError, match="on_replaced"):
            make(on_replaced="ignore")
        with pytest.raises(ValueError, match="on_replaced"):
            make(on_replaced=None)
        make(on_replaced="error")
        make(on_replaced="restart")


def test_file_replaced_error_is_public_and_pickles() -> None:
    assert FileReplacedError.__module__ == "aiowax.connectors.files"
    assert issubclass(FileReplacedError, AiowaxError)
    assert issubclass(FileReplacedError, ValueError)
    copy = pickle.loads(pickle.dumps(FileReplacedError("message")))
    assert type(copy) is FileReplacedError and copy.args == ("message",)


# -- filesystem ids ---------------------------------------------------------------------


def test_get_fs_id_names_the_partitions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "in.csv"
    path.write_text("a\n1\n")
    seen: list[Path] = []

    def fs_id(directory: Path) -> str:
        seen.append(directory)
        return "shared"

    assert FileSource(path, get_fs_id=fs_id).list_parts() == [f"shared::{path}"]
    assert CSVSource(path, 10, fs_id).list_parts() == [f"shared::{path}"]
    assert DirSource(tmp_path, "**/*.csv", get_fs_id=fs_id).list_parts() == ["shared::sub/in.csv"]
    # Called with the file's directory, or DirSource's directory.
    assert seen == [tmp_path / "sub", tmp_path / "sub", tmp_path]
    # The default is the directory's device id, as in the reference.
    assert _name(CSVSource(path)) == f"{_dev(tmp_path / 'sub')}::{path}"
    assert _collect(CSVSource(path, get_fs_id=fs_id)) == [{"a": "1"}]
    assert _collect(DirSource(tmp_path, "**/*.csv", get_fs_id=fs_id)) == ["a", "1"]


def test_dir_source_build_part_checks_the_fs_id(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    source = DirSource(tmp_path, get_fs_id=lambda _dir: "disk1")
    source.build_part(NOW, "disk1::a.txt", None).close()
    for name in ("disk2::a.txt", "a.txt", "disk1::"):
        with pytest.raises(ValueError, match="unknown partition"):
            source.build_part(NOW, name, None)


def test_dir_source_file_names_may_hold_the_separator(tmp_path: Path) -> None:
    (tmp_path / "odd::name.txt").write_text("x\n")
    source = DirSource(tmp_path, get_fs_id=lambda _dir: "d")
    assert source.list_parts() == ["d::odd::name.txt"]
    assert _collect(source) == ["x"]


@pytest.mark.parametrize(
    ("get_fs_id", "error", "match"),
    [
        (lambda _dir: "a::b", ValueError, "must not contain '::'"),
        (lambda _dir: 42, TypeError, "must return a str"),
    ],
)
def test_get_fs_id_result_is_checked(
    tmp_path: Path, get_fs_id: Any, error: type[Exception], match: str
) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    for source in (
        FileSource(path, get_fs_id=get_fs_id),
        CSVSource(path, get_fs_id=get_fs_id),
        DirSource(tmp_path, get_fs_id=get_fs_id),
    ):
        with pytest.raises(error, match=match):
            source.list_parts()


def test_get_fs_id_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="get_fs_id"):
        FileSource(tmp_path / "f", get_fs_id="shared")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_fs_id"):
        DirSource(tmp_path, get_fs_id="shared")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_fs_id"):
        CSVSource(tmp_path / "f", 10, "shared")  # type: ignore[arg-type]


def test_fs_id_is_asked_when_the_flow_starts(tmp_path: Path) -> None:
    # Defining the flow needs neither the file nor its directory.
    path = tmp_path / "later" / "in.txt"
    source = FileSource(path)
    path.parent.mkdir()
    path.write_text("a\n")
    assert _collect(source) == ["a"]


# -- the partitions' synchronous methods, as the reference drives them (issue 11) ----------
#
# The reference's connector tests (and users' tests) build a partition and
# call its methods directly: ``part.next_batch(...)`` until the end of the
# input, ``part.snapshot()``, ``part.close()``; ``part.write_batch(items)``
# and then read the file. The end of the input is matched to bytewax 0.17.2
# (``bytewax/connectors/files.py``: ``_FileSource.next_batch`` returns
# ``next(self._batcher)``, a generator of ``list(islice(...))`` batches, so
# it raises `StopIteration` at the end of the file, and raises it again on
# every later call; a batch is never empty). bytewax 0.18+ keeps that, only
# adding the ``sched`` argument; both call shapes are accepted here.


def _drain_sync(part: Any, *args: Any) -> list[list[Any]]:
    batches = []
    while True:
        try:
            batch = part.next_batch(*args)
        except StopIteration:
            return batches
        assert isinstance(batch, list) and batch  # never an awaitable, never empty
        batches.append(batch)


@pytest.mark.parametrize("args", [(NOW,), (None,), ()], ids=["sched", "none", "0.17_shape"])
def test_file_source_partition_is_synchronous_like_the_reference(
    tmp_path: Path, args: tuple[Any, ...]
) -> None:
    path = tmp_path / "in.txt"
    lines = [f"line {i}" for i in range(10)]
    path.write_text("".join(f"{line}\n" for line in lines))
    source = FileSource(path, batch_size=4)
    name = _name(source)
    part = source.build_part(NOW, name, None)
    try:
        first = part.next_batch(*args)
        assert first == lines[:4]
        state = part.snapshot()
        assert state["offset"] == len("".join(f"{line}\n" for line in lines[:4]))  # type: ignore[index]
        assert _drain_sync(part, *args) == [lines[4:8], lines[8:]]
        # At the end: StopIteration, as the reference's, and again after that.
        with pytest.raises(StopIteration):
            part.next_batch(*args)
        assert part.snapshot()["offset"] == path.stat().st_size  # type: ignore[index]
    finally:
        part.close()
    part = source.build_part(NOW, name, state)
    try:
        assert _flat(_drain_sync(part, *args)) == lines[4:]
    finally:
        part.close()


def test_file_source_partition_reads_in_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\nb\n")
    threads: list[int] = []
    split = files_impl._split_lines

    def spy(data: bytes) -> list[str]:
        threads.append(threading.get_ident())
        return split(data)

    monkeypatch.setattr(files_impl.sources, "_split_lines", spy)
    source = FileSource(path)
    part = source.build_part(NOW, _name(source), None)
    try:
        # Called outside any event loop, as a plain function: no thread hop.
        assert part.next_batch(NOW) == ["a", "b"]
    finally:
        part.close()
    assert threads == [threading.get_ident()]


def test_dir_source_partition_is_synchronous(tmp_path: Path) -> None:
    expected = _make_dir(tmp_path, 3)
    source = DirSource(tmp_path, batch_size=2)
    got = {}
    for name in source.list_parts():
        part = source.build_part(NOW, name, None)
        try:
            got[name.partition("::")[2]] = _flat(_drain_sync(part, NOW))
            with pytest.raises(StopIteration):
                part.next_batch(NOW)
        finally:
            part.close()
    assert got == expected


def test_csv_source_partition_is_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(CSV_TEXT.encode())
    expected = _reference_rows(path)
    source = CSVSource(path, batch_size=2)
    name = _name(source)
    part = source.build_part(NOW, name, None)
    try:
        assert part.next_batch(NOW) == expected[:2]
        state = part.snapshot()
        assert _flat(_drain_sync(part, NOW)) == expected[2:]
        with pytest.raises(StopIteration):
            part.next_batch(NOW)
    finally:
        part.close()
    part = source.build_part(NOW, name, state)
    try:
        assert _flat(_drain_sync(part, NOW)) == expected[2:]
    finally:
        part.close()


def test_file_source_sync_read_checks_a_replaced_file(tmp_path: Path) -> None:
    # The check on resume (D6) happens at the first read on the sync path too.
    path = tmp_path / "in.txt"
    path.write_text(_numbered("old", 10))
    source = FileSource(path)
    part = source.build_part(NOW, _name(source), None)
    try:
        assert len(part.next_batch(NOW)) == 10
        state = part.snapshot()
    finally:
        part.close()
    _replace(path, _numbered("new", 20), "rotated")
    part = source.build_part(NOW, _name(source), state)
    try:
        with pytest.raises(FileReplacedError, match="it is another file"):
            part.next_batch(NOW)
    finally:
        part.close()
    restart = FileSource(path, on_replaced="restart")
    part = restart.build_part(NOW, _name(restart), state)
    try:
        assert _flat(_drain_sync(part, NOW)) == [f"new-{i}" for i in range(20)]
        assert part.snapshot()["offset"] == path.stat().st_size  # type: ignore[index]
    finally:
        part.close()


def test_file_sink_partition_is_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    sink = FileSink(path)
    part = sink.build_part(str(path), None)
    try:
        assert part.write_batch(["a", 1]) is None  # written when it returns
        assert path.read_text() == "a\n1\n"
        state = part.snapshot()
        part.write_batch(["dropped on resume"])
    finally:
        part.close()
    part = sink.build_part(str(path), state)
    try:
        part.write_batch(["b"])
    finally:
        part.close()
    assert path.read_text() == "a\n1\nb\n"


def test_dir_sink_partition_is_synchronous(tmp_path: Path) -> None:
    sink = DirSink(tmp_path, 2, end="|")
    for i, name in enumerate(sink.list_parts()):
        part = sink.build_part(name, None)
        try:
            assert part.write_batch([f"v{i}", f"w{i}"]) is None
        finally:
            part.close()
    assert (tmp_path / "part_0").read_text() == "v0|w0|"
    assert (tmp_path / "part_1").read_text() == "v1|w1|"


@pytest.mark.asyncio
async def test_flow_reads_csv_and_writes_files_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a flow, the engine takes the partitions' async path: every read and
    # write runs in a worker thread, never on the event loop's.
    src = tmp_path / "in.csv"
    src.write_text("id\n" + "".join(f"{i}\n" for i in range(50)))
    read_threads: set[int] = set()
    read_batch = files_impl._OffsetPartition._read_batch

    def spy(self: Any, cursor: Any) -> Any:
        read_threads.add(threading.get_ident())
        return read_batch(self, cursor)

    monkeypatch.setattr(files_impl._OffsetPartition, "_read_batch", spy)
    threads: list[int] = []

    class Value:
        def __init__(self, row: dict[str, str]) -> None:
            self.row = row

        def __str__(self) -> str:
            threads.append(threading.get_ident())
            return self.row["id"]

    flow = Dataflow()
    flow.input("inp", CSVSource(src, batch_size=7))
    flow.map("wrap", lambda row: ("k", Value(row)))
    flow.output("out", FileSink(tmp_path / "out"))
    with anyio.fail_after(10):
        await aiowax.run(flow)
    assert (tmp_path / "out").read_text() == "".join(f"{i}\n" for i in range(50))
    assert len(threads) == 50 and threading.get_ident() not in threads
    assert read_threads and threading.get_ident() not in read_threads
